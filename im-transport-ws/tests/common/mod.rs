//! Helpers shared by the socket tests: an engine behind a WebSocket server,
//! and a hand-rolled client that can also write raw bytes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use im_core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_core::{Engine, EngineConfig, codec};
use im_store_memory::MemoryStore;
use im_testkit::probe::SessionProbe;
use im_transport_ws::{SUBPROTOCOL, WsConfig, WsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

pub const WAIT: Duration = Duration::from_secs(10);

pub async fn start(engine_config: EngineConfig, ws: WsConfig) -> (Engine, SocketAddr) {
    let (engine, addr, _) = start_probed(engine_config, ws).await;
    (engine, addr)
}

/// Like [`start`], with a probe to wait on what the engine did with sessions.
pub async fn start_probed(
    engine_config: EngineConfig,
    ws: WsConfig,
) -> (Engine, SocketAddr, Arc<SessionProbe>) {
    let probe = Arc::new(SessionProbe::default());
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .insecure_dev_auth()
        .session_directory(probe.clone())
        .config(engine_config)
        .build()
        .expect("engine");
    let server = WsServer::bind("127.0.0.1:0", ws).await.expect("bind");
    let addr = server.local_addr().expect("addr");
    server.serve(engine.clone());
    (engine, addr, probe)
}

pub type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket by hand (so tests can also write raw bytes to it).
pub async fn open_raw(stream: TcpStream, protocol: Option<&str>) -> Ws {
    let mut stream = stream;
    let proto = protocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{proto}\r\n"
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    WebSocketStream::from_raw_socket(stream, Role::Client, None).await
}

/// Reads an HTTP response head byte by byte (so nothing after it is consumed).
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = tokio::time::timeout(WAIT, stream.read_u8())
            .await
            .expect("head in time")
            .expect("head byte");
        head.push(b);
    }
    String::from_utf8(head).expect("utf-8 head")
}

pub async fn connect_as(addr: SocketAddr, user: &str) -> Ws {
    let stream = TcpStream::connect(addr).await.expect("connect");
    connect_on(stream, user).await
}

pub async fn connect_on(stream: TcpStream, user: &str) -> Ws {
    let mut ws = open_raw(stream, Some(SUBPROTOCOL)).await;
    send(
        &mut ws,
        1,
        In::Connect(pb::Connect {
            token: user.to_owned(),
            device_id: format!("{user}-web"),
            device_kind: pb::DeviceKind::Web as i32,
            ..Default::default()
        }),
    )
    .await;
    match recv(&mut ws).await.body {
        Some(Out::Connected(c)) => assert_eq!(c.user_id, user),
        other => panic!("expected Connected, got {other:?}"),
    }
    ws
}

pub async fn send(ws: &mut Ws, request_id: u64, body: In) {
    let frame = codec::encode_client_frame(&pb::ClientFrame {
        request_id,
        body: Some(body),
    });
    ws.send(Message::Binary(frame)).await.expect("send");
}

pub async fn recv(ws: &mut Ws) -> pb::ServerFrame {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("frame in time")
            .expect("open")
            .expect("frame");
        match msg {
            Message::Binary(b) => return codec::decode_server_frame(&b).expect("server frame"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Reads until the close frame and returns its code and reason, plus the
/// error frames seen before it.
pub async fn recv_close(ws: &mut Ws) -> (u16, String, Vec<pb::Error>) {
    let mut errors = Vec::new();
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close in time")
            .expect("a close frame before the end")
            .expect("frame");
        match msg {
            Message::Binary(b) => {
                if let Some(Out::Error(e)) = codec::decode_server_frame(&b).expect("frame").body {
                    errors.push(e);
                }
            }
            Message::Close(Some(c)) => return (c.code.into(), c.reason.to_string(), errors),
            Message::Close(None) => panic!("close frame without a code"),
            _ => {}
        }
    }
}

pub fn direct(user: &str) -> Option<pb::ConversationRef> {
    Some(pb::ConversationRef {
        kind: pb::ConversationKind::Direct as i32,
        id: user.to_owned(),
    })
}

pub fn group(id: &str) -> Option<pb::ConversationRef> {
    Some(pb::ConversationRef {
        kind: pb::ConversationKind::Group as i32,
        id: id.to_owned(),
    })
}

pub fn text_send(id: &str, to: Option<pb::ConversationRef>, body: impl Into<Bytes>) -> In {
    In::Send(pb::Send {
        client_msg_id: id.to_owned(),
        conversation: to,
        body: body.into(),
        ..Default::default()
    })
}

/// Waits for the next Push and returns its messages.
pub async fn next_push(ws: &mut Ws) -> Vec<pb::Message> {
    loop {
        if let Some(Out::Push(p)) = recv(ws).await.body {
            return p.messages;
        }
    }
}

/// A masked client frame, written by hand.
pub fn raw_frame(opcode: u8, payload: &[u8], announced_len: Option<u64>) -> Vec<u8> {
    let len = announced_len.unwrap_or(payload.len() as u64);
    let mut out = vec![0x80 | opcode];
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as u64 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    let mask = [0x11, 0x22, 0x33, 0x44];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

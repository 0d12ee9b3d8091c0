//! TCP and WebSocket serve one engine at once: a TCP user and a WebSocket
//! user chat with each other, directly and in a group, over real sockets.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use im_engine::core::codec::{decode_server_frame, encode_client_frame};
use im_engine::core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_engine::core::{ChannelId, Engine, UserId};
use im_engine::store_memory::MemoryStore;
use im_engine::transport_tcp::client::{Client, direct, group};
use im_engine::transport_tcp::{TcpConfig, TcpServer};
use im_engine::transport_ws::tokio_tungstenite::WebSocketStream;
use im_engine::transport_ws::tokio_tungstenite::tungstenite::Message;
use im_engine::transport_ws::tokio_tungstenite::tungstenite::protocol::Role;
use im_engine::transport_ws::{SUBPROTOCOL, WsConfig, WsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

/// A WebSocket client speaking the engine's subprotocol.
struct WsClient {
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
    /// Frames read while waiting for an answer, for later.
    backlog: VecDeque<pb::ServerFrame>,
}

impl WsClient {
    async fn connect(addr: std::net::SocketAddr, user: &str) -> Self {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.expect("response head"));
        }
        let head = String::from_utf8(head).expect("utf-8");
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.contains(SUBPROTOCOL), "{head}");
        let mut client = Self {
            ws: WebSocketStream::from_raw_socket(stream, Role::Client, None).await,
            next_id: 1,
            backlog: VecDeque::new(),
        };
        client
            .send_body(In::Connect(pb::Connect {
                token: user.to_owned(),
                device_id: format!("{user}-browser"),
                device_kind: pb::DeviceKind::Web as i32,
                ..Default::default()
            }))
            .await;
        match client.next_frame().await.body {
            Some(Out::Connected(c)) => assert_eq!(c.user_id, user),
            other => panic!("expected Connected, got {other:?}"),
        }
        client
    }

    async fn send_body(&mut self, body: In) -> u64 {
        let request_id = self.next_id;
        self.next_id += 1;
        let frame = encode_client_frame(&pb::ClientFrame {
            request_id,
            body: Some(body),
        });
        self.ws.send(Message::Binary(frame)).await.expect("send");
        request_id
    }

    async fn next_frame(&mut self) -> pb::ServerFrame {
        match self.backlog.pop_front() {
            Some(frame) => frame,
            None => self.read_frame().await,
        }
    }

    async fn read_frame(&mut self) -> pb::ServerFrame {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("connection open")
                .expect("frame");
            if let Message::Binary(b) = msg {
                return decode_server_frame(&b).expect("server frame");
            }
        }
    }

    /// Sends a message and returns its seq from the SendAck.
    async fn say(&mut self, to: pb::ConversationRef, id: &str, text: &str) -> u64 {
        let request_id = self
            .send_body(In::Send(pb::Send {
                client_msg_id: id.to_owned(),
                conversation: Some(to),
                body: text.as_bytes().to_vec().into(),
                ..Default::default()
            }))
            .await;
        loop {
            let frame = self.read_frame().await;
            if frame.request_id != request_id {
                self.backlog.push_back(frame);
                continue;
            }
            match frame.body {
                Some(Out::SendAck(a)) => return a.seq,
                other => panic!("expected SendAck, got {other:?}"),
            }
        }
    }

    /// Sends a request and returns its answer, keeping other frames.
    async fn request(&mut self, body: In) -> Out {
        let request_id = self.send_body(body).await;
        loop {
            let frame = self.read_frame().await;
            if frame.request_id == request_id {
                return frame.body.expect("an answer");
            }
            self.backlog.push_back(frame);
        }
    }

    /// Waits for a pushed message from `sender`.
    async fn pushed_from(&mut self, sender: &str) -> pb::Message {
        loop {
            if let Some(Out::Push(p)) = self.next_frame().await.body {
                if let Some(m) = p.messages.into_iter().find(|m| m.sender_user == sender) {
                    return m;
                }
            }
        }
    }
}

async fn tcp_pushed_from(client: &Client, sender: &str) -> pb::Message {
    loop {
        let frame = client
            .next_event(WAIT)
            .await
            .expect("connection open")
            .expect("a pushed frame in time");
        if let Some(Out::Push(p)) = frame.body {
            if let Some(m) = p.messages.into_iter().find(|m| m.sender_user == sender) {
                return m;
            }
        }
    }
}

/// One engine (memory store, development authentication) served over TCP
/// and WebSocket (`/ws`) on 127.0.0.1: the engine and both addresses.
async fn serve_both() -> (Engine, std::net::SocketAddr, std::net::SocketAddr) {
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .insecure_dev_auth()
        .build()
        .expect("engine");
    let tcp = TcpServer::bind("127.0.0.1:0", TcpConfig::default())
        .await
        .expect("tcp");
    let ws = WsServer::bind("127.0.0.1:0", WsConfig::default().path("/ws"))
        .await
        .expect("ws");
    let tcp_addr = tcp.local_addr().expect("addr");
    let ws_addr = ws.local_addr().expect("addr");
    tcp.serve(engine.clone());
    ws.serve(engine.clone());
    (engine, tcp_addr, ws_addr)
}

#[tokio::test]
async fn a_tcp_user_and_a_websocket_user_chat_with_each_other() {
    let (engine, tcp_addr, ws_addr) = serve_both().await;

    let alice = Client::connect(tcp_addr, "alice", "alice-cli")
        .await
        .expect("alice over TCP");
    let mut bob = WsClient::connect(ws_addr, "bob").await;

    // TCP -> WebSocket.
    let ack = alice
        .send(direct("bob"), "a1", "hello from the terminal")
        .await
        .expect("send");
    let got = bob.pushed_from("alice").await;
    assert_eq!(&got.body[..], b"hello from the terminal");
    assert_eq!(got.seq, ack.seq);

    // WebSocket -> TCP.
    let seq = bob
        .say(direct("alice"), "b1", "hello from the browser")
        .await;
    let got = tcp_pushed_from(&alice, "bob").await;
    assert_eq!(&got.body[..], b"hello from the browser");
    assert_eq!(got.seq, seq);
    assert_eq!(seq, ack.seq + 1);

    // One group, both transports, one order.
    let users = [
        UserId::new("alice").expect("id"),
        UserId::new("bob").expect("id"),
    ];
    engine
        .create_group(&ChannelId::new("mixed").expect("id"), &users)
        .await
        .expect("group");
    alice
        .send(group("mixed"), "a2", "tcp in the group")
        .await
        .expect("send");
    bob.say(group("mixed"), "b2", "ws in the group").await;
    let at_bob = bob.pushed_from("alice").await;
    let at_alice = tcp_pushed_from(&alice, "bob").await;
    assert_eq!(
        (at_bob.seq, &at_bob.body[..]),
        (1, &b"tcp in the group"[..])
    );
    assert_eq!(
        (at_alice.seq, &at_alice.body[..]),
        (2, &b"ws in the group"[..])
    );

    // Both see the same history.
    let history = alice.pull(group("mixed"), 0, 0, 10).await.expect("pull");
    let bodies: Vec<&[u8]> = history.messages.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, [&b"tcp in the group"[..], &b"ws in the group"[..]]);
}

/// A WebSocket user edits and recalls; the TCP user sees both live, and a
/// later pull shows the tombstone.
#[tokio::test]
async fn a_websocket_user_edits_and_recalls_for_a_tcp_user() {
    let (_engine, tcp_addr, ws_addr) = serve_both().await;
    let alice = Client::connect(tcp_addr, "alice", "alice-cli")
        .await
        .expect("alice over TCP");
    let mut bob = WsClient::connect(ws_addr, "bob").await;

    let seq = bob.say(direct("alice"), "b1", "helo").await;
    assert_eq!(tcp_pushed_from(&alice, "bob").await.seq, seq);
    let edited = bob
        .request(In::Edit(pb::Edit {
            client_msg_id: "b-e1".into(),
            conversation: Some(direct("alice")),
            target_seq: seq,
            body: b"hello".to_vec().into(),
            ..Default::default()
        }))
        .await;
    assert!(matches!(edited, Out::SendAck(_)), "{edited:?}");
    let live = tcp_pushed_from(&alice, "bob").await;
    assert_eq!(
        live.event.map(|e| (e.target_seq, e.edit_count)),
        Some((seq, 1))
    );
    assert_eq!(&live.body[..], b"hello");

    let recalled = bob
        .request(In::Recall(pb::Recall {
            client_msg_id: "b-r1".into(),
            conversation: Some(direct("alice")),
            target_seq: seq,
        }))
        .await;
    assert!(matches!(recalled, Out::SendAck(_)), "{recalled:?}");
    let live = tcp_pushed_from(&alice, "bob").await;
    assert_eq!(
        live.event.map(|e| e.kind),
        Some(pb::MessageEventKind::Recall as i32)
    );
    let page = alice.pull(direct("bob"), 0, 0, 10).await.expect("pull");
    let target = &page.messages[0];
    assert!(target.recalled && target.body.is_empty(), "{target:?}");
    assert!(
        page.messages[1].recalled,
        "the edit event lost its text too"
    );
}

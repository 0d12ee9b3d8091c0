//! The WebSocket transport over real sockets on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures::{SinkExt, StreamExt};
use im_core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_core::{ChannelId, EngineConfig, UserId};
use im_transport_ws::{SUBPROTOCOL, WsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn two_users_chat_both_ways_over_websocket() {
    let (_engine, addr) = start(EngineConfig::default(), WsConfig::default().path("/ws")).await;
    let mut alice = connect_as(addr, "alice").await;
    let mut bob = connect_as(addr, "bob").await;

    send(&mut alice, 2, text_send("a1", direct("bob"), "hi bob")).await;
    match recv(&mut alice).await.body {
        Some(Out::SendAck(a)) => assert_eq!(a.seq, 1),
        other => panic!("expected SendAck, got {other:?}"),
    }
    let got = next_push(&mut bob).await;
    assert_eq!(&got[0].body[..], b"hi bob");
    assert_eq!(got[0].sender_user, "alice");

    send(&mut bob, 2, text_send("b1", direct("alice"), "hi alice")).await;
    // Alice's own session may also see her message pushed; wait for bob's.
    let got = loop {
        let got = next_push(&mut alice).await;
        if got.iter().any(|m| m.sender_user == "bob") {
            break got;
        }
    };
    let m = got
        .iter()
        .find(|m| m.sender_user == "bob")
        .expect("bob's message");
    assert_eq!(&m.body[..], b"hi alice");
    assert_eq!(m.seq, 2);
}

#[tokio::test]
async fn unknown_subprotocols_are_refused_with_a_reason() {
    let (_engine, addr) = start(EngineConfig::default(), WsConfig::default()).await;
    let mut req = format!("ws://{addr}/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "mqtt, stomp".parse().expect("header"),
    );
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400);
            let body = String::from_utf8(resp.body().clone().unwrap_or_default()).expect("utf-8");
            assert!(
                body.contains("unsupported subprotocol(s) mqtt, stomp"),
                "{body}"
            );
            assert!(body.contains(SUBPROTOCOL), "{body}");
        }
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }

    // The engine's own subprotocol is accepted and echoed.
    let mut req = format!("ws://{addr}/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("chat, {SUBPROTOCOL}").parse().expect("header"),
    );
    let (_ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some(SUBPROTOCOL)
    );
}

#[tokio::test]
async fn wrong_path_and_plain_http_are_answered() {
    let (_engine, addr) = start(EngineConfig::default(), WsConfig::default().path("/ws")).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"GET /other HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.expect("read");
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    assert!(resp.contains("connect to /ws"), "{resp}");

    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.expect("read");
    assert!(resp.starts_with("HTTP/1.1 426"), "{resp}");
}

#[tokio::test]
async fn a_trickled_handshake_is_closed() {
    let timeout = Duration::from_millis(600);
    let (_engine, addr) = start(
        EngineConfig::default(),
        WsConfig::default().handshake_timeout(timeout),
    )
    .await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let request = b"GET /ws HTTP/1.1\r\nHost: a-very-slow-client.example\r\nUpgrade: websocket\r\n";
    let mut closed_at = None;
    for b in request.iter() {
        if s.write_all(&[*b]).await.is_err() {
            closed_at = Some(started.elapsed());
            break;
        }
        // The server must close the connection: a read returns EOF (or a reset).
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_at = Some(started.elapsed());
                break;
            }
            Ok(Ok(n)) => panic!("unexpected response to a partial request: {n} bytes"),
            Err(_) => {}
        }
    }
    let closed_at = closed_at.expect("the server closed the trickling client");
    assert!(closed_at >= timeout, "closed too early: {closed_at:?}");
    assert!(
        closed_at < timeout + Duration::from_secs(1),
        "closed late: {closed_at:?}"
    );
}

#[tokio::test]
async fn a_message_over_the_limit_in_fragments_is_refused() {
    let (_engine, addr) = start(
        EngineConfig::default(),
        WsConfig::default().max_message_bytes(4096),
    )
    .await;
    let mut ws = connect_as(addr, "frag").await;
    // Three 2 KiB fragments: each frame is under the limit, the message is not.
    let mut raw = Vec::new();
    let chunk = vec![7u8; 2048];
    let mut first = raw_frame(0x2, &chunk, None);
    first[0] &= 0x7f; // not final
    raw.extend(first);
    let mut cont = raw_frame(0x0, &chunk, None);
    cont[0] &= 0x7f;
    raw.extend(cont);
    raw.extend(raw_frame(0x0, &chunk, None));
    ws.get_mut().write_all(&raw).await.expect("write");
    let (code, _, _) = recv_close(&mut ws).await;
    assert_eq!(code, 1009);
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let (_engine, addr) = start(EngineConfig::default(), WsConfig::default()).await;
    let mut ws = connect_as(addr, "eve").await;
    ws.get_mut()
        .write_all(&raw_frame(0x1, &[0xff, 0xfe, 0xfd], None))
        .await
        .expect("write");
    let (code, reason, _) = recv_close(&mut ws).await;
    assert_eq!(code, u16::from(CloseCode::Invalid), "reason: {reason}");
    assert!(reason.contains("UTF-8"), "{reason}");

    // Valid text is refused the same way: the protocol is binary protobuf.
    let mut ws = connect_as(addr, "eve2").await;
    ws.send(Message::text("{\"send\":{}}")).await.expect("send");
    let (code, reason, errors) = recv_close(&mut ws).await;
    assert_eq!(code, 1007, "reason: {reason}");
    assert_eq!(
        errors.first().map(|e| e.code),
        Some(pb::ErrorCode::MalformedFrame as i32)
    );
}

#[tokio::test]
async fn a_protocol_violation_closes_with_1002() {
    let (_engine, addr) = start(EngineConfig::default(), WsConfig::default()).await;
    let mut ws = connect_as(addr, "rsv").await;
    let mut raw = raw_frame(0x2, b"x", None);
    raw[0] |= 0x40; // RSV1 without a negotiated extension
    ws.get_mut().write_all(&raw).await.expect("write");
    let (code, _, _) = recv_close(&mut ws).await;
    assert_eq!(code, 1002);
}

#[tokio::test]
async fn pings_are_answered() {
    let (_engine, addr) = start(EngineConfig::default(), WsConfig::default()).await;
    let mut ws = connect_as(addr, "pinger").await;
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .expect("ping");
    let pong = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Pong(p))) => return p,
                Some(Ok(_)) => continue,
                other => panic!("no pong: {other:?}"),
            }
        }
    })
    .await
    .expect("pong in time");
    assert_eq!(&pong[..], b"are you there");
}

#[tokio::test]
async fn the_engine_closes_with_a_policy_code_when_connect_is_missing() {
    let (_engine, addr) = start(EngineConfig::default(), WsConfig::default()).await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut ws = open_raw(stream, Some(SUBPROTOCOL)).await;
    send(&mut ws, 41, In::Ping(pb::Ping { client_time_ms: 1 })).await;
    // The refusal echoes the request id of the frame it answers.
    let refusal = recv(&mut ws).await;
    assert_eq!(refusal.request_id, 41);
    assert!(
        matches!(&refusal.body, Some(Out::Error(e)) if e.code == pb::ErrorCode::NotConnected as i32),
        "{refusal:?}"
    );
    let (code, _, _) = recv_close(&mut ws).await;
    assert_eq!(code, 1008);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_disconnected_without_slowing_others() {
    let config = {
        let mut c = EngineConfig::default();
        c.outbound_queue_bytes = 256 * 1024;
        c
    };
    let (engine, addr, probe) = start_probed(config, WsConfig::default()).await;
    let users: Vec<UserId> = ["sender", "fast", "slow"]
        .iter()
        .map(|u| UserId::new(u).expect("id"))
        .collect();
    let room = ChannelId::new("busy").expect("id");
    engine.create_group(&room, &users).await.expect("group");

    let mut sender = connect_as(addr, "sender").await;
    let mut fast = connect_as(addr, "fast").await;
    // The slow client has a tiny receive window and never reads.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let slow_stream = socket.connect(addr).await.expect("connect");
    let _slow = connect_on(slow_stream, "slow").await;
    assert!(engine.is_online(&users[2]));

    let count = 300usize;
    let body = vec![b'x'; 32 * 1024];
    let started = Instant::now();
    let fast_reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.len() < count {
            for m in next_push(&mut fast).await {
                seqs.push(m.seq);
            }
        }
        (seqs, started.elapsed())
    });
    // The sender waits for each ack before the next send (as a client with
    // one message in flight would), so only the slow reader falls behind.
    for i in 0..count {
        send(
            &mut sender,
            i as u64 + 10,
            text_send(&format!("m{i}"), group("busy"), body.clone()),
        )
        .await;
        loop {
            if let Some(Out::SendAck(a)) = recv(&mut sender).await.body {
                assert_eq!(a.seq, i as u64 + 1);
                break;
            }
        }
    }
    let (seqs, fast_done) = tokio::time::timeout(WAIT, fast_reader)
        .await
        .expect("fast reader in time")
        .expect("fast reader");
    assert_eq!(seqs, (1..=count as u64).collect::<Vec<_>>());
    // 300 x 32 KiB = 9.4 MiB: far more than the slow client's queue bound
    // plus socket buffers, so it must have been cut off.
    probe
        .wait_for(|s| s.sessions_of(users[2].as_str()) == 0)
        .await;
    assert!(!engine.is_online(&users[2]), "the slow reader was cut off");
    eprintln!("fast reader got {count} x 32 KiB in {fast_done:?}; slow reader disconnected");
    assert!(
        fast_done < Duration::from_secs(5),
        "fast reader took {fast_done:?}"
    );
}

#[tokio::test]
async fn a_client_close_is_echoed_and_ends_the_session() {
    let (engine, addr, probe) = start_probed(EngineConfig::default(), WsConfig::default()).await;
    let mut ws = connect_as(addr, "leaver").await;
    let user = UserId::new("leaver").expect("id");
    assert!(engine.is_online(&user));
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .expect("close");
    // The server echoes the close frame, then the stream ends.
    let echoed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("no close echo: {other:?}"),
            }
        }
    })
    .await
    .expect("echo in time");
    assert_eq!(echoed.map(|f| f.code), Some(CloseCode::Normal));
    probe.wait_for(|s| s.sessions_of("leaver") == 0).await;
    assert!(!engine.is_online(&user), "session still registered");
}

struct Page;

impl im_transport_ws::HttpHandler for Page {
    fn handle(
        &self,
        request: &im_transport_ws::http::Request<()>,
    ) -> im_transport_ws::http::Response<Bytes> {
        let mut response = im_transport_ws::http::Response::new(Bytes::from(format!(
            "page for {}",
            request.uri().path()
        )));
        response.headers_mut().insert(
            im_transport_ws::http::header::CONTENT_TYPE,
            im_transport_ws::http::HeaderValue::from_static("text/plain"),
        );
        response
    }
}

#[tokio::test]
async fn a_page_and_the_websocket_share_one_port() {
    let engine = im_core::Engine::builder(std::sync::Arc::new(im_store_memory::MemoryStore::new()))
        .insecure_dev_auth()
        .build()
        .expect("engine");
    let server = im_transport_ws::WsServer::bind("127.0.0.1:0", WsConfig::default().path("/ws"))
        .await
        .expect("bind")
        .with_http_handler(std::sync::Arc::new(Page));
    let addr = server.local_addr().expect("addr");
    server.serve(engine);

    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.expect("read");
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.contains("content-length: 20\r\n"), "{resp}");
    assert!(resp.ends_with("\r\n\r\npage for /index.html"), "{resp}");

    let mut ws = connect_as(addr, "visitor").await;
    send(&mut ws, 2, In::Ping(pb::Ping { client_time_ms: 7 })).await;
    match recv(&mut ws).await.body {
        Some(Out::Pong(p)) => assert_eq!(p.client_time_ms, 7),
        other => panic!("expected Pong, got {other:?}"),
    }
}

//! TCP and WebSocket serve one engine at once: a TCP user and a WebSocket
//! user chat with each other, directly and in a group, over real sockets.

mod common;

use std::sync::Arc;

use common::ws::{WsClient, tcp_pushed_from};
use im_engine::core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_engine::core::{ChannelId, Engine, UserId};
use im_engine::store_memory::MemoryStore;
use im_engine::transport_tcp::client::{Client, direct, group};
use im_engine::transport_tcp::{TcpConfig, TcpServer};
use im_engine::transport_ws::{WsConfig, WsServer};

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

#[tokio::test]
async fn each_client_is_told_the_frame_limit_its_transport_enforces() {
    // One engine (default 256 KiB), two transports with limits of their own.
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .insecure_dev_auth()
        .build()
        .expect("engine");
    let tcp = TcpServer::bind("127.0.0.1:0", TcpConfig::default().max_frame_bytes(40_000))
        .await
        .expect("tcp");
    let ws = WsServer::bind(
        "127.0.0.1:0",
        WsConfig::default().path("/ws").max_message_bytes(50_000),
    )
    .await
    .expect("ws");
    let (tcp_addr, ws_addr) = (
        tcp.local_addr().expect("addr"),
        ws.local_addr().expect("addr"),
    );
    tcp.serve(engine.clone());
    ws.serve(engine.clone());

    let alice = Client::connect(tcp_addr, "alice", "alice-cli")
        .await
        .expect("alice over TCP");
    let bob = WsClient::connect(ws_addr, "bob").await;
    assert_eq!(alice.connected.max_frame_bytes, 40_000);
    assert_eq!(bob.connected.max_frame_bytes, 50_000);

    // What was announced is what is enforced: a frame just over it is refused.
    let oversize = pb::Send {
        client_msg_id: "big".into(),
        conversation: Some(direct("bob")),
        body: vec![b'x'; 40_000].into(),
        ..Default::default()
    };
    let refused = alice
        .request(In::Send(oversize))
        .await
        .expect_err("over the limit");
    assert_eq!(
        refused.code(),
        Some(pb::ErrorCode::FrameTooLarge),
        "{refused:?}"
    );
}

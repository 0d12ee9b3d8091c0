//! TCP and WebSocket serve one engine at once: a TCP user and a WebSocket
//! user chat with each other, directly and in a group, over real sockets.

mod common;

use std::sync::Arc;

use common::ws::{WsClient, tcp_pushed_from};
use im_engine::core::{ChannelId, Engine, UserId};
use im_engine::store_memory::MemoryStore;
use im_engine::transport_tcp::client::{Client, direct, group};
use im_engine::transport_tcp::{TcpConfig, TcpServer};
use im_engine::transport_ws::{WsConfig, WsServer};

#[tokio::test]
async fn a_tcp_user_and_a_websocket_user_chat_with_each_other() {
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

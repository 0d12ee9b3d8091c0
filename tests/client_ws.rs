//! The Rust SDK over WebSocket: it walks its address list past a dead
//! server to a WebSocket one, chats, and comes back after the server drops
//! its connection, with every message exactly once.

use std::sync::Arc;
use std::time::Duration;

use im_client::{Client, ClientConfig, ConnectionState, ConversationKey, Event, Events};
use im_engine::core::Engine;
use im_engine::store_memory::MemoryStore;
use im_engine::transport_ws::{WsConfig, WsServer};
use im_testkit::fault_proxy::{Fault, FaultPlan, FaultProxy};

const WAIT: Duration = Duration::from_secs(10);

/// A `ws://` URL of a port nothing listens on.
fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    format!("ws://127.0.0.1:{port}/ws")
}

fn start(url: &str, dead: &str, user: &str) -> (Client, Events) {
    let mut config = ClientConfig::new(dead, format!("{user}:{user}-web"), format!("{user}-web"));
    config.servers.push(url.to_owned());
    config.backoff_base = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    Client::start(config).expect("client")
}

/// The next event `pick` accepts, within [`WAIT`].
async fn next<T>(events: &mut Events, mut pick: impl FnMut(Event) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        while let Some(e) = events.next().await {
            if let Some(t) = pick(e) {
                return t;
            }
        }
        panic!("the client stopped");
    })
    .await
    .expect("event in time")
}

async fn online(events: &mut Events) {
    next(events, |e| {
        matches!(e, Event::State(ConnectionState::Online)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_chats_over_websocket_after_skipping_a_dead_address_and_after_a_drop() {
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .insecure_dev_auth()
        .build()
        .expect("engine");
    let ws = WsServer::bind("127.0.0.1:0", WsConfig::default().path("/ws"))
        .await
        .expect("bind");
    let upstream = ws.local_addr().expect("addr");
    ws.serve(engine.clone());
    // Bob reaches the server through a proxy the test can cut.
    let proxy = FaultProxy::start(upstream, FaultPlan::from_fn(|_| Fault::Pass))
        .await
        .expect("proxy");
    let url = format!("ws://{upstream}/ws");
    let bob_url = format!("ws://{}/ws", proxy.addr());
    let dead = dead_url();

    let (alice, mut alice_events) = start(&url, &dead, "alice");
    let (_bob, mut bob_events) = start(&bob_url, &dead, "bob");
    online(&mut alice_events).await;
    online(&mut bob_events).await;

    alice
        .send(ConversationKey::direct("bob"), "over websocket")
        .await
        .expect("send");
    let first = next(&mut bob_events, |e| match e {
        Event::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!((first.seq, &first.body[..]), (1, &b"over websocket"[..]));

    // Bob's connection drops; the SDK reconnects over WebSocket and catches
    // up on what was sent meanwhile, without repeating seq 1.
    proxy.cut_all();
    next(&mut bob_events, |e| {
        matches!(e, Event::State(ConnectionState::Disconnected { .. })).then_some(())
    })
    .await;
    alice
        .send(ConversationKey::direct("bob"), "while you were away")
        .await
        .expect("send");
    let second = next(&mut bob_events, |e| match e {
        Event::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(
        (second.seq, &second.body[..]),
        (2, &b"while you were away"[..])
    );
}

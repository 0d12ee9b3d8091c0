//! The WebSocket endpoint mounted on a host's axum router
//! (`examples/axum-host`): clients chat through it while the host's own
//! routes keep answering on the same port; refusals and close codes are
//! the standalone transport's.
#![cfg(all(feature = "axum", feature = "memory"))]

#[path = "../examples/axum-host/app.rs"]
mod app;
mod common;
#[path = "../examples/axum-host/hooks.rs"]
mod hooks;

use std::net::SocketAddr;
use std::sync::Arc;

use common::WAIT;
use common::ws::WsClient;
use im_engine::core::Engine;
use im_engine::core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_engine::store_memory::MemoryStore;
use im_engine::transport_tcp::client::direct;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn host() -> (Engine, SocketAddr) {
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .insecure_dev_auth()
        .build()
        .expect("engine");
    serve(engine).await
}

/// Serves `engine` behind the example's router on 127.0.0.1.
async fn serve(engine: Engine) -> (Engine, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = app::app(engine.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (engine, addr)
}

/// One HTTP/1.1 request on a fresh connection; the whole response.
async fn http(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

async fn get(addr: SocketAddr, path: &str) -> String {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
}

#[tokio::test]
async fn clients_chat_through_the_router_and_the_host_routes_still_answer() {
    let (engine, addr) = host().await;
    let mut alice = WsClient::connect(addr, "alice").await;
    let mut bob = WsClient::connect(addr, "bob").await;

    let seq = alice.say(direct("bob"), "a1", "through axum").await;
    let got = bob.pushed_from("alice").await;
    assert_eq!((&got.body[..], got.seq), (&b"through axum"[..], seq));
    bob.say(direct("alice"), "b1", "and back").await;
    assert_eq!(&alice.pushed_from("bob").await.body[..], b"and back");

    // The host's own routes, on the same port, while the chat is open.
    let health = get(addr, "/api/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok\n"), "{health}");
    let online = get(addr, "/api/online").await;
    assert!(online.ends_with("\r\n2\n"), "{online}");
    assert!(get(addr, "/").await.contains("host application"));
    assert_eq!(engine.session_count(), 2);
}

#[tokio::test]
async fn refusals_and_close_codes_are_the_standalone_transports() {
    let (engine, addr) = host().await;

    // A plain GET on the endpoint: 426 naming the subprotocol.
    let plain = get(addr, "/ws").await;
    assert!(plain.starts_with("HTTP/1.1 426"), "{plain}");
    assert!(plain.contains("im.v1.proto"), "{plain}");

    // An unknown subprotocol: 400 with the reason, no upgrade.
    let refused = http(
        addr,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: chat.v9\r\n\r\n",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    assert!(
        refused.contains("unsupported subprotocol(s) chat.v9"),
        "{refused}"
    );

    // A frame announcing 16 MiB (only 1 KiB of it sent): refused from its
    // header with close 1009, as on the standalone server.
    let mut dave = WsClient::connect(addr, "dave").await;
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(16u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[0; 4 + 1024]); // mask key, then payload
    dave.write_raw(&frame).await;
    let (code, _) = dave.closed().await.expect("a close frame");
    assert_eq!(code, 1009);

    // Shutdown: Kicked{SHUTDOWN}, then close 1001, as on the standalone server.
    let mut carol = WsClient::connect(addr, "carol").await;
    let drain = tokio::spawn({
        let engine = engine.clone();
        async move { engine.shutdown().await }
    });
    let kicked = loop {
        if let Some(Out::Kicked(k)) = carol.next_frame().await.body {
            break k;
        }
    };
    assert_eq!(
        kicked.reason,
        im_engine::core::pb::KickReason::Shutdown as i32
    );
    let (code, _) = carol.closed().await.expect("a close frame");
    assert_eq!(code, 1001);
    tokio::time::timeout(WAIT, drain)
        .await
        .expect("drained in time")
        .expect("drain");

    // Refused while shutting down, with the reason.
    let late = http(
        addr,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert!(late.starts_with("HTTP/1.1 503"), "{late}");
}

/// The example's hooks: `--deny-word` refuses with the host's reason, and
/// `whoami` answers the caller.
#[tokio::test]
async fn the_example_hooks_deny_words_and_answer_whoami() {
    let deny = hooks::DenyWords::new(vec!["Spam".into()]).expect("a word");
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .pre_send_hook(Arc::new(deny))
        .call_handler(Arc::new(hooks::Calls))
        .session_observer(Arc::new(hooks::LogSessions))
        .insecure_dev_auth()
        .build()
        .expect("engine");
    let (_engine, addr) = serve(engine).await;
    let mut alice = WsClient::connect(addr, "alice").await;
    let refused = alice
        .request(In::Send(pb::Send {
            client_msg_id: "m1".into(),
            conversation: Some(direct("bob")),
            body: "buy SPAM now".into(),
            ..Default::default()
        }))
        .await;
    match refused {
        Out::Error(e) => {
            assert_eq!(e.code, pb::ErrorCode::Rejected as i32);
            assert!(e.reason.contains("spam"), "{e:?}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(alice.say(direct("bob"), "m2", "hello").await, 1);
    match alice
        .request(In::Call(pb::Call {
            method: "whoami".into(),
            data: Default::default(),
        }))
        .await
    {
        Out::CallResult(r) => assert_eq!(&r.data[..], b"alice:alice-browser"),
        other => panic!("expected a CallResult, got {other:?}"),
    }
}

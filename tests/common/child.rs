//! Helpers for tests that run a starter server as a child process
//! (`tests/durability.rs`, `tests/sigterm.rs`).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use im_engine::transport_tcp::client::Client;

/// The chat-server example, built by `cargo test --all-features` next to this
/// test (or by `cargo build --all-features --example chat-server`).
pub fn chat_server_bin() -> PathBuf {
    example_bin("chat-server")
}

/// The example `name` (a starter server), built by `cargo test
/// --all-features` next to this test (or by `cargo build --all-features
/// --example NAME`).
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("examples").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace --all-features`",
        bin.display()
    );
    bin
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Connects `user` (device `d`) to a server process on `port`, waiting up to
/// 10 s for it to come up.
pub async fn connect(port: u16, user: &str) -> Client {
    // The server is another process: its port accepting is the only sign it
    // is up, so this polls it with a back-off.
    for _ in 0..200 {
        if let Ok(c) = Client::connect(("127.0.0.1", port), &format!("{user}:d"), "d").await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chat-server did not come up on port {port}");
}

//! A `nats-server` of a test's own on a free port of 127.0.0.1, for tests
//! that stop and restart NATS (shared by this crate's tests and the
//! engine's `tests/cluster.rs`).
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a server may take to say it is ready.
const READY: Duration = Duration::from_secs(20);

/// A `nats-server` of the test's own on a free port.
pub struct ThrowawayNats {
    child: Child,
    port: u16,
}

impl ThrowawayNats {
    /// Starts a server on `port` and waits until it says it is ready.
    pub async fn start(port: u16) -> Self {
        let mut child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server is on PATH");
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let ready = tokio::time::timeout(READY, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("Server is ready") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "nats-server did not start on port {port}");
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, port }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills it (no lame-duck mode: clients see the connection drop).
    pub async fn stop(mut self) {
        self.child.kill().await.expect("kill nats-server");
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

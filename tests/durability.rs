//! A chat-server process on PostgreSQL is killed with SIGKILL mid-stream and
//! restarted: every acked message survives, seqs stay gap-free, and clients
//! retrying their unacked sends get exactly one copy each.
#![cfg(feature = "postgres")]

#[path = "common/child.rs"]
mod child;
#[path = "common/pg_schema.rs"]
mod pg_schema;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use child::{chat_server_bin, connect, free_port};
use im_engine::core::pb;
use im_engine::transport_tcp::client::group;
use pg_schema::{PG_URL, Schema};
use tokio::sync::{Mutex, Notify};

const CLIENTS: usize = 4;
const PER_CLIENT: usize = 3_000;
/// Acked sends after which the server is killed.
const KILL_AFTER: usize = 1_000;

fn start_server(port: u16, schema: &str) -> Child {
    let members = (0..CLIENTS)
        .map(|i| format!("c{i}"))
        .collect::<Vec<_>>()
        .join(",");
    Command::new(chat_server_bin())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics", &format!("127.0.0.1:{}", free_port())])
        .args(["--postgres", PG_URL, "--pg-schema", schema])
        .args(["--group", &format!("dur={members}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chat-server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_sigkill_and_retries_land_once() {
    let schema = Schema(format!("durability_{}", std::process::id()));
    let port = free_port();
    let mut server = start_server(port, &schema.0);

    // Each client streams sends (several in flight at once) and records acks.
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let enough = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = Arc::new(connect(port, &format!("c{c}")).await);
        let (acked, enough) = (acked.clone(), enough.clone());
        tasks.push(tokio::spawn(async move {
            let mut inflight = futures::stream::FuturesUnordered::new();
            for i in 0..PER_CLIENT {
                let client = client.clone();
                let id = format!("c{c}-{i}");
                inflight.push(async move {
                    let ack = client.send(group("dur"), &id, id.clone()).await;
                    (id, ack)
                });
                if inflight.len() >= 16 {
                    use futures::StreamExt;
                    match inflight.next().await {
                        Some((id, Ok(ack))) => {
                            let mut acked = acked.lock().await;
                            acked.insert(id, ack.seq);
                            if acked.len() >= KILL_AFTER {
                                enough.notify_one();
                            }
                        }
                        Some((_, Err(_))) | None => return,
                    }
                }
            }
        }));
    }
    // Let the stream run until KILL_AFTER sends were acked (or 4 s passed),
    // then kill the server without warning.
    let _ = tokio::time::timeout(Duration::from_secs(4), enough.notified()).await;
    server.kill().expect("SIGKILL");
    let _ = server.wait();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().await.clone();
    assert!(!acked.is_empty(), "some sends were acked before the kill");
    assert!(
        acked.len() < CLIENTS * PER_CLIENT,
        "the kill came mid-stream"
    );

    // Restart on the same database; every client retries what was not acked.
    let mut server = start_server(port, &schema.0);
    let mut retried = HashMap::new();
    for c in 0..CLIENTS {
        let client = connect(port, &format!("c{c}")).await;
        for i in 0..PER_CLIENT {
            let id = format!("c{c}-{i}");
            if acked.contains_key(&id) {
                continue;
            }
            let ack = client
                .send(group("dur"), &id, id.clone())
                .await
                .expect("retry");
            retried.insert(id, ack.seq);
        }
    }
    let reader = connect(port, "c0").await;
    let mut all: Vec<pb::Message> = Vec::new();
    loop {
        let after = all.last().map_or(0, |m| m.seq);
        let page = reader.pull(group("dur"), after, 0, 0).await.expect("pull");
        all.extend(page.messages);
        if !page.has_more {
            break;
        }
    }
    server.kill().expect("stop");
    let _ = server.wait();

    let seqs: Vec<u64> = all.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "gap-free seqs"
    );
    let ids: Vec<&str> = all.iter().map(|m| m.client_msg_id.as_str()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no message stored twice");
    assert_eq!(
        all.len(),
        CLIENTS * PER_CLIENT,
        "every send landed exactly once"
    );
    let by_id: HashMap<&str, u64> = all
        .iter()
        .map(|m| (m.client_msg_id.as_str(), m.seq))
        .collect();
    for (id, seq) in acked.iter().chain(retried.iter()) {
        assert_eq!(
            by_id.get(id.as_str()),
            Some(seq),
            "{id} keeps the seq it was acked with"
        );
    }
    for m in &all {
        assert_eq!(m.body.as_ref(), m.client_msg_id.as_bytes(), "body intact");
    }
}

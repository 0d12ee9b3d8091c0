//! A node of a two-process cluster is killed with SIGKILL while SDK clients
//! send through it: its clients move to the other node (their address
//! lists), resend what was not acked with the same `client_msg_id`, and in
//! the end every user saw every acknowledged message exactly once, in seq
//! order, and the store holds each send once (LOST = 0, DUP = 0).
//!
//! Real processes (`chat-server --cluster`), the shared NATS on
//! 127.0.0.1:4222 under a cluster name of this run, and a PostgreSQL schema
//! of this run.
#![cfg(all(feature = "cluster", feature = "postgres"))]

#[path = "common/child.rs"]
mod child;

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use child::{chat_server_bin, connect, free_port};
use im_client::{Client, ClientConfig, ConversationKey, Event, Events};

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const NATS_URL: &str = "nats://127.0.0.1:4222";
const USERS: [&str; 4] = ["u0", "u1", "u2", "u3"];
const SENDS_PER_USER: usize = 120;
/// Acks seen before node A is killed.
const KILL_AFTER: usize = 150;
const DEADLINE: Duration = Duration::from_secs(60);

/// Drops the schema when the test ends, whatever happens.
struct Schema(String);

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                PG_URL,
                "-qc",
                &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0),
            ])
            .status();
    }
}

/// A chat-server process, killed when dropped.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_node(port: u16, schema: &str, cluster: &str, name: &str, index: u16) -> Node {
    let child = Command::new(chat_server_bin())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics", &format!("127.0.0.1:{}", free_port())])
        .args(["--postgres", PG_URL, "--pg-schema", schema])
        .args(["--group", &format!("fo={}", USERS.join(","))])
        .args(["--cluster", NATS_URL, "--cluster-name", cluster])
        .args(["--node-id", name, "--node-index", &index.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chat-server");
    Node(child)
}

/// What one user's client saw.
#[derive(Debug, Default)]
struct Seen {
    /// Per conversation, the (seq, body) delivered, in delivery order.
    messages: BTreeMap<String, Vec<(u64, String)>>,
    /// client_msg_ids acknowledged.
    acked: HashSet<String>,
}

fn name(key: &ConversationKey, me: &str) -> String {
    match key.kind {
        im_client::Kind::Direct => {
            let (a, b) = if me < key.id.as_str() {
                (me, key.id.as_str())
            } else {
                (key.id.as_str(), me)
            };
            format!("dm:{a}:{b}")
        }
        _ => key.to_string(),
    }
}

/// Applies one event to `seen`.
fn record(seen: &mut Seen, me: &str, event: Event) {
    match event {
        Event::Message(m) => {
            let key = ConversationKey::from_wire(m.conversation.as_ref()).expect("conversation");
            seen.messages
                .entry(name(&key, me))
                .or_default()
                .push((m.seq, String::from_utf8_lossy(&m.body).into_owned()));
        }
        Event::SendAcked { client_msg_id, .. } => {
            seen.acked.insert(client_msg_id);
        }
        Event::SendFailed {
            client_msg_id,
            error,
            ..
        } => {
            panic!("{me}: send {client_msg_id} refused for good: {error:?}")
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_nothing_and_duplicates_nothing() {
    let run = format!("{}_{}", std::process::id(), child::free_port());
    let schema = Schema(format!("failover_{run}"));
    let cluster = format!("failover-{run}");
    let (port_a, port_b) = (free_port(), free_port());
    // One node first, so only one process creates the schema.
    let node_a = start_node(port_a, &schema.0, &cluster, "a", 1);
    drop(connect(port_a, "probe").await);
    let _node_b = start_node(port_b, &schema.0, &cluster, "b", 2);
    drop(connect(port_b, "probe").await);

    // u0 and u1 start on A, u2 and u3 on B; each knows both addresses.
    let mut clients: Vec<(Client, Events)> = Vec::new();
    for (i, user) in USERS.iter().enumerate() {
        let (first, second) = if i < 2 {
            (port_a, port_b)
        } else {
            (port_b, port_a)
        };
        let mut config = ClientConfig::new(
            format!("127.0.0.1:{first}"),
            format!("{user}:phone"),
            "phone",
        );
        config.servers.push(format!("127.0.0.1:{second}"));
        config.backoff_base = Duration::from_millis(20);
        config.backoff_max = Duration::from_millis(300);
        clients.push(Client::start(config).expect("client"));
    }
    // Everyone sends to the group and to a direct peer across the nodes.
    let mut sent: Vec<(String, ConversationKey)> = Vec::new();
    for i in 0..SENDS_PER_USER {
        for (u, (client, _)) in clients.iter().enumerate() {
            let to = if i % 2 == 0 {
                ConversationKey::group("fo")
            } else {
                ConversationKey::direct(USERS[(u + 2) % USERS.len()])
            };
            let body = format!("{}-{i}", USERS[u]);
            client
                .send_with_id(to.clone(), body.clone(), body.clone())
                .await
                .expect("queued");
            sent.push((body, to));
        }
    }

    let mut seen: Vec<Seen> = USERS.iter().map(|_| Seen::default()).collect();
    let mut node_a = Some(node_a);
    let total = sent.len();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let acked: usize = seen.iter().map(|s| s.acked.len()).sum();
        if acked >= KILL_AFTER {
            // SIGKILL: no goodbye, no drain; sends in flight on A are lost
            // in the socket and resent by their clients to B.
            drop(node_a.take());
        }
        if acked == total {
            break;
        }
        // Wait for the next event of any client.
        let next = futures::future::select_all(
            clients
                .iter_mut()
                .map(|(_, events)| Box::pin(events.next())),
        );
        let (event, who, _) = tokio::time::timeout_at(deadline, next)
            .await
            .unwrap_or_else(|_| panic!("timed out with {acked} of {total} sends acked"));
        let event = event.expect("client running");
        record(&mut seen[who], USERS[who], event);
    }
    assert!(
        node_a.is_none(),
        "node A was never killed (acks came too fast)"
    );

    // Deliveries settle: every user ends with every message of each of its
    // conversations, dense and once.
    let sender = |body: &str| body.split('-').next().expect("user").to_owned();
    let mut per_conversation: BTreeMap<String, usize> = BTreeMap::new();
    for (body, to) in &sent {
        *per_conversation.entry(name(to, &sender(body))).or_default() += 1;
    }
    for (u, user) in USERS.iter().enumerate() {
        let expected: BTreeMap<String, usize> = sent
            .iter()
            .filter(|(body, to)| {
                to.kind == im_client::Kind::Group || sender(body) == *user || to.id == *user
            })
            .map(|(body, to)| {
                let conv = name(to, &sender(body));
                let n = per_conversation[&conv];
                (conv, n)
            })
            .collect();
        let settle = tokio::time::Instant::now() + DEADLINE;
        while expected
            .iter()
            .any(|(c, n)| seen[u].messages.get(c).map_or(0, Vec::len) < *n)
        {
            let event = tokio::time::timeout_at(settle, clients[u].1.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("{user} never received everything: {:?}", counts(&seen[u]))
                })
                .expect("client running");
            record(&mut seen[u], user, event);
        }
        for (conv, n) in &expected {
            let got = &seen[u].messages[conv];
            let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
            let dense: Vec<u64> = (1..=*n as u64).collect();
            assert_eq!(seqs, dense, "{user} in {conv}: LOST, DUP or out of order");
            let bodies: HashSet<&String> = got.iter().map(|(_, b)| b).collect();
            assert_eq!(
                bodies.len(),
                got.len(),
                "{user} in {conv}: one send committed twice"
            );
        }
    }
}

fn counts(seen: &Seen) -> BTreeMap<&String, usize> {
    seen.messages.iter().map(|(k, v)| (k, v.len())).collect()
}

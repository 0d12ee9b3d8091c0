//! Several engines, one PostgreSQL schema, one NATS cluster name: users on
//! different nodes chat as if on one. Each test starts two or three
//! `Engine`s in this process, each with its own TCP listener and its own
//! bus connection, under a cluster name and a schema of its own.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 and NATS on 127.0.0.1:4222.
#![cfg(feature = "cluster")]

mod common;
#[path = "../im-cluster-nats/tests/common/nats.rs"]
mod nats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::pg_schema::{Schema, unique};
use common::{Server, WAIT, next_matching, user};
use nats::{ThrowawayNats, free_port};

use im_engine::cluster_nats::{BusFaults, ClusterConfig, NatsBus};
use im_engine::core::cluster::{Interest, NodeId};
use im_engine::core::pb::{self, server_frame::Body as Out};
use im_engine::core::{ChannelId, Engine, EngineConfig, UserId};
use im_engine::store_postgres::{PgStore, PgStoreConfig};
use im_engine::transport_tcp::client::{Client, direct, group, room};

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const NATS_URL: &str = "nats://127.0.0.1:4222";

struct Node {
    server: Server,
    bus: Arc<NatsBus>,
}

impl Node {
    fn engine(&self) -> &Engine {
        &self.server.engine
    }
}

struct Cluster {
    nodes: Vec<Node>,
    _schema: Schema,
}

async fn cluster(nodes: usize) -> Cluster {
    cluster_on(NATS_URL, nodes).await
}

/// `nodes` engines on the NATS at `nats_url`.
async fn cluster_on(nats_url: &str, nodes: usize) -> Cluster {
    let schema = Schema(unique("cluster"));
    let name = unique("t");
    let mut out = Vec::new();
    for i in 0..nodes {
        let store = PgStore::connect(
            PgStoreConfig::new(PG_URL)
                .with_schema(schema.0.clone())
                .with_pool_size(4),
        )
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
        let node = NodeId::new(format!("n{i}")).expect("node id");
        let config = ClusterConfig::new(nats_url, &name, node).expect("config");
        let bus = NatsBus::connect(&config)
            .await
            .expect("NATS on 127.0.0.1:4222");
        let mut engine_config = EngineConfig::default();
        // Each node its own index, so message ids stay unique across them.
        engine_config.node_index = i as u16;
        let engine = Engine::builder(Arc::new(store))
            .config(engine_config)
            .cluster(bus.clone())
            .insecure_dev_auth()
            .build()
            .expect("engine");
        out.push(Node {
            server: Server::serve(engine).await,
            bus,
        });
    }
    Cluster {
        nodes: out,
        _schema: schema,
    }
}

/// Waits until `node` listens for `interest` on the bus.
async fn listening(node: &Node, interest: Interest) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !node.bus.is_listening(&interest) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never listened for {interest:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn u(s: &str) -> Interest {
    Interest::User(user(s))
}

fn g(s: &str) -> ChannelId {
    ChannelId::new(s).expect("id")
}

/// Reads pushes until `n` messages of the conversation named `of` (as the
/// client sees it) arrived; checks they are seqs 1..=n in order, each once.
async fn receive_all(c: &Client, of: &pb::ConversationRef, n: usize) -> Vec<String> {
    let got = receive_range(c, of, 1, n as u64).await;
    let ids: std::collections::HashSet<u64> = got.iter().map(|m| m.message_id).collect();
    assert_eq!(ids.len(), got.len(), "two messages share a message id");
    got.iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

/// Reads pushes of `of` until `until - from + 1` of them arrived (or the
/// deadline); checks they are seqs `from..=until`, each once, in order.
async fn receive_range(
    c: &Client,
    of: &pb::ConversationRef,
    from: u64,
    until: u64,
) -> Vec<pb::Message> {
    let mut got: Vec<pb::Message> = Vec::new();
    let want: Vec<u64> = (from..=until).collect();
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    while got.len() < want.len() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.next_event(left).await.expect("connection") {
            Some(pb::ServerFrame {
                body: Some(Out::Push(p)),
                ..
            }) => got.extend(
                p.messages
                    .into_iter()
                    .filter(|m| m.conversation.as_ref() == Some(of)),
            ),
            Some(_) => {}
            None => break,
        }
    }
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        want,
        "{} got pushes out of order, missing or twice",
        c.user_id()
    );
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_chat_between_users_on_two_nodes() {
    let c = cluster(2).await;
    let alice = c.nodes[0].server.connect("alice", "d").await;
    let bob = c.nodes[1].server.connect("bob", "d").await;
    listening(&c.nodes[0], u("alice")).await;
    listening(&c.nodes[1], u("bob")).await;
    for i in 0..10 {
        alice
            .send(direct("bob"), &format!("a{i}"), format!("a{i}"))
            .await
            .expect("ack");
        bob.send(direct("alice"), &format!("b{i}"), format!("b{i}"))
            .await
            .expect("ack");
    }
    let at_alice = receive_all(&alice, &direct("bob"), 20).await;
    let at_bob = receive_all(&bob, &direct("alice"), 20).await;
    assert_eq!(at_alice, at_bob);
    assert_eq!(at_alice[..2], ["a0", "b0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_members_on_three_nodes() {
    let c = cluster(3).await;
    c.nodes[0]
        .engine()
        .create_group(&g("team"), &[user("m0"), user("m1"), user("m2")])
        .await
        .expect("group");
    let mut members = Vec::new();
    for (i, node) in c.nodes.iter().enumerate() {
        members.push(node.server.connect(&format!("m{i}"), "d").await);
        listening(node, Interest::Group(g("team"))).await;
    }
    for round in 0..5 {
        for (i, m) in members.iter().enumerate() {
            let id = format!("m{i}-{round}");
            m.send(group("team"), &id, id.clone()).await.expect("ack");
        }
    }
    let first = receive_all(&members[0], &group("team"), 15).await;
    for m in &members[1..] {
        assert_eq!(receive_all(m, &group("team"), 15).await, first);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_read_diffusion_group_across_three_nodes() {
    let c = cluster(3).await;
    let members: Vec<UserId> = (0..600).map(|i| user(&format!("b{i}"))).collect();
    c.nodes[1]
        .engine()
        .create_group(&g("big"), &members)
        .await
        .expect("group");
    let mut online = Vec::new();
    for (i, node) in c.nodes.iter().enumerate() {
        online.push(node.server.connect(&format!("b{i}"), "d").await);
        listening(node, Interest::Group(g("big"))).await;
    }
    for round in 0..4 {
        for (i, m) in online.iter().enumerate() {
            let id = format!("b{i}-{round}");
            m.send(group("big"), &id, id.clone()).await.expect("ack");
        }
    }
    let first = receive_all(&online[0], &group("big"), 12).await;
    for m in &online[1..] {
        assert_eq!(receive_all(m, &group("big"), 12).await, first);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_with_members_on_two_nodes() {
    let c = cluster(2).await;
    let mut members = Vec::new();
    for i in 0..4 {
        let node = &c.nodes[i % 2];
        let m = node.server.connect(&format!("r{i}"), "d").await;
        m.join_room("live").await.expect("join");
        members.push(m);
    }
    for node in &c.nodes {
        listening(node, Interest::Room(g("live"))).await;
    }
    for round in 0..5 {
        for (i, m) in members.iter().enumerate() {
            let id = format!("r{i}-{round}");
            m.send(room("live"), &id, id.clone()).await.expect("ack");
        }
    }
    let first = receive_all(&members[0], &room("live"), 20).await;
    for m in &members[1..] {
        assert_eq!(receive_all(m, &room("live"), 20).await, first);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_other_device_on_another_node_sees_their_sends() {
    let c = cluster(2).await;
    let phone = c.nodes[0].server.connect("alice", "phone").await;
    let laptop = c.nodes[1].server.connect("alice", "laptop").await;
    let bob = c.nodes[0].server.connect("bob", "d").await;
    listening(&c.nodes[1], u("alice")).await;
    for i in 0..5 {
        phone
            .send(direct("bob"), &format!("p{i}"), format!("p{i}"))
            .await
            .expect("ack");
    }
    // Everyone checks all six (below), the phone's own sends included.
    // A host send on the other node reaches every device too.
    c.nodes[1]
        .engine()
        .send_as(
            im_engine::core::ConversationId::direct(user("alice"), user("bob")),
            user("bob"),
            "from the host".into(),
            None,
        )
        .await
        .expect("host send");
    for (c, peer) in [(&phone, "bob"), (&laptop, "bob"), (&bob, "alice")] {
        let all = receive_all(c, &direct(peer), 6).await;
        assert_eq!(all.last().map(String::as_str), Some("from the host"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_user_and_membership_changes_from_another_node() {
    let c = cluster(2).await;
    let bob = c.nodes[1].server.connect("bob", "d").await;
    let carol = c.nodes[1].server.connect("carol", "d").await;
    listening(&c.nodes[1], u("carol")).await;
    // Created on node 0 while carol is online on node 1: node 1 indexes her.
    c.nodes[0]
        .engine()
        .create_group(&g("late"), &[user("alice"), user("carol")])
        .await
        .expect("group");
    listening(&c.nodes[1], Interest::Group(g("late"))).await;
    c.nodes[0]
        .engine()
        .send_as(
            im_engine::core::ConversationId::Group(g("late")),
            user("alice"),
            "hello carol".into(),
            None,
        )
        .await
        .expect("send");
    assert_eq!(
        receive_all(&carol, &group("late"), 1).await,
        ["hello carol"]
    );
    // Removed on node 0: node 1 stops listening for the group.
    c.nodes[0]
        .engine()
        .remove_members(&g("late"), &[user("carol")])
        .await
        .expect("remove");
    let deadline = tokio::time::Instant::now() + WAIT;
    while c.nodes[1].bus.is_listening(&Interest::Group(g("late"))) {
        assert!(tokio::time::Instant::now() < deadline, "still indexed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    assert_eq!(c.nodes[0].engine().kick_user(&user("bob"), "bye"), 0);
    let kicked = next_matching(&bob, |b| match b {
        Out::Kicked(k) => Some(k),
        _ => None,
    })
    .await
    .expect("kicked on the other node");
    assert_eq!(kicked.detail, "bye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_converge_when_the_bus_loses_and_delays_a_fifth() {
    let c = cluster(3).await;
    c.nodes[0]
        .engine()
        .create_group(&g("crew"), &[user("x0"), user("x1"), user("x2")])
        .await
        .expect("group");
    let mut xs = Vec::new();
    for (i, node) in c.nodes.iter().enumerate() {
        let x = node.server.connect(&format!("x{i}"), "d").await;
        x.join_room("hall").await.expect("join");
        xs.push(x);
        listening(node, u(&format!("x{i}"))).await;
        listening(node, Interest::Group(g("crew"))).await;
        listening(node, Interest::Room(g("hall"))).await;
    }
    // A node repairs from what it delivered: the first message of each
    // conversation goes over a clean bus.
    xs[0].send(direct("x1"), "w-d", "w").await.expect("ack");
    xs[0].send(group("crew"), "w-g", "w").await.expect("ack");
    xs[0].send(room("hall"), "w-r", "w").await.expect("ack");
    for x in &xs {
        let _ = x
            .collect_pushed(if std::ptr::eq(x, &xs[2]) { 2 } else { 3 }, WAIT)
            .await;
    }
    for node in &c.nodes {
        node.bus.set_faults(BusFaults {
            drop_per_mille: 200,
            delay_per_mille: 100,
            delay: Duration::from_millis(30),
        });
    }
    const ROUNDS: usize = 30;
    for round in 0..ROUNDS {
        let (a, b) = (round % 3, (round + 1) % 3);
        xs[a]
            .send(group("crew"), &format!("g{round}"), format!("g{round}"))
            .await
            .expect("ack");
        xs[b]
            .send(room("hall"), &format!("r{round}"), format!("r{round}"))
            .await
            .expect("ack");
        let (from, to) = if round % 2 == 0 { (0, 1) } else { (1, 0) };
        xs[from]
            .send(
                direct(&format!("x{to}")),
                &format!("d{round}"),
                format!("d{round}"),
            )
            .await
            .expect("ack");
    }
    // Every client gets every message of every conversation it is in, in
    // order, once (after the warm-up, seq 1).
    let mut seen: HashMap<&str, Vec<String>> = HashMap::new();
    for (i, x) in xs.iter().enumerate() {
        let mut want = vec![(group("crew"), ROUNDS), (room("hall"), ROUNDS)];
        if i < 2 {
            want.push((direct(&format!("x{}", 1 - i)), ROUNDS));
        }
        let all = receive_mixed(x, &want).await;
        for (conv, bodies) in all {
            let key = if conv.kind == pb::ConversationKind::Direct as i32 {
                "direct"
            } else if conv.id == "crew" {
                "crew"
            } else {
                "hall"
            };
            if let Some(prev) = seen.get(key) {
                assert_eq!(prev, &bodies, "{key} differs between clients");
            }
            seen.insert(key, bodies);
        }
    }
}

/// Like [`receive_all`] for several conversations at once, from seq 2.
async fn receive_mixed(
    c: &Client,
    want: &[(pb::ConversationRef, usize)],
) -> Vec<(pb::ConversationRef, Vec<String>)> {
    let mut got: Vec<Vec<pb::Message>> = vec![Vec::new(); want.len()];
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while got.iter().zip(want).any(|(g, (_, n))| g.len() < *n) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.next_event(left).await.expect("connection") {
            Some(pb::ServerFrame {
                body: Some(Out::Push(p)),
                ..
            }) => {
                for m in p.messages {
                    if let Some(i) = want
                        .iter()
                        .position(|(w, _)| m.conversation.as_ref() == Some(w))
                    {
                        got[i].push(m);
                    }
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    want.iter()
        .zip(got)
        .map(|((conv, n), msgs)| {
            let seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
            let expect: Vec<u64> = (2..=*n as u64 + 1).collect();
            assert_eq!(
                seqs,
                expect,
                "{} in {conv:?}: out of order, missing or twice",
                c.user_id()
            );
            (
                conv.clone(),
                msgs.iter()
                    .map(|m| String::from_utf8_lossy(&m.body).into_owned())
                    .collect(),
            )
        })
        .collect()
}

/// Waits until `node`'s bus is (or is not) connected to NATS.
async fn bus_connected(node: &Node, up: bool) {
    let deadline = tokio::time::Instant::now() + WAIT * 4;
    while node.bus.is_connected() != up {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bus never became connected={up}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_when_nats_restarts() {
    let port = free_port();
    let nats = ThrowawayNats::start(port).await;
    let c = cluster_on(&nats.url(), 2).await;
    let alice = c.nodes[0].server.connect("alice", "d").await;
    let bob = c.nodes[1].server.connect("bob", "d").await;
    listening(&c.nodes[0], u("alice")).await;
    listening(&c.nodes[1], u("bob")).await;
    let say = |i: u64| {
        let alice = &alice;
        async move {
            alice
                .send(direct("bob"), &format!("m{i}"), format!("m{i}"))
                .await
                .expect("acked: commits need the store, not the bus")
        }
    };
    for i in 1..=5 {
        say(i).await;
    }
    receive_range(&bob, &direct("alice"), 1, 5).await;

    // NATS goes away: sends still commit (the store), sessions stay up.
    nats.stop().await;
    bus_connected(&c.nodes[0], false).await;
    for i in 6..=10 {
        say(i).await;
    }
    // NATS comes back on the same port: the buses reconnect by themselves,
    // and what was committed meanwhile is repaired from the store when the
    // next batch (or the head beacon) shows the gap.
    let nats = ThrowawayNats::start(port).await;
    bus_connected(&c.nodes[0], true).await;
    bus_connected(&c.nodes[1], true).await;
    for i in 11..=15 {
        say(i).await;
    }
    receive_range(&bob, &direct("alice"), 6, 15).await;
    drop(c);
    nats.stop().await;
}

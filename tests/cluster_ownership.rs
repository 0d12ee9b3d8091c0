//! One writer per conversation, cluster-wide: a send is committed by its
//! conversation's owner among the live nodes, and ownership moves while
//! sends are in flight — a node joins, then a node leaves — without a gap,
//! a fork or a duplicate in any timeline.
//!
//! In-process engines over the shared PostgreSQL (a schema of their own)
//! and NATS (a cluster name of their own), each with its membership and a
//! bus that routes by it.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 and NATS on 127.0.0.1:4222.
#![cfg(feature = "cluster")]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::pg_schema::{PG_URL, Schema, unique};
use common::{Server, WAIT, stored, user};

use im_engine::cluster_nats::{ClusterConfig, Membership, NatsBus};
use im_engine::core::amend::Actor;
use im_engine::core::cluster::{NodeId, owner};
use im_engine::core::content::ContentType;
use im_engine::core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_engine::core::store::StoredMessage;
use im_engine::core::{ChannelId, ConversationId, Engine, EngineConfig};
use im_engine::store_postgres::{PgStore, PgStoreConfig};
use im_engine::transport_tcp::client::{Client, ClientError, direct, group};

const NATS_URL: &str = "nats://127.0.0.1:4222";

struct Node {
    server: Server,
    membership: Membership,
}

/// The cluster config of node `node` (index `index`): fast heartbeats and
/// a short forward timeout so moves and timeouts happen within the test.
fn config(name: &str, node: &str, index: u16) -> ClusterConfig {
    ClusterConfig::new(NATS_URL, name, NodeId::new(node).expect("id"))
        .expect("config")
        .with_heartbeat_interval(Duration::from_millis(100))
        .with_node_timeout(Duration::from_secs(1))
        .with_forward_timeout(Duration::from_secs(2))
        .with_node_index(index)
}

/// Node `n<index>` of cluster `name` on schema `schema`, routing sends by
/// its membership.
async fn start_node(schema: &str, name: &str, index: u16) -> Node {
    let store = PgStore::connect(
        PgStoreConfig::new(PG_URL)
            .with_schema(schema.to_owned())
            .with_pool_size(4),
    )
    .await
    .expect("PostgreSQL on 127.0.0.1:5432");
    let config = config(name, &format!("n{index}"), index);
    let bus = NatsBus::connect(&config)
        .await
        .expect("NATS on 127.0.0.1:4222");
    let membership = Membership::join(config).await.expect("join");
    bus.route_by(&membership);
    let mut engine_config = EngineConfig::default();
    engine_config.node_index = index;
    let engine = Engine::builder(Arc::new(store))
        .config(engine_config)
        .cluster(bus)
        .insecure_dev_auth()
        .build()
        .expect("engine");
    Node {
        server: Server::serve(engine).await,
        membership,
    }
}

/// Waits until `node` sees exactly `want` live.
async fn sees(node: &Membership, want: &[&str]) {
    let want: Vec<NodeId> = want.iter().map(|n| NodeId::new(n).expect("id")).collect();
    let mut live = node.watch();
    tokio::time::timeout(WAIT, live.wait_for(|nodes| *nodes == want))
        .await
        .unwrap_or_else(|_| panic!("{} never saw {want:?}", node.node()))
        .expect("membership runs");
}

/// Waits until the senders got `n` acks in all.
async fn acks_reach(acks: &AtomicUsize, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT * 4;
    while acks.load(Ordering::Relaxed) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sends stalled at {} acks (waiting for {n})",
            acks.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Where a client sends: each conversation as it names it and as stored.
type Targets = Vec<(pb::ConversationRef, ConversationId)>;

/// One acked send: its conversation (store key), client_msg_id and seq.
type Acked = (String, String, u64);

/// Sends round-robin to `to` until `stop`, resending a send that failed
/// retryably with the same client_msg_id until it is acked.
async fn keep_sending(
    client: Arc<Client>,
    to: Targets,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
) -> Vec<Acked> {
    let mut acked = Vec::new();
    let mut k = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let (wire, conv) = &to[k % to.len()];
        let cmid = format!("{}-{k}", client.user_id());
        let mut attempts = 0;
        let ack = loop {
            attempts += 1;
            match client.send(wire.clone(), &cmid, cmid.clone()).await {
                Ok(ack) => break ack,
                Err(ClientError::Server(e)) if e.retryable && attempts < 100 => {
                    // The owner moved or is unreachable: resend the same id.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{cmid} failed for good after {attempts} attempts: {e}"),
            }
        };
        assert_eq!(ack.client_msg_id, cmid);
        acked.push((conv.to_key(), cmid, ack.seq));
        acks.fetch_add(1, Ordering::Relaxed);
        k += 1;
    }
    acked
}

/// The node index a message id was minted with (who committed it).
fn committed_by(m: &StoredMessage) -> u64 {
    (m.message_id.0 >> 10) & 63
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_moves_while_sends_are_in_flight_without_gap_fork_or_duplicate() {
    let schema = Schema(unique("owner"));
    let name = unique("own");
    let n0 = start_node(&schema.0, &name, 0).await;
    let n1 = start_node(&schema.0, &name, 1).await;
    sees(&n0.membership, &["n0", "n1"]).await;
    sees(&n1.membership, &["n0", "n1"]).await;
    n0.server.group("grp", &["u0", "u1", "u2", "u3"]).await;

    // u0, u1 on n0; u2, u3 on n1: direct chats across nodes and one group.
    let grp = ConversationId::Group(ChannelId::new("grp").expect("id"));
    let dm = |a: &str, b: &str| ConversationId::direct(user(a), user(b));
    let plan: [(&Node, &str, Targets); 4] = [
        (
            &n0,
            "u0",
            vec![
                (direct("u2"), dm("u0", "u2")),
                (direct("u3"), dm("u0", "u3")),
                (group("grp"), grp.clone()),
            ],
        ),
        (
            &n0,
            "u1",
            vec![(direct("u3"), dm("u1", "u3")), (group("grp"), grp.clone())],
        ),
        (
            &n1,
            "u2",
            vec![(direct("u0"), dm("u0", "u2")), (group("grp"), grp.clone())],
        ),
        (
            &n1,
            "u3",
            vec![
                (direct("u0"), dm("u0", "u3")),
                (direct("u1"), dm("u1", "u3")),
                (group("grp"), grp.clone()),
            ],
        ),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    let mut senders = Vec::new();
    for (node, u, to) in plan {
        let c = Arc::new(node.server.connect(u, "d").await);
        clients.push((c.clone(), to.clone()));
        senders.push(tokio::spawn(keep_sending(
            c,
            to,
            stop.clone(),
            acks.clone(),
        )));
    }

    // A node joins while sends are in flight: conversations that prefer it
    // move to it, and n0 and n1 learn of it at different moments.
    acks_reach(&acks, 40).await;
    let n2 = start_node(&schema.0, &name, 2).await;
    for m in [&n0.membership, &n1.membership, &n2.membership] {
        sees(m, &["n0", "n1", "n2"]).await;
    }
    let joined_at = acks.load(Ordering::Relaxed);
    acks_reach(&acks, joined_at + 60).await;

    // It leaves while sends are in flight: its conversations move back.
    let Node { server, membership } = n2;
    membership.leave().await;
    server.engine.shutdown().await;
    sees(&n0.membership, &["n0", "n1"]).await;
    sees(&n1.membership, &["n0", "n1"]).await;
    let left_at = acks.load(Ordering::Relaxed);
    acks_reach(&acks, left_at + 60).await;
    stop.store(true, Ordering::Relaxed);

    let mut acked: Vec<Acked> = Vec::new();
    for s in senders {
        acked.extend(s.await.expect("sender"));
    }

    // The store: every acked send exactly once, at the seq its ack named;
    // seqs dense 1..=N; no client_msg_id twice; nothing unacked.
    let store = n0.server.engine.store().clone();
    let convs = [dm("u0", "u2"), dm("u0", "u3"), dm("u1", "u3"), grp.clone()];
    let mut timelines: HashMap<String, Vec<StoredMessage>> = HashMap::new();
    let mut committers: HashSet<u64> = HashSet::new();
    for conv in &convs {
        let msgs = stored(&*store, conv).await;
        let seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            (1..=msgs.len() as u64).collect::<Vec<_>>(),
            "{conv}: seqs not dense"
        );
        let mut ids = HashSet::new();
        for m in &msgs {
            let id = m.client_msg_id.clone().expect("every send has an id");
            assert!(ids.insert(id.clone()), "{conv}: {id} committed twice");
            committers.insert(committed_by(m));
        }
        timelines.insert(conv.to_key(), msgs);
    }
    let mut want: BTreeMap<String, BTreeMap<u64, String>> = BTreeMap::new();
    for (conv, cmid, seq) in &acked {
        let msgs = &timelines[conv];
        let at = usize::try_from(*seq).expect("seq") - 1;
        assert_eq!(
            msgs.get(at).and_then(|m| m.client_msg_id.as_deref()),
            Some(cmid.as_str()),
            "{conv}: ack of {cmid} named seq {seq}"
        );
        want.entry(conv.clone())
            .or_default()
            .insert(*seq, cmid.clone());
    }
    for (conv, msgs) in &timelines {
        assert_eq!(
            want.get(conv).map_or(0, BTreeMap::len),
            msgs.len(),
            "{conv}: the store holds a message no ack named"
        );
    }
    assert!(
        committers.contains(&2) && committers.len() == 3,
        "every node committed as an owner at some point: {committers:?}"
    );

    // The clients converge: what each was pushed is what the store holds,
    // and pulling past the last push completes its view.
    for (client, to) in clients {
        let mut seen: HashMap<String, BTreeMap<u64, pb::Message>> = HashMap::new();
        let key_of =
            |r: &pb::ConversationRef| to.iter().find(|(w, _)| w == r).map(|(_, c)| c.to_key());
        let pushed = client
            .collect_pushed(usize::MAX, Duration::from_millis(500))
            .await
            .expect("connection");
        for m in pushed {
            if let Some(key) = m.conversation.as_ref().and_then(key_of) {
                seen.entry(key).or_default().insert(m.seq, m);
            }
        }
        for (wire, conv) in &to {
            let key = conv.to_key();
            let view = seen.entry(key.clone()).or_default();
            for (seq, m) in view.iter() {
                let s = &timelines[&key][usize::try_from(*seq).expect("seq") - 1];
                assert_eq!(
                    (m.message_id, &m.client_msg_id),
                    (s.message_id.0, s.client_msg_id.as_ref().expect("id")),
                    "{}: pushed seq {seq} of {key} is not the stored one",
                    client.user_id()
                );
            }
            let head = timelines[&key].len() as u64;
            let mut after = 0;
            while after < head {
                let page = client
                    .pull(wire.clone(), after, head, 200)
                    .await
                    .expect("pull");
                if page.messages.is_empty() {
                    break;
                }
                for m in page.messages {
                    after = after.max(m.seq);
                    view.entry(m.seq).or_insert(m);
                }
            }
            assert_eq!(
                view.keys().copied().collect::<Vec<_>>(),
                (1..=head).collect::<Vec<_>>(),
                "{} did not converge on {key}",
                client.user_id()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_to_an_owner_that_never_answers_fails_retryably_and_its_resend_lands_once() {
    let schema = Schema(unique("owner"));
    let name = unique("own");
    let n0 = start_node(&schema.0, &name, 0).await;
    // A live member that serves no sends: heartbeats, no bus, no engine
    // (as a node whose engine hangs, or one dead but not yet timed out).
    let ghost = Membership::join(config(&name, "ghost", 9))
        .await
        .expect("join");
    sees(&n0.membership, &["ghost", "n0"]).await;
    let live = [
        NodeId::new("ghost").expect("id"),
        NodeId::new("n0").expect("id"),
    ];
    let peer = (0..100)
        .map(|i| format!("p{i}"))
        .find(|p| {
            let conv = ConversationId::direct(user("me"), user(p));
            owner(&conv.to_key(), &live).map(NodeId::as_str) == Some("ghost")
        })
        .expect("the ghost owns some direct chat");
    let me = n0.server.connect("me", "d").await;

    let err = me
        .send(direct(&peer), "m-1", "hello")
        .await
        .expect_err("nobody commits for the ghost");
    match &err {
        ClientError::Server(e) => {
            assert_eq!(e.code(), pb::ErrorCode::Unavailable, "{e:?}");
            assert!(e.retryable, "a send to a silent owner may be resent: {e:?}");
        }
        other => panic!("expected a retryable UNAVAILABLE, got {other}"),
    }

    // The ghost leaves: n0 owns the chat now, and the resend lands once.
    ghost.leave().await;
    sees(&n0.membership, &["n0"]).await;
    let ack = me.send(direct(&peer), "m-1", "hello").await.expect("ack");
    assert_eq!((ack.seq, ack.duplicate), (1, false));
    let again = me.send(direct(&peer), "m-1", "hello").await.expect("ack");
    assert_eq!((again.seq, again.duplicate), (1, true));
    let conv = ConversationId::direct(user("me"), user(&peer));
    let msgs = stored(&**n0.server.engine.store(), &conv).await;
    assert_eq!(msgs.len(), 1, "the resend landed once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_sends_recalls_and_edits_on_any_node_are_committed_by_the_owner() {
    let schema = Schema(unique("owner"));
    let name = unique("own");
    let n0 = start_node(&schema.0, &name, 0).await;
    let n1 = start_node(&schema.0, &name, 1).await;
    sees(&n0.membership, &["n0", "n1"]).await;
    sees(&n1.membership, &["n0", "n1"]).await;
    // A group n1 owns, driven from n0 (host calls and a client there).
    let id = (0..100)
        .map(|i| format!("team{i}"))
        .find(|g| n1.membership.owns(&ConversationId::group(g).expect("id")))
        .expect("n1 owns some group");
    n0.server.group(&id, &["ann", "ben"]).await;
    let conv = ConversationId::group(&id).expect("id");
    let host = &n0.server.engine;

    let sent = host
        .send_as(conv.clone(), user("ann"), "hi".into(), Some("h-1".into()))
        .await
        .expect("send_as");
    assert_eq!((sent.seq, sent.duplicate), (1, false));
    let retried = host
        .send_as(conv.clone(), user("ann"), "hi".into(), Some("h-1".into()))
        .await
        .expect("send_as retried");
    assert_eq!((retried.seq, retried.duplicate), (1, true));
    let edited = host
        .edit(
            conv.clone(),
            1,
            "hi!".into(),
            ContentType::Text,
            Actor::Host,
            Some("h-2".into()),
        )
        .await
        .expect("edit");
    assert_eq!(edited.seq, 2);
    let ann = n0.server.connect("ann", "d").await;
    let recall = ann
        .request(In::Recall(pb::Recall {
            client_msg_id: "a-1".into(),
            conversation: Some(group(&id)),
            target_seq: 1,
        }))
        .await
        .expect("recall");
    assert!(
        matches!(&recall, Out::SendAck(a) if a.seq == 3),
        "{recall:?}"
    );
    let refused = ann
        .send(group("no-such-group"), "a-2", "x")
        .await
        .expect_err("no such group");
    assert!(
        matches!(&refused, ClientError::Server(e) if !e.retryable),
        "{refused}"
    );

    let msgs = stored(&**host.store(), &conv).await;
    assert_eq!(msgs.len(), 3);
    assert!(msgs[0].recalled, "the recall reached the original");
    assert!(
        msgs.iter().all(|m| committed_by(m) == 1),
        "the owner n1 committed every one"
    );
}

//! The card's seams: a host replaces a default through the builder, and the
//! engine keeps its contract with the host's implementation.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use common::*;
use im_engine::core::fanout::{FanoutInput, FanoutPlan};
use im_engine::core::pb::{self, server_frame::Body as Out};
use im_engine::core::room::{BatchConfig, BatchTier, SubRoomConfig};
use im_engine::core::store::{Store, StoreResult};
use im_engine::core::{
    CachedSequencer, ChannelId, ConversationId, Engine, EngineConfig, OfflineNotice, OfflinePush,
    Seq, Sequencer, SessionDirectory, SessionInfo, UserId,
};
use im_engine::core::{DefaultFanoutPolicy, FanoutPolicy};
use im_engine::store_memory::MemoryStore;
use im_engine::transport_tcp::client::{Client, group, room};
use std::time::Duration;
use tokio::sync::mpsc;

/// A host's sequencer that answers stale heads (0) while `lies` > 0, and
/// counts how often the engine told it to forget.
#[derive(Debug)]
struct StaleSequencer {
    inner: CachedSequencer,
    lies: AtomicUsize,
    forgotten: AtomicUsize,
}

#[async_trait]
impl Sequencer for StaleSequencer {
    async fn heads(&self, store: &dyn Store, convs: &[ConversationId]) -> StoreResult<Vec<Seq>> {
        let lie = self
            .lies
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if lie {
            return Ok(vec![0; convs.len()]);
        }
        self.inner.heads(store, convs).await
    }
    fn advanced(&self, heads: &[(ConversationId, Seq)]) {
        self.inner.advanced(heads);
    }
    fn forget(&self, convs: &[ConversationId]) {
        self.forgotten.fetch_add(1, Ordering::SeqCst);
        self.inner.forget(convs);
    }
}

#[tokio::test]
async fn a_host_sequencer_that_answers_stale_heads_cannot_fork_a_timeline() {
    let sequencer = Arc::new(StaleSequencer {
        inner: CachedSequencer::new(100),
        lies: AtomicUsize::new(0),
        forgotten: AtomicUsize::new(0),
    });
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::builder(store.clone())
        .config(EngineConfig::default())
        .sequencer(sequencer.clone())
        .insecure_dev_auth()
        .build()
        .expect("engine");
    let conv = ConversationId::direct(user("alice"), user("bob"));
    for i in 1..=3u64 {
        let r = engine
            .send_as(conv.clone(), user("alice"), format!("m{i}").into(), None)
            .await
            .expect("send");
        assert_eq!(r.seq, i);
    }
    // The sequencer now claims the chat is empty: the store refuses seq 1,
    // the engine forgets and asks again, and the message lands at seq 4.
    sequencer.lies.store(1, Ordering::SeqCst);
    let r = engine
        .send_as(conv.clone(), user("bob"), "m4".into(), None)
        .await
        .expect("send after a stale head");
    assert_eq!(r.seq, 4);
    assert!(sequencer.forgotten.load(Ordering::SeqCst) >= 1);
    let messages = stored(&*store, &conv).await;
    let seqs: Vec<Seq> = messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    let bodies: Vec<&[u8]> = messages.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, vec![&b"m1"[..], b"m2", b"m3", b"m4"]);
}

/// A host's directory: `carol` is online on another node; every event the
/// engine reports is sent down a channel.
#[derive(Debug)]
struct ClusterDirectory {
    events: mpsc::UnboundedSender<String>,
}

impl SessionDirectory for ClusterDirectory {
    fn session_opened(&self, s: &SessionInfo) {
        let _ = self.events.send(format!("opened {}:{}", s.user, s.device));
    }
    fn session_closed(&self, s: &SessionInfo) {
        let _ = self.events.send(format!("closed {}:{}", s.user, s.device));
    }
    fn room_joined(&self, room: &ChannelId, s: &SessionInfo) {
        let _ = self.events.send(format!("joined {room} {}", s.user));
    }
    fn room_left(&self, room: &ChannelId, s: &SessionInfo) {
        let _ = self.events.send(format!("left {room} {}", s.user));
    }
    fn is_online(&self, user: &UserId, here: bool) -> bool {
        here || user.as_str() == "carol"
    }
}

/// Sends every offline notice down a channel as (body, users).
struct ChannelPush(mpsc::UnboundedSender<(String, Vec<String>)>);

#[async_trait]
impl OfflinePush for ChannelPush {
    async fn notify(&self, n: OfflineNotice) {
        let body = String::from_utf8_lossy(&n.message.body).into_owned();
        let mut users: Vec<String> = n.users.iter().map(|u| u.to_string()).collect();
        users.sort();
        let _ = self.0.send((body, users));
    }
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("in time")
        .expect("open")
}

#[tokio::test]
async fn a_host_session_directory_hears_of_sessions_and_says_who_is_online_elsewhere() {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (push_tx, mut pushed) = mpsc::unbounded_channel();
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .session_directory(Arc::new(ClusterDirectory { events: events_tx }))
        .offline_push(Arc::new(ChannelPush(push_tx)))
        .insecure_dev_auth()
        .build()
        .expect("engine");
    let s = Server::serve(engine).await;
    s.group("trio", &["alice", "bob", "carol"]).await;
    assert!(s.engine.is_online(&user("carol")), "online on another node");
    assert!(!s.engine.is_online(&user("bob")));

    let alice = s.connect("alice", "phone").await;
    assert_eq!(next(&mut events).await, "opened alice:phone");
    alice.join_room("stage").await.expect("join");
    assert_eq!(next(&mut events).await, "joined stage alice");

    // Only bob is offline everywhere: carol is not handed to offline push.
    alice.send(group("trio"), "1", "hi").await.expect("send");
    assert_eq!(
        next(&mut pushed).await,
        ("hi".to_owned(), vec!["bob".to_owned()])
    );

    alice.close().await.expect("close");
    assert_eq!(next(&mut events).await, "left stage alice");
    assert_eq!(next(&mut events).await, "closed alice:phone");
}

/// A host's policy: the room `stage` gets sub-rooms of 2 and batches of 3
/// messages; every other decision is the default's.
#[derive(Debug)]
struct StagePolicy(DefaultFanoutPolicy);

impl FanoutPolicy for StagePolicy {
    fn plan(&self, input: &FanoutInput) -> FanoutPlan {
        self.0.plan(input)
    }
    fn room_sharding(&self, room: &ChannelId, configured: SubRoomConfig) -> SubRoomConfig {
        if room.as_str() != "stage" {
            return configured;
        }
        SubRoomConfig {
            capacity: 2,
            merge_below: 1,
        }
    }
    fn batch_window(&self, room: &ChannelId, configured: &BatchConfig) -> BatchConfig {
        if room.as_str() != "stage" {
            return configured.clone();
        }
        // Flushed by count only: three messages, one frame.
        BatchConfig {
            max_count: 3,
            max_delay: Duration::from_secs(3600),
            tiers: vec![BatchTier {
                min_rate: 0,
                window: Duration::from_secs(3600),
            }],
        }
    }
}

async fn first_push(c: &Client) -> pb::Push {
    next_matching(c, |b| match b {
        Out::Push(p) => Some(p),
        _ => None,
    })
    .await
    .expect("a push")
}

#[tokio::test]
async fn a_host_fanout_policy_shards_and_batches_the_rooms_it_chooses() {
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .fanout_policy(Arc::new(StagePolicy(DefaultFanoutPolicy::default())))
        .insecure_dev_auth()
        .build()
        .expect("engine");
    let s = Server::serve(engine).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let c = s.connect(&format!("u{i}"), "d").await;
        c.join_room("stage").await.expect("join stage");
        c.join_room("hall").await.expect("join hall");
        clients.push(c);
    }
    let stats = |r: &str| {
        s.engine
            .room_stats(&ChannelId::new(r).expect("id"))
            .expect("live room")
    };
    assert_eq!(stats("stage").sessions, 5);
    assert!(stats("stage").sub_rooms >= 3, "{:?}", stats("stage"));
    assert_eq!(stats("hall").sub_rooms, 1, "the configured capacity (500)");

    let sender = &clients[0];
    for i in 0..3 {
        sender
            .send(room("stage"), &format!("s{i}"), format!("stage {i}"))
            .await
            .expect("send");
    }
    for c in &clients[1..] {
        assert_eq!(
            bodies(&first_push(c).await.messages),
            ["stage 0", "stage 1", "stage 2"]
        );
    }
    // The hall keeps the default window: a lone message goes out at once.
    sender
        .send(room("hall"), "h0", "hall 0")
        .await
        .expect("send");
    for c in &clients[1..] {
        assert_eq!(bodies(&first_push(c).await.messages), ["hall 0"]);
    }
}

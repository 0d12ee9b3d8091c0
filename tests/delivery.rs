//! End-to-end: ack after commit, store failures, multi-device, host API, shutdown.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use common::gated::GatedStore;
use common::*;
use im_engine::core::pb::{self, ErrorCode, server_frame::Body as Out};
use im_engine::core::{ChannelId, ConversationId, EngineConfig, KickPolicy};
use im_engine::store_memory::MemoryStore;
use im_engine::transport_tcp::client::{Client, direct, group};
use tokio::sync::{Notify, Semaphore};

fn alice_bob() -> ConversationId {
    ConversationId::direct(user("alice"), user("bob"))
}

async fn stored_bodies(store: &GatedStore) -> Vec<String> {
    stored(store, &alice_bob())
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

// About the engine's ordering, not a socket: in memory, on a paused clock.
#[tokio::test(start_paused = true)]
async fn no_ack_and_no_push_before_the_store_commits() {
    let store = GatedStore::new(false);
    let engine = mem_engine(EngineConfig::default(), store.clone());
    let alice = Arc::new(mem_connect(&engine, "alice", "d").await);
    let bob = mem_connect(&engine, "bob", "d").await;
    let sending = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.send(direct("bob"), "m1", "held").await })
    };
    // The send reached the store and is held there, uncommitted.
    store.arrived.notified().await;
    assert!(!sending.is_finished(), "acked before commit");
    // Nothing may arrive before the commit. A bounded wait: on the paused
    // clock it ends only once every task is idle, the append still held.
    assert!(
        bob.collect_pushed(1, QUIET)
            .await
            .expect("events")
            .is_empty(),
        "pushed before commit"
    );
    assert!(stored_bodies(&store).await.is_empty());

    store.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    let ack = sending.await.expect("task").expect("ack");
    assert_eq!(ack.seq, 1);
    assert_eq!(
        stored_bodies(&store).await,
        ["held"],
        "acked means committed"
    );
    assert_eq!(
        bodies(&bob.collect_pushed(1, WAIT).await.expect("push")),
        ["held"]
    );
}

#[tokio::test]
async fn a_failing_store_gives_a_retryable_error_and_a_retry_commits_once() {
    let store = GatedStore::new(true);
    let s = Server::start_with(EngineConfig::default(), store.clone()).await;
    let alice = s.connect("alice", "d").await;
    alice
        .send(direct("bob"), "ok", "before")
        .await
        .expect("send");

    store.failing.store(true, Ordering::SeqCst);
    let err = alice
        .send(direct("bob"), "m2", "during")
        .await
        .expect_err("store down");
    assert_eq!(err.code(), Some(ErrorCode::Unavailable));
    match &err {
        im_engine::transport_tcp::client::ClientError::Server(e) => assert!(e.retryable),
        other => panic!("expected a server error, got {other:?}"),
    }
    assert_eq!(stored_bodies(&store).await, ["before"]);

    store.failing.store(false, Ordering::SeqCst);
    let ack = alice
        .send(direct("bob"), "m2", "during")
        .await
        .expect("retry");
    assert_eq!(
        (ack.seq, ack.duplicate),
        (2, false),
        "no hole left by the failure"
    );
    let again = alice
        .send(direct("bob"), "m2", "during")
        .await
        .expect("retry");
    assert_eq!((again.seq, again.duplicate), (2, true));
    assert_eq!(stored_bodies(&store).await, ["before", "during"]);
}

#[tokio::test]
async fn the_senders_other_devices_get_the_message() {
    let s = Server::start().await;
    let phone = s.connect("alice", "phone").await;
    let laptop = s.connect("alice", "laptop").await;
    let bob = s.connect("bob", "phone").await;
    phone
        .send(direct("bob"), "m", "from phone")
        .await
        .expect("send");
    let on_laptop = laptop.collect_pushed(1, WAIT).await.expect("push");
    assert_eq!(bodies(&on_laptop), ["from phone"]);
    assert_eq!(on_laptop[0].sender_device, "phone");
    assert_eq!(on_laptop[0].conversation, Some(direct("bob")));
    assert_eq!(
        bodies(&bob.collect_pushed(1, WAIT).await.expect("push")),
        ["from phone"]
    );
}

async fn kicked(c: &Client) -> Option<pb::Kicked> {
    next_matching(c, |b| match b {
        Out::Kicked(k) => Some(k),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn kick_policies_decide_which_sessions_survive() {
    // Same device id: the older session is always replaced.
    let s = Server::start().await;
    let first = s.connect("alice", "phone").await;
    let _second = s.connect("alice", "phone").await;
    assert_eq!(
        kicked(&first).await.map(|k| k.reason),
        Some(pb::KickReason::Replaced as i32)
    );

    // One session per device kind.
    let mut config = EngineConfig::default();
    config.kick_policy = KickPolicy::OnePerDeviceKind;
    let s = Server::start_with(config, Arc::new(MemoryStore::new())).await;
    let phone = Client::connect_with(s.addr, "alice", "p1", pb::DeviceKind::Mobile)
        .await
        .expect("c");
    let desk = Client::connect_with(s.addr, "alice", "d1", pb::DeviceKind::Desktop)
        .await
        .expect("c");
    let _phone2 = Client::connect_with(s.addr, "alice", "p2", pb::DeviceKind::Mobile)
        .await
        .expect("c");
    assert!(
        kicked(&phone).await.is_some(),
        "second phone replaces the first"
    );
    desk.ping().await.expect("desktop survives");

    // One session per user.
    let mut config = EngineConfig::default();
    config.kick_policy = KickPolicy::One;
    let s = Server::start_with(config, Arc::new(MemoryStore::new())).await;
    let a = s.connect("alice", "a").await;
    let b = s.connect("alice", "b").await;
    assert!(kicked(&a).await.is_some());
    b.ping().await.expect("newest survives");
}

#[tokio::test]
async fn the_host_can_send_as_the_system_and_kick_users() {
    let s = Server::start().await;
    s.group("news", &["alice", "bob"]).await;
    let alice = s.connect("alice", "d").await;
    let gid = ConversationId::group("news").expect("id");
    let receipt = s
        .engine
        .send_as(
            gid.clone(),
            user("system"),
            "welcome".into(),
            Some("w1".into()),
        )
        .await
        .expect("send");
    assert_eq!(receipt.seq, 1);
    let got = alice.collect_pushed(1, WAIT).await.expect("push");
    assert_eq!(
        (got[0].sender_user.as_str(), got[0].body.as_ref()),
        ("system", &b"welcome"[..])
    );
    let again = s
        .engine
        .send_as(gid, user("system"), "welcome".into(), Some("w1".into()))
        .await
        .expect("send");
    assert_eq!((again.seq, again.duplicate), (1, true));

    assert_eq!(s.engine.kick_user(&user("alice"), "banned"), 1);
    let k = kicked(&alice).await.expect("kicked");
    assert_eq!(
        (k.reason, k.detail.as_str()),
        (pb::KickReason::ByHost as i32, "banned")
    );
}

// About the engine's shutdown, not a socket: in memory, on a paused clock.
#[tokio::test(start_paused = true)]
async fn shutdown_acks_what_was_in_flight_then_closes_every_session() {
    let store = GatedStore::new(false);
    let engine = mem_engine(EngineConfig::default(), store.clone());
    let alice = mem_connect(&engine, "alice", "d").await;
    for i in 0..50 {
        alice
            .send_frame(&pb::ClientFrame {
                request_id: 1000 + i,
                body: Some(pb::client_frame::Body::Send(pb::Send {
                    client_msg_id: format!("m{i}"),
                    conversation: Some(direct("bob")),
                    body: "x".into(),
                    ..Default::default()
                })),
            })
            .expect("send");
    }
    // The session handled all 50 (each went to its shard, where the first
    // append waits at the gate) and asked for more.
    alice.handled().await.expect("handled");
    store.arrived.notified().await;
    let stopping = engine.shutdown_token();
    let shutting = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.shutdown().await })
    };
    // Shutdown has begun while the sends are in flight.
    stopping.cancelled().await;
    // A send read after that is refused, retryably, never left unanswered.
    alice
        .send_frame(&pb::ClientFrame {
            request_id: 2000,
            body: Some(pb::client_frame::Body::Send(pb::Send {
                client_msg_id: "late".into(),
                conversation: Some(direct("bob")),
                body: "x".into(),
                ..Default::default()
            })),
        })
        .expect("send");
    alice.handled().await.expect("handled");
    store.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    shutting.await.expect("shutdown");

    let mut acked = Vec::new();
    let mut kicked_reason = None;
    let mut late = None;
    while let Ok(Some(frame)) = alice.next_event(WAIT).await {
        match frame.body {
            Some(Out::SendAck(a)) => acked.push(a.seq),
            Some(Out::Kicked(k)) => kicked_reason = Some(k.reason),
            Some(Out::Error(e)) if frame.request_id == 2000 => late = Some(e),
            _ => {}
        }
    }
    let late = late.expect("the late send is answered");
    assert_eq!(late.code, pb::ErrorCode::ShuttingDown as i32);
    assert!(late.retryable);
    assert_eq!(
        acked,
        (1..=50).collect::<Vec<_>>(),
        "every in-flight send was committed and acked"
    );
    assert_eq!(kicked_reason, Some(pb::KickReason::Shutdown as i32));
    assert_eq!(stored_bodies(&store).await.len(), 50);
}

#[tokio::test]
async fn group_members_added_later_receive_live_and_see_history() {
    let s = Server::start().await;
    s.group("club", &["alice"]).await;
    let alice = s.connect("alice", "d").await;
    let bob = s.connect("bob", "d").await;
    alice
        .send(group("club"), "1", "before bob")
        .await
        .expect("send");
    s.engine
        .add_members(&ChannelId::new("club").expect("id"), &[user("bob")])
        .await
        .expect("add");
    alice
        .send(group("club"), "2", "welcome bob")
        .await
        .expect("send");
    assert_eq!(
        bodies(&bob.collect_pushed(1, WAIT).await.expect("push")),
        ["welcome bob"]
    );
    let page = bob.pull(group("club"), 0, 0, 0).await.expect("pull");
    assert_eq!(bodies(&page.messages), ["before bob", "welcome bob"]);
}

#[tokio::test]
async fn a_retry_after_removal_gets_the_original_ack_but_new_sends_are_refused() {
    let s = Server::start().await;
    s.group("club", &["alice", "bob"]).await;
    let alice = s.connect("alice", "d").await;
    let first = alice
        .send(group("club"), "m1", "hello")
        .await
        .expect("send");
    s.engine
        .remove_members(&ChannelId::new("club").expect("id"), &[user("alice")])
        .await
        .expect("remove");
    let retry = alice
        .send(group("club"), "m1", "hello")
        .await
        .expect("retry is idempotent");
    assert_eq!(
        (retry.seq, retry.message_id, retry.duplicate),
        (first.seq, first.message_id, true)
    );
    let err = alice
        .send(group("club"), "m2", "again")
        .await
        .expect_err("no longer a member");
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
}

#[tokio::test]
async fn after_a_failed_send_later_sends_wait_for_its_resend_so_order_holds() {
    let store = GatedStore::new(true);
    let s = Server::start_with(EngineConfig::default(), store.clone()).await;
    let alice = s.connect("alice", "d").await;
    alice.send(direct("bob"), "m0", "zero").await.expect("send");
    store.failing.store(true, Ordering::SeqCst);
    let err = alice
        .send(direct("bob"), "m1", "one")
        .await
        .expect_err("store down");
    assert_eq!(err.code(), Some(ErrorCode::Unavailable));
    store.failing.store(false, Ordering::SeqCst);

    // m2 must not overtake m1, even though the store is back.
    let held = alice
        .send(direct("bob"), "m2", "two")
        .await
        .expect_err("held back");
    assert_eq!(held.code(), Some(ErrorCode::Unavailable));
    assert!(held.to_string().contains("m1"), "{held}");
    // Another conversation is not held back.
    alice
        .send(direct("carol"), "c1", "hi")
        .await
        .expect("other conversation");

    assert_eq!(
        alice
            .send(direct("bob"), "m1", "one")
            .await
            .expect("resend")
            .seq,
        2
    );
    assert_eq!(
        alice
            .send(direct("bob"), "m2", "two")
            .await
            .expect("then m2")
            .seq,
        3
    );
    assert_eq!(stored_bodies(&store).await, ["zero", "one", "two"]);
}

/// Records what the engine hands to the offline push hook.
#[derive(Default)]
struct RecordingPush(parking_lot::Mutex<Vec<(String, Vec<String>)>>, Notify);

impl RecordingPush {
    /// Waits until at least `n` notices were recorded.
    async fn recorded(&self, n: usize) {
        while self.0.lock().len() < n {
            self.1.notified().await;
        }
    }
}

#[async_trait]
impl im_engine::core::OfflinePush for RecordingPush {
    async fn notify(&self, notice: im_engine::core::OfflineNotice) {
        let body = String::from_utf8_lossy(&notice.message.body).into_owned();
        let mut users: Vec<String> = notice.users.iter().map(|u| u.to_string()).collect();
        users.sort();
        self.0.lock().push((body, users));
        self.1.notify_one();
    }
}

// About the engine's push hook, not a socket: in memory, on a paused clock.
#[tokio::test(start_paused = true)]
async fn offline_recipients_are_handed_to_the_push_hook() {
    let push = Arc::new(RecordingPush::default());
    let engine = im_engine::core::Engine::builder(Arc::new(MemoryStore::new()))
        .insecure_dev_auth()
        .offline_push(push.clone())
        .build()
        .expect("engine");
    let chan = ChannelId::new("trio").expect("id");
    engine
        .create_group(&chan, &[user("alice"), user("bob"), user("carol")])
        .await
        .expect("group");
    let alice = mem_connect(&engine, "alice", "d").await;
    let _bob = mem_connect(&engine, "bob", "d").await;
    alice
        .send(direct("dave"), "1", "to dave")
        .await
        .expect("send");
    alice
        .send(direct("bob"), "2", "to bob")
        .await
        .expect("send");
    alice
        .send(group("trio"), "3", "to trio")
        .await
        .expect("send");
    tokio::time::timeout(WAIT, push.recorded(2))
        .await
        .expect("two notices");
    // And no more: a bounded wait, as nothing is the event. On the paused
    // clock it ends once every task is idle, so a late notice would be in.
    tokio::time::sleep(QUIET).await;
    let mut got = push.0.lock().clone();
    got.sort();
    assert_eq!(
        got,
        [
            ("to dave".to_owned(), vec!["dave".to_owned()]),
            ("to trio".to_owned(), vec!["carol".to_owned()]),
        ],
        "only offline recipients, never the sender or online members"
    );
}

#[tokio::test]
async fn the_host_device_id_is_reserved() {
    let s = Server::start().await;
    let err = Client::connect(s.addr, "mallory:host", "host")
        .await
        .expect_err("reserved");
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument));
}

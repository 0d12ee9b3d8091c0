//! End-to-end: the commit step under bad input and store refusals — one
//! poisoned send fails alone, ids are validated before a batch, a full cache
//! never strips a batch's inbox entries, empty reads store nothing.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::gated::GatedStore;
use common::*;
use im_engine::core::pb::{self, ErrorCode};
use im_engine::core::store::*;
use im_engine::core::{ConversationId, EngineConfig, Seq};
use im_engine::store_memory::MemoryStore;
use im_engine::transport_tcp::client::{direct, group};
use tokio::sync::Semaphore;

fn alice_bob() -> ConversationId {
    ConversationId::direct(user("alice"), user("bob"))
}

#[tokio::test]
async fn one_poisoned_send_fails_alone_and_every_other_send_in_its_batch_commits() {
    // Hardening #1: one client's bad value once failed every send in the
    // group commit, other users' too, as not retryable.
    let store = GatedStore::new(false);
    let s = Server::start_with(EngineConfig::default(), store.clone()).await;
    s.group("g", &["alice", "bob", "mallory"]).await;
    let alice = s.connect("alice", "d").await;
    let mallory = s.connect("mallory", "d").await;
    // The gate is shut: every send below waits in one batch.
    let ids: Vec<String> = (0..40).map(|i| format!("a{i}")).collect();
    let good: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| alice.send(group("g"), id, format!("hello {i}")))
        .collect();
    let bad = mallory.send(group("g"), "m1", "poison");
    let worse = mallory.send(group("g"), "m2", "poison");
    let after = mallory.send(group("g"), "m3", "fine");
    store.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    let (good, bad, worse, after) =
        tokio::join!(futures::future::join_all(good), bad, worse, after);
    for (i, ack) in good.into_iter().enumerate() {
        let ack = ack.unwrap_or_else(|e| panic!("alice's send {i} failed: {e}"));
        assert!(ack.seq >= 1);
    }
    for err in [bad, worse] {
        let err = err.expect_err("the poisoned send fails");
        assert_eq!(err.code(), Some(ErrorCode::InvalidArgument), "{err}");
    }
    after.expect("mallory's good send is not held back by a refused one");
    let group = ConversationId::group("g").expect("id");
    let seqs: Vec<Seq> = stored(&*store, &group)
        .await
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(
        seqs,
        (1..=41).collect::<Vec<_>>(),
        "gap-free, nothing poisoned"
    );
}

#[tokio::test]
async fn a_control_character_in_a_client_msg_id_is_refused_before_it_reaches_a_batch() {
    let s = Server::start().await;
    let alice = s.connect("alice", "d").await;
    let err = alice
        .send(direct("bob"), "bad\0id", "hi")
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument), "{err}");
    let err = s
        .engine
        .send_as(alice_bob(), user("alice"), "hi".into(), Some("k\0".into()))
        .await
        .expect_err("the host's key is checked the same way");
    assert!(err.to_string().contains("control character"), "{err}");
    alice
        .send(direct("bob"), "good", "hi")
        .await
        .expect("a good send");
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_group_cache_never_drops_the_inbox_entries_of_a_batch_in_flight() {
    // Issue 8 defect 1: the group cache was cleared when full; a group
    // looked up earlier in the same batch then got no inbox entries.
    let mut config = EngineConfig::default();
    config.shards = 1;
    config.shard_cache_entries = 1;
    let store = Arc::new(MemoryStore::new());
    let s = Server::start_with(config, store.clone()).await;
    let groups = ["g1", "g2", "g3"];
    for g in groups {
        s.group(g, &["alice", "bob"]).await;
    }
    // On one thread, all sends queue before the worker runs: one batch
    // that alternates between more groups than the cache holds.
    let sends = (0..30).map(|i| {
        let g = ConversationId::group(groups[i % 3]).expect("id");
        s.engine
            .send_as(g, user("alice"), format!("m{i}").into(), None)
    });
    for r in futures::future::join_all(sends).await {
        r.expect("committed");
    }
    let inbox = store
        .read_inbox(InboxRequest {
            user: user("bob"),
            after_version: 0,
            limit: 1000,
        })
        .await
        .expect("inbox");
    assert_eq!(inbox.entries.len(), 30, "one inbox entry per message");
}

#[tokio::test]
async fn reads_and_acks_of_a_chat_with_no_messages_store_nothing() {
    // Hardening #5: such reads were accepted and each stored a cursor that
    // no conversation list ever showed.
    let store = GatedStore::new(true);
    let s = Server::start_with(EngineConfig::default(), store.clone()).await;
    let alice = s.connect("alice", "d").await;
    for peer in ["bob", "carol", "dave"] {
        let ack = alice.read(direct(peer), 5).await.expect("read is answered");
        assert_eq!((ack.read_seq, ack.unread, ack.unread_more), (0, 0, false));
    }
    // An Ack has no answer; the session handles frames in order, so it is
    // done once the send after it is acked.
    alice
        .send_frame(&pb::ClientFrame {
            request_id: 77,
            body: Some(pb::client_frame::Body::Ack(pb::Ack {
                conversation: Some(direct("bob")),
                seq: 3,
            })),
        })
        .await
        .expect("ack");
    alice.send(direct("bob"), "1", "hi").await.expect("send");
    let ack = alice.read(direct("bob"), 9).await.expect("read");
    assert_eq!(ack.read_seq, 1, "clamped to the head");
    assert_eq!(
        store.cursor_writes.load(Ordering::SeqCst),
        1,
        "only the real read"
    );
}

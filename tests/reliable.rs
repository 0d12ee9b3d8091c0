//! End-to-end over TCP: the reliable last hop. Sessions that set
//! `Connect.push_acks` get their pushes resent until acked, a `Notify`
//! instead of a push while a conversation has pushes in flight, and
//! `Kicked{ACK_TIMEOUT}` when they never ack; sessions that do not keep
//! today's best-effort pushes. `Sync{include_heads}` reports the
//! read-diffusion groups an inbox sync cannot show.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use im_engine::core::EngineConfig;
use im_engine::core::pb::{self, KickReason, server_frame::Body as Out};
use im_engine::store_memory::MemoryStore;
use im_engine::transport_tcp::client::{Client, direct, group, room};

/// A configuration whose push-ack waits are `waits_ms`.
fn config(waits_ms: &[u64]) -> EngineConfig {
    let mut c = EngineConfig::default();
    c.push_ack_waits = waits_ms
        .iter()
        .map(|&ms| Duration::from_millis(ms))
        .collect();
    c
}

/// What the last hop brought, simplified.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// A push: (conversation id as the viewer names it, seq) per message.
    Push(Vec<(String, u64)>),
    /// A notify: conversation id and head.
    Notify(String, u64),
    /// The session was closed.
    Kicked(KickReason, String),
}

/// The next push, notify or kick, skipping other frames; `None` if
/// nothing came within [`WAIT`].
async fn next_seen(c: &Client) -> Option<Seen> {
    next_matching(c, |body| match body {
        Out::Push(p) => Some(Seen::Push(
            p.messages
                .iter()
                .map(|m| (m.conversation.clone().unwrap_or_default().id, m.seq))
                .collect(),
        )),
        Out::Notify(n) => Some(Seen::Notify(
            n.conversation.unwrap_or_default().id,
            n.head_seq,
        )),
        Out::Kicked(k) => Some(Seen::Kicked(
            KickReason::try_from(k.reason).unwrap_or(KickReason::Unspecified),
            k.detail,
        )),
        _ => None,
    })
    .await
}

/// `from` sends message `i` (body `m{i}`) to `to` and waits for its ack.
async fn send_one(from: &Client, to: &pb::ConversationRef, i: u64) {
    from.send(to.clone(), &format!("{}-{i}", to.id), format!("m{i}"))
        .await
        .expect("send");
}

/// `from` sends messages 1..=n to `to`, one after another.
async fn send_n(from: &Client, to: pb::ConversationRef, n: u64) {
    for i in 1..=n {
        send_one(from, &to, i).await;
    }
}

/// The first page of a `Sync` from version 0, with or without heads.
async fn sync(c: &Client, include_heads: bool) -> pb::SyncResult {
    let body = pb::client_frame::Body::Sync(pb::Sync {
        inbox_version: 0,
        limit: 0,
        include_heads,
    });
    match c.request(body).await.expect("sync") {
        Out::SyncResult(r) => r,
        other => panic!("{other:?}"),
    }
}

fn push(conv: &str, seq: u64) -> Seen {
    Seen::Push(vec![(conv.to_owned(), seq)])
}

/// Reads frames until the server's close, returning the pushes seen and
/// the kick.
async fn until_kicked(c: &Client) -> (Vec<Seen>, (KickReason, String)) {
    let mut seen = Vec::new();
    loop {
        match next_seen(c).await.expect("a frame before the close") {
            Seen::Kicked(reason, detail) => return (seen, (reason, detail)),
            other => seen.push(other),
        }
    }
}

#[tokio::test]
async fn a_client_that_never_acks_gets_every_resend_then_ack_timeout() {
    let store = Arc::new(MemoryStore::new());
    // Three resends, then the close.
    let s = Server::start_with(config(&[40, 40, 80, 80]), store).await;
    let bob = s.connect_acking("bob", "d").await;
    assert!(bob.connected.push_acks, "the server honours push_acks");
    let alice = s.connect("alice", "d").await;
    assert!(!alice.connected.push_acks);
    alice
        .send(direct("bob"), "m1", "hello")
        .await
        .expect("send");

    let (seen, (reason, detail)) = until_kicked(&bob).await;
    assert_eq!(
        seen,
        vec![push("alice", 1); 4],
        "the push and three resends"
    );
    assert_eq!(reason, KickReason::AckTimeout);
    assert!(detail.contains("3 resends"), "{detail}");

    // Nothing is lost: a catch-up finds the message.
    let bob = s.connect("bob", "d2").await;
    let sync = bob.sync(0).await.expect("sync");
    assert_eq!(bodies(&sync.messages), ["hello"]);
    assert!(!sync.full_sync_required);
}

#[tokio::test]
async fn unacknowledged_pushes_are_bounded_in_count_and_bytes() {
    // No push fits one byte: every conversation gets a notify, and a fourth
    // outstanding one is past the count.
    let mut c = config(&[30_000]);
    c.push_ack_max_entries = 3;
    c.push_ack_max_bytes = 1;
    let s = Server::start_with(c, Arc::new(MemoryStore::new())).await;
    let bob = s.connect_acking("bob", "d").await;
    let peers = ["carol", "dave", "erin"];
    for peer in peers {
        let p = s.connect(peer, "d").await;
        p.send(direct("bob"), "m", peer).await.expect("send");
        assert_eq!(
            next_seen(&bob).await,
            Some(Seen::Notify(peer.to_owned(), 1))
        );
    }
    let frank = s.connect("frank", "d").await;
    frank.send(direct("bob"), "m", "frank").await.expect("send");
    let (seen, (reason, detail)) = until_kicked(&bob).await;
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(reason, KickReason::AckTimeout);
    assert!(detail.contains("too many unacknowledged"), "{detail}");

    let bob = s.connect("bob", "d2").await;
    let mut got = bodies(&bob.sync(0).await.expect("sync").messages);
    got.sort();
    assert_eq!(got, ["carol", "dave", "erin", "frank"]);
}

#[tokio::test]
async fn while_pushes_are_unacked_messages_come_as_one_notify_then_pushes_resume() {
    // Waits long enough that no resend shows up during the test.
    let s = Server::start_with(config(&[60_000]), Arc::new(MemoryStore::new())).await;
    s.group("team", &["alice", "bob"]).await;
    // Past the fast class: delivered by the group lane, with read diffusion.
    let mut members: Vec<String> = (0..600).map(|i| format!("m{i}")).collect();
    members.extend(["alice".into(), "bob".into()]);
    s.group(
        "big",
        &members.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let bob = s.connect_acking("bob", "d").await;
    let alice = s.connect("alice", "d").await;
    // (as alice sends to it, as bob sees it)
    for (to, at_bob, id) in [
        (direct("bob"), direct("alice"), "alice"),
        (group("team"), group("team"), "team"),
        (group("big"), group("big"), "big"),
    ] {
        send_one(&alice, &to, 1).await;
        assert_eq!(next_seen(&bob).await, Some(push(id, 1)));
        // Seq 1 is not acked: seq 2 comes as a notify, seq 3 raises its
        // head without another frame.
        send_one(&alice, &to, 2).await;
        assert_eq!(next_seen(&bob).await, Some(Seen::Notify(id.into(), 2)));
        send_one(&alice, &to, 3).await;
        // Bob pulls up to what the notify said and acks it: the head moved
        // on meanwhile, so a fresh notify says where it is now.
        let page = bob.pull(at_bob.clone(), 0, 2, 0).await.expect("pull");
        assert_eq!(bodies(&page.messages), ["m1", "m2"]);
        bob.ack(at_bob.clone(), 2).await.expect("ack");
        assert_eq!(next_seen(&bob).await, Some(Seen::Notify(id.into(), 3)));
        let page = bob.pull(at_bob.clone(), 2, 3, 0).await.expect("pull");
        assert_eq!(bodies(&page.messages), ["m3"]);
        bob.ack(at_bob.clone(), 3).await.expect("ack");
        // Answered after the ack was handled: frames are handled in order.
        bob.ping().await.expect("ping");
        // Caught up: pushed directly again, with no notify before it.
        send_one(&alice, &to, 4).await;
        assert_eq!(next_seen(&bob).await, Some(push(id, 4)));
        bob.ack(at_bob, 4).await.expect("ack");
    }
}

#[tokio::test]
async fn a_client_without_push_acks_gets_todays_best_effort_pushes() {
    // A schedule that would be over well within QUIET.
    let s = Server::start_with(config(&[20, 20]), Arc::new(MemoryStore::new())).await;
    let bob = s.connect("bob", "d").await;
    assert!(!bob.connected.push_acks);
    let alice = s.connect("alice", "d").await;
    send_n(&alice, direct("bob"), 3).await;
    for n in 1..=3 {
        assert_eq!(next_seen(&bob).await, Some(push("alice", n)));
    }
    // No resend, no notify, no ACK_TIMEOUT: nothing more arrives.
    let more = bob.next_event(QUIET).await.expect("still open");
    assert!(more.is_none(), "{more:?}");
    bob.ping().await.expect("still connected");
    // Its `Ack` moves the delivered cursor at once, as before.
    bob.ack(direct("alice"), 2).await.expect("ack");
    let list = bob.list_conversations().await.expect("list");
    assert_eq!(list[0].delivered_seq, 2);
}

#[tokio::test]
async fn room_pushes_stay_best_effort_in_an_acking_session() {
    let s = Server::start_with(config(&[20, 20]), Arc::new(MemoryStore::new())).await;
    let bob = s.connect_acking("bob", "d").await;
    let alice = s.connect("alice", "d").await;
    bob.join_room("live").await.expect("join");
    alice.join_room("live").await.expect("join");
    send_n(&alice, room("live"), 3).await;
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        match next_seen(&bob).await.expect("pushes") {
            Seen::Push(p) => seqs.extend(p.into_iter().map(|(_, seq)| seq)),
            other => panic!("a room sends pushes only: {other:?}"),
        }
    }
    assert_eq!(seqs, [1, 2, 3]);
    let more = bob.next_event(QUIET).await.expect("still open");
    assert!(more.is_none(), "room pushes are never resent: {more:?}");
    bob.ping().await.expect("still connected");
}

#[tokio::test]
async fn acks_move_the_delivered_cursor_in_batches_capped_at_the_head() {
    let mut c = config(&[60_000]);
    c.ack_cursor_flush = Duration::from_millis(20);
    let s = Server::start_with(c, Arc::new(MemoryStore::new())).await;
    let bob = s.connect_acking("bob", "d").await;
    let alice = s.connect("alice", "d").await;
    send_n(&alice, direct("bob"), 3).await;
    // Forward, backward and past the head: the cursor ends at the head.
    for seq in [2, 1, 3, 99] {
        bob.ack(direct("alice"), seq).await.expect("ack");
    }
    // Another device sees it once the batch is written.
    let other = s.connect("bob", "d2").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = other.list_conversations().await.expect("list");
        if list.first().is_some_and(|c| c.delivered_seq == 3) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cursor never written: {list:?}"
        );
        tokio::task::yield_now().await;
    }
    // A conversation the user is not in is refused at once.
    let err = bob
        .request(pb::client_frame::Body::Ack(pb::Ack {
            conversation: Some(group("nobody-here")),
            seq: 1,
        }))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Some(pb::ErrorCode::Forbidden));
}

#[tokio::test]
async fn sync_with_heads_reports_read_diffusion_groups() {
    let store = Arc::new(MemoryStore::new());
    let s = Server::start_with(EngineConfig::default(), store).await;
    // Above the default write-diffusion threshold (500): no inbox entries.
    let mut members: Vec<String> = (0..598).map(|i| format!("m{i}")).collect();
    members.extend(["alice".into(), "bob".into()]);
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    s.group("big", &members).await;
    s.group("small", &["alice", "bob"]).await;
    let alice = s.connect("alice", "d").await;
    send_n(&alice, group("big"), 3).await;
    send_n(&alice, group("small"), 1).await;

    // Bob was away; one catch-up call tells him of both groups.
    let bob = s.connect("bob", "d").await;
    bob.read(group("big"), 1).await.expect("read");
    let r = sync(&bob, true).await;
    let in_inbox: Vec<String> = r
        .entries
        .iter()
        .map(|e| e.conversation.clone().unwrap_or_default().id)
        .collect();
    assert_eq!(in_inbox, ["small"], "the big group writes no inbox entries");
    assert_eq!(
        r.heads,
        [pb::ConversationHead {
            conversation: Some(group("big")),
            head_seq: 3,
            read_seq: 1,
        }]
    );
    assert!(!r.full_sync_required && !r.has_more);
    // Pulling from the read cursor gets the rest.
    let page = bob.pull(group("big"), 1, 3, 0).await.expect("pull");
    assert_eq!(page.messages.len(), 2);
    assert_eq!(page.history_start_seq, 0);
    // Without the flag, no heads (as before).
    assert!(sync(&bob, false).await.heads.is_empty());
}

#[tokio::test]
async fn sync_heads_are_capped_most_recently_active_first() {
    let mut c = EngineConfig::default();
    c.sync_heads_max = 1;
    let s = Server::start_with(c, Arc::new(MemoryStore::new())).await;
    let mut members: Vec<String> = (0..600).map(|i| format!("m{i}")).collect();
    members.push("alice".into());
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    s.group("quiet", &members).await;
    s.group("busy", &members).await;
    let alice = s.connect("alice", "d").await;
    send_n(&alice, group("quiet"), 1).await;
    send_n(&alice, group("busy"), 2).await;
    let r = sync(&alice, true).await;
    let heads: Vec<(String, u64)> = r
        .heads
        .iter()
        .map(|h| (h.conversation.clone().unwrap_or_default().id, h.head_seq))
        .collect();
    assert_eq!(heads, [("busy".to_owned(), 2)]);
}

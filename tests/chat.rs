//! End-to-end: direct chats and groups over real TCP on 127.0.0.1.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use im_engine::core::pb::{self, ErrorCode, server_frame::Body as Out};
use im_engine::core::{CloseCode, EngineConfig};
use im_engine::store_memory::{MemoryStore, MemoryStoreConfig};
use im_engine::transport_tcp::client::{direct, group};
use im_testkit::duplex::MemClient;

#[tokio::test]
async fn two_users_chat_both_ways() {
    let s = Server::start().await;
    let alice = s.connect("alice", "phone").await;
    let bob = s.connect("bob", "phone").await;

    let ack = alice
        .send(direct("bob"), "a1", "hi bob")
        .await
        .expect("send");
    assert_eq!((ack.seq, ack.duplicate), (1, false));
    let got = bob.collect_pushed(1, WAIT).await.expect("push");
    assert_eq!(bodies(&got), ["hi bob"]);
    assert_eq!(got[0].sender_user, "alice");
    // Bob sees the conversation named after alice.
    assert_eq!(got[0].conversation, Some(direct("alice")));

    let ack = bob
        .send(direct("alice"), "b1", "hi alice")
        .await
        .expect("send");
    assert_eq!(ack.seq, 2, "one conversation, one sequence");
    let got = alice.collect_pushed(2, WAIT).await.expect("push");
    // Alice gets her own message echoed too, then bob's, in seq order.
    assert_eq!(bodies(&got), ["hi bob", "hi alice"]);
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
}

#[tokio::test]
async fn group_members_who_were_offline_catch_up_by_syncing() {
    let s = Server::start().await;
    let members: Vec<String> = (0..50).map(|i| format!("m{i:02}")).collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    s.group("team", &refs).await;

    // 30 members online, 20 offline.
    let mut online = Vec::new();
    for m in &members[..30] {
        online.push(s.connect(m, "d").await);
    }
    for (i, c) in online.iter().take(5).enumerate() {
        c.send(group("team"), &format!("x{i}"), format!("hello {i}"))
            .await
            .expect("send");
    }
    for c in &online {
        let got = c.collect_pushed(5, WAIT).await.expect("push");
        assert_eq!(
            got.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
    }
    for m in &members[30..] {
        let c = s.connect(m, "d").await;
        let sync = c.sync(0).await.expect("sync");
        assert!(!sync.full_sync_required);
        let seqs: Vec<u64> = sync.entries.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            [1, 2, 3, 4, 5],
            "{m} sees every message once, in order"
        );
        let versions: Vec<u64> = sync.entries.iter().map(|e| e.version).collect();
        assert_eq!(versions, [1, 2, 3, 4, 5], "inbox versions are continuous");
        assert_eq!(
            bodies(&sync.messages),
            ["hello 0", "hello 1", "hello 2", "hello 3", "hello 4"]
        );
        assert_eq!(sync.inbox_version, 5);
        assert!(!sync.has_more);
        // Nothing newer: syncing from the head returns nothing.
        assert!(c.sync(5).await.expect("sync").entries.is_empty());
    }
}

#[tokio::test]
async fn a_retried_send_returns_the_original_and_creates_one_message() {
    let s = Server::start().await;
    let alice = s.connect("alice", "phone").await;
    let first = alice
        .send(direct("bob"), "same-id", "once")
        .await
        .expect("send");
    let again = alice
        .send(direct("bob"), "same-id", "once")
        .await
        .expect("retry");
    assert!(again.duplicate);
    assert_eq!((again.seq, again.message_id), (first.seq, first.message_id));

    // A retry after reconnecting (the ack was lost with the connection).
    drop(alice);
    let alice = s.connect("alice", "phone").await;
    let later = alice
        .send(direct("bob"), "same-id", "once")
        .await
        .expect("retry");
    assert_eq!(
        (later.seq, later.message_id, later.duplicate),
        (first.seq, first.message_id, true)
    );

    // Retries inside one group commit are folded too.
    let frames: Vec<_> = (0..20)
        .map(|_| alice.send(direct("bob"), "burst", "burst"))
        .collect();
    let acks = futures::future::join_all(frames).await;
    let seqs: HashSet<u64> = acks.into_iter().map(|a| a.expect("ack").seq).collect();
    assert_eq!(seqs.len(), 1, "one message for one client_msg_id");

    let page = alice.pull(direct("bob"), 0, 0, 100).await.expect("pull");
    assert_eq!(bodies(&page.messages), ["once", "burst"]);
    // Another device of the same user may reuse the id: keys are per device.
    let laptop = s.connect("alice", "laptop").await;
    let other = laptop
        .send(direct("bob"), "same-id", "laptop")
        .await
        .expect("send");
    assert!(!other.duplicate);
    assert_eq!(other.seq, 3);
}

#[tokio::test]
async fn one_senders_pipelined_messages_commit_in_the_order_sent() {
    let s = Server::start().await;
    s.group("g", &["alice", "bob"]).await;
    let alice = s.connect("alice", "phone").await;
    let bob = s.connect("bob", "phone").await;
    const N: u64 = 300;
    // Fire every send before reading any ack.
    for i in 1..=N {
        alice
            .send_frame(&pb::ClientFrame {
                request_id: 10_000 + i,
                body: Some(pb::client_frame::Body::Send(pb::Send {
                    client_msg_id: format!("m{i}"),
                    conversation: Some(group("g")),
                    body: i.to_string().into(),
                })),
            })
            .await
            .expect("send");
    }
    let got = bob.collect_pushed(N as usize, WAIT).await.expect("push");
    let order: Vec<u64> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).parse().expect("n"))
        .collect();
    assert_eq!(
        order,
        (1..=N).collect::<Vec<_>>(),
        "delivered in send order"
    );
    assert_eq!(
        got.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=N).collect::<Vec<_>>(),
        "gap-free"
    );
    let page = bob.pull(group("g"), 0, 0, 0).await.expect("pull");
    assert_eq!(page.messages.len(), 200, "pull pages at 200");
    assert!(page.has_more);
    let rest = bob.pull(group("g"), 200, 0, 0).await.expect("pull");
    assert_eq!(rest.messages.len(), 100);
    assert!(!rest.has_more);
}

#[tokio::test]
async fn unread_counts_follow_reads_and_cap_at_99_plus() {
    let s = Server::start().await;
    let alice = s.connect("alice", "phone").await;
    let bob = s.connect("bob", "phone").await;
    for i in 0..120 {
        alice
            .send(direct("bob"), &format!("m{i}"), "x")
            .await
            .expect("send");
    }
    bob.send(direct("alice"), "reply", "mine")
        .await
        .expect("send");

    let list = bob.list_conversations().await.expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].conversation, Some(direct("alice")));
    assert_eq!(
        (list[0].unread, list[0].unread_more),
        (99, true),
        "shows 99+"
    );
    assert_eq!(list[0].head_seq, 121);

    let read = bob.read(direct("alice"), 100).await.expect("read");
    // 20 of alice's messages remain after seq 100; bob's own does not count.
    assert_eq!((read.unread, read.unread_more), (20, false));
    let list = bob.list_conversations().await.expect("list");
    assert_eq!((list[0].unread, list[0].read_seq), (20, 100));

    // Cursors never move back.
    let read = bob.read(direct("alice"), 5).await.expect("read");
    assert_eq!((read.read_seq, read.unread), (100, 20));
    bob.read(direct("alice"), 121).await.expect("read");
    let list = bob.list_conversations().await.expect("list");
    assert_eq!((list[0].unread, list[0].unread_more), (0, false));
    // Alice's own messages are never unread for her; bob's reply is.
    let list = alice.list_conversations().await.expect("list");
    assert_eq!(list[0].unread, 1);
}

#[tokio::test]
async fn non_members_cannot_send_pull_or_receive() {
    let s = Server::start().await;
    s.group("secret", &["alice", "bob"]).await;
    let alice = s.connect("alice", "d").await;
    let mallory = s.connect("mallory", "d").await;

    let err = mallory
        .send(group("secret"), "x", "let me in")
        .await
        .expect_err("forbidden");
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    let err = mallory
        .pull(group("secret"), 0, 0, 10)
        .await
        .expect_err("forbidden");
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    let err = mallory
        .read(group("secret"), 1)
        .await
        .expect_err("forbidden");
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    // A group that does not exist answers exactly like one mallory is not
    // in, so group names cannot be probed (hardening #6).
    let existing = mallory
        .send(group("secret"), "y", "?")
        .await
        .expect_err("forbidden");
    let missing = mallory
        .send(group("nope"), "y2", "?")
        .await
        .expect_err("forbidden too");
    assert_eq!(missing.code(), Some(ErrorCode::Forbidden));
    let reason = |e: &im_engine::transport_tcp::client::ClientError| {
        e.to_string()
            .replace("secret", "NAME")
            .replace("nope", "NAME")
    };
    assert_eq!(reason(&existing), reason(&missing));
    for (name, conv) in [("secret", group("secret")), ("nope", group("nope"))] {
        let pull = mallory
            .pull(conv.clone(), 0, 0, 10)
            .await
            .expect_err("pull");
        let read = mallory.read(conv, 1).await.expect_err("read");
        assert_eq!(pull.code(), Some(ErrorCode::Forbidden), "pull {name}");
        assert_eq!(read.code(), Some(ErrorCode::Forbidden), "read {name}");
    }

    alice
        .send(group("secret"), "a", "members only")
        .await
        .expect("send");
    assert!(
        mallory
            .collect_pushed(1, QUIET)
            .await
            .expect("events")
            .is_empty()
    );
    assert!(mallory.sync(0).await.expect("sync").entries.is_empty());
    assert!(mallory.list_conversations().await.expect("list").is_empty());
    // Nothing mallory tried was committed.
    let page = alice.pull(group("secret"), 0, 0, 10).await.expect("pull");
    assert_eq!(bodies(&page.messages), ["members only"]);

    // Removal takes effect at once, for live sessions too.
    let bob = s.connect("bob", "d").await;
    s.engine
        .remove_members(
            &im_engine::core::ChannelId::new("secret").expect("id"),
            &[user("bob")],
        )
        .await
        .expect("remove");
    alice
        .send(group("secret"), "b", "bob is gone")
        .await
        .expect("send");
    let got = bob.collect_pushed(2, QUIET).await.expect("events");
    assert!(
        bodies(&got).iter().all(|b| b != "bob is gone"),
        "removed member got {got:?}"
    );
    let err = bob
        .send(group("secret"), "z", "still here?")
        .await
        .expect_err("forbidden");
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
}

#[tokio::test]
async fn a_malformed_frame_is_answered_and_everyone_else_is_served() {
    let s = Server::start().await;
    let alice = s.connect("alice", "d").await;
    let bob = s.connect("bob", "d").await;
    alice
        .send_raw(&[0xff, 0xff, 0xff, 0x0f, 0x01])
        .await
        .expect("raw");
    let err = next_matching(&alice, |b| match b {
        Out::Error(e) => Some(e),
        _ => None,
    })
    .await
    .expect("an error frame");
    assert_eq!(err.code, ErrorCode::MalformedFrame as i32);
    // The sender's own session goes on, and so does everyone else's.
    alice.ping().await.expect("alice still served");
    bob.send(direct("alice"), "b", "still here")
        .await
        .expect("bob still served");
    // A frame with no body is refused with a reason too.
    alice
        .send_frame(&pb::ClientFrame {
            request_id: 77,
            body: None,
        })
        .await
        .expect("send");
    let err = next_matching(&alice, |b| match b {
        Out::Error(e) => Some(e),
        _ => None,
    })
    .await
    .expect("an error frame");
    assert_eq!(err.code, ErrorCode::InvalidArgument as i32);
}

#[tokio::test]
async fn an_oversize_frame_closes_only_that_connection() {
    let mut config = EngineConfig::default();
    config.max_frame_bytes = 4096;
    let s = Server::start_with(config, Arc::new(MemoryStore::new())).await;
    let alice = s.connect("alice", "d").await;
    let bob = s.connect("bob", "d").await;
    // Twice the limit: refused from the length prefix, before buffering.
    alice.send_raw(&vec![0u8; 8192]).await.expect("raw");
    let err = next_matching(&alice, |b| match b {
        Out::Error(e) => Some(e),
        _ => None,
    })
    .await
    .expect("error frame");
    assert_eq!(err.code, ErrorCode::FrameTooLarge as i32);
    assert!(alice.ping().await.is_err(), "connection closed");
    bob.ping().await.expect("bob unaffected");
    bob.send(direct("carol"), "b", "fine")
        .await
        .expect("bob unaffected");
}

// Not a socket test: in memory, on a paused clock, the heartbeat deadline
// passes in virtual time, exactly and at once.
#[tokio::test(start_paused = true)]
async fn a_device_that_stops_sending_heartbeats_is_dropped() {
    let mut config = EngineConfig::default();
    config.heartbeat_interval = Duration::from_millis(150);
    let engine = mem_engine(config, Arc::new(MemoryStore::new()));
    let silent = mem_connect(&engine, "alice", "d").await;
    let lively = mem_connect(&engine, "bob", "d").await;
    assert_eq!(silent.connected.heartbeat_interval_ms, 150);
    // Bob pings every 100 ms (virtual time: the test's clock, not a wait for
    // something to happen) while alice stays silent past two intervals.
    let kicked = tokio::select! {
        k = mem_next_matching(&silent, |b| match b {
            Out::Kicked(k) => Some(k),
            _ => None,
        }) => k.expect("kicked"),
        never = async {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                lively.ping().await.expect("pings keep bob alive");
            }
        } => never,
    };
    assert_eq!(kicked.reason, pb::KickReason::HeartbeatTimeout as i32);
    // `close` returns once the engine let go of alice's session.
    silent.close().await;
    assert!(!engine.is_online(&user("alice")));
    assert!(engine.is_online(&user("bob")));
    lively.ping().await.expect("bob is still served");
}

#[tokio::test]
async fn a_device_behind_more_than_the_inbox_keeps_is_told_to_full_sync() {
    let store = MemoryStore::with_config(MemoryStoreConfig::default().with_inbox_capacity(10));
    let s = Server::start_with(EngineConfig::default(), Arc::new(store)).await;
    let alice = s.connect("alice", "d").await;
    for i in 0..25 {
        alice
            .send(direct("bob"), &format!("m{i}"), "x")
            .await
            .expect("send");
    }
    let bob = s.connect("bob", "d").await;
    let behind = bob.sync(0).await.expect("sync");
    assert!(behind.full_sync_required, "25 entries, inbox keeps 10");
    let close = bob.sync(15).await.expect("sync");
    assert!(!close.full_sync_required);
    assert_eq!(
        close.entries.iter().map(|e| e.version).collect::<Vec<_>>(),
        (16..=25).collect::<Vec<_>>()
    );
    // A full sync is a list plus pulls, and it converges with the store.
    let list = bob.list_conversations().await.expect("list");
    let page = bob.pull(direct("alice"), 0, 0, 0).await.expect("pull");
    assert_eq!(list[0].head_seq, 25);
    assert_eq!(page.messages.len(), 25);
}

/// One client sends 4 MiB of 64 KiB bodies into a store with a 1 MiB byte
/// budget: the store stays within it, and what it dropped is flagged, never
/// skipped: a pull says where history starts, a sync whose entries point
/// at dropped messages asks for a full sync.
#[tokio::test]
async fn a_store_on_a_byte_budget_drops_history_and_says_so() {
    const BUDGET: usize = 1 << 20;
    const SENT: u64 = 64;
    let store = Arc::new(MemoryStore::with_config(
        MemoryStoreConfig::default().with_max_total_bytes(Some(BUDGET)),
    ));
    let s = Server::start_with(EngineConfig::default(), store.clone()).await;
    let alice = s.connect("alice", "d").await;
    let body = vec![b'x'; 64 * 1024];
    for i in 0..SENT {
        alice
            .send(direct("bob"), &format!("m{i}"), body.clone())
            .await
            .expect("send");
        assert!(
            store.retained_bytes() <= BUDGET,
            "{} bytes retained after {} sends",
            store.retained_bytes(),
            i + 1
        );
    }
    let bob = s.connect("bob", "d").await;

    let page = bob.pull(direct("alice"), 0, 0, 0).await.expect("pull");
    assert_eq!(page.head_seq, SENT);
    let start = page.history_start_seq;
    assert!(start > 1, "history before seq {start} was dropped");
    assert_eq!(
        page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (start..=SENT).collect::<Vec<_>>(),
        "the retained history, from where it starts to the head"
    );
    assert!(!page.has_more);
    // A pull from just before where history starts lost nothing.
    let since = bob
        .pull(direct("alice"), start - 1, 0, 0)
        .await
        .expect("pull");
    assert_eq!(since.history_start_seq, 0);

    // The inbox kept every entry, but not every entry's message: the sync
    // says so instead of handing over entries without their messages.
    let sync = bob.sync(0).await.expect("sync");
    assert!(
        sync.full_sync_required,
        "entries whose messages were dropped"
    );
    assert!(sync.messages.len() < sync.entries.len());
    // From where history starts, every entry comes with its message.
    let later = bob.sync(start - 1).await.expect("sync");
    assert!(!later.full_sync_required);
    assert_eq!(later.messages.len(), later.entries.len());
    assert_eq!(later.entries.len() as u64, SENT - start + 1);
}

#[tokio::test]
async fn pages_of_big_messages_fit_the_outbound_queue_instead_of_kicking_the_reader() {
    let mut config = EngineConfig::default();
    config.outbound_queue_bytes = 1024 * 1024;
    let s = Server::start_with(config, Arc::new(MemoryStore::new())).await;
    let alice = s.connect("alice", "d").await;
    let body = vec![b'x'; 60 * 1024];
    for i in 0..40 {
        alice
            .send(direct("bob"), &format!("m{i}"), body.clone())
            .await
            .expect("send");
    }
    let bob = s.connect("bob", "d").await;
    let mut seqs = Vec::new();
    loop {
        let after = seqs.last().copied().unwrap_or(0);
        let page = bob
            .pull(direct("alice"), after, 0, 0)
            .await
            .expect("pull, not a kick");
        assert!(
            page.messages.len() <= 9,
            "a page stays under half the 1 MiB queue"
        );
        seqs.extend(page.messages.iter().map(|m| m.seq));
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    let mut synced = Vec::new();
    let mut version = 0;
    loop {
        let sync = bob.sync(version).await.expect("sync, not a kick");
        synced.extend(sync.messages.iter().map(|m| m.seq));
        version = sync.entries.last().map_or(version, |e| e.version);
        if !sync.has_more {
            break;
        }
    }
    assert_eq!(synced, (1..=40).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_session_cannot_join_rooms_without_bound() {
    let mut config = EngineConfig::default();
    config.max_rooms_per_session = 3;
    let s = Server::start_with(config, Arc::new(MemoryStore::new())).await;
    let c = s.connect("alice", "d").await;
    for r in ["a", "b", "c"] {
        c.join_room(r).await.expect("join");
    }
    c.join_room("a")
        .await
        .expect("rejoining a joined room is fine");
    let err = c.join_room("d").await.expect_err("fourth room");
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument));
}

// About the engine's handshake slots, not a socket: in memory. These
// connections have no peer address, so only the global bound applies.
#[tokio::test(start_paused = true)]
async fn connections_that_never_authenticate_cannot_exhaust_the_server() {
    let mut config = EngineConfig::default();
    config.max_pending_handshakes = 2;
    let engine = mem_engine(config, Arc::new(MemoryStore::new()));
    let max_frame = engine.config().max_frame_bytes;
    // Two silent connections hold both handshake slots: a session is
    // admitted before it reads, so once the engine is reading a connection,
    // the slot is held.
    let (conn1, silent1) = MemClient::pair(max_frame);
    let (conn2, silent2) = MemClient::pair(max_frame);
    engine.accept(conn1);
    silent1.handled().await.expect("reading the first");
    engine.accept(conn2);
    silent2.handled().await.expect("reading the second");
    // A newcomer is not refused: the oldest silent one makes room, told why.
    let alice = mem_connect(&engine, "alice", "d").await;
    alice.ping().await.expect("served");
    told_to_retry(silent1).await;
    // The younger one still holds its slot.
    assert!(silent2.close_reason().is_none());
    silent2.close().await;
}

/// Waits for the engine to refuse or evict `c` before its handshake: a
/// retryable `Unavailable` error, then a close for policy.
async fn told_to_retry(c: MemClient) {
    let told = c.next_event(WAIT).await.expect("an answer");
    let Some(pb::ServerFrame {
        body: Some(Out::Error(e)),
        ..
    }) = told
    else {
        panic!("expected an error frame, got {told:?}");
    };
    assert_eq!(e.code, ErrorCode::Unavailable as i32);
    assert!(e.retryable, "{e:?}");
    let reason = c.close().await.expect("closed with a reason");
    assert_eq!(reason.code, CloseCode::Policy);
}

// Per-address bound, in memory with a made-up peer address.
#[tokio::test(start_paused = true)]
async fn one_address_cannot_hold_more_than_its_share_of_handshakes() {
    let mut config = EngineConfig::default();
    config.max_pending_handshakes_per_address = 2;
    let engine = mem_engine(config, Arc::new(MemoryStore::new()));
    let max_frame = engine.config().max_frame_bytes;
    let from = |ip: [u8; 4]| {
        let (mut conn, client) = MemClient::pair(max_frame);
        conn.info.peer_addr = Some((ip, 4000).into());
        (conn, client)
    };
    let mut silent = Vec::new();
    for _ in 0..2 {
        let (conn, client) = from([192, 0, 2, 1]);
        engine.accept(conn);
        client.handled().await.expect("reading it");
        silent.push(client);
    }
    // A third from the same address is refused at once, with a reason.
    let (conn, third) = from([192, 0, 2, 1]);
    engine.accept(conn);
    told_to_retry(third).await;
    // Another address is served, and the first two still wait.
    let (conn, other) = from([192, 0, 2, 2]);
    engine.accept(conn);
    let answer = other
        .request(pb::client_frame::Body::Connect(pb::Connect {
            token: "bob:d".into(),
            device_id: "d".into(),
            ..Default::default()
        }))
        .await
        .expect("connected");
    assert!(matches!(answer, Out::Connected(_)));
    for s in silent {
        assert!(s.close_reason().is_none());
        s.close().await;
    }
}

#[tokio::test]
async fn big_groups_fan_out_off_the_shard_in_order() {
    use im_engine::core::{ChannelId, DefaultFanoutPolicy, Engine};
    // Groups of more than 2 members count as big here: read diffusion and the
    // group lane instead of inline delivery.
    let policy = DefaultFanoutPolicy {
        fast_max: 2,
        write_diffusion_max_members: 2,
        ..Default::default()
    };
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .fanout_policy(Arc::new(policy))
        .insecure_dev_auth()
        .build()
        .expect("engine");
    let s = Server::serve(engine).await;
    let members: Vec<_> = ["alice", "bob", "carol", "dave"].map(user).to_vec();
    s.engine
        .create_group(&ChannelId::new("big").expect("id"), &members)
        .await
        .expect("group");
    let (alice, bob, carol) = (
        s.connect("alice", "d").await,
        s.connect("bob", "d").await,
        s.connect("carol", "d").await,
    );
    const N: u64 = 300;
    for i in 1..=N {
        alice
            .send_frame(&pb::ClientFrame {
                request_id: i,
                body: Some(pb::client_frame::Body::Send(pb::Send {
                    client_msg_id: format!("m{i}"),
                    conversation: Some(group("big")),
                    body: i.to_string().into(),
                })),
            })
            .await
            .expect("send");
    }
    for c in [&bob, &carol] {
        let got = c.collect_pushed(N as usize, WAIT).await.expect("push");
        let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            (1..=N).collect::<Vec<_>>(),
            "every message once, in order"
        );
    }
    // Read diffusion: nothing in the inbox; the conversation list shows it.
    assert!(bob.sync(0).await.expect("sync").entries.is_empty());
    let list = bob.list_conversations().await.expect("list");
    assert_eq!(list[0].head_seq, N);
}

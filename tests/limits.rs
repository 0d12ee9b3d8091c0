//! End-to-end: bad input and limits — malformed and oversize frames,
//! heartbeats, inbox and store retention, page sizes, room seats, and
//! connections that never authenticate.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use im_engine::core::pb::{self, ErrorCode, server_frame::Body as Out};
use im_engine::core::{CloseCode, EngineConfig};
use im_engine::store_memory::{MemoryStore, MemoryStoreConfig};
use im_engine::transport_tcp::client::direct;
use im_testkit::duplex::MemClient;

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

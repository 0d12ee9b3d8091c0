//! Read receipts: a `Read` is told live to the other side of a direct chat
//! and to the reader's other devices, to sessions that asked for receipts;
//! in a group only to the reader's other devices. In catch-up,
//! `ListConversations` shows a direct chat's `peer_read_seq`; a group's
//! members ask `ReadCounts`. Over TCP and WebSocket, on the memory store
//! and (feature `postgres`) on PostgreSQL.

mod common;

use std::sync::Arc;

use common::ws::WsClient;
use common::{Server, connect_opted, next_matching, until_quiet};
use im_engine::core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_engine::core::{EngineConfig, Store};
use im_engine::store_memory::MemoryStore;
use im_engine::transport_tcp::client::{Client, ClientError, direct, group};
use im_engine::transport_ws::{WsConfig, WsServer};

/// Connects `user` from `device` asking for read receipts.
async fn connect_receipts(server: &Server, user: &str, device: &str) -> Client {
    connect_opted(server, user, device, |c| c.receipt_events = true).await
}

fn receipt(b: Out) -> Option<pb::ReadReceipt> {
    match b {
        Out::ReadReceipt(r) => Some(r),
        _ => None,
    }
}

async fn next_receipt(c: &Client) -> Option<pb::ReadReceipt> {
    next_matching(c, receipt).await
}

/// Receipts `c` gets until the connection stays quiet.
async fn receipts_until_quiet(c: &Client) -> Vec<pb::ReadReceipt> {
    until_quiet(c, receipt).await
}

#[tokio::test]
async fn the_sender_and_the_readers_other_devices_learn_a_read() {
    let server = Server::start().await;
    let alice_phone = connect_receipts(&server, "alice", "phone").await;
    let alice_laptop = connect_receipts(&server, "alice", "laptop").await;
    let bob = connect_receipts(&server, "bob", "phone").await;
    // An old client, which never asked for receipts.
    let bob_old = server.connect("bob", "old").await;
    for i in 1..=3 {
        bob.send(direct("alice"), &format!("b{i}"), format!("hi {i}"))
            .await
            .expect("ack");
    }
    let ack = alice_phone.read(direct("bob"), 2).await.expect("read");
    assert_eq!(ack.read_seq, 2);

    let at_bob = next_receipt(&bob).await.expect("bob learns alice read");
    assert_eq!(at_bob.conversation, Some(direct("alice")));
    assert_eq!((at_bob.user_id.as_str(), at_bob.read_seq), ("alice", 2));
    let at_laptop = next_receipt(&alice_laptop)
        .await
        .expect("alice's other device learns it");
    assert_eq!(at_laptop.conversation, Some(direct("bob")));
    assert_eq!(
        (at_laptop.user_id.as_str(), at_laptop.read_seq),
        ("alice", 2)
    );
    assert!(
        receipts_until_quiet(&bob_old).await.is_empty(),
        "an old client got a receipt"
    );
    assert!(
        receipts_until_quiet(&alice_phone).await.is_empty(),
        "the reading session is answered by its ReadAck, not a receipt"
    );
}

#[tokio::test]
async fn in_a_group_only_the_readers_other_devices_learn_a_read() {
    let server = Server::start().await;
    server.group("team", &["alice", "bob"]).await;
    let alice_phone = connect_receipts(&server, "alice", "phone").await;
    let alice_laptop = connect_receipts(&server, "alice", "laptop").await;
    let bob = connect_receipts(&server, "bob", "phone").await;
    bob.send(group("team"), "b1", "hello team")
        .await
        .expect("ack");
    alice_phone.read(group("team"), 1).await.expect("read");

    let at_laptop = next_receipt(&alice_laptop).await.expect("other device");
    assert_eq!(at_laptop.conversation, Some(group("team")));
    assert_eq!(at_laptop.read_seq, 1);
    assert!(
        receipts_until_quiet(&bob).await.is_empty(),
        "group members are not told"
    );
}

/// A server on `store` over TCP (`Server`) and WebSocket (the address).
async fn serve_both(config: EngineConfig, store: Arc<dyn Store>) -> (Server, std::net::SocketAddr) {
    let server = Server::start_with(config, store).await;
    let ws = WsServer::bind("127.0.0.1:0", WsConfig::default().path("/ws"))
        .await
        .expect("ws");
    let ws_addr = ws.local_addr().expect("addr");
    ws.serve(server.engine.clone());
    (server, ws_addr)
}

fn read_counts(conversation: pb::ConversationRef, seqs: &[u64]) -> In {
    In::ReadCounts(pb::ReadCounts {
        conversation: Some(conversation),
        seqs: seqs.to_vec(),
    })
}

/// The error code a refused request got.
fn refusal(r: Result<Out, ClientError>) -> pb::ErrorCode {
    match r {
        Err(ClientError::Server(e)) => {
            pb::ErrorCode::try_from(e.code).unwrap_or(pb::ErrorCode::Unspecified)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A device that was offline learns from `ListConversations` how far the
/// other side of each direct chat has read; a group shows 0 there.
async fn the_peers_read_cursor_is_in_the_list(store: Arc<dyn Store>) {
    let (server, ws_addr) = serve_both(EngineConfig::default(), store).await;
    server.group("team", &["alice", "bob"]).await;
    let bob = server.connect("bob", "phone").await;
    for i in 1..=3 {
        bob.send(direct("alice"), &format!("d{i}"), format!("hi {i}"))
            .await
            .expect("ack");
    }
    bob.send(group("team"), "g1", "hello team")
        .await
        .expect("ack");
    bob.send(direct("carol"), "c1", "hi carol")
        .await
        .expect("ack");
    let alice = server.connect("alice", "phone").await;
    alice.read(direct("bob"), 2).await.expect("read");
    alice.read(group("team"), 1).await.expect("read");

    // Bob's laptop, over WebSocket, was offline while alice read.
    let mut laptop = WsClient::connect(ws_addr, "bob").await;
    let Out::ConversationList(list) = laptop
        .request(In::ListConversations(pb::ListConversations { limit: 0 }))
        .await
    else {
        panic!("expected a ConversationList");
    };
    let peer_read = |c: pb::ConversationRef| {
        list.conversations
            .iter()
            .find(|s| s.conversation.as_ref() == Some(&c))
            .map(|s| s.peer_read_seq)
            .unwrap_or_else(|| panic!("{c:?} is in bob's list"))
    };
    assert_eq!(peer_read(direct("alice")), 2, "alice read 2 of bob's 3");
    assert_eq!(peer_read(direct("carol")), 0, "carol read nothing");
    assert_eq!(peer_read(group("team")), 0, "a group has no single peer");

    let alice_list = alice.list_conversations().await.expect("list");
    let with_bob = alice_list
        .iter()
        .find(|s| s.conversation == Some(direct("bob")))
        .expect("bob in alice's list");
    assert_eq!(
        (with_bob.read_seq, with_bob.peer_read_seq),
        (2, 0),
        "alice's own cursor and bob's (he read nothing)"
    );
}

/// `ReadCounts` counts the other members who read each message, over TCP
/// and WebSocket; refused to non-members, for direct chats, for too many
/// seqs and for groups over the configured size.
async fn group_members_ask_read_counts(store: Arc<dyn Store>) {
    let mut config = EngineConfig::default();
    config.read_counts_max_members = 3;
    config.read_counts_max_seqs = 4;
    let (server, ws_addr) = serve_both(config, store).await;
    server.group("team", &["alice", "bob", "carol"]).await;
    server
        .group("crowd", &["alice", "bob", "carol", "dave"])
        .await;
    let bob = server.connect("bob", "phone").await;
    for i in 1..=3 {
        bob.send(group("team"), &format!("t{i}"), format!("m{i}"))
            .await
            .expect("ack");
    }
    let alice = server.connect("alice", "phone").await;
    alice.read(group("team"), 3).await.expect("read");
    let mut carol = WsClient::connect(ws_addr, "carol").await;
    let Out::ReadAck(_) = carol
        .request(In::Read(pb::Read {
            conversation: Some(group("team")),
            seq: 1,
        }))
        .await
    else {
        panic!("expected a ReadAck");
    };

    let Ok(Out::ReadCountsResult(at_bob)) =
        bob.request(read_counts(group("team"), &[1, 2, 3])).await
    else {
        panic!("expected ReadCountsResult");
    };
    assert_eq!(at_bob.conversation, Some(group("team")));
    assert_eq!(
        at_bob.counts,
        vec![2, 1, 1],
        "alice read all, carol the first"
    );
    let Out::ReadCountsResult(at_carol) = carol.request(read_counts(group("team"), &[3, 1])).await
    else {
        panic!("expected ReadCountsResult over WebSocket");
    };
    assert_eq!(
        at_carol.counts,
        vec![1, 1],
        "carol's own read is not counted"
    );

    let dave = server.connect("dave", "phone").await;
    assert_eq!(
        refusal(dave.request(read_counts(group("team"), &[1])).await),
        pb::ErrorCode::Forbidden,
        "a non-member learns nothing"
    );
    assert_eq!(
        refusal(bob.request(read_counts(direct("alice"), &[1])).await),
        pb::ErrorCode::InvalidArgument,
        "a direct chat has peer_read_seq instead"
    );
    assert_eq!(
        refusal(
            bob.request(read_counts(group("team"), &[1, 2, 3, 4, 5]))
                .await
        ),
        pb::ErrorCode::InvalidArgument,
        "more seqs than read_counts_max_seqs"
    );
    assert_eq!(
        refusal(bob.request(read_counts(group("crowd"), &[1])).await),
        pb::ErrorCode::InvalidArgument,
        "a group over read_counts_max_members"
    );
}

#[tokio::test]
async fn the_peers_read_cursor_is_in_the_list_memory() {
    the_peers_read_cursor_is_in_the_list(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn group_members_ask_read_counts_memory() {
    group_members_ask_read_counts(Arc::new(MemoryStore::new())).await;
}

#[cfg(feature = "postgres")]
mod pg {
    use crate::common::pg_schema::pg_store;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_peers_read_cursor_is_in_the_list_postgres() {
        let (store, _schema) = pg_store("receipts").await;
        super::the_peers_read_cursor_is_in_the_list(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_members_ask_read_counts_postgres() {
        let (store, _schema) = pg_store("receipts").await;
        super::group_members_ask_read_counts(store).await;
    }
}

//! Read receipts: a `Read` is told live to the other side of a direct chat
//! and to the reader's other devices, to sessions that asked for receipts;
//! in a group only to the reader's other devices.

mod common;

use common::{Server, connect_opted, next_matching, until_quiet};
use im_engine::core::pb::{self, server_frame::Body as Out};
use im_engine::transport_tcp::client::{Client, direct, group};

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

//! End-to-end: direct chats and groups over real TCP on 127.0.0.1.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use im_engine::core::pb::{self, ErrorCode};
use im_engine::store_memory::MemoryStore;
use im_engine::transport_tcp::client::{direct, group};

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
                    ..Default::default()
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
                    ..Default::default()
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

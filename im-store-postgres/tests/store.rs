//! The PostgreSQL store against the local server, one schema per test.

mod common;

use common::*;
use im_core::error::StoreError;
use im_core::ids::DedupKey;
use im_core::ids::{ChannelId, DeviceId};
use im_core::store::{
    AppendRequest, ConversationStatesRequest, CursorUpdate, Cursors, InboxRequest, Inboxes,
    Membership, RangeRequest, StoreExt, Timeline,
};

fn range(conv: &im_core::ids::ConversationId, after: u64, limit: usize) -> RangeRequest {
    RangeRequest {
        conversation: conv.clone(),
        after_seq: after,
        until_seq: None,
        limit,
        newest: false,
    }
}

#[tokio::test]
async fn append_then_read_back_in_order() {
    let db = TestDb::new().await;
    let g = group("g1");
    let batch: Vec<_> = (1..=5)
        .map(|s| message(&g, s, "alice", Some(&format!("c{s}")), &["bob", "carol"]))
        .collect();
    let expected: Vec<_> = batch.iter().map(|m| m.message.clone()).collect();
    db.store
        .append(AppendRequest { messages: batch })
        .await
        .expect("append");
    let page = db.store.read_range(range(&g, 0, 100)).await.expect("range");
    assert_eq!(page.messages, expected);
    assert_eq!(page.head_seq, 5);
    assert_eq!(page.first_retained_seq, 1);
    assert_eq!(
        db.store
            .head_seqs(&[g.clone(), group("none")])
            .await
            .expect("heads"),
        vec![5, 0]
    );

    let newest = db
        .store
        .read_range(RangeRequest {
            newest: true,
            ..range(&g, 1, 2)
        })
        .await
        .expect("newest");
    assert_eq!(newest.messages, expected[3..5].to_vec());
    let window = db
        .store
        .read_range(RangeRequest {
            until_seq: Some(3),
            ..range(&g, 1, 10)
        })
        .await
        .expect("window");
    assert_eq!(window.messages, expected[1..3].to_vec());

    let inbox = db
        .store
        .read_inbox(InboxRequest {
            user: user("bob"),
            after_version: 0,
            limit: 10,
        })
        .await
        .expect("inbox");
    assert_eq!(inbox.head_version, 5);
    assert_eq!(inbox.first_retained_version, 1);
    let got: Vec<_> = inbox.entries.iter().map(|e| (e.version, e.seq)).collect();
    assert_eq!(got, vec![(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]);
    assert_eq!(db.store.inbox_head(&user("alice")).await.expect("head"), 0);
}

#[tokio::test]
async fn duplicates_and_conflicts_write_nothing() {
    let db = TestDb::new().await;
    let g = group("g");
    db.store
        .append(AppendRequest {
            messages: vec![message(&g, 1, "a", Some("x"), &["b"])],
        })
        .await
        .expect("first");
    // A batch repeating a committed key is refused whole.
    let err = db
        .store
        .append(AppendRequest {
            messages: vec![
                message(&g, 2, "a", Some("y"), &["b"]),
                message(&g, 3, "a", Some("x"), &["b"]),
            ],
        })
        .await
        .expect_err("duplicate");
    match err {
        StoreError::Duplicate(keys) => assert_eq!(
            keys,
            vec![DedupKey {
                user: user("a"),
                device: DeviceId::new("phone").expect("valid"),
                client_msg_id: "x".into()
            }]
        ),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    // A batch not continuing the head is refused whole.
    let err = db
        .store
        .append(AppendRequest {
            messages: vec![message(&g, 3, "a", None, &["b"])],
        })
        .await
        .expect_err("conflict");
    assert!(
        matches!(
            err,
            StoreError::SeqConflict {
                expected: 2,
                actual: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(db.store.head_seq(&g).await.expect("head"), 1);
    assert_eq!(db.store.inbox_head(&user("b")).await.expect("inbox"), 1);
    let found = db
        .store
        .find_by_dedup_keys(&[
            DedupKey {
                user: user("a"),
                device: DeviceId::new("phone").expect("valid"),
                client_msg_id: "y".into(),
            },
            DedupKey {
                user: user("a"),
                device: DeviceId::new("phone").expect("valid"),
                client_msg_id: "x".into(),
            },
        ])
        .await
        .expect("find");
    assert!(found[0].is_none());
    assert_eq!(found[1].as_ref().map(|m| m.seq), Some(1));
}

#[tokio::test]
async fn membership_and_conversation_list() {
    let db = TestDb::new().await;
    let gid = ChannelId::new("team").expect("valid");
    db.store
        .create_group(&gid, &[user("b"), user("a"), user("a")])
        .await
        .expect("create");
    assert!(matches!(
        db.store.create_group(&gid, &[]).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(db.store.member_count(&gid).await.expect("count"), Some(2));
    db.store
        .add_members(&gid, &[user("c"), user("a")])
        .await
        .expect("add");
    assert_eq!(db.store.member_count(&gid).await.expect("count"), Some(3));
    db.store
        .remove_members(&gid, &[user("a"), user("zz")])
        .await
        .expect("remove");
    assert_eq!(db.store.member_count(&gid).await.expect("count"), Some(2));
    assert_eq!(
        db.store
            .are_members(&gid, &[user("a"), user("c"), user("b")])
            .await
            .expect("are"),
        vec![false, true, true]
    );
    assert_eq!(
        db.store
            .members(&gid, Some(&user("b")), 10)
            .await
            .expect("members"),
        vec![user("c")]
    );
    assert!(matches!(
        db.store
            .add_members(&ChannelId::new("nope").expect("valid"), &[user("a")])
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        db.store.user_groups(&user("c")).await.expect("groups"),
        vec![gid.clone()]
    );

    let team = group("team");
    let d = direct("c", "d");
    db.store
        .append(AppendRequest {
            messages: vec![
                message(&team, 1, "b", None, &[]),
                message(&d, 1, "d", None, &["c"]),
                message(&team, 2, "c", None, &[]),
                message(&d, 2, "d", None, &["c"]),
            ],
        })
        .await
        .expect("append");
    db.store
        .update_cursors(vec![CursorUpdate {
            user: user("c"),
            conversation: d.clone(),
            delivered: None,
            read: Some(1),
        }])
        .await
        .expect("cursors");
    let states = db
        .store
        .conversation_states(ConversationStatesRequest {
            user: user("c"),
            only: None,
            unread_cap: 100,
            limit: 10,
        })
        .await
        .expect("states");
    let summary: Vec<_> = states
        .iter()
        .map(|s| {
            (
                s.conversation.clone(),
                s.head_seq,
                s.delivered_seq,
                s.read_seq,
                s.unread,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![(d.clone(), 2, 1, 1, 1), (team.clone(), 2, 0, 0, 1)]
    );
    assert_eq!(states[0].last_message.as_ref().map(|m| m.seq), Some(2));
}

#[tokio::test]
async fn a_value_postgres_cannot_hold_is_rejected_not_a_backend_failure() {
    // PostgreSQL text cannot hold a NUL. The engine validates client ids
    // first, but a store must still say "this input", never a bare backend
    // failure, so the engine can narrow a batch down to the one at fault.
    let db = TestDb::new().await;
    let g = group("g1");
    let poisoned = message(&g, 1, "mallory", Some("bad\0id"), &["alice"]);
    let err = db
        .store
        .append(AppendRequest {
            messages: vec![poisoned],
        })
        .await
        .expect_err("a NUL in text is refused");
    assert!(matches!(err, StoreError::Rejected(_)), "{err:?}");
    assert!(!err.is_retryable());
    // Nothing was written; the next good append starts at seq 1.
    let good = message(&g, 1, "alice", Some("ok"), &["mallory"]);
    db.store
        .append(AppendRequest {
            messages: vec![good],
        })
        .await
        .expect("a good append after the refused one");
}

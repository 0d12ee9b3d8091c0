//! Appends: whole-batch refusals (duplicates, seq conflicts) and concurrent
//! writers.

use std::sync::Arc;

use im_core::error::StoreError;

use super::*;

#[tokio::test]
async fn duplicates_refuse_the_whole_batch() {
    let store = MemoryStore::new();
    let a = group("a");
    let b = group("b");
    append(
        &store,
        vec![new(msg(&a, 1, "alice", Some("k1")), &["alice", "bob"])],
    )
    .await
    .expect("first append");

    committed_key_refuses_the_batch(&store, &a, &b).await;
    repeated_keys_are_duplicates(&store, &a).await;

    // Duplicates are checked before seqs.
    let err = append(&store, vec![new(msg(&a, 9, "alice", Some("k1")), &[])])
        .await
        .expect_err("duplicate");
    assert!(matches!(err, StoreError::Duplicate(_)));

    // The same client id from another device or user is another key; host
    // messages (no client id) are never duplicates.
    let mut other_device = msg(&a, 2, "alice", Some("k1"));
    other_device.sender_device = DeviceId::new("d2").expect("valid");
    append(
        &store,
        vec![
            new(other_device, &[]),
            new(msg(&a, 3, "bob", Some("k1")), &[]),
            new(msg(&a, 4, "host", None), &[]),
            new(msg(&a, 5, "host", None), &[]),
        ],
    )
    .await
    .expect("distinct keys");

    let found = store
        .find_by_dedup_keys(&[key("bob", "k1"), key("nobody", "x"), key("alice", "k1")])
        .await
        .expect("find");
    assert_eq!(found[0].as_ref().map(|m| m.seq), Some(3));
    assert_eq!(found[1], None);
    assert_eq!(
        found[2].as_ref().map(|m| (m.seq, m.message_id)),
        Some((1, MessageId(1)))
    );
}

/// A committed key refuses the batch, including the other conversation.
async fn committed_key_refuses_the_batch(
    store: &MemoryStore,
    a: &ConversationId,
    b: &ConversationId,
) {
    let err = append(
        store,
        vec![
            new(msg(b, 1, "bob", Some("k2")), &["bob"]),
            new(msg(a, 2, "alice", Some("k1")), &["bob"]),
        ],
    )
    .await
    .expect_err("duplicate");
    assert!(matches!(&err, StoreError::Duplicate(keys) if *keys == vec![key("alice", "k1")]));
    assert_eq!(
        store
            .head_seqs(&[a.clone(), b.clone()])
            .await
            .expect("heads"),
        vec![1, 0]
    );
    assert_eq!(store.inbox_head(&u("bob")).await.expect("inbox"), 1);
    assert_eq!(
        store
            .find_by_dedup_keys(&[key("bob", "k2")])
            .await
            .expect("find"),
        vec![None]
    );
}

/// A key repeated inside the batch is a duplicate too; each key is listed
/// once, in batch order, and valid seqs do not matter.
async fn repeated_keys_are_duplicates(store: &MemoryStore, a: &ConversationId) {
    let err = append(
        store,
        vec![
            new(msg(a, 2, "alice", Some("k3")), &[]),
            new(msg(a, 3, "alice", Some("k3")), &[]),
            new(msg(a, 4, "alice", Some("k1")), &[]),
            new(msg(a, 5, "alice", Some("k1")), &[]),
            new(msg(a, 6, "alice", Some("fresh")), &[]),
        ],
    )
    .await
    .expect_err("duplicate");
    match err {
        StoreError::Duplicate(keys) => {
            assert_eq!(keys, vec![key("alice", "k3"), key("alice", "k1")]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(store.head_seq(a).await.expect("head"), 1);
    assert_eq!(
        store
            .find_by_dedup_keys(&[key("alice", "fresh"), key("alice", "k3")])
            .await
            .expect("find"),
        vec![None, None]
    );
}

#[tokio::test]
async fn seq_conflicts_refuse_the_whole_batch() {
    let store = MemoryStore::new();
    let a = group("a");
    let b = group("b");
    fill(&store, &a, 1, "alice").await;

    ahead_of_the_head_refuses_the_batch(&store, &a, &b).await;

    // Behind the head (another writer appended).
    let err = append(&store, vec![new(msg(&a, 1, "alice", None), &[])])
        .await
        .expect_err("conflict");
    assert!(matches!(
        err,
        StoreError::SeqConflict {
            expected: 0,
            actual: 1,
            ..
        }
    ));

    // A gap inside the batch.
    let err = append(
        &store,
        vec![
            new(msg(&a, 2, "alice", None), &[]),
            new(msg(&a, 4, "alice", None), &[]),
        ],
    )
    .await
    .expect_err("conflict");
    assert!(matches!(
        err,
        StoreError::SeqConflict {
            expected: 3,
            actual: 2,
            ..
        }
    ));
    assert_eq!(store.head_seq(&a).await.expect("head"), 1);

    // Interleaved conversations are fine as long as each continues its head.
    append(
        &store,
        vec![
            new(msg(&a, 2, "alice", None), &[]),
            new(msg(&b, 1, "bob", None), &[]),
            new(msg(&a, 3, "alice", None), &[]),
        ],
    )
    .await
    .expect("append");
    assert_eq!(store.head_seqs(&[b, a]).await.expect("heads"), vec![1, 3]);
    append(&store, vec![]).await.expect("empty batch");
}

/// Ahead of the head: the writer assumed head 2, the store has 1; nothing
/// of the batch is written.
async fn ahead_of_the_head_refuses_the_batch(
    store: &MemoryStore,
    a: &ConversationId,
    b: &ConversationId,
) {
    let err = append(
        store,
        vec![
            new(msg(b, 1, "bob", Some("x")), &["bob"]),
            new(msg(a, 3, "alice", None), &["bob"]),
        ],
    )
    .await
    .expect_err("conflict");
    match err {
        StoreError::SeqConflict {
            conversation,
            expected,
            actual,
        } => {
            assert_eq!(&conversation, a);
            assert_eq!((expected, actual), (2, 1));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        store
            .head_seqs(&[a.clone(), b.clone()])
            .await
            .expect("heads"),
        vec![1, 0]
    );
    assert_eq!(store.inbox_head(&u("bob")).await.expect("inbox"), 0);
    assert_eq!(
        store
            .find_by_dedup_keys(&[key("bob", "x")])
            .await
            .expect("find"),
        vec![None]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_stay_gap_free_and_atomic() {
    let store = Arc::new(MemoryStore::with_config(
        MemoryStoreConfig::default().with_inbox_capacity(100_000),
    ));
    let convs: Vec<ConversationId> = (0..4).map(|i| group(&format!("g{i}"))).collect();
    let mut tasks = Vec::new();
    for w in 0..8usize {
        let store = Arc::clone(&store);
        let convs = convs.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            while sent < 50 {
                // Each batch spans two conversations, in either order, so
                // lock ordering is exercised.
                let (x, y) = (&convs[(w + sent) % 4], &convs[(w + sent + 1 + w % 2) % 4]);
                let heads = store
                    .head_seqs(&[x.clone(), y.clone()])
                    .await
                    .expect("heads");
                let cmid = format!("w{w}-{sent}");
                let messages = vec![
                    new(
                        msg(x, heads[0] + 1, "alice", Some(&cmid)),
                        &["alice", "bob"],
                    ),
                    new(msg(y, heads[1] + 1, "bob", None), &["bob", "carol"]),
                ];
                match store.append(AppendRequest { messages }).await {
                    Ok(()) => sent += 1,
                    Err(StoreError::SeqConflict { .. }) => tokio::task::yield_now().await,
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let heads = store.head_seqs(&convs).await.expect("heads");
    assert_eq!(heads.iter().sum::<u64>(), 8 * 50 * 2);
    for (c, head) in convs.iter().zip(heads) {
        let page = range(&store, c, 0, None, usize::MAX, false).await;
        assert_eq!(seqs(&page), (1..=head).collect::<Vec<_>>());
    }
    let bob = inbox(&store, "bob", 0, usize::MAX).await;
    assert_eq!(versions(&bob), (1..=8 * 50 * 2).collect::<Vec<_>>());
    assert_eq!(
        inbox(&store, "alice", 0, usize::MAX).await.head_version,
        8 * 50
    );
    assert_eq!(
        inbox(&store, "carol", 0, usize::MAX).await.head_version,
        8 * 50
    );
}

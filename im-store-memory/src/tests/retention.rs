//! Retention: inbox versions, timeline capacity and ranges at the edges.

use super::*;

#[tokio::test]
async fn inbox_versions_are_continuous_and_retained() {
    let store = MemoryStore::with_config(MemoryStoreConfig::default().with_inbox_capacity(3));
    let d = direct("alice", "bob");
    let g = group("g");

    let page = inbox(&store, "bob", 0, 10).await;
    assert_eq!((page.head_version, page.first_retained_version), (0, 1));
    assert!(page.entries.is_empty());

    append(
        &store,
        vec![
            new(msg(&d, 1, "alice", None), &["alice", "bob"]),
            // A recipient named twice gets one entry.
            new(msg(&g, 1, "carol", None), &["bob", "carol", "bob"]),
        ],
    )
    .await
    .expect("append");
    let page = inbox(&store, "bob", 0, 10).await;
    assert_eq!(versions(&page), vec![1, 2]);
    assert_eq!(page.entries[0].conversation, d);
    assert_eq!(page.entries[1].conversation, g);
    assert_eq!(page.entries[1].seq, 1);
    assert_eq!((page.head_version, page.first_retained_version), (2, 1));
    assert_eq!(versions(&inbox(&store, "alice", 0, 10).await), vec![1]);
    assert_eq!(versions(&inbox(&store, "carol", 0, 10).await), vec![1]);

    for seq in 2..=4 {
        append(
            &store,
            vec![new(msg(&d, seq, "alice", None), &["alice", "bob"])],
        )
        .await
        .expect("append");
    }
    // Five versions written, three retained.
    let page = inbox(&store, "bob", 0, 10).await;
    assert_eq!(versions(&page), vec![3, 4, 5]);
    assert_eq!((page.head_version, page.first_retained_version), (5, 3));
    assert_eq!(page.entries[2].seq, 4);
    // A reader at version 1 can tell it lost version 2.
    assert!(1 + 1 < page.first_retained_version);
    assert_eq!(versions(&inbox(&store, "bob", 3, 1).await), vec![4]);
    assert_eq!(
        versions(&inbox(&store, "bob", 3, 0).await),
        Vec::<u64>::new()
    );
    let tail = inbox(&store, "bob", 5, 10).await;
    assert!(tail.entries.is_empty());
    assert_eq!((tail.head_version, tail.first_retained_version), (5, 3));
    assert!(inbox(&store, "bob", u64::MAX, 10).await.entries.is_empty());
    assert_eq!(store.inbox_head(&u("bob")).await.expect("inbox"), 5);
    assert_eq!(store.inbox_head(&u("nobody")).await.expect("inbox"), 0);

    // Capacity zero keeps nothing; versions still advance.
    let store = MemoryStore::with_config(MemoryStoreConfig::default().with_inbox_capacity(0));
    append(&store, vec![new(msg(&g, 1, "carol", None), &["bob"])])
        .await
        .expect("append");
    let page = inbox(&store, "bob", 0, 10).await;
    assert!(page.entries.is_empty());
    assert_eq!((page.head_version, page.first_retained_version), (1, 2));
}

#[tokio::test]
async fn timeline_retention_drops_the_oldest() {
    let store =
        MemoryStore::with_config(MemoryStoreConfig::default().with_timeline_capacity(Some(3)));
    let a = group("a");
    let b = group("b");
    let page = range(&store, &a, 0, None, 10, false).await;
    assert_eq!((page.head_seq, page.first_retained_seq), (0, 1));

    append(&store, vec![new(msg(&a, 1, "alice", Some("k1")), &[])])
        .await
        .expect("append");
    let page = range(&store, &a, 0, None, 10, false).await;
    assert_eq!((page.head_seq, page.first_retained_seq), (1, 1));

    for seq in 2..=5 {
        append(
            &store,
            vec![new(msg(&a, seq, "alice", Some(&format!("k{seq}"))), &[])],
        )
        .await
        .expect("append");
    }
    let page = range(&store, &a, 0, None, 10, false).await;
    assert_eq!(seqs(&page), vec![3, 4, 5]);
    assert_eq!((page.head_seq, page.first_retained_seq), (5, 3));

    // Dropped messages are left out of lookups, and their keys forgotten.
    let got = store
        .get_messages(&[
            (a.clone(), 5),
            (a.clone(), 1),
            (b.clone(), 1),
            (a.clone(), 3),
            (a.clone(), 6),
        ])
        .await
        .expect("get");
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![5, 3]);
    let found = store
        .find_by_dedup_keys(&[key("alice", "k1"), key("alice", "k4")])
        .await
        .expect("find");
    assert_eq!(found[0], None);
    assert_eq!(found[1].as_ref().map(|m| m.seq), Some(4));
    append(&store, vec![new(msg(&a, 6, "alice", Some("k1")), &[])])
        .await
        .expect("a forgotten key is accepted again");

    // A batch longer than the capacity keeps only its newest messages.
    let batch = (1..=5)
        .map(|seq| new(msg(&b, seq, "bob", Some(&format!("b{seq}"))), &[]))
        .collect();
    append(&store, batch).await.expect("append");
    let page = range(&store, &b, 0, None, 10, false).await;
    assert_eq!(seqs(&page), vec![3, 4, 5]);
    assert_eq!(page.first_retained_seq, 3);
    let found = store
        .find_by_dedup_keys(&[key("bob", "b2"), key("bob", "b3")])
        .await
        .expect("find");
    assert_eq!(found[0], None);
    assert_eq!(found[1].as_ref().map(|m| m.seq), Some(3));

    // Capacity zero: everything dropped, first_retained = head + 1.
    let store =
        MemoryStore::with_config(MemoryStoreConfig::default().with_timeline_capacity(Some(0)));
    fill(&store, &a, 2, "alice").await;
    let page = range(&store, &a, 0, None, 10, false).await;
    assert!(page.messages.is_empty());
    assert_eq!((page.head_seq, page.first_retained_seq), (2, 3));
    let s = states(&store, "alice", Some(vec![a.clone()]), 10, 10).await;
    assert_eq!(s[0].head_seq, 2);
    assert_eq!(s[0].last_message, None);
}

// Bounds, limits and `newest` are the kit's `range_reads`; these are the
// extremes of the integer types, and ranges under retention.
#[tokio::test]
async fn ranges_at_the_extremes_and_under_retention() {
    let store = MemoryStore::new();
    let a = group("a");
    fill(&store, &a, 10, "alice").await;
    assert_eq!(
        seqs(&range(&store, &a, 9, None, usize::MAX, true).await),
        vec![10]
    );
    assert_eq!(
        seqs(&range(&store, &a, 0, None, usize::MAX, false).await),
        (1..=10).collect::<Vec<_>>()
    );
    assert!(
        range(&store, &a, u64::MAX, None, 10, true)
            .await
            .messages
            .is_empty()
    );
    assert!(
        range(&store, &a, u64::MAX - 1, Some(u64::MAX), 10, false)
            .await
            .messages
            .is_empty()
    );

    // With retention, ranges start at the first retained seq.
    let store =
        MemoryStore::with_config(MemoryStoreConfig::default().with_timeline_capacity(Some(4)));
    fill(&store, &a, 10, "alice").await;
    assert_eq!(
        seqs(&range(&store, &a, 0, None, 2, false).await),
        vec![7, 8]
    );
    assert_eq!(
        seqs(&range(&store, &a, 0, Some(8), 10, true).await),
        vec![7, 8]
    );
    assert_eq!(
        seqs(&range(&store, &a, 0, None, 2, true).await),
        vec![9, 10]
    );
    assert!(
        range(&store, &a, 0, Some(6), 10, true)
            .await
            .messages
            .is_empty()
    );
}

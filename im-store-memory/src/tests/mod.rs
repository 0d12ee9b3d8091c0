use std::sync::Arc;

use bytes::Bytes;
use im_core::ids::{DeviceId, MessageId};
use im_core::store::{NewMessage, StoreExt};

use super::*;

fn u(s: &str) -> UserId {
    UserId::new(s).expect("valid user id")
}

fn group(s: &str) -> ConversationId {
    ConversationId::group(s).expect("valid group id")
}

fn direct(a: &str, b: &str) -> ConversationId {
    ConversationId::direct(u(a), u(b))
}

fn msg(conversation: &ConversationId, seq: Seq, sender: &str, cmid: Option<&str>) -> StoredMessage {
    StoredMessage {
        conversation: conversation.clone(),
        seq,
        message_id: MessageId(seq),
        sender: u(sender),
        sender_device: DeviceId::new("d1").expect("valid device id"),
        client_msg_id: cmid.map(str::to_owned),
        body: Bytes::from(format!("{conversation} #{seq}")),
        server_time_ms: 0,
    }
}

fn new(message: StoredMessage, recipients: &[&str]) -> NewMessage {
    NewMessage {
        message,
        inbox_recipients: recipients.iter().map(|r| u(r)).collect(),
    }
}

fn key(sender: &str, cmid: &str) -> DedupKey {
    DedupKey {
        user: u(sender),
        device: DeviceId::new("d1").expect("valid device id"),
        client_msg_id: cmid.to_owned(),
    }
}

async fn append(store: &MemoryStore, messages: Vec<NewMessage>) -> StoreResult<()> {
    store.append(AppendRequest { messages }).await
}

/// Appends `n` messages from `sender` (no client id) continuing the head.
async fn fill(store: &MemoryStore, c: &ConversationId, n: u64, sender: &str) {
    let head = store.head_seq(c).await.expect("head");
    let messages = (1..=n)
        .map(|i| new(msg(c, head + i, sender, None), &[]))
        .collect();
    append(store, messages).await.expect("append");
}

async fn range(
    store: &MemoryStore,
    c: &ConversationId,
    after: Seq,
    until: Option<Seq>,
    limit: usize,
    newest: bool,
) -> RangePage {
    store
        .read_range(RangeRequest {
            conversation: c.clone(),
            after_seq: after,
            until_seq: until,
            limit,
            newest,
        })
        .await
        .expect("read_range")
}

fn seqs(page: &RangePage) -> Vec<Seq> {
    page.messages.iter().map(|m| m.seq).collect()
}

async fn inbox(store: &MemoryStore, user: &str, after: u64, limit: usize) -> InboxPage {
    store
        .read_inbox(InboxRequest {
            user: u(user),
            after_version: after,
            limit,
        })
        .await
        .expect("read_inbox")
}

fn versions(page: &InboxPage) -> Vec<u64> {
    page.entries.iter().map(|e| e.version).collect()
}

async fn states(
    store: &MemoryStore,
    user: &str,
    only: Option<Vec<ConversationId>>,
    cap: u32,
    limit: usize,
) -> Vec<ConversationState> {
    store
        .conversation_states(ConversationStatesRequest {
            user: u(user),
            only,
            unread_cap: cap,
            limit,
        })
        .await
        .expect("conversation_states")
}

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

    // A committed key refuses the batch, including the other conversation.
    let err = append(
        &store,
        vec![
            new(msg(&b, 1, "bob", Some("k2")), &["bob"]),
            new(msg(&a, 2, "alice", Some("k1")), &["bob"]),
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

    // A key repeated inside the batch is a duplicate too; each key is listed
    // once, in batch order, and valid seqs do not matter.
    let err = append(
        &store,
        vec![
            new(msg(&a, 2, "alice", Some("k3")), &[]),
            new(msg(&a, 3, "alice", Some("k3")), &[]),
            new(msg(&a, 4, "alice", Some("k1")), &[]),
            new(msg(&a, 5, "alice", Some("k1")), &[]),
            new(msg(&a, 6, "alice", Some("fresh")), &[]),
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
    assert_eq!(store.head_seq(&a).await.expect("head"), 1);
    assert_eq!(
        store
            .find_by_dedup_keys(&[key("alice", "fresh"), key("alice", "k3")])
            .await
            .expect("find"),
        vec![None, None]
    );

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

#[tokio::test]
async fn seq_conflicts_refuse_the_whole_batch() {
    let store = MemoryStore::new();
    let a = group("a");
    let b = group("b");
    fill(&store, &a, 1, "alice").await;

    // Ahead of the head: the writer assumed head 2, the store has 1.
    let err = append(
        &store,
        vec![
            new(msg(&b, 1, "bob", Some("x")), &["bob"]),
            new(msg(&a, 3, "alice", None), &["bob"]),
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
            assert_eq!(conversation, a);
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

// The list itself (who sees what, order, limit, leaving) is the kit's
// `conversation_list`; this is an `only` request naming rooms, unknown
// conversations and groups the user left.
#[tokio::test]
async fn conversation_states_only_answers_what_was_asked() {
    let store = MemoryStore::new();
    let g1 = group("g1");
    let room = ConversationId::room("lobby").expect("valid");
    let g1_id = ChannelId::new("g1").expect("valid");
    store
        .create_group(&g1_id, &[u("alice"), u("bob")])
        .await
        .expect("create");
    fill(&store, &g1, 2, "bob").await;
    fill(&store, &room, 1, "alice").await;
    store
        .remove_members(&g1_id, &[u("alice")])
        .await
        .expect("remove");

    // `only` keeps the request order, includes rooms and unknown ones.
    let unknown = group("nope");
    let s = states(
        &store,
        "alice",
        Some(vec![unknown.clone(), room.clone(), g1.clone()]),
        100,
        100,
    )
    .await;
    let ids: Vec<_> = s.iter().map(|s| s.conversation.clone()).collect();
    assert_eq!(ids, vec![unknown, room, g1]);
    assert_eq!((s[0].head_seq, s[0].unread, s[0].delivered_seq), (0, 0, 0));
    assert_eq!((s[1].head_seq, s[1].unread), (1, 0));
}

#[tokio::test]
async fn membership_and_paging() {
    let store = MemoryStore::new();
    let g = ChannelId::new("g").expect("valid");
    let missing = ChannelId::new("missing").expect("valid");
    let users: Vec<UserId> = (0..250).map(|i| u(&format!("user{i:03}"))).collect();

    store.create_group(&g, &users[..100]).await.expect("create");
    assert!(matches!(
        store.create_group(&g, &[]).await,
        Err(StoreError::AlreadyExists(_))
    ));
    store
        .add_members(&g, &users[50..])
        .await
        .expect("add, overlapping");
    store
        .add_members(&g, &users[..10])
        .await
        .expect("add again");
    assert!(matches!(
        store.add_members(&missing, &users[..1]).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.member_count(&g).await.expect("count"), Some(250));
    assert_eq!(store.member_count(&missing).await.expect("count"), None);

    // Page through in id order.
    let mut all = Vec::new();
    let mut after: Option<UserId> = None;
    loop {
        let page = store
            .members(&g, after.as_ref(), 100)
            .await
            .expect("members");
        assert!(page.len() <= 100);
        let Some(last) = page.last().cloned() else {
            break;
        };
        all.extend(page);
        after = Some(last);
    }
    assert_eq!(all, users);
    let page = store
        .members(&g, Some(&u("user009")), 3)
        .await
        .expect("members");
    assert_eq!(page, vec![u("user010"), u("user011"), u("user012")]);
    assert!(
        store
            .members(&g, None, 0)
            .await
            .expect("members")
            .is_empty()
    );
    assert!(
        store
            .members(&missing, None, 10)
            .await
            .expect("members")
            .is_empty()
    );

    store
        .remove_members(&g, &[u("user001"), u("stranger"), u("user001")])
        .await
        .expect("remove");
    store
        .remove_members(&missing, &[u("user002")])
        .await
        .expect("no-op");
    assert_eq!(store.member_count(&g).await.expect("count"), Some(249));
    assert_eq!(
        store
            .are_members(&g, &[u("user000"), u("user001"), u("stranger")])
            .await
            .expect("are_members"),
        vec![true, false, false]
    );
    assert_eq!(
        store
            .are_members(&missing, &[u("user000")])
            .await
            .expect("are_members"),
        vec![false]
    );

    let h = ChannelId::new("h").expect("valid");
    store
        .create_group(&h, &[u("user000")])
        .await
        .expect("create");
    assert_eq!(
        store.user_groups(&u("user000")).await.expect("groups"),
        vec![g.clone(), h]
    );
    assert!(
        store
            .user_groups(&u("user001"))
            .await
            .expect("groups")
            .is_empty()
    );
    assert_eq!(
        store.user_groups(&u("user002")).await.expect("groups"),
        vec![g]
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

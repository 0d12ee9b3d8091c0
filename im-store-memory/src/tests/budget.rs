//! The byte budget: accounting, eviction order across conversations, its
//! interplay with the timeline capacity, and a property test against a
//! model of both.

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;

use super::*;
use crate::state::charge;

/// Message `seq` of `c` from `sender` whose body is `len` bytes.
fn sized(
    c: &ConversationId,
    seq: Seq,
    sender: &str,
    cmid: Option<&str>,
    len: usize,
) -> StoredMessage {
    let mut m = msg(c, seq, sender, cmid);
    m.body = Bytes::from(vec![b'x'; len]);
    m
}

/// A store with only a byte budget of `bytes`.
fn budget(bytes: usize) -> MemoryStore {
    MemoryStore::with_config(MemoryStoreConfig::unbounded().with_max_total_bytes(Some(bytes)))
}

/// The sum of the charges of every retained message of `convs`.
async fn charged(store: &MemoryStore, convs: &[ConversationId]) -> usize {
    let mut total = 0;
    for c in convs {
        total += range(store, c, 0, None, usize::MAX, false)
            .await
            .messages
            .iter()
            .map(charge)
            .sum::<usize>();
    }
    total
}

#[test]
fn defaults_are_bounded() {
    let d = MemoryStoreConfig::default();
    assert_eq!(d.inbox_capacity, 10_000);
    assert_eq!(d.timeline_capacity, Some(crate::DEFAULT_TIMELINE_CAPACITY));
    assert_eq!(d.max_total_bytes, Some(crate::DEFAULT_MAX_TOTAL_BYTES));
    assert_eq!(crate::DEFAULT_MAX_TOTAL_BYTES, 256 << 20);
    let u = MemoryStoreConfig::unbounded();
    assert_eq!((u.timeline_capacity, u.max_total_bytes), (None, None));
    assert_eq!(u.inbox_capacity, 10_000);
    assert_eq!(MemoryStore::new().config(), &d);
}

#[test]
fn a_message_is_charged_its_body_ids_and_a_fixed_overhead() {
    let c = group("g");
    let bare = charge(&sized(&c, 1, "al", None, 0));
    // Sender "al" and device "d1": four bytes of ids, the rest is overhead.
    let overhead = bare - 4;
    assert!(
        (100..=512).contains(&overhead),
        "overhead {overhead} bytes: about the size of the structures"
    );
    assert_eq!(charge(&sized(&c, 1, "al", None, 1000)), bare + 1000);
    // A client id is kept twice: in the message and in the index.
    assert_eq!(charge(&sized(&c, 1, "al", Some("abc"), 0)), bare + 6);
}

#[tokio::test]
async fn accounting_follows_appends_and_drops() {
    let a = group("a");
    let b = group("b");
    let store = MemoryStore::with_config(
        MemoryStoreConfig::unbounded()
            .with_timeline_capacity(Some(2))
            .with_max_total_bytes(Some(1 << 20)),
    );
    assert_eq!(store.retained_bytes(), 0);
    append(
        &store,
        vec![
            new(sized(&a, 1, "alice", Some("k1"), 100), &["bob"]),
            new(sized(&b, 1, "bob", None, 300), &["alice"]),
        ],
    )
    .await
    .expect("append");
    assert_eq!(
        store.retained_bytes(),
        charged(&store, &[a.clone(), b.clone()]).await
    );
    // The capacity drops a1 and a2 for a3 and a4: the total follows.
    append(
        &store,
        vec![
            new(sized(&a, 2, "alice", None, 5000), &[]),
            new(sized(&a, 3, "alice", None, 10), &[]),
            new(sized(&a, 4, "alice", None, 10), &[]),
        ],
    )
    .await
    .expect("append");
    assert_eq!(
        range(&store, &a, 0, None, 10, false)
            .await
            .first_retained_seq,
        3
    );
    assert_eq!(
        store.retained_bytes(),
        charged(&store, &[a.clone(), b.clone()]).await
    );
    // A refused append changes nothing.
    let before = store.retained_bytes();
    append(&store, vec![new(sized(&a, 9, "alice", None, 10), &[])])
        .await
        .expect_err("seq conflict");
    assert_eq!(store.retained_bytes(), before);
    // Without any bound the total is still kept.
    let store = MemoryStore::with_config(MemoryStoreConfig::unbounded());
    fill(&store, &a, 3, "alice").await;
    assert_eq!(store.retained_bytes(), charged(&store, &[a]).await);
}

#[tokio::test]
async fn the_budget_evicts_the_oldest_messages_store_wide() {
    let (a, b, c) = (group("a"), direct("alice", "bob"), group("c"));
    let each = charge(&sized(&a, 1, "alice", Some("a1"), 1000));
    // Room for four such messages (the key lengths are equal).
    let store = budget(4 * each + each / 2);
    // Commit order: a1, b1, a2, c1, a3, b2 (a2 and c1 in one batch).
    let order = [
        vec![(a.clone(), 1, "a1")],
        vec![(b.clone(), 1, "b1")],
        vec![(a.clone(), 2, "a2"), (c.clone(), 1, "c1")],
        vec![(a.clone(), 3, "a3")],
        vec![(b.clone(), 2, "b2")],
    ];
    for batch in order {
        let messages = batch
            .into_iter()
            .map(|(conv, seq, k)| new(sized(&conv, seq, "alice", Some(k), 1000), &["bob"]))
            .collect();
        append(&store, messages).await.expect("append");
        assert!(store.retained_bytes() <= store.config().max_total_bytes.unwrap_or(0));
    }
    // Six written, four fit: a1 and b1, the oldest, are gone.
    let pa = range(&store, &a, 0, None, 10, false).await;
    assert_eq!(
        (seqs(&pa), pa.first_retained_seq, pa.head_seq),
        (vec![2, 3], 2, 3)
    );
    let pb = range(&store, &b, 0, None, 10, false).await;
    assert_eq!(
        (seqs(&pb), pb.first_retained_seq, pb.head_seq),
        (vec![2], 2, 2)
    );
    let pc = range(&store, &c, 0, None, 10, false).await;
    assert_eq!((seqs(&pc), pc.first_retained_seq), (vec![1], 1));
    assert_eq!(store.retained_bytes(), 4 * each);
    assert_eq!(
        store.retained_bytes(),
        charged(&store, &[a.clone(), b.clone(), c.clone()]).await
    );

    // Their keys went with them; a forgotten key is accepted again.
    let found = store
        .find_by_dedup_keys(&[key("alice", "a1"), key("alice", "b1"), key("alice", "a2")])
        .await
        .expect("find");
    assert_eq!(
        found
            .iter()
            .map(|m| m.as_ref().map(|m| m.seq))
            .collect::<Vec<_>>(),
        [None, None, Some(2)]
    );
    // Their inbox entries remain; get_messages leaves the messages out.
    let page = inbox(&store, "bob", 0, 10).await;
    assert_eq!(versions(&page), [1, 2, 3, 4, 5, 6]);
    let refs: Vec<_> = page
        .entries
        .iter()
        .map(|e| (e.conversation.clone(), e.seq))
        .collect();
    let got = store.get_messages(&refs).await.expect("get");
    assert_eq!(got.len(), 4);
    append(
        &store,
        vec![new(sized(&c, 2, "alice", Some("a1"), 1000), &[])],
    )
    .await
    .expect("a forgotten key is accepted again");
    // That pushed out a2, now the oldest.
    assert_eq!(
        range(&store, &a, 0, None, 10, false)
            .await
            .first_retained_seq,
        3
    );
}

#[tokio::test]
async fn a_message_over_the_budget_is_committed_then_dropped() {
    let a = group("a");
    let store = budget(1000);
    append(
        &store,
        vec![new(sized(&a, 1, "alice", Some("big"), 2000), &["bob"])],
    )
    .await
    .expect("append");
    let page = range(&store, &a, 0, None, 10, false).await;
    assert!(page.messages.is_empty());
    assert_eq!((page.head_seq, page.first_retained_seq), (1, 2));
    assert_eq!(store.retained_bytes(), 0);
    assert_eq!(store.head_seq(&a).await.expect("head"), 1);
    // The next one continues the head.
    append(&store, vec![new(sized(&a, 2, "alice", None, 0), &[])])
        .await
        .expect("append");
    let page = range(&store, &a, 0, None, 10, false).await;
    assert_eq!((seqs(&page), page.first_retained_seq), (vec![2], 2));
    // Budget zero keeps nothing.
    let store = budget(0);
    fill(&store, &a, 3, "alice").await;
    let page = range(&store, &a, 0, None, 10, false).await;
    assert_eq!(
        (page.head_seq, page.first_retained_seq, page.messages.len()),
        (3, 4, 0)
    );
    assert_eq!(store.retained_bytes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_stay_within_the_budget_once_done() {
    let store = std::sync::Arc::new(budget(64 << 10));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Writers 0 and 1 share a conversation; the rest have their own.
            let c = group(&format!("g{}", w / 2));
            for i in 0..200u64 {
                loop {
                    let head = store.head_seq(&c).await.expect("head");
                    let m = sized(&c, head + 1, "alice", Some(&format!("{w}-{i}")), 512);
                    match append(&store, vec![new(m, &["bob"])]).await {
                        Ok(()) => break,
                        Err(im_core::error::StoreError::SeqConflict { .. }) => continue,
                        Err(e) => panic!("append: {e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let convs: Vec<_> = (0..4).map(|g| group(&format!("g{g}"))).collect();
    assert!(store.retained_bytes() <= 64 << 10);
    assert_eq!(store.retained_bytes(), charged(&store, &convs).await);
    let mut holding = 0;
    for c in &convs {
        let page = range(&store, c, 0, None, usize::MAX, false).await;
        assert_eq!(page.head_seq, 400);
        assert_eq!(
            seqs(&page),
            (page.first_retained_seq..=page.head_seq).collect::<Vec<_>>()
        );
        assert!(page.first_retained_seq > 1);
        holding += usize::from(!page.messages.is_empty());
    }
    // The index lists each conversation holding a message once.
    assert_eq!(store.oldest.lock().len(), holding);
}

/// One append of the property test: `(conversation, body length, keyed)`.
type Batch = Vec<(usize, usize, bool)>;

/// The expected store: each retained message's (conversation, seq, charge)
/// in commit order, after the capacity and then the budget did their work.
#[derive(Default)]
struct Model {
    retained: VecDeque<(usize, Seq, usize)>,
    heads: BTreeMap<usize, Seq>,
}

impl Model {
    fn append(&mut self, batch: &[(usize, StoredMessage)], cap: Option<usize>, budget: usize) {
        for (c, m) in batch {
            self.heads.insert(*c, m.seq);
            self.retained.push_back((*c, m.seq, charge(m)));
            if let Some(cap) = cap {
                let n = self.retained.iter().filter(|(x, _, _)| x == c).count();
                if n > cap {
                    let pos = self.retained.iter().position(|(x, _, _)| x == c);
                    if let Some(pos) = pos {
                        self.retained.remove(pos);
                    }
                }
            }
        }
        while self.total() > budget {
            self.retained.pop_front();
        }
    }

    fn total(&self) -> usize {
        self.retained.iter().map(|(_, _, b)| b).sum()
    }

    /// First retained seq of conversation `c`.
    fn first(&self, c: usize) -> Seq {
        self.retained
            .iter()
            .find(|(x, _, _)| *x == c)
            .map_or(self.heads.get(&c).copied().unwrap_or(0) + 1, |(_, s, _)| *s)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Under random appends, the total stays within the budget, every
    /// conversation keeps a contiguous run up to its head that
    /// `first_retained_seq` reports, the evicted messages are the store's
    /// oldest, and keys live exactly as long as their messages.
    #[test]
    fn budget_keeps_a_contiguous_honest_suffix(
        budget_bytes in 0usize..6_000,
        cap in prop::option::of(0usize..6),
        batches in prop::collection::vec(
            prop::collection::vec((0usize..4, 0usize..1_500, any::<bool>()), 1..4),
            1..40,
        ),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(check_budget(budget_bytes, cap, batches))?;
    }
}

async fn check_budget(
    budget_bytes: usize,
    cap: Option<usize>,
    batches: Vec<Batch>,
) -> Result<(), TestCaseError> {
    let store = MemoryStore::with_config(
        MemoryStoreConfig::unbounded()
            .with_timeline_capacity(cap)
            .with_max_total_bytes(Some(budget_bytes)),
    );
    let convs: Vec<ConversationId> = (0..4).map(|i| group(&format!("c{i}"))).collect();
    let mut model = Model::default();
    let mut written: Vec<Vec<StoredMessage>> = vec![Vec::new(); convs.len()];
    for (n, batch) in batches.iter().enumerate() {
        let mut heads: Vec<Seq> = written.iter().map(|w| w.len() as Seq).collect();
        let mut laid = Vec::new();
        for (i, &(c, len, keyed)) in batch.iter().enumerate() {
            heads[c] += 1;
            let k = format!("{n}-{i}");
            let m = sized(
                &convs[c],
                heads[c],
                "alice",
                keyed.then_some(k.as_str()),
                len,
            );
            laid.push((c, m));
        }
        append(
            &store,
            laid.iter().map(|(_, m)| new(m.clone(), &["bob"])).collect(),
        )
        .await
        .map_err(|e| TestCaseError::fail(format!("append: {e}")))?;
        for (c, m) in &laid {
            written[*c].push(m.clone());
        }
        model.append(&laid, cap, budget_bytes);

        prop_assert!(store.retained_bytes() <= budget_bytes);
        prop_assert_eq!(store.retained_bytes(), model.total());
        for (c, conv) in convs.iter().enumerate() {
            let page = range(&store, conv, 0, None, usize::MAX, false).await;
            let head = written[c].len() as Seq;
            prop_assert_eq!(page.head_seq, head);
            prop_assert_eq!(page.first_retained_seq, model.first(c));
            let first = page.first_retained_seq;
            prop_assert_eq!(seqs(&page), (first..=head).collect::<Vec<_>>());
            let keys: Vec<DedupKey> = written[c]
                .iter()
                .filter_map(StoredMessage::dedup_key)
                .collect();
            let found = store.find_by_dedup_keys(&keys).await.expect("find");
            let keyed = written[c].iter().filter(|m| m.client_msg_id.is_some());
            for (m, f) in keyed.zip(&found) {
                prop_assert_eq!(f.is_some(), m.seq >= first);
            }
        }
        // The index holds exactly the conversations with a message.
        let holding = convs
            .iter()
            .enumerate()
            .filter(|(c, _)| model.retained.iter().any(|(x, _, _)| x == c))
            .count();
        prop_assert_eq!(store.oldest.lock().len(), holding);
    }
    Ok(())
}

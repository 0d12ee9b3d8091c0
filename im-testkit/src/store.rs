//! The store conformance suite: every check of the storage contract, run
//! against any [`Store`].
//!
//! [`conformance`] runs them all, each on a fresh store from the factory,
//! and panics with the names and messages of every check that failed. Each
//! check is also a public function, for running one alone while debugging.
//!
//! The checks hold stores to the documented semantics of
//! `im_core::store`; where the traits leave a point open (e.g. whether
//! `remove_members` on a missing group is `Ok` or `NotFound`), either
//! answer is accepted.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use im_core::error::StoreError;
use im_core::ids::{ConversationId, DedupKey, Seq};
use im_core::store::{
    AppendRequest, ConversationState, ConversationStatesRequest, CursorUpdate, InboxEntry,
    InboxPage, InboxRequest, NewMessage, RangePage, RangeRequest, Store, StoreExt, StoreResult,
    StoredMessage,
};

use crate::ConformanceConfig;
use crate::fixtures::{
    channel, dedup_key, device, direct, group, message, new_message, room, user, users,
};

/// Unwraps a store result, failing the check with `what` on an error.
pub(crate) fn ok<T>(r: StoreResult<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e} ({e:?})"),
    }
}

pub(crate) async fn append(store: &dyn Store, messages: Vec<NewMessage>) -> StoreResult<()> {
    store.append(AppendRequest { messages }).await
}

pub(crate) async fn range(
    store: &dyn Store,
    conversation: &ConversationId,
    after_seq: Seq,
    until_seq: Option<Seq>,
    limit: usize,
    newest: bool,
) -> RangePage {
    ok(
        store
            .read_range(RangeRequest {
                conversation: conversation.clone(),
                after_seq,
                until_seq,
                limit,
                newest,
            })
            .await,
        "read_range",
    )
}

pub(crate) async fn inbox(
    store: &dyn Store,
    u: &str,
    after_version: u64,
    limit: usize,
) -> InboxPage {
    ok(
        store
            .read_inbox(InboxRequest {
                user: user(u),
                after_version,
                limit,
            })
            .await,
        "read_inbox",
    )
}

pub(crate) async fn states(
    store: &dyn Store,
    u: &str,
    only: Option<Vec<ConversationId>>,
    unread_cap: u32,
    limit: usize,
) -> Vec<ConversationState> {
    ok(
        store
            .conversation_states(ConversationStatesRequest {
                user: user(u),
                only,
                unread_cap,
                limit,
            })
            .await,
        "conversation_states",
    )
}

pub(crate) async fn head(store: &dyn Store, c: &ConversationId) -> Seq {
    // One item asked, one answered: `head_seq` reports any other count as
    // an error, which fails the check.
    ok(store.head_seq(c).await, &format!("head_seqs of {c}"))
}

pub(crate) fn seqs(messages: &[StoredMessage]) -> Vec<Seq> {
    messages.iter().map(|m| m.seq).collect()
}

fn entries(page: &InboxPage) -> Vec<(u64, ConversationId, Seq)> {
    page.entries
        .iter()
        .map(|e| (e.version, e.conversation.clone(), e.seq))
        .collect()
}

/// True if the configured store retains at least `inbox` entries per user
/// and `timeline` messages per conversation; otherwise says the check is
/// skipped. Checks that need history skip on stores configured too small.
pub(crate) fn retains(cfg: &ConformanceConfig, check: &str, inbox: usize, timeline: usize) -> bool {
    let ok = cfg.inbox_capacity.is_none_or(|c| c >= inbox)
        && cfg.timeline_capacity.is_none_or(|c| c >= timeline);
    if !ok {
        eprintln!(
            "im-testkit: skipping {check}: it needs an inbox capacity of at least {inbox} \
             and a timeline capacity of at least {timeline} (configured: {cfg:?})"
        );
    }
    ok
}

/// Asserts an append was refused with `SeqConflict` naming `conversation`.
fn expect_seq_conflict(r: StoreResult<()>, conversation: &ConversationId, what: &str) {
    match r {
        Err(StoreError::SeqConflict {
            conversation: c, ..
        }) => assert_eq!(
            &c, conversation,
            "{what}: SeqConflict must name the conversation whose seq does not continue its head"
        ),
        Err(e) => panic!("{what}: expected SeqConflict for {conversation}, got {e} ({e:?})"),
        Ok(()) => panic!("{what}: expected SeqConflict for {conversation}, the append succeeded"),
    }
}

/// Asserts an append was refused with `Duplicate` listing exactly `keys`, once each.
fn expect_duplicates(r: StoreResult<()>, keys: &[DedupKey], what: &str) {
    match r {
        Err(StoreError::Duplicate(listed)) => {
            let distinct: HashSet<&DedupKey> = listed.iter().collect();
            assert_eq!(
                distinct.len(),
                listed.len(),
                "{what}: Duplicate must list each key once, got {listed:?}"
            );
            let want: HashSet<&DedupKey> = keys.iter().collect();
            assert_eq!(
                distinct, want,
                "{what}: Duplicate must list exactly the duplicate keys"
            );
        }
        Err(e) => panic!("{what}: expected Duplicate({keys:?}), got {e} ({e:?})"),
        Ok(()) => panic!("{what}: expected Duplicate({keys:?}), the append succeeded"),
    }
}

/// One named check of the suite.
type CheckFn = fn(Arc<dyn Store>, ConformanceConfig) -> futures::future::BoxFuture<'static, ()>;

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        /// Names of every check [`conformance`] runs, in order.
        pub const CHECK_NAMES: &[&str] = &[$(stringify!($name)),*];

        fn all_checks() -> Vec<(&'static str, CheckFn)> {
            vec![$((stringify!($name), |s, c| Box::pin($name(s, c)) as _)),*]
        }
    };
}

checks!(
    append_and_read_back,
    seq_must_continue_the_head,
    duplicates_are_refused_all_or_nothing,
    inbox_versions_are_continuous,
    inbox_retention,
    timeline_retention,
    retained_history_is_contiguous,
    range_reads,
    get_messages_follows_request_order,
    cursors_only_move_forward,
    unread_counts_messages_from_others,
    conversation_list,
    membership,
    concurrent_appends_keep_inboxes_continuous,
    concurrent_writers_of_one_conversation,
    content_types_are_kept,
    recall_leaves_a_tombstone,
    edits_count_up_and_refuse_races,
    events_are_all_or_nothing,
    read_cursors_follow_reads,
    read_counts_count_other_members,
    conversation_settings,
    user_blocks,
    roles_are_kept_per_member,
    members_are_muted_and_unmuted,
);

mod events;
mod prefs;
mod receipts;
mod roles;
pub use events::{
    content_types_are_kept, edits_count_up_and_refuse_races, events_are_all_or_nothing,
    recall_leaves_a_tombstone,
};
pub use prefs::{conversation_settings, user_blocks};
pub use receipts::{read_counts_count_other_members, read_cursors_follow_reads};
pub use roles::{members_are_muted_and_unmuted, roles_are_kept_per_member};

/// Runs every check of the suite, each against a fresh store from `factory`,
/// and panics listing every check that failed (name and message).
///
/// `factory` must return an empty store each time it is called, configured as
/// `cfg` says. Call it from an async test:
///
/// ```no_run
/// # use std::sync::Arc;
/// # use im_core::Store;
/// # async fn my_store() -> Arc<dyn Store> { unimplemented!() }
/// # async fn run() {
/// im_testkit::store::conformance(|| async { my_store().await }, Default::default()).await;
/// # }
/// ```
pub async fn conformance<F, Fut>(factory: F, cfg: ConformanceConfig)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let mut failures = Vec::new();
    for (name, check) in all_checks() {
        let store = factory().await;
        let outcome = AssertUnwindSafe(check(store, cfg.clone()))
            .catch_unwind()
            .await;
        if let Err(panic) = outcome {
            failures.push(format!("  {name}: {}", shorten(panic_message(&*panic))));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} store conformance checks failed:\n{}",
        failures.len(),
        CHECK_NAMES.len(),
        failures.join("\n")
    );
}

/// Cuts a long failure message (e.g. two long vectors) to a readable size.
fn shorten(mut s: String) -> String {
    const MAX: usize = 2_000;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" …(cut)");
    }
    s
}

/// Text of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "non-string panic".to_owned()
    }
}

/// An append is readable back exactly: heads, ranges, lookups; a second
/// append continues the sequence; an empty append is a no-op.
pub async fn append_and_read_back(store: Arc<dyn Store>, cfg: ConformanceConfig) {
    if !retains(&cfg, "append_and_read_back", 0, 4) {
        return;
    }
    let s = &*store;
    let d = direct("alice", "bob");
    let g = group("team");
    let batch = vec![
        new_message(message(&d, 1, "alice", Some("a1")), &["alice", "bob"]),
        new_message(message(&g, 1, "carol", Some("c1")), &["alice", "carol"]),
        new_message(message(&d, 2, "bob", Some("b1")), &["alice", "bob"]),
        new_message(message(&d, 3, "alice", None), &["alice", "bob"]),
        new_message(message(&g, 2, "alice", Some("a2")), &[]),
    ];
    let stored: Vec<StoredMessage> = batch.iter().map(|m| m.message.clone()).collect();
    ok(append(s, batch).await, "append of a fresh batch");
    ok(append(s, Vec::new()).await, "empty append");

    let heads = ok(
        s.head_seqs(&[g.clone(), room("nowhere"), d.clone()]).await,
        "head_seqs",
    );
    assert_eq!(
        heads,
        [2, 0, 3],
        "head_seqs in request order, 0 for unknown"
    );

    let page = range(s, &d, 0, None, 100, false).await;
    let want: Vec<StoredMessage> = stored
        .iter()
        .filter(|m| m.conversation == d)
        .cloned()
        .collect();
    assert_eq!(
        page.messages, want,
        "read_range returns the messages exactly as appended"
    );
    assert_eq!((page.head_seq, page.first_retained_seq), (3, 1));
    let page = range(s, &g, 0, None, 100, false).await;
    assert_eq!(seqs(&page.messages), [1, 2]);
    assert_eq!(page.messages[1], stored[4]);

    let next = message(&d, 4, "bob", Some("b2"));
    ok(
        append(s, vec![new_message(next.clone(), &["alice", "bob"])]).await,
        "append continuing the head",
    );
    let page = range(s, &d, 3, None, 100, false).await;
    assert_eq!(page.messages, [next], "second append continues at head + 1");
    assert_eq!(head(s, &d).await, 4);
}

/// An append whose seq does not continue the conversation's head is refused
/// with `SeqConflict`, and nothing of its batch is written.
pub async fn seq_must_continue_the_head(store: Arc<dyn Store>, cfg: ConformanceConfig) {
    if !retains(&cfg, "seq_must_continue_the_head", 5, 3) {
        return;
    }
    let s = &*store;
    let a = group("a");
    let b = group("b");
    ok(
        append(
            s,
            vec![
                new_message(message(&a, 1, "u", Some("1")), &["u"]),
                new_message(message(&a, 2, "u", Some("2")), &["u"]),
                new_message(message(&b, 1, "u", Some("3")), &["u"]),
            ],
        )
        .await,
        "first append",
    );
    let before = inbox(s, "u", 0, 100).await;

    expect_seq_conflict(
        append(s, vec![new_message(message(&a, 4, "u", Some("4")), &["u"])]).await,
        &a,
        "a gap (head 2, seq 4)",
    );
    expect_seq_conflict(
        append(s, vec![new_message(message(&a, 2, "u", Some("5")), &["u"])]).await,
        &a,
        "rewriting a committed seq",
    );
    expect_seq_conflict(
        append(
            s,
            vec![new_message(
                message(&group("new"), 2, "u", Some("6")),
                &["u"],
            )],
        )
        .await,
        &group("new"),
        "a new conversation starting at seq 2",
    );
    expect_seq_conflict(
        append(
            s,
            vec![
                new_message(message(&a, 3, "u", Some("7")), &["u", "v"]),
                new_message(message(&b, 2, "u", Some("8")), &["u", "v"]),
                new_message(message(&b, 4, "u", Some("9")), &["u", "v"]),
            ],
        )
        .await,
        &b,
        "a gap inside the batch (b: 2 then 4)",
    );

    // Nothing of any refused batch was written.
    assert_eq!(
        ok(
            s.head_seqs(&[a.clone(), b.clone(), group("new")]).await,
            "head_seqs"
        ),
        [2, 1, 0],
        "a refused append must not move any head"
    );
    assert_eq!(
        seqs(&range(s, &a, 0, None, 100, false).await.messages),
        [1, 2]
    );
    assert_eq!(seqs(&range(s, &b, 0, None, 100, false).await.messages), [1]);
    let after = inbox(s, "u", 0, 100).await;
    assert_eq!(
        entries(&after),
        entries(&before),
        "a refused append must not write inbox entries"
    );
    assert_eq!(ok(s.inbox_head(&user("v")).await, "inbox_head"), 0);
    let found = ok(
        s.find_by_dedup_keys(&[dedup_key("u", "dev", "7"), dedup_key("u", "dev", "8")])
            .await,
        "find_by_dedup_keys",
    );
    assert_eq!(
        found,
        [None, None],
        "keys of a refused append are not committed"
    );
    // The keys of refused appends are free to use.
    ok(
        append(
            s,
            vec![
                new_message(message(&a, 3, "u", Some("7")), &["u"]),
                new_message(message(&b, 2, "u", Some("8")), &["u"]),
            ],
        )
        .await,
        "append with the keys and seqs of a refused one",
    );
    assert_eq!(inbox(s, "u", 0, 100).await.head_version, 5);
}

/// A batch with a committed or repeated idempotency key is refused as a
/// whole, listing the duplicate keys; the originals stay findable.
pub async fn duplicates_are_refused_all_or_nothing(store: Arc<dyn Store>, cfg: ConformanceConfig) {
    if !retains(&cfg, "duplicates_are_refused_all_or_nothing", 2, 6) {
        return;
    }
    let s = &*store;
    let d = direct("alice", "bob");
    let g = group("g");
    let m1 = message(&d, 1, "alice", Some("k1"));
    let m2 = message(&d, 2, "alice", Some("k2"));
    ok(
        append(
            s,
            vec![
                new_message(m1.clone(), &["alice", "bob"]),
                new_message(m2.clone(), &["alice", "bob"]),
            ],
        )
        .await,
        "first append",
    );
    let (k1, k2, k3) = (
        dedup_key("alice", "dev", "k1"),
        dedup_key("alice", "dev", "k2"),
        dedup_key("alice", "dev", "k3"),
    );

    // Fresh k3 plus committed k1 and k2 (one of them in another conversation).
    expect_duplicates(
        append(
            s,
            vec![
                new_message(message(&d, 3, "alice", Some("k3")), &["alice", "bob"]),
                new_message(message(&d, 4, "alice", Some("k2")), &["alice", "bob"]),
                new_message(message(&g, 1, "alice", Some("k1")), &["alice"]),
            ],
        )
        .await,
        &[k1.clone(), k2.clone()],
        "batch with two committed keys",
    );
    // A key repeated inside one batch.
    expect_duplicates(
        append(
            s,
            vec![
                new_message(message(&g, 1, "alice", Some("k6")), &["alice"]),
                new_message(message(&g, 2, "alice", Some("k6")), &["alice"]),
            ],
        )
        .await,
        &[dedup_key("alice", "dev", "k6")],
        "batch repeating a key",
    );
    // Committed and repeated at once: listed once.
    expect_duplicates(
        append(
            s,
            vec![
                new_message(message(&g, 1, "alice", Some("k1")), &["alice"]),
                new_message(message(&g, 2, "alice", Some("k1")), &["alice"]),
            ],
        )
        .await,
        std::slice::from_ref(&k1),
        "batch repeating a committed key",
    );

    // Nothing of the refused batches was written.
    assert_eq!(
        ok(s.head_seqs(&[d.clone(), g.clone()]).await, "head_seqs"),
        [2, 0],
        "a refused append must not write messages"
    );
    for u in ["alice", "bob"] {
        assert_eq!(
            inbox(s, u, 0, 100).await.head_version,
            2,
            "a refused append must not write {u}'s inbox"
        );
    }
    let found = ok(
        s.find_by_dedup_keys(&[
            k2.clone(),
            k3.clone(),
            k1.clone(),
            dedup_key("alice", "dev", "k6"),
        ])
        .await,
        "find_by_dedup_keys",
    );
    assert_eq!(
        found,
        [Some(m2), None, Some(m1.clone()), None],
        "find_by_dedup_keys returns the originals in request order"
    );
    assert_eq!(
        ok(
            s.find_by_dedup_key(&k1).await,
            "find_by_dedup_keys of one key"
        ),
        Some(m1),
        "one key asked, its original answered"
    );
    assert_eq!(
        ok(
            s.find_by_dedup_key(&k3).await,
            "find_by_dedup_keys of one key"
        ),
        None
    );

    // The same client id from another device or user is another message;
    // messages without a client id never collide.
    let other_device = StoredMessage {
        sender_device: device("tablet"),
        ..message(&d, 3, "alice", Some("k1"))
    };
    ok(
        append(
            s,
            vec![
                new_message(other_device, &["alice", "bob"]),
                new_message(message(&d, 4, "bob", Some("k1")), &["alice", "bob"]),
                new_message(message(&d, 5, "bob", None), &["alice", "bob"]),
                new_message(message(&d, 6, "bob", None), &["alice", "bob"]),
            ],
        )
        .await,
        "same client id from another device or user",
    );
    assert_eq!(head(s, &d).await, 6);
}

/// Inbox versions go +1 per entry for each user, across conversations and
/// batches; paging by version returns the right slices.
pub async fn inbox_versions_are_continuous(store: Arc<dyn Store>, cfg: ConformanceConfig) {
    let s = &*store;
    let ab = direct("alice", "bob");
    let ac = direct("alice", "carol");
    let g = group("g");
    let r = room("r");
    let mut expected: HashMap<&str, Vec<(ConversationId, Seq)>> = HashMap::new();
    type Batch<'a> = Vec<(ConversationId, Seq, &'a str, Vec<&'a str>)>;
    let batches: Vec<Batch<'_>> = vec![
        vec![
            (ab.clone(), 1, "alice", vec!["alice", "bob"]),
            (g.clone(), 1, "carol", vec!["alice", "bob", "carol"]),
        ],
        vec![(r.clone(), 1, "alice", vec![])],
        vec![
            (ac.clone(), 1, "carol", vec!["carol", "alice"]),
            (g.clone(), 2, "bob", vec!["carol", "bob", "alice"]),
            (ab.clone(), 2, "bob", vec!["bob", "alice"]),
            (g.clone(), 3, "alice", vec!["alice", "bob", "carol"]),
        ],
        vec![(ab.clone(), 3, "alice", vec!["alice", "bob"])],
    ];
    for (i, batch) in batches.into_iter().enumerate() {
        let mut msgs = Vec::new();
        for (c, seq, sender, recipients) in batch {
            for u in &recipients {
                expected.entry(u).or_default().push((c.clone(), seq));
            }
            msgs.push(new_message(message(&c, seq, sender, None), &recipients));
        }
        ok(append(s, msgs).await, &format!("append of batch {i}"));
    }
    for (u, want) in &expected {
        let n = want.len() as u64;
        assert_eq!(
            ok(s.inbox_head(&user(u)).await, "inbox_head"),
            n,
            "{u}'s inbox head"
        );
        let keep = cfg.inbox_capacity.map_or(want.len(), |c| c.min(want.len()));
        let first = n - keep as u64 + 1;
        let page = inbox(s, u, 0, 1000).await;
        let want_entries: Vec<(u64, ConversationId, Seq)> = want
            .iter()
            .enumerate()
            .map(|(i, (c, seq))| (i as u64 + 1, c.clone(), *seq))
            .filter(|(v, _, _)| *v >= first)
            .collect();
        assert_eq!(
            entries(&page),
            want_entries,
            "{u}'s inbox: versions 1, 2, 3, … in commit order, one per message"
        );
        assert_eq!(page.head_version, n, "{u}'s head_version");
        assert_eq!(
            page.first_retained_version, first,
            "{u}'s first_retained_version"
        );
        // Paging.
        if keep >= 4 {
            let page = inbox(s, u, first, 2).await;
            assert_eq!(
                entries(&page),
                want_entries[1..3].to_vec(),
                "{u}'s inbox after version {first}, limit 2"
            );
            assert_eq!(page.head_version, n);
        }
        let page = inbox(s, u, n, 10).await;
        assert!(page.entries.is_empty(), "nothing after the head");
    }
    let page = inbox(s, "nobody", 0, 10).await;
    assert!(page.entries.is_empty());
    assert_eq!(
        (page.head_version, page.first_retained_version),
        (0, 1),
        "an unknown user's inbox: head 0, first retained 1"
    );
    assert_eq!(ok(s.inbox_head(&user("nobody")).await, "inbox_head"), 0);
}

/// With an inbox capacity, only the newest `capacity` entries are kept and
/// `first_retained_version` says where they start. Skipped without one.
pub async fn inbox_retention(store: Arc<dyn Store>, cfg: ConformanceConfig) {
    let Some(cap) = cfg.inbox_capacity else {
        return;
    };
    let s = &*store;
    let c = group("busy");
    let total = cap + 3;
    let mut seq = 0;
    while seq < total {
        let n = (total - seq).min(500);
        let msgs = (0..n)
            .map(|i| {
                let q = (seq + i + 1) as Seq;
                new_message(message(&c, q, "sender", None), &["u"])
            })
            .collect();
        ok(append(s, msgs).await, "append");
        seq += n;
    }
    let head = total as u64;
    let first = head - cap as u64 + 1;
    let page = inbox(s, "u", 0, total + 10).await;
    assert_eq!(
        page.head_version, head,
        "head_version counts dropped entries"
    );
    assert_eq!(
        page.first_retained_version, first,
        "first_retained_version = head - capacity + 1"
    );
    let versions: Vec<u64> = page.entries.iter().map(|e| e.version).collect();
    let want: Vec<u64> = (first..=head).collect();
    assert_eq!(
        versions, want,
        "exactly the newest {cap} entries are retained"
    );
    assert!(
        page.entries.iter().all(|e| e.seq == e.version),
        "retained entries point at their messages"
    );
    let page = inbox(s, "u", first + 1, 2).await;
    let versions: Vec<u64> = page.entries.iter().map(|e| e.version).collect();
    let want: Vec<u64> = (first + 2..=head).take(2).collect();
    assert_eq!(versions, want, "paging inside the retained window");
    // Versions keep counting after retention kicked in.
    ok(
        append(
            s,
            vec![new_message(message(&c, head + 1, "sender", None), &["u"])],
        )
        .await,
        "append after retention",
    );
    let page = inbox(s, "u", head, 10).await;
    let want = if cap > 0 {
        vec![(head + 1, c.clone(), head + 1)]
    } else {
        Vec::new()
    };
    assert_eq!(entries(&page), want, "the entry after retention kicked in");
    assert_eq!(page.head_version, head + 1);
}

/// With a timeline capacity, only the newest `capacity` messages of a
/// conversation are kept; reads say where history starts. Skipped without one.
pub async fn timeline_retention(store: Arc<dyn Store>, cfg: ConformanceConfig) {
    let Some(cap) = cfg.timeline_capacity else {
        return;
    };
    let s = &*store;
    let c = direct("alice", "bob");
    let total = cap + 2;
    let all: Vec<StoredMessage> = (1..=total as Seq)
        .map(|q| {
            message(
                &c,
                q,
                if q % 2 == 0 { "alice" } else { "bob" },
                Some(&format!("k{q}")),
            )
        })
        .collect();
    for chunk in all.chunks(500) {
        ok(
            append(
                s,
                chunk
                    .iter()
                    .map(|m| new_message(m.clone(), &["alice", "bob"]))
                    .collect(),
            )
            .await,
            "append",
        );
    }
    let head = total as Seq;
    let first = head - cap as Seq + 1;
    let page = range(s, &c, 0, None, total + 10, false).await;
    assert_eq!(page.head_seq, head);
    assert_eq!(
        page.first_retained_seq, first,
        "first_retained_seq = head - capacity + 1"
    );
    assert_eq!(
        page.messages,
        all[(first - 1) as usize..].to_vec(),
        "exactly the newest {cap} messages are retained"
    );
    let got = ok(
        s.get_messages(&[(c.clone(), 1), (c.clone(), head)]).await,
        "get_messages",
    );
    let want = if cap > 0 {
        all[(head - 1) as usize..].to_vec()
    } else {
        Vec::new()
    };
    assert_eq!(got, want, "dropped messages are left out of get_messages");
    if cap > 0 {
        let states = states(s, "alice", Some(vec![c.clone()]), 1_000_000, 10).await;
        assert_eq!(states.len(), 1);
        assert_eq!(states[0].last_message.as_ref(), all.last());
        let from_bob = all[(first - 1) as usize..]
            .iter()
            .filter(|m| m.sender == user("bob"))
            .count() as u32;
        assert_eq!(
            states[0].unread, from_bob,
            "unread counts retained messages"
        );
    }
}

/// However a store bounds history (a capacity per conversation, a byte
/// budget across conversations, or nothing), each conversation keeps a
/// contiguous run of seqs ending at its head, `first_retained_seq` says
/// where it starts, and lookups by seq or by idempotency key find exactly
/// the retained messages. Writes three conversations of 48 messages of
/// 4 KiB each (576 KiB), interleaved, checking along the way: a store with a
/// byte budget below that shows it drops history honestly.
pub async fn retained_history_is_contiguous(store: Arc<dyn Store>, cfg: ConformanceConfig) {
    const ROUNDS: Seq = 48;
    const BODY: usize = 4096;
    let s = &*store;
    let convs = [group("busy"), direct("alice", "bob"), group("quiet")];
    let mut written: Vec<Vec<StoredMessage>> = vec![Vec::new(); convs.len()];
    for q in 1..=ROUNDS {
        let batch: Vec<NewMessage> = convs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut m = message(c, q, "alice", Some(&format!("c{i}-{q}")));
                let mut body = m.body.to_vec();
                body.resize(BODY, b'.');
                m.body = body.into();
                written[i].push(m.clone());
                new_message(m, &["alice", "reader"])
            })
            .collect();
        ok(append(s, batch).await, "append");
        if q % 16 == 0 {
            for (c, all) in convs.iter().zip(&written) {
                check_retained_suffix(s, &cfg, c, all).await;
            }
        }
    }
}

/// `conversation`, written as `all`, retains a contiguous suffix of it that
/// every read agrees on.
async fn check_retained_suffix(
    s: &dyn Store,
    cfg: &ConformanceConfig,
    conversation: &ConversationId,
    all: &[StoredMessage],
) {
    let head = all.len() as Seq;
    let page = range(s, conversation, 0, None, all.len() + 10, false).await;
    assert_eq!(
        page.head_seq, head,
        "{conversation}: head counts dropped messages"
    );
    let first = page.first_retained_seq;
    assert!(
        (1..=head + 1).contains(&first),
        "{conversation}: first_retained_seq {first} outside 1..={}",
        head + 1
    );
    if let Some(cap) = cfg.timeline_capacity {
        assert!(
            head + 1 - first <= cap as Seq,
            "{conversation}: {} messages retained, capacity {cap}",
            head + 1 - first
        );
    }
    let retained = &all[(first - 1) as usize..];
    assert_eq!(
        page.messages, retained,
        "{conversation}: a read from 0 returns exactly seqs first_retained_seq ({first})..=head ({head})"
    );
    let tail = range(s, conversation, 0, None, 5, true).await;
    assert_eq!(
        tail.first_retained_seq, first,
        "{conversation}: a newest-first read agrees on first_retained_seq"
    );
    assert_eq!(
        tail.messages,
        retained[retained.len().saturating_sub(5)..],
        "{conversation}: the newest retained messages"
    );
    let refs: Vec<(ConversationId, Seq)> = (1..=head).map(|q| (conversation.clone(), q)).collect();
    let got = ok(s.get_messages(&refs).await, "get_messages");
    assert_eq!(
        got, retained,
        "{conversation}: get_messages finds exactly the retained messages"
    );
    let keys: Vec<DedupKey> = all.iter().filter_map(StoredMessage::dedup_key).collect();
    let found = ok(s.find_by_dedup_keys(&keys).await, "find_by_dedup_keys");
    for (m, f) in all.iter().zip(&found) {
        let want = (m.seq >= first).then_some(m);
        assert_eq!(
            f.as_ref(),
            want,
            "{conversation}: find_by_dedup_keys of seq {} (first retained {first})",
            m.seq
        );
    }
}

/// Range reads: bounds, limits, `newest`, the head, unknown conversations.
pub async fn range_reads(store: Arc<dyn Store>, cfg: ConformanceConfig) {
    let s = &*store;
    let c = group("g");
    if !retains(&cfg, "range_reads", 0, 10) {
        return;
    }
    let n: Seq = 10;
    let all: Vec<StoredMessage> = (1..=n).map(|q| message(&c, q, "u", None)).collect();
    ok(
        append(s, all.iter().map(|m| new_message(m.clone(), &[])).collect()).await,
        "append",
    );
    type Case<'a> = (Seq, Option<Seq>, usize, bool, &'a [Seq]);
    let cases: &[Case<'_>] = &[
        (0, None, 100, false, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
        (3, Some(7), 100, false, &[4, 5, 6, 7]),
        (3, Some(7), 2, false, &[4, 5]),
        (3, Some(7), 2, true, &[6, 7]),
        (0, None, 3, true, &[8, 9, 10]),
        (0, None, 3, false, &[1, 2, 3]),
        (8, Some(100), 100, false, &[9, 10]),
        (10, None, 100, false, &[]),
        (12, None, 100, false, &[]),
        (5, Some(3), 100, false, &[]),
        (5, Some(5), 100, false, &[]),
        (0, None, 0, false, &[]),
        (0, Some(0), 10, true, &[]),
        (9, None, 1, true, &[10]),
    ];
    for &(after, until, limit, newest, want) in cases {
        let page = range(s, &c, after, until, limit, newest).await;
        let what =
            format!("read_range(after {after}, until {until:?}, limit {limit}, newest {newest})");
        assert_eq!(seqs(&page.messages), want, "{what}");
        let expected: Vec<StoredMessage> = want
            .iter()
            .map(|&q| all[(q - 1) as usize].clone())
            .collect();
        assert_eq!(page.messages, expected, "{what}: message contents");
        assert_eq!(page.head_seq, n, "{what}: head_seq");
        assert_eq!(page.first_retained_seq, 1, "{what}: first_retained_seq");
    }
    let page = range(s, &room("unknown"), 0, None, 10, false).await;
    assert!(page.messages.is_empty());
    assert_eq!(
        (page.head_seq, page.first_retained_seq),
        (0, 1),
        "an unknown conversation: empty page, head 0, first retained 1"
    );
}

/// `get_messages` answers in request order, leaving out missing messages.
pub async fn get_messages_follows_request_order(store: Arc<dyn Store>, cfg: ConformanceConfig) {
    if !retains(&cfg, "get_messages_follows_request_order", 0, 3) {
        return;
    }
    let s = &*store;
    let a = group("a");
    let b = direct("x", "y");
    let ma: Vec<StoredMessage> = (1..=3).map(|q| message(&a, q, "x", None)).collect();
    let mb: Vec<StoredMessage> = (1..=2).map(|q| message(&b, q, "y", None)).collect();
    ok(
        append(
            s,
            ma.iter()
                .chain(&mb)
                .map(|m| new_message(m.clone(), &[]))
                .collect(),
        )
        .await,
        "append",
    );
    let got = ok(
        s.get_messages(&[
            (b.clone(), 2),
            (a.clone(), 3),
            (a.clone(), 99),
            (room("nowhere"), 1),
            (a.clone(), 1),
            (b.clone(), 1),
        ])
        .await,
        "get_messages",
    );
    assert_eq!(
        got,
        [mb[1].clone(), ma[2].clone(), ma[0].clone(), mb[0].clone()],
        "request order, missing ones left out"
    );
    assert!(ok(s.get_messages(&[]).await, "get_messages of nothing").is_empty());
}

/// Cursors move only forward; a read cursor raises the delivered cursor.
pub async fn cursors_only_move_forward(store: Arc<dyn Store>, _cfg: ConformanceConfig) {
    let s = &*store;
    let c = direct("alice", "bob");
    ok(
        append(
            s,
            (1..=10)
                .map(|q| new_message(message(&c, q, "bob", None), &["alice", "bob"]))
                .collect(),
        )
        .await,
        "append",
    );
    let cursor = |u: &str, delivered: Option<Seq>, read: Option<Seq>| CursorUpdate {
        user: user(u),
        conversation: c.clone(),
        delivered,
        read,
    };
    let steps: Vec<(Vec<CursorUpdate>, Seq, Seq)> = vec![
        (vec![cursor("alice", Some(3), None)], 3, 0),
        (vec![cursor("alice", Some(2), None)], 3, 0),
        (vec![cursor("alice", None, Some(2))], 3, 2),
        (vec![cursor("alice", None, Some(5))], 5, 5),
        (vec![cursor("alice", Some(4), Some(4))], 5, 5),
        (
            vec![
                cursor("alice", Some(8), None),
                cursor("alice", None, Some(6)),
                cursor("alice", None, Some(1)),
            ],
            8,
            6,
        ),
        (vec![cursor("alice", None, Some(10))], 10, 10),
    ];
    for (i, (updates, delivered, read)) in steps.into_iter().enumerate() {
        ok(s.update_cursors(updates).await, "update_cursors");
        let st = states(s, "alice", Some(vec![c.clone()]), 100, 10).await;
        assert_eq!(st.len(), 1, "one state per requested conversation");
        assert_eq!(
            (st[0].delivered_seq, st[0].read_seq),
            (delivered, read),
            "step {i}: (delivered, read)"
        );
    }
    let st = states(s, "bob", Some(vec![c.clone()]), 100, 10).await;
    assert_eq!(
        (st[0].delivered_seq, st[0].read_seq),
        (0, 0),
        "cursors are per user"
    );
    ok(s.update_cursors(Vec::new()).await, "empty update_cursors");
}

/// Unread = messages from others after the read cursor, capped; heads and
/// last messages are reported.
pub async fn unread_counts_messages_from_others(store: Arc<dyn Store>, cfg: ConformanceConfig) {
    let s = &*store;
    if !retains(&cfg, "unread_counts_messages_from_others", 0, 40) {
        return;
    }
    let c = direct("alice", "bob");
    let senders = ["alice", "bob", "bob", "alice", "bob"];
    let msgs: Vec<StoredMessage> = senders
        .iter()
        .enumerate()
        .map(|(i, u)| message(&c, i as Seq + 1, u, None))
        .collect();
    ok(
        append(
            s,
            msgs.iter()
                .map(|m| new_message(m.clone(), &["alice", "bob"]))
                .collect(),
        )
        .await,
        "append",
    );
    let one = |st: Vec<ConversationState>| -> ConversationState {
        assert_eq!(st.len(), 1, "one state per requested conversation");
        st.into_iter().next().expect("one state")
    };
    let a = one(states(s, "alice", Some(vec![c.clone()]), 100, 10).await);
    assert_eq!(
        a.unread, 3,
        "alice has 3 unread from bob (her own don't count)"
    );
    assert_eq!(a.head_seq, 5);
    assert_eq!(
        a.last_message.as_ref(),
        msgs.last(),
        "last_message is the newest"
    );
    let b = one(states(s, "bob", Some(vec![c.clone()]), 100, 10).await);
    assert_eq!(b.unread, 2, "bob has 2 unread from alice");
    assert_eq!(
        ok(
            s.conversation_state(&user("bob"), &c, 100).await,
            "conversation_states of one conversation with limit 1"
        ),
        Some(b),
        "the state of one conversation asked alone"
    );
    ok(
        s.update_cursors(vec![CursorUpdate {
            user: user("alice"),
            conversation: c.clone(),
            delivered: None,
            read: Some(3),
        }])
        .await,
        "update_cursors",
    );
    let a = one(states(s, "alice", Some(vec![c.clone()]), 100, 10).await);
    assert_eq!(
        a.unread, 1,
        "after reading to 3 only seq 5 from bob is unread"
    );
    let a = one(states(s, "alice", Some(vec![c.clone()]), 0, 10).await);
    assert_eq!(a.unread, 0, "cap 0 counts nothing");

    // The cap.
    let g = group("loud");
    ok(
        append(
            s,
            (1..=30)
                .map(|q| {
                    new_message(
                        message(&g, q, if q == 30 { "alice" } else { "bob" }, None),
                        &[],
                    )
                })
                .collect(),
        )
        .await,
        "append",
    );
    let st = states(s, "alice", Some(vec![g.clone(), c.clone()]), 10, 10).await;
    assert_eq!(st.len(), 2);
    assert_eq!(
        (st[0].conversation.clone(), st[0].unread),
        (g.clone(), 10),
        "unread is capped at unread_cap, in `only` order"
    );
    assert_eq!(st[1].conversation, c);
    let st = states(s, "alice", Some(vec![g.clone()]), 100, 10).await;
    assert_eq!(st[0].unread, 29);
    let st = states(s, "alice", Some(vec![g.clone(), c.clone()]), 100, 1).await;
    assert_eq!(st.len(), 1, "`only` lists are cut to limit");
    assert_eq!(st[0].conversation, g);
}

/// The conversation list: direct conversations for both participants,
/// groups for members, rooms never; most recently active first.
pub async fn conversation_list(store: Arc<dyn Store>, cfg: ConformanceConfig) {
    if !retains(&cfg, "conversation_list", 0, 2) {
        return;
    }
    let s = &*store;
    let ab = direct("alice", "bob");
    let cd = direct("carol", "dave");
    let g = group("g");
    let quiet = group("quiet");
    let r = room("r");
    ok(
        s.create_group(&channel("g"), &users(&["alice", "carol"]))
            .await,
        "create_group",
    );
    ok(
        s.create_group(&channel("quiet"), &users(&["alice"])).await,
        "create_group",
    );
    let order = [
        (ab.clone(), 1, "alice"),
        (g.clone(), 1, "carol"),
        (r.clone(), 1, "alice"),
        (cd.clone(), 1, "dave"),
    ];
    for (c, seq, sender) in &order {
        let recipients: Vec<&str> = match c {
            ConversationId::Direct(pair) => {
                let (a, b) = pair.users();
                vec![a.as_str(), b.as_str()]
            }
            ConversationId::Group(_) => vec!["alice", "carol"],
            ConversationId::Room(_) => vec![],
        };
        ok(
            append(
                s,
                vec![new_message(message(c, *seq, sender, None), &recipients)],
            )
            .await,
            "append",
        );
    }
    let listed = |st: &[ConversationState]| -> Vec<ConversationId> {
        st.iter().map(|x| x.conversation.clone()).collect()
    };
    let a = states(s, "alice", None, 100, 100).await;
    assert_eq!(
        listed(&a),
        [g.clone(), ab.clone(), quiet.clone()],
        "alice: groups and directs, most recent first, never rooms; a quiet group last"
    );
    assert_eq!(a[0].unread, 1);
    assert_eq!(a[1].unread, 0);
    assert_eq!(a[2].head_seq, 0);
    assert_eq!(a[2].last_message, None);
    assert_eq!(
        listed(&states(s, "bob", None, 100, 100).await),
        std::slice::from_ref(&ab),
        "bob sees the direct conversation alice started"
    );
    assert_eq!(
        listed(&states(s, "carol", None, 100, 100).await),
        [cd.clone(), g.clone()]
    );
    assert_eq!(
        listed(&states(s, "dave", None, 100, 100).await),
        std::slice::from_ref(&cd)
    );
    assert!(states(s, "nobody", None, 100, 100).await.is_empty());

    // New activity moves a conversation to the front; limit cuts the tail.
    ok(
        append(
            s,
            vec![new_message(message(&ab, 2, "bob", None), &["alice", "bob"])],
        )
        .await,
        "append",
    );
    assert_eq!(
        listed(&states(s, "alice", None, 100, 100).await),
        [ab.clone(), g.clone(), quiet.clone()]
    );
    assert_eq!(
        listed(&states(s, "alice", None, 100, 1).await),
        std::slice::from_ref(&ab),
        "limit keeps the most recent"
    );
    // Leaving a group removes it from the list.
    ok(
        s.remove_members(&channel("g"), &users(&["alice"])).await,
        "remove_members",
    );
    assert_eq!(
        listed(&states(s, "alice", None, 100, 100).await),
        [ab.clone(), quiet.clone()]
    );
}

/// Group membership: create, add, remove, count, lookups, paging.
pub async fn membership(store: Arc<dyn Store>, _cfg: ConformanceConfig) {
    let s = &*store;
    let g = channel("g");
    let h = channel("h");
    let missing = channel("missing");
    ok(
        s.create_group(&g, &users(&["bob", "alice"])).await,
        "create_group",
    );
    match s.create_group(&g, &users(&["carol"])).await {
        Err(StoreError::AlreadyExists(_)) => {}
        other => panic!("creating an existing group: expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        ok(s.member_count(&g).await, "member_count"),
        Some(2),
        "a refused create_group must not add members"
    );
    ok(
        s.add_members(&g, &users(&["carol", "bob", "dave"])).await,
        "add_members",
    );
    assert_eq!(ok(s.member_count(&g).await, "member_count"), Some(4));
    match s.add_members(&missing, &users(&["alice"])).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("add_members to a missing group: expected NotFound, got {other:?}"),
    }
    assert_eq!(ok(s.member_count(&missing).await, "member_count"), None);
    assert_eq!(
        ok(
            s.are_members(&g, &users(&["dave", "zed", "alice"])).await,
            "are_members"
        ),
        [true, false, true]
    );
    assert_eq!(
        ok(s.members(&g, None, 2).await, "members"),
        users(&["alice", "bob"]),
        "members in id order"
    );
    assert_eq!(
        ok(s.members(&g, Some(&user("bob")), 2).await, "members"),
        users(&["carol", "dave"])
    );
    assert_eq!(
        ok(s.members(&g, Some(&user("bz")), 10).await, "members"),
        users(&["carol", "dave"]),
        "`after` need not be a member"
    );
    assert!(ok(s.members(&g, Some(&user("dave")), 10).await, "members").is_empty());
    assert_eq!(
        ok(s.all_members(&g, 1).await, "members, paged one at a time"),
        users(&["alice", "bob", "carol", "dave"]),
        "paging with `after` = the previous page's last member visits everyone once"
    );
    assert!(ok(
        s.is_member(&g, &user("dave")).await,
        "are_members of one user"
    ));
    assert!(!ok(
        s.is_member(&g, &user("zed")).await,
        "are_members of one user"
    ));
    ok(
        s.create_group(&h, &[]).await,
        "create_group with no members",
    );
    assert_eq!(ok(s.member_count(&h).await, "member_count"), Some(0));
    ok(s.add_members(&h, &users(&["bob"])).await, "add_members");
    let groups: BTreeSet<_> = ok(s.user_groups(&user("bob")).await, "user_groups")
        .into_iter()
        .collect();
    assert_eq!(groups, BTreeSet::from([g.clone(), h.clone()]));

    ok(
        s.remove_members(&g, &users(&["bob", "zed"])).await,
        "remove_members",
    );
    assert_eq!(ok(s.member_count(&g).await, "member_count"), Some(3));
    assert_eq!(
        ok(s.are_members(&g, &users(&["bob"])).await, "are_members"),
        [false]
    );
    assert_eq!(
        ok(s.user_groups(&user("bob")).await, "user_groups"),
        std::slice::from_ref(&h)
    );
    assert!(ok(s.user_groups(&user("zed")).await, "user_groups").is_empty());
    // Open point: a missing group may be a no-op or NotFound.
    match s.remove_members(&missing, &users(&["bob"])).await {
        Ok(()) | Err(StoreError::NotFound(_)) => {}
        Err(e) => panic!("remove_members on a missing group: expected Ok or NotFound, got {e:?}"),
    }
    assert_eq!(ok(s.member_count(&missing).await, "member_count"), None);
}

/// Many appends at once to different conversations, all writing the inboxes
/// of the same users: every inbox stays continuous and complete.
pub async fn concurrent_appends_keep_inboxes_continuous(
    store: Arc<dyn Store>,
    cfg: ConformanceConfig,
) {
    if !retains(&cfg, "concurrent_appends_keep_inboxes_continuous", 480, 0) {
        return;
    }
    const WRITERS: usize = 16;
    const BATCHES: usize = 15;
    let shared = ["s0", "s1", "s2", "s3", "s4"];
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let c = if w % 2 == 0 {
                group(&format!("conc-{w}"))
            } else {
                direct(&format!("w{w}"), "s0")
            };
            let mut seq = 0;
            for b in 0..BATCHES {
                let n = 1 + (w + b) % 3;
                let msgs = (0..n)
                    .map(|_| {
                        seq += 1;
                        // Each writer also hits a private user.
                        let private = format!("w{w}");
                        let mut to: Vec<&str> = shared.to_vec();
                        to.push(&private);
                        new_message(message(&c, seq, &format!("w{w}"), None), &to)
                    })
                    .collect();
                ok(
                    append(&*store, msgs).await,
                    &format!("concurrent append (writer {w}, batch {b})"),
                );
                tokio::task::yield_now().await;
            }
            (c, seq)
        }));
    }
    let mut written: Vec<(ConversationId, Seq)> = Vec::new();
    for t in tasks {
        match t.await {
            Ok(cs) => written.push(cs),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("writer task failed: {e}"),
        }
    }
    let total: u64 = written.iter().map(|(_, n)| n).sum();
    for u in shared {
        let page = inbox(&*store, u, 0, total as usize + 10).await;
        assert_eq!(page.head_version, total, "{u}: one entry per message");
        let versions: Vec<u64> = page.entries.iter().map(|e| e.version).collect();
        let want: Vec<u64> = (1..=total).collect();
        assert_eq!(versions, want, "{u}: versions continuous under concurrency");
        // Each (conversation, seq) exactly once, each conversation in seq order.
        let mut last: HashMap<&ConversationId, Seq> = HashMap::new();
        for InboxEntry {
            conversation, seq, ..
        } in &page.entries
        {
            let prev = last.insert(conversation, *seq).unwrap_or(0);
            assert_eq!(
                *seq,
                prev + 1,
                "{u}: {conversation}'s entries must come in seq order with no gap or repeat"
            );
        }
        for (c, n) in &written {
            assert_eq!(last.get(c).copied().unwrap_or(0), *n, "{u}: all of {c}");
        }
    }
}

/// Writers racing on one conversation: each seq is won by exactly one
/// append, the losers get `SeqConflict`, and the timeline is gap-free.
pub async fn concurrent_writers_of_one_conversation(store: Arc<dyn Store>, cfg: ConformanceConfig) {
    if !retains(&cfg, "concurrent_writers_of_one_conversation", 48, 48) {
        return;
    }
    const WRITERS: usize = 6;
    const EACH: usize = 8;
    let c = group("contended");
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut attempts = 0;
            while mine.len() < EACH {
                attempts += 1;
                assert!(attempts < 10_000, "writer {w} starved");
                let h = head(&*store, &c).await;
                let m = message(
                    &c,
                    h + 1,
                    &format!("w{w}"),
                    Some(&format!("{w}-{}", mine.len())),
                );
                match append(&*store, vec![new_message(m.clone(), &["reader"])]).await {
                    Ok(()) => mine.push(m),
                    Err(StoreError::SeqConflict { .. }) => tokio::task::yield_now().await,
                    Err(e) => panic!("racing append: expected Ok or SeqConflict, got {e:?}"),
                }
            }
            mine
        }));
    }
    let mut won: Vec<StoredMessage> = Vec::new();
    for t in tasks {
        match t.await {
            Ok(m) => won.extend(m),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("writer task failed: {e}"),
        }
    }
    won.sort_by_key(|m| m.seq);
    let total = (WRITERS * EACH) as Seq;
    assert_eq!(
        seqs(&won),
        (1..=total).collect::<Vec<_>>(),
        "every seq was won by exactly one writer"
    );
    let page = range(&*store, &c, 0, None, total as usize + 10, false).await;
    assert_eq!(
        page.messages, won,
        "the timeline holds exactly the winning appends"
    );
    let page = inbox(&*store, "reader", 0, total as usize + 10).await;
    let got: Vec<(u64, Seq)> = page.entries.iter().map(|e| (e.version, e.seq)).collect();
    let want: Vec<(u64, Seq)> = (1..=total).map(|q| (q, q)).collect();
    assert_eq!(got, want, "losing appends wrote no inbox entry");
}

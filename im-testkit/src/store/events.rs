//! Checks of content types and event messages (recall and edit): see
//! "Event messages" in `im_core::store`.

use std::sync::Arc;

use bytes::Bytes;
use im_core::error::StoreError;
use im_core::ids::{ConversationId, Seq};
use im_core::store::{ContentType, MessageEvent, Store, StoreResult, StoredMessage};

use super::{append, head, inbox, ok, range, retains, states};
use crate::ConformanceConfig;
use crate::fixtures::{dedup_key, direct, event_message, group, message, new_message};

/// The retained message at `seq` of `c`, read by range and by seq; both
/// reads must agree.
async fn at(store: &dyn Store, c: &ConversationId, seq: Seq) -> StoredMessage {
    let page = range(store, c, seq - 1, Some(seq), 1, false).await;
    let by_range = page
        .messages
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("seq {seq} of {c} is not retained"));
    let by_seq = ok(
        store.get_messages(&[(c.clone(), seq)]).await,
        "get_messages",
    );
    assert_eq!(
        by_seq,
        std::slice::from_ref(&by_range),
        "get_messages and read_range agree on seq {seq}"
    );
    by_range
}

fn recall(target: Seq) -> MessageEvent {
    MessageEvent::Recall { target }
}

fn edit(target: Seq, edit_count: u32) -> MessageEvent {
    MessageEvent::Edit { target, edit_count }
}

/// Asserts an append was refused with `Rejected`.
fn expect_rejected(r: StoreResult<()>, what: &str) {
    match r {
        Err(StoreError::Rejected(_)) => {}
        Err(e) => panic!("{what}: expected Rejected, got {e} ({e:?})"),
        Ok(()) => panic!("{what}: expected Rejected, the append succeeded"),
    }
}

/// Every content type is stored and read back (by range, seq, key and as
/// the conversation's last message).
pub async fn content_types_are_kept(store: Arc<dyn Store>, cfg: ConformanceConfig) {
    if !retains(&cfg, "content_types_are_kept", 0, 4) {
        return;
    }
    let s = &*store;
    let d = direct("alice", "bob");
    let types = [
        ContentType::Text,
        ContentType::ImageRef,
        ContentType::FileRef,
        ContentType::Custom("app/poll-v2".into()),
    ];
    let batch: Vec<_> = types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let seq = i as Seq + 1;
            let mut m = message(&d, seq, "alice", Some(&format!("t{seq}")));
            m.content_type = t.clone();
            new_message(m, &["alice", "bob"])
        })
        .collect();
    let stored: Vec<StoredMessage> = batch.iter().map(|m| m.message.clone()).collect();
    ok(append(s, batch).await, "append of typed messages");
    assert_eq!(
        range(s, &d, 0, None, 10, false).await.messages,
        stored,
        "read_range keeps content types"
    );
    let found = ok(
        s.find_by_dedup_keys(&[dedup_key("alice", "dev", "t4")])
            .await,
        "find_by_dedup_keys",
    );
    assert_eq!(
        found,
        [Some(stored[3].clone())],
        "lookup by key keeps the custom type"
    );
    let st = states(s, "bob", Some(vec![d.clone()]), 100, 10).await;
    assert_eq!(
        st[0].last_message.as_ref(),
        stored.last(),
        "last_message keeps it"
    );
}

/// A recall empties and flags its target (and the target's edit events) in
/// every later read, keeps the recall event itself, and is not counted as
/// unread.
pub async fn recall_leaves_a_tombstone(store: Arc<dyn Store>, cfg: ConformanceConfig) {
    if !retains(&cfg, "recall_leaves_a_tombstone", 5, 5) {
        return;
    }
    let s = &*store;
    let d = direct("alice", "bob");
    let both = ["alice", "bob"];
    ok(
        append(
            s,
            vec![
                new_message(message(&d, 1, "alice", Some("a1")), &both),
                new_message(message(&d, 2, "bob", Some("b1")), &both),
                new_message(event_message(&d, 3, "alice", edit(1, 1), "fixed"), &both),
            ],
        )
        .await,
        "append of two messages and an edit",
    );
    let edited = at(s, &d, 1).await;
    assert_eq!(
        (edited.body.as_ref(), edited.edit_count, edited.recalled),
        (&b"fixed"[..], 1, false),
        "an edit replaces the body and counts"
    );
    let recall_event = event_message(&d, 4, "alice", recall(1), "");
    ok(
        append(s, vec![new_message(recall_event.clone(), &both)]).await,
        "append of a recall",
    );
    let target = at(s, &d, 1).await;
    assert!(target.recalled, "the target is flagged recalled");
    assert!(target.body.is_empty(), "the target's body is gone");
    assert_eq!(
        target.client_msg_id.as_deref(),
        Some("a1"),
        "the rest stays"
    );
    let edit_event = at(s, &d, 3).await;
    assert!(
        edit_event.recalled && edit_event.body.is_empty(),
        "the target's edit events lose their bodies too: {edit_event:?}"
    );
    assert_eq!(edit_event.event, Some(edit(1, 1)), "and stay edit events");
    assert_eq!(
        at(s, &d, 4).await,
        recall_event,
        "the recall event reads back as appended"
    );
    assert_eq!(
        at(s, &d, 2).await.body,
        Bytes::from(format!("{d} #2 from bob")),
        "other messages are untouched"
    );
    let found = ok(
        s.find_by_dedup_keys(&[dedup_key("alice", "dev", "a1")])
            .await,
        "find_by_dedup_keys",
    );
    assert_eq!(
        found,
        [Some(target.clone())],
        "a lookup by key sees the tombstone"
    );
    // Bob has read nothing: alice's two messages count (the recalled one
    // is still a message), her edit and recall events do not.
    let st = states(s, "bob", Some(vec![d.clone()]), 100, 10).await;
    assert_eq!(st[0].unread, 1, "event messages are not unread: {st:?}");
    assert_eq!(st[0].last_message.as_ref(), Some(&recall_event));
    // Recalling a recalled message again is accepted and changes nothing.
    ok(
        append(
            s,
            vec![new_message(
                event_message(&d, 5, "alice", recall(1), ""),
                &both,
            )],
        )
        .await,
        "a second recall of the same target",
    );
    assert_eq!(at(s, &d, 1).await, target);
    let page = inbox(s, "bob", 0, 10).await;
    assert_eq!(
        page.entries.len(),
        5,
        "event messages get inbox entries like any message"
    );
}

/// Edits take the target's next count; a stale count (a concurrent edit),
/// an edit of a recalled message, and any change to a missing or event
/// message are refused with `Rejected`. Several events of one target in one
/// batch apply in order.
pub async fn edits_count_up_and_refuse_races(store: Arc<dyn Store>, cfg: ConformanceConfig) {
    if !retains(&cfg, "edits_count_up_and_refuse_races", 0, 8) {
        return;
    }
    let s = &*store;
    let g = group("editors");
    let one = |m| vec![new_message(m, &[])];
    ok(
        append(s, one(message(&g, 1, "alice", None))).await,
        "first message",
    );
    ok(
        append(s, one(event_message(&g, 2, "alice", edit(1, 1), "v1"))).await,
        "first edit",
    );
    expect_rejected(
        append(s, one(event_message(&g, 3, "alice", edit(1, 1), "stale"))).await,
        "an edit with a stale count",
    );
    expect_rejected(
        append(s, one(event_message(&g, 3, "alice", edit(2, 1), "x"))).await,
        "an edit of an event message",
    );
    expect_rejected(
        append(s, one(event_message(&g, 3, "alice", recall(2), ""))).await,
        "a recall of an event message",
    );
    expect_rejected(
        append(s, one(event_message(&g, 3, "alice", recall(9), ""))).await,
        "a recall of a seq past the head",
    );
    assert_eq!(head(s, &g).await, 2, "refused events write nothing");
    // A message, two edits of it and a typed edit of the first, in one batch.
    let mut typed = event_message(&g, 6, "alice", edit(1, 2), "https://img/1");
    typed.content_type = ContentType::ImageRef;
    ok(
        append(
            s,
            vec![
                new_message(message(&g, 3, "bob", None), &[]),
                new_message(event_message(&g, 4, "bob", edit(3, 1), "b1"), &[]),
                new_message(event_message(&g, 5, "bob", edit(3, 2), "b2"), &[]),
                new_message(typed, &[]),
            ],
        )
        .await,
        "a batch of a message and edits",
    );
    let first = at(s, &g, 1).await;
    assert_eq!(
        (
            first.body.as_ref(),
            first.edit_count,
            first.content_type.clone()
        ),
        (&b"https://img/1"[..], 2, ContentType::ImageRef),
        "an edit takes the event's body, type and count"
    );
    let third = at(s, &g, 3).await;
    assert_eq!((third.body.as_ref(), third.edit_count), (&b"b2"[..], 2));
    ok(
        append(s, one(event_message(&g, 7, "bob", recall(3), ""))).await,
        "a recall",
    );
    expect_rejected(
        append(s, one(event_message(&g, 8, "bob", edit(3, 3), "again"))).await,
        "an edit of a recalled message",
    );
    for seq in [4, 5] {
        let e = at(s, &g, seq).await;
        assert!(
            e.recalled && e.body.is_empty(),
            "edit event {seq} emptied by the recall"
        );
    }
    let untouched = at(s, &g, 6).await;
    assert_eq!(
        untouched.body.as_ref(),
        b"https://img/1",
        "another target's edit stays"
    );
}

/// A batch with one event that does not apply writes nothing at all, in
/// any conversation or inbox.
pub async fn events_are_all_or_nothing(store: Arc<dyn Store>, cfg: ConformanceConfig) {
    if !retains(&cfg, "events_are_all_or_nothing", 0, 2) {
        return;
    }
    let s = &*store;
    let d = direct("alice", "bob");
    let g = group("all-or-nothing");
    let both = ["alice", "bob"];
    ok(
        append(
            s,
            vec![new_message(message(&d, 1, "alice", Some("k1")), &both)],
        )
        .await,
        "first message",
    );
    expect_rejected(
        append(
            s,
            vec![
                new_message(message(&g, 1, "carol", Some("k2")), &["alice"]),
                new_message(message(&d, 2, "bob", None), &both),
                new_message(
                    event_message(&d, 3, "bob", edit(1, 2), "skips a count"),
                    &both,
                ),
            ],
        )
        .await,
        "a batch whose last event does not apply",
    );
    assert_eq!(head(s, &g).await, 0, "nothing of the batch is written");
    assert_eq!(head(s, &d).await, 1);
    assert_eq!(
        inbox(s, "alice", 0, 10).await.head_version,
        1,
        "no inbox entry either"
    );
    assert_eq!(at(s, &d, 1).await.edit_count, 0, "the target is unchanged");
    let found = ok(
        s.find_by_dedup_keys(&[dedup_key("carol", "dev", "k2")])
            .await,
        "find_by_dedup_keys",
    );
    assert_eq!(found, [None], "the refused batch's keys are not committed");
}

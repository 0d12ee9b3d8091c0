//! Page arithmetic for `Pull` and `Sync`: pure functions, no IO.
//!
//! A page is cut to a byte budget so one answer never fills a session's
//! outbound queue, and always carries at least one message so paging makes
//! progress (a single body is bounded by `max_body_bytes`).

use crate::ids::Seq;
use crate::store::{InboxEntry, InboxPage, RangePage, StoredMessage};

/// Which end of a range a page is cut from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PageEnd {
    /// The oldest messages of the range (paging forward).
    Oldest,
    /// The newest messages of the range (paging backward from the head).
    Newest,
}

impl PageEnd {
    /// The end a `Pull` asks for with its `newest` flag.
    pub(super) fn from_newest(newest: bool) -> Self {
        if newest { Self::Newest } else { Self::Oldest }
    }
}

/// The page size to ask the store for: `requested`, where 0 means `max`,
/// capped at `max`.
pub(super) fn page_limit(requested: u32, max: usize) -> usize {
    match requested as usize {
        0 => max,
        n => n.min(max),
    }
}

/// Approximate encoded size of a message (body plus ids and framing).
pub(super) fn wire_size(m: &StoredMessage) -> usize {
    const OVERHEAD: usize = 64;
    m.body.len()
        + m.sender.as_str().len()
        + m.sender_device.as_str().len()
        + m.client_msg_id.as_ref().map_or(0, String::len)
        + OVERHEAD
}

/// How many messages of a page fit in `budget` bytes, counted from `end`.
/// At least one, so a page always makes progress.
pub(super) fn fitting(messages: &[StoredMessage], end: PageEnd, budget: usize) -> usize {
    let mut left = budget;
    let mut n = 0;
    let mut take = |m: &StoredMessage| {
        let size = wire_size(m);
        if n > 0 && size > left {
            return false;
        }
        left = left.saturating_sub(size);
        n += 1;
        true
    };
    match end {
        PageEnd::Newest => {
            for m in messages.iter().rev() {
                if !take(m) {
                    break;
                }
            }
        }
        PageEnd::Oldest => {
            for m in messages {
                if !take(m) {
                    break;
                }
            }
        }
    }
    n
}

/// Drops the messages that do not fit `budget`, keeping those at `end`.
pub(super) fn trim_range(messages: &mut Vec<StoredMessage>, end: PageEnd, budget: usize) {
    let keep = fitting(messages, end, budget);
    match end {
        PageEnd::Newest => {
            messages.drain(..messages.len() - keep);
        }
        PageEnd::Oldest => messages.truncate(keep),
    }
}

/// What a `PullResult` says beyond its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PullWindow {
    /// More messages lie between the request's bounds than were returned.
    pub(super) has_more: bool,
    /// The first retained seq when retention dropped part of the asked
    /// range, else 0.
    pub(super) history_start_seq: Seq,
}

/// The window of a pull for `(after_seq, until_seq]` answered with `page`
/// (already trimmed); `until_seq` of `None` means the head.
pub(super) fn pull_window(after_seq: Seq, until_seq: Option<Seq>, page: &RangePage) -> PullWindow {
    let until = until_seq.map_or(page.head_seq, |u| u.min(page.head_seq));
    let lost = page.first_retained_seq > after_seq.saturating_add(1);
    let from = after_seq.max(page.first_retained_seq.saturating_sub(1));
    let available = until.saturating_sub(from);
    PullWindow {
        has_more: (page.messages.len() as u64) < available,
        history_start_seq: if lost { page.first_retained_seq } else { 0 },
    }
}

/// How many inbox entries, oldest first, have messages fitting `budget`
/// bytes. At least one; an entry whose message is missing costs nothing.
pub(super) fn fitting_entries(
    entries: &[InboxEntry],
    messages: &[StoredMessage],
    budget: usize,
) -> usize {
    let mut left = budget;
    let mut kept = 0;
    for e in entries {
        let size = messages
            .iter()
            .find(|m| m.seq == e.seq && m.conversation == e.conversation)
            .map_or(0, wire_size);
        if kept > 0 && size > left {
            break;
        }
        left = left.saturating_sub(size);
        kept += 1;
    }
    kept
}

/// Keeps the inbox entries whose messages fit `budget` bytes (the rest come
/// next time), and only the messages of the kept entries.
pub(super) fn trim_inbox(page: &mut InboxPage, messages: &mut Vec<StoredMessage>, budget: usize) {
    let kept = fitting_entries(&page.entries, messages, budget);
    page.entries.truncate(kept);
    messages.retain(|m| {
        page.entries
            .iter()
            .any(|e| e.seq == m.seq && e.conversation == m.conversation)
    });
}

/// What a `SyncResult` says beyond its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SyncWindow {
    /// Something past `after_version` was lost to retention: inbox entries
    /// (the inbox keeps fewer than the device is behind), or the message of
    /// a returned entry (its timeline dropped it). Syncing on cannot bring
    /// either back: the client must resync every conversation, and each
    /// `Pull` says where that conversation's history now starts.
    pub(super) full_sync_required: bool,
    /// Entries newer than the last returned one exist.
    pub(super) has_more: bool,
}

/// The window of a sync after `after_version` answered with `page` and the
/// entries' `messages` (both already trimmed).
pub(super) fn sync_window(
    after_version: u64,
    page: &InboxPage,
    messages: &[StoredMessage],
) -> SyncWindow {
    let last = page.entries.last().map_or(after_version, |e| e.version);
    let entries_lost = after_version < page.head_version
        && after_version.saturating_add(1) < page.first_retained_version;
    let message_lost = page.entries.iter().any(|e| {
        !messages
            .iter()
            .any(|m| m.seq == e.seq && m.conversation == e.conversation)
    });
    SyncWindow {
        full_sync_required: entries_lost || message_lost,
        has_more: last < page.head_version,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::ids::{ConversationId, DeviceId, MessageId, UserId};

    fn conv() -> ConversationId {
        ConversationId::group("g").expect("valid id")
    }

    /// A message whose `wire_size` is `64 + 2 + body_len` ("u" and "d").
    fn msg(seq: Seq, body_len: usize) -> StoredMessage {
        StoredMessage {
            conversation: conv(),
            seq,
            message_id: MessageId(seq),
            sender: UserId::new("u").expect("valid id"),
            sender_device: DeviceId::new("d").expect("valid id"),
            client_msg_id: None,
            body: Bytes::from(vec![0; body_len]),
            server_time_ms: 0,
            content_type: crate::store::ContentType::Text,
            event: None,
            recalled: false,
            edit_count: 0,
        }
    }

    fn seqs(messages: &[StoredMessage]) -> Vec<Seq> {
        messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn page_limit_treats_zero_as_max_and_caps_the_rest() {
        assert_eq!(page_limit(0, 50), 50);
        assert_eq!(page_limit(10, 50), 10);
        assert_eq!(page_limit(500, 50), 50);
    }

    #[test]
    fn wire_size_counts_body_ids_and_overhead() {
        assert_eq!(wire_size(&msg(1, 10)), 76);
        let mut m = msg(1, 10);
        m.client_msg_id = Some("abcd".into());
        assert_eq!(wire_size(&m), 80);
    }

    #[test]
    fn fitting_counts_from_the_asked_end() {
        // Sizes 76, 166, 76: 160 bytes hold one message from either end.
        let page = [msg(1, 10), msg(2, 100), msg(3, 10)];
        assert_eq!(fitting(&page, PageEnd::Oldest, 160), 1);
        assert_eq!(fitting(&page, PageEnd::Newest, 160), 1);
        assert_eq!(fitting(&page, PageEnd::Oldest, 242), 2);
        assert_eq!(fitting(&page, PageEnd::Oldest, 10_000), 3);
        assert_eq!(fitting(&[], PageEnd::Oldest, 10_000), 0);
    }

    #[test]
    fn fitting_always_makes_progress() {
        let page = [msg(1, 1000), msg(2, 1000)];
        assert_eq!(fitting(&page, PageEnd::Oldest, 0), 1);
        assert_eq!(fitting(&page, PageEnd::Newest, 10), 1);
    }

    #[test]
    fn trim_range_keeps_the_asked_end() {
        let page = vec![msg(1, 10), msg(2, 10), msg(3, 10)];
        let mut oldest = page.clone();
        trim_range(&mut oldest, PageEnd::Oldest, 160);
        assert_eq!(seqs(&oldest), [1, 2]);
        let mut newest = page;
        trim_range(&mut newest, PageEnd::Newest, 160);
        assert_eq!(seqs(&newest), [2, 3]);
    }

    fn range(messages: Vec<StoredMessage>, head_seq: Seq, first_retained_seq: Seq) -> RangePage {
        RangePage {
            messages,
            head_seq,
            first_retained_seq,
        }
    }

    #[test]
    fn pull_window_reports_more_until_the_bound_is_covered() {
        let page = range(vec![msg(1, 0), msg(2, 0)], 5, 1);
        let w = pull_window(0, None, &page);
        assert_eq!((w.has_more, w.history_start_seq), (true, 0));
        // Bounded at 2: the two returned messages cover it.
        assert!(!pull_window(0, Some(2), &page).has_more);
        // A bound past the head counts only up to the head.
        let tail = range(vec![msg(4, 0), msg(5, 0)], 5, 1);
        assert!(!pull_window(3, Some(99), &tail).has_more);
    }

    #[test]
    fn pull_window_reports_history_lost_to_retention() {
        let page = range(vec![msg(4, 0), msg(5, 0)], 5, 4);
        let w = pull_window(0, None, &page);
        assert_eq!((w.has_more, w.history_start_seq), (false, 4));
        // Asking from just before the first retained seq lost nothing.
        assert_eq!(pull_window(3, None, &page).history_start_seq, 0);
    }

    fn entry(version: u64, seq: Seq) -> InboxEntry {
        InboxEntry {
            version,
            conversation: conv(),
            seq,
        }
    }

    #[test]
    fn fitting_entries_counts_missing_messages_as_free() {
        let entries = [entry(1, 1), entry(2, 2), entry(3, 3)];
        // Seq 2's message is gone (e.g. retention): it costs nothing.
        let messages = [msg(1, 10), msg(3, 10)];
        assert_eq!(fitting_entries(&entries, &messages, 160), 3);
        assert_eq!(fitting_entries(&entries, &messages, 100), 2);
        // The first entry always goes, and the free one after it.
        assert_eq!(fitting_entries(&entries, &messages, 0), 2);
    }

    #[test]
    fn trim_inbox_keeps_only_the_kept_entries_messages() {
        let mut page = InboxPage {
            entries: vec![entry(1, 1), entry(2, 2), entry(3, 3)],
            head_version: 3,
            first_retained_version: 1,
        };
        let mut messages = vec![msg(1, 10), msg(2, 10), msg(3, 10)];
        trim_inbox(&mut page, &mut messages, 160);
        assert_eq!(page.entries.len(), 2);
        assert_eq!(seqs(&messages), [1, 2]);
        let w = sync_window(0, &page, &messages);
        assert_eq!((w.full_sync_required, w.has_more), (false, true));
    }

    #[test]
    fn sync_window_requires_a_full_sync_after_lost_entries() {
        let page = InboxPage {
            entries: vec![entry(5, 1)],
            head_version: 5,
            first_retained_version: 5,
        };
        let kept = [msg(1, 0)];
        let w = sync_window(2, &page, &kept);
        assert_eq!((w.full_sync_required, w.has_more), (true, false));
        assert!(!sync_window(4, &page, &kept).full_sync_required);
        // Up to date: nothing lost, nothing more.
        let empty = InboxPage {
            entries: vec![],
            head_version: 5,
            first_retained_version: 6,
        };
        let w = sync_window(5, &empty, &[]);
        assert_eq!((w.full_sync_required, w.has_more), (false, false));
    }

    #[test]
    fn sync_window_requires_a_full_sync_when_an_entrys_message_is_gone() {
        // Every entry is retained, but the timeline dropped seq 2's message.
        let page = InboxPage {
            entries: vec![entry(1, 1), entry(2, 2), entry(3, 3)],
            head_version: 3,
            first_retained_version: 1,
        };
        let w = sync_window(0, &page, &[msg(1, 0), msg(3, 0)]);
        assert_eq!((w.full_sync_required, w.has_more), (true, false));
        let all = [msg(1, 0), msg(2, 0), msg(3, 0)];
        assert!(!sync_window(0, &page, &all).full_sync_required);
    }
}

//! The store's state: what is kept per conversation, per user and per
//! group, behind the locks [`MemoryStore`](crate::MemoryStore) shards it into.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use im_core::ids::{ChannelId, ConversationId, DedupKey, Seq, UserId};
use im_core::store::{InboxEntry, MemberInfo, StoredMessage};
use parking_lot::Mutex;

/// Number of shards of the idempotency index.
pub(crate) const DEDUP_SHARDS: usize = 64;

/// One conversation's timeline. Invariants: `messages` holds exactly the
/// seqs `head - len + 1 ..= head`, in order; `stamps[i]` is the commit stamp
/// of `messages[i]` (increasing); `bytes` is the sum of their
/// [`charge`]s.
#[derive(Default)]
pub(crate) struct Conversation {
    /// Newest seq (0: never appended).
    pub(crate) head: Seq,
    /// The retained messages, oldest first.
    pub(crate) messages: VecDeque<StoredMessage>,
    /// Global commit stamp of each retained message (the store-wide order
    /// the byte budget evicts in).
    stamps: VecDeque<u64>,
    /// What the retained messages are charged against the byte budget.
    pub(crate) bytes: usize,
    /// Global commit stamp of the newest append (0: never appended).
    pub(crate) activity: u64,
}

/// Fixed part of a message's [`charge`]: its slot in a timeline (the
/// message and its stamp) and in the idempotency index.
const MESSAGE_OVERHEAD: usize = std::mem::size_of::<StoredMessage>()
    + std::mem::size_of::<u64>()
    + std::mem::size_of::<DedupKey>()
    + std::mem::size_of::<(ConversationId, Seq)>();

/// What a retained message is charged against
/// [`max_total_bytes`](crate::MemoryStoreConfig::max_total_bytes): its body,
/// its ids (and a custom content type's name) and a fixed overhead for the structures that keep it. An
/// estimate of the memory it holds, not an allocator's measure (ids shared
/// with other messages are counted for each).
pub(crate) fn charge(m: &StoredMessage) -> usize {
    m.body.len()
        + m.sender.as_str().len()
        + m.sender_device.as_str().len()
        // The key's copy of the client id, and the message's.
        + m.client_msg_id.as_ref().map_or(0, |c| 2 * c.len())
        + m.content_type.custom_name().map_or(0, str::len)
        + MESSAGE_OVERHEAD
}

impl Conversation {
    /// Retains `message` (the next seq) committed at `stamp`.
    pub(crate) fn push(&mut self, message: StoredMessage, stamp: u64) {
        self.head = message.seq;
        self.bytes += charge(&message);
        self.stamps.push_back(stamp);
        self.messages.push_back(message);
    }

    /// Drops the oldest retained message and returns it.
    pub(crate) fn pop_oldest(&mut self) -> Option<StoredMessage> {
        let old = self.messages.pop_front()?;
        self.stamps.pop_front();
        self.bytes -= charge(&old);
        Some(old)
    }

    /// Commit stamp of the oldest retained message.
    pub(crate) fn oldest_stamp(&self) -> Option<u64> {
        self.stamps.front().copied()
    }

    /// Oldest retained seq (`head + 1` when nothing is retained).
    pub(crate) fn first_retained(&self) -> Seq {
        self.head - self.messages.len() as Seq + 1
    }

    /// The retained message at `seq`.
    pub(crate) fn get(&self, seq: Seq) -> Option<&StoredMessage> {
        let first = self.first_retained();
        if seq < first || seq > self.head {
            return None;
        }
        usize::try_from(seq - first)
            .ok()
            .and_then(|i| self.messages.get(i))
    }

    /// Applies the event of the newest message (just pushed) to its
    /// target, which [`check_event`](im_core::store::check_event) accepted:
    /// the target (and, for a recall, its edit events) change in place and
    /// their charges with them.
    pub(crate) fn apply_newest_event(&mut self) {
        let Some(event_message) = self.messages.back().cloned() else {
            return;
        };
        let Some(event) = event_message.event else {
            return;
        };
        let target = event.target();
        let first = self.first_retained();
        if target < first {
            return;
        }
        let start = usize::try_from(target - first).unwrap_or(usize::MAX);
        let mut bytes = self.bytes;
        for (k, m) in self.messages.iter_mut().enumerate().skip(start) {
            let before = charge(m);
            let changed = if k == start {
                im_core::store::apply_event(m, &event_message)
            } else if matches!(event, im_core::store::MessageEvent::Recall { .. }) {
                im_core::store::blank_recalled_edit(m, target)
            } else {
                break;
            };
            if changed {
                bytes = bytes - before + charge(m);
            }
        }
        self.bytes = bytes;
    }

    /// Messages from others with seq > `read_seq`, counted up to `cap`,
    /// scanning from the head backwards. Only retained messages count, and
    /// event messages (recalls, edits) do not.
    pub(crate) fn unread(&self, user: &UserId, read_seq: Seq, cap: u32) -> u32 {
        let mut n = 0u32;
        for m in self.messages.iter().rev() {
            if n >= cap || m.seq <= read_seq {
                break;
            }
            if m.sender != *user && m.event.is_none() {
                n += 1;
            }
        }
        n
    }
}

/// A user's delivered and read cursors in one conversation.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cursor {
    /// Highest seq delivered to the user.
    pub(crate) delivered: Seq,
    /// Highest seq the user read.
    pub(crate) read: Seq,
}

/// Everything kept per user.
#[derive(Default)]
pub(crate) struct UserData {
    /// Newest inbox version (0: never had an entry).
    pub(crate) inbox_head: u64,
    /// Entries `inbox_head - len + 1 ..= inbox_head`.
    pub(crate) inbox: VecDeque<InboxEntry>,
    /// The user's cursors, by conversation.
    pub(crate) cursors: HashMap<ConversationId, Cursor>,
    /// Direct conversations with at least one message, in which the user is
    /// one of the two participants.
    pub(crate) directs: HashSet<ConversationId>,
}

impl UserData {
    /// Oldest retained inbox version (`inbox_head + 1` when none is).
    pub(crate) fn first_retained_version(&self) -> u64 {
        self.inbox_head - self.inbox.len() as u64 + 1
    }
}

/// Durable group membership.
#[derive(Default)]
pub(crate) struct Groups {
    /// Members of each group.
    pub(crate) members: HashMap<ChannelId, BTreeSet<UserId>>,
    /// Groups of each user who is in at least one.
    pub(crate) by_user: HashMap<UserId, BTreeSet<ChannelId>>,
    /// Roles and mutes of members who are not plain unmuted members (most
    /// members have no entry, so a big group costs nothing here).
    pub(crate) standing: HashMap<ChannelId, HashMap<UserId, MemberInfo>>,
}

/// A shared handle to one lock of the store's state.
pub(crate) type Handle<T> = Arc<T>;

/// One shard of the idempotency index: where each committed key's message is.
pub(crate) type DedupShard = Mutex<HashMap<DedupKey, (ConversationId, Seq)>>;

#![doc = include_str!("../README.md")]

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use im_core::ids::{ConversationId, DedupKey, UserId};
use parking_lot::{Mutex, RwLock};

use state::{Conversation, DEDUP_SHARDS, DedupShard, Groups, Handle, UserData};

mod append;
mod cursors;
mod inboxes;
mod membership;
mod prefs;
mod retention;
mod state;
mod timeline;

#[cfg(test)]
mod tests;

/// Tuning of a [`MemoryStore`].
///
/// Build it from [`Default`] and the `with_*` setters (the struct is
/// `#[non_exhaustive]`, so it cannot be written as a literal outside this
/// crate):
///
/// ```
/// use im_store_memory::{MemoryStore, MemoryStoreConfig};
///
/// let store = MemoryStore::with_config(
///     MemoryStoreConfig::default()
///         .with_inbox_capacity(1_000)
///         .with_timeline_capacity(Some(5_000))
///         .with_max_total_bytes(Some(64 << 20)),
/// );
/// assert_eq!(store.config().inbox_capacity, 1_000);
/// ```
///
/// The defaults bound the store's memory: at most 10,000 inbox entries per
/// user, 10,000 messages per conversation and 256 MiB of messages in all.
/// [`MemoryStoreConfig::unbounded`] keeps every message instead.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryStoreConfig {
    /// Entries kept per user inbox; older entries are dropped and
    /// `first_retained_version` advances. Default 10,000. `0` keeps no
    /// entry (versions still advance).
    pub inbox_capacity: usize,
    /// Messages kept per conversation: `None` keeps every message (memory
    /// grows with history); `Some(n)` keeps the newest `n`, dropping older
    /// ones together with their idempotency keys. Default
    /// [`DEFAULT_TIMELINE_CAPACITY`] (10,000, as many as an inbox keeps: a
    /// device further behind than that is told to resync anyway).
    pub timeline_capacity: Option<usize>,
    /// Bytes of messages kept across all conversations: `None` keeps them
    /// all; `Some(n)` drops the store's oldest messages (in commit order,
    /// whatever their conversation) until the retained ones are charged at
    /// most `n`, each with its idempotency key. A message is charged its
    /// body, its ids and a fixed overhead of about 260 bytes (see
    /// [`MemoryStore::retained_bytes`]). Default [`DEFAULT_MAX_TOTAL_BYTES`]
    /// (256 MiB).
    pub max_total_bytes: Option<usize>,
}

/// Default [`MemoryStoreConfig::timeline_capacity`]: 10,000 messages per
/// conversation.
pub const DEFAULT_TIMELINE_CAPACITY: usize = 10_000;

/// Default [`MemoryStoreConfig::max_total_bytes`]: 256 MiB.
pub const DEFAULT_MAX_TOTAL_BYTES: usize = 256 << 20;

impl Default for MemoryStoreConfig {
    fn default() -> Self {
        Self {
            inbox_capacity: 10_000,
            timeline_capacity: Some(DEFAULT_TIMELINE_CAPACITY),
            max_total_bytes: Some(DEFAULT_MAX_TOTAL_BYTES),
        }
    }
}

impl MemoryStoreConfig {
    /// Keeps every message (no timeline capacity, no byte budget) and the
    /// default 10,000 entries per inbox: memory grows with history. For
    /// tests and models that must see every message.
    pub fn unbounded() -> Self {
        Self {
            timeline_capacity: None,
            max_total_bytes: None,
            ..Self::default()
        }
    }

    /// Sets [`MemoryStoreConfig::inbox_capacity`].
    #[must_use]
    pub fn with_inbox_capacity(mut self, entries: usize) -> Self {
        self.inbox_capacity = entries;
        self
    }

    /// Sets [`MemoryStoreConfig::timeline_capacity`].
    #[must_use]
    pub fn with_timeline_capacity(mut self, messages: Option<usize>) -> Self {
        self.timeline_capacity = messages;
        self
    }

    /// Sets [`MemoryStoreConfig::max_total_bytes`].
    #[must_use]
    pub fn with_max_total_bytes(mut self, bytes: Option<usize>) -> Self {
        self.max_total_bytes = bytes;
        self
    }
}

/// The in-memory store: the embedded default and the reference semantics of
/// the [`im_core::store`] traits.
///
/// # Semantics worth knowing
///
/// - **Retention.** Inboxes keep the newest
///   [`inbox_capacity`](MemoryStoreConfig::inbox_capacity) entries per user.
///   Timelines keep the newest
///   [`timeline_capacity`](MemoryStoreConfig::timeline_capacity) messages per
///   conversation (or all), and all timelines together at most
///   [`max_total_bytes`](MemoryStoreConfig::max_total_bytes) (or all): past
///   it, the store's oldest messages go first, whichever conversation holds
///   them. Either way a conversation keeps a contiguous run of seqs up to
///   its head and `first_retained_seq` says where it starts, and a dropped
///   message's idempotency key is forgotten with it (so
///   [`Timeline::find_by_dedup_keys`](im_core::store::Timeline::find_by_dedup_keys)
///   never reports a key whose message it cannot return). An inbox entry may
///   outlive its message: [`Timeline::get_messages`](im_core::store::Timeline::get_messages)
///   leaves the message out. The byte budget holds whenever no append is in
///   progress; while appends run it may be exceeded by what they add, until
///   they have evicted (each append evicts before it returns). Cursors, membership, per-conversation heads and the
///   list of a user's direct conversations are kept for as long as the store
///   lives (a refused append may leave an empty entry for a conversation or
///   user it named).
/// - **`SeqConflict`** reports `expected` = the head the writer assumed (the
///   offending message's seq − 1) and `actual` = the head the conversation
///   has at that point (the store's head plus the batch's earlier messages
///   for that conversation).
/// - **Duplicates** are listed once each, in batch order, whether they were
///   already committed, repeated inside the batch, or both. A recipient named
///   twice for one message gets one inbox entry.
/// - **Unread** counts only retained messages.
/// - **Conversation list** (`only: None`) orders by the last append (most
///   recent first); conversations without any message come last, by id. With
///   `only: Some(list)` the list order is kept. Both are cut to `limit`.
/// - **Membership**: `remove_members`, `are_members` and `members` on a
///   group that does not exist succeed (no-op, all `false`, empty); only
///   `add_members` reports [`StoreError::NotFound`](im_core::error::StoreError::NotFound).
/// - **Settings and blocks** are kept for as long as the store lives, in
///   memory of their own (not charged against `max_total_bytes`); settings
///   brought back to the default and lifted blocks are forgotten.
/// - **Cursors** are stored as given (moved only forward), not clamped to
///   the head: bounding them is the engine's job.
///
/// # Concurrency
///
/// State is sharded: every conversation, every user (inbox, cursors, direct
/// conversations) and each of 64 shards of the idempotency index sits behind
/// its own `parking_lot` lock, found through a map that is only locked long
/// enough to look a handle up (or insert one). An append locks everything
/// its batch touches, in a fixed order (conversations by id, then index
/// shards, then users by id), checks, writes, and releases — so a batch is
/// atomic for every reader, and appends to disjoint conversations and users
/// run in parallel. Every other operation holds at most one entry lock at a
/// time. Membership has its own single `RwLock`. No lock is held across an
/// `.await` (the trait methods never await).
pub struct MemoryStore {
    /// The configuration the store was built with.
    config: MemoryStoreConfig,
    /// Every conversation that was ever named by an append.
    conversations: RwLock<HashMap<ConversationId, Handle<RwLock<Conversation>>>>,
    /// Every user that was ever named by an append or a cursor update.
    users: RwLock<HashMap<UserId, Handle<Mutex<UserData>>>>,
    /// The idempotency index, in [`DEDUP_SHARDS`] shards.
    dedup: Vec<DedupShard>,
    /// Picks a key's shard of `dedup`.
    dedup_hasher: RandomState,
    /// Group membership.
    groups: RwLock<Groups>,
    /// Conversation settings and blocks.
    prefs: RwLock<prefs::Prefs>,
    /// Source of commit stamps (ordering of the conversation list and of
    /// eviction under the byte budget).
    activity: AtomicU64,
    /// Sum of every conversation's `bytes`.
    retained_bytes: AtomicUsize,
    /// With a byte budget: each conversation holding a message, by the
    /// stamp of its oldest one.
    oldest: Mutex<BTreeSet<(u64, ConversationId)>>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("config", &self.config)
            .field("conversations", &self.conversations.read().len())
            .field("users", &self.users.read().len())
            .field("groups", &self.groups.read().members.len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with the default [`MemoryStoreConfig`] (bounded: see
    /// there).
    pub fn new() -> Self {
        Self::with_config(MemoryStoreConfig::default())
    }

    /// An empty store with `config`.
    pub fn with_config(config: MemoryStoreConfig) -> Self {
        Self {
            config,
            conversations: RwLock::new(HashMap::new()),
            users: RwLock::new(HashMap::new()),
            dedup: (0..DEDUP_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            dedup_hasher: RandomState::new(),
            groups: RwLock::new(Groups::default()),
            prefs: RwLock::new(prefs::Prefs::default()),
            activity: AtomicU64::new(0),
            retained_bytes: AtomicUsize::new(0),
            oldest: Mutex::new(BTreeSet::new()),
        }
    }

    /// What the retained messages of every conversation are charged against
    /// [`MemoryStoreConfig::max_total_bytes`]: per message, its body, its
    /// ids (sender, device, client id, a custom content type's name) and a
    /// fixed overhead of about 260
    /// bytes for the structures that keep it.
    pub fn retained_bytes(&self) -> usize {
        self.retained_bytes.load(Ordering::Relaxed)
    }

    /// The configuration the store was built with.
    pub fn config(&self) -> &MemoryStoreConfig {
        &self.config
    }

    /// The shard of `dedup` that holds `key`.
    fn shard_of(&self, key: &DedupKey) -> usize {
        (self.dedup_hasher.hash_one(key) % DEDUP_SHARDS as u64) as usize
    }

    /// The handle of conversation `id`, if it exists.
    fn conversation(&self, id: &ConversationId) -> Option<Handle<RwLock<Conversation>>> {
        self.conversations.read().get(id).cloned()
    }

    /// Handles of `ids` (sorted, distinct), created if missing.
    fn conversations_or_create(&self, ids: &[ConversationId]) -> Vec<Handle<RwLock<Conversation>>> {
        {
            let map = self.conversations.read();
            let found: Vec<_> = ids.iter().filter_map(|id| map.get(id).cloned()).collect();
            if found.len() == ids.len() {
                return found;
            }
        }
        let mut map = self.conversations.write();
        ids.iter()
            .map(|id| map.entry(id.clone()).or_default().clone())
            .collect()
    }

    /// The handle of user `id`, if it exists.
    fn user(&self, id: &UserId) -> Option<Handle<Mutex<UserData>>> {
        self.users.read().get(id).cloned()
    }

    /// Handles of `ids` (sorted, distinct), created if missing.
    fn users_or_create(&self, ids: &[UserId]) -> Vec<Handle<Mutex<UserData>>> {
        {
            let map = self.users.read();
            let found: Vec<_> = ids.iter().filter_map(|id| map.get(id).cloned()).collect();
            if found.len() == ids.len() {
                return found;
            }
        }
        let mut map = self.users.write();
        ids.iter()
            .map(|id| map.entry(id.clone()).or_default().clone())
            .collect()
    }
}

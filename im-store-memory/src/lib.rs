#![doc = include_str!("../README.md")]

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use im_core::error::StoreError;
use im_core::ids::{ChannelId, ConversationId, DedupKey, Seq, UserId};
use im_core::store::{
    AppendRequest, ConversationState, ConversationStatesRequest, CursorUpdate, Cursors, InboxEntry,
    InboxPage, InboxRequest, Inboxes, Membership, RangePage, RangeRequest, StoreResult,
    StoredMessage, Timeline,
};
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockWriteGuard};

#[cfg(test)]
mod tests;

/// Number of shards of the idempotency index.
const DEDUP_SHARDS: usize = 64;

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
///         .with_timeline_capacity(Some(5_000)),
/// );
/// assert_eq!(store.config().inbox_capacity, 1_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryStoreConfig {
    /// Entries kept per user inbox; older entries are dropped and
    /// `first_retained_version` advances. Default 10,000. `0` keeps no
    /// entry (versions still advance).
    pub inbox_capacity: usize,
    /// Messages kept per conversation: `None` keeps every message (memory
    /// grows with history); `Some(n)` keeps the newest `n`, dropping older
    /// ones together with their idempotency keys. Default `None`.
    pub timeline_capacity: Option<usize>,
}

impl Default for MemoryStoreConfig {
    fn default() -> Self {
        Self {
            inbox_capacity: 10_000,
            timeline_capacity: None,
        }
    }
}

impl MemoryStoreConfig {
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
}

/// One conversation's timeline. Invariant: `messages` holds exactly the
/// seqs `head - len + 1 ..= head`, in order.
#[derive(Default)]
struct Conversation {
    head: Seq,
    messages: VecDeque<StoredMessage>,
    /// Global commit stamp of the newest append (0: never appended).
    activity: u64,
}

impl Conversation {
    fn first_retained(&self) -> Seq {
        self.head - self.messages.len() as Seq + 1
    }

    fn get(&self, seq: Seq) -> Option<&StoredMessage> {
        let first = self.first_retained();
        if seq < first || seq > self.head {
            return None;
        }
        usize::try_from(seq - first)
            .ok()
            .and_then(|i| self.messages.get(i))
    }

    /// Messages from others with seq > `read_seq`, counted up to `cap`,
    /// scanning from the head backwards. Only retained messages count.
    fn unread(&self, user: &UserId, read_seq: Seq, cap: u32) -> u32 {
        let mut n = 0u32;
        for m in self.messages.iter().rev() {
            if n >= cap || m.seq <= read_seq {
                break;
            }
            if m.sender != *user {
                n += 1;
            }
        }
        n
    }
}

/// A user's delivered and read cursors in one conversation.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    delivered: Seq,
    read: Seq,
}

/// Everything kept per user.
#[derive(Default)]
struct UserData {
    /// Newest inbox version (0: never had an entry).
    inbox_head: u64,
    /// Entries `inbox_head - len + 1 ..= inbox_head`.
    inbox: VecDeque<InboxEntry>,
    cursors: HashMap<ConversationId, Cursor>,
    /// Direct conversations with at least one message, in which the user is
    /// one of the two participants.
    directs: HashSet<ConversationId>,
}

impl UserData {
    fn first_retained_version(&self) -> u64 {
        self.inbox_head - self.inbox.len() as u64 + 1
    }
}

/// Durable group membership.
#[derive(Default)]
struct Groups {
    members: HashMap<ChannelId, BTreeSet<UserId>>,
    by_user: HashMap<UserId, BTreeSet<ChannelId>>,
}

type Handle<T> = Arc<T>;
type DedupShard = Mutex<HashMap<DedupKey, (ConversationId, Seq)>>;

/// The in-memory store: the embedded default and the reference semantics of
/// the [`im_core::store`] traits.
///
/// # Semantics worth knowing
///
/// - **Retention.** Inboxes keep the newest
///   [`inbox_capacity`](MemoryStoreConfig::inbox_capacity) entries per user.
///   Timelines keep everything, or the newest
///   [`timeline_capacity`](MemoryStoreConfig::timeline_capacity) messages per
///   conversation; a dropped message's idempotency key is forgotten with it
///   (so [`Timeline::find_by_dedup_keys`] never reports a key whose message
///   it cannot return). Cursors, membership, per-conversation heads and the
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
///   `add_members` reports [`StoreError::NotFound`].
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
    config: MemoryStoreConfig,
    conversations: RwLock<HashMap<ConversationId, Handle<RwLock<Conversation>>>>,
    users: RwLock<HashMap<UserId, Handle<Mutex<UserData>>>>,
    dedup: Vec<DedupShard>,
    dedup_hasher: RandomState,
    groups: RwLock<Groups>,
    /// Source of activity stamps (ordering of the conversation list).
    activity: AtomicU64,
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
    /// An empty store with the default [`MemoryStoreConfig`].
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
            activity: AtomicU64::new(0),
        }
    }

    /// The configuration the store was built with.
    pub fn config(&self) -> &MemoryStoreConfig {
        &self.config
    }

    fn shard_of(&self, key: &DedupKey) -> usize {
        (self.dedup_hasher.hash_one(key) % DEDUP_SHARDS as u64) as usize
    }

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

    fn append_sync(&self, req: AppendRequest) -> StoreResult<()> {
        if req.messages.is_empty() {
            return Ok(());
        }

        // Everything that needs no lock is prepared first.
        let mut conv_ids: Vec<ConversationId> = req
            .messages
            .iter()
            .map(|m| m.message.conversation.clone())
            .collect();
        conv_ids.sort_unstable();
        conv_ids.dedup();
        let conv_of: Vec<usize> = req
            .messages
            .iter()
            .map(|m| index_of(&conv_ids, &m.message.conversation))
            .collect();
        let mut new_counts = vec![0usize; conv_ids.len()];
        for &c in &conv_of {
            new_counts[c] += 1;
        }
        let mut keys: Vec<Option<(DedupKey, usize)>> = req
            .messages
            .iter()
            .map(|m| {
                m.message.dedup_key().map(|k| {
                    let shard = self.shard_of(&k);
                    (k, shard)
                })
            })
            .collect();
        let mut user_ids: Vec<UserId> = Vec::new();
        for m in &req.messages {
            user_ids.extend(m.inbox_recipients.iter().cloned());
            if let ConversationId::Direct(pair) = &m.message.conversation {
                user_ids.extend(pair.participants().cloned());
            }
        }
        user_ids.sort_unstable();
        user_ids.dedup();
        let conv_handles = self.conversations_or_create(&conv_ids);
        let user_handles = self.users_or_create(&user_ids);

        // Lock order: conversations by id, dedup shards by index, users by id.
        let mut convs: Vec<RwLockWriteGuard<'_, Conversation>> =
            conv_handles.iter().map(|h| h.write()).collect();

        // Keys of retained messages this batch will push out of retention.
        let mut evicted_keys: Vec<DedupKey> = Vec::new();
        if let Some(cap) = self.config.timeline_capacity {
            for (c, conv) in convs.iter().enumerate() {
                let excess = (conv.messages.len() + new_counts[c]).saturating_sub(cap);
                evicted_keys.extend(
                    conv.messages
                        .iter()
                        .take(excess)
                        .filter_map(|m| m.dedup_key()),
                );
            }
        }
        let mut shard_ids: Vec<usize> = keys
            .iter()
            .flatten()
            .map(|(_, s)| *s)
            .chain(evicted_keys.iter().map(|k| self.shard_of(k)))
            .collect();
        shard_ids.sort_unstable();
        shard_ids.dedup();
        let mut shards: Vec<MutexGuard<'_, HashMap<DedupKey, (ConversationId, Seq)>>> =
            shard_ids.iter().map(|&s| self.dedup[s].lock()).collect();

        // Check 1: idempotency keys, committed or repeated in the batch.
        {
            let mut seen: HashSet<&DedupKey> = HashSet::new();
            let mut reported: HashSet<&DedupKey> = HashSet::new();
            let mut duplicates = Vec::new();
            for (key, shard) in keys.iter().flatten() {
                let committed = shards[index_of(&shard_ids, shard)].contains_key(key);
                let repeated = !seen.insert(key);
                if (committed || repeated) && reported.insert(key) {
                    duplicates.push(key.clone());
                }
            }
            if !duplicates.is_empty() {
                return Err(StoreError::Duplicate(duplicates));
            }
        }

        // Check 2: every conversation continues its head with no gap.
        {
            let mut heads: Vec<Seq> = convs.iter().map(|c| c.head).collect();
            for (m, &c) in req.messages.iter().zip(&conv_of) {
                if Some(m.message.seq) != heads[c].checked_add(1) {
                    return Err(StoreError::SeqConflict {
                        conversation: m.message.conversation.clone(),
                        expected: m.message.seq.saturating_sub(1),
                        actual: heads[c],
                    });
                }
                heads[c] = m.message.seq;
            }
        }

        // Write.
        let mut users: Vec<MutexGuard<'_, UserData>> =
            user_handles.iter().map(|h| h.lock()).collect();
        let inbox_capacity = self.config.inbox_capacity;
        let stamp = self
            .activity
            .fetch_add(req.messages.len() as u64, Ordering::Relaxed);
        // `written[u] == i + 1`: user `u` already got an entry for message `i`.
        let mut written = vec![0usize; users.len()];
        for (i, (new, &c)) in req.messages.into_iter().zip(&conv_of).enumerate() {
            let message = new.message;
            let seq = message.seq;
            if let Some((key, shard)) = keys[i].take() {
                shards[index_of(&shard_ids, &shard)]
                    .insert(key, (message.conversation.clone(), seq));
            }
            for r in &new.inbox_recipients {
                let u = index_of(&user_ids, r);
                if written[u] == i + 1 {
                    continue;
                }
                written[u] = i + 1;
                let user = &mut users[u];
                user.inbox_head += 1;
                let version = user.inbox_head;
                user.inbox.push_back(InboxEntry {
                    version,
                    conversation: message.conversation.clone(),
                    seq,
                });
                while user.inbox.len() > inbox_capacity {
                    user.inbox.pop_front();
                }
            }
            if let ConversationId::Direct(pair) = &message.conversation {
                for p in pair.participants() {
                    let user = &mut users[index_of(&user_ids, p)];
                    if !user.directs.contains(&message.conversation) {
                        user.directs.insert(message.conversation.clone());
                    }
                }
            }
            let conv = &mut convs[c];
            conv.head = seq;
            conv.activity = stamp + i as u64 + 1;
            conv.messages.push_back(message);
        }
        if let Some(cap) = self.config.timeline_capacity {
            for conv in &mut convs {
                while conv.messages.len() > cap {
                    let Some(old) = conv.messages.pop_front() else {
                        break;
                    };
                    if let Some(key) = old.dedup_key() {
                        let s = self.shard_of(&key);
                        if let Ok(j) = shard_ids.binary_search(&s) {
                            shards[j].remove(&key);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn read_range_sync(&self, req: &RangeRequest) -> RangePage {
        let Some(handle) = self.conversation(&req.conversation) else {
            return RangePage {
                messages: Vec::new(),
                head_seq: 0,
                first_retained_seq: 1,
            };
        };
        let conv = handle.read();
        let first = conv.first_retained();
        let lo = req.after_seq.saturating_add(1).max(first);
        let hi = req.until_seq.map_or(conv.head, |u| u.min(conv.head));
        let mut messages = Vec::new();
        if lo <= hi && req.limit > 0 {
            let span = hi - lo + 1;
            let take = span.min(u64::try_from(req.limit).unwrap_or(u64::MAX));
            let start = if req.newest { hi - take + 1 } else { lo };
            let skip = usize::try_from(start - first).unwrap_or(usize::MAX);
            let take = usize::try_from(take).unwrap_or(usize::MAX);
            messages = conv
                .messages
                .iter()
                .skip(skip)
                .take(take)
                .cloned()
                .collect();
        }
        RangePage {
            messages,
            head_seq: conv.head,
            first_retained_seq: first,
        }
    }

    fn read_inbox_sync(&self, req: &InboxRequest) -> InboxPage {
        let Some(handle) = self.user(&req.user) else {
            return InboxPage {
                entries: Vec::new(),
                head_version: 0,
                first_retained_version: 1,
            };
        };
        let user = handle.lock();
        let first = user.first_retained_version();
        let start = req.after_version.saturating_add(1).max(first);
        let skip = usize::try_from(start - first).unwrap_or(usize::MAX);
        InboxPage {
            entries: user
                .inbox
                .iter()
                .skip(skip)
                .take(req.limit)
                .cloned()
                .collect(),
            head_version: user.inbox_head,
            first_retained_version: first,
        }
    }

    fn update_cursors_sync(&self, updates: Vec<CursorUpdate>) {
        for u in updates {
            let Some(handle) = self.users_or_create(std::slice::from_ref(&u.user)).pop() else {
                continue;
            };
            let mut user = handle.lock();
            let cursor = user.cursors.entry(u.conversation).or_default();
            if let Some(d) = u.delivered {
                cursor.delivered = cursor.delivered.max(d);
            }
            if let Some(r) = u.read {
                cursor.read = cursor.read.max(r);
            }
            cursor.delivered = cursor.delivered.max(cursor.read);
        }
    }

    fn conversation_states_sync(&self, req: ConversationStatesRequest) -> Vec<ConversationState> {
        let listing = req.only.is_none();
        let user_handle = self.user(&req.user);
        let ids: Vec<ConversationId> = match req.only {
            Some(list) => list,
            None => {
                let mut ids: Vec<ConversationId> = user_handle
                    .as_ref()
                    .map(|h| h.lock().directs.iter().cloned().collect())
                    .unwrap_or_default();
                if let Some(groups) = self.groups.read().by_user.get(&req.user) {
                    ids.extend(groups.iter().cloned().map(ConversationId::Group));
                }
                ids
            }
        };
        let handles: Vec<Option<Handle<RwLock<Conversation>>>> = {
            let map = self.conversations.read();
            ids.iter().map(|c| map.get(c).cloned()).collect()
        };
        let mut picked: Vec<usize> = (0..ids.len()).collect();
        if listing {
            let activity: Vec<u64> = handles
                .iter()
                .map(|h| h.as_ref().map_or(0, |h| h.read().activity))
                .collect();
            picked.sort_unstable_by(|&a, &b| {
                activity[b]
                    .cmp(&activity[a])
                    .then_with(|| ids[a].cmp(&ids[b]))
            });
        }
        picked.truncate(req.limit);
        let cursors: Vec<Cursor> = {
            let user = user_handle.as_ref().map(|h| h.lock());
            picked
                .iter()
                .map(|&i| {
                    user.as_ref()
                        .and_then(|u| u.cursors.get(&ids[i]).copied())
                        .unwrap_or_default()
                })
                .collect()
        };
        picked
            .into_iter()
            .zip(cursors)
            .map(|(i, cursor)| {
                let mut state = ConversationState {
                    conversation: ids[i].clone(),
                    head_seq: 0,
                    delivered_seq: cursor.delivered,
                    read_seq: cursor.read,
                    unread: 0,
                    last_message: None,
                };
                if let Some(handle) = &handles[i] {
                    let conv = handle.read();
                    state.head_seq = conv.head;
                    state.unread = conv.unread(&req.user, cursor.read, req.unread_cap);
                    state.last_message = conv.messages.back().cloned();
                }
                state
            })
            .collect()
    }
}

/// Position of `item` in the sorted, distinct `items` (present by construction).
fn index_of<T: Ord>(items: &[T], item: &T) -> usize {
    items.binary_search(item).unwrap_or_else(|i| i)
}

#[async_trait]
impl Timeline for MemoryStore {
    async fn append(&self, req: AppendRequest) -> StoreResult<()> {
        self.append_sync(req)
    }

    async fn head_seqs(&self, conversations: &[ConversationId]) -> StoreResult<Vec<Seq>> {
        let handles: Vec<_> = {
            let map = self.conversations.read();
            conversations.iter().map(|c| map.get(c).cloned()).collect()
        };
        Ok(handles
            .iter()
            .map(|h| h.as_ref().map_or(0, |h| h.read().head))
            .collect())
    }

    async fn read_range(&self, req: RangeRequest) -> StoreResult<RangePage> {
        Ok(self.read_range_sync(&req))
    }

    async fn get_messages(
        &self,
        refs: &[(ConversationId, Seq)],
    ) -> StoreResult<Vec<StoredMessage>> {
        let handles: Vec<_> = {
            let map = self.conversations.read();
            refs.iter().map(|(c, _)| map.get(c).cloned()).collect()
        };
        Ok(refs
            .iter()
            .zip(&handles)
            .filter_map(|((_, seq), h)| h.as_ref()?.read().get(*seq).cloned())
            .collect())
    }

    async fn find_by_dedup_keys(
        &self,
        keys: &[DedupKey],
    ) -> StoreResult<Vec<Option<StoredMessage>>> {
        Ok(keys
            .iter()
            .map(|k| {
                // The index shard is released before the conversation is locked.
                let (conversation, seq) = self.dedup[self.shard_of(k)].lock().get(k).cloned()?;
                let handle = self.conversation(&conversation)?;
                handle.read().get(seq).cloned()
            })
            .collect())
    }
}

#[async_trait]
impl Inboxes for MemoryStore {
    async fn read_inbox(&self, req: InboxRequest) -> StoreResult<InboxPage> {
        Ok(self.read_inbox_sync(&req))
    }

    async fn inbox_head(&self, user: &UserId) -> StoreResult<u64> {
        Ok(self.user(user).map_or(0, |h| h.lock().inbox_head))
    }
}

#[async_trait]
impl Cursors for MemoryStore {
    async fn update_cursors(&self, updates: Vec<CursorUpdate>) -> StoreResult<()> {
        self.update_cursors_sync(updates);
        Ok(())
    }

    async fn conversation_states(
        &self,
        req: ConversationStatesRequest,
    ) -> StoreResult<Vec<ConversationState>> {
        Ok(self.conversation_states_sync(req))
    }
}

#[async_trait]
impl Membership for MemoryStore {
    async fn create_group(&self, group: &ChannelId, members: &[UserId]) -> StoreResult<()> {
        let mut groups = self.groups.write();
        if groups.members.contains_key(group) {
            return Err(StoreError::AlreadyExists(format!("group {group}")));
        }
        groups.members.insert(group.clone(), BTreeSet::new());
        groups.add(group, members);
        Ok(())
    }

    async fn add_members(&self, group: &ChannelId, users: &[UserId]) -> StoreResult<()> {
        let mut groups = self.groups.write();
        if !groups.members.contains_key(group) {
            return Err(StoreError::NotFound(format!("group {group}")));
        }
        groups.add(group, users);
        Ok(())
    }

    async fn remove_members(&self, group: &ChannelId, users: &[UserId]) -> StoreResult<()> {
        let mut groups = self.groups.write();
        let Groups { members, by_user } = &mut *groups;
        let Some(set) = members.get_mut(group) else {
            return Ok(());
        };
        for u in users {
            if set.remove(u)
                && let Some(of_user) = by_user.get_mut(u)
            {
                of_user.remove(group);
                if of_user.is_empty() {
                    by_user.remove(u);
                }
            }
        }
        Ok(())
    }

    async fn member_count(&self, group: &ChannelId) -> StoreResult<Option<u64>> {
        Ok(self
            .groups
            .read()
            .members
            .get(group)
            .map(|m| m.len() as u64))
    }

    async fn are_members(&self, group: &ChannelId, users: &[UserId]) -> StoreResult<Vec<bool>> {
        let groups = self.groups.read();
        let set = groups.members.get(group);
        Ok(users
            .iter()
            .map(|u| set.is_some_and(|s| s.contains(u)))
            .collect())
    }

    async fn members(
        &self,
        group: &ChannelId,
        after: Option<&UserId>,
        limit: usize,
    ) -> StoreResult<Vec<UserId>> {
        let groups = self.groups.read();
        let Some(set) = groups.members.get(group) else {
            return Ok(Vec::new());
        };
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(set
            .range::<UserId, _>((lower, Bound::Unbounded))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn user_groups(&self, user: &UserId) -> StoreResult<Vec<ChannelId>> {
        Ok(self
            .groups
            .read()
            .by_user
            .get(user)
            .map(|g| g.iter().cloned().collect())
            .unwrap_or_default())
    }
}

impl Groups {
    /// Adds `users` to the existing `group`.
    fn add(&mut self, group: &ChannelId, users: &[UserId]) {
        let Some(set) = self.members.get_mut(group) else {
            return;
        };
        for u in users {
            if set.insert(u.clone()) {
                self.by_user
                    .entry(u.clone())
                    .or_default()
                    .insert(group.clone());
            }
        }
    }
}

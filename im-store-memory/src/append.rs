//! The append: a batch laid out without any lock, then checked and written
//! under the locks of everything it touches, taken in a fixed order
//! (conversations by id, then index shards, then users by id).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use im_core::error::StoreError;
use im_core::ids::{ConversationId, DedupKey, Seq, UserId};
use im_core::store::{
    AppendRequest, InboxEntry, NewMessage, StoreResult, StoredMessage, apply_event, check_event,
};
use parking_lot::{MutexGuard, RwLockWriteGuard};

use crate::MemoryStore;
use crate::state::{Conversation, UserData};

/// An append batch laid out before any lock is taken.
struct Plan {
    /// The batch's conversations, sorted and distinct.
    conv_ids: Vec<ConversationId>,
    /// Index in `conv_ids` of each message's conversation.
    conv_of: Vec<usize>,
    /// Messages the batch adds to each conversation (`conv_ids` order).
    new_counts: Vec<usize>,
    /// Each message's idempotency key, if any, with its index shard.
    keys: Vec<Option<(DedupKey, usize)>>,
    /// Inbox recipients and direct participants, sorted and distinct.
    user_ids: Vec<UserId>,
}

/// The index shards an append holds: `guards[j]` locks shard `ids[j]`.
struct LockedShards<'a> {
    /// Shard numbers, sorted and distinct.
    ids: Vec<usize>,
    /// One guard per shard in `ids`.
    guards: Vec<MutexGuard<'a, HashMap<DedupKey, (ConversationId, Seq)>>>,
}

/// The users an append holds (`Plan::user_ids` order), and which message
/// each one last got an inbox entry for.
struct LockedUsers<'a, 'p> {
    /// The users, sorted and distinct.
    ids: &'p [UserId],
    /// One guard per user in `ids`.
    guards: Vec<MutexGuard<'a, UserData>>,
    /// `written[u] == i + 1`: user `u` already got an entry for message `i`.
    written: Vec<usize>,
}

impl MemoryStore {
    /// [`Timeline::append`](im_core::store::Timeline::append): checks the
    /// whole batch (idempotency keys, then seqs) and writes all of it or
    /// nothing; then, its locks released, evicts down to the byte budget.
    pub(crate) fn append_sync(&self, req: AppendRequest) -> StoreResult<()> {
        if req.messages.is_empty() {
            return Ok(());
        }
        self.append_locked(req)?;
        self.enforce_byte_budget();
        Ok(())
    }

    /// The append itself, under the locks of everything it touches.
    fn append_locked(&self, req: AppendRequest) -> StoreResult<()> {
        // Everything that needs no lock is prepared first.
        let mut plan = self.plan(&req);
        let conv_handles = self.conversations_or_create(&plan.conv_ids);
        let user_handles = self.users_or_create(&plan.user_ids);

        // Lock order: conversations by id, dedup shards by index, users by id.
        let mut convs: Vec<RwLockWriteGuard<'_, Conversation>> =
            conv_handles.iter().map(|h| h.write()).collect();
        let evicted_keys = self.evicted_keys(&convs, &plan.new_counts);
        let mut shards = self.lock_shards(&plan.keys, &evicted_keys);

        // Check 1: idempotency keys, committed or repeated in the batch.
        check_duplicates(&plan.keys, &shards)?;
        // Check 2: every conversation continues its head with no gap.
        check_seqs(&req, &plan.conv_of, &convs)?;
        // Check 3: every event message applies to its target.
        check_events(&req, &plan.conv_of, &convs, self.config.timeline_capacity)?;

        // Write.
        let before: Vec<(Option<u64>, usize)> =
            convs.iter().map(|c| (c.oldest_stamp(), c.bytes)).collect();
        let mut users = LockedUsers {
            ids: &plan.user_ids,
            guards: user_handles.iter().map(|h| h.lock()).collect(),
            written: vec![0usize; plan.user_ids.len()],
        };
        let inbox_capacity = self.config.inbox_capacity;
        let stamp = self
            .activity
            .fetch_add(req.messages.len() as u64, Ordering::Relaxed);
        for (i, (new, &c)) in req.messages.into_iter().zip(&plan.conv_of).enumerate() {
            let NewMessage {
                message,
                inbox_recipients,
            } = new;
            let seq = message.seq;
            if let Some((key, shard)) = plan.keys[i].take() {
                shards.guards[index_of(&shards.ids, &shard)]
                    .insert(key, (message.conversation.clone(), seq));
            }
            users.push_entries(
                i,
                &inbox_recipients,
                &message.conversation,
                seq,
                inbox_capacity,
            );
            users.note_direct(&message.conversation);
            let conv = &mut convs[c];
            let committed = stamp + i as u64 + 1;
            conv.activity = committed;
            let event = message.event.is_some();
            conv.push(message, committed);
            if event {
                conv.apply_newest_event();
            }
        }
        if let Some(cap) = self.config.timeline_capacity {
            self.trim_timelines(cap, &mut convs, &mut shards);
        }
        // Still under the conversations' locks, so that the total and the
        // index always agree with the conversations.
        self.account(&plan.conv_ids, &before, &convs);
        Ok(())
    }

    /// Lays `req` out: its conversations, keys and users.
    fn plan(&self, req: &AppendRequest) -> Plan {
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
        let keys: Vec<Option<(DedupKey, usize)>> = req
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
        Plan {
            conv_ids,
            conv_of,
            new_counts,
            keys,
            user_ids,
        }
    }

    /// Keys of retained messages this batch will push out of retention
    /// (`new_counts`: messages it adds to each of `convs`).
    fn evicted_keys(
        &self,
        convs: &[RwLockWriteGuard<'_, Conversation>],
        new_counts: &[usize],
    ) -> Vec<DedupKey> {
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
        evicted_keys
    }

    /// Locks, in shard order, the index shards of the batch's `keys` and of
    /// the `evicted` keys.
    fn lock_shards(
        &self,
        keys: &[Option<(DedupKey, usize)>],
        evicted: &[DedupKey],
    ) -> LockedShards<'_> {
        let mut ids: Vec<usize> = keys
            .iter()
            .flatten()
            .map(|(_, s)| *s)
            .chain(evicted.iter().map(|k| self.shard_of(k)))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let guards = ids.iter().map(|&s| self.dedup[s].lock()).collect();
        LockedShards { ids, guards }
    }

    /// Drops each conversation's messages past `cap`, oldest first, with
    /// their idempotency keys.
    fn trim_timelines(
        &self,
        cap: usize,
        convs: &mut [RwLockWriteGuard<'_, Conversation>],
        shards: &mut LockedShards<'_>,
    ) {
        for conv in convs {
            while conv.messages.len() > cap {
                let Some(old) = conv.pop_oldest() else {
                    break;
                };
                if let Some(key) = old.dedup_key() {
                    let s = self.shard_of(&key);
                    if let Ok(j) = shards.ids.binary_search(&s) {
                        shards.guards[j].remove(&key);
                    }
                }
            }
        }
    }
}

impl LockedUsers<'_, '_> {
    /// Gives each distinct recipient of message `i` its next inbox entry,
    /// dropping the oldest entries past `capacity`.
    fn push_entries(
        &mut self,
        i: usize,
        recipients: &[UserId],
        conversation: &ConversationId,
        seq: Seq,
        capacity: usize,
    ) {
        for r in recipients {
            let u = index_of(self.ids, r);
            if self.written[u] == i + 1 {
                continue;
            }
            self.written[u] = i + 1;
            let user = &mut self.guards[u];
            user.inbox_head += 1;
            let version = user.inbox_head;
            user.inbox.push_back(InboxEntry {
                version,
                conversation: conversation.clone(),
                seq,
            });
            while user.inbox.len() > capacity {
                user.inbox.pop_front();
            }
        }
    }

    /// Lists a direct `conversation` among both participants' directs.
    fn note_direct(&mut self, conversation: &ConversationId) {
        if let ConversationId::Direct(pair) = conversation {
            for p in pair.participants() {
                let user = &mut self.guards[index_of(self.ids, p)];
                if !user.directs.contains(conversation) {
                    user.directs.insert(conversation.clone());
                }
            }
        }
    }
}

/// Refuses the batch if any of its `keys` is committed (in `shards`) or
/// repeated inside it, listing each such key once, in batch order.
fn check_duplicates(
    keys: &[Option<(DedupKey, usize)>],
    shards: &LockedShards<'_>,
) -> StoreResult<()> {
    let mut seen: HashSet<&DedupKey> = HashSet::new();
    let mut reported: HashSet<&DedupKey> = HashSet::new();
    let mut duplicates = Vec::new();
    for (key, shard) in keys.iter().flatten() {
        let committed = shards.guards[index_of(&shards.ids, shard)].contains_key(key);
        let repeated = !seen.insert(key);
        if (committed || repeated) && reported.insert(key) {
            duplicates.push(key.clone());
        }
    }
    if !duplicates.is_empty() {
        return Err(StoreError::Duplicate(duplicates));
    }
    Ok(())
}

/// Refuses the batch at its first message that does not continue its
/// conversation (`conv_of`: index in `convs` of each message's conversation).
fn check_seqs(
    req: &AppendRequest,
    conv_of: &[usize],
    convs: &[RwLockWriteGuard<'_, Conversation>],
) -> StoreResult<()> {
    let mut heads: Vec<Seq> = convs.iter().map(|c| c.head).collect();
    for (m, &c) in req.messages.iter().zip(conv_of) {
        if Some(m.message.seq) != heads[c].checked_add(1) {
            return Err(StoreError::SeqConflict {
                conversation: m.message.conversation.clone(),
                expected: m.message.seq.saturating_sub(1),
                actual: heads[c],
            });
        }
        heads[c] = m.message.seq;
    }
    Ok(())
}

/// Refuses the batch at its first event message that does not apply to its
/// target as the target stands at that point of the batch (`store::check_event`);
/// a target the batch pushes out of the timeline `capacity` counts as not
/// retained.
fn check_events(
    req: &AppendRequest,
    conv_of: &[usize],
    convs: &[RwLockWriteGuard<'_, Conversation>],
    capacity: Option<usize>,
) -> StoreResult<()> {
    if req.messages.iter().all(|m| m.message.event.is_none()) {
        return Ok(());
    }
    // The heads after the batch (seqs were checked to continue them).
    let mut heads: Vec<Seq> = convs.iter().map(|c| c.head).collect();
    for (m, &c) in req.messages.iter().zip(conv_of) {
        heads[c] = m.message.seq;
    }
    let retained =
        |c: usize, seq: Seq| capacity.is_none_or(|cap| seq.saturating_add(cap as Seq) > heads[c]);
    // Targets as earlier messages of the batch leave them.
    let mut changed: HashMap<(usize, Seq), StoredMessage> = HashMap::new();
    for (m, &c) in req.messages.iter().zip(conv_of) {
        let m = &m.message;
        if let Some(event) = &m.event {
            let key = (c, event.target());
            let current = match changed.get(&key) {
                Some(t) => Some(t.clone()),
                None => convs[c].get(event.target()).cloned(),
            }
            .filter(|_| retained(c, event.target()));
            check_event(current.as_ref(), event).map_err(StoreError::Rejected)?;
            if let Some(mut t) = current {
                apply_event(&mut t, m);
                changed.insert(key, t);
            }
        }
        changed.insert((c, m.seq), m.clone());
    }
    Ok(())
}

/// Position of `item` in the sorted, distinct `items` (present by construction).
fn index_of<T: Ord>(items: &[T], item: &T) -> usize {
    items.binary_search(item).unwrap_or_else(|i| i)
}

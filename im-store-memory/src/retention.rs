//! The byte budget: what the retained messages are charged, and eviction of
//! the store's oldest messages when the total passes
//! [`max_total_bytes`](crate::MemoryStoreConfig::max_total_bytes).
//!
//! Each conversation holding a message sits in `oldest` under the commit
//! stamp of its oldest message, so the store's oldest message is the first
//! entry's conversation's front: an eviction is O(log conversations), and an
//! append touches the index only when a conversation's oldest message
//! changes (its first message, or a drop by the timeline capacity).
//!
//! Locks: `oldest` is taken after conversation locks, never before one, and
//! nothing is locked while it is held. The eviction holds one conversation
//! and then one index shard, the append's order.

use std::sync::atomic::Ordering;

use im_core::ids::ConversationId;
use parking_lot::RwLockWriteGuard;

use crate::MemoryStore;
use crate::state::Conversation;

impl MemoryStore {
    /// Brings the total and the index up to date with an append's changes
    /// to `convs` (`ids`), each of which was `before` (oldest stamp, bytes)
    /// it. Called with the conversations still locked.
    pub(crate) fn account(
        &self,
        ids: &[ConversationId],
        before: &[(Option<u64>, usize)],
        convs: &[RwLockWriteGuard<'_, Conversation>],
    ) {
        let (mut added, mut dropped) = (0usize, 0usize);
        for (conv, (_, was)) in convs.iter().zip(before) {
            added += conv.bytes.saturating_sub(*was);
            dropped += was.saturating_sub(conv.bytes);
        }
        if added >= dropped {
            self.retained_bytes
                .fetch_add(added - dropped, Ordering::Relaxed);
        } else {
            self.retained_bytes
                .fetch_sub(dropped - added, Ordering::Relaxed);
        }
        if self.config.max_total_bytes.is_none() {
            return;
        }
        let mut oldest = self.oldest.lock();
        for ((conv, (was, _)), id) in convs.iter().zip(before).zip(ids) {
            let now = conv.oldest_stamp();
            if now != *was {
                if let Some(was) = was {
                    oldest.remove(&(*was, id.clone()));
                }
                if let Some(now) = now {
                    oldest.insert((now, id.clone()));
                }
            }
        }
    }

    /// Drops the store's oldest messages, one at a time, until the total is
    /// within the byte budget (or nothing is left). Called with no lock held.
    pub(crate) fn enforce_byte_budget(&self) {
        let Some(budget) = self.config.max_total_bytes else {
            return;
        };
        while self.retained_bytes() > budget {
            let Some((stamp, id)) = self.oldest.lock().first().cloned() else {
                return;
            };
            let Some(handle) = self.conversation(&id) else {
                // Unreachable: conversations are never removed.
                self.oldest.lock().remove(&(stamp, id));
                continue;
            };
            let mut conv = handle.write();
            if conv.oldest_stamp() != Some(stamp) {
                // Another append or eviction moved this conversation's
                // oldest message, and its index entry with it: look again.
                continue;
            }
            let Some(old) = conv.pop_oldest() else {
                continue;
            };
            self.retained_bytes
                .fetch_sub(crate::state::charge(&old), Ordering::Relaxed);
            {
                let mut oldest = self.oldest.lock();
                oldest.remove(&(stamp, id.clone()));
                if let Some(next) = conv.oldest_stamp() {
                    oldest.insert((next, id));
                }
            }
            if let Some(key) = old.dedup_key() {
                let mut shard = self.dedup[self.shard_of(&key)].lock();
                if shard.get(&key) == Some(&(old.conversation.clone(), old.seq)) {
                    shard.remove(&key);
                }
            }
            drop(conv);
        }
    }
}

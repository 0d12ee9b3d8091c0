//! Sequencing: which seq each committed message gets.
//!
//! Seqs are 1, 2, 3, … per conversation with no gap (contract 3). A batch's
//! seqs continue each conversation's head, so the owner must know the head.
//! The [`Sequencer`] is where that knowledge lives; it may be stale without
//! harm, because the store is the fence: an append whose first seq does not
//! continue the stored head is refused whole (`StoreError::SeqConflict`),
//! the engine then [`Sequencer::forget`]s and asks again. A timeline can
//! never fork or gap, whatever a sequencer answers.
//!
//! The default, [`CachedSequencer`], keeps recent heads in a bounded cache
//! in front of the store. A cluster can back the seam with shared state.

use std::fmt;

use async_trait::async_trait;

use crate::fast_hash::{FastHasher, FastMap};
use crate::ids::{ConversationId, Seq};
use crate::store::{Store, StoreResult};

/// Knows the heads of conversations so their owner can assign the next seqs.
#[async_trait]
pub trait Sequencer: Send + Sync + fmt::Debug + 'static {
    /// The head of each conversation (0 when empty), in order. May be stale:
    /// the store refuses an append that does not continue its real head.
    async fn heads(
        &self,
        store: &dyn Store,
        conversations: &[ConversationId],
    ) -> StoreResult<Vec<Seq>>;

    /// The store committed up to these heads.
    fn advanced(&self, heads: &[(ConversationId, Seq)]);

    /// These heads may be wrong (a conflict, or an append whose outcome is
    /// unknown): ask the store next time.
    fn forget(&self, conversations: &[ConversationId]);
}

/// The default sequencer: a bounded cache of heads in front of the store.
pub struct CachedSequencer {
    heads: quick_cache::sync::Cache<ConversationId, Seq, quick_cache::UnitWeighter, FastHasher>,
}

impl CachedSequencer {
    /// Remembers about `entries` heads; the rest are read from the store.
    pub fn new(entries: usize) -> Self {
        let entries = entries.max(1);
        Self {
            heads: quick_cache::sync::Cache::with(
                entries,
                entries as u64,
                quick_cache::UnitWeighter,
                FastHasher::default(),
                Default::default(),
            ),
        }
    }
}

impl fmt::Debug for CachedSequencer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedSequencer")
            .field("cached", &self.heads.len())
            .finish()
    }
}

#[async_trait]
impl Sequencer for CachedSequencer {
    async fn heads(
        &self,
        store: &dyn Store,
        conversations: &[ConversationId],
    ) -> StoreResult<Vec<Seq>> {
        let mut out: Vec<Option<Seq>> = conversations.iter().map(|c| self.heads.get(c)).collect();
        let missing: Vec<ConversationId> = conversations
            .iter()
            .zip(&out)
            .filter(|(_, h)| h.is_none())
            .map(|(c, _)| c.clone())
            .collect();
        if !missing.is_empty() {
            let mut loaded = store.head_seqs(&missing).await?.into_iter();
            for slot in out.iter_mut().filter(|h| h.is_none()) {
                *slot = Some(loaded.next().unwrap_or(0));
            }
        }
        Ok(out.into_iter().map(|h| h.unwrap_or(0)).collect())
    }

    fn advanced(&self, heads: &[(ConversationId, Seq)]) {
        for (c, h) in heads {
            self.heads.insert(c.clone(), *h);
        }
    }

    fn forget(&self, conversations: &[ConversationId]) {
        for c in conversations {
            self.heads.remove(c);
        }
    }
}

/// Seqs for one batch, and each conversation's head once the batch commits.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Assigned {
    /// One seq per message, in batch order.
    pub(crate) seqs: Vec<Seq>,
    /// The new head of every conversation in the batch.
    pub(crate) heads: FastMap<ConversationId, Seq>,
}

/// Gives each message the next seq of its conversation, continuing from
/// `heads` (a missing head means an empty conversation), in batch order.
pub(crate) fn assign_seqs<'a>(
    heads: &FastMap<ConversationId, Seq>,
    batch: impl IntoIterator<Item = &'a ConversationId>,
) -> Assigned {
    let mut out = Assigned::default();
    for conv in batch {
        let head = match out.heads.get_mut(conv) {
            Some(h) => h,
            None => out
                .heads
                .entry(conv.clone())
                .or_insert_with(|| heads.get(conv).copied().unwrap_or(0)),
        };
        *head += 1;
        out.seqs.push(*head);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn conv(i: u8) -> ConversationId {
        ConversationId::group(format!("g{i}")).expect("valid id")
    }

    proptest! {
        #[test]
        fn every_conversation_continues_its_head_without_gaps(
            heads in proptest::collection::vec(0u64..1_000, 5),
            batch in proptest::collection::vec(0u8..5, 0..200),
        ) {
            let known: FastMap<ConversationId, Seq> =
                heads.iter().enumerate().map(|(i, h)| (conv(i as u8), *h)).collect();
            let convs: Vec<ConversationId> = batch.iter().map(|&i| conv(i)).collect();
            let assigned = assign_seqs(&known, &convs);
            prop_assert_eq!(assigned.seqs.len(), convs.len());
            for c in known.keys() {
                let mine: Vec<Seq> = convs
                    .iter()
                    .zip(&assigned.seqs)
                    .filter(|(x, _)| *x == c)
                    .map(|(_, s)| *s)
                    .collect();
                let head = known[c];
                let expected: Vec<Seq> = (head + 1..=head + mine.len() as u64).collect();
                prop_assert_eq!(&mine, &expected, "seqs of {} continue its head in order", c);
                if mine.is_empty() {
                    prop_assert!(!assigned.heads.contains_key(c));
                } else {
                    prop_assert_eq!(assigned.heads[c], head + mine.len() as u64);
                }
            }
        }
    }

    #[test]
    fn unknown_conversations_start_at_one() {
        let a = conv(1);
        let assigned = assign_seqs(&FastMap::default(), [&a, &a, &a]);
        assert_eq!(assigned.seqs, [1, 2, 3]);
    }
}

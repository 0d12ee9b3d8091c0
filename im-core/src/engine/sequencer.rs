//! Seq assignment for one group commit. Pure, so it can be property-tested.

use std::collections::HashMap;

use crate::ids::{ConversationId, Seq};

/// Seqs for one batch, and each conversation's head once the batch commits.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Assigned {
    /// One seq per message, in batch order.
    pub(crate) seqs: Vec<Seq>,
    /// The new head of every conversation in the batch.
    pub(crate) heads: HashMap<ConversationId, Seq>,
}

/// Gives each message the next seq of its conversation, continuing from
/// `heads` (a missing head means an empty conversation), in batch order.
pub(crate) fn assign_seqs<'a>(
    heads: &HashMap<ConversationId, Seq>,
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
            let known: HashMap<ConversationId, Seq> =
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
        let assigned = assign_seqs(&HashMap::new(), [&a, &a, &a]);
        assert_eq!(assigned.seqs, [1, 2, 3]);
    }
}

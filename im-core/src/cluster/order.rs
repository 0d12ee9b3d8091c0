//! Per-conversation delivery order on one node, when batches arrive both
//! from local commits and from a lossy, reordering bus: a pure decision,
//! property-tested here, applied by `engine/cluster.rs`.

use crate::ids::Seq;

/// What to do with a batch of seqs `first..=last` of one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Deliver the batch from its `skip`th message on (the ones before were
    /// delivered already).
    Deliver {
        /// Messages at the front to leave out.
        skip: usize,
    },
    /// Read `(after, until]` from the store and deliver it first, then the
    /// whole batch.
    Repair {
        /// Delivered up to here.
        after: Seq,
        /// The seq before the batch.
        until: Seq,
    },
    /// Everything in it was delivered: drop it.
    Stale,
}

/// Decides a batch `first..=last` given what this node delivered of its
/// conversation (`None`: nothing known, start here). A gap of more than
/// `max_repair` messages is not repaired by pushing (the node had no
/// interest for a while, and the clients caught up by syncing): the batch
/// is delivered as it is and a client behind pulls on the seq jump.
pub(crate) fn admit(delivered: Option<Seq>, first: Seq, last: Seq, max_repair: u64) -> Admit {
    let Some(d) = delivered else {
        return Admit::Deliver { skip: 0 };
    };
    if last <= d {
        Admit::Stale
    } else if first <= d + 1 {
        Admit::Deliver {
            skip: usize::try_from(d + 1 - first).unwrap_or(usize::MAX),
        }
    } else if first - 1 - d > max_repair {
        Admit::Deliver { skip: 0 }
    } else {
        Admit::Repair {
            after: d,
            until: first - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_cases() {
        assert_eq!(admit(None, 5, 6, 10), Admit::Deliver { skip: 0 });
        assert_eq!(admit(Some(4), 5, 6, 10), Admit::Deliver { skip: 0 });
        assert_eq!(admit(Some(5), 5, 6, 10), Admit::Deliver { skip: 1 });
        assert_eq!(admit(Some(6), 5, 6, 10), Admit::Stale);
        assert_eq!(
            admit(Some(2), 5, 6, 10),
            Admit::Repair { after: 2, until: 4 }
        );
        assert_eq!(admit(Some(2), 50, 60, 10), Admit::Deliver { skip: 0 });
    }

    /// A timeline 1..=n cut into batches; each batch arrives zero, one or
    /// two times (lost, or on two subjects), in any order.
    fn arrivals() -> impl Strategy<Value = (u64, Vec<(u64, u64)>)> {
        (1u64..40, proptest::collection::vec(1u64..5, 1..20)).prop_flat_map(|(_, cuts)| {
            let mut batches = Vec::new();
            let mut next = 1;
            for c in cuts {
                batches.push((next, next + c - 1));
                next += c;
            }
            let n = next - 1;
            let copies = proptest::collection::vec(0usize..3, batches.len());
            (Just(n), Just(batches), copies).prop_flat_map(|(n, batches, copies)| {
                let mut seen: Vec<(u64, u64)> = Vec::new();
                for (b, c) in batches.iter().zip(copies) {
                    for _ in 0..c {
                        seen.push(*b);
                    }
                }
                (Just(n), Just(seen).prop_shuffle())
            })
        })
    }

    proptest! {
        /// Whatever arrives, lost, repeated or reordered, the node delivers
        /// a dense run of seqs, each once, in order, from the first batch it
        /// saw up to the highest it heard of.
        #[test]
        fn delivery_is_dense_ordered_and_once((_n, seen) in arrivals()) {
            let mut delivered: Option<Seq> = None;
            let mut out: Vec<Seq> = Vec::new();
            for (first, last) in &seen {
                match admit(delivered, *first, *last, u64::MAX) {
                    Admit::Stale => {}
                    Admit::Deliver { skip } => out.extend((*first..=*last).skip(skip)),
                    Admit::Repair { after, until } => {
                        out.extend(after + 1..=until);
                        out.extend(*first..=*last);
                    }
                }
                delivered = out.last().copied().or(delivered);
            }
            if let Some(&(start, _)) = seen.first() {
                let top = seen.iter().map(|b| b.1).max().unwrap_or(0);
                let expected: Vec<Seq> = (start..=top).collect();
                prop_assert_eq!(out, expected);
            }
        }
    }
}

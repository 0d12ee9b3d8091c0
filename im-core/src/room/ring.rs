//! The hot ring: a room's most recent messages, kept in memory for late
//! joiners and pull storms so they do not all go to the store.

use std::collections::VecDeque;

use crate::ids::Seq;

/// The last `capacity` items of a stream whose seqs go +1. Pure.
#[derive(Debug, Clone)]
pub struct HotRing<T> {
    capacity: usize,
    items: VecDeque<(Seq, T)>,
}

impl<T: Clone> HotRing<T> {
    /// An empty ring (a capacity of 0 keeps nothing).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            // Grows with use: an idle room costs nothing here.
            items: VecDeque::new(),
        }
    }

    /// Appends the item at `seq`. A seq that does not follow the last one
    /// (a gap or a restart) clears the ring first, so it always holds one
    /// unbroken run.
    pub fn push(&mut self, seq: Seq, item: T) {
        if self.capacity == 0 {
            return;
        }
        if let Some((last, _)) = self.items.back() {
            if seq <= *last {
                return;
            }
            if seq != last + 1 {
                self.items.clear();
            }
        }
        if self.items.len() == self.capacity {
            self.items.pop_front();
        }
        self.items.push_back((seq, item));
    }

    /// The newest seq held.
    pub fn head(&self) -> Option<Seq> {
        self.items.back().map(|(s, _)| *s)
    }

    /// The oldest seq held.
    pub fn first(&self) -> Option<Seq> {
        self.items.front().map(|(s, _)| *s)
    }

    /// Items in `(after, until]` (`until` capped at the ring's head), at most
    /// `limit`, the oldest or the `newest` of the range. `None` unless the
    /// ring holds the whole range, i.e. a store read would return nothing more.
    pub fn range(
        &self,
        after: Seq,
        until: Option<Seq>,
        limit: usize,
        newest: bool,
    ) -> Option<Vec<T>> {
        let first = self.first()?;
        let head = self.head()?;
        let until = until.map_or(head, |u| u.min(head));
        let from = after.saturating_add(1);
        if from < first {
            // Older history is not here, but the newest `limit` of the range
            // may all be (the common "show me the latest" pull).
            let covered = newest && until >= first && until + 1 - first >= limit as u64;
            if !covered {
                return None;
            }
        }
        if until <= after {
            return Some(Vec::new());
        }
        let lo = (from.max(first) - first) as usize;
        let hi = (until + 1 - first) as usize;
        let (lo, hi) = if newest {
            (hi.saturating_sub(limit).max(lo), hi)
        } else {
            (lo, hi.min(lo.saturating_add(limit)))
        };
        Some(self.items.range(lo..hi).map(|(_, t)| t.clone()).collect())
    }

    /// Items held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if nothing is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ranges_match_a_full_log(
            cap in 0usize..50, n in 0u64..120, after in 0u64..130,
            until in proptest::option::of(0u64..130), limit in 1usize..60, newest: bool,
        ) {
            let mut r = HotRing::new(cap);
            for s in 1..=n { r.push(s, s); }
            prop_assert!(r.len() <= cap);
            let full: Vec<u64> = (1..=n).collect();
            let u = until.map_or(n, |u| u.min(n));
            let want: Vec<u64> = full.iter().copied().filter(|s| *s > after && *s <= u).collect();
            let want = if newest {
                want[want.len().saturating_sub(limit)..].to_vec()
            } else {
                want.into_iter().take(limit).collect()
            };
            if let Some(got) = r.range(after, until, limit, newest) {
                prop_assert_eq!(got, want);
            } else {
                // A miss only when the ring lacks part of what was asked.
                prop_assert!(r.first().is_none_or(|f| after + 1 < f));
                if newest {
                    prop_assert!(r.first().is_none_or(|f| u + 1 < f + limit as u64));
                }
            }
        }
    }

    #[test]
    fn the_latest_page_is_served_even_when_older_history_is_not_held() {
        let mut r = HotRing::new(1000);
        for s in 1..=5000u64 {
            r.push(s, s);
        }
        let page = r.range(0, None, 30, true).expect("newest 30 are held");
        assert_eq!(page, (4971..=5000).collect::<Vec<_>>());
        assert!(r.range(0, None, 30, false).is_none(), "the oldest are not");
    }
}

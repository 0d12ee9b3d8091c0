//! A group's online members with a versioned change log, for incremental
//! sync (the NetEase seed: a client keeps the list and its version, and asks
//! only for what changed since, so a big group does not resend its list).
//!
//! [`OnlineLog`] counts each member's live sessions; a member's first
//! session coming up or last going down is a *change*, and every change
//! bumps the version by one. The last `capacity` changes are kept in a ring:
//! [`OnlineLog::since`] answers from them while they still reach back to the
//! asked version, and says "too old" (so the caller sends the full list,
//! [`OnlineLog::page`]) once they no longer do. Pure: no IO, no clock.

use std::collections::{BTreeMap, VecDeque};

/// Online members of one group, their change log and its version.
#[derive(Debug, Clone)]
pub struct OnlineLog<K> {
    /// Online members → their live sessions (always at least 1).
    online: BTreeMap<K, u32>,
    /// The version before the oldest kept change.
    base: u64,
    /// Kept changes, oldest first: `changes[i]` made version `base + 1 + i`.
    changes: VecDeque<Change<K>>,
    /// Most changes kept.
    capacity: usize,
}

/// A member came online (`online`) or went offline.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change<K> {
    member: K,
    online: bool,
}

/// What changed between an older version and the current one, each member
/// at most once and only if their state differs between the two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes<K> {
    /// Offline then, online now; sorted.
    pub came_online: Vec<K>,
    /// Online then, offline now; sorted.
    pub went_offline: Vec<K>,
}

impl<K: Ord + Clone> OnlineLog<K> {
    /// An empty log at `version`, keeping at most `capacity` changes (at
    /// least one). Give a log that replaces a dropped one a version beyond
    /// everything the old one handed out, so old versions read as too old.
    pub fn new(version: u64, capacity: usize) -> Self {
        Self {
            online: BTreeMap::new(),
            base: version,
            changes: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        self.base + self.changes.len() as u64
    }

    /// True when no member is online.
    pub fn is_empty(&self) -> bool {
        self.online.is_empty()
    }

    /// Members online.
    pub fn online_count(&self) -> usize {
        self.online.len()
    }

    /// True if `member` is online.
    pub fn is_online(&self, member: &K) -> bool {
        self.online.contains_key(member)
    }

    /// One more live session of `member`; true if they came online.
    pub fn session_up(&mut self, member: &K) -> bool {
        if let Some(n) = self.online.get_mut(member) {
            *n = n.saturating_add(1);
            return false;
        }
        self.online.insert(member.clone(), 1);
        self.record(member.clone(), true);
        true
    }

    /// One live session of `member` fewer; true if they went offline. A
    /// member with no counted session is left alone.
    pub fn session_down(&mut self, member: &K) -> bool {
        match self.online.get_mut(member) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.online.remove(member);
                self.record(member.clone(), false);
                true
            }
            None => false,
        }
    }

    fn record(&mut self, member: K, online: bool) {
        if self.changes.len() == self.capacity {
            self.changes.pop_front();
            self.base += 1;
        }
        self.changes.push_back(Change { member, online });
    }

    /// The changes from `version` to now, or `None` when the log no longer
    /// reaches back to it (or it is not a version of this log): send the
    /// full list instead.
    pub fn since(&self, version: u64) -> Option<Changes<K>> {
        if version < self.base || version > self.version() {
            return None;
        }
        let skip = usize::try_from(version - self.base).ok()?;
        // Member → (online at `version`, online now).
        let mut states: BTreeMap<&K, (bool, bool)> = BTreeMap::new();
        for c in self.changes.iter().skip(skip) {
            states
                .entry(&c.member)
                .and_modify(|s| s.1 = c.online)
                .or_insert((!c.online, c.online));
        }
        let mut out = Changes {
            came_online: Vec::new(),
            went_offline: Vec::new(),
        };
        for (member, (then, now)) in states {
            match (then, now) {
                (false, true) => out.came_online.push(member.clone()),
                (true, false) => out.went_offline.push(member.clone()),
                _ => {}
            }
        }
        Some(out)
    }

    /// Up to `limit` (at least 1) online members after `after` (from the
    /// first when `None`), sorted; true if more follow.
    pub fn page(&self, after: Option<&K>, limit: usize) -> (Vec<K>, bool) {
        use std::ops::Bound::{Excluded, Unbounded};
        let lower = after.map_or(Unbounded, Excluded);
        let mut it = self.online.range((lower, Unbounded)).map(|(k, _)| k);
        let page: Vec<K> = it.by_ref().take(limit.max(1)).cloned().collect();
        (page, it.next().is_some())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_second_session_is_no_change_and_the_last_one_leaving_is() {
        let mut log = OnlineLog::new(10, 8);
        assert!(log.session_up(&"a"));
        assert!(!log.session_up(&"a"));
        assert_eq!(log.version(), 11);
        assert!(!log.session_down(&"a"));
        assert!(log.session_down(&"a"));
        assert!(!log.session_down(&"a"), "no session left to count down");
        assert_eq!(log.version(), 12);
        // Online then offline again since 10: no net change.
        assert_eq!(log.since(10).map(|c| c.came_online.len()), Some(0));
    }

    #[test]
    fn versions_the_ring_no_longer_reaches_are_too_old() {
        let mut log = OnlineLog::new(0, 2);
        for m in ["a", "b", "c"] {
            log.session_up(&m);
        }
        assert_eq!(log.version(), 3);
        assert_eq!(log.since(0), None, "change 1 was dropped");
        assert_eq!(
            log.since(1),
            Some(Changes {
                came_online: vec!["b", "c"],
                went_offline: vec![],
            })
        );
        assert_eq!(log.since(4), None, "a version from the future");
    }

    #[test]
    fn pages_walk_the_sorted_list() {
        let mut log = OnlineLog::new(0, 8);
        for m in [5, 1, 3, 2, 4] {
            log.session_up(&m);
        }
        assert_eq!(log.page(None, 2), (vec![1, 2], true));
        assert_eq!(log.page(Some(&2), 2), (vec![3, 4], true));
        assert_eq!(log.page(Some(&4), 2), (vec![5], false));
        assert_eq!(log.page(Some(&5), 2), (vec![], false));
    }

    /// A session of member `.0` opens (`true`) or closes.
    fn ops() -> impl Strategy<Value = Vec<(u8, bool)>> {
        prop::collection::vec((0u8..6, any::<bool>()), 0..80)
    }

    proptest! {
        /// For every version a client could hold, the changes since it
        /// (when the log still has them) turn the list it had then into
        /// the list now; and they are missing only for versions the ring
        /// no longer reaches.
        #[test]
        fn changes_since_any_version_bring_a_client_up_to_date(
            ops in ops(),
            start in 0u64..1000,
            capacity in 1usize..12,
        ) {
            let mut log = OnlineLog::new(start, capacity);
            let mut sessions = [0u32; 6];
            // The online list as of each version.
            let mut seen = vec![(start, BTreeSet::new())];
            for (member, up) in ops {
                let before = log.version();
                let changed = if up {
                    sessions[member as usize] += 1;
                    log.session_up(&member)
                } else if sessions[member as usize] > 0 {
                    sessions[member as usize] -= 1;
                    log.session_down(&member)
                } else {
                    log.session_down(&member)
                };
                prop_assert_eq!(log.version(), before + u64::from(changed));
                let now: BTreeSet<u8> =
                    (0..6).filter(|m| sessions[*m as usize] > 0).collect();
                prop_assert_eq!(now.len(), log.online_count());
                if changed {
                    seen.push((log.version(), now));
                }
            }
            let now = seen.last().map(|(_, s)| s.clone()).unwrap_or_default();
            let (full, more) = log.page(None, 6);
            prop_assert!(!more);
            prop_assert_eq!(full.iter().copied().collect::<BTreeSet<_>>(), now.clone());
            for (version, then) in &seen {
                let reachable = log.version() - version <= capacity as u64;
                match log.since(*version) {
                    None => prop_assert!(!reachable, "version {} is still kept", version),
                    Some(c) => {
                        prop_assert!(reachable);
                        let mut got = then.clone();
                        for m in &c.went_offline {
                            prop_assert!(got.remove(m), "{} was not online then", m);
                        }
                        for m in &c.came_online {
                            prop_assert!(got.insert(*m), "{} was online then", m);
                        }
                        prop_assert_eq!(&got, &now);
                    }
                }
            }
        }
    }
}

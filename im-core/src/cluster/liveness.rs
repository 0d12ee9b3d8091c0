//! Which nodes are alive, from the heartbeats a node hears: a pure tracker
//! with the clock passed in, so every rule is tested without waiting.
//!
//! A node is live from its first heartbeat until it says it leaves or stays
//! silent for longer than the timeout; a silent node that is heard again
//! (it was cut off, not stopped) is live again. Each process run of a node
//! has its own *incarnation* (e.g. its start time): a heartbeat of a run
//! that said goodbye (one that raced its own goodbye) does not bring it
//! back, while a restarted process with the same node id rejoins at once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::NodeId;

/// A change of the live set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// The node is live (first heartbeat, or a new incarnation).
    Joined(NodeId),
    /// The node left or went silent.
    Left(NodeId),
}

/// Where one node's current run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Live; the newest heartbeat arrived then.
    Live(Instant),
    /// Went silent: a later heartbeat of the same run brings it back (it
    /// was cut off, not stopped).
    Silent,
    /// Said goodbye: stragglers of the same run are ignored.
    Gone,
}

/// What is known of one node.
#[derive(Debug, Clone, Copy)]
struct Heard {
    incarnation: u64,
    standing: Standing,
}

impl Heard {
    fn live_since(&self) -> Option<Instant> {
        match self.standing {
            Standing::Live(t) => Some(t),
            Standing::Silent | Standing::Gone => None,
        }
    }
}

/// The live nodes of a cluster as one node sees them.
#[derive(Debug, Clone)]
pub struct LiveNodes {
    timeout: Duration,
    nodes: BTreeMap<NodeId, Heard>,
}

impl LiveNodes {
    /// An empty set where a node silent for longer than `timeout` is gone.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            nodes: BTreeMap::new(),
        }
    }

    /// A heartbeat of `node` (run `incarnation`) arrived at `at`.
    pub fn heard(
        &mut self,
        node: NodeId,
        incarnation: u64,
        at: Instant,
    ) -> Option<MembershipChange> {
        let h = self.nodes.entry(node.clone()).or_insert(Heard {
            incarnation,
            standing: Standing::Silent,
        });
        if incarnation < h.incarnation {
            // An older run's straggler after a restart: the newer run stands.
            return None;
        }
        if incarnation == h.incarnation && h.standing == Standing::Gone {
            return None; // a straggler of the run that said goodbye
        }
        let was_live = h.live_since();
        h.incarnation = incarnation;
        h.standing = Standing::Live(was_live.map_or(at, |t| t.max(at)));
        was_live.is_none().then_some(MembershipChange::Joined(node))
    }

    /// `node` (run `incarnation`) said it leaves.
    pub fn left(&mut self, node: &NodeId, incarnation: u64) -> Option<MembershipChange> {
        let h = self.nodes.get_mut(node)?;
        if incarnation < h.incarnation {
            return None;
        }
        let was_live = h.live_since().is_some();
        h.incarnation = incarnation;
        h.standing = Standing::Gone;
        was_live.then(|| MembershipChange::Left(node.clone()))
    }

    /// Marks nodes silent for longer than the timeout at `now` as gone.
    pub fn expire(&mut self, now: Instant) -> Vec<MembershipChange> {
        let timeout = self.timeout;
        let mut gone = Vec::new();
        for (node, h) in &mut self.nodes {
            if h.live_since()
                .is_some_and(|t| now.saturating_duration_since(t) > timeout)
            {
                h.standing = Standing::Silent;
                gone.push(MembershipChange::Left(node.clone()));
            }
        }
        gone
    }

    /// The live nodes, in id order.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, h)| h.live_since().is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// True if `node` is live.
    pub fn contains(&self, node: &NodeId) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|h| h.live_since().is_some())
    }

    /// When the next silent node would expire, if any is live.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.nodes
            .values()
            .filter_map(Heard::live_since)
            .min()
            .map(|t| t + self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TIMEOUT: Duration = Duration::from_millis(100);

    fn node(i: u8) -> NodeId {
        NodeId::new(format!("n{i}")).expect("valid")
    }

    #[test]
    fn a_silent_node_expires_and_a_heartbeat_keeps_it() {
        let t0 = Instant::now();
        let mut live = LiveNodes::new(TIMEOUT);
        assert_eq!(
            live.heard(node(1), 7, t0),
            Some(MembershipChange::Joined(node(1)))
        );
        assert_eq!(live.heard(node(1), 7, t0 + TIMEOUT / 2), None);
        assert!(live.expire(t0 + TIMEOUT).is_empty());
        assert_eq!(live.next_expiry(), Some(t0 + TIMEOUT / 2 + TIMEOUT));
        assert_eq!(
            live.expire(t0 + TIMEOUT * 2),
            vec![MembershipChange::Left(node(1))]
        );
        assert!(live.nodes().is_empty());
        assert_eq!(
            live.heard(node(1), 7, t0 + TIMEOUT * 3),
            Some(MembershipChange::Joined(node(1))),
            "a node cut off and heard again is back"
        );
    }

    #[test]
    fn a_goodbye_is_final_for_its_run_but_not_for_a_restart() {
        let t0 = Instant::now();
        let mut live = LiveNodes::new(TIMEOUT);
        live.heard(node(1), 7, t0);
        assert_eq!(
            live.left(&node(1), 7),
            Some(MembershipChange::Left(node(1)))
        );
        assert_eq!(
            live.heard(node(1), 7, t0),
            None,
            "a straggler of the run that left"
        );
        assert!(!live.contains(&node(1)));
        assert_eq!(
            live.heard(node(1), 8, t0),
            Some(MembershipChange::Joined(node(1))),
            "a restarted process rejoins"
        );
        assert_eq!(live.heard(node(1), 7, t0), None, "the old run stays gone");
        assert!(live.contains(&node(1)));
    }

    #[derive(Debug, Clone)]
    enum Event {
        Heard(u8, u64),
        Left(u8, u64),
        Tick(u64),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => (0u8..4, 0u64..3).prop_map(|(n, i)| Event::Heard(n, i)),
            1 => (0u8..4, 0u64..3).prop_map(|(n, i)| Event::Left(n, i)),
            2 => (1u64..80).prop_map(Event::Tick),
        ]
    }

    proptest! {
        /// Against a model that keeps, per node, the newest incarnation, its
        /// last heartbeat and whether it said goodbye: the live set and every
        /// reported change agree with it.
        #[test]
        fn the_live_set_follows_heartbeats_goodbyes_and_silence(
            events in proptest::collection::vec(event(), 0..120)
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut live = LiveNodes::new(TIMEOUT);
            // node -> (incarnation, last heard, said goodbye)
            let mut model: BTreeMap<u8, (u64, Instant, bool)> = BTreeMap::new();
            let is_live = |m: &BTreeMap<u8, (u64, Instant, bool)>, n: u8, now: Instant| {
                m.get(&n).is_some_and(|(_, t, bye)| !bye && now.duration_since(*t) <= TIMEOUT)
            };
            for e in events {
                let before: Vec<NodeId> = live.nodes();
                match e {
                    Event::Heard(n, inc) => {
                        let change = live.heard(node(n), inc, now);
                        let was = is_live(&model, n, now);
                        match model.get(&n).copied() {
                            Some((i, _, _)) if i > inc => {}
                            Some((i, _, true)) if i == inc => {}
                            _ => { model.insert(n, (inc, now, false)); }
                        }
                        let is = is_live(&model, n, now);
                        prop_assert_eq!(change.is_some(), !was && is);
                    }
                    Event::Left(n, inc) => {
                        let change = live.left(&node(n), inc);
                        let was = is_live(&model, n, now);
                        if let Some(m) = model.get_mut(&n)
                            && m.0 <= inc {
                                *m = (inc, m.1, true);
                            }
                        prop_assert_eq!(change.is_some(), was && !is_live(&model, n, now));
                    }
                    Event::Tick(ms) => {
                        now += Duration::from_millis(ms);
                        let gone = live.expire(now);
                        for g in &gone {
                            prop_assert!(matches!(g, MembershipChange::Left(n) if before.contains(n)));
                        }
                    }
                }
                let expected: Vec<NodeId> = (0u8..4)
                    .filter(|n| is_live(&model, *n, now))
                    .map(node)
                    .collect();
                // Between ticks a node past its timeout is still listed until
                // `expire` runs; compare after expiring.
                live.expire(now);
                prop_assert_eq!(live.nodes(), expected);
            }
        }
    }
}

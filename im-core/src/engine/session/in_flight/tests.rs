//! Property tests of the in-flight state machine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

/// Frames are the batch's last seq, so a resend names what it repeats.
type Machine = InFlight<u8, Seq>;

fn config(waits: &[u64], max_entries: usize, max_bytes: usize) -> InFlightConfig {
    InFlightConfig {
        waits: waits
            .iter()
            .map(|&ms| Duration::from_millis(ms))
            .collect::<Arc<[_]>>(),
        max_entries,
        max_bytes,
    }
}

fn batch(last_seq: Seq, bytes: usize, notify_only: bool) -> Batch<Seq> {
    Batch {
        last_seq,
        frame: last_seq,
        bytes,
        commit_ms: last_seq as i64,
        notify_only,
    }
}

/// What the machine tracks, recomputed from its conversations.
fn recount(m: &Machine) -> (usize, usize) {
    let entries = m
        .convs
        .values()
        .map(|c| c.pushes.len() + usize::from(c.notice.is_some()))
        .sum();
    let bytes = m
        .convs
        .values()
        .flat_map(|c| &c.pushes)
        .map(|p| p.bytes)
        .sum();
    (entries, bytes)
}

#[derive(Debug, Clone)]
enum Op {
    /// `n` new messages in conversation `conv`, in a frame of `bytes`.
    Offer {
        conv: u8,
        n: u64,
        bytes: usize,
        notify_only: bool,
    },
    /// The client acks `conv` up to `back` below its head (or past it).
    Ack { conv: u8, back: u64 },
    /// The same ack again (with nothing offered since).
    AckAgain,
    /// Time passes, then the timer fires if due.
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, 1u64..4, 1usize..400, proptest::bool::weighted(0.1)).prop_map(
            |(conv, n, bytes, notify_only)| Op::Offer { conv, n, bytes, notify_only }
        ),
        3 => (0u8..4, 0u64..4).prop_map(|(conv, back)| Op::Ack { conv, back }),
        1 => Just(Op::AckAgain),
        2 => (0u64..400).prop_map(Op::Advance),
    ]
}

proptest! {
    /// Random offers, acks and ticks keep every invariant: bounds, exact
    /// accounting, push only with nothing outstanding, an ack of N clears
    /// everything at or below N, repeated acks are harmless, resends repeat
    /// what was sent and is still unacknowledged, in seq order.
    #[test]
    fn random_traffic_keeps_the_invariants(
        waits in proptest::collection::vec(1u64..200, 1..6),
        max_entries in 1usize..12,
        max_bytes in 1usize..2000,
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut m = Machine::new(config(&waits, max_entries, max_bytes));
        let start = Instant::now();
        let mut now = start;
        // Per conversation: its head, and what the client has received and acked.
        let mut head: HashMap<u8, Seq> = HashMap::new();
        let mut last_ack: Option<(u8, Seq)> = None;
        let mut resends = Vec::new();
        for op in ops {
            match op {
                Op::Offer { conv, n, bytes, notify_only } => {
                    // An ack from before this offer may cover it when repeated.
                    last_ack = None;
                    let h = head.entry(conv).or_insert(0);
                    *h += n;
                    let outstanding = m.convs.contains_key(&conv);
                    let had_notice = m.convs.get(&conv).is_some_and(|c| c.notice.is_some());
                    match m.offer(&conv, batch(*h, bytes, notify_only), now) {
                        Offer::Push(f) => {
                            prop_assert!(!outstanding, "pushed while something was in flight");
                            prop_assert!(!notify_only);
                            prop_assert_eq!(f, *h);
                        }
                        Offer::Notify(s) => {
                            prop_assert!(!had_notice, "a second notice for one conversation");
                            prop_assert_eq!(s, *h);
                        }
                        Offer::Coalesced => {
                            prop_assert!(had_notice);
                            prop_assert_eq!(m.convs[&conv].notice.map(|n| n.head), Some(*h));
                        }
                        Offer::Stale => prop_assert!(false, "a new seq cannot be stale"),
                        Offer::Overflow => {
                            prop_assert_eq!(m.entries(), max_entries);
                            // The session is closed: start a fresh one.
                            m = Machine::new(config(&waits, max_entries, max_bytes));
                        }
                    }
                }
                Op::Ack { conv, back } => {
                    let h = head.get(&conv).copied().unwrap_or(0);
                    let seq = (h + 1).saturating_sub(back);
                    let before = m.clone();
                    let mut acked = Vec::new();
                    let renotify = m.ack(&conv, seq, now, |ms| acked.push(ms));
                    // A fresh notify exactly when the client caught up with
                    // the last one while the head moved on.
                    let earlier_ack = before.convs.get(&conv).map_or(0, |c| c.acked);
                    let expected_renotify = before
                        .convs
                        .get(&conv)
                        .and_then(|c| c.notice)
                        .filter(|n| seq > earlier_ack && n.sent <= seq && seq < n.head)
                        .map(|n| n.head);
                    prop_assert_eq!(renotify, expected_renotify);
                    if let Some(h) = renotify {
                        prop_assert_eq!(m.convs[&conv].notice.map(|n| n.sent), Some(h));
                    }
                    if let Some(c) = m.convs.get(&conv) {
                        prop_assert!(c.pushes.iter().all(|p| p.last_seq > seq));
                        prop_assert!(c.notice.is_none_or(|n| n.head > seq));
                    }
                    let earlier = before.convs.get(&conv).map_or(0, |c| c.acked);
                    if seq <= earlier {
                        prop_assert_eq!(&m, &before, "an old ack changed the state");
                    }
                    // Exactly the pushes at or below seq were reported acked.
                    let mut expected: Vec<i64> = before
                        .convs
                        .get(&conv)
                        .filter(|_| seq > earlier)
                        .map(|c| c.pushes.iter().filter(|p| p.last_seq <= seq).map(|p| p.commit_ms).collect())
                        .unwrap_or_default();
                    expected.sort();
                    acked.sort();
                    prop_assert_eq!(acked, expected);
                    last_ack = Some((conv, seq));
                }
                Op::AckAgain => {
                    if let Some((conv, seq)) = last_ack {
                        let before = m.clone();
                        let renotify = m.ack(&conv, seq, now, |_| panic!("a repeated ack acked something"));
                        prop_assert_eq!(&m, &before);
                        prop_assert_eq!(renotify, None);
                    }
                }
                Op::Advance(ms) => {
                    now += Duration::from_millis(ms);
                    let before = m.clone();
                    resends.clear();
                    match m.tick(now, &mut resends) {
                        Tick::Expired => {
                            // Something due had used its last resend.
                            let last = before.config.resends();
                            let expired = before.convs.values().any(|c| {
                                c.pushes.iter().any(|p| p.due <= now && p.attempt >= last)
                                    || c.notice.is_some_and(|n| n.due <= now && n.attempt >= last)
                            });
                            prop_assert!(expired);
                            m = Machine::new(config(&waits, max_entries, max_bytes));
                        }
                        Tick::Ok => {
                            let mut seen: HashMap<u8, Seq> = HashMap::new();
                            for r in &resends {
                                if let Resend::Push { key, frame, attempt } = r {
                                    let c = &before.convs[key];
                                    let p = c.pushes.iter().find(|p| p.frame == *frame);
                                    prop_assert!(p.is_some_and(|p| p.due <= now && p.attempt + 1 == *attempt));
                                    let prev = seen.insert(*key, *frame).unwrap_or(0);
                                    prop_assert!(*frame > prev, "resends out of seq order");
                                }
                            }
                            if resends.is_empty() {
                                prop_assert_eq!(&m, &before);
                            }
                            prop_assert!(m.next_due().is_none_or(|d| d > now));
                        }
                    }
                }
            }
            prop_assert!(m.entries() <= max_entries);
            prop_assert!(m.bytes() <= max_bytes);
            prop_assert_eq!(recount(&m), (m.entries(), m.bytes()));
            prop_assert_eq!(m.is_empty(), m.next_due().is_none());
        }
    }

    /// A push never acknowledged is resent exactly on the schedule when the
    /// timer fires at each due time, the same frame each time, then the
    /// session times out after the last wait.
    #[test]
    fn an_unacknowledged_push_follows_the_schedule(
        waits in proptest::collection::vec(1u64..5_000, 1..8),
    ) {
        let mut m = Machine::new(config(&waits, 8, 1 << 20));
        let t0 = Instant::now();
        prop_assert_eq!(m.offer(&0, batch(7, 10, false), t0), Offer::Push(7));
        let mut expected_at = t0;
        let mut out = Vec::new();
        for (i, w) in waits.iter().enumerate() {
            expected_at += Duration::from_millis(*w);
            prop_assert_eq!(m.next_due(), Some(expected_at));
            // Nothing happens a moment early.
            out.clear();
            prop_assert_eq!(m.tick(expected_at - Duration::from_nanos(1), &mut out), Tick::Ok);
            prop_assert!(out.is_empty());
            let tick = m.tick(expected_at, &mut out);
            if i + 1 == waits.len() {
                prop_assert_eq!(tick, Tick::Expired);
            } else {
                prop_assert_eq!(tick, Tick::Ok);
                prop_assert_eq!(&out, &vec![Resend::Push { key: 0, frame: 7, attempt: i as u32 + 1 }]);
            }
        }
    }

    /// Push, then notices while it is unacknowledged, then push again once
    /// the client acked the head; acking a notice below its head keeps it
    /// (and restarts its schedule).
    #[test]
    fn notify_while_in_flight_then_push_again(extra in 1u64..20, partial in 0u64..20) {
        let mut m = Machine::new(config(&[100, 100], 64, 1 << 20));
        let t = Instant::now();
        prop_assert_eq!(m.offer(&1, batch(1, 10, false), t), Offer::Push(1));
        prop_assert_eq!(m.offer(&1, batch(2, 10, false), t), Offer::Notify(2));
        let head = 2 + extra;
        for s in 3..=head {
            prop_assert_eq!(m.offer(&1, batch(s, 10, false), t), Offer::Coalesced);
        }
        // Another conversation is not affected.
        prop_assert_eq!(m.offer(&2, batch(1, 10, false), t), Offer::Push(1));
        let below = 1 + partial.min(head - 2);
        let later = t + Duration::from_millis(50);
        m.ack(&1, below, later, |_| {});
        prop_assert_eq!(m.offer(&1, batch(head + 1, 10, false), later), Offer::Coalesced);
        prop_assert_eq!(m.convs[&1].notice.map(|n| (n.head, n.due)), Some((head + 1, later + Duration::from_millis(100))));
        m.ack(&1, head + 1, later, |_| {});
        prop_assert!(!m.convs.contains_key(&1));
        prop_assert_eq!(m.offer(&1, batch(head + 2, 10, false), later), Offer::Push(head + 2));
        // A push for something already acked while tracked is not sent.
        prop_assert_eq!(m.offer(&1, batch(head + 3, 10, false), later), Offer::Notify(head + 3));
        m.ack(&1, head + 2, later, |_| {});
        prop_assert_eq!(m.offer(&1, batch(head + 2, 10, false), later), Offer::Stale);
    }
}

#[test]
fn catching_up_with_a_notify_whose_head_moved_on_gets_a_fresh_one() {
    let mut m = Machine::new(config(&[100], 8, 1 << 20));
    let t = Instant::now();
    assert_eq!(m.offer(&1, batch(1, 10, false), t), Offer::Push(1));
    assert_eq!(m.offer(&1, batch(2, 10, false), t), Offer::Notify(2));
    assert_eq!(m.offer(&1, batch(3, 10, false), t), Offer::Coalesced);
    // Below what the notify said: still pulling, nothing new to say.
    assert_eq!(m.ack(&1, 1, t, |_| {}), None);
    // Up to what it said: the head moved on to 3 since.
    assert_eq!(m.ack(&1, 2, t, |_| {}), Some(3));
    assert_eq!(m.offer(&1, batch(4, 10, false), t), Offer::Coalesced);
    assert_eq!(m.ack(&1, 4, t, |_| {}), None);
    assert!(m.is_empty());
    assert_eq!(m.offer(&1, batch(5, 10, false), t), Offer::Push(5));
}

#[test]
fn a_push_over_the_byte_bound_becomes_a_notice_and_the_entry_bound_overflows() {
    let mut m = Machine::new(config(&[100], 2, 100));
    let t = Instant::now();
    assert_eq!(m.offer(&1, batch(1, 100, false), t), Offer::Push(1));
    assert_eq!(m.offer(&2, batch(1, 1, false), t), Offer::Notify(1));
    assert_eq!(m.offer(&3, batch(1, 1, false), t), Offer::Overflow);
    assert_eq!((m.entries(), m.bytes()), (2, 100));
}

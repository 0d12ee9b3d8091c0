//! Properties of the sub-room planner.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

#[test]
fn fills_sub_rooms_in_order_and_opens_new_ones() {
    let mut p = SubRoomPlanner::new(SubRoomConfig {
        capacity: 2,
        merge_below: 0,
    });
    let subs: Vec<u32> = (0..5).map(|_| p.join_now().0).collect();
    assert_eq!(subs, [0, 0, 1, 1, 2]);
    assert_eq!(p.members(), 5);
}

#[test]
fn a_join_storm_spreads_through_pre_allocation() {
    let mut p = SubRoomPlanner::new(SubRoomConfig {
        capacity: 100,
        merge_below: 0,
    });
    // 1000 joins routed before any of them is confirmed.
    let tickets: Vec<Ticket> = (0..1000).map(|_| p.route()).collect();
    let mut per: HashMap<SubRoomId, u32> = HashMap::new();
    for t in &tickets {
        *per.entry(t.sub_room()).or_default() += 1;
    }
    assert_eq!(per.len(), 10);
    assert!(per.values().all(|n| *n == 100));
    for t in tickets {
        assert!(matches!(p.join(t), JoinOutcome::Joined(_)));
    }
    assert_eq!(p.members(), 1000);
}

#[test]
fn a_stale_hint_to_a_full_sub_room_is_redirected_once() {
    let mut p = SubRoomPlanner::new(SubRoomConfig {
        capacity: 1,
        merge_below: 0,
    });
    assert_eq!(p.join_now(), SubRoomId(0));
    let JoinOutcome::Redirect(t) = p.join(p.ticket_for(SubRoomId(0))) else {
        panic!("a full sub-room must redirect");
    };
    assert!(t.is_redirected());
    assert_eq!(p.join(t), JoinOutcome::Joined(SubRoomId(1)));
}

#[test]
fn sparse_sub_rooms_merge_and_the_merging_one_takes_no_joins() {
    let mut p = SubRoomPlanner::new(SubRoomConfig {
        capacity: 4,
        merge_below: 3,
    });
    for _ in 0..8 {
        p.join_now();
    }
    // Sub-room 1 drops to 1 member, sub-room 0 to 2.
    for _ in 0..3 {
        p.leave(SubRoomId(1)).expect("leave");
    }
    p.leave(SubRoomId(0)).expect("leave");
    p.leave(SubRoomId(0)).expect("leave");
    let m = p.plan_merge().expect("a merge");
    assert_eq!(
        m,
        Merge {
            from: SubRoomId(1),
            into: SubRoomId(0)
        }
    );
    // Joins now avoid sub-room 1; a hint into it is redirected.
    let JoinOutcome::Redirect(t) = p.join(p.ticket_for(SubRoomId(1))) else {
        panic!("a merging sub-room must redirect");
    };
    assert_eq!(p.join(t), JoinOutcome::Joined(SubRoomId(0)));
    p.finish_merge(m).expect("finish");
    assert!(p.sub_room(SubRoomId(1)).is_none());
    assert_eq!(p.members(), 4);
}

#[derive(Debug, Clone)]
enum Op {
    Route,
    JoinTicket(usize),
    CancelTicket(usize),
    Hint(u32),
    Leave(usize),
    PlanMerge,
    FinishMerge(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Route),
        4 => any::<usize>().prop_map(Op::JoinTicket),
        1 => any::<usize>().prop_map(Op::CancelTicket),
        2 => (0u32..8).prop_map(Op::Hint),
        4 => any::<usize>().prop_map(Op::Leave),
        2 => Just(Op::PlanMerge),
        2 => any::<usize>().prop_map(Op::FinishMerge),
    ]
}

/// The model: who sits where, and the tickets out.
#[derive(Default)]
struct Model {
    seats: Vec<SubRoomId>,
    tickets: Vec<Ticket>,
    merges: Vec<Merge>,
}

impl Model {
    fn join(&mut self, p: &mut SubRoomPlanner, mut t: Ticket) -> Result<(), TestCaseError> {
        let mut hops = 0;
        loop {
            let merging =
                |p: &SubRoomPlanner, s| p.sub_room(s).and_then(|i| i.merging_into).is_some();
            let was_redirected = t.is_redirected();
            match p.join(t) {
                JoinOutcome::Joined(s) => {
                    prop_assert!(!merging(p, s), "joined a merging sub-room");
                    let info = p.sub_room(s).expect("joined sub-room exists");
                    if !was_redirected {
                        prop_assert!(info.members <= p.config().capacity);
                    }
                    self.seats.push(s);
                    return Ok(());
                }
                JoinOutcome::Redirect(next) => {
                    prop_assert!(!was_redirected, "a redirected join was redirected again");
                    hops += 1;
                    prop_assert!(hops <= 1);
                    t = next;
                }
            }
        }
    }

    fn check(&self, p: &SubRoomPlanner) -> Result<(), TestCaseError> {
        let mut counts: HashMap<SubRoomId, u32> = HashMap::new();
        for s in &self.seats {
            *counts.entry(*s).or_default() += 1;
        }
        let mut reserved: HashMap<SubRoomId, u32> = HashMap::new();
        for t in &self.tickets {
            if t.reserved {
                *reserved.entry(t.sub).or_default() += 1;
            }
        }
        for (s, n) in &counts {
            prop_assert!(
                p.sub_room(*s).is_some(),
                "member in a vanished sub-room {:?}",
                s
            );
            prop_assert_eq!(p.sub_room(*s).map(|i| i.members), Some(*n));
        }
        for (id, info) in p.sub_rooms() {
            prop_assert_eq!(info.members, counts.get(&id).copied().unwrap_or(0));
            prop_assert_eq!(info.reserved, reserved.get(&id).copied().unwrap_or(0));
        }
        prop_assert_eq!(p.members(), self.seats.len() as u64);
        prop_assert!(p.sub_room(SubRoomId::MAIN).is_some());
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_member_is_lost_or_counted_twice(
        capacity in 1u32..6, merge_below in 0u32..6,
        ops in proptest::collection::vec(op(), 0..200),
    ) {
        let mut p = SubRoomPlanner::new(SubRoomConfig { capacity, merge_below });
        let mut m = Model::default();
        for o in ops {
            match o {
                Op::Route => m.tickets.push(p.route()),
                Op::JoinTicket(i) if !m.tickets.is_empty() => {
                    let t = m.tickets.swap_remove(i % m.tickets.len());
                    m.join(&mut p, t)?;
                }
                Op::CancelTicket(i) if !m.tickets.is_empty() => {
                    let t = m.tickets.swap_remove(i % m.tickets.len());
                    p.cancel(t);
                }
                Op::Hint(s) => {
                    let t = p.ticket_for(SubRoomId(s));
                    m.join(&mut p, t)?;
                }
                Op::Leave(i) if !m.seats.is_empty() => {
                    let s = m.seats.swap_remove(i % m.seats.len());
                    p.leave(s).map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
                Op::PlanMerge => {
                    if let Some(mg) = p.plan_merge() {
                        let from = p.sub_room(mg.from).expect("from exists");
                        let into = p.sub_room(mg.into).expect("into exists");
                        prop_assert!(from.load() + into.load() <= u64::from(capacity));
                        m.merges.push(mg);
                    }
                }
                Op::FinishMerge(i) if !m.merges.is_empty() => {
                    let mg = m.merges[i % m.merges.len()];
                    match p.finish_merge(mg) {
                        Ok(()) => {
                            // The caller moves its members.
                            for s in &mut m.seats {
                                if *s == mg.from {
                                    *s = mg.into;
                                }
                            }
                            m.merges.retain(|x| *x != mg);
                        }
                        Err(PlannerError::Busy(_)) => {}
                        Err(e) => return Err(TestCaseError::fail(e.to_string())),
                    }
                }
                _ => {}
            }
            m.check(&p)?;
        }
    }

    #[test]
    fn routed_seats_never_overfill_a_sub_room(capacity in 1u32..50, n in 0usize..500) {
        let mut p = SubRoomPlanner::new(SubRoomConfig { capacity, merge_below: 0 });
        let tickets: Vec<Ticket> = (0..n).map(|_| p.route()).collect();
        for (_, info) in p.sub_rooms() {
            prop_assert!(info.reserved <= capacity);
        }
        for t in tickets {
            prop_assert!(matches!(p.join(t), JoinOutcome::Joined(_)));
        }
        for (_, info) in p.sub_rooms() {
            prop_assert!(info.members <= capacity);
        }
        let expected_subs = (n as u64).div_ceil(u64::from(capacity)).max(1);
        prop_assert_eq!(p.sub_rooms().count() as u64, expected_subs);
    }
}

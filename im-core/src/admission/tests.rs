use std::net::{IpAddr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

const LIMITS: AdmissionLimits = AdmissionLimits {
    max_pending: 16,
    per_address: 4,
    reserved_for_new_addresses: 6,
};

fn at(here: usize, total: usize) -> Occupancy {
    Occupancy {
        at_address: Some(here),
        total,
    }
}

#[test]
fn plans_the_documented_cases() {
    // Room everywhere.
    assert_eq!(plan(&LIMITS, at(0, 0)), Admission::Admit);
    assert_eq!(plan(&LIMITS, at(3, 9)), Admission::Admit);
    // At its cap an address is refused, however empty the pool.
    assert_eq!(plan(&LIMITS, at(4, 4)), Admission::Refuse);
    // Past the shared part, an address with something pending is refused.
    assert_eq!(plan(&LIMITS, at(1, 10)), Admission::Refuse);
    // The reserve is for addresses with nothing pending.
    assert_eq!(plan(&LIMITS, at(0, 10)), Admission::Admit);
    assert_eq!(plan(&LIMITS, at(0, 15)), Admission::Admit);
    // A full pool makes room for a newcomer with the oldest handshake.
    assert_eq!(plan(&LIMITS, at(0, 16)), Admission::Evict);
    assert_eq!(plan(&LIMITS, at(2, 16)), Admission::Refuse);
    // Unknown addresses: only the global bound.
    let unknown = |total| Occupancy {
        at_address: None,
        total,
    };
    assert_eq!(plan(&LIMITS, unknown(15)), Admission::Admit);
    assert_eq!(plan(&LIMITS, unknown(16)), Admission::Evict);
}

#[test]
fn zero_limits_count_as_one() {
    let zero = AdmissionLimits {
        max_pending: 0,
        per_address: 0,
        reserved_for_new_addresses: 5,
    };
    assert_eq!(zero.capacity(), 1);
    assert_eq!(zero.per_address_cap(), 1);
    assert_eq!(zero.shared_capacity(), 0);
    assert_eq!(plan(&zero, at(0, 0)), Admission::Admit);
    assert_eq!(plan(&zero, at(1, 1)), Admission::Refuse);
    assert_eq!(plan(&zero, at(0, 1)), Admission::Evict);
}

#[test]
fn ipv6_counts_by_its_64_prefix() {
    let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
    let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
    let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
    assert_eq!(AddressKey::of(a), AddressKey::of(b));
    assert_ne!(AddressKey::of(a), AddressKey::of(c));
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 7).to_ipv6_mapped());
    assert_eq!(
        AddressKey::of(mapped),
        AddressKey::of(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)))
    );
    assert_ne!(
        AddressKey::of(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        AddressKey::of(IpAddr::V4(Ipv4Addr::LOCALHOST))
    );
}

#[test]
fn a_trickling_address_cannot_lock_newcomers_out() {
    let table = PendingHandshakes::new(LIMITS, "test");
    let attacker = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    let held: Vec<_> = (0..100).filter_map(|_| table.admit(attacker)).collect();
    assert_eq!(held.len(), LIMITS.per_address);
    for i in 0..50u8 {
        let honest = Some(IpAddr::V4(Ipv4Addr::new(10, 1, 0, i)));
        let guard = table.admit(honest).expect("a newcomer is admitted");
        drop(guard);
    }
    assert_eq!(table.len(), LIMITS.per_address);
    drop(held);
    assert!(table.is_empty());
}

#[test]
fn the_victim_is_the_oldest_of_a_crowded_address() {
    assert_eq!(pick_victim::<u8>([]), None);
    assert_eq!(pick_victim([(1, 1), (2, 1)]), Some(1));
    assert_eq!(pick_victim([(1, 1), (2, 3), (3, 3), (4, 1)]), Some(2));
}

#[test]
fn eviction_cancels_the_slowest_and_frees_its_slot() {
    let limits = AdmissionLimits {
        max_pending: 3,
        per_address: 3,
        reserved_for_new_addresses: 0,
    };
    let table = PendingHandshakes::new(limits, "test");
    let ip = |i| Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)));
    let first = table.admit(ip(1)).expect("admitted");
    let second = table.admit(ip(2)).expect("admitted");
    let third = table.admit(ip(2)).expect("admitted");
    // Address 2 holds two: its oldest goes first, though 1's is older.
    let fourth = table.admit(ip(3)).expect("a newcomer evicts");
    assert!(second.is_evicted());
    assert!(!first.is_evicted() && !third.is_evicted() && !fourth.is_evicted());
    assert_eq!(table.len(), 3);
    // An address with something pending gets nothing from a full pool.
    assert!(table.admit(ip(2)).is_none());
    // One each now: the next newcomer evicts the oldest.
    let fifth = table.admit(ip(4)).expect("a newcomer evicts");
    assert!(first.is_evicted());
    assert!(!third.is_evicted() && !fourth.is_evicted());
    drop(first);
    drop(second);
    assert_eq!(table.len(), 3);
    drop((third, fourth, fifth));
    assert!(table.is_empty());
}

proptest! {
    /// The planner's promises, for any limits and counts.
    #[test]
    fn plan_keeps_its_promises(
        max in 0usize..40,
        per in 0usize..10,
        reserved in 0usize..50,
        here in proptest::option::of(0usize..12),
        total in 0usize..60,
    ) {
        let limits = AdmissionLimits { max_pending: max, per_address: per, reserved_for_new_addresses: reserved };
        let decision = plan(&limits, Occupancy { at_address: here, total });
        let fresh = here.is_none_or(|h| h == 0);
        // A newcomer is never refused; an address with something pending is
        // refused at its cap or past the shared part of the pool, else admitted.
        let over = here.is_some_and(|h| h >= limits.per_address_cap());
        let room = if fresh { limits.capacity() } else { limits.shared_capacity() };
        let expected = if over || (!fresh && total >= room) {
            Admission::Refuse
        } else if total >= room {
            Admission::Evict
        } else {
            Admission::Admit
        };
        prop_assert_eq!(decision, expected);
        if fresh {
            prop_assert_ne!(decision, Admission::Refuse);
        }
    }

    /// Arrivals and departures against the table: the bounds always hold,
    /// newcomers always get in, and evictions take the oldest.
    #[test]
    fn the_table_keeps_its_bounds(
        max in 1usize..20,
        per in 1usize..6,
        reserved in 0usize..10,
        ops in proptest::collection::vec((proptest::option::of(0u8..6), any::<bool>(), any::<prop::sample::Index>()), 1..200),
    ) {
        let limits = AdmissionLimits { max_pending: max, per_address: per, reserved_for_new_addresses: reserved };
        let table = PendingHandshakes::new(limits, "test");
        // Live guards, oldest first, with their address.
        let mut live: Vec<(Option<AddressKey>, PendingHandshake)> = Vec::new();
        for (addr, arrive, pick) in ops {
            if !arrive && !live.is_empty() {
                live.remove(pick.index(live.len()));
                continue;
            }
            let ip = addr.map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)));
            let key = ip.map(AddressKey::of);
            let here = key.map(|k| live.iter().filter(|(a, _)| *a == Some(k)).count());
            let before = live.len();
            let fresh = here.is_none_or(|h| h == 0);
            match table.admit(ip) {
                None => prop_assert!(!fresh, "a newcomer was refused"),
                Some(guard) => {
                    let evicted: Vec<usize> = live.iter().enumerate()
                        .filter(|(_, (_, g))| g.is_evicted()).map(|(i, _)| i).collect();
                    if let Some(&i) = evicted.first() {
                        // Only for a newcomer, only when full, only the slowest.
                        prop_assert_eq!(evicted.len(), 1);
                        prop_assert!(fresh && before == limits.capacity());
                        let count = |k: Option<AddressKey>| match k {
                            Some(k) => live.iter().filter(|(a, _)| *a == Some(k)).count(),
                            None => 1,
                        };
                        let expected = pick_victim(live.iter().enumerate().map(|(j, (a, _))| (j, count(*a))));
                        prop_assert_eq!(Some(i), expected);
                        live.remove(i);
                    } else if !fresh {
                        // It grew the pool: only within the shared part.
                        prop_assert!(before < limits.shared_capacity());
                    }
                    live.push((key, guard));
                }
            }
            prop_assert_eq!(table.len(), live.len());
            prop_assert!(live.len() <= limits.capacity());
            if let Some(k) = key {
                prop_assert!(live.iter().filter(|(a, _)| *a == Some(k)).count() <= limits.per_address_cap());
            }
        }
        drop(live);
        prop_assert!(table.is_empty());
    }
}

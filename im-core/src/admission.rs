//! Admission of connections that have not authenticated yet.
//!
//! A connection between accept and the end of its handshake holds a socket
//! and a task while it has proven nothing, so those connections are bounded.
//! A single global bound lets a few addresses that open many slow
//! ("trickling") connections, and reconnect whenever dropped, fill it and
//! lock every honest newcomer out. Here the bound has three parts:
//!
//! - **Per address** (IPv4 address, IPv6 `/64` prefix): at most
//!   [`AdmissionLimits::per_address`] pending handshakes. One more from the
//!   same address is refused at once.
//! - **A reserved share**: an address that already has a handshake pending
//!   may use only the pool minus [`AdmissionLimits::reserved_for_new_addresses`];
//!   past that, its new connection is refused. The rest of the pool is kept
//!   for addresses with nothing pending.
//! - **Eviction instead of refusal**: when the whole pool is held and an
//!   address with nothing pending connects, the slowest pending handshake
//!   is cancelled and its socket closed with a reason, and the newcomer is
//!   admitted. The slowest is the oldest (it has held its slot longest) of
//!   those whose address has more than one pending, else the oldest of
//!   all ([`pick_victim`]).
//!
//! Two choices keep an attacker that reconnects whenever dropped from
//! turning eviction against honest clients:
//!
//! - An address that already has something pending is refused rather than
//!   allowed to replace its own oldest handshake: replacing would keep its
//!   handshakes forever young, and honest newcomers would become the
//!   oldest, the first evicted. Refused, its handshakes age.
//! - Eviction spares addresses with a single handshake pending while others
//!   hold several: an address evicted down to nothing would count as a
//!   newcomer again at once and evict the next oldest, a chain reaction
//!   through the pool at the attacker's reconnect speed.
//!
//! What this cannot stop is an attacker with about as many addresses as the
//! pool has slots, each pending once: every one of them is a newcomer, and
//! an honest login then survives only if it completes before the pool has
//! turned over.
//!
//! The decision is [`plan`], a pure function of the counts. [`PendingHandshakes`]
//! keeps the counts, applies the plan and cancels the victims; both the
//! engine's login phase and the WebSocket upgrade use it.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// The bounds on pending handshakes. Zero bounds count as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Pending handshakes at once, over all addresses.
    pub max_pending: usize,
    /// Pending handshakes at once from one address (IPv4 address, IPv6 `/64`).
    pub per_address: usize,
    /// Part of `max_pending` kept for addresses with nothing pending (at
    /// most `max_pending`).
    pub reserved_for_new_addresses: usize,
}

impl AdmissionLimits {
    /// The whole pool.
    pub fn capacity(&self) -> usize {
        self.max_pending.max(1)
    }

    /// The most one address may hold.
    pub fn per_address_cap(&self) -> usize {
        self.per_address.max(1)
    }

    /// The part of the pool addresses that already have a handshake pending
    /// may grow into.
    pub fn shared_capacity(&self) -> usize {
        self.capacity() - self.reserved_for_new_addresses.min(self.capacity())
    }
}

/// Which pending handshakes count as one client's: an IPv4 address, or the
/// `/64` prefix of an IPv6 address (one subscriber's usual allocation).
/// IPv4-mapped IPv6 addresses count as their IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKey {
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl AddressKey {
    /// The key of a peer address.
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => Self::V6Prefix((v6.to_bits() >> 64) as u64),
        }
    }
}

/// What is pending when a connection arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occupancy {
    /// Pending handshakes from the newcomer's address; `None` if the
    /// transport knows no address (then only the global bound applies, and
    /// the newcomer counts as an address with nothing pending).
    pub at_address: Option<usize>,
    /// Pending handshakes in total.
    pub total: usize,
}

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Admit it.
    Admit,
    /// Admit it after cancelling the slowest pending handshake ([`pick_victim`]).
    Evict,
    /// Refuse it: its address already holds all it may.
    Refuse,
}

/// Decides what to do with a new connection. Pure: same counts, same answer.
///
/// - An address at its cap is refused.
/// - An address with something pending is refused once the pool is past
///   its shared part (it never takes the reserve).
/// - An address with nothing pending, once the whole pool is held, evicts
///   the slowest pending handshake: a newcomer is never refused.
/// - Otherwise it is admitted.
pub fn plan(limits: &AdmissionLimits, now: Occupancy) -> Admission {
    match now.at_address {
        Some(here) if here >= limits.per_address_cap() => Admission::Refuse,
        Some(here) if here > 0 && now.total >= limits.shared_capacity() => Admission::Refuse,
        _ if now.total >= limits.capacity() => Admission::Evict,
        _ => Admission::Admit,
    }
}

/// Picks the handshake to evict from the pending ones, given oldest first
/// with the number pending at each one's address (1 if unknown): the
/// oldest whose address has more than one pending, else the oldest.
pub fn pick_victim<T>(oldest_first: impl IntoIterator<Item = (T, usize)>) -> Option<T> {
    let mut oldest = None;
    for (handshake, at_address) in oldest_first {
        if at_address > 1 {
            return Some(handshake);
        }
        oldest.get_or_insert(handshake);
    }
    oldest
}

/// The handshakes in progress on one listener or engine, admitted by
/// [`plan`]. Cheap to clone; clones share the table.
#[derive(Clone)]
pub struct PendingHandshakes {
    limits: AdmissionLimits,
    /// Metrics label: which handshake this table bounds (`"login"`, `"ws_upgrade"`).
    stage: &'static str,
    table: Arc<Mutex<Table>>,
}

impl std::fmt::Debug for PendingHandshakes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingHandshakes")
            .field("limits", &self.limits)
            .field("stage", &self.stage)
            .field("pending", &self.len())
            .finish()
    }
}

#[derive(Default)]
struct Table {
    /// Next ticket number; numbers grow, so the smallest is the oldest.
    next: u64,
    /// Every pending handshake, oldest first.
    order: BTreeMap<u64, Entry>,
    /// Pending handshakes per known address (at most `per_address_cap` each).
    by_address: HashMap<AddressKey, usize>,
}

struct Entry {
    address: Option<AddressKey>,
    evicted: CancellationToken,
}

impl Table {
    fn occupancy(&self, address: Option<AddressKey>) -> Occupancy {
        Occupancy {
            at_address: address.map(|a| self.by_address.get(&a).copied().unwrap_or(0)),
            total: self.order.len(),
        }
    }

    /// Removes a handshake; its token is returned to cancel.
    fn remove(&mut self, id: u64) -> Option<CancellationToken> {
        let entry = self.order.remove(&id)?;
        if let Some(address) = entry.address
            && let Some(n) = self.by_address.get_mut(&address)
        {
            *n -= 1;
            if *n == 0 {
                self.by_address.remove(&address);
            }
        }
        Some(entry.evicted)
    }

    fn insert(&mut self, address: Option<AddressKey>) -> (u64, CancellationToken) {
        let id = self.next;
        self.next += 1;
        let evicted = CancellationToken::new();
        self.order.insert(
            id,
            Entry {
                address,
                evicted: evicted.clone(),
            },
        );
        if let Some(address) = address {
            *self.by_address.entry(address).or_default() += 1;
        }
        (id, evicted)
    }
}

impl PendingHandshakes {
    /// An empty table. `stage` labels its metrics
    /// (`im_handshakes_refused_total`, `im_handshakes_evicted_total`).
    pub fn new(limits: AdmissionLimits, stage: &'static str) -> Self {
        Self {
            limits,
            stage,
            table: Arc::default(),
        }
    }

    /// The limits it applies.
    pub fn limits(&self) -> &AdmissionLimits {
        &self.limits
    }

    /// Handshakes pending now.
    pub fn len(&self) -> usize {
        self.table.lock().order.len()
    }

    /// True if none is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admits a connection from `peer` (`None`: unknown address), evicting
    /// another pending handshake if [`plan`] says so; `None` if refused.
    /// The handshake counts as pending until the returned guard is dropped.
    pub fn admit(&self, peer: Option<IpAddr>) -> Option<PendingHandshake> {
        let address = peer.map(AddressKey::of);
        let mut table = self.table.lock();
        match plan(&self.limits, table.occupancy(address)) {
            Admission::Admit => {}
            Admission::Evict => {
                let victim = pick_victim(table.order.iter().map(|(&id, e)| {
                    let here = e.address.and_then(|a| table.by_address.get(&a));
                    (id, here.copied().unwrap_or(1))
                }));
                if let Some(token) = victim.and_then(|id| table.remove(id)) {
                    token.cancel();
                    metrics::counter!("im_handshakes_evicted_total", "stage" => self.stage)
                        .increment(1);
                }
            }
            Admission::Refuse => {
                drop(table);
                metrics::counter!("im_handshakes_refused_total", "stage" => self.stage)
                    .increment(1);
                return None;
            }
        }
        let (id, evicted) = table.insert(address);
        Some(PendingHandshake {
            table: self.table.clone(),
            id,
            evicted,
        })
    }
}

/// One admitted handshake; it stops counting as pending when dropped.
pub struct PendingHandshake {
    table: Arc<Mutex<Table>>,
    id: u64,
    evicted: CancellationToken,
}

impl std::fmt::Debug for PendingHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingHandshake")
            .field("id", &self.id)
            .field("evicted", &self.is_evicted())
            .finish()
    }
}

impl PendingHandshake {
    /// Completes when the handshake was evicted to make room for another
    /// connection: stop it and close the connection with a reason.
    pub async fn evicted(&self) {
        self.evicted.cancelled().await
    }

    /// True if it was evicted.
    pub fn is_evicted(&self) -> bool {
        self.evicted.is_cancelled()
    }
}

impl Drop for PendingHandshake {
    fn drop(&mut self) {
        // Already gone if it was evicted.
        self.table.lock().remove(self.id);
    }
}

#[cfg(test)]
mod tests;

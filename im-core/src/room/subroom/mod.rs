//! Sub-room assignment for huge rooms (the ZEGO design, seed 002).
//!
//! A room starts with one *main* sub-room. Joins are placed in two steps, as
//! a router and a worker would: [`SubRoomPlanner::route`] picks a sub-room
//! that is not full and *pre-allocates* a seat in it (so a join storm spreads
//! over sub-rooms instead of piling into the one that looked empty), then
//! [`SubRoomPlanner::join`] confirms the seat. A join whose sub-room turned
//! out full (a stale hint, see [`SubRoomPlanner::ticket_for`]) or is being
//! merged away is *redirected* once; a redirected join is always accepted,
//! even past the capacity, so no join is redirected twice. When every
//! sub-room is full a new one is opened. Sparse sub-rooms are merged
//! ([`SubRoomPlanner::plan_merge`]); a merging sub-room takes no new joins.
//!
//! The planner only counts. Who sits where is the caller's business: it
//! moves its members when a merge is planned and then calls
//! [`SubRoomPlanner::finish_merge`].

use std::collections::{BTreeMap, BTreeSet};

/// Identifies a sub-room within one room. The main sub-room is `SubRoomId(0)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubRoomId(pub u32);

impl SubRoomId {
    /// The room's first sub-room; it is never merged away.
    pub const MAIN: SubRoomId = SubRoomId(0);
}

/// Sizes of sub-rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubRoomConfig {
    /// Members a sub-room takes before joins go elsewhere (at least 1).
    pub capacity: u32,
    /// A sub-room with fewer members than this is merged into another one
    /// when both fit in `capacity` (0 disables merging).
    pub merge_below: u32,
}

impl Default for SubRoomConfig {
    fn default() -> Self {
        Self {
            capacity: 500,
            merge_below: 125,
        }
    }
}

/// A seat being taken: returned by [`SubRoomPlanner::route`] (pre-allocated)
/// or [`SubRoomPlanner::ticket_for`] (a hint), consumed by
/// [`SubRoomPlanner::join`] or [`SubRoomPlanner::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a ticket holds a pre-allocated seat until joined or cancelled"]
pub struct Ticket {
    sub: SubRoomId,
    redirected: bool,
    reserved: bool,
}

impl Ticket {
    /// The sub-room this ticket points at.
    pub fn sub_room(&self) -> SubRoomId {
        self.sub
    }

    /// True if this ticket is the result of a redirect (it will be accepted).
    pub fn is_redirected(&self) -> bool {
        self.redirected
    }
}

/// What [`SubRoomPlanner::join`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The member now sits in this sub-room.
    Joined(SubRoomId),
    /// The chosen sub-room could not take the member: join again with this
    /// ticket, which is always accepted.
    Redirect(Ticket),
}

/// A planned merge: move every member of `from` into `into`, then call
/// [`SubRoomPlanner::finish_merge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merge {
    /// The sparse sub-room being emptied (it takes no new joins).
    pub from: SubRoomId,
    /// The sub-room receiving its members.
    pub into: SubRoomId,
}

/// A call that does not fit the planner's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlannerError {
    /// No such sub-room.
    #[error("no sub-room {0:?}")]
    UnknownSubRoom(SubRoomId),
    /// A leave from a sub-room with no members.
    #[error("sub-room {0:?} has no members to leave")]
    Empty(SubRoomId),
    /// `finish_merge` for a merge that is not in progress.
    #[error("no merge of {0:?} in progress")]
    NotMerging(SubRoomId),
    /// Seats pre-allocated in the merging sub-room are still outstanding.
    #[error("sub-room {0:?} still has pre-allocated seats")]
    Busy(SubRoomId),
}

/// One sub-room's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubRoomInfo {
    /// Members confirmed by `join`.
    pub members: u32,
    /// Seats pre-allocated by `route` and not yet joined or cancelled.
    pub reserved: u32,
    /// Set while the sub-room is being merged into another.
    pub merging_into: Option<SubRoomId>,
    /// Merges in progress into this sub-room.
    pub incoming: u32,
}

impl SubRoomInfo {
    fn load(&self) -> u64 {
        u64::from(self.members) + u64::from(self.reserved)
    }

    /// May take part in a new merge (as either side).
    fn mergeable(&self) -> bool {
        self.merging_into.is_none() && self.incoming == 0
    }
}

/// Sub-room counts of one room. Pure: no IO, deterministic.
#[derive(Debug, Clone)]
pub struct SubRoomPlanner {
    config: SubRoomConfig,
    subs: BTreeMap<SubRoomId, SubRoomInfo>,
    /// Sub-rooms taking joins with a free seat: routing is O(log n).
    open: BTreeSet<SubRoomId>,
    /// Mergeable sub-rooms by load: planning a merge is O(log n).
    by_load: BTreeSet<(u64, SubRoomId)>,
    next_id: u32,
    members: u64,
}

impl SubRoomPlanner {
    /// A room with only its main sub-room.
    pub fn new(config: SubRoomConfig) -> Self {
        let config = SubRoomConfig {
            capacity: config.capacity.max(1),
            ..config
        };
        let mut p = Self {
            config,
            subs: BTreeMap::new(),
            open: BTreeSet::new(),
            by_load: BTreeSet::new(),
            next_id: 1,
            members: 0,
        };
        p.insert(SubRoomId::MAIN);
        p
    }

    fn insert(&mut self, id: SubRoomId) {
        self.subs.insert(id, SubRoomInfo::default());
        self.index(id);
    }

    fn unindex(&mut self, id: SubRoomId) {
        if let Some(info) = self.subs.get(&id) {
            self.open.remove(&id);
            self.by_load.remove(&(info.load(), id));
        }
    }

    fn index(&mut self, id: SubRoomId) {
        if let Some(info) = self.subs.get(&id) {
            if info.merging_into.is_none() && info.load() < u64::from(self.config.capacity) {
                self.open.insert(id);
            }
            if info.mergeable() {
                self.by_load.insert((info.load(), id));
            }
        }
    }

    /// Changes one sub-room's counters, keeping the indexes in step.
    fn update(&mut self, id: SubRoomId, f: impl FnOnce(&mut SubRoomInfo)) {
        self.unindex(id);
        if let Some(info) = self.subs.get_mut(&id) {
            f(info);
        }
        self.index(id);
    }

    fn remove(&mut self, id: SubRoomId) -> Option<SubRoomInfo> {
        self.unindex(id);
        self.subs.remove(&id)
    }

    /// The configuration in use.
    pub fn config(&self) -> SubRoomConfig {
        self.config
    }

    /// Confirmed members over all sub-rooms.
    pub fn members(&self) -> u64 {
        self.members
    }

    /// The sub-rooms and their counters, by id.
    pub fn sub_rooms(&self) -> impl Iterator<Item = (SubRoomId, SubRoomInfo)> + '_ {
        self.subs.iter().map(|(id, info)| (*id, *info))
    }

    /// One sub-room's counters.
    pub fn sub_room(&self, id: SubRoomId) -> Option<SubRoomInfo> {
        self.subs.get(&id).copied()
    }

    /// Picks a sub-room with a free seat (the lowest id, so sub-rooms fill up
    /// one after another) and pre-allocates the seat. Opens a new sub-room
    /// when all are full or merging.
    pub fn route(&mut self) -> Ticket {
        let sub = self.open_seat();
        self.reserve(sub);
        Ticket {
            sub,
            redirected: false,
            reserved: true,
        }
    }

    /// A ticket for a sub-room chosen elsewhere (a client's previous
    /// sub-room, a router with a stale view). Nothing is pre-allocated; the
    /// join is redirected if the sub-room is full, merging or gone.
    pub fn ticket_for(&self, sub: SubRoomId) -> Ticket {
        Ticket {
            sub,
            redirected: false,
            reserved: false,
        }
    }

    /// Gives back a seat that will not be taken.
    pub fn cancel(&mut self, ticket: Ticket) {
        self.release(ticket);
    }

    /// Confirms a seat. A redirected ticket is always accepted: into its
    /// sub-room even past the capacity, or into the merge target if its
    /// sub-room started merging meanwhile.
    pub fn join(&mut self, ticket: Ticket) -> JoinOutcome {
        self.release(ticket);
        let target = match self.subs.get(&ticket.sub) {
            Some(info) if info.merging_into.is_none() => {
                if ticket.redirected || u64::from(info.members) < u64::from(self.config.capacity) {
                    Some(ticket.sub)
                } else {
                    None
                }
            }
            Some(info) if ticket.redirected => info.merging_into,
            _ => None,
        };
        let target = match target {
            Some(t) => t,
            None if ticket.redirected => self.open_seat(),
            None => {
                let sub = self.open_seat();
                self.reserve(sub);
                return JoinOutcome::Redirect(Ticket {
                    sub,
                    redirected: true,
                    reserved: true,
                });
            }
        };
        if self.subs.contains_key(&target) {
            self.update(target, |info| info.members += 1);
            self.members += 1;
        }
        JoinOutcome::Joined(target)
    }

    /// Routes and joins in one step (the engine's path: it holds one lock).
    pub fn join_now(&mut self) -> SubRoomId {
        let mut ticket = self.route();
        loop {
            match self.join(ticket) {
                JoinOutcome::Joined(sub) => return sub,
                JoinOutcome::Redirect(t) => ticket = t,
            }
        }
    }

    /// A member left `sub`. Returns true if the sub-room is now gone (it was
    /// empty, not the main one, and not part of a merge).
    pub fn leave(&mut self, sub: SubRoomId) -> Result<bool, PlannerError> {
        let info = self
            .subs
            .get(&sub)
            .ok_or(PlannerError::UnknownSubRoom(sub))?;
        if info.members == 0 {
            return Err(PlannerError::Empty(sub));
        }
        self.update(sub, |info| info.members -= 1);
        self.members -= 1;
        let removable = sub != SubRoomId::MAIN
            && self
                .subs
                .get(&sub)
                .is_some_and(|i| i.load() == 0 && i.mergeable());
        if removable {
            self.remove(sub);
        }
        Ok(removable)
    }

    /// Plans one merge of a sparse sub-room into the fullest sub-room the two
    /// fit in, and stops the sparse one taking joins. `None` if nothing is
    /// sparse enough or nothing fits.
    pub fn plan_merge(&mut self) -> Option<Merge> {
        let cap = u64::from(self.config.capacity);
        let (from_load, from) = self
            .by_load
            .iter()
            .find(|(_, id)| *id != SubRoomId::MAIN)
            .copied()?;
        if from_load >= u64::from(self.config.merge_below) || from_load > cap {
            return None;
        }
        let room = cap - from_load;
        let (_, into) = self
            .by_load
            .range(..=(room, SubRoomId(u32::MAX)))
            .rev()
            .find(|(_, id)| *id != from)
            .copied()?;
        self.update(from, |i| i.merging_into = Some(into));
        self.update(into, |i| i.incoming += 1);
        Some(Merge { from, into })
    }

    /// Completes a merge once the caller moved the members: `from`'s members
    /// now count in `into` and `from` is gone. Fails with
    /// [`PlannerError::Busy`] while seats pre-allocated in `from` are
    /// outstanding (join or cancel them first).
    pub fn finish_merge(&mut self, merge: Merge) -> Result<(), PlannerError> {
        let from = self
            .subs
            .get(&merge.from)
            .copied()
            .ok_or(PlannerError::UnknownSubRoom(merge.from))?;
        if from.merging_into != Some(merge.into) || !self.subs.contains_key(&merge.into) {
            return Err(PlannerError::NotMerging(merge.from));
        }
        if from.reserved > 0 {
            return Err(PlannerError::Busy(merge.from));
        }
        self.remove(merge.from);
        self.update(merge.into, |into| {
            into.members += from.members;
            into.incoming = into.incoming.saturating_sub(1);
        });
        Ok(())
    }

    /// The first sub-room with a free seat, or a new one.
    fn open_seat(&mut self) -> SubRoomId {
        if let Some(id) = self.open.first() {
            return *id;
        }
        let id = SubRoomId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        self.insert(id);
        id
    }

    fn reserve(&mut self, sub: SubRoomId) {
        self.update(sub, |info| info.reserved += 1);
    }

    fn release(&mut self, ticket: Ticket) {
        if ticket.reserved {
            self.update(ticket.sub, |info| {
                info.reserved = info.reserved.saturating_sub(1)
            });
        }
    }
}

#[cfg(test)]
mod tests;

//! Who sits where in one room: its sub-rooms, each joined session's seat,
//! and the merges of sparse sub-rooms. Sessions are seen only through
//! [`RoomMember`], so rooms never depend on the registry.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::ids::SessionId;
use crate::room::{SubRoomConfig, SubRoomId, SubRoomPlanner};

use super::Room;

/// What a room needs of a live session: its id and its outbound queue.
/// The engine's session handle implements it (next to the registry that
/// owns the room index); rooms depend on nothing else of a session.
pub(crate) trait RoomMember: Send + Sync + 'static {
    /// The session's id, the key of its seat.
    fn session_id(&self) -> SessionId;
    /// Reads the outbound queue's lock word without taking it: a plain
    /// load that brings the queue's cache line in ahead of a push.
    fn touch_queue(&self) -> bool;
    /// Queues an encoded frame; false if the session did not take it (it is
    /// closing, or was just disconnected as a slow consumer).
    fn queue_frame(&self, frame: Bytes) -> bool;
}

/// Sessions of one sub-room, iterated by the fanout threads.
pub(super) struct SubRoom<M> {
    /// The sub-room's sessions; a seat is an index in this list.
    pub(super) sessions: Mutex<Vec<Arc<M>>>,
}

impl<M> Default for SubRoom<M> {
    /// An empty sub-room.
    fn default() -> Self {
        Self {
            sessions: Mutex::new(Vec::new()),
        }
    }
}

/// Where one session sits.
#[derive(Debug, Clone, Copy)]
struct Seat {
    /// Its sub-room.
    sub: SubRoomId,
    /// Its index in the sub-room's session list.
    index: usize,
}

/// Whether a room is still in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoomState {
    /// In the index; sessions may join.
    Open,
    /// Left the index when its last session left; joins must look it up again.
    Closed,
}

/// What [`Room::join`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Joined {
    /// The session is seated (or already was); the room's sessions now.
    Seated(usize),
    /// The room was closed meanwhile: look it up (or create it) again.
    RoomClosed,
}

/// What [`Room::close_if_empty`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Emptied {
    /// The room was empty and is now closed: the index must forget it.
    Closed,
    /// Someone is in the room, or it was closed before: nothing to do.
    Kept,
}

/// Who sits where in one room.
pub(super) struct Members<M> {
    /// Sub-room sizes, joins and merges.
    planner: SubRoomPlanner,
    /// The sub-rooms in use.
    subs: BTreeMap<SubRoomId, Arc<SubRoom<M>>>,
    /// Each joined session's seat.
    seats: HashMap<SessionId, Seat>,
    /// Whether the room is still in the index.
    state: RoomState,
}

impl<M> Members<M> {
    /// Nobody yet.
    pub(super) fn new(config: SubRoomConfig) -> Self {
        Self {
            planner: SubRoomPlanner::new(config),
            subs: BTreeMap::new(),
            seats: HashMap::new(),
            state: RoomState::Open,
        }
    }

    /// The sub-rooms in use, to deliver a frame to.
    pub(super) fn sub_rooms(&self) -> Vec<Arc<SubRoom<M>>> {
        self.subs.values().cloned().collect()
    }

    /// Sub-rooms in use.
    pub(super) fn sub_room_count(&self) -> usize {
        self.subs.len()
    }
}

impl<M: RoomMember> Room<M> {
    /// Seats a session, unless the room was closed meanwhile.
    pub(super) fn join(&self, s: &Arc<M>) -> Joined {
        let mut m = self.members.lock();
        if m.state == RoomState::Closed {
            return Joined::RoomClosed;
        }
        if !m.seats.contains_key(&s.session_id()) {
            let sub = m.planner.join_now();
            let room = m.subs.entry(sub).or_default().clone();
            let mut list = room.sessions.lock();
            let seat = Seat {
                sub,
                index: list.len(),
            };
            m.seats.insert(s.session_id(), seat);
            list.push(s.clone());
            self.online.fetch_add(1, Ordering::Relaxed);
        }
        Joined::Seated(self.online.load(Ordering::Relaxed))
    }

    /// Unseats a session; returns the sessions left.
    pub(super) fn leave(&self, id: SessionId) -> usize {
        let mut m = self.members.lock();
        let Some(Seat { sub, index }) = m.seats.remove(&id) else {
            return self.online.load(Ordering::Relaxed);
        };
        if let Some(room) = m.subs.get(&sub).cloned() {
            let mut list = room.sessions.lock();
            if index < list.len() {
                list.swap_remove(index);
                if let Some(moved) = list.get(index)
                    && let Some(seat) = m.seats.get_mut(&moved.session_id())
                {
                    seat.index = index;
                }
            }
        }
        if let Ok(true) = m.planner.leave(sub) {
            m.subs.remove(&sub);
        }
        let left = self.online.fetch_sub(1, Ordering::Relaxed) - 1;
        self.try_merge(&mut m);
        left
    }

    /// Closes the room if nobody is in it.
    pub(super) fn close_if_empty(&self) -> Emptied {
        let mut m = self.members.lock();
        if self.online() == 0 && m.state == RoomState::Open {
            m.state = RoomState::Closed;
            return Emptied::Closed;
        }
        Emptied::Kept
    }

    /// Merges sparse sub-rooms, unless a delivery is in progress (then the
    /// fanout thread retries once the room's backlog is delivered).
    pub(super) fn try_merge(&self, m: &mut Members<M>) {
        if m.planner.config().merge_below == 0 {
            return;
        }
        let Some(_quiet) = self.gate.try_write() else {
            return;
        };
        while let Some(merge) = m.planner.plan_merge() {
            let (Some(from), Some(into)) = (
                m.subs.get(&merge.from).cloned(),
                m.subs.get(&merge.into).cloned(),
            ) else {
                break;
            };
            let moved: Vec<Arc<M>> = std::mem::take(&mut *from.sessions.lock());
            let mut list = into.sessions.lock();
            for s in moved {
                let seat = Seat {
                    sub: merge.into,
                    index: list.len(),
                };
                m.seats.insert(s.session_id(), seat);
                list.push(s);
            }
            drop(list);
            if m.planner.finish_merge(merge).is_err() {
                break;
            }
            m.subs.remove(&merge.from);
            metrics::counter!("im_room_sub_room_merges_total").increment(1);
        }
    }
}

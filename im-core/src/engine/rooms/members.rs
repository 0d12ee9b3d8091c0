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

/// Who sits where in one room.
pub(super) struct Members<M> {
    planner: SubRoomPlanner,
    subs: BTreeMap<SubRoomId, Arc<SubRoom<M>>>,
    /// Each joined session's sub-room and index in its session list.
    seats: HashMap<SessionId, (SubRoomId, usize)>,
    /// Set when the room left the index; joins must look it up again.
    closed: bool,
}

impl<M> Members<M> {
    /// Nobody yet.
    pub(super) fn new(config: SubRoomConfig) -> Self {
        Self {
            planner: SubRoomPlanner::new(config),
            subs: BTreeMap::new(),
            seats: HashMap::new(),
            closed: false,
        }
    }

    /// The sub-rooms in use, to deliver a frame to.
    pub(super) fn sub_rooms(&self) -> Vec<Arc<SubRoom<M>>> {
        self.subs.values().cloned().collect()
    }

    /// Sub-rooms in use.
    #[cfg(feature = "bench")]
    pub(super) fn sub_room_count(&self) -> usize {
        self.subs.len()
    }
}

impl<M: RoomMember> Room<M> {
    /// Seats a session; None if the room was closed meanwhile.
    pub(super) fn join(&self, s: &Arc<M>) -> Option<usize> {
        let mut m = self.members.lock();
        if m.closed {
            return None;
        }
        if !m.seats.contains_key(&s.session_id()) {
            let sub = m.planner.join_now();
            let room = m.subs.entry(sub).or_default().clone();
            let mut list = room.sessions.lock();
            m.seats.insert(s.session_id(), (sub, list.len()));
            list.push(s.clone());
            self.online.fetch_add(1, Ordering::Relaxed);
        }
        Some(self.online.load(Ordering::Relaxed))
    }

    /// Unseats a session; returns the sessions left.
    pub(super) fn leave(&self, id: SessionId) -> usize {
        let mut m = self.members.lock();
        let Some((sub, idx)) = m.seats.remove(&id) else {
            return self.online.load(Ordering::Relaxed);
        };
        if let Some(room) = m.subs.get(&sub).cloned() {
            let mut list = room.sessions.lock();
            if idx < list.len() {
                list.swap_remove(idx);
                if let Some(moved) = list.get(idx) {
                    if let Some(seat) = m.seats.get_mut(&moved.session_id()) {
                        seat.1 = idx;
                    }
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

    /// Closes the room if nobody is in it; true if it did (then the index
    /// must forget it, and joins that still hold it look it up again).
    pub(super) fn close_if_empty(&self) -> bool {
        let mut m = self.members.lock();
        if self.online() == 0 && !m.closed {
            m.closed = true;
            return true;
        }
        false
    }

    /// Merges sparse sub-rooms, unless a delivery is in progress (then the
    /// lane retries after it).
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
                m.seats.insert(s.session_id(), (merge.into, list.len()));
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

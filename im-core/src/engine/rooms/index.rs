//! Every live room of the engine, by id: joining, leaving, and the entry
//! points of the shard workers (commits) and sessions (sends, pulls).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::RwLock;

use crate::error::{EngineError, StoreError};
use crate::fanout::FanoutPlan;
use crate::ids::{ChannelId, SessionId, UserId};
use crate::store::{RangePage, RangeRequest, Store, StoredMessage};

use super::limits::UserLimits;
use super::members::{Emptied, Joined};
use super::{FanoutStage, Room, RoomMember, RoomSettings};

/// Every live room of the engine, holding sessions of type `M`.
pub(crate) struct RoomIndex<M> {
    /// Rooms with at least one session, by id.
    rooms: RwLock<HashMap<ChannelId, Arc<Room<M>>>>,
    /// Settings every room shares.
    settings: Arc<RoomSettings>,
    /// The fanout threads every room is delivered by.
    stage: Arc<FanoutStage>,
    /// Per-user send limits over all rooms.
    users: UserLimits,
    /// Fanout thread slot of the next room (spreads rooms over threads).
    next_slot: AtomicUsize,
}

impl<M: RoomMember> RoomIndex<M> {
    /// No rooms yet; rooms are delivered by `stage`.
    pub(crate) fn new(settings: RoomSettings, stage: Arc<FanoutStage>) -> Self {
        Self {
            rooms: RwLock::new(HashMap::new()),
            users: UserLimits::new(settings.user_rate),
            settings: Arc::new(settings),
            stage,
            next_slot: AtomicUsize::new(0),
        }
    }

    /// The room, if anyone is in it.
    pub(crate) fn get(&self, id: &ChannelId) -> Option<Arc<Room<M>>> {
        self.rooms.read().get(id).cloned()
    }

    /// Seats a session in a room (O(1) amortized); returns the room's sessions.
    pub(crate) fn join(&self, id: &ChannelId, s: &Arc<M>) -> usize {
        loop {
            let room = match self.get(id) {
                Some(r) => r,
                None => self
                    .rooms
                    .write()
                    .entry(id.clone())
                    .or_insert_with(|| {
                        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
                        Arc::new(Room::new(
                            id.clone(),
                            self.settings.clone(),
                            self.stage.clone(),
                            slot,
                        ))
                    })
                    .clone(),
            };
            match room.join(s) {
                Joined::Seated(online) => return online,
                Joined::RoomClosed => continue,
            }
        }
    }

    /// Unseats a session (O(1)); forgets the room once it is empty.
    pub(crate) fn leave(&self, id: &ChannelId, session: SessionId) {
        let Some(room) = self.get(id) else {
            return;
        };
        if room.leave(session) > 0 {
            return;
        }
        let mut rooms = self.rooms.write();
        if room.close_if_empty() == Emptied::Closed
            && rooms.get(id).is_some_and(|r| Arc::ptr_eq(r, &room))
        {
            rooms.remove(id);
        }
    }

    /// Sessions in a room.
    pub(crate) fn online(&self, id: &ChannelId) -> usize {
        self.get(id).map_or(0, |r| r.online())
    }

    /// Takes a token from the user's and then the room's send limits (a
    /// flooding user is refused before it can spend the room's budget that
    /// everyone else shares).
    pub(crate) fn check_send(&self, id: &ChannelId, user: &UserId) -> Result<(), EngineError> {
        let now = Instant::now();
        self.users.check(user, now)?;
        match self.get(id) {
            Some(room) => room.check_send(now),
            None => Ok(()),
        }
    }

    /// Takes committed messages of one room (in seq order): into the hot
    /// ring, through the batch window, out to the room's fanout thread.
    pub(crate) fn on_committed(&self, id: &ChannelId, msgs: Vec<StoredMessage>, plan: FanoutPlan) {
        if let Some(room) = self.get(id) {
            room.commit(msgs, plan);
        }
    }

    /// Reads a room's range from its hot ring, or from the store with one
    /// load per distinct range in flight (others wait for it).
    pub(crate) async fn read_range(
        &self,
        store: &Arc<dyn Store>,
        id: &ChannelId,
        req: RangeRequest,
    ) -> Result<RangePage, StoreError> {
        match self.get(id) {
            Some(room) => room.hot.read_range(store, req).await,
            None => store.read_range(req).await,
        }
    }
}

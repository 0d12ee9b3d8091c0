//! The online index: who is connected, and which live sessions belong to
//! each group and room. Fanout cost follows these sets, never member lists.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::cluster::{ClusterBus, Interest};
use crate::ids::{ChannelId, SessionId, UserId};

use super::presence::{Presence, WatchFull};
use super::rooms::RoomIndex;
use super::session::SessionHandle;

/// Live sessions by id, by user, by group and by room.
pub(crate) struct Registry {
    by_user: RwLock<HashMap<UserId, Vec<Arc<SessionHandle>>>>,
    groups: RwLock<GroupIndex>,
    /// Bumped on every group membership change (under the `groups` lock).
    epoch: AtomicU64,
    rooms: RoomIndex<SessionHandle>,
    /// Told when a group gets its first online member here or loses its last.
    cluster: Option<Arc<dyn ClusterBus>>,
    /// Presence watches and group online logs, told of every user's first
    /// and last session and every session entering or leaving a group.
    presence: Presence,
}

/// Group → its live sessions.
type GroupIndex = HashMap<ChannelId, HashMap<SessionId, Arc<SessionHandle>>>;

impl Registry {
    /// An empty registry over a room index; group online logs keep
    /// `group_online_log` changes each.
    pub(crate) fn new(rooms: RoomIndex<SessionHandle>, group_online_log: usize) -> Self {
        Self {
            by_user: RwLock::default(),
            groups: RwLock::default(),
            epoch: AtomicU64::new(0),
            rooms,
            cluster: None,
            presence: Presence::new(group_online_log),
        }
    }

    /// Tells `cluster` (if any) of this node's interest in groups.
    pub(crate) fn with_cluster(mut self, cluster: Option<Arc<dyn ClusterBus>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// A group got its first online member here (`on`) or lost its last.
    /// Called under the `groups` lock, so one group's calls stay in order.
    fn group_interest(&self, group: &ChannelId, on: bool) {
        if let Some(bus) = &self.cluster {
            bus.interest(Interest::Group(group.clone()), on);
        }
    }

    /// The live rooms.
    pub(crate) fn rooms(&self) -> &RoomIndex<SessionHandle> {
        &self.rooms
    }

    /// Presence watches and group online logs.
    pub(crate) fn presence(&self) -> &Presence {
        &self.presence
    }

    /// Adds a session; returns the user's other sessions.
    pub(crate) fn register(&self, s: &Arc<SessionHandle>) -> Vec<Arc<SessionHandle>> {
        let mut by_user = self.by_user.write();
        let list = by_user.entry(s.user.clone()).or_default();
        let others = list.clone();
        list.push(s.clone());
        metrics::gauge!("im_sessions").increment(1.0);
        if others.is_empty() {
            self.presence.user_online(&s.user);
        }
        others
    }

    /// Removes a session from every index.
    pub(crate) fn unregister(&self, s: &SessionHandle) {
        {
            let mut by_user = self.by_user.write();
            if let Some(list) = by_user.get_mut(&s.user) {
                let before = list.len();
                list.retain(|x| x.id != s.id);
                if list.len() < before {
                    metrics::gauge!("im_sessions").decrement(1.0);
                }
                if list.is_empty() {
                    by_user.remove(&s.user);
                    self.presence.user_offline(&s.user);
                }
            }
        }
        self.presence.forget_session(s.id);
        {
            // Under the index lock, so no concurrent index_groups can re-add it.
            let mut index = self.groups.write();
            s.gone.store(true, Ordering::Release);
            let mut left = Vec::new();
            for g in s.groups.lock().drain() {
                if let Some(set) = index.get_mut(&g) {
                    if set.remove(&s.id).is_some() {
                        left.push(g.clone());
                    }
                    if set.is_empty() {
                        index.remove(&g);
                        self.group_interest(&g, false);
                    }
                }
            }
            self.presence
                .group_sessions(false, left.iter().map(|g| (g, &s.user)));
        }
        // Held while leaving, so a concurrent join_room waits and then sees `gone`.
        let mut rooms = s.rooms.lock();
        for r in rooms.drain() {
            self.rooms.leave(&r, s.id);
        }
    }

    /// The user's live sessions.
    pub(crate) fn user_sessions(&self, user: &UserId) -> Vec<Arc<SessionHandle>> {
        self.by_user.read().get(user).cloned().unwrap_or_default()
    }

    /// True if the user has a live session.
    pub(crate) fn is_online(&self, user: &UserId) -> bool {
        self.by_user.read().contains_key(user)
    }

    /// `s` watches `users` (see [`Presence::watch`]); `answer` gets their
    /// state, before any later change of it is told.
    pub(crate) fn watch_presence(
        &self,
        s: &Arc<SessionHandle>,
        users: &[UserId],
        max: usize,
        answer: impl FnOnce(Vec<crate::pb::UserPresence>),
    ) -> Result<(), WatchFull> {
        let by_user = self.by_user.read();
        self.presence
            .watch(s, users, max, |u| by_user.contains_key(u), answer)
    }

    /// Number of live sessions.
    pub(crate) fn session_count(&self) -> usize {
        self.by_user.read().values().map(Vec::len).sum()
    }

    /// Every live session.
    pub(crate) fn all_sessions(&self) -> Vec<Arc<SessionHandle>> {
        self.by_user.read().values().flatten().cloned().collect()
    }

    /// Membership-change counter, read before loading a user's groups.
    pub(crate) fn membership_epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Indexes a session under the groups loaded at `epoch`. Returns false
    /// (indexing nothing) if membership changed since: load again.
    pub(crate) fn index_groups_at(
        &self,
        s: &Arc<SessionHandle>,
        groups: &[ChannelId],
        epoch: u64,
    ) -> bool {
        let mut index = self.groups.write();
        if self.epoch.load(Ordering::Acquire) != epoch {
            return false;
        }
        self.index_locked(&mut index, s, groups);
        true
    }

    fn index_locked(&self, index: &mut GroupIndex, s: &Arc<SessionHandle>, groups: &[ChannelId]) {
        if s.gone.load(Ordering::Acquire) {
            return;
        }
        let mut mine = s.groups.lock();
        let mut entered = Vec::new();
        for g in groups {
            let set = index.entry(g.clone()).or_insert_with(|| {
                self.group_interest(g, true);
                HashMap::new()
            });
            if set.insert(s.id, s.clone()).is_none() {
                entered.push(g);
            }
            mine.insert(g.clone());
        }
        drop(mine);
        self.presence
            .group_sessions(true, entered.into_iter().map(|g| (g, &s.user)));
    }

    /// Indexes every live session of `users` under `group`.
    pub(crate) fn add_group_members(&self, group: &ChannelId, users: &[UserId]) {
        let sessions: Vec<_> = users.iter().flat_map(|u| self.user_sessions(u)).collect();
        let mut index = self.groups.write();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for s in sessions {
            self.index_locked(&mut index, &s, std::slice::from_ref(group));
        }
    }

    /// Removes every live session of `users` from `group`'s index.
    pub(crate) fn remove_group_members(&self, group: &ChannelId, users: &[UserId]) {
        let mut index = self.groups.write();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        // Sessions are looked up under the index lock (unlike when adding):
        // a session that registered and indexed the group just before must
        // be found, or it would keep receiving a group it left.
        let mut left = Vec::new();
        for s in users.iter().flat_map(|u| self.user_sessions(u)) {
            s.groups.lock().remove(group);
            if let Some(set) = index.get_mut(group) {
                if set.remove(&s.id).is_some() {
                    left.push(s.user.clone());
                }
                if set.is_empty() {
                    index.remove(group);
                    self.group_interest(group, false);
                }
            }
        }
        self.presence
            .group_sessions(false, left.iter().map(|u| (group, u)));
    }

    /// Calls `f` with the live sessions of a group.
    pub(crate) fn with_group<R>(
        &self,
        group: &ChannelId,
        f: impl FnOnce(&mut dyn Iterator<Item = &Arc<SessionHandle>>) -> R,
    ) -> R {
        let index = self.groups.read();
        let mut it = index.get(group).into_iter().flat_map(|m| m.values());
        f(&mut it)
    }

    /// Live sessions of a group.
    pub(crate) fn group_online(&self, group: &ChannelId) -> usize {
        self.groups.read().get(group).map_or(0, HashMap::len)
    }

    /// Adds a session to a room; returns the room's session count.
    pub(crate) fn join_room(&self, room: &ChannelId, s: &Arc<SessionHandle>) -> usize {
        // Held across the join: unregister waits for it, then removes it.
        let mut mine = s.rooms.lock();
        if s.gone.load(Ordering::Acquire) {
            return 0;
        }
        mine.insert(room.clone());
        self.rooms.join(room, s)
    }

    /// Removes a session from a room.
    pub(crate) fn leave_room(&self, room: &ChannelId, s: &SessionHandle) {
        s.rooms.lock().remove(room);
        self.rooms.leave(room, s.id);
    }

    /// Sessions in a room.
    pub(crate) fn room_online(&self, room: &ChannelId) -> usize {
        self.rooms.online(room)
    }
}

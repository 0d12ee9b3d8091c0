//! Presence, as known on this process: which sessions watch which users'
//! online state (told on every first-session-up and last-session-down), and
//! each group's online members with a versioned change log
//! ([`OnlineLog`]) for incremental `GroupOnline` sync.
//!
//! The registry calls in under its own locks, so what is told here follows
//! the order sessions really came and went: user transitions and watches
//! under `Registry::by_user`, group changes under `Registry::groups`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::codec::{encode_server_frame, server_frame};
use crate::ids::{ChannelId, SessionId, UserId, now_ms};
use crate::online_log::OnlineLog;
use crate::pb::{self, server_frame::Body as Out};

use super::session::SessionHandle;

/// Watches and group logs.
pub(crate) struct Presence {
    watches: Mutex<Watches>,
    groups: Mutex<GroupLogs>,
    /// Changes kept per group log.
    log_capacity: usize,
}

/// Who watches whom.
#[derive(Default)]
struct Watches {
    /// Watched user → the sessions watching them.
    watchers: HashMap<UserId, HashMap<SessionId, Arc<SessionHandle>>>,
    /// Session → the users it watches.
    by_session: HashMap<SessionId, HashSet<UserId>>,
    /// When a watched user went offline (kept only while watched).
    last_seen: HashMap<UserId, u64>,
}

/// The change logs of groups with online members here.
struct GroupLogs {
    logs: HashMap<ChannelId, OnlineLog<UserId>>,
    /// The version a new log starts at: past every version a dropped log
    /// handed out, and seeded from the clock so that versions of an earlier
    /// process read as too old (unless presence changed more than a
    /// thousand times a millisecond on average).
    next_start: u64,
}

/// A session would watch more users than it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a session may watch at most {max} users")]
pub(crate) struct WatchFull {
    /// The limit.
    pub(crate) max: usize,
}

impl Presence {
    /// No watches, no logs; group logs keep `log_capacity` changes.
    pub(crate) fn new(log_capacity: usize) -> Self {
        Self {
            watches: Mutex::default(),
            groups: Mutex::new(GroupLogs {
                logs: HashMap::new(),
                next_start: wall_ms().saturating_mul(1000),
            }),
            log_capacity,
        }
    }

    /// `user`'s first session here opened: tell their watchers. Called
    /// under `Registry::by_user` (write).
    pub(crate) fn user_online(&self, user: &UserId) {
        let mut w = self.watches.lock();
        w.last_seen.remove(user);
        w.tell(user, true, 0);
    }

    /// `user`'s last session here closed: tell their watchers. Called
    /// under `Registry::by_user` (write).
    pub(crate) fn user_offline(&self, user: &UserId) {
        let mut w = self.watches.lock();
        if w.watchers.contains_key(user) {
            let at = wall_ms();
            w.last_seen.insert(user.clone(), at);
            w.tell(user, false, at);
        }
    }

    /// Drops the watches of a closed session.
    pub(crate) fn forget_session(&self, session: SessionId) {
        let mut w = self.watches.lock();
        if let Some(users) = w.by_session.remove(&session) {
            w.unwatch_all(session, users);
        }
    }

    /// `session` watches `users` from now on (at most `max` in all, or
    /// nothing changes); returns their state. Called under
    /// `Registry::by_user` (read), which `online` reads, and `answer` is
    /// called under the lock, so no event about them can overtake it.
    pub(crate) fn watch(
        &self,
        session: &Arc<SessionHandle>,
        users: &[UserId],
        max: usize,
        online: impl Fn(&UserId) -> bool,
        answer: impl FnOnce(Vec<pb::UserPresence>),
    ) -> Result<(), WatchFull> {
        let mut w = self.watches.lock();
        let mine = w.by_session.entry(session.id).or_default();
        let new = users.iter().filter(|u| !mine.contains(*u)).count();
        if mine.len() + new > max {
            if mine.is_empty() {
                w.by_session.remove(&session.id);
            }
            return Err(WatchFull { max });
        }
        mine.extend(users.iter().cloned());
        for u in users {
            w.watchers
                .entry(u.clone())
                .or_default()
                .insert(session.id, session.clone());
        }
        let states = users
            .iter()
            .map(|u| {
                let on = online(u);
                let seen = if on {
                    None
                } else {
                    w.last_seen.get(u).copied()
                };
                user_presence(u, on, seen.unwrap_or(0))
            })
            .collect();
        answer(states);
        Ok(())
    }

    /// `session` stops watching `users`.
    pub(crate) fn unwatch(&self, session: SessionId, users: &[UserId]) {
        let mut w = self.watches.lock();
        let Some(mine) = w.by_session.get_mut(&session) else {
            return;
        };
        let dropped: Vec<UserId> = users.iter().filter(|u| mine.remove(*u)).cloned().collect();
        if mine.is_empty() {
            w.by_session.remove(&session);
        }
        w.unwatch_all(session, dropped);
    }

    /// Sessions were indexed under groups (`up`) or left them: the first
    /// session of a member in a group brings them online there, the last
    /// takes them offline. Called under `Registry::groups` (write).
    pub(crate) fn group_sessions<'a>(
        &self,
        up: bool,
        entries: impl IntoIterator<Item = (&'a ChannelId, &'a UserId)>,
    ) {
        let mut g = self.groups.lock();
        let GroupLogs { logs, next_start } = &mut *g;
        for (group, user) in entries {
            if up {
                logs.entry(group.clone())
                    .or_insert_with(|| OnlineLog::new(*next_start, self.log_capacity))
                    .session_up(user);
            } else if let Some(log) = logs.get_mut(group) {
                log.session_down(user);
                if log.is_empty() {
                    *next_start = (*next_start).max(log.version() + 1);
                    logs.remove(group);
                    metrics::counter!("im_group_online_logs_dropped_total").increment(1);
                }
            }
        }
    }

    /// The answer to `GroupOnline`: the changes since `since` when the log
    /// still has them (and no page is asked for), else a page of at most
    /// `limit` online members after `after`.
    pub(crate) fn group_online(
        &self,
        group: &ChannelId,
        since: u64,
        after: Option<&UserId>,
        limit: usize,
    ) -> pb::GroupOnlineResult {
        let g = self.groups.lock();
        let mut out = pb::GroupOnlineResult {
            group: group.to_string(),
            full: true,
            ..Default::default()
        };
        let Some(log) = g.logs.get(group) else {
            // Nobody online: the version a log made now would start at.
            out.version = g.next_start;
            return out;
        };
        out.version = log.version();
        let changes = if after.is_none() && since != 0 {
            log.since(since)
        } else {
            None
        };
        match changes {
            Some(c) => {
                out.full = false;
                out.online = c.came_online.iter().map(ToString::to_string).collect();
                out.offline = c.went_offline.iter().map(ToString::to_string).collect();
            }
            None => {
                let (page, more) = log.page(after, limit);
                out.online = page.iter().map(ToString::to_string).collect();
                out.more = more;
            }
        }
        out
    }

    /// Up to `limit` members of `group` online here, sorted, after `after`.
    pub(crate) fn online_members(
        &self,
        group: &ChannelId,
        after: Option<&UserId>,
        limit: usize,
    ) -> (Vec<UserId>, bool) {
        self.groups
            .lock()
            .logs
            .get(group)
            .map_or_else(|| (Vec::new(), false), |log| log.page(after, limit))
    }
}

impl Watches {
    /// Sends `user`'s new state to their watchers.
    fn tell(&self, user: &UserId, online: bool, last_seen_ms: u64) {
        let Some(watchers) = self.watchers.get(user) else {
            return;
        };
        let frame = encode_server_frame(&server_frame(
            0,
            Out::Presence(user_presence(user, online, last_seen_ms)),
        ));
        let sent = watchers.values().filter(|s| s.send(frame.clone())).count();
        metrics::counter!("im_presence_events_total").increment(sent as u64);
    }

    /// Removes `session` from the watchers of `users`.
    fn unwatch_all(&mut self, session: SessionId, users: impl IntoIterator<Item = UserId>) {
        for u in users {
            if let Some(set) = self.watchers.get_mut(&u) {
                set.remove(&session);
                if set.is_empty() {
                    self.watchers.remove(&u);
                    self.last_seen.remove(&u);
                }
            }
        }
    }
}

/// Milliseconds since the Unix epoch (0 before it).
fn wall_ms() -> u64 {
    u64::try_from(now_ms()).unwrap_or(0)
}

/// A user's state on the wire.
fn user_presence(user: &UserId, online: bool, last_seen_ms: u64) -> pb::UserPresence {
    pb::UserPresence {
        user_id: user.to_string(),
        online,
        last_seen_ms,
    }
}

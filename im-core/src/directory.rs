//! The session directory: which users have live sessions, and in which
//! rooms, beyond this process.
//!
//! The engine keeps its own index of the sessions it serves (that is what
//! fanout walks, never a member list). The [`SessionDirectory`] is told of
//! every session that opens or closes and every room join or leave here, and
//! is asked whether a user is online when this process has no session of
//! them — before a message is handed to the offline push hook, and in
//! [`Engine::is_online`](crate::Engine::is_online). The default,
//! [`LocalDirectory`], knows only this process. A cluster implements it
//! across nodes (presence in a shared store, interest on a bus).

use std::fmt;

use crate::ids::{ChannelId, DeviceId, SessionId, UserId};

/// A live session, as the directory is told of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The engine's id of the session (unique in this process).
    pub session: SessionId,
    /// Who is connected.
    pub user: UserId,
    /// From which device.
    pub device: DeviceId,
}

/// Where users' sessions are online. Every method is called on the engine's
/// hot paths (connect, disconnect, join, offline push): keep them cheap and
/// non-blocking; do IO on a task of your own.
pub trait SessionDirectory: Send + Sync + fmt::Debug + 'static {
    /// A session opened on this process.
    fn session_opened(&self, session: &SessionInfo) {
        let _ = session;
    }

    /// A session closed on this process.
    fn session_closed(&self, session: &SessionInfo) {
        let _ = session;
    }

    /// A session here joined a live room.
    fn room_joined(&self, room: &ChannelId, session: &SessionInfo) {
        let _ = (room, session);
    }

    /// A session here left a live room (or closed while in it).
    fn room_left(&self, room: &ChannelId, session: &SessionInfo) {
        let _ = (room, session);
    }

    /// True if `user` has a live session anywhere; `here` says whether this
    /// process has one.
    fn is_online(&self, user: &UserId, here: bool) -> bool {
        let _ = user;
        here
    }
}

/// The default directory: a user is online if this process serves them.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalDirectory;

impl SessionDirectory for LocalDirectory {}

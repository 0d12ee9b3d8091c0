//! Host hooks: the application's own rules, plugged into the engine with
//! [`EngineBuilder`](crate::EngineBuilder) setters. Every hook is optional;
//! without one the engine behaves as it always did.
//!
//! - [`PreSendHook`]: allow, reject or rewrite a client's `Send` or `Edit`
//!   before it reaches the conversation's writer.
//! - [`RoomJoinPolicy`]: who may take a seat in a live room.
//! - [`SessionObserver`]: told of every session that connects or ends.
//! - [`CallHandler`]: answers the client's custom requests (`Call` frames).

use std::net::SocketAddr;

use async_trait::async_trait;
use bytes::Bytes;

use crate::content::ContentType;
use crate::ids::{ChannelId, ConversationId, DeviceId, Seq, SessionId, UserId};
use crate::pb;

/// A client message about to be committed, as a [`PreSendHook`] sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OutgoingMessage {
    /// The sending user.
    pub sender: UserId,
    /// The sending device.
    pub device: DeviceId,
    /// Where it goes.
    pub conversation: ConversationId,
    /// The client's id for it: a retried send carries the same id, so a
    /// hook with side effects (strike counts) can recognise a retry.
    pub client_msg_id: String,
    /// `Some(seq)` for an `Edit` of the message at `seq`, `None` for a `Send`.
    pub edit_of: Option<Seq>,
    /// How to read the body.
    pub content_type: ContentType,
    /// The body, opaque to the engine.
    pub body: Bytes,
}

/// A [`PreSendHook`]'s decision.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendVerdict {
    /// Commit the message as it is.
    Allow,
    /// Refuse it: the client gets `ERROR_CODE_REJECTED` with this reason.
    Reject {
        /// Shown to the client.
        reason: String,
    },
    /// Commit this body and content type instead (masking, cleanup). The
    /// body must fit `EngineConfig::max_body_bytes`.
    Rewrite {
        /// The body to commit.
        body: Bytes,
        /// Its content type.
        content_type: ContentType,
    },
}

/// Moderation, blocklists, cleanup: sees every client `Send` and `Edit`
/// before the conversation's writer does.
///
/// It runs on the sending session's task, never on the writer, so a slow
/// hook delays only that session's own later requests (which keeps its
/// sends in order) and never anyone else's. It has
/// `EngineConfig::hook_timeout` to answer; past that the send fails with a
/// retryable `ERROR_CODE_UNAVAILABLE` and nothing is committed (failing
/// closed: a moderation check that did not answer lets nothing through).
///
/// Not called for the host's own commits (`Engine::send_as`,
/// `Engine::edit`), which the host checks itself, nor for recalls, which
/// carry no body. The engine checks membership when it commits, so the
/// hook may see a send that is then refused as `FORBIDDEN`.
///
/// A retried send (same `client_msg_id`) is checked again. That is
/// harmless: if the first try committed, an `Allow` or `Rewrite` ends in the
/// original `SendAck` (the engine deduplicates at commit), and a `Reject`
/// or a timeout is answered with the original `SendAck` too, found by its
/// id before the refusal is sent.
#[async_trait]
pub trait PreSendHook: Send + Sync + 'static {
    /// Decides what happens to one message.
    async fn check(&self, message: &OutgoingMessage) -> SendVerdict;
}

/// A session asking for a seat in a live room, as a [`RoomJoinPolicy`] sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RoomJoinRequest {
    /// The user asking.
    pub user: UserId,
    /// Their device.
    pub device: DeviceId,
    /// The room.
    pub room: ChannelId,
}

/// A [`RoomJoinPolicy`]'s decision.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinVerdict {
    /// Seat the session.
    Allow,
    /// Refuse: the client gets `ERROR_CODE_FORBIDDEN` with this reason.
    Refuse {
        /// Shown to the client.
        reason: String,
    },
}

/// Decides who may join which live room. Without one, any signed-in user
/// may join any room. Runs on the joining session's task with
/// `EngineConfig::hook_timeout` to answer; past that the join fails with a
/// retryable `ERROR_CODE_UNAVAILABLE`.
#[async_trait]
pub trait RoomJoinPolicy: Send + Sync + 'static {
    /// Decides one join.
    async fn authorize_join(&self, join: &RoomJoinRequest) -> JoinVerdict;
}

/// A session, as a [`SessionObserver`] is told of it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionDetails {
    /// The engine's id of the session.
    pub session: SessionId,
    /// The authenticated user.
    pub user: UserId,
    /// The device it named.
    pub device: DeviceId,
    /// The transport it came over (`"tcp"`, `"ws"`, ...).
    pub transport: &'static str,
    /// The peer's address, if the transport knows it.
    pub peer_addr: Option<SocketAddr>,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client closed the connection, or it dropped.
    Closed,
    /// The server sent `Kicked` with this reason: replaced by a newer
    /// session, kicked by the host, shutdown, a slow consumer, or
    /// `HeartbeatTimeout` when the client fell silent.
    Kicked(pb::KickReason),
    /// The server closed it for another reason (too many malformed frames,
    /// a frame over the limit, a failed write, the store unavailable at
    /// connect), with the close detail.
    Failed(String),
}

/// Told of every session that connects (after `Connected` is queued) and
/// every session that ends.
///
/// Events go through one bounded queue
/// (`EngineConfig::session_event_queue`) to one task that calls the
/// observer in order, so a session's `on_disconnect` always follows its
/// `on_connect` and a slow observer never holds a session. Delivery is at
/// most once: when the queue is full an event is dropped, counted in
/// `im_session_events_dropped_total` and logged, and events still queued
/// when the process exits are lost.
#[async_trait]
pub trait SessionObserver: Send + Sync + 'static {
    /// A session connected.
    async fn on_connect(&self, session: &SessionDetails) {
        let _ = session;
    }

    /// A session ended.
    async fn on_disconnect(&self, session: &SessionDetails, reason: &DisconnectReason) {
        let _ = (session, reason);
    }
}

/// A client's custom request (`Call`), as a [`CallHandler`] sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CallRequest {
    /// The calling user.
    pub user: UserId,
    /// Their device.
    pub device: DeviceId,
    /// The calling session.
    pub session: SessionId,
    /// What to do, named by the application (1..=`MAX_CALL_METHOD_BYTES`).
    pub method: String,
    /// Its parameters, opaque to the engine (at most
    /// `EngineConfig::max_call_bytes`).
    pub data: Bytes,
}

/// A [`CallHandler`]'s refusal, sent to the client as an `Error` frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {reason}")]
#[non_exhaustive]
pub struct CallError {
    /// The code the client sees.
    pub code: pb::ErrorCode,
    /// Shown to the client.
    pub reason: String,
    /// Whether the client may send the same call again.
    pub retryable: bool,
}

impl CallError {
    /// A non-retryable error with `code`.
    pub fn new(code: pb::ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            retryable: false,
        }
    }

    /// `ERROR_CODE_REJECTED`: the application refuses this call.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Self::new(pb::ErrorCode::Rejected, reason)
    }

    /// `ERROR_CODE_UNIMPLEMENTED`: no such method.
    pub fn unknown_method(method: &str) -> Self {
        Self::new(
            pb::ErrorCode::Unimplemented,
            format!("unknown method {method:?}"),
        )
    }

    /// Marks the error retryable.
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }
}

/// Longest `Call.method` accepted, in bytes.
pub const MAX_CALL_METHOD_BYTES: usize = 128;

/// Answers clients' custom requests, like an RPC. Each call runs on its own
/// task, off the session's loop, with `EngineConfig::call_timeout` to
/// answer (past that the client gets a retryable `ERROR_CODE_UNAVAILABLE`);
/// a session has at most `EngineConfig::max_calls_per_session` in flight
/// and `call_rate` per second. Without a handler every call is answered
/// `ERROR_CODE_UNIMPLEMENTED`.
#[async_trait]
pub trait CallHandler: Send + Sync + 'static {
    /// Answers one call with the data for `CallResult`, or an error.
    async fn call(&self, call: CallRequest) -> Result<Bytes, CallError>;
}

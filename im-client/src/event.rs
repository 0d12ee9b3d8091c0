//! What the SDK tells the host application.

use im_core::pb;

use crate::key::ConversationKey;

/// Where the connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Opening a connection to `address`.
    Connecting {
        /// The server address tried.
        address: String,
    },
    /// Authenticated; catching up on what happened while away.
    CatchingUp,
    /// Caught up: every conversation is delivered up to the heads learned
    /// on connect; new messages arrive live.
    Online,
    /// The connection is gone; the SDK reconnects after a backoff.
    Disconnected {
        /// Why (socket error, kick, server error).
        reason: String,
    },
    /// The SDK gave up for good (refused credentials, replaced by another
    /// session, removed by the host, or [`crate::Client::close`]).
    Stopped {
        /// Why.
        reason: String,
    },
}

/// One thing the host application should know about.
// `Message` is the common event and the biggest (a `pb::Message` with its
// optional recall/edit and system event parts): boxing it would cost an
// allocation per message to save a few bytes on the rarer events.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The connection state changed.
    State(ConnectionState),
    /// A message, exactly once per (conversation, seq) and in seq order per
    /// conversation; the user's own sends are included once acknowledged.
    Message(pb::Message),
    /// A send was committed by the server (once per send, even across
    /// reconnects and retries).
    SendAcked {
        /// The id the send was made with.
        client_msg_id: String,
        /// Where it was sent.
        conversation: ConversationKey,
        /// Its position in the conversation.
        seq: u64,
        /// The server's message id.
        message_id: u64,
    },
    /// A send was refused for good (not a member, invalid, ...): it is not
    /// retried.
    SendFailed {
        /// The id the send was made with.
        client_msg_id: String,
        /// Where it was sent.
        conversation: ConversationKey,
        /// The server's error.
        error: pb::Error,
    },
    /// The server recorded the user's read position (answer to a read).
    ReadAck(pb::ReadAck),
    /// Someone read up to a seq: the other side of a direct chat, or this
    /// user on another device.
    ReadReceipt(pb::ReadReceipt),
    /// Someone is typing (or stopped); show it for a few seconds.
    Typing(pb::TypingEvent),
    /// An instruction from the host application (not a chat message).
    Instruction(pb::Instruction),
    /// A room was joined (also after each reconnect).
    RoomJoined(pb::RoomJoined),
    /// A room join was refused; the room is forgotten.
    RoomFailed {
        /// The room.
        room_id: String,
        /// The server's error.
        error: pb::Error,
    },
    /// Messages `(after_seq, until_seq]` of a conversation are no longer
    /// retained by the server: they will never arrive.
    HistoryGap {
        /// The conversation.
        conversation: ConversationKey,
        /// Last seq delivered before the gap.
        after_seq: u64,
        /// Last seq of the gap.
        until_seq: u64,
    },
    /// The server ended the session.
    Kicked {
        /// Why (the wire's `KickReason`).
        reason: pb::KickReason,
        /// The server's detail text.
        detail: String,
    },
    /// An error the server sent on its own, or for a request the SDK made.
    ServerError(pb::Error),
}

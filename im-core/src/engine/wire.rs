//! Conversions between stored records and protocol messages.

use crate::error::{EngineError, StoreError};
use crate::ids::{Seq, UserId};
use crate::pb;
use crate::store::{ContentType, ConversationSettings, ConversationState, StoredMessage};

/// Unread counts are exact to this, then shown as "99+".
pub(crate) const UNREAD_EXACT_MAX: u32 = 99;

/// The one mapping from an engine error to the code a client sees. Every
/// answer to a client goes through it, so one failure never reaches two
/// clients as two different codes.
pub(crate) fn error_code(err: &EngineError) -> pb::ErrorCode {
    match err {
        EngineError::Store(StoreError::NotFound(_)) => pb::ErrorCode::NotFound,
        EngineError::Store(StoreError::Rejected(_)) => pb::ErrorCode::InvalidArgument,
        EngineError::Store(_) => pb::ErrorCode::Unavailable,
        EngineError::InvalidRequest(_) | EngineError::InvalidId(_) => {
            pb::ErrorCode::InvalidArgument
        }
        EngineError::Forbidden(_) => pb::ErrorCode::Forbidden,
        EngineError::RateLimited(_) => pb::ErrorCode::RateLimited,
        EngineError::Blocked(_) => pb::ErrorCode::Blocked,
        EngineError::Muted(_) => pb::ErrorCode::Muted,
        EngineError::ShuttingDown => pb::ErrorCode::ShuttingDown,
    }
}

/// A stored message as `viewer` sees it on the wire. A system event's
/// stored body (the encoded event) goes out as `system`, and the body as a
/// short text for clients that predate system events.
pub(crate) fn message_to_wire(m: &StoredMessage, viewer: &UserId) -> pb::Message {
    let (content_type, custom_content_type) = m.content_type.to_wire();
    let (body, system) = match m.content_type {
        ContentType::System => {
            let event = crate::group_roles::decode_body(&m.body);
            let text = crate::group_roles::summary(&event);
            (bytes::Bytes::from(text), Some(event))
        }
        _ => (m.body.clone(), None),
    };
    pb::Message {
        conversation: Some(m.conversation.to_wire(viewer)),
        seq: m.seq,
        message_id: m.message_id.0,
        sender_user: m.sender.to_string(),
        sender_device: m.sender_device.to_string(),
        client_msg_id: m.client_msg_id.clone().unwrap_or_default(),
        body,
        server_time_ms: m.server_time_ms,
        content_type,
        custom_content_type,
        recalled: m.recalled,
        edit_count: m.edit_count,
        event: m.event.as_ref().map(crate::content::MessageEvent::to_wire),
        system,
    }
}

/// The `SendAck` for a committed message.
pub(crate) fn send_ack(m: &StoredMessage, viewer: &UserId, duplicate: bool) -> pb::SendAck {
    pb::SendAck {
        client_msg_id: m.client_msg_id.clone().unwrap_or_default(),
        conversation: Some(m.conversation.to_wire(viewer)),
        seq: m.seq,
        message_id: m.message_id.0,
        server_time_ms: m.server_time_ms,
        duplicate,
    }
}

/// Splits a capped unread count into (exact count up to 99, "more than 99").
pub(crate) fn unread_display(count: u32) -> (u32, bool) {
    (count.min(UNREAD_EXACT_MAX), count > UNREAD_EXACT_MAX)
}

/// A conversation state as a list entry.
///
/// `peer_read_seq` is the other side's read cursor in a direct chat (0 for
/// a group).
pub(crate) fn summary_to_wire(
    s: &ConversationState,
    settings: ConversationSettings,
    viewer: &UserId,
    peer_read_seq: Seq,
) -> pb::ConversationSummary {
    let (unread, unread_more) = unread_display(s.unread);
    pb::ConversationSummary {
        conversation: Some(s.conversation.to_wire(viewer)),
        head_seq: s.head_seq,
        read_seq: s.read_seq,
        delivered_seq: s.delivered_seq,
        unread,
        unread_more,
        last_message: s.last_message.as_ref().map(|m| message_to_wire(m, viewer)),
        muted: settings.muted,
        pinned: settings.pinned,
        peer_read_seq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_is_exact_to_99_then_99_plus() {
        assert_eq!(unread_display(0), (0, false));
        assert_eq!(unread_display(99), (99, false));
        assert_eq!(unread_display(100), (99, true));
        assert_eq!(unread_display(u32::MAX), (99, true));
    }
}

//! Small builders for ids and messages, shared by the checks and handy in
//! an integrator's own store tests.
//!
//! Every builder panics on an invalid id: they are meant for literals.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use im_core::ids::{ChannelId, ConversationId, DedupKey, DeviceId, MessageId, Seq, UserId};
use im_core::store::{MessageEvent, NewMessage, StoredMessage};

/// Source of distinct message ids within one test process.
static NEXT_MESSAGE_ID: AtomicU64 = AtomicU64::new(1);

/// A user id.
pub fn user(s: &str) -> UserId {
    UserId::new(s).unwrap_or_else(|e| panic!("invalid user id {s:?}: {e}"))
}

/// User ids.
pub fn users(list: &[&str]) -> Vec<UserId> {
    list.iter().map(|s| user(s)).collect()
}

/// A device id.
pub fn device(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap_or_else(|e| panic!("invalid device id {s:?}: {e}"))
}

/// A group or room id.
pub fn channel(s: &str) -> ChannelId {
    ChannelId::new(s).unwrap_or_else(|e| panic!("invalid channel id {s:?}: {e}"))
}

/// The direct conversation of two users.
pub fn direct(a: &str, b: &str) -> ConversationId {
    ConversationId::direct(user(a), user(b))
}

/// A group conversation.
pub fn group(id: &str) -> ConversationId {
    ConversationId::Group(channel(id))
}

/// A room conversation.
pub fn room(id: &str) -> ConversationId {
    ConversationId::Room(channel(id))
}

/// A dedup key.
pub fn dedup_key(user_id: &str, device_id: &str, client_msg_id: &str) -> DedupKey {
    DedupKey {
        user: user(user_id),
        device: device(device_id),
        client_msg_id: client_msg_id.to_owned(),
    }
}

/// A fresh message id, distinct from every other one this process made.
pub fn next_message_id() -> MessageId {
    MessageId(NEXT_MESSAGE_ID.fetch_add(1, Ordering::Relaxed))
}

/// A message at `seq` from `sender` (device `"dev"`), with an optional client
/// message id, a body naming the conversation and seq, and a fresh message id.
pub fn message(
    conversation: &ConversationId,
    seq: Seq,
    sender: &str,
    client_msg_id: Option<&str>,
) -> StoredMessage {
    StoredMessage {
        conversation: conversation.clone(),
        seq,
        message_id: next_message_id(),
        sender: user(sender),
        sender_device: device("dev"),
        client_msg_id: client_msg_id.map(str::to_owned),
        body: Bytes::from(format!("{conversation} #{seq} from {sender}")),
        server_time_ms: 1_700_000_000_000 + seq as i64,
        content_type: im_core::store::ContentType::Text,
        event: None,
        recalled: false,
        edit_count: 0,
    }
}

/// Wraps a message for an append, with its inbox recipients.
pub fn new_message(message: StoredMessage, recipients: &[&str]) -> NewMessage {
    NewMessage {
        message,
        inbox_recipients: users(recipients),
    }
}

/// An event message at `seq` from `sender` (device `"dev"`) making `event`
/// to an earlier message, with `body` (empty for a recall, the new version
/// for an edit).
pub fn event_message(
    conversation: &ConversationId,
    seq: Seq,
    sender: &str,
    event: MessageEvent,
    body: &str,
) -> StoredMessage {
    StoredMessage {
        body: Bytes::from(body.to_owned()),
        event: Some(event),
        ..message(conversation, seq, sender, None)
    }
}

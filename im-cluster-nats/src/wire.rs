//! What travels on the bus, as small protobuf messages: a conversation's
//! batch (each body once, whatever the number of sessions), a head beacon
//! (a batch with no messages), and control commands. Decoding checks every
//! id: a payload another process sent is untrusted input.

use bytes::Bytes;
use im_core::cluster::Control;
use im_core::content::{ContentType, MessageEvent};
use im_core::store::StoredMessage;
use im_core::{ChannelId, ConversationId, DeviceId, MessageId, Seq, UserId};
use prost::Message;

/// A batch of one conversation, or (no messages) its head.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BusBatch {
    /// `ConversationId::to_key`.
    #[prost(string, tag = "1")]
    pub(crate) conversation: String,
    /// The conversation's head as the publisher committed it.
    #[prost(uint64, tag = "2")]
    pub(crate) head: u64,
    /// The messages, in seq order.
    #[prost(message, repeated, tag = "3")]
    pub(crate) messages: Vec<BusMessage>,
}

/// One committed message.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BusMessage {
    #[prost(uint64, tag = "1")]
    pub(crate) seq: u64,
    #[prost(uint64, tag = "2")]
    pub(crate) message_id: u64,
    #[prost(string, tag = "3")]
    pub(crate) sender: String,
    #[prost(string, tag = "4")]
    pub(crate) sender_device: String,
    #[prost(string, optional, tag = "5")]
    pub(crate) client_msg_id: Option<String>,
    #[prost(bytes = "bytes", tag = "6")]
    pub(crate) body: Bytes,
    #[prost(int64, tag = "7")]
    pub(crate) server_time_ms: i64,
    /// `im.v1.ContentType` and, for a custom type, its name.
    #[prost(int32, tag = "8")]
    pub(crate) content_type: i32,
    #[prost(string, tag = "9")]
    pub(crate) content_type_custom: String,
    /// `MessageEvent::code` (0: none), its target and edit count.
    #[prost(int32, tag = "10")]
    pub(crate) event_code: i32,
    #[prost(uint64, tag = "11")]
    pub(crate) event_target: u64,
    #[prost(uint32, tag = "12")]
    pub(crate) edit_count: u32,
    #[prost(bool, tag = "13")]
    pub(crate) recalled: bool,
}

/// A control command.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BusControl {
    /// 1: kick `user`; 2: `group` changed.
    #[prost(uint32, tag = "1")]
    pub(crate) kind: u32,
    #[prost(string, tag = "2")]
    pub(crate) user: String,
    #[prost(string, tag = "3")]
    pub(crate) detail: String,
    #[prost(string, tag = "4")]
    pub(crate) group: String,
    #[prost(string, repeated, tag = "5")]
    pub(crate) added: Vec<String>,
    #[prost(string, repeated, tag = "6")]
    pub(crate) removed: Vec<String>,
}

const KICK: u32 = 1;
const GROUP_CHANGED: u32 = 2;

/// A decoded batch: its conversation, head and messages.
#[derive(Debug, Clone)]
pub(crate) struct Decoded {
    pub(crate) conversation: ConversationId,
    pub(crate) head: Seq,
    pub(crate) messages: Vec<StoredMessage>,
}

/// Encodes a batch of one conversation (or, with no messages, a beacon).
pub(crate) fn encode_batch(conv: &ConversationId, head: Seq, msgs: &[StoredMessage]) -> Bytes {
    BusBatch {
        conversation: conv.to_key(),
        head,
        messages: msgs
            .iter()
            .map(|m| {
                let (content_type, content_type_custom) = m.content_type.to_wire();
                let (event_code, event_target) = m
                    .event
                    .map_or((0, 0), |e| (i32::from(e.code()), e.target()));
                BusMessage {
                    seq: m.seq,
                    message_id: m.message_id.0,
                    sender: m.sender.to_string(),
                    sender_device: m.sender_device.to_string(),
                    client_msg_id: m.client_msg_id.clone(),
                    body: m.body.clone(),
                    server_time_ms: m.server_time_ms,
                    content_type,
                    content_type_custom,
                    event_code,
                    event_target,
                    edit_count: m.edit_count,
                    recalled: m.recalled,
                }
            })
            .collect(),
    }
    .encode_to_vec()
    .into()
}

/// Decodes a batch; `None` if it is not a well-formed one (any bad id, a
/// message out of seq order).
pub(crate) fn decode_batch(payload: &[u8]) -> Option<Decoded> {
    let b = BusBatch::decode(payload).ok()?;
    let conversation = ConversationId::from_key(&b.conversation).ok()?;
    let mut messages = Vec::with_capacity(b.messages.len());
    let mut prev = 0;
    for m in b.messages {
        if m.seq <= prev {
            return None;
        }
        prev = m.seq;
        if let Some(id) = &m.client_msg_id {
            im_core::ids::validate_client_msg_id(id).ok()?;
        }
        let event = match m.event_code {
            0 => None,
            code => Some(MessageEvent::from_code(
                i16::try_from(code).ok()?,
                m.event_target,
                m.edit_count,
            )?),
        };
        messages.push(StoredMessage {
            conversation: conversation.clone(),
            seq: m.seq,
            message_id: MessageId(m.message_id),
            sender: UserId::new(&m.sender).ok()?,
            sender_device: DeviceId::new(&m.sender_device).ok()?,
            client_msg_id: m.client_msg_id,
            body: m.body,
            server_time_ms: m.server_time_ms,
            content_type: ContentType::from_wire(m.content_type, &m.content_type_custom).ok()?,
            event,
            recalled: m.recalled,
            edit_count: m.edit_count,
        });
    }
    Some(Decoded {
        conversation,
        head: b.head,
        messages,
    })
}

/// Encodes a control command.
pub(crate) fn encode_control(c: &Control) -> Bytes {
    let msg = match c {
        Control::KickUser { user, detail } => BusControl {
            kind: KICK,
            user: user.to_string(),
            detail: detail.clone(),
            ..BusControl::default()
        },
        Control::GroupChanged {
            group,
            added,
            removed,
        } => BusControl {
            kind: GROUP_CHANGED,
            group: group.to_string(),
            added: added.iter().map(ToString::to_string).collect(),
            removed: removed.iter().map(ToString::to_string).collect(),
            ..BusControl::default()
        },
    };
    msg.encode_to_vec().into()
}

/// Decodes a control command; `None` if it is not a well-formed one.
pub(crate) fn decode_control(payload: &[u8]) -> Option<Control> {
    let c = BusControl::decode(payload).ok()?;
    let users = |ids: &[String]| -> Option<Vec<UserId>> {
        ids.iter().map(|u| UserId::new(u).ok()).collect()
    };
    match c.kind {
        KICK => Some(Control::KickUser {
            user: UserId::new(&c.user).ok()?,
            detail: c.detail,
        }),
        GROUP_CHANGED => Some(Control::GroupChanged {
            group: ChannelId::new(&c.group).ok()?,
            added: users(&c.added)?,
            removed: users(&c.removed)?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(conv: &ConversationId, seq: Seq) -> StoredMessage {
        StoredMessage {
            conversation: conv.clone(),
            seq,
            message_id: MessageId(seq * 7),
            sender: UserId::new("a.b*").expect("id"),
            sender_device: DeviceId::new("d 1").expect("id"),
            client_msg_id: seq.is_multiple_of(2).then(|| format!("c{seq}")),
            body: Bytes::from(format!("body {seq}")),
            server_time_ms: 1_700_000_000_000 + seq as i64,
            // Every kind of message: plain, custom-typed, edited, recall events.
            content_type: match seq % 3 {
                0 => ContentType::Text,
                1 => ContentType::Custom("app/poll".into()),
                _ => ContentType::ImageRef,
            },
            event: match seq % 4 {
                1 => Some(MessageEvent::Recall { target: 1 }),
                2 => Some(MessageEvent::Edit {
                    target: 1,
                    edit_count: 2,
                }),
                _ => None,
            },
            recalled: seq.is_multiple_of(5),
            edit_count: u32::from(seq % 4 == 2) * 2,
        }
    }

    #[test]
    fn batches_and_controls_round_trip() {
        let conv = ConversationId::Group(ChannelId::new("g>1").expect("id"));
        let msgs: Vec<_> = (3..9).map(|s| msg(&conv, s)).collect();
        let d = decode_batch(&encode_batch(&conv, 8, &msgs)).expect("decodes");
        assert_eq!(d.conversation, conv);
        assert_eq!(d.head, 8);
        assert_eq!(d.messages, msgs);
        for c in [
            Control::KickUser {
                user: UserId::new("u").expect("id"),
                detail: "bye".into(),
            },
            Control::GroupChanged {
                group: ChannelId::new("g").expect("id"),
                added: vec![UserId::new("x").expect("id")],
                removed: vec![UserId::new("y").expect("id")],
            },
        ] {
            assert_eq!(decode_control(&encode_control(&c)), Some(c));
        }
    }

    #[test]
    fn garbage_and_bad_ids_decode_to_nothing() {
        assert!(decode_batch(b"\xff\xff\xff").is_none());
        assert!(decode_control(b"\xff\xff\xff").is_none());
        let bad_conv = BusBatch {
            conversation: "nonsense".into(),
            ..BusBatch::default()
        };
        assert!(decode_batch(&bad_conv.encode_to_vec()).is_none());
        let conv = ConversationId::Room(ChannelId::new("r").expect("id"));
        let mut unordered =
            BusBatch::decode(&encode_batch(&conv, 2, &[msg(&conv, 2), msg(&conv, 1)])[..])
                .expect("decodes");
        assert!(decode_batch(&unordered.encode_to_vec()).is_none());
        unordered.messages.truncate(1);
        unordered.messages[0].sender = String::new();
        assert!(decode_batch(&unordered.encode_to_vec()).is_none());
        let no_kind = BusControl::default();
        assert!(decode_control(&no_kind.encode_to_vec()).is_none());
    }
}

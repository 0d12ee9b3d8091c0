//! What travels on the bus, as small protobuf messages: a conversation's
//! batch (each body once, whatever the number of sessions), a head beacon
//! (a batch with no messages), control commands, and sends forwarded to
//! their owner with the owner's answer (see `forward.rs`). Decoding checks
//! every id: a payload another process sent is untrusted input.
//!
//! Every message carries the bus format ([`BUS_FORMAT`]). A node that
//! receives another format refuses it by name ([`WireError::Format`]), so a
//! mixed-version cluster says what is wrong instead of dropping silently.

use bytes::Bytes;
use im_core::cluster::{Control, ForwardError, ForwardResult, ForwardedAck, ForwardedSend};
use im_core::content::{ContentType, MessageEvent};
use im_core::store::StoredMessage;
use im_core::{ChannelId, ConversationId, DeviceId, MessageId, Seq, UserId, pb};
use prost::Message;

/// The bus format this build speaks. Raise it when a message changes in a
/// way an older node would misread.
pub(crate) const BUS_FORMAT: u32 = 1;

/// Why a payload was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// Another node speaks a bus format this one does not.
    #[error(
        "a peer speaks bus format {0}, this node speaks {BUS_FORMAT}: run one version per cluster"
    )]
    Format(u32),
    /// Not a well-formed message of its kind.
    #[error("malformed bus message")]
    Malformed,
}

/// `Ok` if `format` is this build's.
fn check_format(format: u32) -> Result<(), WireError> {
    if format == BUS_FORMAT {
        Ok(())
    } else {
        Err(WireError::Format(format))
    }
}

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
    /// [`BUS_FORMAT`].
    #[prost(uint32, tag = "15")]
    pub(crate) format: u32,
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
    /// [`BUS_FORMAT`].
    #[prost(uint32, tag = "15")]
    pub(crate) format: u32,
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
        format: BUS_FORMAT,
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

/// Decodes a batch; an error if it is another format or not a well-formed
/// one (any bad id, a message out of seq order).
pub(crate) fn decode_batch(payload: &[u8]) -> Result<Decoded, WireError> {
    let b = BusBatch::decode(payload).map_err(|_| WireError::Malformed)?;
    check_format(b.format)?;
    decode_batch_body(b).ok_or(WireError::Malformed)
}

fn decode_batch_body(b: BusBatch) -> Option<Decoded> {
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
    BusControl {
        format: BUS_FORMAT,
        ..msg
    }
    .encode_to_vec()
    .into()
}

/// Decodes a control command; an error if it is another format or not a
/// well-formed one.
pub(crate) fn decode_control(payload: &[u8]) -> Result<Control, WireError> {
    let c = BusControl::decode(payload).map_err(|_| WireError::Malformed)?;
    check_format(c.format)?;
    decode_control_body(c).ok_or(WireError::Malformed)
}

fn decode_control_body(c: BusControl) -> Option<Control> {
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

/// Sends forwarded to their owner, in one bus message.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BusForward {
    /// [`BUS_FORMAT`].
    #[prost(uint32, tag = "1")]
    pub(crate) format: u32,
    /// The origin's id of this request, echoed in the answer.
    #[prost(uint64, tag = "2")]
    pub(crate) id: u64,
    #[prost(message, repeated, tag = "3")]
    pub(crate) sends: Vec<BusSend>,
}

/// One forwarded send.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BusSend {
    /// `ConversationId::to_key`.
    #[prost(string, tag = "1")]
    pub(crate) conversation: String,
    #[prost(string, tag = "2")]
    pub(crate) sender: String,
    #[prost(string, tag = "3")]
    pub(crate) device: String,
    #[prost(string, optional, tag = "4")]
    pub(crate) client_msg_id: Option<String>,
    #[prost(bytes = "bytes", tag = "5")]
    pub(crate) body: Bytes,
    #[prost(int32, tag = "6")]
    pub(crate) content_type: i32,
    #[prost(string, tag = "7")]
    pub(crate) content_type_custom: String,
    /// `MessageEvent::code` (0: none), its target and edit count.
    #[prost(int32, tag = "8")]
    pub(crate) event_code: i32,
    #[prost(uint64, tag = "9")]
    pub(crate) event_target: u64,
    #[prost(uint32, tag = "10")]
    pub(crate) edit_count: u32,
    #[prost(bool, tag = "11")]
    pub(crate) check_membership: bool,
}

/// The owner's answer: one outcome per send, in order, or a refusal of
/// the whole request.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BusForwardAnswer {
    /// [`BUS_FORMAT`].
    #[prost(uint32, tag = "1")]
    pub(crate) format: u32,
    /// The request's id.
    #[prost(uint64, tag = "2")]
    pub(crate) id: u64,
    #[prost(message, repeated, tag = "3")]
    pub(crate) outcomes: Vec<BusOutcome>,
    /// Non-empty: the owner refused the whole request (e.g. its format).
    #[prost(string, tag = "4")]
    pub(crate) refused: String,
}

/// One send's outcome: committed (`ok`) or an error code.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BusOutcome {
    #[prost(bool, tag = "1")]
    pub(crate) ok: bool,
    #[prost(uint64, tag = "2")]
    pub(crate) seq: u64,
    #[prost(uint64, tag = "3")]
    pub(crate) message_id: u64,
    #[prost(int64, tag = "4")]
    pub(crate) server_time_ms: i64,
    #[prost(bool, tag = "5")]
    pub(crate) duplicate: bool,
    /// `im.v1.ErrorCode`.
    #[prost(int32, tag = "6")]
    pub(crate) code: i32,
    #[prost(string, tag = "7")]
    pub(crate) message: String,
    #[prost(bool, tag = "8")]
    pub(crate) retryable: bool,
}

/// Encodes forwarded sends as request `id`.
pub(crate) fn encode_forward(id: u64, sends: &[ForwardedSend]) -> Bytes {
    BusForward {
        format: BUS_FORMAT,
        id,
        sends: sends
            .iter()
            .map(|s| {
                let (content_type, content_type_custom) = s.content_type.to_wire();
                let (event_code, event_target, edit_count) = s.event.map_or((0, 0, 0), |e| {
                    let edits = match e {
                        MessageEvent::Edit { edit_count, .. } => edit_count,
                        _ => 0,
                    };
                    (i32::from(e.code()), e.target(), edits)
                });
                BusSend {
                    conversation: s.conversation.to_key(),
                    sender: s.sender.to_string(),
                    device: s.device.to_string(),
                    client_msg_id: s.client_msg_id.clone(),
                    body: s.body.clone(),
                    content_type,
                    content_type_custom,
                    event_code,
                    event_target,
                    edit_count,
                    check_membership: s.check_membership,
                }
            })
            .collect(),
    }
    .encode_to_vec()
    .into()
}

/// A decoded forward request.
#[derive(Debug)]
pub(crate) struct ForwardRequest {
    pub(crate) id: u64,
    pub(crate) sends: Vec<ForwardedSend>,
}

/// Decodes a forward request. With another format the error carries the
/// request's id when it could be read, so the owner can refuse it by name.
pub(crate) fn decode_forward(payload: &[u8]) -> Result<ForwardRequest, (Option<u64>, WireError)> {
    let f = BusForward::decode(payload).map_err(|_| (None, WireError::Malformed))?;
    check_format(f.format).map_err(|e| (Some(f.id), e))?;
    let sends = f
        .sends
        .into_iter()
        .map(decode_send)
        .collect::<Option<Vec<_>>>()
        .ok_or((Some(f.id), WireError::Malformed))?;
    Ok(ForwardRequest { id: f.id, sends })
}

fn decode_send(s: BusSend) -> Option<ForwardedSend> {
    if let Some(id) = &s.client_msg_id {
        im_core::ids::validate_client_msg_id(id).ok()?;
    }
    let event = match s.event_code {
        0 => None,
        code => Some(MessageEvent::from_code(
            i16::try_from(code).ok()?,
            s.event_target,
            s.edit_count,
        )?),
    };
    Some(ForwardedSend {
        conversation: ConversationId::from_key(&s.conversation).ok()?,
        sender: UserId::new(&s.sender).ok()?,
        device: DeviceId::new(&s.device).ok()?,
        client_msg_id: s.client_msg_id,
        body: s.body,
        content_type: ContentType::from_wire(s.content_type, &s.content_type_custom).ok()?,
        event,
        check_membership: s.check_membership,
    })
}

/// Encodes the owner's answer to request `id`.
pub(crate) fn encode_answer(id: u64, outcomes: &[ForwardResult]) -> Bytes {
    BusForwardAnswer {
        format: BUS_FORMAT,
        id,
        outcomes: outcomes
            .iter()
            .map(|o| match o {
                Ok(a) => BusOutcome {
                    ok: true,
                    seq: a.seq,
                    message_id: a.message_id.0,
                    server_time_ms: a.server_time_ms,
                    duplicate: a.duplicate,
                    ..BusOutcome::default()
                },
                Err(e) => BusOutcome {
                    code: e.code as i32,
                    message: e.message.clone(),
                    retryable: e.retryable,
                    ..BusOutcome::default()
                },
            })
            .collect(),
        refused: String::new(),
    }
    .encode_to_vec()
    .into()
}

/// Encodes the owner's refusal of a whole request.
pub(crate) fn encode_refusal(id: u64, why: &str) -> Bytes {
    BusForwardAnswer {
        format: BUS_FORMAT,
        id,
        refused: why.to_owned(),
        ..BusForwardAnswer::default()
    }
    .encode_to_vec()
    .into()
}

/// A decoded answer: the request id and its outcomes, or the refusal.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) id: u64,
    pub(crate) outcomes: Result<Vec<ForwardResult>, String>,
}

/// Decodes the owner's answer.
pub(crate) fn decode_answer(payload: &[u8]) -> Result<Answer, WireError> {
    let a = BusForwardAnswer::decode(payload).map_err(|_| WireError::Malformed)?;
    check_format(a.format)?;
    if !a.refused.is_empty() {
        return Ok(Answer {
            id: a.id,
            outcomes: Err(a.refused),
        });
    }
    let outcomes = a
        .outcomes
        .into_iter()
        .map(|o| {
            if o.ok {
                Ok(ForwardedAck {
                    seq: o.seq,
                    message_id: MessageId(o.message_id),
                    server_time_ms: o.server_time_ms,
                    duplicate: o.duplicate,
                })
            } else {
                Err(ForwardError {
                    code: pb::ErrorCode::try_from(o.code).unwrap_or(pb::ErrorCode::Unavailable),
                    message: o.message,
                    retryable: o.retryable,
                })
            }
        })
        .collect();
    Ok(Answer {
        id: a.id,
        outcomes: Ok(outcomes),
    })
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
            assert_eq!(decode_control(&encode_control(&c)), Ok(c));
        }
    }

    #[test]
    fn garbage_and_bad_ids_decode_to_nothing() {
        assert!(decode_batch(b"\xff\xff\xff").is_err());
        assert!(decode_control(b"\xff\xff\xff").is_err());
        let bad_conv = BusBatch {
            format: BUS_FORMAT,
            conversation: "nonsense".into(),
            ..BusBatch::default()
        };
        assert!(decode_batch(&bad_conv.encode_to_vec()).is_err());
        let conv = ConversationId::Room(ChannelId::new("r").expect("id"));
        let mut unordered =
            BusBatch::decode(&encode_batch(&conv, 2, &[msg(&conv, 2), msg(&conv, 1)])[..])
                .expect("decodes");
        assert!(decode_batch(&unordered.encode_to_vec()).is_err());
        unordered.messages.truncate(1);
        unordered.messages[0].sender = String::new();
        assert!(decode_batch(&unordered.encode_to_vec()).is_err());
        let no_kind = BusControl {
            format: BUS_FORMAT,
            ..BusControl::default()
        };
        assert!(decode_control(&no_kind.encode_to_vec()).is_err());
    }

    #[test]
    fn forwards_and_answers_round_trip_and_another_format_is_named() {
        let conv = ConversationId::Group(ChannelId::new("g.1").expect("id"));
        let sends: Vec<ForwardedSend> = (0..3u32)
            .map(|i| ForwardedSend {
                conversation: conv.clone(),
                sender: UserId::new("u*1").expect("id"),
                device: DeviceId::new("d 1").expect("id"),
                client_msg_id: (i > 0).then(|| format!("c{i}")),
                body: Bytes::from(format!("b{i}")),
                content_type: ContentType::Custom("app/x".into()),
                event: (i == 2).then_some(MessageEvent::Edit {
                    target: 1,
                    edit_count: 3,
                }),
                check_membership: i != 1,
            })
            .collect();
        let req = decode_forward(&encode_forward(9, &sends)).expect("decodes");
        assert_eq!((req.id, req.sends), (9, sends));
        let outcomes = vec![
            Ok(ForwardedAck {
                seq: 4,
                message_id: MessageId(77),
                server_time_ms: 5,
                duplicate: true,
            }),
            Err(ForwardError {
                code: pb::ErrorCode::Forbidden,
                message: "no".into(),
                retryable: false,
            }),
            Err(ForwardError::unavailable("later")),
        ];
        let a = decode_answer(&encode_answer(9, &outcomes)).expect("decodes");
        assert_eq!((a.id, a.outcomes), (9, Ok(outcomes)));
        let r = decode_answer(&encode_refusal(3, "why")).expect("decodes");
        assert_eq!((r.id, r.outcomes), (3, Err("why".to_owned())));

        let future = BusForward {
            format: BUS_FORMAT + 1,
            id: 5,
            sends: Vec::new(),
        };
        let err = decode_forward(&future.encode_to_vec()).expect_err("another format");
        assert_eq!(err, (Some(5), WireError::Format(BUS_FORMAT + 1)));
        assert!(err.1.to_string().contains("bus format 2"), "{}", err.1);
        let old_batch = BusBatch {
            format: 0,
            ..BusBatch::decode(&encode_batch(&conv, 1, &[])[..]).expect("decodes")
        };
        assert_eq!(
            decode_batch(&old_batch.encode_to_vec()).map(|_| ()),
            Err(WireError::Format(0))
        );
    }
}

//! Proptest strategies for store operations and wire frames, exported for
//! reuse in an integrator's own properties.
//!
//! The universes are deliberately small (5 users, 2 devices, 3 groups, 2
//! rooms, 8 client message ids) so random sequences collide often: the same
//! conversation is appended to repeatedly, keys repeat, members come and go.
//!
//! The frame strategies ([`arb_client_frame`], [`arb_server_frame`]) mix
//! names from the same universes with values the engine must refuse (empty,
//! oversize, control characters, unknown enum values, edge numbers), so a
//! session fed them meets both the happy paths and every refusal.

use bytes::Bytes;
use im_core::ids::{ChannelId, ConversationId, DeviceId, MAX_ID_BYTES, UserId};
use im_core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_core::store::{BlockPair, SettingsChange};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::fixtures::{channel, device, user};
use crate::model::{CursorSpec, EventSpec, MsgSpec, Op, PrefsOp};

/// Users `u0` … `u4`.
pub fn arb_user() -> impl Strategy<Value = UserId> {
    (0u8..5).prop_map(|i| user(&format!("u{i}")))
}

/// Distinct users, at most `max`.
pub fn arb_users(max: usize) -> impl Strategy<Value = Vec<UserId>> {
    proptest::sample::subsequence(
        (0..5).map(|i| user(&format!("u{i}"))).collect::<Vec<_>>(),
        0..=max.min(5),
    )
}

/// Devices `d0`, `d1`.
pub fn arb_device() -> impl Strategy<Value = DeviceId> {
    (0u8..2).prop_map(|i| device(&format!("d{i}")))
}

/// Groups `g0` … `g2`.
pub fn arb_group() -> impl Strategy<Value = ChannelId> {
    (0u8..3).prop_map(|i| channel(&format!("g{i}")))
}

/// Rooms `r0`, `r1`.
pub fn arb_room() -> impl Strategy<Value = ChannelId> {
    (0u8..2).prop_map(|i| channel(&format!("r{i}")))
}

/// A direct conversation (possibly a user with themself), a group or a room.
pub fn arb_conversation() -> impl Strategy<Value = ConversationId> {
    prop_oneof![
        3 => (arb_user(), arb_user()).prop_map(|(a, b)| ConversationId::direct(a, b)),
        3 => arb_group().prop_map(ConversationId::Group),
        1 => arb_room().prop_map(ConversationId::Room),
    ]
}

/// A client message id from a small pool (`m0` … `m7`), or none (host messages).
pub fn arb_client_msg_id() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => (0u8..8).prop_map(|i| Some(format!("m{i}"))),
        1 => Just(None),
    ]
}

/// One message of an append; `seq_skew` is usually 0 (the seq continues the
/// head), sometimes ±1 or +2 to provoke `SeqConflict`.
pub fn arb_msg_spec() -> impl Strategy<Value = MsgSpec> {
    (
        arb_conversation(),
        arb_user(),
        arb_device(),
        arb_client_msg_id(),
        arb_users(4),
        prop_oneof![12 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8), 1 => Just(2i8)],
        prop_oneof![5 => Just(None), 1 => arb_event_spec().prop_map(Some)],
    )
        .prop_map(
            |(conversation, sender, device, client_msg_id, recipients, seq_skew, event)| MsgSpec {
                conversation,
                sender,
                device,
                client_msg_id,
                recipients,
                seq_skew,
                event,
            },
        )
}

/// A recall or an edit of an earlier message; an edit's count is mostly
/// the right one.
pub fn arb_event_spec() -> impl Strategy<Value = EventSpec> {
    (
        any::<bool>(),
        any::<u8>(),
        prop_oneof![8 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)],
    )
        .prop_map(|(recall, target, count_skew)| EventSpec {
            recall,
            target,
            count_skew,
        })
}

/// A cursor move; seqs are picks mapped into `0..=head` when applied.
pub fn arb_cursor_spec() -> impl Strategy<Value = CursorSpec> {
    (
        arb_user(),
        arb_conversation(),
        proptest::option::of(any::<u8>()),
        proptest::option::of(any::<u8>()),
    )
        .prop_map(|(user, conversation, delivered, read)| CursorSpec {
            user,
            conversation,
            delivered,
            read,
        })
}

/// Any store operation, weighted towards appends.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => vec(arb_msg_spec(), 1..5).prop_map(Op::Append),
        3 => (arb_conversation(), 0u8..12, proptest::option::of(0u8..12), 0u8..8, any::<bool>())
            .prop_map(|(conversation, after, until, limit, newest)| Op::ReadRange {
                conversation, after, until, limit, newest,
            }),
        1 => vec(arb_conversation(), 0..4).prop_map(Op::HeadSeqs),
        2 => vec((arb_conversation(), 0u8..10), 0..5).prop_map(Op::GetMessages),
        2 => vec((arb_user(), arb_device(), 0u8..8), 0..4).prop_map(Op::FindByDedupKeys),
        3 => (arb_user(), 0u8..12, 0u8..8).prop_map(|(user, after, limit)| Op::ReadInbox { user, after, limit }),
        1 => arb_user().prop_map(Op::InboxHead),
        3 => vec(arb_cursor_spec(), 1..3).prop_map(Op::UpdateCursors),
        3 => (arb_user(), proptest::option::of(vec(arb_conversation(), 0..4)), 0u8..5, 0u8..8)
            .prop_map(|(user, only, unread_cap, limit)| Op::ConversationStates { user, only, unread_cap, limit }),
        2 => (arb_group(), arb_users(3)).prop_map(|(group, members)| Op::CreateGroup { group, members }),
        2 => (arb_group(), arb_users(3)).prop_map(|(group, users)| Op::AddMembers { group, users }),
        2 => (arb_group(), arb_users(3)).prop_map(|(group, users)| Op::RemoveMembers { group, users }),
        1 => arb_group().prop_map(Op::MemberCount),
        1 => (arb_group(), arb_users(5)).prop_map(|(group, users)| Op::AreMembers { group, users }),
        1 => (arb_group(), proptest::option::of(arb_user()), 0u8..4)
            .prop_map(|(group, after, limit)| Op::Members { group, after, limit }),
        1 => arb_user().prop_map(Op::UserGroups),
        1 => (arb_group(), vec((arb_user(), arb_role()), 0..3))
            .prop_map(|(group, roles)| Op::SetRoles { group, roles }),
        1 => (arb_group(), arb_users(2), proptest::option::of(prop_oneof![0i64..4, Just(i64::MAX)]))
            .prop_map(|(group, users, until_ms)| Op::SetMuted { group, users, until_ms }),
        1 => (arb_group(), arb_users(4)).prop_map(|(group, users)| Op::MemberInfos { group, users }),
        1 => (arb_group(), 0i64..4, 0u8..4)
            .prop_map(|(group, now_ms, limit)| Op::MutedMembers { group, now_ms, limit }),
        3 => arb_prefs_op().prop_map(Op::Prefs),
    ]
}

/// A settings or blocks operation.
pub fn arb_prefs_op() -> impl Strategy<Value = PrefsOp> {
    let pair =
        || (arb_user(), arb_user()).prop_map(|(blocker, blocked)| BlockPair { blocker, blocked });
    let flag = || proptest::option::of(any::<bool>());
    prop_oneof![
        3 => (arb_user(), arb_conversation(), flag(), flag()).prop_map(|(user, conversation, muted, pinned)| {
            PrefsOp::Update(SettingsChange { user, conversation, muted, pinned })
        }),
        1 => (arb_user(), vec(arb_conversation(), 0..4)).prop_map(|(u, c)| PrefsOp::Get(u, c)),
        1 => (arb_user(), 0u8..5).prop_map(|(u, n)| PrefsOp::Pinned(u, n)),
        1 => (arb_conversation(), arb_users(5)).prop_map(|(c, u)| PrefsOp::Muted(c, u)),
        2 => (pair(), any::<bool>()).prop_map(|(p, on)| PrefsOp::SetBlock(p, on)),
        1 => vec(pair(), 0..4).prop_map(PrefsOp::AreBlocked),
        1 => (arb_user(), proptest::option::of(arb_user()), 0u8..5)
            .prop_map(|(u, after, n)| PrefsOp::BlockedUsers(u, after, n)),
    ]
}

/// Any group role.
fn arb_role() -> impl Strategy<Value = im_core::store::GroupRole> {
    use im_core::store::GroupRole;
    prop_oneof![
        Just(GroupRole::Member),
        Just(GroupRole::Admin),
        Just(GroupRole::Owner)
    ]
}

/// A sequence of `len` operations.
pub fn ops(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Op>> {
    vec(op(), len)
}

// ---------------------------------------------------------------- wire frames

/// Usually an edge (0, small, `u64::MAX`), sometimes anything.
pub fn edgy_u64() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..8, 2 => any::<u64>(), 1 => Just(u64::MAX)]
}

fn edgy_u32() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..8, 2 => any::<u32>(), 1 => Just(u32::MAX)]
}

fn edgy_i64() -> impl Strategy<Value = i64> {
    prop_oneof![3 => -2i64..8, 2 => any::<i64>(), 1 => Just(i64::MIN), 1 => Just(i64::MAX)]
}

fn edgy_i32() -> impl Strategy<Value = i32> {
    prop_oneof![6 => 0i32..6, 1 => any::<i32>(), 1 => Just(-1i32)]
}

/// An id as a client might send one: mostly a name from the universes
/// (`u0` … `u4`, `d0`, `g0` … `g2`, `r0`, `r1`), sometimes one every id check
/// must refuse (empty, one byte over [`MAX_ID_BYTES`], a NUL, a newline) or
/// arbitrary text.
pub fn arb_wire_id() -> BoxedStrategy<String> {
    prop_oneof![
        20 => prop::sample::select(&["u0", "u1", "u2", "d0", "g0", "g1", "r0", "r1"][..])
            .prop_map(str::to_owned),
        1 => Just(String::new()),
        1 => Just("x".repeat(MAX_ID_BYTES + 1)),
        1 => Just("x".repeat(MAX_ID_BYTES)),
        1 => Just("a\u{0}b".to_owned()),
        1 => Just("a\nb".to_owned()),
        2 => any::<String>(),
    ]
    .boxed()
}

/// A conversation as named on the wire: mostly a known kind, sometimes an
/// unspecified or unknown one, and any id from [`arb_wire_id`].
pub fn arb_conversation_ref() -> BoxedStrategy<pb::ConversationRef> {
    let kind = prop_oneof![8 => 1i32..=3, 1 => Just(0i32), 1 => any::<i32>()];
    (kind, arb_wire_id())
        .prop_map(|(kind, id)| pb::ConversationRef { kind, id })
        .boxed()
}

fn arb_opt_ref() -> BoxedStrategy<Option<pb::ConversationRef>> {
    proptest::option::weighted(0.9, arb_conversation_ref()).boxed()
}

fn arb_body_bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

/// Any client frame body, or none.
pub fn arb_client_body() -> BoxedStrategy<Option<In>> {
    let body = prop_oneof![
        1 => (any::<String>(), arb_wire_id(), edgy_i32(), edgy_u64(), any::<String>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(token, device_id, device_kind, inbox_version, client_info, push_acks, typing_events, receipt_events)| In::Connect(pb::Connect {
                token, device_id, device_kind, inbox_version, client_info, push_acks, typing_events, receipt_events,
            })
        ),
        1 => (arb_opt_ref(), any::<bool>())
            .prop_map(|(conversation, active)| In::Typing(pb::Typing { conversation, active })),
        6 => (prop_oneof![4 => (0u8..8).prop_map(|i| format!("m{i}")), 1 => arb_wire_id()],
              arb_opt_ref(), arb_body_bytes())
            .prop_map(|(client_msg_id, conversation, body)| In::Send(pb::Send {
                client_msg_id, conversation, body, ..Default::default() })),
        3 => (arb_opt_ref(), edgy_u64(), edgy_u64(), edgy_u32(), any::<bool>()).prop_map(
            |(conversation, after_seq, until_seq, limit, newest)| In::Pull(pb::Pull {
                conversation, after_seq, until_seq, limit, newest,
            })
        ),
        2 => (edgy_u64(), edgy_u32(), any::<bool>())
            .prop_map(|(inbox_version, limit, include_heads)| In::Sync(pb::Sync { inbox_version, limit, include_heads })),
        2 => (arb_opt_ref(), edgy_u64())
            .prop_map(|(conversation, seq)| In::Ack(pb::Ack { conversation, seq })),
        2 => (arb_opt_ref(), edgy_u64())
            .prop_map(|(conversation, seq)| In::Read(pb::Read { conversation, seq })),
        2 => arb_wire_id().prop_map(|room_id| In::JoinRoom(pb::JoinRoom { room_id })),
        1 => arb_wire_id().prop_map(|room_id| In::LeaveRoom(pb::LeaveRoom { room_id })),
        1 => edgy_i64().prop_map(|client_time_ms| In::Ping(pb::Ping { client_time_ms })),
        1 => edgy_u32().prop_map(|limit| In::ListConversations(pb::ListConversations { limit })),
        1 => (arb_wire_id(), arb_body_bytes())
            .prop_map(|(method, data)| In::Call(pb::Call { method, data })),
    ];
    proptest::option::weighted(0.95, body).boxed()
}

/// Any client frame: a request id and a body from [`arb_client_body`].
pub fn arb_client_frame() -> impl Strategy<Value = pb::ClientFrame> {
    (edgy_u64(), arb_client_body())
        .prop_map(|(request_id, body)| pb::ClientFrame { request_id, body })
}

fn arb_message() -> BoxedStrategy<pb::Message> {
    (
        arb_opt_ref(),
        (edgy_u64(), edgy_u64()),
        (arb_wire_id(), arb_wire_id(), arb_wire_id()),
        arb_body_bytes(),
        edgy_i64(),
    )
        .prop_map(
            |(
                conversation,
                (seq, message_id),
                (sender_user, sender_device, client_msg_id),
                body,
                server_time_ms,
            )| {
                pb::Message {
                    conversation,
                    seq,
                    message_id,
                    sender_user,
                    sender_device,
                    client_msg_id,
                    body,
                    server_time_ms,
                    ..Default::default()
                }
            },
        )
        .boxed()
}

/// Any server frame (for round trips of the codec and client-side parsers).
pub fn arb_server_frame() -> impl Strategy<Value = pb::ServerFrame> {
    let body = prop_oneof![
        (
            arb_wire_id(),
            arb_wire_id(),
            edgy_u64(),
            edgy_u64(),
            edgy_i64(),
            edgy_u32(),
            edgy_u32()
        )
            .prop_map(
                |(
                    user_id,
                    device_id,
                    session_id,
                    inbox_version,
                    server_time_ms,
                    heartbeat_interval_ms,
                    max_frame_bytes,
                )| {
                    Out::Connected(pb::Connected {
                        user_id,
                        device_id,
                        session_id,
                        inbox_version,
                        server_time_ms,
                        heartbeat_interval_ms,
                        max_frame_bytes,
                        push_acks: false,
                    })
                }
            ),
        (
            arb_wire_id(),
            arb_opt_ref(),
            edgy_u64(),
            edgy_u64(),
            edgy_i64(),
            any::<bool>()
        )
            .prop_map(
                |(client_msg_id, conversation, seq, message_id, server_time_ms, duplicate)| {
                    Out::SendAck(pb::SendAck {
                        client_msg_id,
                        conversation,
                        seq,
                        message_id,
                        server_time_ms,
                        duplicate,
                    })
                }
            ),
        vec(arb_message(), 0..4).prop_map(|messages| Out::Push(pb::Push { messages })),
        (arb_opt_ref(), edgy_u64()).prop_map(|(conversation, head_seq)| Out::Notify(pb::Notify {
            conversation,
            head_seq
        })),
        (
            arb_opt_ref(),
            vec(arb_message(), 0..4),
            edgy_u64(),
            any::<bool>(),
            edgy_u64()
        )
            .prop_map(
                |(conversation, messages, head_seq, has_more, history_start_seq)| {
                    Out::PullResult(pb::PullResult {
                        conversation,
                        messages,
                        head_seq,
                        has_more,
                        history_start_seq,
                    })
                }
            ),
        (
            vec((edgy_u64(), arb_opt_ref(), edgy_u64()), 0..4),
            vec(arb_message(), 0..3),
            edgy_u64(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(entries, messages, inbox_version, has_more, full_sync_required)| {
                    Out::SyncResult(pb::SyncResult {
                        entries: entries
                            .into_iter()
                            .map(|(version, conversation, seq)| pb::InboxEntry {
                                version,
                                conversation,
                                seq,
                            })
                            .collect(),
                        messages,
                        inbox_version,
                        has_more,
                        full_sync_required,
                        heads: Vec::new(),
                    })
                }
            ),
        (edgy_i32(), any::<String>())
            .prop_map(|(reason, detail)| Out::Kicked(pb::Kicked { reason, detail })),
        (edgy_i32(), any::<String>(), any::<bool>()).prop_map(|(code, reason, retryable)| {
            Out::Error(pb::Error {
                code,
                reason,
                retryable,
            })
        }),
        (edgy_i64(), edgy_i64()).prop_map(|(client_time_ms, server_time_ms)| {
            Out::Pong(pb::Pong {
                client_time_ms,
                server_time_ms,
            })
        }),
        (arb_opt_ref(), edgy_u64(), edgy_u32(), any::<bool>()).prop_map(
            |(conversation, read_seq, unread, unread_more)| {
                Out::ReadAck(pb::ReadAck {
                    conversation,
                    read_seq,
                    unread,
                    unread_more,
                })
            }
        ),
        (arb_wire_id(), edgy_u64(), edgy_u64()).prop_map(|(room_id, head_seq, online)| {
            Out::RoomJoined(pb::RoomJoined {
                room_id,
                head_seq,
                online,
            })
        }),
        arb_wire_id().prop_map(|room_id| Out::RoomLeft(pb::RoomLeft { room_id })),
        vec(
            (
                arb_opt_ref(),
                (edgy_u64(), edgy_u64(), edgy_u64(), edgy_u64()),
                edgy_u32(),
                (any::<bool>(), any::<bool>(), any::<bool>()),
                proptest::option::of(arb_message())
            ),
            0..3,
        )
        .prop_map(|list| {
            Out::ConversationList(pb::ConversationList {
                conversations: list
                    .into_iter()
                    .map(
                        |(
                            conversation,
                            (head_seq, read_seq, delivered_seq, peer_read_seq),
                            unread,
                            (unread_more, muted, pinned),
                            last_message,
                        )| {
                            pb::ConversationSummary {
                                conversation,
                                head_seq,
                                read_seq,
                                delivered_seq,
                                unread,
                                unread_more,
                                muted,
                                pinned,
                                last_message,
                                peer_read_seq,
                            }
                        },
                    )
                    .collect(),
            })
        }),
    ];
    (edgy_u64(), proptest::option::weighted(0.95, body))
        .prop_map(|(request_id, body)| pb::ServerFrame { request_id, body })
}

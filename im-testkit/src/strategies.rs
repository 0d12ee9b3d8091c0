//! Proptest strategies for store operations, exported for reuse in an
//! integrator's own properties.
//!
//! The universes are deliberately small (5 users, 2 devices, 3 groups, 2
//! rooms, 8 client message ids) so random sequences collide often: the same
//! conversation is appended to repeatedly, keys repeat, members come and go.

use im_core::ids::{ChannelId, ConversationId, DeviceId, UserId};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::fixtures::{channel, device, user};
use crate::model::{CursorSpec, MsgSpec, Op};

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
    )
        .prop_map(
            |(conversation, sender, device, client_msg_id, recipients, seq_skew)| MsgSpec {
                conversation,
                sender,
                device,
                client_msg_id,
                recipients,
                seq_skew,
            },
        )
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
    ]
}

/// A sequence of `len` operations.
pub fn ops(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Op>> {
    vec(op(), len)
}

//! The fanout policy: for one committed message, decide write vs read
//! diffusion, push vs notify, and the dispatch rate class; for a live room,
//! how it is sharded into sub-rooms and how its messages are batched. Pure:
//! no IO.

use crate::ids::{ChannelId, ConversationKind};
use crate::room::{BatchConfig, SubRoomConfig};

/// Facts the planner decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutInput {
    /// Conversation kind.
    pub kind: ConversationKind,
    /// Durable members (groups), 2 for direct chats, joined sessions for rooms.
    pub member_count: u64,
    /// Live sessions that should see the message.
    pub online_sessions: u64,
}

/// Where the message is recorded for members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diffusion {
    /// Write diffusion: every member's inbox gets an entry; a device syncs its inbox.
    Write,
    /// Read diffusion: only the timeline has it; members pull by seq range.
    Read,
}

/// How live sessions learn of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The full message is pushed (encoded once, the same bytes to each session).
    Push,
    /// Only "conversation X is at seq N" is sent; sessions pull.
    Notify,
}

/// Dispatch class by size: big fanouts are queued apart so they never delay small ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RateClass {
    /// Direct chats and small groups.
    Fast,
    /// Mid-size groups and rooms.
    Medium,
    /// Huge groups and rooms.
    Slow,
}

/// The planner's decision for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutPlan {
    /// Write or read diffusion.
    pub diffusion: Diffusion,
    /// Push or notify.
    pub delivery: Delivery,
    /// Dispatch class.
    pub rate_class: RateClass,
}

/// Decides how a message reaches its members.
///
/// Only [`FanoutPolicy::plan`] must be written; room sharding and the batch
/// window default to the engine's configuration (`room_sub_room_*`,
/// `room_batch`), and a host overrides them per room (a stage with
/// bigger sub-rooms, a quiz room with no batching).
pub trait FanoutPolicy: Send + Sync + std::fmt::Debug + 'static {
    /// Plans the fanout of one message.
    fn plan(&self, input: &FanoutInput) -> FanoutPlan;

    /// How a live room is sharded into sub-rooms, decided when the room
    /// opens (its first join). `configured` is the engine's configuration.
    fn room_sharding(&self, room: &ChannelId, configured: SubRoomConfig) -> SubRoomConfig {
        let _ = room;
        configured
    }

    /// How a live room's messages are batched into frames, decided when the
    /// room opens. `configured` is the engine's configuration.
    fn batch_window(&self, room: &ChannelId, configured: &BatchConfig) -> BatchConfig {
        let _ = room;
        configured.clone()
    }
}

/// The default policy:
/// - direct chats and groups of at most `write_diffusion_max_members` members
///   use write diffusion (inbox entries); bigger groups and all rooms use read
///   diffusion;
/// - live sessions get the full message while there are at most
///   `push_max_online` of them, else a notify to pull (in practice the
///   switch for huge rooms; for direct chats and groups, a session that
///   acks pushes gets a notify instead of a push while its earlier pushes
///   of the conversation are unacknowledged, decided per session by the
///   engine, not here);
/// - rate class by size: up to `fast_max` is fast, up to `medium_max` medium,
///   above that slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultFanoutPolicy {
    /// Largest group that still gets inbox entries.
    pub write_diffusion_max_members: u64,
    /// Most live sessions that still get full pushes.
    pub push_max_online: u64,
    /// Largest fanout in the fast class.
    pub fast_max: u64,
    /// Largest fanout in the medium class.
    pub medium_max: u64,
}

impl Default for DefaultFanoutPolicy {
    fn default() -> Self {
        Self {
            write_diffusion_max_members: 500,
            push_max_online: 2_000_000,
            fast_max: 500,
            medium_max: 10_000,
        }
    }
}

impl FanoutPolicy for DefaultFanoutPolicy {
    fn plan(&self, input: &FanoutInput) -> FanoutPlan {
        let diffusion = match input.kind {
            ConversationKind::Direct => Diffusion::Write,
            ConversationKind::Group if input.member_count <= self.write_diffusion_max_members => {
                Diffusion::Write
            }
            ConversationKind::Group | ConversationKind::Room => Diffusion::Read,
        };
        let delivery = if input.online_sessions <= self.push_max_online {
            Delivery::Push
        } else {
            Delivery::Notify
        };
        let size = match input.kind {
            ConversationKind::Direct => input.online_sessions.min(self.fast_max),
            ConversationKind::Group => input.member_count.max(input.online_sessions),
            ConversationKind::Room => input.online_sessions,
        };
        let rate_class = if size <= self.fast_max {
            RateClass::Fast
        } else if size <= self.medium_max {
            RateClass::Medium
        } else {
            RateClass::Slow
        };
        FanoutPlan {
            diffusion,
            delivery,
            rate_class,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = ConversationKind> {
        prop_oneof![
            Just(ConversationKind::Direct),
            Just(ConversationKind::Group),
            Just(ConversationKind::Room)
        ]
    }

    fn policy() -> impl Strategy<Value = DefaultFanoutPolicy> {
        (0u64..2_000, 0u64..5_000_000, 1u64..1_000, 1_000u64..100_000).prop_map(|(w, p, f, m)| {
            DefaultFanoutPolicy {
                write_diffusion_max_members: w,
                push_max_online: p,
                fast_max: f,
                medium_max: m,
            }
        })
    }

    proptest! {
        #[test]
        fn direct_chats_always_use_write_diffusion_and_the_fast_class(
            p in policy(), online in 0u64..10
        ) {
            let plan = p.plan(&FanoutInput { kind: ConversationKind::Direct, member_count: 2, online_sessions: online });
            prop_assert_eq!(plan.diffusion, Diffusion::Write);
            prop_assert_eq!(plan.rate_class, RateClass::Fast);
        }

        #[test]
        fn rooms_never_write_inboxes(p in policy(), n in 0u64..10_000_000) {
            let plan = p.plan(&FanoutInput { kind: ConversationKind::Room, member_count: n, online_sessions: n });
            prop_assert_eq!(plan.diffusion, Diffusion::Read);
        }

        #[test]
        fn growing_never_moves_back_to_cheaper_handling(
            p in policy(), k in kind(), members in 0u64..5_000_000, online in 0u64..5_000_000,
            more_members in 0u64..5_000_000, more_online in 0u64..5_000_000,
        ) {
            let small = p.plan(&FanoutInput { kind: k, member_count: members, online_sessions: online });
            let big = p.plan(&FanoutInput {
                kind: k,
                member_count: members + more_members,
                online_sessions: online + more_online,
            });
            // Read diffusion, notify and slower classes are the big-fanout choices.
            prop_assert!(!(small.diffusion == Diffusion::Read && big.diffusion == Diffusion::Write));
            prop_assert!(!(small.delivery == Delivery::Notify && big.delivery == Delivery::Push));
            prop_assert!(big.rate_class >= small.rate_class);
        }

        #[test]
        fn groups_switch_to_read_diffusion_exactly_above_the_threshold(p in policy(), members in 0u64..5_000) {
            let plan = p.plan(&FanoutInput { kind: ConversationKind::Group, member_count: members, online_sessions: 0 });
            prop_assert_eq!(plan.diffusion == Diffusion::Write, members <= p.write_diffusion_max_members);
        }
    }
}

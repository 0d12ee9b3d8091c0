//! Live rooms: the online index of each room sharded into sub-rooms, the
//! room's batch window and hot ring, send limits, and the fanout stage that
//! delivers room frames off the conversation owners' path.
//!
//! Flow of one room message: the shard worker commits and acks it, then
//! hands it to [`RoomIndex::on_committed`]. The room's batcher (one per room:
//! in one process every sub-room sees the same stream, so one batch encoded
//! once serves them all) decides when a frame is due; due frames wait in the
//! room's bounded backlog, and the room is queued on its *fanout thread*: a
//! dedicated OS thread, one of a few per rate class (the [`FanoutStage`]).
//! A room is served by one fanout thread at a time (its frames stay in
//! order); a thread serves a few frames of a room then lets the next room
//! in. Direct and group chat never reach these threads, so a flooding room
//! cannot delay them, and the slow class's thread count is the share of
//! fanout capacity huge rooms may take. (The *group lane* of
//! `engine/group_lane.rs` is something else: a Tokio task per shard that
//! fans out big groups.)
//!
//! Who owns what:
//! - [`index`]: rooms by id; joining and leaving them; the entry points.
//! - [`members`]: who sits in which sub-room of one room; merges; the
//!   [`RoomMember`] trait, all rooms know of a session.
//! - [`flow`]: commit → hot ring → batch window → backlog → fanout thread.
//! - [`fanout`]: the fanout threads and the delivery of one frame.
//! - [`hot`]: the hot ring of recent messages and coalesced store loads.
//! - [`limits`]: the room's and the users' send limits.

mod fanout;
mod flow;
mod hot;
mod index;
mod limits;
mod members;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::fanout::{DefaultFanoutPolicy, FanoutPolicy};
use crate::ids::ChannelId;
use crate::room::{BatchConfig, SubRoomConfig, TokenBucket};

use super::config::EngineConfig;

pub(crate) use fanout::FanoutStage;
pub(crate) use index::RoomIndex;
pub(crate) use members::RoomMember;

use flow::Flow;
use hot::HotCache;
use members::Members;

/// Room settings taken from [`EngineConfig`].
#[derive(Debug, Clone)]
pub(crate) struct RoomSettings {
    /// Sub-room capacity and merge threshold, unless the policy says else.
    pub(crate) sub_rooms: SubRoomConfig,
    /// The tiered batch window, unless the policy says else.
    pub(crate) batch: BatchConfig,
    /// Decides each room's sharding and batch window when it opens.
    pub(crate) policy: Arc<dyn FanoutPolicy>,
    /// Recent messages kept per room.
    pub(crate) hot_ring: usize,
    /// Frames a room may have waiting for fanout.
    pub(crate) backlog_frames: usize,
    /// Bytes a room may have waiting for fanout: half a session's outbound
    /// queue, so a backlog delivered in one burst fits a healthy member.
    pub(crate) backlog_bytes: usize,
    /// (rate, burst) of one room's sends.
    pub(crate) room_rate: (u32, u32),
    /// (rate, burst) of one user's room sends, over all rooms.
    pub(crate) user_rate: (u32, u32),
    /// Threads one frame of a huge room may be split over.
    pub(crate) parallelism: usize,
    /// Sessions a room needs before its frames are split over threads.
    pub(crate) parallel_min_sessions: usize,
}

impl RoomSettings {
    /// The room settings of an engine configuration.
    pub(crate) fn from_config(c: &EngineConfig) -> Self {
        Self {
            sub_rooms: SubRoomConfig {
                capacity: c.room_sub_room_capacity,
                merge_below: c.room_sub_room_merge_below,
            },
            batch: c.room_batch.clone(),
            policy: Arc::new(DefaultFanoutPolicy::default()),
            hot_ring: c.room_hot_ring,
            backlog_frames: c.room_backlog_frames.max(1),
            backlog_bytes: (c.outbound_queue_bytes / 2).max(1),
            room_rate: (c.room_send_rate, c.room_send_burst),
            user_rate: (c.user_room_send_rate, c.user_room_send_burst),
            parallelism: c.room_fanout_parallelism,
            parallel_min_sessions: c.room_fanout_parallel_min,
        }
    }

    /// The same settings, with each room's sharding and batch window
    /// decided by `policy`.
    pub(crate) fn with_policy(mut self, policy: Arc<dyn FanoutPolicy>) -> Self {
        self.policy = policy;
        self
    }
}

/// One live room of sessions of type `M`.
pub(crate) struct Room<M> {
    /// The room's id.
    id: ChannelId,
    /// Settings every room shares.
    settings: Arc<RoomSettings>,
    /// The fanout threads that deliver its frames.
    stage: Arc<FanoutStage>,
    /// Which fanout thread of its rate class serves it.
    thread_slot: usize,
    /// Who sits where.
    members: Mutex<Members<M>>,
    /// Sessions in the room.
    online: AtomicUsize,
    /// Held for reading while a frame is delivered; merges (which move
    /// sessions between sub-rooms) only happen when they get it for writing.
    gate: RwLock<()>,
    /// Batch window, backlog and turn state.
    flow: Mutex<Flow>,
    /// The room's own send limit.
    limiter: Mutex<TokenBucket>,
    /// Recent messages and the store loads in flight.
    hot: HotCache,
}

impl<M> Room<M> {
    /// An empty room served by fanout thread `slot` of its rate class.
    fn new(
        id: ChannelId,
        settings: Arc<RoomSettings>,
        stage: Arc<FanoutStage>,
        slot: usize,
    ) -> Self {
        let s = &settings;
        // Decided once, when the room opens.
        let sharding = s.policy.room_sharding(&id, s.sub_rooms);
        let batch = s.policy.batch_window(&id, &s.batch);
        Self {
            members: Mutex::new(Members::new(sharding)),
            flow: Mutex::new(Flow::new(batch)),
            limiter: Mutex::new(TokenBucket::new(s.room_rate.0, s.room_rate.1)),
            hot: HotCache::new(s.hot_ring),
            online: AtomicUsize::new(0),
            gate: RwLock::new(()),
            thread_slot: slot,
            id,
            settings,
            stage,
        }
    }

    /// Sessions in the room.
    pub(crate) fn online(&self) -> usize {
        self.online.load(Ordering::Relaxed)
    }

    /// Sub-rooms in use.
    pub(crate) fn sub_room_count(&self) -> usize {
        self.members.lock().sub_room_count()
    }
}

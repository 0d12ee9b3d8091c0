//! Pure planners for huge live rooms: sub-room sharding, tiered batch
//! windows, send limits and the hot ring of recent messages.
//!
//! Everything here is synchronous and deterministic: no IO, no clocks (time
//! is passed in), no tasks. The engine drives these planners under its own
//! locks; they are cheap to benchmark and property-tested on their own.

pub mod batch;
pub mod limit;
pub mod ring;
pub mod subroom;

pub use batch::{BatchConfig, BatchTier, Batcher};
pub use limit::TokenBucket;
pub use ring::HotRing;
pub use subroom::{
    JoinOutcome, Merge, PlannerError, SubRoomConfig, SubRoomId, SubRoomPlanner, Ticket,
};

//! Engine configuration.

use std::time::Duration;

use crate::admission::AdmissionLimits;
use crate::room::BatchConfig;

/// What happens to a user's existing sessions when a new one connects.
/// A session for the *same device id* always replaces the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KickPolicy {
    /// Any number of devices at once.
    #[default]
    AllowMany,
    /// At most one session per device kind (one phone, one desktop, one web, …).
    OnePerDeviceKind,
    /// At most one session per user.
    One,
}

/// Limits and tuning of an [`Engine`](crate::Engine). `Default` suits chat.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Conversation-owner workers (one writer per conversation, by hash).
    pub shards: usize,
    /// Most sends grouped into one store append.
    pub max_commit_batch: usize,
    /// Pending sends queued per shard before senders wait.
    pub shard_queue: usize,
    /// Groups each shard worker keeps cached, and (times `shards`) the
    /// conversation heads the default sequencer keeps. Both are bounded
    /// caches that evict the least useful entries one by one; a batch in
    /// flight keeps what it was given.
    pub shard_cache_entries: usize,
    /// Largest message body accepted.
    pub max_body_bytes: usize,
    /// Largest frame the transports should accept (reported in `Connected`).
    pub max_frame_bytes: usize,
    /// Bytes that may wait in one session's outbound queue before the session
    /// is disconnected as a slow consumer.
    pub outbound_queue_bytes: usize,
    /// Time allowed between accepting a connection and its `Connect` frame.
    pub handshake_timeout: Duration,
    /// Heartbeat interval announced to clients; a session silent for two
    /// intervals is closed.
    pub heartbeat_interval: Duration,
    /// Multi-device policy.
    pub kick_policy: KickPolicy,
    /// Most messages one `Pull` returns.
    pub pull_page_max: usize,
    /// Most inbox entries one `Sync` returns.
    pub sync_page_max: usize,
    /// Most conversations one `ListConversations` returns.
    pub list_max: usize,
    /// How long shutdown waits for sessions to flush their last frames.
    pub shutdown_grace: Duration,
    /// How long after its commit a sender may recall a message (`Recall`).
    /// The host recalls at any time (`Engine::recall` with `Actor::Host`).
    /// Default 2 minutes.
    pub recall_window: Duration,
    /// Most rooms one session may be in at once (each joined room costs
    /// server memory, so a client cannot create rooms without bound).
    pub max_rooms_per_session: usize,
    /// Offline push notices handed to the host's hook at once; beyond this,
    /// notices are dropped and counted (`im_offline_push_dropped_total`).
    pub offline_push_in_flight: usize,
    /// Connections that may be between accept and `Connected` at once (each
    /// holds a socket for up to `handshake_timeout` before authenticating).
    /// When all are held, a connection from an address with nothing pending
    /// evicts the oldest pending one (closed with a retryable `Unavailable`
    /// error) instead of being refused; see [`crate::admission`].
    pub max_pending_handshakes: usize,
    /// Connections from one address (IPv4 address, IPv6 `/64` prefix) that
    /// may be between accept and `Connected` at once; one more is refused
    /// at once with a retryable `Unavailable` error. Connections whose
    /// transport knows no peer address are bounded by
    /// `max_pending_handshakes` only. Behind a proxy or load balancer that
    /// does not pass the client's address, every client shares one: raise
    /// this to `max_pending_handshakes` (and the reserved share to 0).
    pub max_pending_handshakes_per_address: usize,
    /// Part of `max_pending_handshakes` kept for addresses with nothing
    /// pending: past the rest, a new connection from an address that already
    /// has a handshake pending is refused.
    pub pending_handshakes_reserved_for_new_addresses: usize,
    /// Sessions per sub-room of a live room before joins open another one.
    pub room_sub_room_capacity: u32,
    /// A sub-room with fewer sessions than this is merged into another when
    /// both fit (0: never merge).
    pub room_sub_room_merge_below: u32,
    /// The tiered batch window of room messages (default: at once when
    /// quiet, at most 10 messages or 1 s when busy).
    pub room_batch: BatchConfig,
    /// Recent messages kept in memory per room for late joiners and pulls.
    pub room_hot_ring: usize,
    /// Encoded frames a room may have waiting for fanout; past that, or past
    /// half of `outbound_queue_bytes` in bytes, the waiting frames are
    /// replaced by one `Notify` and members pull.
    pub room_backlog_frames: usize,
    /// Messages per second one room accepts from clients (0: unlimited).
    pub room_send_rate: u32,
    /// Burst above `room_send_rate`.
    pub room_send_burst: u32,
    /// Room messages per second one user may send, over all rooms (0: unlimited).
    pub user_room_send_rate: u32,
    /// Burst above `user_room_send_rate`.
    pub user_room_send_burst: u32,
    /// Fanout threads per rate class `[fast, medium, slow]` for room
    /// traffic. A room is served by one thread at a time, so huge rooms
    /// together use at most the slow class's threads, and direct and group
    /// chat never wait behind any of them.
    pub room_fanout_threads: [usize; 3],
    /// Threads one frame of a huge room may be split over (1: never split).
    /// This is the share of the machine one huge room may take. (On the
    /// 2-vCPU development VM fanout is memory-bound and splitting measured
    /// no gain, hence the default of 1.)
    pub room_fanout_parallelism: usize,
    /// Sessions a room needs before its frames are split over threads.
    pub room_fanout_parallel_min: usize,
}

impl EngineConfig {
    /// The bounds on connections that have not authenticated yet.
    pub fn handshake_limits(&self) -> AdmissionLimits {
        AdmissionLimits {
            max_pending: self.max_pending_handshakes,
            per_address: self.max_pending_handshakes_per_address,
            reserved_for_new_addresses: self.pending_handshakes_reserved_for_new_addresses,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            shards: 8,
            max_commit_batch: 1024,
            shard_queue: 8192,
            shard_cache_entries: 100_000,
            max_body_bytes: 64 * 1024,
            max_frame_bytes: 256 * 1024,
            outbound_queue_bytes: 4 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(30),
            kick_policy: KickPolicy::AllowMany,
            pull_page_max: 200,
            sync_page_max: 500,
            list_max: 500,
            shutdown_grace: Duration::from_secs(5),
            recall_window: Duration::from_secs(120),
            max_rooms_per_session: 16,
            offline_push_in_flight: 1024,
            max_pending_handshakes: 1024,
            max_pending_handshakes_per_address: 8,
            pending_handshakes_reserved_for_new_addresses: 256,
            room_sub_room_capacity: 500,
            room_sub_room_merge_below: 125,
            room_batch: BatchConfig::default(),
            room_hot_ring: 1000,
            room_backlog_frames: 256,
            room_send_rate: 1000,
            room_send_burst: 2000,
            user_room_send_rate: 20,
            user_room_send_burst: 40,
            room_fanout_threads: [1, 1, 1],
            room_fanout_parallelism: 1,
            room_fanout_parallel_min: 50_000,
        }
    }
}

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

/// Limits and tuning of an [`Engine`](crate::Engine). `Default` suits chat;
/// each field's default is in its documentation.
///
/// The struct is `#[non_exhaustive]` (fields may be added without a breaking
/// change), so it cannot be written as a literal outside this crate: start
/// from `default()` and set the fields you change, then hand it to the
/// builder.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// # use im_core::{Engine, EngineConfig};
/// # fn store() -> Arc<dyn im_core::Store> { unimplemented!() }
///
/// let mut config = EngineConfig::default();
/// config.max_body_bytes = 16 * 1024;
/// config.heartbeat_interval = Duration::from_secs(20);
/// # if false {
/// let engine = Engine::builder(store()).config(config).insecure_dev_auth().build()?;
/// # }
/// # Ok::<(), im_core::EngineError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Conversation-owner workers (one writer per conversation, by hash).
    ///
    /// Default: `8`.
    pub shards: usize,
    /// Most sends grouped into one store append.
    ///
    /// Default: `1024`.
    pub max_commit_batch: usize,
    /// Pending sends queued per shard before senders wait.
    ///
    /// Default: `8192`.
    pub shard_queue: usize,
    /// Groups each shard worker keeps cached, and (times `shards`) the
    /// conversation heads the default sequencer keeps. Both are bounded
    /// caches that evict the least useful entries one by one; a batch in
    /// flight keeps what it was given.
    ///
    /// Default: `100_000`.
    pub shard_cache_entries: usize,
    /// Largest message body accepted.
    ///
    /// Default: 64 KiB.
    pub max_body_bytes: usize,
    /// Largest frame a client may send on a connection whose transport has
    /// no limit of its own (`ConnectionInfo::max_frame_bytes` is `None`),
    /// announced to it in `Connected.max_frame_bytes`. The TCP and WebSocket
    /// transports enforce their own limit before a frame is buffered
    /// (`TcpConfig::max_frame_bytes`, `WsConfig::max_message_bytes`) and the
    /// engine announces *that* on their connections: the transport is the one
    /// place that decides. Keep every limit above `max_body_bytes` plus a
    /// little framing.
    ///
    /// Default: 256 KiB.
    pub max_frame_bytes: usize,
    /// Bytes that may wait in one session's outbound queue before the session
    /// is disconnected as a slow consumer.
    ///
    /// Default: 4 MiB.
    pub outbound_queue_bytes: usize,
    /// Time allowed between accepting a connection and its `Connect` frame.
    ///
    /// Default: 10 s.
    pub handshake_timeout: Duration,
    /// Heartbeat interval announced to clients; a session silent for two
    /// intervals is closed.
    ///
    /// Default: 30 s.
    pub heartbeat_interval: Duration,
    /// Multi-device policy.
    ///
    /// Default: [`KickPolicy::AllowMany`].
    pub kick_policy: KickPolicy,
    /// Most messages one `Pull` returns.
    ///
    /// Default: `200`.
    pub pull_page_max: usize,
    /// Most inbox entries one `Sync` returns.
    ///
    /// Default: `500`.
    pub sync_page_max: usize,
    /// Most conversations one `ListConversations` returns.
    ///
    /// Default: `500`.
    pub list_max: usize,
    /// How long shutdown waits for sessions to flush their last frames.
    ///
    /// Default: 5 s.
    pub shutdown_grace: Duration,
    /// How long after its commit a sender may recall a message (`Recall`).
    /// The host recalls at any time (`Engine::recall` with `Actor::Host`).
    /// Default 2 minutes.
    pub recall_window: Duration,
    /// Most rooms one session may be in at once (each joined room costs
    /// server memory, so a client cannot create rooms without bound).
    ///
    /// Default: `16`.
    pub max_rooms_per_session: usize,
    /// Offline push notices handed to the host's hook at once; beyond this,
    /// notices are dropped and counted (`im_offline_push_dropped_total`).
    ///
    /// Default: `1024`.
    pub offline_push_in_flight: usize,
    /// Connections that may be between accept and `Connected` at once (each
    /// holds a socket for up to `handshake_timeout` before authenticating).
    /// When all are held, a connection from an address with nothing pending
    /// evicts the oldest pending one (closed with a retryable `Unavailable`
    /// error) instead of being refused; see [`crate::admission`].
    ///
    /// Default: `1024`.
    pub max_pending_handshakes: usize,
    /// Connections from one address (IPv4 address, IPv6 `/64` prefix) that
    /// may be between accept and `Connected` at once; one more is refused
    /// at once with a retryable `Unavailable` error. Connections whose
    /// transport knows no peer address are bounded by
    /// `max_pending_handshakes` only. Behind a proxy or load balancer that
    /// does not pass the client's address, every client shares one: raise
    /// this to `max_pending_handshakes` (and the reserved share to 0).
    ///
    /// Default: `8`.
    pub max_pending_handshakes_per_address: usize,
    /// Part of `max_pending_handshakes` kept for addresses with nothing
    /// pending: past the rest, a new connection from an address that already
    /// has a handshake pending is refused.
    ///
    /// Default: `256`.
    pub pending_handshakes_reserved_for_new_addresses: usize,
    /// Sessions per sub-room of a live room before joins open another one.
    ///
    /// Default: `500`.
    pub room_sub_room_capacity: u32,
    /// A sub-room with fewer sessions than this is merged into another when
    /// both fit (0: never merge).
    ///
    /// Default: `125`.
    pub room_sub_room_merge_below: u32,
    /// The tiered batch window of room messages (default: at once when
    /// quiet, at most 10 messages or 1 s when busy).
    ///
    /// Default: `BatchConfig::default()`.
    pub room_batch: BatchConfig,
    /// Recent messages kept in memory per room for late joiners and pulls.
    ///
    /// Default: `1000`.
    pub room_hot_ring: usize,
    /// Encoded frames a room may have waiting for fanout; past that, or past
    /// half of `outbound_queue_bytes` in bytes, the waiting frames are
    /// replaced by one `Notify` and members pull.
    ///
    /// Default: `256`.
    pub room_backlog_frames: usize,
    /// Messages per second one room accepts from clients (0: unlimited).
    ///
    /// Default: `1000`.
    pub room_send_rate: u32,
    /// Burst above `room_send_rate`.
    ///
    /// Default: `2000`.
    pub room_send_burst: u32,
    /// Room messages per second one user may send, over all rooms (0: unlimited).
    ///
    /// Default: `20`.
    pub user_room_send_rate: u32,
    /// Burst above `user_room_send_rate`.
    ///
    /// Default: `40`.
    pub user_room_send_burst: u32,
    /// Fanout threads per rate class `[fast, medium, slow]` for room
    /// traffic. A room is served by one thread at a time, so huge rooms
    /// together use at most the slow class's threads, and direct and group
    /// chat never wait behind any of them.
    ///
    /// Default: `[1, 1, 1]`.
    pub room_fanout_threads: [usize; 3],
    /// Threads one frame of a huge room may be split over (1: never split).
    /// This is the share of the machine one huge room may take. (On the
    /// 2-vCPU development VM fanout is memory-bound and splitting measured
    /// no gain, hence the default of 1.)
    ///
    /// Default: `1`.
    pub room_fanout_parallelism: usize,
    /// Sessions a room needs before its frames are split over threads.
    ///
    /// Default: `50_000`.
    pub room_fanout_parallel_min: usize,
    /// `Typing` frames per second one session may have forwarded (0:
    /// unlimited); the excess is dropped silently.
    pub typing_rate: u32,
    /// Burst above `typing_rate`.
    pub typing_burst: u32,
    /// Largest group a `ReadCounts` request is answered for; a count
    /// reads every member's cursor, so bigger groups get INVALID_ARGUMENT.
    ///
    /// Default: `1_000`.
    pub read_counts_max_members: u64,
    /// Most seqs one `ReadCounts` request may ask about.
    ///
    /// Default: `100`.
    pub read_counts_max_seqs: usize,
    /// This process's index in a cluster, 0 to 63 (`ids::MAX_NODE_INDEX`),
    /// written into every message id it makes: give each node of a cluster
    /// its own, and message ids stay unique across the cluster. 0 on a
    /// single node.
    pub node_index: u16,
    /// In a session that opted in to push acks (`Connect.push_acks`): the
    /// waits after a push (or an in-flight `Notify`) is sent before it is
    /// sent again, one per resend; after the last wait with no `Ack` the
    /// session is closed with `Kicked{ACK_TIMEOUT}` (its messages stay
    /// stored for catch-up). Default: three short fixed waits of 1 s, then
    /// steps of 2, 4 and 8 s — five resends, closed 17 s after the push.
    /// Room pushes are never tracked (rooms stay best effort).
    pub push_ack_waits: Vec<Duration>,
    /// Most unacknowledged pushes and notices one `push_acks` session may
    /// have at once (default 1,024). A push past this or past
    /// `push_ack_max_bytes` is replaced by a `Notify`; a session with no
    /// room left even for that is closed with `Kicked{ACK_TIMEOUT}`.
    pub push_ack_max_entries: usize,
    /// Most bytes of unacknowledged push frames one `push_acks` session
    /// may hold at once (default 1 MiB, a quarter of the outbound queue).
    /// The frames are the shared fanout buffers, so this is an upper bound.
    pub push_ack_max_bytes: usize,
    /// How often a `push_acks` session writes the delivered cursors its
    /// `Ack`s moved (the highest seq per conversation, in one store call);
    /// also written when the session ends and before it lists its
    /// conversations. Default 1 s. Sessions without push acks write each
    /// `Ack` at once, as before.
    pub ack_cursor_flush: Duration,
    /// Most read-diffusion conversations one `Sync{include_heads}` reports
    /// in `SyncResult.heads`, most recently active first (default 500).
    /// The user's twice this many most recently active groups are examined
    /// (one member count each), so the work per sync is bounded; a user in
    /// more groups learns of the quieter ones through `ListConversations`.
    pub sync_heads_max: usize,
    /// Time the host's `PreSendHook` and `RoomJoinPolicy` have to answer;
    /// past it the send or join fails with a retryable
    /// `ERROR_CODE_UNAVAILABLE` and nothing is committed or joined.
    /// Default 2 s.
    pub hook_timeout: Duration,
    /// Time the host's `CallHandler` has to answer a `Call`; past it the
    /// client gets a retryable `ERROR_CODE_UNAVAILABLE`. Default 5 s.
    pub call_timeout: Duration,
    /// Largest `Call.data` accepted (default 64 KiB).
    pub max_call_bytes: usize,
    /// Calls one session may have in flight at once; beyond it a call is
    /// answered with a retryable `ERROR_CODE_RATE_LIMITED` (default 16).
    pub max_calls_per_session: usize,
    /// `Call`s per second one session may make (0: unlimited); the excess
    /// is answered with a retryable `ERROR_CODE_RATE_LIMITED`. Default 20.
    pub call_rate: u32,
    /// Burst above `call_rate` (default 40).
    pub call_burst: u32,
    /// Connect and disconnect events waiting for the host's
    /// `SessionObserver`; beyond this, events are dropped and counted
    /// (`im_session_events_dropped_total`). Default 4,096.
    pub session_event_queue: usize,
    /// Most users one session may watch the presence of (`WatchPresence`);
    /// a request past it is refused and changes nothing. Each watch costs
    /// server memory, and each request one store lookup per user.
    ///
    /// Default: `256`.
    pub presence_watch_max: usize,
    /// Online-state changes kept per group for incremental `GroupOnline`
    /// answers; a client further behind gets the full list.
    ///
    /// Default: `256`.
    pub group_online_log: usize,
    /// Most online members one full `GroupOnline` answer lists; the client
    /// pages for the rest.
    ///
    /// Default: `500`.
    pub group_online_page: usize,
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
            typing_rate: 2,
            typing_burst: 5,
            read_counts_max_members: 1_000,
            read_counts_max_seqs: 100,
            node_index: 0,
            push_ack_waits: [1, 1, 1, 2, 4, 8].map(Duration::from_secs).to_vec(),
            push_ack_max_entries: 1024,
            push_ack_max_bytes: 1024 * 1024,
            ack_cursor_flush: Duration::from_secs(1),
            sync_heads_max: 500,
            hook_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
            max_call_bytes: 64 * 1024,
            max_calls_per_session: 16,
            call_rate: 20,
            call_burst: 40,
            session_event_queue: 4096,
            presence_watch_max: 256,
            group_online_log: 256,
            group_online_page: 500,
        }
    }
}

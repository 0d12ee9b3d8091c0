//! Engine configuration.

use std::time::Duration;

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
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            shards: 8,
            max_commit_batch: 1024,
            shard_queue: 8192,
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
        }
    }
}

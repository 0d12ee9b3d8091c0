#![doc = include_str!("../README.md")]

pub mod admission;
pub mod amend;
pub mod auth;
pub mod cluster;
pub mod codec;
pub mod content;
pub mod directory;
mod engine;
pub mod error;
pub mod fanout;
mod fast_hash;
pub mod group_roles;
pub mod hooks;
pub mod ids;
pub mod log_limit;
pub mod online_log;
pub mod push;
pub mod room;
pub mod sequencer;
pub mod settings;
pub mod store;
pub mod transport;

/// Generated protobuf types of `proto/im.proto` (package `im.v1`).
#[allow(missing_docs, clippy::all)]
pub mod pb {
    include!("proto/im.v1.rs");
}

pub use async_trait::async_trait;
pub use auth::{AuthRequest, Authenticator, InsecureDevAuthenticator};
pub use directory::{LocalDirectory, SessionDirectory, SessionInfo};
/// Hooks for the criterion benches (feature `bench`); not a stable API.
#[cfg(feature = "bench")]
#[doc(hidden)]
pub use engine::bench_support;
pub use engine::{
    Engine, EngineBuilder, EngineConfig, GroupActor, GroupChange, KickPolicy, MAX_BLOCKED_USERS,
    MAX_GROUP_ACTION_USERS, MAX_INSTRUCTION_KIND_BYTES, MAX_PINNED_CONVERSATIONS, RoomStats,
    SYSTEM_SENDER, SendReceipt,
};
pub use error::{AuthError, EngineError, StoreError};
pub use fanout::{DefaultFanoutPolicy, FanoutPolicy};
pub use hooks::{
    CallError, CallHandler, CallRequest, DisconnectReason, JoinVerdict, OutgoingMessage,
    PreSendHook, RoomJoinPolicy, RoomJoinRequest, SendVerdict, SessionDetails, SessionObserver,
};
pub use ids::{
    ChannelId, ConversationId, ConversationKind, DedupKey, DeviceId, DirectPair, MessageId, Seq,
    UserId,
};
pub use push::{NoOfflinePush, OfflineNotice, OfflinePush};
pub use sequencer::{CachedSequencer, Sequencer};
pub use store::{Store, StoreExt};
/// The type of [`Engine::shutdown_token`]: cancelled when the engine starts
/// shutting down (re-exported so hosts need not depend on tokio-util).
pub use tokio_util::sync::CancellationToken;
pub use transport::{
    CloseCode, CloseReason, Connection, ConnectionInfo, FrameReader, FrameWriter, TransportError,
};

/// The protocol file, for clients generated at runtime or shipped alongside.
pub const PROTO: &str = include_str!("../proto/im.proto");

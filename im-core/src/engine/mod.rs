//! The engine: sessions, conversation owners, fanout, and the host API.

#[cfg(feature = "bench")]
pub mod bench_support;
mod commit;
mod config;
mod group_lane;
mod offline;
mod registry;
mod rooms;
mod session;
mod shard;
mod wire;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Authenticator, InsecureDevAuthenticator};
use crate::directory::{LocalDirectory, SessionDirectory};
use crate::error::EngineError;
use crate::fanout::{DefaultFanoutPolicy, FanoutPolicy};
use crate::ids::{ChannelId, ConversationId, DeviceId, MessageIdGenerator, UserId};
use crate::pb;
use crate::push::OfflinePush;
use crate::sequencer::{CachedSequencer, Sequencer};
use crate::store::Store;
use crate::transport::Connection;

pub use config::{EngineConfig, KickPolicy};
pub use shard::SendReceipt;

use registry::Registry;
use rooms::{FanoutStage, RoomIndex, RoomSettings};
use session::QueuedFrames;
use shard::{PendingSend, Reply, ShardCommand, ShardWorker};

/// The device id of messages sent through the host API; clients may not use it,
/// so host idempotency keys never collide with a client's.
pub(crate) const HOST_DEVICE: &str = "host";

/// What shard workers and sessions share.
pub(crate) struct Shared {
    pub(crate) config: EngineConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) auth: Arc<dyn Authenticator>,
    pub(crate) offline_push: Option<offline::OfflineDispatch>,
    pub(crate) policy: Arc<dyn FanoutPolicy>,
    pub(crate) sequencer: Arc<dyn Sequencer>,
    pub(crate) directory: Arc<dyn SessionDirectory>,
    pub(crate) registry: Registry,
    pub(crate) ids: MessageIdGenerator,
    pub(crate) next_session: AtomicU64,
    pub(crate) shutdown: CancellationToken,
    pub(crate) sessions: TaskTracker,
    /// Permits for connections that have not authenticated yet.
    pub(crate) handshakes: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    /// True if the user is online here or, per the directory, elsewhere.
    pub(crate) fn is_online(&self, user: &UserId) -> bool {
        self.directory
            .is_online(user, self.registry.is_online(user))
    }
}

struct Inner {
    shared: Arc<Shared>,
    shards: Vec<mpsc::Sender<ShardCommand>>,
}

/// A live room as [`Engine::room_stats`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoomStats {
    /// Sessions in the room.
    pub sessions: usize,
    /// Sub-rooms its sessions are sharded into.
    pub sub_rooms: usize,
}

/// A running IM engine. Cheap to clone; every clone is the same engine.
///
/// Build one with [`Engine::builder`], hand it connections from one or more
/// transports with [`Engine::accept`], and drive groups and system messages
/// through the host API below.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("sessions", &self.session_count())
            .finish_non_exhaustive()
    }
}

/// Builds an [`Engine`].
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    config: EngineConfig,
    auth: Option<Arc<dyn Authenticator>>,
    offline_push: Option<Arc<dyn OfflinePush>>,
    policy: Arc<dyn FanoutPolicy>,
    sequencer: Option<Arc<dyn Sequencer>>,
    directory: Arc<dyn SessionDirectory>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Sets the configuration.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the authenticator (required unless you call
    /// [`EngineBuilder::insecure_dev_auth`]).
    pub fn authenticator(mut self, auth: Arc<dyn Authenticator>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Trusts `user` or `user:device` tokens as they are. Development only.
    pub fn insecure_dev_auth(mut self) -> Self {
        tracing::warn!("INSECURE: accepting any `user:device` token; never use this in production");
        self.auth = Some(Arc::new(InsecureDevAuthenticator));
        self
    }

    /// Sets the offline push hook.
    pub fn offline_push(mut self, push: Arc<dyn OfflinePush>) -> Self {
        self.offline_push = Some(push);
        self
    }

    /// Sets the fanout policy (default: [`DefaultFanoutPolicy`]).
    pub fn fanout_policy(mut self, policy: Arc<dyn FanoutPolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the sequencer, which knows conversation heads (default: a
    /// [`CachedSequencer`] of `shard_cache_entries` per shard).
    pub fn sequencer(mut self, sequencer: Arc<dyn Sequencer>) -> Self {
        self.sequencer = Some(sequencer);
        self
    }

    /// Sets the session directory, which knows who is online beyond this
    /// process (default: [`LocalDirectory`], this process only).
    pub fn session_directory(mut self, directory: Arc<dyn SessionDirectory>) -> Self {
        self.directory = directory;
        self
    }

    /// Starts the engine's workers. Must be called inside a Tokio runtime.
    pub fn build(self) -> Result<Engine, EngineError> {
        let auth = self.auth.ok_or_else(|| {
            EngineError::InvalidRequest("an authenticator is required".to_owned())
        })?;
        let rooms = RoomIndex::new(
            RoomSettings::from_config(&self.config).with_policy(self.policy.clone()),
            FanoutStage::start(self.config.room_fanout_threads),
        );
        let offline_in_flight = self.config.offline_push_in_flight;
        let pending_handshakes = self.config.max_pending_handshakes.max(1);
        let sequencer = self.sequencer.unwrap_or_else(|| {
            let entries = self.config.shard_cache_entries.max(1);
            Arc::new(CachedSequencer::new(
                entries.saturating_mul(self.config.shards.max(1)),
            ))
        });
        let shared = Arc::new(Shared {
            config: self.config,
            store: self.store,
            auth,
            offline_push: self
                .offline_push
                .map(|p| offline::OfflineDispatch::new(p, offline_in_flight)),
            policy: self.policy,
            sequencer,
            directory: self.directory,
            registry: Registry::new(rooms),
            ids: MessageIdGenerator::new(),
            next_session: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            handshakes: Arc::new(tokio::sync::Semaphore::new(pending_handshakes)),
        });
        let shards = (0..shared.config.shards.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(shared.config.shard_queue.max(1));
                tokio::spawn(ShardWorker::new(shared.clone()).run(rx));
                tx
            })
            .collect();
        Ok(Engine {
            inner: Arc::new(Inner { shared, shards }),
        })
    }
}

impl Engine {
    /// Starts building an engine on a store.
    pub fn builder(store: Arc<dyn Store>) -> EngineBuilder {
        EngineBuilder {
            store,
            config: EngineConfig::default(),
            auth: None,
            offline_push: None,
            policy: Arc::new(DefaultFanoutPolicy::default()),
            sequencer: None,
            directory: Arc::new(LocalDirectory),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.shared.config
    }

    /// The store in use.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.shared.store
    }

    /// Serves one connection as a session until it ends. Returns at once;
    /// the session runs on its own task.
    pub fn accept(&self, conn: Connection) {
        let shared = &self.inner.shared;
        if shared.shutdown.is_cancelled() {
            return;
        }
        shared.sessions.spawn(session::run(self.clone(), conn));
    }

    /// Cancelled when the engine starts shutting down; transports stop accepting.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shared.shutdown.clone()
    }

    /// Live sessions.
    pub fn session_count(&self) -> usize {
        self.inner.shared.registry.session_count()
    }

    /// A live room's sessions and sub-rooms here, or `None` when no session
    /// is in it (for monitoring; the numbers move as sessions come and go).
    pub fn room_stats(&self, room: &ChannelId) -> Option<RoomStats> {
        let room = self.inner.shared.registry.rooms().get(room)?;
        Some(RoomStats {
            sessions: room.online(),
            sub_rooms: room.sub_room_count(),
        })
    }

    /// True if the user has at least one live session, here or, as the
    /// session directory knows, anywhere else.
    pub fn is_online(&self, user: &UserId) -> bool {
        self.inner.shared.is_online(user)
    }

    /// Creates a group with its first members.
    pub async fn create_group(
        &self,
        group: &ChannelId,
        members: &[UserId],
    ) -> Result<(), EngineError> {
        self.inner.shared.store.create_group(group, members).await?;
        self.inner.shared.registry.add_group_members(group, members);
        self.invalidate_group(group).await;
        Ok(())
    }

    /// Adds members to a group; their live sessions start receiving it at once.
    pub async fn add_members(
        &self,
        group: &ChannelId,
        users: &[UserId],
    ) -> Result<(), EngineError> {
        self.inner.shared.store.add_members(group, users).await?;
        self.inner.shared.registry.add_group_members(group, users);
        self.invalidate_group(group).await;
        Ok(())
    }

    /// Removes members from a group; their live sessions stop receiving it at once.
    pub async fn remove_members(
        &self,
        group: &ChannelId,
        users: &[UserId],
    ) -> Result<(), EngineError> {
        self.inner.shared.store.remove_members(group, users).await?;
        self.inner
            .shared
            .registry
            .remove_group_members(group, users);
        self.invalidate_group(group).await;
        Ok(())
    }

    /// Commits a message as `sender` without membership checks (system
    /// messages, bots, imports). With an `idempotency_key`, a retry returns
    /// the original receipt.
    pub async fn send_as(
        &self,
        conversation: ConversationId,
        sender: UserId,
        body: Bytes,
        idempotency_key: Option<String>,
    ) -> Result<SendReceipt, EngineError> {
        if body.len() > self.config().max_body_bytes {
            return Err(EngineError::InvalidRequest(format!(
                "body of {} bytes exceeds {}",
                body.len(),
                self.config().max_body_bytes
            )));
        }
        if let Some(key) = &idempotency_key {
            crate::ids::validate_client_msg_id(key)?;
        }
        let (tx, rx) = oneshot::channel();
        let device = DeviceId::new(HOST_DEVICE)?;
        self.submit(PendingSend {
            conversation,
            sender,
            device,
            client_msg_id: idempotency_key,
            body,
            check_membership: false,
            reply: Reply::Host(tx),
        })
        .await?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Disconnects every session of a user with a `Kicked` frame; returns how many.
    pub fn kick_user(&self, user: &UserId, detail: &str) -> usize {
        let sessions = self.inner.shared.registry.user_sessions(user);
        for s in &sessions {
            s.kick(pb::KickReason::ByHost, detail, QueuedFrames::Flush);
        }
        sessions.len()
    }

    /// Stops accepting, lets in-flight sends commit and be acked, then closes
    /// every session with `Kicked{SHUTDOWN}`.
    pub async fn shutdown(&self) {
        let shared = &self.inner.shared;
        shared.shutdown.cancel();
        shared.sessions.close();
        // Sessions stop reading on cancel; what they already queued commits now.
        for tx in &self.inner.shards {
            let (done_tx, done_rx) = oneshot::channel();
            if tx.send(ShardCommand::Drain(done_tx)).await.is_ok() {
                let _ = done_rx.await;
            }
        }
        for s in shared.registry.all_sessions() {
            s.kick(
                pb::KickReason::Shutdown,
                "server shutting down",
                QueuedFrames::Flush,
            );
        }
        let _ = tokio::time::timeout(shared.config.shutdown_grace, shared.sessions.wait()).await;
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    pub(crate) async fn submit(&self, send: PendingSend) -> Result<(), EngineError> {
        let shard = &self.inner.shards[self.shard_of(&send.conversation)];
        shard
            .send(ShardCommand::Send(send))
            .await
            .map_err(|_| EngineError::ShuttingDown)
    }

    async fn invalidate_group(&self, group: &ChannelId) {
        let conv = ConversationId::Group(group.clone());
        let shard = &self.inner.shards[self.shard_of(&conv)];
        let _ = shard
            .send(ShardCommand::InvalidateGroup(group.clone()))
            .await;
    }

    fn shard_of(&self, conv: &ConversationId) -> usize {
        let mut h = DefaultHasher::new();
        conv.hash(&mut h);
        (h.finish() % self.inner.shards.len() as u64) as usize
    }

    pub(crate) fn next_session_id(&self) -> u64 {
        self.inner
            .shared
            .next_session
            .fetch_add(1, Ordering::Relaxed)
    }
}

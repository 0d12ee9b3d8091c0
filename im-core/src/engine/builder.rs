//! [`EngineBuilder`]: the store, the authenticator and every replaceable
//! seam, then `build` starts the shard workers.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::PendingHandshakes;
use crate::auth::{Authenticator, InsecureDevAuthenticator};
use crate::cluster::ClusterBus;
use crate::directory::{LocalDirectory, SessionDirectory};
use crate::error::EngineError;
use crate::fanout::{DefaultFanoutPolicy, FanoutPolicy};
use crate::hooks::{CallHandler, PreSendHook, RoomJoinPolicy, SessionObserver};
use crate::ids::MessageIdGenerator;
use crate::push::OfflinePush;
use crate::sequencer::{CachedSequencer, Sequencer};
use crate::store::Store;

use super::cluster::{ClusterInbound, InterestDirectory};
use super::config::EngineConfig;
use super::hooks::{Hooks, SessionEvents};
use super::registry::Registry;
use super::rooms::{FanoutStage, RoomIndex, RoomSettings};
use super::session::InFlightConfig;
use super::shard::ShardWorker;
use super::{Engine, Inner, Shared, offline};

/// Builds an [`Engine`].
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    config: EngineConfig,
    auth: Option<Arc<dyn Authenticator>>,
    offline_push: Option<Arc<dyn OfflinePush>>,
    policy: Arc<dyn FanoutPolicy>,
    sequencer: Option<Arc<dyn Sequencer>>,
    directory: Arc<dyn SessionDirectory>,
    cluster: Option<Arc<dyn ClusterBus>>,
    hooks: Hooks,
    observer: Option<Arc<dyn SessionObserver>>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Starts building an engine on a store, with every default.
    pub(super) fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            config: EngineConfig::default(),
            auth: None,
            offline_push: None,
            policy: Arc::new(DefaultFanoutPolicy::default()),
            sequencer: None,
            directory: Arc::new(LocalDirectory),
            cluster: None,
            hooks: Hooks::default(),
            observer: None,
        }
    }

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

    /// Joins a cluster: committed batches, interest and control cross nodes
    /// over `bus` (e.g. `im_cluster_nats::NatsBus`). `build` hands the bus
    /// the engine's inbound side ([`ClusterBus::attach`]). Nodes of one
    /// cluster must share one store.
    pub fn cluster(mut self, bus: Arc<dyn ClusterBus>) -> Self {
        self.cluster = Some(bus);
        self
    }

    /// Sets the pre-send hook, which may allow, reject or rewrite every
    /// client `Send` and `Edit` (default: none, everything is allowed).
    pub fn pre_send_hook(mut self, hook: Arc<dyn PreSendHook>) -> Self {
        self.hooks.pre_send = Some(hook);
        self
    }

    /// Sets who may join which live room (default: anyone signed in).
    pub fn room_join_policy(mut self, policy: Arc<dyn RoomJoinPolicy>) -> Self {
        self.hooks.room_join = Some(policy);
        self
    }

    /// Sets the observer told of every session that connects or ends
    /// (default: none).
    pub fn session_observer(mut self, observer: Arc<dyn SessionObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Sets the handler of clients' custom requests, `Call` frames
    /// (default: none, every call is answered `UNIMPLEMENTED`).
    pub fn call_handler(mut self, handler: Arc<dyn CallHandler>) -> Self {
        self.hooks.calls = Some(handler);
        self
    }

    /// Starts the engine's workers. Must be called inside a Tokio runtime.
    pub fn build(self) -> Result<Engine, EngineError> {
        let auth = self.auth.ok_or_else(|| {
            EngineError::InvalidRequest("an authenticator is required".to_owned())
        })?;
        let ids = MessageIdGenerator::for_node(self.config.node_index).ok_or_else(|| {
            EngineError::InvalidRequest(format!(
                "node_index {} is out of range: use 0 to {}",
                self.config.node_index,
                crate::ids::MAX_NODE_INDEX
            ))
        })?;
        let rooms = RoomIndex::new(
            RoomSettings::from_config(&self.config).with_policy(self.policy.clone()),
            FanoutStage::start(self.config.room_fanout_threads),
        );
        let offline_in_flight = self.config.offline_push_in_flight;
        let registry = Registry::new(rooms, self.config.group_online_log);
        let handshakes = PendingHandshakes::new(self.config.handshake_limits(), "login");
        let sequencer = self.sequencer.unwrap_or_else(|| {
            let entries = self.config.shard_cache_entries.max(1);
            Arc::new(CachedSequencer::new(
                entries.saturating_mul(self.config.shards.max(1)),
            ))
        });
        let in_flight = InFlightConfig {
            waits: self.config.push_ack_waits.iter().copied().collect(),
            max_entries: self.config.push_ack_max_entries,
            max_bytes: self.config.push_ack_max_bytes,
        };
        let mut hooks = self.hooks;
        hooks.session_events = self
            .observer
            .map(|o| SessionEvents::start(o, self.config.session_event_queue));
        let offline_push = self
            .offline_push
            .map(|p| offline::OfflineDispatch::new(p, self.store.clone(), offline_in_flight));
        let shared = Arc::new(Shared {
            in_flight,
            hooks,
            config: self.config,
            store: self.store,
            auth,
            offline_push,
            policy: self.policy,
            sequencer,
            directory: match &self.cluster {
                Some(bus) => Arc::new(InterestDirectory::new(self.directory, bus.clone())),
                None => self.directory,
            },
            registry: registry.with_cluster(self.cluster.clone()),
            cluster: self.cluster,
            ids,
            next_session: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            handshakes,
        });
        let shards = (0..shared.config.shards.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(shared.config.shard_queue.max(1));
                tokio::spawn(ShardWorker::new(shared.clone()).run(rx));
                tx
            })
            .collect();
        let inner = Arc::new(Inner { shared, shards });
        if let Some(bus) = &inner.shared.cluster {
            bus.attach(ClusterInbound {
                inner: Arc::downgrade(&inner),
            });
        }
        Ok(Engine { inner })
    }
}

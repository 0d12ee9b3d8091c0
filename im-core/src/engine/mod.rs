//! The engine: sessions, conversation owners, fanout, and the host API.
//!
//! This comment says what runs where, who owns which state, and in which
//! order locks are taken. `ARCHITECTURE.md` at the repository root follows
//! one message through all of it. Change them with the code.
//!
//! # Tasks and threads
//!
//! Everything runs on the host's Tokio runtime except the room fanout
//! threads, which are plain OS threads.
//!
//! - **Transport accept loops**, one Tokio task per listener:
//!   `TcpServer::serve` (im-transport-tcp) and `WsServer::serve`
//!   (im-transport-ws), both around `transport::accept_until`; they stop
//!   when `Engine::shutdown_token` is cancelled. The WebSocket loop spawns
//!   one more task per connection for the HTTP upgrade (admitted like the
//!   engine's login phase, by its own `admission::PendingHandshakes` of
//!   `WsConfig::max_pending_handshakes`). They own their listener and hand
//!   each `Connection` to `Engine::accept`.
//! - **Session task**, one per connection: `session::run`, spawned by
//!   `Engine::accept` on the `Shared::sessions` task tracker. It is admitted
//!   to `Shared::handshakes` (`admission::PendingHandshakes`: bounded per
//!   address and in total; admitting it may evict the oldest pending
//!   handshake, which then closes), runs the handshake, creates the
//!   `SessionHandle`, registers it, indexes its groups and runs
//!   `Session::read_loop`, which handles one request at a time
//!   (`Session::on_frame`): pulls, syncs, cursors, lists and room joins call
//!   the store from this task; sends go to the owning shard through
//!   `Engine::submit`, which waits when that shard's queue is full
//!   (back-pressure on this reader only). On the way out it writes the
//!   delivered cursors still pending, unregisters the session and waits at
//!   most `shutdown_grace` for the writer. It owns the `FrameReader` and the
//!   `Session` (its malformed-frame count), and it is
//!   the only task that registers, unregisters, joins and leaves rooms for
//!   its session. For a `push_acks` session it also runs the one timer of
//!   the reliable last hop (resends, the ack timeout, writing the delivered
//!   cursors its acks moved), woken early by `SessionHandle::deliver` when
//!   a push falls due before it.
//! - **Session writer task**, one per session: `write_loop`, spawned by
//!   `session::run` once `Connected` is queued. It owns the `FrameWriter`
//!   and drains the session's `Outbound` queue with one `write_frames` call
//!   per wake-up until the queue closes.
//! - **Shard workers**, `EngineConfig::shards` of them (default 8):
//!   `ShardWorker::run`, spawned by `EngineBuilder::build`, fed by a bounded
//!   channel of `ShardCommand` (`shard_queue`). A conversation belongs to
//!   shard `hash(conversation) % shards` (`Engine::shard_of`) for the
//!   engine's life; that worker is its only writer. A worker owns the
//!   `CommitBatch` in flight (one at a time), its `HoldBacks`, its group
//!   facts cache (`ShardWorker::groups`, an unsynchronized `quick_cache`, no
//!   lock) and the sending side of its group lane. It reads the registry for
//!   fanout and updates the sequencer's heads of its own conversations only
//!   (`Sequencer::advanced`, `Sequencer::forget`).
//! - **Group lanes**, one Tokio task per shard: `group_lane::run`, spawned
//!   by `GroupLane::start` in `ShardWorker::new`. Its worker hands it the
//!   frames of groups above the fast rate class, and of any group that still
//!   has frames waiting in the lane (`GroupLane::is_busy`), over a bounded
//!   channel (`LANE_FRAMES`, 1024). It snapshots the group's live sessions
//!   (`Registry::with_group`) and queues the frame to each with no lock
//!   held. It shares the per-group `waiting` counts with its worker.
//! - **Room fanout threads**, OS threads named `im-fanout-{class}-{i}`,
//!   `EngineConfig::room_fanout_threads` per rate class (default
//!   `[1, 1, 1]`): started by `FanoutStage::start` in `EngineBuilder::build`.
//!   Each loops in `fanout_thread` over a std channel of rooms with frames
//!   due and calls `Room::run_turn` (at most `FRAMES_PER_TURN`, 8, frames,
//!   then the room is queued again behind the others). A room always goes
//!   to the same thread of its class (`thread_slot`) and is queued at most
//!   once (`Flow::turn`), so its frames stay in order and a thread's queue
//!   holds at most one entry per live room. The threads own nothing; a turn
//!   takes the room's locks. They end when the `FanoutStage` is dropped.
//!   When `room_fanout_parallelism` is above 1 and a room has at least
//!   `room_fanout_parallel_min` sessions, `Room::deliver` splits one frame
//!   over scoped helper threads, joined before it returns.
//! - **Room batch timers**, at most one Tokio task per room at a time:
//!   spawned by `Room::pump` when the room's batch window has a deadline
//!   (`BatchTimer::Armed`); it sleeps until then and calls `Room::tick`.
//! - **Offline push tasks**, one per notice: spawned by
//!   `OfflineDispatch::dispatch`, at most `offline_push_in_flight` at once
//!   (beyond that a notice is dropped and counted); each reads which
//!   recipients muted the conversation (`Settings::muted`) and awaits the
//!   host's `OfflinePush::notify` for the others.
//! - **Host hooks** (`hooks.rs`): the pre-send hook and the room-join
//!   policy run on the session task, inside `Session::on_send`,
//!   `Session::amend` and `Session::on_join`, bounded by `hook_timeout`;
//!   never on a shard worker. Each `Call` runs on its own task on the
//!   `Shared::sessions` tracker (`session/call.rs`), bounded by
//!   `call_timeout` and a per-session semaphore of
//!   `max_calls_per_session`. With a `SessionObserver`, one task
//!   (`SessionEvents::start`, spawned by `EngineBuilder::build`) calls it
//!   for the events the session tasks queue (bounded, never waiting).
//! - **Forwarded-send tasks**, one per send whose conversation another node
//!   owns (only with a routing cluster bus): spawned by
//!   `Engine::forward_to_owner` (`forward.rs`); each awaits the owner's
//!   outcome from the bus and answers the session or host caller.
//! - **Host calls** run on the caller's task. `Engine::send_as` goes through
//!   `Engine::submit` like a client send. `create_group`, `add_members` and
//!   `remove_members` write the store, then the registry's group index, then
//!   send `ShardCommand::InvalidateGroup` to the owning shard.
//!   `change_group` (`group_admin.rs`, also behind a session's group
//!   actions) does the same around a system event it submits like a send;
//!   for a removal it first waits for that event's fanout
//!   (`ShardCommand::Drain`).
//!   `Engine::shutdown` cancels the shutdown token, drains every shard
//!   (`ShardCommand::Drain`), kicks every session and waits at most
//!   `shutdown_grace`.
//!
//! # Who owns the shared state
//!
//! - `Shared`, one `Arc` cloned into every task above: the configuration,
//!   the seams (store, authenticator, offline push, fanout policy,
//!   sequencer, session directory), the registry, the message-id generator
//!   and the session-id counter (atomics), the shutdown token, the session
//!   task tracker and the handshake semaphore.
//! - `Registry` (`registry.rs`), the online index: `by_user` (user → live
//!   sessions) and `groups` (group → live sessions, with a membership
//!   `epoch`), plus the `RoomIndex`. Written by session tasks (connect,
//!   disconnect, join, leave) and host calls (membership changes); read by
//!   shard workers and group lanes to fan out.
//! - `RoomIndex` (`rooms/index.rs`): live rooms by id and the per-user room
//!   send limits. Each `Room` owns its sub-rooms and seats (`members`), its
//!   batch window, backlog and turn state (`flow`), its send limit
//!   (`limiter`) and its hot ring with the store loads in flight (`hot`).
//! - `SessionHandle` (`session/handle.rs`), shared by the session's two
//!   tasks, the indexes, shard workers (inside `Reply::Session`), group
//!   lanes and fanout threads: the `Outbound` queue (bounded by
//!   `outbound_queue_bytes`), the rooms and groups the session is indexed
//!   under, the `gone` flag and the `stop` token.
//! - Store, authenticator, sequencer, directory and offline push live behind
//!   their traits. `CachedSequencer` and the stores have locks of their own,
//!   taken only inside their methods.
//!
//! # Locks
//!
//! The engine has 18 locks, all `parking_lot`:
//!
//! | lock | in | guards |
//! |---|---|---|
//! | `Registry::groups` (RwLock) | `registry.rs` | group → live sessions, with `epoch` |
//! | `Registry::by_user` (RwLock) | `registry.rs` | user → live sessions |
//! | `SessionHandle::groups` (Mutex) | `session/handle.rs` | groups the session is indexed under |
//! | `SessionHandle::rooms` (Mutex) | `session/handle.rs` | rooms the session joined |
//! | `Acks::state` (Mutex) | `session/reliable.rs` | a `push_acks` session's in-flight pushes and notices, and its timer's deadline |
//! | `Outbound::state` (Mutex) | `session/outbound.rs` | a session's queued frames and close reason |
//! | `RoomIndex::rooms` (RwLock) | `rooms/index.rs` | room id → room |
//! | `Room::gate` (RwLock of `()`) | `rooms/mod.rs` | read while a frame is delivered; write to merge sub-rooms |
//! | `Room::members` (Mutex) | `rooms/mod.rs` | sub-rooms, seats, open/closed |
//! | `SubRoom::sessions` (Mutex) | `rooms/members.rs` | one sub-room's sessions |
//! | `Room::flow` (Mutex) | `rooms/mod.rs` | batcher, backlog, plan, turn and timer state |
//! | `Room::limiter` (Mutex) | `rooms/mod.rs` | the room's token bucket |
//! | `UserLimits::users` (Mutex) | `rooms/limits.rs` | per-user room token buckets |
//! | `HotCache::ring` (Mutex) | `rooms/hot.rs` | recent messages of a room |
//! | `HotCache::loads` (Mutex) | `rooms/hot.rs` | store loads in flight, per range |
//! | `GroupLane::waiting` (Mutex) | `group_lane.rs` | frames waiting in a lane, per group |
//! | `Presence::watches` (Mutex) | `presence.rs` | who watches whose presence, last-seen times |
//! | `Presence::groups` (Mutex) | `presence.rs` | per-group online members and change logs |
//!
//! Rules:
//!
//! - No lock is held across an `.await`, nor while calling the store, the
//!   authenticator, the sequencer, the directory or the offline push hook.
//! - Take a lock only if every lock you already hold comes before it in one
//!   of these two chains (a chain may be entered in the middle):
//!   1. `Registry::groups` → `Registry::by_user` (read) →
//!      `SessionHandle::groups`; and `Registry::groups` (read) →
//!      `Acks::state` → `Outbound::state`; and `Registry::groups` →
//!      `Presence::groups`; and `Registry::by_user` → `Presence::watches`
//!      → `Outbound::state`.
//!   2. `SessionHandle::rooms` → `RoomIndex::rooms` → `Room::gate` →
//!      `Room::members` → `SubRoom::sessions` → `Outbound::state`.
//! - The chains never nest into each other: `Registry::unregister` releases
//!   the group index before it takes `SessionHandle::rooms`.
//! - At most one `SubRoom::sessions` is held at a time.
//!
//! Where two are held at once:
//!
//! - `Registry::groups` → `SessionHandle::groups`: `Registry::unregister`,
//!   `Registry::index_locked` (from `index_groups_at` and
//!   `add_group_members`) and `Registry::remove_group_members`.
//! - `Registry::groups` (write) → `Registry::by_user` (read):
//!   `Registry::remove_group_members` looks the users' sessions up under the
//!   index lock (`add_group_members` looks them up before taking it).
//! - `Registry::groups` (read) → `Outbound::state`: the inline path of
//!   `ShardWorker::deliver_to_group` calls `SessionHandle::deliver` inside
//!   `Registry::with_group`. (A group lane snapshots the sessions first.)
//! - `Registry::by_user` → `Presence::watches` → `Outbound::state`:
//!   `Registry::register` and `unregister` tell watchers of a user's first
//!   and last session under the write lock, `Registry::watch_presence`
//!   answers a watch under the read lock, so no event overtakes an answer
//!   or another event.
//! - `Registry::groups` (write) → `Presence::groups`: the group index
//!   changes (`index_locked`, `unregister`, `remove_group_members`) count
//!   members' sessions in the group's online log after releasing
//!   `SessionHandle::groups`.
//! - `Acks::state` → `Outbound::state`: `SessionHandle::deliver` queues the
//!   push or notify it decided on under the in-flight lock, and the session
//!   task queues resends and fresh notifies under it too
//!   (`Session::on_reliable_timer`, `Session::on_push_ack`).
//! - `SessionHandle::rooms` → `RoomIndex::rooms` → `Room::members` →
//!   `SubRoom::sessions`: `Registry::join_room` (→ `RoomIndex::join` →
//!   `Room::join`) and `Registry::unregister` (→ `RoomIndex::leave` →
//!   `Room::leave`). `Registry::leave_room` releases `SessionHandle::rooms`
//!   before `RoomIndex::leave`; `RoomIndex::join` releases the map before
//!   `Room::join`.
//! - `RoomIndex::rooms` (write) → `Room::members`: `RoomIndex::leave` →
//!   `Room::close_if_empty`.
//! - `Room::gate` (read) → `Room::members`, then `Room::gate` (read) →
//!   `SubRoom::sessions` → `Outbound::state`: `Room::deliver` on a fanout
//!   thread (`members` only long enough to copy the sub-room list; each
//!   sub-room's list while its sessions are queued to, in `deliver_to`).
//! - `Room::members` → `SubRoom::sessions`: `Room::join`, `Room::leave` and
//!   `Room::try_merge` (which empties and releases the `from` list before it
//!   takes the `into` list).
//! - **The one exception to the order:** `Room::try_merge` holds
//!   `Room::members` and then *tries* `Room::gate` for writing
//!   (`try_write`), the reverse of `Room::deliver`. It never waits: a merge
//!   is skipped while a frame is being delivered and retried by
//!   `Room::run_turn` once the backlog is empty. So it cannot deadlock;
//!   never turn that `try_write` into a blocking `write`.
//!
//! Leaves, under which no other lock is taken: `Outbound::state`
//! (`Outbound::push` releases it before waking the writer, and an overflow
//! kicks the session only after `push` returned), `Registry::by_user`,
//! `SessionHandle::groups`, `Room::flow` (held while the room is queued on
//! its fanout thread, a std channel send, and while the batch timer is
//! spawned, never with another engine lock), `Room::limiter`,
//! `UserLimits::users`, `HotCache::ring`, `HotCache::loads` and
//! `GroupLane::waiting`.
//!
//! `SessionHandle::send` may run under `Registry::groups` or
//! `SubRoom::sessions` and kick a slow consumer there: that only closes the
//! queue and cancels the session's `stop` token. The session's own task
//! then unregisters it, waiting for those locks, never inside them. A
//! session task joining or leaving a room may wait for a fanout thread
//! delivering to one sub-room (at most `room_sub_room_capacity` sessions by
//! default, though a redirected join may exceed it).

mod amend;
#[cfg(feature = "bench")]
pub mod bench_support;
mod builder;
mod cluster;
mod commit;
mod config;
mod forward;
mod group_admin;
mod group_lane;
mod hooks;
mod instruction;
mod offline;
mod presence;
mod registry;
mod rooms;
mod session;
mod settings;
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

use crate::admission::PendingHandshakes;
use crate::auth::Authenticator;
use crate::cluster::{ClusterBus, Control};
use crate::directory::SessionDirectory;
use crate::error::EngineError;
use crate::fanout::FanoutPolicy;
use crate::ids::{ChannelId, ConversationId, DeviceId, MessageIdGenerator, UserId};
use crate::pb;
use crate::sequencer::Sequencer;
use crate::store::Store;
use crate::transport::Connection;

pub use builder::EngineBuilder;
pub use cluster::ClusterInbound;
pub use config::{EngineConfig, KickPolicy};
pub use forward::ForwardedOutcomes;
pub use group_admin::{GroupActor, GroupChange, MAX_GROUP_ACTION_USERS, SYSTEM_SENDER};
pub use instruction::MAX_INSTRUCTION_KIND_BYTES;
pub use settings::{MAX_BLOCKED_USERS, MAX_PINNED_CONVERSATIONS};
pub use shard::SendReceipt;
pub(crate) use wire::error_code;

use registry::Registry;
use session::QueuedFrames;
use shard::{PendingSend, Reply, ShardCommand};

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
    /// The cluster bus (`None` on a single node).
    pub(crate) cluster: Option<Arc<dyn ClusterBus>>,
    pub(crate) registry: Registry,
    pub(crate) ids: MessageIdGenerator,
    pub(crate) next_session: AtomicU64,
    pub(crate) shutdown: CancellationToken,
    pub(crate) sessions: TaskTracker,
    /// Connections that have not authenticated yet.
    pub(crate) handshakes: PendingHandshakes,
    /// Bounds and resend schedule of `push_acks` sessions (from the config).
    pub(crate) in_flight: session::InFlightConfig,
    /// The host's hooks (pre-send, room join, calls, session events).
    pub(crate) hooks: hooks::Hooks,
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

impl Engine {
    /// Starts building an engine on a store.
    pub fn builder(store: Arc<dyn Store>) -> EngineBuilder {
        EngineBuilder::new(store)
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

    /// Up to `limit` members of `group` online on this process, sorted by
    /// id, after `after` (from the first when `None`); true if more follow.
    /// The same list `GroupOnline` pages through.
    pub fn online_members(
        &self,
        group: &ChannelId,
        after: Option<&UserId>,
        limit: usize,
    ) -> (Vec<UserId>, bool) {
        self.inner
            .shared
            .registry
            .presence()
            .online_members(group, after, limit)
    }

    /// Creates a group with its first members.
    ///
    /// Errors: [`StoreError::AlreadyExists`](crate::StoreError::AlreadyExists)
    /// (as [`EngineError::Store`]) if the group exists, and nothing changes;
    /// any other store failure as [`EngineError::Store`] (see
    /// [`EngineError::is_retryable`]).
    pub async fn create_group(
        &self,
        group: &ChannelId,
        members: &[UserId],
    ) -> Result<(), EngineError> {
        self.inner.shared.store.create_group(group, members).await?;
        self.inner.shared.registry.add_group_members(group, members);
        self.invalidate_group(group).await;
        self.tell_cluster(|| Control::GroupChanged {
            group: group.clone(),
            added: members.to_vec(),
            removed: Vec::new(),
        });
        Ok(())
    }

    /// Adds members to a group; their live sessions start receiving it at once.
    /// Users already in it are ignored.
    ///
    /// Errors: [`StoreError::NotFound`](crate::StoreError::NotFound) (as
    /// [`EngineError::Store`]) if the group does not exist; any other store
    /// failure as [`EngineError::Store`].
    pub async fn add_members(
        &self,
        group: &ChannelId,
        users: &[UserId],
    ) -> Result<(), EngineError> {
        self.inner.shared.store.add_members(group, users).await?;
        self.inner.shared.registry.add_group_members(group, users);
        self.invalidate_group(group).await;
        self.tell_cluster(|| Control::GroupChanged {
            group: group.clone(),
            added: users.to_vec(),
            removed: Vec::new(),
        });
        Ok(())
    }

    /// Removes members from a group; their live sessions stop receiving it at once.
    /// Users not in it, or a group that does not exist, are no error.
    ///
    /// Errors: a store failure as [`EngineError::Store`].
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
        self.tell_cluster(|| Control::GroupChanged {
            group: group.clone(),
            added: Vec::new(),
            removed: users.to_vec(),
        });
        Ok(())
    }

    /// Commits a message as `sender` without membership checks (system
    /// messages, bots, imports), from device `host`. With an
    /// `idempotency_key`, a retry returns the original receipt, and clients
    /// see the key as the message's `client_msg_id` (empty without one).
    ///
    /// Errors: [`EngineError::ShuttingDown`] once [`Engine::shutdown`] has
    /// begun (nothing is committed); [`EngineError::InvalidRequest`] for a
    /// body over [`EngineConfig::max_body_bytes`]; [`EngineError::InvalidId`]
    /// for an empty or malformed key;
    /// [`StoreError::NotFound`](crate::StoreError::NotFound) (as
    /// [`EngineError::Store`]) for a group that does not exist; any other
    /// store failure as [`EngineError::Store`].
    pub async fn send_as(
        &self,
        conversation: ConversationId,
        sender: UserId,
        body: Bytes,
        idempotency_key: Option<String>,
    ) -> Result<SendReceipt, EngineError> {
        self.refuse_after_shutdown()?;
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
            content_type: crate::store::ContentType::Text,
            event: None,
            check_membership: false,
            reply: Reply::Host(tx),
        })
        .await?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Disconnects every session of a user with a `Kicked` frame; returns
    /// how many were on this node (0 for a user with none; never an error).
    /// In a cluster the other nodes are told to kick theirs too.
    pub fn kick_user(&self, user: &UserId, detail: &str) -> usize {
        self.tell_cluster(|| Control::KickUser {
            user: user.clone(),
            detail: detail.to_owned(),
        });
        self.kick_local(user, detail)
    }

    /// Stops accepting, lets in-flight sends commit and be acked, then closes
    /// every session with `Kicked{SHUTDOWN}`. From here on the host commits
    /// ([`Engine::send_as`], [`Engine::recall`], [`Engine::edit`]) answer
    /// [`EngineError::ShuttingDown`].
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

    /// [`EngineError::ShuttingDown`] once [`Engine::shutdown`] has begun:
    /// a host commit (send, recall, edit) asked after that is refused
    /// rather than committed behind the drain.
    pub(crate) fn refuse_after_shutdown(&self) -> Result<(), EngineError> {
        if self.inner.shared.shutdown.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        Ok(())
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Hands a send to the node that commits it: a shard here or, when a
    /// cluster bus routes it to another owner, that node.
    pub(crate) async fn submit(&self, send: PendingSend) -> Result<(), EngineError> {
        if let Some(bus) = &self.inner.shared.cluster
            && let Some(owner) = bus.remote_owner(&send.conversation)
        {
            self.forward_to_owner(&**bus, owner, send);
            return Ok(());
        }
        self.submit_here(send).await
    }

    /// Hands a send to its shard here.
    pub(crate) async fn submit_here(&self, send: PendingSend) -> Result<(), EngineError> {
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

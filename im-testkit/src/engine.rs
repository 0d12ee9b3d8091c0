//! The engine-level model test: random sequences of client actions over
//! real sessions (an [`Engine`] served over TCP on 127.0.0.1), checked
//! against a reference model of the contract.
//!
//! Actions: connect (a second connect of a device replaces the first),
//! disconnect, send, pipelined bursts (with an in-flight retry), retry of an
//! acked send (also after reconnecting), send-then-drop-the-connection and
//! retry, ack, read, pull, sync, list, join and leave a room, and host
//! membership changes. After every action the answers are compared with the
//! model; pushes are collected continuously. At the end of each case every
//! session's pushes are checked for completeness, and every conversation is
//! pulled, every inbox synced and every conversation list read in full.
//!
//! What is checked (DESIGN §4):
//! - **no acked message lost, no duplicates, gap-free order**: every ack's
//!   seq is head + 1; a retry returns the original seq and message id and
//!   creates nothing; pulling `(0, head]` equals the model's list; inboxes
//!   hold every entry once with versions 1, 2, 3, …; pushes arrive once
//!   each, in seq order per conversation, with the committed content;
//! - **unread counts**: `min(count, 99)` plus `unread_more`, in `ReadAck`
//!   and the conversation list, with heads and cursors;
//! - **authorization**: sends, pulls, acks and reads by non-members are
//!   refused with `FORBIDDEN`, the same for a group that does not exist (a
//!   non-member cannot tell the two apart), and no session receives a push
//!   for a conversation it may not see.
//!
//! The host's seams: [`EngineModelConfig::seams`] builds the engine with a
//! host's own fanout policy, sequencer and session directory
//! ([`EngineSeams`]), and the model takes its expectations from the policy
//! the engine actually uses: inbox entries (sync, `Connected.inbox_version`)
//! exist for direct chats (both participants) and for groups the policy
//! plans as [`Diffusion::Write`], asked as the engine asks it (kind group,
//! `member_count` the group's current member count, `online_sessions` 0);
//! rooms never have them. A sequencer may answer stale heads (the store
//! fences them); a directory changes nothing the model checks.
//!
//! The universe: users `alice`, `bob`, `carol`, `dave`, each with devices
//! `phone` and `laptop`; group `g0` starts as {alice, bob, carol}, `g1` as
//! {bob, dave}, `g2` never exists; rooms `r0`, `r1`.
//!
//! Stores must keep at least 10,000 inbox entries and every message the
//! model writes (a few hundred small ones per case, far inside the bundled
//! stores' defaults): the model does not simulate retention.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use im_core::fanout::{Diffusion, FanoutInput};
use im_core::ids::{ChannelId, ConversationId, Seq, UserId};
use im_core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_core::{
    ConversationKind, DefaultFanoutPolicy, Engine, EngineBuilder, EngineConfig, EngineError,
    FanoutPolicy, Sequencer, SessionDirectory, Store, StoreError,
};
use im_transport_tcp::client::{Client, ClientError, direct, group, room};
use im_transport_tcp::{TcpConfig, TcpServer};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

use crate::model::{check_ranked_prefix, proptest_config, report};

/// Users of the universe.
pub const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
/// Devices each user may connect from.
pub const DEVICES: [&str; 2] = ["phone", "laptop"];
/// Groups: `g0` and `g1` exist, `g2` never does.
pub const GROUPS: [&str; 3] = ["g0", "g1", "g2"];
/// Rooms.
pub const ROOMS: [&str; 2] = ["r0", "r1"];

/// Initial members of the existing groups.
fn initial_groups() -> BTreeMap<String, BTreeSet<String>> {
    BTreeMap::from([
        (
            "g0".to_owned(),
            ["alice", "bob", "carol"].map(str::to_owned).into(),
        ),
        ("g1".to_owned(), ["bob", "dave"].map(str::to_owned).into()),
    ])
}

/// How long to wait for something that must happen (a push the model says
/// is due, an answer). Waits end as soon as it happens, so this bound only
/// costs time when the engine is wrong; it is generous because CI runs many
/// test binaries at once on two cores.
const WAIT: Duration = Duration::from_secs(10);
/// Unread counts are exact to this, then "99+".
const UNREAD_EXACT_MAX: u64 = 99;
/// Request ids the harness picks itself (for requests answered out of band).
const OWN_REQUEST_IDS: u64 = 1 << 48;

/// A conversation as the acting user names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The direct conversation with this user (possibly oneself).
    Direct(&'static str),
    /// A group.
    Group(&'static str),
    /// A room.
    Room(&'static str),
}

impl Target {
    fn wire(self) -> pb::ConversationRef {
        match self {
            Target::Direct(peer) => direct(peer),
            Target::Group(g) => group(g),
            Target::Room(r) => room(r),
        }
    }

    fn conversation(self, viewer: &str) -> ConversationId {
        match self {
            Target::Direct(peer) => ConversationId::direct(uid(viewer), uid(peer)),
            Target::Group(g) => ConversationId::Group(cid(g)),
            Target::Room(r) => ConversationId::Room(cid(r)),
        }
    }
}

/// One action of the engine model. `user`/`device` name the acting session
/// (connected first if it is not).
#[derive(Debug, Clone)]
pub enum EngineOp {
    /// Connect the device (replacing its live session, if any).
    Connect {
        /// User.
        user: &'static str,
        /// Device.
        device: &'static str,
    },
    /// Close the device's session.
    Disconnect {
        /// User.
        user: &'static str,
        /// Device.
        device: &'static str,
    },
    /// Send one message with a fresh client message id.
    Send {
        /// User.
        user: &'static str,
        /// Device.
        device: &'static str,
        /// Where.
        to: Target,
    },
    /// Send `count` messages without waiting between them; optionally resend
    /// the first one's client message id while they are in flight.
    Burst {
        /// User.
        user: &'static str,
        /// Device.
        device: &'static str,
        /// Where.
        to: Target,
        /// How many.
        count: u8,
        /// Also retry the first one in the same burst.
        retry_first: bool,
    },
    /// Resend an earlier acked send of this device (picked by index).
    Retry {
        /// User.
        user: &'static str,
        /// Device.
        device: &'static str,
        /// Which earlier send.
        pick: u8,
    },
    /// Send, close the connection without reading the ack, reconnect and
    /// retry: exactly one message must result.
    SendThenDrop {
        /// User.
        user: &'static str,
        /// Device.
        device: &'static str,
        /// Where (direct or group; a room falls back to a plain send).
        to: Target,
    },
    /// Move the delivered cursor (seq picked in `0..=head + 1`).
    Ack {
        /// User.
        user: &'static str,
        /// Device.
        device: &'static str,
        /// Where.
        to: Target,
        /// Seq pick.
        pick: u8,
    },
    /// Move the read cursor (seq picked in `0..=head + 1`).
    Read {
        /// User.
        user: &'static str,
        /// Device.
        device: &'static str,
        /// Where.
        to: Target,
        /// Seq pick.
        pick: u8,
    },
    /// Pull after a seq picked in `0..=head + 1`, with a small limit (0: the
    /// server default).
    Pull {
        /// User.
        user: &'static str,
        /// Device.
        device: &'static str,
        /// Where.
        to: Target,
        /// After pick.
        after: u8,
        /// Limit (mod 9).
        limit: u8,
    },
    /// Sync the inbox from this device's last synced version (or from 0).
    Sync {
        /// User.
        user: &'static str,
        /// Device.
        device: &'static str,
        /// Start over from version 0.
        from_zero: bool,
    },
    /// List conversations.
    List {
        /// User.
        user: &'static str,
        /// Device.
        device: &'static str,
    },
    /// Join a room.
    JoinRoom {
        /// User.
        user: &'static str,
        /// Device.
        device: &'static str,
        /// Room.
        room: &'static str,
    },
    /// Leave a room.
    LeaveRoom {
        /// User.
        user: &'static str,
        /// Device.
        device: &'static str,
        /// Room.
        room: &'static str,
    },
    /// The host adds a member to a group.
    AddMember {
        /// Group.
        group: &'static str,
        /// User.
        user: &'static str,
    },
    /// The host removes a member from a group.
    RemoveMember {
        /// Group.
        group: &'static str,
        /// User.
        user: &'static str,
    },
}

/// Strategies for engine actions.
pub mod strategies {
    use super::*;

    /// A user of [`USERS`].
    pub fn arb_user() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(&USERS[..])
    }

    /// A device of [`DEVICES`].
    pub fn arb_device() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(&DEVICES[..])
    }

    /// A group of [`GROUPS`].
    pub fn arb_group() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(&GROUPS[..])
    }

    /// A room of [`ROOMS`].
    pub fn arb_room() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(&ROOMS[..])
    }

    /// A conversation target.
    pub fn arb_target() -> impl Strategy<Value = Target> {
        prop_oneof![
            3 => arb_user().prop_map(Target::Direct),
            3 => arb_group().prop_map(Target::Group),
            2 => arb_room().prop_map(Target::Room),
        ]
    }

    /// Any engine action, weighted towards sends.
    pub fn op() -> impl Strategy<Value = EngineOp> {
        let who = || (arb_user(), arb_device());
        prop_oneof![
            3 => who().prop_map(|(user, device)| EngineOp::Connect { user, device }),
            2 => who().prop_map(|(user, device)| EngineOp::Disconnect { user, device }),
            10 => (who(), arb_target())
                .prop_map(|((user, device), to)| EngineOp::Send { user, device, to }),
            3 => (who(), arb_target(), prop_oneof![9 => 2u8..6, 1 => 100u8..110], any::<bool>())
                .prop_map(|((user, device), to, count, retry_first)| EngineOp::Burst {
                    user, device, to, count, retry_first,
                }),
            3 => (who(), any::<u8>())
                .prop_map(|((user, device), pick)| EngineOp::Retry { user, device, pick }),
            2 => (who(), arb_target())
                .prop_map(|((user, device), to)| EngineOp::SendThenDrop { user, device, to }),
            2 => (who(), arb_target(), any::<u8>())
                .prop_map(|((user, device), to, pick)| EngineOp::Ack { user, device, to, pick }),
            3 => (who(), arb_target(), any::<u8>())
                .prop_map(|((user, device), to, pick)| EngineOp::Read { user, device, to, pick }),
            3 => (who(), arb_target(), any::<u8>(), any::<u8>())
                .prop_map(|((user, device), to, after, limit)| EngineOp::Pull {
                    user, device, to, after, limit,
                }),
            2 => (who(), any::<bool>())
                .prop_map(|((user, device), from_zero)| EngineOp::Sync { user, device, from_zero }),
            2 => who().prop_map(|(user, device)| EngineOp::List { user, device }),
            3 => (who(), arb_room())
                .prop_map(|((user, device), room)| EngineOp::JoinRoom { user, device, room }),
            1 => (who(), arb_room())
                .prop_map(|((user, device), room)| EngineOp::LeaveRoom { user, device, room }),
            1 => (arb_group(), arb_user()).prop_map(|(group, user)| EngineOp::AddMember { group, user }),
            1 => (arb_group(), arb_user()).prop_map(|(group, user)| EngineOp::RemoveMember { group, user }),
        ]
    }

    /// A sequence of actions.
    pub fn ops(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<EngineOp>> {
        proptest::collection::vec(op(), len)
    }
}

/// The host's seams an engine under test is built with; `None` keeps the
/// engine's default ([`DefaultFanoutPolicy`], a `CachedSequencer`,
/// `LocalDirectory`).
///
/// The fanout policy is also what the model asks, exactly as the engine
/// does, which groups get inbox entries: it must answer the same for the
/// same [`FanoutInput`] (a pure function, as the trait intends). A sequencer
/// may be stale; a directory may say anything.
#[derive(Debug, Clone, Default)]
pub struct EngineSeams {
    /// Passed to [`EngineBuilder::fanout_policy`].
    pub fanout_policy: Option<Arc<dyn FanoutPolicy>>,
    /// Passed to [`EngineBuilder::sequencer`].
    pub sequencer: Option<Arc<dyn Sequencer>>,
    /// Passed to [`EngineBuilder::session_directory`].
    pub session_directory: Option<Arc<dyn SessionDirectory>>,
}

impl EngineSeams {
    /// Sets [`EngineSeams::fanout_policy`].
    #[must_use]
    pub fn with_fanout_policy(mut self, policy: Arc<dyn FanoutPolicy>) -> Self {
        self.fanout_policy = Some(policy);
        self
    }

    /// Sets [`EngineSeams::sequencer`].
    #[must_use]
    pub fn with_sequencer(mut self, sequencer: Arc<dyn Sequencer>) -> Self {
        self.sequencer = Some(sequencer);
        self
    }

    /// Sets [`EngineSeams::session_directory`].
    #[must_use]
    pub fn with_session_directory(mut self, directory: Arc<dyn SessionDirectory>) -> Self {
        self.session_directory = Some(directory);
        self
    }

    /// The builder with these seams set.
    pub fn apply(&self, mut builder: EngineBuilder) -> EngineBuilder {
        if let Some(p) = &self.fanout_policy {
            builder = builder.fanout_policy(p.clone());
        }
        if let Some(s) = &self.sequencer {
            builder = builder.sequencer(s.clone());
        }
        if let Some(d) = &self.session_directory {
            builder = builder.session_directory(d.clone());
        }
        builder
    }

    /// The fanout policy the engine uses with these seams.
    fn policy(&self) -> Arc<dyn FanoutPolicy> {
        self.fanout_policy
            .clone()
            .unwrap_or_else(|| Arc::new(DefaultFanoutPolicy::default()))
    }
}

/// Makes the [`EngineSeams`] of one case's engine.
pub type SeamsFactory = Arc<dyn Fn() -> EngineSeams + Send + Sync>;

/// Settings of [`run_model`].
#[derive(Clone)]
pub struct EngineModelConfig {
    /// Random action sequences to run (`PROPTEST_CASES` overrides it).
    pub cases: u32,
    /// Most actions per sequence.
    pub max_ops: usize,
    /// The engine configuration (the default suits; `shutdown_grace` is
    /// shortened).
    pub engine: EngineConfig,
    /// The host's seams, made afresh for each case (each case runs on a
    /// fresh store, so a sequencer's or directory's state must not outlive
    /// it; share what is stateless, such as a policy, through the closure).
    /// `None`: the engine's defaults.
    pub seams: Option<SeamsFactory>,
}

impl std::fmt::Debug for EngineModelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineModelConfig")
            .field("cases", &self.cases)
            .field("max_ops", &self.max_ops)
            .field("engine", &self.engine)
            .field("seams", &self.seams.as_ref().map(|_| "Fn() -> EngineSeams"))
            .finish()
    }
}

impl Default for EngineModelConfig {
    fn default() -> Self {
        Self {
            cases: 16,
            max_ops: 40,
            engine: EngineConfig::default(),
            seams: None,
        }
    }
}

impl EngineModelConfig {
    /// Sets [`EngineModelConfig::cases`].
    #[must_use]
    pub fn with_cases(mut self, cases: u32) -> Self {
        self.cases = cases;
        self
    }

    /// Sets [`EngineModelConfig::max_ops`].
    #[must_use]
    pub fn with_max_ops(mut self, max_ops: usize) -> Self {
        self.max_ops = max_ops;
        self
    }

    /// Sets [`EngineModelConfig::seams`]: `make` is called once per case.
    #[must_use]
    pub fn with_seams(mut self, make: impl Fn() -> EngineSeams + Send + Sync + 'static) -> Self {
        self.seams = Some(Arc::new(make));
        self
    }
}

/// Runs `cfg.cases` random action sequences, each against a fresh engine on
/// a fresh store from `factory`, served over TCP on 127.0.0.1; panics with
/// the shrunk failing sequence.
///
/// Synchronous: it builds its own single-threaded Tokio runtime (so a push
/// enqueued with an ack is deterministically enqueued before the next
/// action), so call it from a plain `#[test]`.
pub fn run_model<F, Fut>(factory: F, cfg: EngineModelConfig)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime for the engine model");
    let mut runner = TestRunner::new(proptest_config(cfg.cases));
    let max_ops = cfg.max_ops.max(2);
    let result = runner.run(&strategies::ops(1..max_ops), |ops| {
        rt.block_on(async {
            let store = factory().await;
            let seams = cfg.seams.as_ref().map(|make| make()).unwrap_or_default();
            check_engine_against_model_with_seams(store, cfg.engine.clone(), &seams, &ops).await
        })
        .map_err(TestCaseError::fail)
    });
    report(result, "engine model");
}

/// Runs one action sequence against an engine on `store` (which must be
/// empty) and the model; `Err` describes the first disagreement.
pub async fn check_engine_against_model(
    store: Arc<dyn Store>,
    config: EngineConfig,
    ops: &[EngineOp],
) -> Result<(), String> {
    check_engine_against_model_with_seams(store, config, &EngineSeams::default(), ops).await
}

/// [`check_engine_against_model`] with the host's seams: the engine is built
/// with them, and the model expects inbox entries as their fanout policy
/// plans them.
pub async fn check_engine_against_model_with_seams(
    store: Arc<dyn Store>,
    mut config: EngineConfig,
    seams: &EngineSeams,
    ops: &[EngineOp],
) -> Result<(), String> {
    config.shutdown_grace = Duration::from_millis(500);
    let engine = seams
        .apply(Engine::builder(store))
        .config(config)
        .insecure_dev_auth()
        .build()
        .map_err(|e| format!("engine: {e}"))?;
    let tcp = TcpServer::bind("127.0.0.1:0", TcpConfig::default())
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let addr = tcp.local_addr().map_err(|e| format!("addr: {e}"))?;
    tcp.serve(engine.clone());
    let mut h = Harness::new(engine.clone(), addr, seams.policy());
    let result = h.run(ops).await;
    for (_, s) in std::mem::take(&mut h.sessions) {
        let _ = s.client.close().await;
    }
    engine.shutdown().await;
    result
}

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap_or_else(|e| panic!("user id {s:?}: {e}"))
}

fn cid(s: &str) -> ChannelId {
    ChannelId::new(s).unwrap_or_else(|e| panic!("channel id {s:?}: {e}"))
}

fn err(e: ClientError) -> String {
    e.to_string()
}

/// What the reason of a client's refusal in a group says, existing or not:
/// the same words either way, so a non-member cannot probe group names.
fn group_refusal(conv: &ConversationId) -> Option<String> {
    matches!(conv, ConversationId::Group(_)).then(|| format!("not a member of {conv}"))
}

/// Is `e` the refusal expected in `conv`: the code, not retryable, and in a
/// group a reason that says "not a member of group:…" (sends prefix it with
/// the error kind, reads do not).
fn is_refusal(e: &pb::Error, code: pb::ErrorCode, conv: &ConversationId) -> bool {
    e.code == code as i32
        && !e.retryable
        && group_refusal(conv).is_none_or(|reason| e.reason.contains(&reason))
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(format!($($arg)*));
        }
    };
}

/// A committed message in the model.
#[derive(Debug, Clone)]
struct Msg {
    seq: Seq,
    message_id: u64,
    sender: String,
    device: String,
    client_msg_id: String,
    body: Bytes,
}

/// An acked send, for retries.
#[derive(Debug, Clone)]
struct Sent {
    to: Target,
    conversation: ConversationId,
    client_msg_id: String,
    body: Bytes,
    seq: Seq,
    message_id: u64,
}

type Key = (&'static str, &'static str);

/// What may a session do in a conversation?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Allowed,
    /// Not a participant or member, or no such group: a client is answered
    /// the same either way, so group names cannot be probed.
    Forbidden,
}

impl Access {
    fn code(self) -> Option<pb::ErrorCode> {
        match self {
            Access::Allowed => None,
            Access::Forbidden => Some(pb::ErrorCode::Forbidden),
        }
    }
}

/// The model's view of the engine and its store.
#[derive(Default)]
struct Model {
    convs: HashMap<ConversationId, Vec<Msg>>,
    /// Commit counter of each conversation's newest message.
    activity: HashMap<ConversationId, u64>,
    clock: u64,
    inbox: HashMap<String, Vec<(ConversationId, Seq)>>,
    /// (delivered, read) per (user, conversation).
    cursors: HashMap<(String, ConversationId), (Seq, Seq)>,
    groups: BTreeMap<String, BTreeSet<String>>,
}

impl Model {
    fn head(&self, c: &ConversationId) -> Seq {
        self.convs.get(c).map_or(0, |m| m.len() as Seq)
    }

    fn msg(&self, c: &ConversationId, seq: Seq) -> Option<&Msg> {
        let i = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.convs.get(c)?.get(i)
    }

    fn unread(&self, user: &str, c: &ConversationId) -> u64 {
        let read = self.cursor(user, c).1;
        self.convs.get(c).map_or(0, |msgs| {
            msgs.iter()
                .filter(|m| m.seq > read && m.sender != user)
                .count() as u64
        })
    }

    fn cursor(&self, user: &str, c: &ConversationId) -> (Seq, Seq) {
        self.cursors
            .get(&(user.to_owned(), c.clone()))
            .copied()
            .unwrap_or_default()
    }

    /// Conversations the user lists, with activity ranks.
    fn listed(&self, user: &str) -> Vec<(ConversationId, u64)> {
        let u = uid(user);
        let mut out: Vec<(ConversationId, u64)> = self
            .convs
            .keys()
            .filter(|c| c.is_direct_participant(&u))
            .map(|c| (c.clone(), self.activity.get(c).copied().unwrap_or(0)))
            .collect();
        for (g, members) in &self.groups {
            if members.contains(user) {
                let c = ConversationId::Group(cid(g));
                let rank = self.activity.get(&c).copied().unwrap_or(0);
                out.push((c, rank));
            }
        }
        out
    }

    /// Checks a wire message against the committed one.
    fn check_message(&self, viewer: &str, m: &pb::Message, what: &str) -> Result<(), String> {
        let conv = m
            .conversation
            .as_ref()
            .ok_or_else(|| format!("{what}: message without conversation"))
            .and_then(|r| {
                ConversationId::from_wire(&uid(viewer), r).map_err(|e| format!("{what}: {e}"))
            })?;
        let Some(want) = self.msg(&conv, m.seq) else {
            return Err(format!(
                "{what}: {viewer} got {conv} seq {} which was never committed (head {})",
                m.seq,
                self.head(&conv)
            ));
        };
        ensure!(
            m.message_id == want.message_id
                && m.sender_user == want.sender
                && m.sender_device == want.device
                && m.client_msg_id == want.client_msg_id
                && m.body == want.body,
            "{what}: {viewer} got {conv} seq {} as {m:?}, committed as {want:?}",
            m.seq
        );
        Ok(())
    }
}

/// One live session in the harness.
struct SessionState {
    client: Client,
    rooms: HashSet<String>,
    /// Pushes this session should (`true`) or may (`false`) get.
    expect: HashMap<(ConversationId, Seq), bool>,
    received: HashSet<(ConversationId, Seq)>,
    last_seq: HashMap<ConversationId, Seq>,
    /// Answers to requests the harness sent without a waiter.
    orphans: Vec<pb::ServerFrame>,
}

struct Harness {
    engine: Engine,
    addr: SocketAddr,
    /// The fanout policy the engine uses.
    policy: Arc<dyn FanoutPolicy>,
    model: Model,
    sessions: BTreeMap<Key, SessionState>,
    sent: HashMap<Key, Vec<Sent>>,
    synced: HashMap<Key, u64>,
    next: u64,
}

/// Handles every frame the session got on its own so far (without waiting).
async fn drain(user: &str, s: &mut SessionState, model: &Model) -> Result<(), String> {
    loop {
        match s.client.next_event(Duration::ZERO).await {
            Ok(Some(frame)) => on_event(user, s, model, frame)?,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("{user}'s session: {e}")),
        }
    }
}

fn on_event(
    user: &str,
    s: &mut SessionState,
    model: &Model,
    frame: pb::ServerFrame,
) -> Result<(), String> {
    match frame.body {
        Some(Out::Push(p)) => {
            for m in &p.messages {
                model.check_message(user, m, "push")?;
                let conv = m
                    .conversation
                    .as_ref()
                    .map(|r| ConversationId::from_wire(&uid(user), r))
                    .and_then(Result::ok)
                    .ok_or_else(|| format!("push without a valid conversation: {m:?}"))?;
                let key = (conv.clone(), m.seq);
                // Room frames are batched off the commit path: a session that
                // joined after the commit may get them too, and may read them.
                let joined_room =
                    matches!(&conv, ConversationId::Room(r) if s.rooms.contains(r.as_str()));
                ensure!(
                    s.expect.contains_key(&key) || joined_room,
                    "{user}'s session got a push of {conv} seq {} it may not see \
                     (not authorized when committed, or committed before it joined)",
                    m.seq
                );
                ensure!(
                    s.received.insert(key),
                    "{user}'s session got {conv} seq {} pushed twice",
                    m.seq
                );
                let last = s.last_seq.entry(conv.clone()).or_default();
                ensure!(
                    m.seq > *last,
                    "{user}'s session got {conv} seq {} after seq {last}: pushes out of order",
                    m.seq
                );
                *last = m.seq;
            }
            Ok(())
        }
        Some(Out::Notify(n)) => {
            let conv = n
                .conversation
                .as_ref()
                .map(|r| ConversationId::from_wire(&uid(user), r))
                .and_then(Result::ok)
                .ok_or_else(|| format!("notify without a valid conversation: {n:?}"))?;
            let covered: Vec<(ConversationId, Seq)> = s
                .expect
                .keys()
                .filter(|(c, q)| *c == conv && *q <= n.head_seq)
                .cloned()
                .collect();
            let joined_room =
                matches!(&conv, ConversationId::Room(r) if s.rooms.contains(r.as_str()));
            ensure!(
                !covered.is_empty() || joined_room,
                "{user}'s session got a notify for {conv} it may not see"
            );
            s.received.extend(covered);
            Ok(())
        }
        Some(Out::Kicked(k)) => Err(format!("{user}'s session was kicked unexpectedly: {k:?}")),
        Some(Out::Error(e)) if frame.request_id == 0 => {
            Err(format!("{user}'s session got an unsolicited error: {e:?}"))
        }
        _ => {
            s.orphans.push(frame);
            Ok(())
        }
    }
}

/// Pings (everything queued before the pong has arrived once it has), then
/// checks that every push the session must get arrived.
async fn barrier(user: &str, s: &mut SessionState, model: &Model) -> Result<(), String> {
    s.client
        .ping()
        .await
        .map_err(|e| format!("{user}: ping: {e}"))?;
    drain(user, s, model).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut missing: Vec<&(ConversationId, Seq)> = s
            .expect
            .iter()
            .filter(|(k, must)| **must && !s.received.contains(*k))
            .map(|(k, _)| k)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            missing.sort();
            return Err(format!(
                "{user}'s session never got pushes it was online and authorized for: {missing:?}"
            ));
        }
        match s
            .client
            .next_event(left.min(Duration::from_millis(100)))
            .await
        {
            Ok(Some(f)) => on_event(user, s, model, f)?,
            Ok(None) => {}
            Err(e) => return Err(format!("{user}'s session: {e}")),
        }
    }
}

impl Harness {
    fn new(engine: Engine, addr: SocketAddr, policy: Arc<dyn FanoutPolicy>) -> Self {
        Self {
            engine,
            addr,
            policy,
            model: Model::default(),
            sessions: BTreeMap::new(),
            sent: HashMap::new(),
            synced: HashMap::new(),
            next: 0,
        }
    }

    fn fresh(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    async fn run(&mut self, ops: &[EngineOp]) -> Result<(), String> {
        for (g, members) in initial_groups() {
            let users: Vec<UserId> = members.iter().map(|u| uid(u)).collect();
            self.engine
                .create_group(&cid(&g), &users)
                .await
                .map_err(|e| format!("create group {g}: {e}"))?;
            self.model.groups.insert(g, members);
        }
        for (i, op) in ops.iter().enumerate() {
            self.step(op)
                .await
                .map_err(|e| format!("step {i} ({op:?}): {e}"))?;
            for ((user, _), s) in self.sessions.iter_mut() {
                drain(user, s, &self.model)
                    .await
                    .map_err(|e| format!("after step {i} ({op:?}): {e}"))?;
            }
        }
        self.audit()
            .await
            .map_err(|e| format!("final audit after {} steps: {e}", ops.len()))
    }

    fn access(&self, key: Key, conv: &ConversationId) -> Access {
        match conv {
            ConversationId::Direct(..) => {
                if conv.is_direct_participant(&uid(key.0)) {
                    Access::Allowed
                } else {
                    Access::Forbidden
                }
            }
            ConversationId::Group(g) => match self.model.groups.get(g.as_str()) {
                Some(m) if m.contains(key.0) => Access::Allowed,
                // A missing group is answered like one the user is not in.
                Some(_) | None => Access::Forbidden,
            },
            ConversationId::Room(r) => {
                if self
                    .sessions
                    .get(&key)
                    .is_some_and(|s| s.rooms.contains(r.as_str()))
                {
                    Access::Allowed
                } else {
                    Access::Forbidden
                }
            }
        }
    }

    async fn connect(&mut self, key: Key) -> Result<(), String> {
        self.connect_with(key, false).await
    }

    /// Connects; `in_flight` allows one more inbox entry than the model has
    /// (a dropped send that may have committed already).
    async fn connect_with(&mut self, key: Key, in_flight: bool) -> Result<(), String> {
        let (user, device) = key;
        let mut client = Client::connect(self.addr, &format!("{user}:{device}"), device)
            .await
            .map_err(|e| format!("connect {user}:{device}: {e}"))?;
        client.timeout = WAIT;
        let want = self.model.inbox.get(user).map_or(0, Vec::len) as u64;
        let got = client.connected.inbox_version;
        ensure!(
            got == want || (in_flight && got == want + 1),
            "Connected.inbox_version is {}, the model's inbox head is {want}",
            client.connected.inbox_version
        );
        if let Some(mut old) = self.sessions.remove(&key) {
            // The old session must get everything queued before it was
            // replaced, then Kicked{REPLACED}.
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match old.client.next_event(left).await {
                    Ok(Some(pb::ServerFrame {
                        body: Some(Out::Kicked(k)),
                        ..
                    })) => {
                        ensure!(
                            k.reason == pb::KickReason::Replaced as i32,
                            "replaced session kicked with {k:?}"
                        );
                        break;
                    }
                    Ok(Some(f)) => on_event(user, &mut old, &self.model, f)?,
                    Ok(None) => return Err("the replaced session was not kicked".to_owned()),
                    Err(e) => {
                        return Err(format!("the replaced session closed without Kicked: {e}"));
                    }
                }
            }
            let missing: Vec<_> = old
                .expect
                .iter()
                .filter(|(k, must)| **must && !old.received.contains(*k))
                .map(|(k, _)| k.clone())
                .collect();
            ensure!(
                missing.is_empty(),
                "the replaced session never got pushes it was due before the kick: {missing:?}"
            );
        }
        self.sessions.insert(
            key,
            SessionState {
                client,
                rooms: HashSet::new(),
                expect: HashMap::new(),
                received: HashSet::new(),
                last_seq: HashMap::new(),
                orphans: Vec::new(),
            },
        );
        Ok(())
    }

    async fn ensure_connected(&mut self, key: Key) -> Result<(), String> {
        if self.sessions.contains_key(&key) {
            Ok(())
        } else {
            self.connect(key).await
        }
    }

    async fn disconnect(&mut self, key: Key) -> Result<(), String> {
        if let Some(mut s) = self.sessions.remove(&key) {
            barrier(key.0, &mut s, &self.model).await?;
            s.client.close().await.map_err(err)?;
        }
        Ok(())
    }

    fn client(&self, key: Key) -> Result<&Client, String> {
        self.sessions
            .get(&key)
            .map(|s| &s.client)
            .ok_or_else(|| format!("{key:?} is not connected"))
    }

    /// How the engine records a group's messages: it asks the policy with
    /// the group's member count and no online sessions when it loads the
    /// group's facts, and keeps the answer until membership changes (every
    /// change here is the host's, which makes the engine ask again).
    fn group_diffusion(&self, members: &BTreeSet<String>) -> Diffusion {
        self.policy
            .plan(&FanoutInput {
                kind: ConversationKind::Group,
                member_count: members.len() as u64,
                online_sessions: 0,
            })
            .diffusion
    }

    /// Records a committed message: timeline, inboxes, activity, and which
    /// live sessions must (or, for `may`, might) get it pushed.
    fn commit(&mut self, conv: &ConversationId, msg: Msg, may: &[Key]) {
        self.model.clock += 1;
        self.model.activity.insert(conv.clone(), self.model.clock);
        // Inbox entries: both participants of a direct chat, whatever the
        // policy; every member of a group the policy plans as write
        // diffusion; no one for read diffusion and rooms.
        let recipients: Vec<String> = match conv {
            ConversationId::Direct(pair) => pair.participants().map(|u| u.to_string()).collect(),
            ConversationId::Group(g) => match self.model.groups.get(g.as_str()) {
                Some(m) if self.group_diffusion(m) == Diffusion::Write => {
                    m.iter().cloned().collect()
                }
                Some(_) | None => Vec::new(),
            },
            ConversationId::Room(_) => Vec::new(),
        };
        for r in recipients {
            self.model
                .inbox
                .entry(r)
                .or_default()
                .push((conv.clone(), msg.seq));
        }
        let keys: Vec<Key> = self.sessions.keys().copied().collect();
        for key in keys {
            if self.access(key, conv) == Access::Allowed
                && let Some(s) = self.sessions.get_mut(&key)
            {
                s.expect
                    .insert((conv.clone(), msg.seq), !may.contains(&key));
            }
        }
        self.model.convs.entry(conv.clone()).or_default().push(msg);
    }

    fn check_ack(
        &self,
        ack: &pb::SendAck,
        to: Target,
        seq: Seq,
        duplicate: bool,
        client_msg_id: &str,
    ) -> Result<(), String> {
        ensure!(
            ack.seq == seq && ack.duplicate == duplicate && ack.client_msg_id == client_msg_id,
            "expected SendAck{{seq: {seq}, duplicate: {duplicate}, client_msg_id: {client_msg_id}}}, got {ack:?}"
        );
        ensure!(
            ack.conversation.as_ref() == Some(&to.wire()),
            "SendAck names {:?}, expected {:?}",
            ack.conversation,
            to.wire()
        );
        Ok(())
    }

    fn expect_error<T: std::fmt::Debug>(
        r: Result<T, ClientError>,
        code: pb::ErrorCode,
        conv: &ConversationId,
        what: &str,
    ) -> Result<(), String> {
        match r {
            Err(ClientError::Server(e)) if is_refusal(&e, code, conv) => Ok(()),
            other => Err(format!(
                "{what}: expected {code:?}{}, got {other:?}",
                group_refusal(conv)
                    .map(|r| format!(" ({r:?})"))
                    .unwrap_or_default()
            )),
        }
    }

    async fn step(&mut self, op: &EngineOp) -> Result<(), String> {
        match *op {
            EngineOp::Connect { user, device } => self.connect((user, device)).await,
            EngineOp::Disconnect { user, device } => self.disconnect((user, device)).await,
            EngineOp::Send { user, device, to } => self.send((user, device), to).await,
            EngineOp::Burst {
                user,
                device,
                to,
                count,
                retry_first,
            } => self.burst((user, device), to, count, retry_first).await,
            EngineOp::Retry { user, device, pick } => self.retry((user, device), pick).await,
            EngineOp::SendThenDrop { user, device, to } => {
                self.send_then_drop((user, device), to).await
            }
            EngineOp::Ack {
                user,
                device,
                to,
                pick,
            } => self.ack((user, device), to, pick).await,
            EngineOp::Read {
                user,
                device,
                to,
                pick,
            } => self.read((user, device), to, pick).await,
            EngineOp::Pull {
                user,
                device,
                to,
                after,
                limit,
            } => self.pull((user, device), to, after, limit).await,
            EngineOp::Sync {
                user,
                device,
                from_zero,
            } => self.sync((user, device), from_zero).await,
            EngineOp::List { user, device } => {
                self.ensure_connected((user, device)).await?;
                let list = self
                    .client((user, device))?
                    .list_conversations()
                    .await
                    .map_err(err)?;
                self.check_list(user, &list)
            }
            EngineOp::JoinRoom { user, device, room } => {
                let key = (user, device);
                self.ensure_connected(key).await?;
                let joined = self.client(key)?.join_room(room).await.map_err(err)?;
                let head = self.model.head(&ConversationId::Room(cid(room)));
                ensure!(
                    joined.room_id == room && joined.head_seq == head,
                    "RoomJoined {joined:?}, expected room {room} at head {head}"
                );
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.rooms.insert(room.to_owned());
                }
                Ok(())
            }
            EngineOp::LeaveRoom { user, device, room } => {
                let key = (user, device);
                self.ensure_connected(key).await?;
                let answer = self
                    .client(key)?
                    .request(In::LeaveRoom(pb::LeaveRoom {
                        room_id: room.to_owned(),
                    }))
                    .await
                    .map_err(err)?;
                ensure!(
                    matches!(&answer, Out::RoomLeft(l) if l.room_id == room),
                    "LeaveRoom answered {answer:?}"
                );
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.rooms.remove(room);
                    // Frames batched before the leave may or may not come.
                    for (k, must) in s.expect.iter_mut() {
                        if matches!(&k.0, ConversationId::Room(r) if r.as_str() == room) {
                            *must = false;
                        }
                    }
                }
                Ok(())
            }
            EngineOp::AddMember { group, user } => {
                let r = self.engine.add_members(&cid(group), &[uid(user)]).await;
                match (self.model.groups.get_mut(group), r) {
                    (Some(m), Ok(())) => {
                        m.insert(user.to_owned());
                        Ok(())
                    }
                    (None, Err(EngineError::Store(StoreError::NotFound(_)))) => Ok(()),
                    (exists, r) => Err(format!(
                        "add_members({group}, {user}) with the group {}: {r:?}",
                        if exists.is_some() {
                            "existing"
                        } else {
                            "missing"
                        }
                    )),
                }
            }
            EngineOp::RemoveMember { group, user } => {
                let r = self.engine.remove_members(&cid(group), &[uid(user)]).await;
                match (self.model.groups.get_mut(group), r) {
                    (Some(m), Ok(())) => {
                        m.remove(user);
                        Ok(())
                    }
                    (None, Ok(()) | Err(EngineError::Store(StoreError::NotFound(_)))) => Ok(()),
                    (exists, r) => Err(format!(
                        "remove_members({group}, {user}) with the group {}: {r:?}",
                        if exists.is_some() {
                            "existing"
                        } else {
                            "missing"
                        }
                    )),
                }
            }
        }
    }

    async fn send(&mut self, key: Key, to: Target) -> Result<(), String> {
        self.ensure_connected(key).await?;
        let conv = to.conversation(key.0);
        let n = self.fresh();
        let cmid = format!("c{n}");
        let body = Bytes::from(format!("{}/{} #{n}", key.0, key.1));
        let r = self.client(key)?.send(to.wire(), &cmid, body.clone()).await;
        match self.access(key, &conv).code() {
            Some(code) => Self::expect_error(r, code, &conv, &format!("send to {conv}")),
            None => {
                // Rate limiting (e.g. of room sends) answers without committing.
                if let Err(e) = &r
                    && e.code() == Some(pb::ErrorCode::RateLimited)
                {
                    return Ok(());
                }
                let ack = r.map_err(|e| format!("send to {conv}: {e}"))?;
                let seq = self.model.head(&conv) + 1;
                self.check_ack(&ack, to, seq, false, &cmid)?;
                self.record(key, to, &conv, &ack, cmid, body, &[key]);
                Ok(())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        key: Key,
        to: Target,
        conv: &ConversationId,
        ack: &pb::SendAck,
        client_msg_id: String,
        body: Bytes,
        may: &[Key],
    ) {
        self.commit(
            conv,
            Msg {
                seq: ack.seq,
                message_id: ack.message_id,
                sender: key.0.to_owned(),
                device: key.1.to_owned(),
                client_msg_id: client_msg_id.clone(),
                body: body.clone(),
            },
            may,
        );
        self.sent.entry(key).or_default().push(Sent {
            to,
            conversation: conv.clone(),
            client_msg_id,
            body,
            seq: ack.seq,
            message_id: ack.message_id,
        });
    }

    async fn burst(
        &mut self,
        key: Key,
        to: Target,
        count: u8,
        retry_first: bool,
    ) -> Result<(), String> {
        self.ensure_connected(key).await?;
        let conv = to.conversation(key.0);
        let mut items: Vec<(String, Bytes)> = Vec::new();
        for _ in 0..count.max(1) {
            let n = self.fresh();
            items.push((
                format!("c{n}"),
                Bytes::from(format!("{}/{} burst #{n}", key.0, key.1)),
            ));
        }
        let mut sends = items.clone();
        if retry_first {
            sends.push(items[0].clone());
        }
        let client = self.client(key)?;
        let answers = futures::future::join_all(
            sends
                .iter()
                .map(|(cmid, body)| client.send(to.wire(), cmid, body.clone())),
        )
        .await;
        if let Some(code) = self.access(key, &conv).code() {
            for r in answers {
                Self::expect_error(r, code, &conv, &format!("burst to {conv}"))?;
            }
            return Ok(());
        }
        // In send order: each acked new message takes the next seq (one
        // session's sends commit in order); a resent id returns the original;
        // rate-limited sends commit nothing.
        let mut committed: HashMap<String, pb::SendAck> = HashMap::new();
        for (i, ((cmid, body), r)) in sends.iter().zip(answers).enumerate() {
            let ack = match r {
                Ok(ack) => ack,
                Err(e) if e.code() == Some(pb::ErrorCode::RateLimited) => continue,
                Err(e) => return Err(format!("burst send {i} to {conv}: {e}")),
            };
            if let Some(orig) = committed.get(cmid) {
                self.check_ack(&ack, to, orig.seq, true, cmid)
                    .map_err(|e| format!("in-flight retry (burst send {i}): {e}"))?;
                ensure!(
                    ack.message_id == orig.message_id,
                    "in-flight retry got message id {}, the original {}",
                    ack.message_id,
                    orig.message_id
                );
                continue;
            }
            let seq = self.model.head(&conv) + 1;
            self.check_ack(&ack, to, seq, false, cmid).map_err(|e| {
                format!("burst send {i} (sends from one session commit in order): {e}")
            })?;
            self.record(key, to, &conv, &ack, cmid.clone(), body.clone(), &[key]);
            committed.insert(cmid.clone(), ack);
        }
        Ok(())
    }

    async fn retry(&mut self, key: Key, pick: u8) -> Result<(), String> {
        let Some(list) = self.sent.get(&key).filter(|l| !l.is_empty()) else {
            return Ok(());
        };
        let orig = list[usize::from(pick) % list.len()].clone();
        self.ensure_connected(key).await?;
        let r = self
            .client(key)?
            .send(orig.to.wire(), &orig.client_msg_id, orig.body.clone())
            .await;
        let access = self.access(key, &orig.conversation);
        match r {
            Ok(ack) => {
                self.check_ack(&ack, orig.to, orig.seq, true, &orig.client_msg_id)
                    .map_err(|e| format!("retry must return the original: {e}"))?;
                ensure!(
                    ack.message_id == orig.message_id,
                    "retry got message id {}, the original {}",
                    ack.message_id,
                    orig.message_id
                );
                Ok(())
            }
            // A sender who may no longer send there may be refused instead.
            Err(e) if access != Access::Allowed && e.code() == Some(pb::ErrorCode::Forbidden) => {
                Ok(())
            }
            Err(e) if e.code() == Some(pb::ErrorCode::RateLimited) => Ok(()),
            Err(e) => Err(format!(
                "retry of {} in {}: {e}",
                orig.client_msg_id, orig.conversation
            )),
        }
    }

    async fn send_then_drop(&mut self, key: Key, to: Target) -> Result<(), String> {
        let conv = to.conversation(key.0);
        self.ensure_connected(key).await?;
        if matches!(to, Target::Room(_)) || self.access(key, &conv) != Access::Allowed {
            return self.send(key, to).await;
        }
        let n = self.fresh();
        let cmid = format!("c{n}");
        let body = Bytes::from(format!("{}/{} dropped #{n}", key.0, key.1));
        let rid = OWN_REQUEST_IDS + n;
        if let Some(s) = self.sessions.remove(&key) {
            s.client
                .send_frame(&pb::ClientFrame {
                    request_id: rid,
                    body: Some(In::Send(pb::Send {
                        client_msg_id: cmid.clone(),
                        conversation: Some(to.wire()),
                        body: body.clone(),
                        ..Default::default()
                    })),
                })
                .await
                .map_err(err)?;
            // Gone without reading the ack (its pushes are not checked).
            let _ = s.client.close().await;
        }
        self.connect_with(key, true).await?;
        let ack = self
            .client(key)?
            .send(to.wire(), &cmid, body.clone())
            .await
            .map_err(|e| format!("retry after reconnect: {e}"))?;
        let seq = self.model.head(&conv) + 1;
        // Either the first attempt committed (duplicate) or the retry did.
        self.check_ack(&ack, to, seq, ack.duplicate, &cmid)
            .map_err(|e| format!("exactly one message after send, drop, retry: {e}"))?;
        self.record(key, to, &conv, &ack, cmid, body, &[key]);
        Ok(())
    }

    async fn ack(&mut self, key: Key, to: Target, pick: u8) -> Result<(), String> {
        self.ensure_connected(key).await?;
        let conv = to.conversation(key.0);
        let head = self.model.head(&conv);
        let seq = u64::from(pick) % (head + 2);
        let rid = OWN_REQUEST_IDS + self.fresh();
        let model = &self.model;
        let s = self
            .sessions
            .get_mut(&key)
            .ok_or_else(|| format!("{key:?} is not connected"))?;
        s.client
            .send_frame(&pb::ClientFrame {
                request_id: rid,
                body: Some(In::Ack(pb::Ack {
                    conversation: Some(to.wire()),
                    seq,
                })),
            })
            .await
            .map_err(err)?;
        barrier(key.0, s, model).await?;
        let answers: Vec<pb::ServerFrame> = {
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut s.orphans)
                .into_iter()
                .partition(|f| f.request_id == rid);
            s.orphans = rest;
            mine
        };
        match self.access(key, &conv).code() {
            Some(code) => {
                ensure!(
                    matches!(answers.as_slice(), [pb::ServerFrame { body: Some(Out::Error(e)), .. }] if is_refusal(e, code, &conv)),
                    "Ack in {conv}: expected {code:?}, got {answers:?}"
                );
            }
            None => {
                ensure!(answers.is_empty(), "Ack in {conv} answered {answers:?}");
                let c = self
                    .model
                    .cursors
                    .entry((key.0.to_owned(), conv))
                    .or_default();
                c.0 = c.0.max(seq.min(head));
            }
        }
        Ok(())
    }

    async fn read(&mut self, key: Key, to: Target, pick: u8) -> Result<(), String> {
        self.ensure_connected(key).await?;
        let conv = to.conversation(key.0);
        let head = self.model.head(&conv);
        let seq = u64::from(pick) % (head + 2);
        let r = self.client(key)?.read(to.wire(), seq).await;
        if let Some(code) = self.access(key, &conv).code() {
            return Self::expect_error(r, code, &conv, &format!("read in {conv}"));
        }
        let got = r.map_err(|e| format!("read in {conv}: {e}"))?;
        let c = self
            .model
            .cursors
            .entry((key.0.to_owned(), conv.clone()))
            .or_default();
        c.1 = c.1.max(seq.min(head));
        c.0 = c.0.max(c.1);
        let read_seq = c.1;
        let unread = self.model.unread(key.0, &conv);
        let want = pb::ReadAck {
            conversation: Some(to.wire()),
            read_seq,
            unread: unread.min(UNREAD_EXACT_MAX) as u32,
            unread_more: unread > UNREAD_EXACT_MAX,
        };
        ensure!(got == want, "ReadAck {got:?}, expected {want:?}");
        Ok(())
    }

    async fn pull(&mut self, key: Key, to: Target, after: u8, limit: u8) -> Result<(), String> {
        self.ensure_connected(key).await?;
        let conv = to.conversation(key.0);
        let head = self.model.head(&conv);
        let after = u64::from(after) % (head + 2);
        let limit = u32::from(limit % 9);
        let r = self.client(key)?.pull(to.wire(), after, 0, limit).await;
        if let Some(code) = self.access(key, &conv).code() {
            return Self::expect_error(r, code, &conv, &format!("pull of {conv}"));
        }
        let got = r.map_err(|e| format!("pull of {conv}: {e}"))?;
        let n = if limit == 0 { 200 } else { u64::from(limit) };
        let available = head.saturating_sub(after);
        let want: Vec<Seq> = (after + 1..=head).take(n as usize).collect();
        let seqs: Vec<Seq> = got.messages.iter().map(|m| m.seq).collect();
        ensure!(
            seqs == want,
            "pull of {conv} after {after} limit {limit}: seqs {seqs:?}, expected {want:?}"
        );
        for m in &got.messages {
            self.model.check_message(key.0, m, "pull")?;
            ensure!(
                m.conversation.as_ref() == Some(&to.wire()),
                "pulled message names {:?}",
                m.conversation
            );
        }
        ensure!(
            got.head_seq == head
                && got.has_more == (available > want.len() as u64)
                && got.history_start_seq == 0,
            "pull of {conv}: head {} has_more {} history_start {}, expected head {head} has_more {}",
            got.head_seq,
            got.has_more,
            got.history_start_seq,
            available > want.len() as u64
        );
        Ok(())
    }

    async fn sync(&mut self, key: Key, from_zero: bool) -> Result<(), String> {
        self.ensure_connected(key).await?;
        let from = if from_zero {
            0
        } else {
            self.synced.get(&key).copied().unwrap_or(0)
        };
        let got = self.client(key)?.sync(from).await.map_err(err)?;
        let inbox = self.model.inbox.get(key.0).cloned().unwrap_or_default();
        let total = inbox.len() as u64;
        let want: Vec<(u64, ConversationId, Seq)> = inbox
            .iter()
            .enumerate()
            .map(|(i, (c, q))| (i as u64 + 1, c.clone(), *q))
            .skip(from as usize)
            .take(500)
            .collect();
        let entries: Vec<(u64, ConversationId, Seq)> = got
            .entries
            .iter()
            .map(|e| {
                let c = e
                    .conversation
                    .as_ref()
                    .and_then(|r| ConversationId::from_wire(&uid(key.0), r).ok());
                c.map(|c| (e.version, c, e.seq))
                    .ok_or_else(|| format!("inbox entry without a valid conversation: {e:?}"))
            })
            .collect::<Result<_, _>>()?;
        ensure!(
            entries == want,
            "sync from {from}: entries {entries:?}, expected {want:?}"
        );
        ensure!(
            got.messages.len() == entries.len(),
            "sync from {from}: {} messages for {} entries",
            got.messages.len(),
            entries.len()
        );
        for (m, (_, c, q)) in got.messages.iter().zip(&entries) {
            self.model.check_message(key.0, m, "sync")?;
            let mc = m
                .conversation
                .as_ref()
                .and_then(|r| ConversationId::from_wire(&uid(key.0), r).ok());
            ensure!(
                mc.as_ref() == Some(c) && m.seq == *q,
                "sync messages out of step with entries"
            );
        }
        let last = from + entries.len() as u64;
        ensure!(
            got.inbox_version == total && got.has_more == (last < total) && !got.full_sync_required,
            "sync from {from}: inbox_version {} has_more {} full_sync {}, expected {total} {} false",
            got.inbox_version,
            got.has_more,
            got.full_sync_required,
            last < total
        );
        self.synced.insert(key, last);
        Ok(())
    }

    fn check_list(&self, user: &str, list: &[pb::ConversationSummary]) -> Result<(), String> {
        let viewer = uid(user);
        let mut ids = Vec::new();
        for s in list {
            let c = s
                .conversation
                .as_ref()
                .and_then(|r| ConversationId::from_wire(&viewer, r).ok())
                .ok_or_else(|| format!("list entry without a valid conversation: {s:?}"))?;
            let head = self.model.head(&c);
            let (delivered, read) = self.model.cursor(user, &c);
            let unread = self.model.unread(user, &c);
            ensure!(
                s.head_seq == head
                    && s.read_seq == read
                    && s.delivered_seq == delivered
                    && u64::from(s.unread) == unread.min(UNREAD_EXACT_MAX)
                    && s.unread_more == (unread > UNREAD_EXACT_MAX),
                "{user}'s list entry for {c}: head {} read {} delivered {} unread {} more {}, \
                 expected head {head} read {read} delivered {delivered} unread {unread}",
                s.head_seq,
                s.read_seq,
                s.delivered_seq,
                s.unread,
                s.unread_more
            );
            match (&s.last_message, head) {
                (None, 0) => {}
                (Some(m), h) if m.seq == h && h > 0 => {
                    self.model.check_message(user, m, "list last_message")?
                }
                (m, _) => {
                    return Err(format!(
                        "{user}'s list entry for {c}: last message {m:?}, head {head}"
                    ));
                }
            }
            ids.push(c);
        }
        check_ranked_prefix(&ids, &self.model.listed(user), usize::MAX)
            .map_err(|e| format!("{user}'s list: {e}"))
    }

    /// Completeness of pushes, full pulls, full syncs and lists for everyone.
    async fn audit(&mut self) -> Result<(), String> {
        for ((user, _), s) in self.sessions.iter_mut() {
            barrier(user, s, &self.model).await?;
        }
        let mut auditors: HashMap<&'static str, Client> = HashMap::new();
        for user in USERS {
            let c = Client::connect(self.addr, &format!("{user}:audit"), "audit")
                .await
                .map_err(|e| format!("audit connect: {e}"))?;
            let total = self.model.inbox.get(user).map_or(0, Vec::len) as u64;
            ensure!(
                c.connected.inbox_version == total,
                "{user}: Connected.inbox_version {} != {total}",
                c.connected.inbox_version
            );
            auditors.insert(user, c);
        }
        // Every conversation pulled in full by someone who may read it.
        let mut convs: Vec<ConversationId> = self.model.convs.keys().cloned().collect();
        convs.sort();
        for conv in convs {
            let (reader, to) = match &conv {
                ConversationId::Direct(pair) => {
                    let (a, b) = pair.users();
                    let a = USERS.iter().find(|u| **u == a.as_str()).copied();
                    let b = USERS.iter().find(|u| **u == b.as_str()).copied();
                    match (a, b) {
                        (Some(a), Some(b)) => (a, Target::Direct(b)),
                        _ => return Err(format!("{conv} is outside the universe")),
                    }
                }
                ConversationId::Group(g) => {
                    let Some(member) = self
                        .model
                        .groups
                        .get(g.as_str())
                        .and_then(|m| m.iter().next())
                        .and_then(|m| USERS.iter().find(|u| **u == m.as_str()).copied())
                    else {
                        continue;
                    };
                    let g = GROUPS.iter().find(|x| **x == g.as_str()).copied();
                    (
                        member,
                        Target::Group(g.ok_or("group outside the universe")?),
                    )
                }
                ConversationId::Room(r) => {
                    let r = ROOMS
                        .iter()
                        .find(|x| **x == r.as_str())
                        .copied()
                        .ok_or("room outside the universe")?;
                    auditors["alice"].join_room(r).await.map_err(err)?;
                    ("alice", Target::Room(r))
                }
            };
            let client = &auditors[reader];
            let head = self.model.head(&conv);
            let mut after = 0;
            let mut got = Vec::new();
            loop {
                let page = client.pull(to.wire(), after, 0, 37).await.map_err(err)?;
                for m in &page.messages {
                    self.model.check_message(reader, m, "audit pull")?;
                }
                got.extend(page.messages.iter().map(|m| m.seq));
                match page.messages.last() {
                    Some(m) if page.has_more => after = m.seq,
                    _ => break,
                }
            }
            let want: Vec<Seq> = (1..=head).collect();
            ensure!(
                got == want,
                "pull (0, head] of {conv}: {got:?}, the model committed 1..={head}"
            );
        }
        for user in USERS {
            let client = &auditors[user];
            let mut from = 0;
            let mut got = Vec::new();
            loop {
                let page = client.sync(from).await.map_err(err)?;
                ensure!(!page.full_sync_required, "{user}: full sync required");
                for e in &page.entries {
                    let c = e
                        .conversation
                        .as_ref()
                        .and_then(|r| ConversationId::from_wire(&uid(user), r).ok())
                        .ok_or("inbox entry without conversation")?;
                    got.push((e.version, c, e.seq));
                }
                match page.entries.last() {
                    Some(e) if page.has_more => from = e.version,
                    _ => break,
                }
            }
            let want: Vec<(u64, ConversationId, Seq)> = self
                .model
                .inbox
                .get(user)
                .map(|v| {
                    v.iter()
                        .enumerate()
                        .map(|(i, (c, q))| (i as u64 + 1, c.clone(), *q))
                        .collect()
                })
                .unwrap_or_default();
            ensure!(
                got == want,
                "{user}'s full inbox: {got:?}\n  expected {want:?}"
            );
            let list = client.list_conversations().await.map_err(err)?;
            self.check_list(user, &list)?;
        }
        for (_, c) in auditors {
            let _ = c.close().await;
        }
        Ok(())
    }
}

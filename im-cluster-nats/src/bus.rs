//! [`NatsBus`]: the engine's [`ClusterBus`] over core NATS, with subject
//! interest as the cross-node online index.
//!
//! A node subscribes to `im.<cluster>.user.<hex id>` while it has sessions
//! of that user, `...group.<hex id>` while it has online members of the
//! group, `...room.<hex id>` while it has members in the room. A committed
//! batch is published once per subject (a direct chat: each participant's
//! user subject; a group or room: its subject), so NATS hands it once to
//! each node with interest, never once per member. The connection is
//! `no_echo`: a node never hears its own batches (it delivered them itself).
//!
//! Sends to a conversation another node owns are forwarded to it (see
//! `forward.rs`) once the bus follows the cluster's membership
//! ([`NatsBus::route_by`]); until then every send commits where it arrives.
//!
//! Core NATS is at most once. The engine repairs a gap it sees from the
//! store; to see a lost *last* batch, the publisher repeats the head of
//! each conversation it published to a few times after (a beacon, a batch
//! with no messages) — `BEACONS` of them `BEACON_EVERY` apart.
//!
//! Traffic is counted per kind (`batch`, `beacon`, `control`) in
//! `im_cluster_bus_published_total`, `im_cluster_bus_published_bytes_total`,
//! `im_cluster_bus_received_total` and `im_cluster_bus_received_bytes_total`
//! (bytes are payload bytes), so an operator can read bus messages per
//! committed message and bus bytes per delivery.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use im_core::cluster::{
    ClusterBus, ClusterInbound, Control, ForwardError, ForwardResult, ForwardedSend, Inbound,
    Interest, NodeId, Route, route,
};
use im_core::log_limit::LogLimit;
use im_core::store::StoredMessage;
use im_core::{ConversationId, Seq};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::forward::{
    FORWARD_QUEUE, Pending, Queued, listen_answers, send_forwards, serve_forwards,
};
use crate::membership::Membership;
use crate::subjects::Subjects;
use crate::wire::{decode_batch, decode_control, encode_batch, encode_control};
use crate::{ClusterConfig, ClusterError};

/// Head beacons sent for a conversation after its last published batch.
const BEACONS: u32 = 10;
/// Time between two beacons.
const BEACON_EVERY: Duration = Duration::from_millis(200);
/// Conversations with beacons pending at once (beyond: no beacon; a gap is
/// then repaired by the conversation's next batch).
const BEACON_CONVERSATIONS: usize = 100_000;
/// Batches waiting to be published (beyond: dropped, counted, and repaired
/// by the receivers like any other loss).
const OUT_QUEUE: usize = 65_536;

/// Faults injected on the receiving side of batches and beacons. **For
/// tests only**: proves that lost and late bus messages are repaired.
/// Control commands are never faulted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusFaults {
    /// Batches and beacons dropped, per thousand received.
    pub drop_per_mille: u32,
    /// Batches and beacons held back by `delay`, per thousand received.
    pub delay_per_mille: u32,
    /// How long a held-back message waits (it may overtake others).
    pub delay: Duration,
}

/// What the publisher task sends.
enum Outgoing {
    Batch {
        conversation: ConversationId,
        head: Seq,
        payload: Bytes,
    },
    Control(Bytes),
}

/// A pending beacon: where to send it and how many are left.
struct Beacon {
    head: Seq,
    left: u32,
}

/// The state the bus's tasks share.
pub(crate) struct BusState {
    pub(crate) client: Client,
    pub(crate) subjects: Subjects,
    pub(crate) inbound: OnceLock<ClusterInbound>,
    /// This node.
    pub(crate) me: NodeId,
    /// The live nodes, once the bus follows a membership.
    live: OnceLock<watch::Receiver<Vec<NodeId>>>,
    /// How long a forwarded batch waits for its owner's answer.
    pub(crate) forward_timeout: Duration,
    /// Forwarded batches waiting for their answer.
    pub(crate) pending: Pending,
    faults: Mutex<BusFaults>,
    rng: AtomicU64,
    /// Subjects whose subscription the server has confirmed.
    listening: Mutex<HashSet<String>>,
}

/// A node's bus over NATS. Hand it to `EngineBuilder::cluster`; the engine
/// attaches itself when built.
pub struct NatsBus {
    state: Arc<BusState>,
    out: mpsc::Sender<Outgoing>,
    interest: mpsc::UnboundedSender<(Interest, bool)>,
    forwards: mpsc::Sender<Queued>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("subjects", &self.state.subjects)
            .finish_non_exhaustive()
    }
}

impl NatsBus {
    /// Connects to the cluster's NATS (its own connection, `no_echo`) and
    /// listens for control commands. Fails with the URL in the error when
    /// NATS cannot be reached; once connected, a lost NATS is reconnected to
    /// in the background (subscriptions are restored by the client).
    pub async fn connect(config: &ClusterConfig) -> Result<Arc<Self>, ClusterError> {
        let client = ConnectOptions::new()
            .name(format!("im-engine bus {}", config.node))
            .no_echo()
            .max_reconnects(Option::<usize>::None)
            .event_callback(|event| async move { record_connection_event(&event) })
            .connect(&config.url)
            .await
            .map_err(|source| ClusterError::Connect {
                url: config.url.clone(),
                source,
            })?;
        let subjects = Subjects::new(&config.cluster);
        let control = client
            .subscribe(subjects.control())
            .await
            .map_err(|source| ClusterError::Subscribe {
                url: config.url.clone(),
                subject: subjects.control(),
                source,
            })?;
        let subscribe = |subject: String| {
            let client = client.clone();
            async move {
                client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|source| ClusterError::Subscribe {
                        url: config.url.clone(),
                        subject,
                        source,
                    })
            }
        };
        let forwarded = subscribe(subjects.node_send(&config.node)).await?;
        let answers = subscribe(subjects.node_answer(&config.node)).await?;
        // Confirmed before the engine runs: a kick sent from another node
        // right after start reaches this one.
        client.flush().await.map_err(|e| ClusterError::Flush {
            url: config.url.clone(),
            source: e,
        })?;
        metrics::gauge!("im_cluster_bus_connected").set(1.0);
        let state = Arc::new(BusState {
            client,
            subjects,
            inbound: OnceLock::new(),
            faults: Mutex::new(BusFaults::default()),
            rng: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            listening: Mutex::default(),
            me: config.node.clone(),
            live: OnceLock::new(),
            forward_timeout: config.forward_timeout,
            pending: Pending::default(),
        });
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        let (interest, interest_rx) = mpsc::unbounded_channel();
        let (forwards, forwards_rx) = mpsc::channel(FORWARD_QUEUE);
        let tasks = vec![
            tokio::spawn(publish(state.clone(), out_rx)),
            tokio::spawn(follow_interest(state.clone(), interest_rx)),
            tokio::spawn(listen_control(state.clone(), control)),
            tokio::spawn(send_forwards(state.clone(), forwards_rx)),
            tokio::spawn(listen_answers(state.clone(), answers)),
            tokio::spawn(serve_forwards(state.clone(), forwarded)),
        ];
        Ok(Arc::new(Self {
            state,
            out,
            interest,
            forwards,
            tasks,
        }))
    }

    /// Routes sends by ownership from now on: a send to a conversation whose
    /// owner among `membership`'s live nodes is another node is forwarded
    /// to it. Call it once, before the engine serves clients (a second call
    /// is ignored). Without it, every send commits where it arrives.
    pub fn route_by(&self, membership: &Membership) {
        if membership.node() != &self.state.me {
            tracing::error!(
                bus = %self.state.me,
                membership = %membership.node(),
                "the bus and the membership name different nodes: not routing"
            );
            return;
        }
        if self.state.live.set(membership.watch()).is_err() {
            tracing::warn!("the bus already routes by a membership");
        }
    }

    /// Injects faults on received batches and beacons. **For tests only.**
    pub fn set_faults(&self, faults: BusFaults) {
        *self.state.faults.lock() = faults;
    }

    /// True once the NATS server confirmed this node's subscription for
    /// `interest` (and until it is dropped): batches published from then on
    /// reach this node. For tests and monitoring.
    pub fn is_listening(&self, interest: &Interest) -> bool {
        let subject = self.state.subjects.interest(interest);
        self.state.listening.lock().contains(&subject)
    }

    /// True while the connection to NATS is up (it reconnects by itself
    /// after a loss; batches missed meanwhile are repaired from the store).
    pub fn is_connected(&self) -> bool {
        self.state.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Subjects this node listens on for batches.
    pub fn listening_count(&self) -> usize {
        self.state.listening.lock().len()
    }
}

/// Keeps the bus's connection visible in the metrics:
/// `im_cluster_bus_connected` (1 while connected to NATS, 0 while away) and
/// `im_cluster_bus_disconnects_total`.
fn record_connection_event(event: &async_nats::Event) {
    match event {
        async_nats::Event::Connected => {
            metrics::gauge!("im_cluster_bus_connected").set(1.0);
            tracing::info!("cluster bus connected to NATS");
        }
        async_nats::Event::Disconnected => {
            metrics::gauge!("im_cluster_bus_connected").set(0.0);
            metrics::counter!("im_cluster_bus_disconnects_total").increment(1);
            tracing::warn!(
                "cluster bus lost NATS: sessions stay up and commits go on; \
                 cross-node delivery resumes (and repairs) when it returns"
            );
        }
        _ => {}
    }
}

impl Drop for NatsBus {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl ClusterBus for NatsBus {
    fn attach(&self, inbound: ClusterInbound) {
        if self.state.inbound.set(inbound).is_err() {
            tracing::warn!("a NatsBus serves one engine: the second engine is ignored");
        }
    }

    fn publish(&self, conversation: &ConversationId, messages: &[StoredMessage]) {
        let Some(last) = messages.last() else { return };
        let out = Outgoing::Batch {
            conversation: conversation.clone(),
            head: last.seq,
            payload: encode_batch(conversation, last.seq, messages),
        };
        if self.out.try_send(out).is_err() {
            metrics::counter!("im_cluster_publish_dropped_total").increment(1);
        }
    }

    fn interest(&self, interest: Interest, on: bool) {
        let _ = self.interest.send((interest, on));
    }

    fn control(&self, control: Control) {
        let out = Outgoing::Control(encode_control(&control));
        if self.out.try_send(out).is_err() {
            metrics::counter!("im_cluster_publish_dropped_total").increment(1);
        }
    }

    fn remote_owner(&self, conversation: &ConversationId) -> Option<NodeId> {
        let live = self.state.live.get()?;
        match route(&conversation.to_key(), &live.borrow(), &self.state.me) {
            Route::Here => None,
            Route::Forward(owner) => Some(owner),
        }
    }

    fn forward(&self, owner: NodeId, send: ForwardedSend, done: oneshot::Sender<ForwardResult>) {
        if let Err(e) = self.forwards.try_send(Queued { owner, send, done }) {
            let queued = match e {
                mpsc::error::TrySendError::Full(q) | mpsc::error::TrySendError::Closed(q) => q,
            };
            let _ = queued.done.send(Err(ForwardError::unavailable(
                "too many sends waiting for their owner node; resend",
            )));
        }
    }
}

/// Publishes batches and control, and the head beacons after batches.
async fn publish(state: Arc<BusState>, mut rx: mpsc::Receiver<Outgoing>) {
    static FAILED: LogLimit = LogLimit::per_second(1);
    let mut beacons: HashMap<ConversationId, Beacon> = HashMap::new();
    let mut tick = tokio::time::interval(BEACON_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let send = |kind: Kind, subject: String, payload: Bytes| {
        let client = state.client.clone();
        async move {
            kind.published(payload.len());
            if let Err(e) = client.publish(subject, payload).await
                && let Some(suppressed) = FAILED.allow()
            {
                tracing::warn!(error = %e, suppressed, "bus message not published");
            }
        }
    };
    loop {
        tokio::select! {
            next = rx.recv() => match next {
                Some(Outgoing::Batch { conversation, head, payload }) => {
                    metrics::counter!("im_cluster_batches_out_total").increment(1);
                    for subject in state.subjects.conversation(&conversation) {
                        send(Kind::Batch, subject, payload.clone()).await;
                    }
                    if beacons.len() < BEACON_CONVERSATIONS || beacons.contains_key(&conversation) {
                        let b = beacons.entry(conversation).or_insert(Beacon { head, left: 0 });
                        b.head = b.head.max(head);
                        b.left = BEACONS;
                    }
                }
                Some(Outgoing::Control(payload)) => {
                    send(Kind::Control, state.subjects.control(), payload).await
                }
                None => return,
            },
            _ = tick.tick() => {
                for (conv, b) in &mut beacons {
                    let payload = encode_batch(conv, b.head, &[]);
                    for subject in state.subjects.conversation(conv) {
                        send(Kind::Beacon, subject, payload.clone()).await;
                    }
                    b.left -= 1;
                }
                beacons.retain(|_, b| b.left > 0);
            }
        }
    }
}

/// Subscribes and unsubscribes as this node's interest changes.
async fn follow_interest(state: Arc<BusState>, mut rx: mpsc::UnboundedReceiver<(Interest, bool)>) {
    let mut subs: HashMap<String, JoinHandle<()>> = HashMap::new();
    while let Some((interest, on)) = rx.recv().await {
        let subject = state.subjects.interest(&interest);
        if on {
            if let Some(old) = subs.remove(&subject) {
                old.abort();
            }
            let task = tokio::spawn(listen_batches(state.clone(), subject.clone()));
            subs.insert(subject, task);
        } else if let Some(task) = subs.remove(&subject) {
            // Dropping the subscriber with the task unsubscribes.
            task.abort();
            state.listening.lock().remove(&subject);
        }
    }
}

/// One subject's subscription: decodes batches and beacons and hands them
/// to the engine.
async fn listen_batches(state: Arc<BusState>, subject: String) {
    static BAD: LogLimit = LogLimit::per_second(1);
    let mut sub = match subscribe_confirmed(&state, &subject).await {
        Some(sub) => sub,
        None => return,
    };
    while let Some(msg) = sub.next().await {
        let decoded = match decode_batch(&msg.payload) {
            Ok(d) => d,
            Err(e) => {
                if let Some(suppressed) = BAD.allow() {
                    tracing::warn!(error = %e, suppressed, %subject, "ignored a bus message");
                }
                continue;
            }
        };
        let inbound = if decoded.messages.is_empty() {
            Kind::Beacon.received(msg.payload.len());
            Inbound::Head(decoded.conversation, decoded.head)
        } else {
            Kind::Batch.received(msg.payload.len());
            Inbound::Batch(decoded.messages)
        };
        match fault(&state) {
            Fault::None => hand_in(&state, inbound).await,
            Fault::Drop => metrics::counter!("im_cluster_faults_dropped_total").increment(1),
            Fault::Delay(d) => {
                let state = state.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    hand_in(&state, inbound).await;
                });
            }
        }
    }
}

/// Subscribes and waits for the server to confirm (a flush round trip), so
/// what is published after [`NatsBus::is_listening`] turns true reaches us.
async fn subscribe_confirmed(state: &BusState, subject: &str) -> Option<Subscriber> {
    static FAILED: LogLimit = LogLimit::per_second(1);
    let mut delay = Duration::from_millis(50);
    loop {
        match state.client.subscribe(subject.to_owned()).await {
            Ok(sub) => {
                if state.client.flush().await.is_ok() {
                    state.listening.lock().insert(subject.to_owned());
                }
                return Some(sub);
            }
            Err(e) => {
                if let Some(suppressed) = FAILED.allow() {
                    tracing::warn!(error = %e, suppressed, %subject, "cannot subscribe; retrying");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Hands control commands from other nodes to the engine.
async fn listen_control(state: Arc<BusState>, mut sub: Subscriber) {
    static BAD: LogLimit = LogLimit::per_second(1);
    while let Some(msg) = sub.next().await {
        Kind::Control.received(msg.payload.len());
        match decode_control(&msg.payload) {
            Ok(c) => hand_in(&state, Inbound::Control(c)).await,
            Err(e) => {
                if let Some(suppressed) = BAD.allow() {
                    tracing::warn!(error = %e, suppressed, "ignored a control message");
                }
            }
        }
    }
}

/// What a bus message carries, as its metrics label.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Committed messages of one conversation.
    Batch,
    /// A conversation's head, repeated after its last batch.
    Beacon,
    /// A control command.
    Control,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::Beacon => "beacon",
            Self::Control => "control",
        }
    }

    /// Counts one published message of `bytes` payload bytes.
    fn published(self, bytes: usize) {
        let kind = self.label();
        metrics::counter!("im_cluster_bus_published_total", "kind" => kind).increment(1);
        metrics::counter!("im_cluster_bus_published_bytes_total", "kind" => kind)
            .increment(bytes as u64);
    }

    /// Counts one received message of `bytes` payload bytes.
    fn received(self, bytes: usize) {
        let kind = self.label();
        metrics::counter!("im_cluster_bus_received_total", "kind" => kind).increment(1);
        metrics::counter!("im_cluster_bus_received_bytes_total", "kind" => kind)
            .increment(bytes as u64);
    }
}

async fn hand_in(state: &BusState, inbound: Inbound) {
    if let Some(engine) = state.inbound.get() {
        engine.deliver(inbound).await;
    }
}

enum Fault {
    None,
    Drop,
    Delay(Duration),
}

/// Draws this message's fault (xorshift; only ever used by tests).
fn fault(state: &BusState) -> Fault {
    let f = *state.faults.lock();
    if f.drop_per_mille == 0 && f.delay_per_mille == 0 {
        return Fault::None;
    }
    let mut x = state.rng.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state.rng.store(x, Ordering::Relaxed);
    let roll = u32::try_from(x % 1000).unwrap_or(0);
    if roll < f.drop_per_mille {
        Fault::Drop
    } else if roll < f.drop_per_mille + f.delay_per_mille {
        Fault::Delay(f.delay)
    } else {
        Fault::None
    }
}

//! Live rooms: the online index of each room sharded into sub-rooms, the
//! room's batch window and hot ring, send limits, and the fanout stage that
//! delivers room frames off the conversation owners' path.
//!
//! Flow of one room message: the shard worker commits and acks it, then
//! hands it to [`RoomIndex::on_committed`]. The room's batcher (one per room:
//! in one process every sub-room sees the same stream, so one batch encoded
//! once serves them all) decides when a frame is due; due frames wait in the
//! room's bounded backlog, and the room is queued on the fanout lane of its
//! rate class. A lane is a few dedicated threads; a room is served by one
//! thread at a time (its frames stay in order), a thread serves a few frames
//! of a room then lets the next room in. Direct and group chat never enter
//! these lanes, so a flooding room cannot delay them, and the slow lane's
//! thread count is the share of fanout capacity huge rooms may take.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use parking_lot::{Mutex, RwLock};

use crate::codec::{encode_server_frame, server_frame};
use crate::error::{EngineError, StoreError};
use crate::fanout::{Delivery, FanoutPlan, RateClass};
use crate::ids::{ChannelId, SessionId, UserId};
use crate::pb;
use crate::room::{
    BatchConfig, Batcher, HotRing, SubRoomConfig, SubRoomId, SubRoomPlanner, TokenBucket,
};
use crate::store::{RangePage, RangeRequest, Store, StoredMessage};

use super::config::EngineConfig;
use super::registry::SessionHandle;
use super::wire::message_to_wire;

/// Frames of one room a lane thread delivers before serving other rooms.
const FRAMES_PER_TURN: usize = 8;
/// Per-user limiters kept before full (idle) ones are forgotten.
const USER_LIMITERS_MAX: usize = 100_000;

/// Room settings taken from [`EngineConfig`].
#[derive(Debug, Clone)]
pub(crate) struct RoomSettings {
    pub(crate) sub_rooms: SubRoomConfig,
    pub(crate) batch: BatchConfig,
    pub(crate) hot_ring: usize,
    pub(crate) backlog_frames: usize,
    /// Bytes a room may have waiting for fanout: half a session's outbound
    /// queue, so a backlog delivered in one burst fits a healthy member.
    pub(crate) backlog_bytes: usize,
    pub(crate) room_rate: (u32, u32),
    pub(crate) user_rate: (u32, u32),
    pub(crate) parallelism: usize,
    pub(crate) parallel_min_sessions: usize,
}

impl RoomSettings {
    pub(crate) fn from_config(c: &EngineConfig) -> Self {
        Self {
            sub_rooms: SubRoomConfig {
                capacity: c.room_sub_room_capacity,
                merge_below: c.room_sub_room_merge_below,
            },
            batch: c.room_batch.clone(),
            hot_ring: c.room_hot_ring,
            backlog_frames: c.room_backlog_frames.max(1),
            backlog_bytes: (c.outbound_queue_bytes / 2).max(1),
            room_rate: (c.room_send_rate, c.room_send_burst),
            user_rate: (c.user_room_send_rate, c.user_room_send_burst),
            parallelism: c.room_fanout_parallelism,
            parallel_min_sessions: c.room_fanout_parallel_min,
        }
    }
}

/// A frame waiting for fanout, with how many messages it carries.
struct Frame {
    bytes: Bytes,
    messages: u32,
}

/// The fanout lanes, one per rate class, each a few dedicated threads.
pub(crate) struct FanoutStage {
    lanes: [Vec<mpsc::Sender<Arc<Room>>>; 3],
}

impl FanoutStage {
    /// Starts `threads[class]` threads per lane (at least one each).
    pub(crate) fn start(threads: [usize; 3]) -> Arc<Self> {
        let names = ["fast", "medium", "slow"];
        let lanes = std::array::from_fn(|class| {
            (0..threads[class].max(1))
                .filter_map(|i| {
                    let (tx, rx) = mpsc::channel::<Arc<Room>>();
                    let spawned = std::thread::Builder::new()
                        .name(format!("im-fanout-{}-{i}", names[class]))
                        .spawn(move || lane_thread(rx));
                    match spawned {
                        Ok(_) => Some(tx),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start a fanout thread");
                            None
                        }
                    }
                })
                .collect()
        });
        Arc::new(Self { lanes })
    }

    /// A stage with no threads: frames wait until [`Room::run_turn`] is
    /// called by hand (benches).
    #[cfg(any(test, feature = "bench"))]
    pub(crate) fn manual() -> Arc<Self> {
        Arc::new(Self {
            lanes: [Vec::new(), Vec::new(), Vec::new()],
        })
    }

    fn submit(&self, class: RateClass, room: Arc<Room>) {
        let lane = &self.lanes[class as usize];
        if lane.is_empty() {
            return;
        }
        // A room always goes to the same thread of its lane.
        let i = room.lane_slot % lane.len();
        if lane[i].send(room).is_err() {
            tracing::warn!("fanout lane closed");
        }
    }
}

fn lane_thread(rx: mpsc::Receiver<Arc<Room>>) {
    while let Ok(room) = rx.recv() {
        room.run_turn();
    }
}

/// Sessions of one sub-room, iterated by the fanout lane.
#[derive(Default)]
struct SubRoom {
    sessions: Mutex<Vec<Arc<SessionHandle>>>,
}

/// Who sits where in one room.
struct Members {
    planner: SubRoomPlanner,
    subs: BTreeMap<SubRoomId, Arc<SubRoom>>,
    /// Each joined session's sub-room and index in its session list.
    seats: HashMap<SessionId, (SubRoomId, usize)>,
    /// Set when the room left the index; joins must look it up again.
    closed: bool,
}

/// The room's delivery state.
struct Flow {
    batcher: Batcher<StoredMessage>,
    backlog: VecDeque<Frame>,
    /// Bytes of the frames in `backlog`.
    backlog_bytes: usize,
    plan: Option<FanoutPlan>,
    scheduled: bool,
    timer_armed: bool,
}

/// A pull range: (after, until, limit, newest).
type LoadKey = (u64, Option<u64>, usize, bool);
type Load = Shared<BoxFuture<'static, Result<Arc<RangePage>, Arc<StoreError>>>>;

/// One live room.
pub(crate) struct Room {
    id: ChannelId,
    settings: Arc<RoomSettings>,
    stage: Arc<FanoutStage>,
    lane_slot: usize,
    members: Mutex<Members>,
    online: AtomicUsize,
    /// Held for reading while a frame is delivered; merges (which move
    /// sessions between sub-rooms) only happen when they get it for writing.
    gate: RwLock<()>,
    flow: Mutex<Flow>,
    limiter: Mutex<TokenBucket>,
    /// Recent messages, shared: a pull clones pointers under the lock, not messages.
    hot: Mutex<HotRing<Arc<StoredMessage>>>,
    loads: Mutex<HashMap<LoadKey, Load>>,
}

impl Room {
    fn new(
        id: ChannelId,
        settings: Arc<RoomSettings>,
        stage: Arc<FanoutStage>,
        slot: usize,
    ) -> Self {
        let s = &settings;
        Self {
            members: Mutex::new(Members {
                planner: SubRoomPlanner::new(s.sub_rooms),
                subs: BTreeMap::new(),
                seats: HashMap::new(),
                closed: false,
            }),
            flow: Mutex::new(Flow {
                batcher: Batcher::new(s.batch.clone()),
                backlog: VecDeque::new(),
                backlog_bytes: 0,
                plan: None,
                scheduled: false,
                timer_armed: false,
            }),
            limiter: Mutex::new(TokenBucket::new(s.room_rate.0, s.room_rate.1)),
            hot: Mutex::new(HotRing::new(s.hot_ring)),
            loads: Mutex::new(HashMap::new()),
            online: AtomicUsize::new(0),
            gate: RwLock::new(()),
            lane_slot: slot,
            id,
            settings,
            stage,
        }
    }

    /// Seats a session; false if the room was closed meanwhile.
    fn join(&self, s: &Arc<SessionHandle>) -> Option<usize> {
        let mut m = self.members.lock();
        if m.closed {
            return None;
        }
        if !m.seats.contains_key(&s.id) {
            let sub = m.planner.join_now();
            let room = m.subs.entry(sub).or_default().clone();
            let mut list = room.sessions.lock();
            m.seats.insert(s.id, (sub, list.len()));
            list.push(s.clone());
            self.online.fetch_add(1, Ordering::Relaxed);
        }
        Some(self.online.load(Ordering::Relaxed))
    }

    /// Unseats a session; returns the sessions left.
    fn leave(&self, id: SessionId) -> usize {
        let mut m = self.members.lock();
        let Some((sub, idx)) = m.seats.remove(&id) else {
            return self.online.load(Ordering::Relaxed);
        };
        if let Some(room) = m.subs.get(&sub).cloned() {
            let mut list = room.sessions.lock();
            if idx < list.len() {
                list.swap_remove(idx);
                if let Some(moved) = list.get(idx) {
                    if let Some(seat) = m.seats.get_mut(&moved.id) {
                        seat.1 = idx;
                    }
                }
            }
        }
        if let Ok(true) = m.planner.leave(sub) {
            m.subs.remove(&sub);
        }
        let left = self.online.fetch_sub(1, Ordering::Relaxed) - 1;
        self.try_merge(&mut m);
        left
    }

    /// Merges sparse sub-rooms, unless a delivery is in progress (then the
    /// lane retries after it).
    fn try_merge(&self, m: &mut Members) {
        if m.planner.config().merge_below == 0 {
            return;
        }
        let Some(_quiet) = self.gate.try_write() else {
            return;
        };
        while let Some(merge) = m.planner.plan_merge() {
            let (Some(from), Some(into)) = (
                m.subs.get(&merge.from).cloned(),
                m.subs.get(&merge.into).cloned(),
            ) else {
                break;
            };
            let moved: Vec<Arc<SessionHandle>> = std::mem::take(&mut *from.sessions.lock());
            let mut list = into.sessions.lock();
            for s in moved {
                m.seats.insert(s.id, (merge.into, list.len()));
                list.push(s);
            }
            drop(list);
            if m.planner.finish_merge(merge).is_err() {
                break;
            }
            m.subs.remove(&merge.from);
            metrics::counter!("im_room_sub_room_merges_total").increment(1);
        }
    }

    /// Queues the same bytes to every session of every sub-room; returns
    /// how many sessions took them.
    pub(crate) fn deliver(&self, frame: &Bytes) -> usize {
        let _delivering = self.gate.read();
        let subs: Vec<Arc<SubRoom>> = self.members.lock().subs.values().cloned().collect();
        let helpers = self.settings.parallelism.saturating_sub(1);
        if helpers == 0 || self.online() < self.settings.parallel_min_sessions {
            return deliver_subs(&subs, frame);
        }
        // A huge room: split its sub-rooms over a few threads. Each thread
        // queues its own copy of the bytes, so the threads do not fight over
        // one reference count. A thread that cannot be started leaves its
        // part to this one.
        let per = subs.len().div_ceil(helpers + 1).max(1);
        std::thread::scope(|scope| {
            let mut parts = subs.chunks(per);
            let mine = parts.next().unwrap_or(&[]);
            let others: Vec<_> = parts
                .map(|part| {
                    let copy = Bytes::copy_from_slice(frame);
                    std::thread::Builder::new()
                        .spawn_scoped(scope, move || deliver_subs(part, &copy))
                        .map_err(|_| part)
                })
                .collect();
            let n = deliver_subs(mine, frame);
            n + others
                .into_iter()
                .map(|h| match h {
                    Ok(h) => h.join().unwrap_or(0),
                    Err(part) => deliver_subs(part, frame),
                })
                .sum::<usize>()
        })
    }

    /// Delivers up to a turn's worth of backlog; requeues the room if more waits.
    fn run_turn(self: Arc<Self>) {
        for _ in 0..FRAMES_PER_TURN {
            let frame = {
                let mut flow = self.flow.lock();
                match flow.backlog.pop_front() {
                    Some(f) => {
                        flow.backlog_bytes -= f.bytes.len();
                        f
                    }
                    None => {
                        flow.scheduled = false;
                        drop(flow);
                        self.try_merge(&mut self.members.lock());
                        return;
                    }
                }
            };
            let sessions = self.deliver(&frame.bytes);
            metrics::counter!("im_room_frames_total").increment(1);
            metrics::counter!("im_deliveries_total")
                .increment(sessions as u64 * u64::from(frame.messages));
        }
        let class = self
            .flow
            .lock()
            .plan
            .map_or(RateClass::Slow, |p| p.rate_class);
        self.stage.clone().submit(class, self);
    }

    /// Moves due batches into the backlog, schedules delivery and arms the
    /// batch timer.
    fn pump(self: &Arc<Self>, flow: &mut Flow, batch: Option<Vec<StoredMessage>>) {
        if let Some(batch) = batch {
            let plan = flow.plan;
            let mut frame = encode_batch(&self.id, &batch, plan);
            let too_many = flow.backlog.len() >= self.settings.backlog_frames;
            // The backlog is delivered in one burst when the fanout thread
            // gets to run: it must fit a healthy member's outbound queue, or a
            // stalled fanout thread would get every member kicked as a slow
            // consumer.
            let too_big = !flow.backlog.is_empty()
                && flow.backlog_bytes + frame.bytes.len() > self.settings.backlog_bytes;
            if too_many || too_big {
                // Members cannot be fed this fast: replace what waits with one
                // "pull from here" notice (they catch up from the hot ring).
                flow.backlog.clear();
                flow.backlog_bytes = 0;
                metrics::counter!("im_room_backlog_collapsed_total").increment(1);
                let head = batch.last().map_or(0, |m| m.seq);
                frame = Frame {
                    bytes: notify_frame(&self.id, head),
                    messages: 1,
                };
            }
            flow.backlog_bytes += frame.bytes.len();
            flow.backlog.push_back(frame);
        }
        if !flow.backlog.is_empty() && !flow.scheduled {
            flow.scheduled = true;
            let class = flow.plan.map_or(RateClass::Slow, |p| p.rate_class);
            self.stage.submit(class, self.clone());
        }
        if let Some(deadline) = flow.batcher.deadline() {
            if !flow.timer_armed && tokio::runtime::Handle::try_current().is_ok() {
                flow.timer_armed = true;
                let room = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
                    room.tick();
                });
            }
        }
    }

    fn tick(self: Arc<Self>) {
        let mut flow = self.flow.lock();
        flow.timer_armed = false;
        let batch = flow.batcher.poll(Instant::now());
        self.pump(&mut flow, batch);
    }

    /// Sessions in the room.
    pub(crate) fn online(&self) -> usize {
        self.online.load(Ordering::Relaxed)
    }

    /// Sub-rooms in use.
    #[cfg(feature = "bench")]
    pub(crate) fn sub_room_count(&self) -> usize {
        self.members.lock().subs.len()
    }
}

/// Queues `frame` to every session of these sub-rooms.
fn deliver_subs(subs: &[Arc<SubRoom>], frame: &Bytes) -> usize {
    subs.iter()
        .map(|sub| deliver_to(&sub.sessions.lock(), frame))
        .sum()
}

/// Sessions whose queues are touched ahead of the pushes.
const TOUCH_AHEAD: usize = 16;

/// Queues `frame` to each session. Pushes take a lock (a fence), so their
/// cache misses would be paid one after another: a plain read of each queue
/// of the next run first lets those misses overlap.
fn deliver_to(sessions: &[Arc<SessionHandle>], frame: &Bytes) -> usize {
    let mut n = 0;
    for run in sessions.chunks(TOUCH_AHEAD) {
        let mut busy = false;
        for s in run {
            busy |= s.out.touch();
        }
        std::hint::black_box(busy);
        for s in run {
            n += usize::from(s.send(frame.clone()));
        }
    }
    n
}

/// Encodes a batch once: the messages, or the new head when the plan says notify.
fn encode_batch(room: &ChannelId, batch: &[StoredMessage], plan: Option<FanoutPlan>) -> Frame {
    let head = batch.last().map_or(0, |m| m.seq);
    if plan.is_some_and(|p| p.delivery == Delivery::Notify) {
        return Frame {
            bytes: notify_frame(room, head),
            messages: 1,
        };
    }
    let body = pb::server_frame::Body::Push(pb::Push {
        // A room's name does not depend on the viewer.
        messages: batch
            .iter()
            .map(|m| message_to_wire(m, &m.sender))
            .collect(),
    });
    Frame {
        bytes: encode_server_frame(&server_frame(0, body)),
        messages: batch.len() as u32,
    }
}

fn notify_frame(room: &ChannelId, head_seq: u64) -> Bytes {
    let conversation = pb::ConversationRef {
        kind: pb::ConversationKind::Room as i32,
        id: room.to_string(),
    };
    encode_server_frame(&server_frame(
        0,
        pb::server_frame::Body::Notify(pb::Notify {
            conversation: Some(conversation),
            head_seq,
        }),
    ))
}

/// Every live room of the engine.
pub(crate) struct RoomIndex {
    rooms: RwLock<HashMap<ChannelId, Arc<Room>>>,
    settings: Arc<RoomSettings>,
    stage: Arc<FanoutStage>,
    users: Mutex<HashMap<UserId, TokenBucket>>,
    /// Size of `users` after its last sweep of idle buckets.
    users_swept_at: AtomicUsize,
    next_slot: AtomicUsize,
}

impl RoomIndex {
    pub(crate) fn new(settings: RoomSettings, stage: Arc<FanoutStage>) -> Self {
        Self {
            rooms: RwLock::new(HashMap::new()),
            settings: Arc::new(settings),
            stage,
            users: Mutex::new(HashMap::new()),
            users_swept_at: AtomicUsize::new(0),
            next_slot: AtomicUsize::new(0),
        }
    }

    /// The room, if anyone is in it.
    pub(crate) fn get(&self, id: &ChannelId) -> Option<Arc<Room>> {
        self.rooms.read().get(id).cloned()
    }

    /// Seats a session in a room (O(1) amortized); returns the room's sessions.
    pub(crate) fn join(&self, id: &ChannelId, s: &Arc<SessionHandle>) -> usize {
        loop {
            let room = match self.get(id) {
                Some(r) => r,
                None => self
                    .rooms
                    .write()
                    .entry(id.clone())
                    .or_insert_with(|| {
                        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
                        Arc::new(Room::new(
                            id.clone(),
                            self.settings.clone(),
                            self.stage.clone(),
                            slot,
                        ))
                    })
                    .clone(),
            };
            if let Some(n) = room.join(s) {
                return n;
            }
        }
    }

    /// Unseats a session (O(1)); forgets the room once it is empty.
    pub(crate) fn leave(&self, id: &ChannelId, session: SessionId) {
        let Some(room) = self.get(id) else {
            return;
        };
        if room.leave(session) > 0 {
            return;
        }
        let mut rooms = self.rooms.write();
        let mut m = room.members.lock();
        if room.online() == 0 && !m.closed {
            m.closed = true;
            if rooms.get(id).is_some_and(|r| Arc::ptr_eq(r, &room)) {
                rooms.remove(id);
            }
        }
    }

    /// Sessions in a room.
    pub(crate) fn online(&self, id: &ChannelId) -> usize {
        self.get(id).map_or(0, |r| r.online())
    }

    /// Takes a token from the room's and the user's send limits.
    pub(crate) fn check_send(&self, id: &ChannelId, user: &UserId) -> Result<(), EngineError> {
        let now = Instant::now();
        // The user's own limit first: a flooding user is refused before it
        // can spend the room's budget that everyone else shares.
        let (rate, burst) = self.settings.user_rate;
        if rate != 0 {
            let mut users = self.users.lock();
            if users.len() >= USER_LIMITERS_MAX
                && users.len() >= 2 * self.users_swept_at.load(Ordering::Relaxed)
            {
                // Sweep idle (full) buckets only when the map has doubled since
                // the last sweep, so the cost stays amortized O(1) per send.
                users.retain(|_, b| !b.is_full(now));
                self.users_swept_at
                    .store(users.len().max(1), Ordering::Relaxed);
            }
            let bucket = users
                .entry(user.clone())
                .or_insert_with(|| TokenBucket::new(rate, burst));
            if let Err(wait) = bucket.try_take(now) {
                metrics::counter!("im_rate_limited_total", "limit" => "user").increment(1);
                return Err(EngineError::RateLimited(format!(
                    "you are sending to rooms too fast; retry in {} ms",
                    wait.as_millis().max(1)
                )));
            }
        }
        if let Some(room) = self.get(id) {
            if let Err(wait) = room.limiter.lock().try_take(now) {
                metrics::counter!("im_rate_limited_total", "limit" => "room").increment(1);
                return Err(EngineError::RateLimited(format!(
                    "room {id} is over its send rate; retry in {} ms",
                    wait.as_millis().max(1)
                )));
            }
        }
        Ok(())
    }

    /// Takes committed messages of one room (in seq order): into the hot
    /// ring, through the batch window, out to the fanout lane.
    pub(crate) fn on_committed(&self, id: &ChannelId, msgs: Vec<StoredMessage>, plan: FanoutPlan) {
        let Some(room) = self.get(id) else {
            return;
        };
        {
            let shared: Vec<Arc<StoredMessage>> = msgs.iter().cloned().map(Arc::new).collect();
            let mut hot = room.hot.lock();
            for m in shared {
                hot.push(m.seq, m);
            }
        }
        let now = Instant::now();
        let mut flow = room.flow.lock();
        flow.plan = Some(plan);
        let mut msgs = msgs.into_iter().peekable();
        while let Some(m) = msgs.next() {
            let batch = flow.batcher.push(now, m);
            if batch.is_some() || msgs.peek().is_none() {
                room.pump(&mut flow, batch);
            }
        }
    }

    /// Reads a room's range from the hot ring, or from the store with one
    /// load per distinct range in flight (others wait for it).
    pub(crate) async fn read_range(
        &self,
        store: &Arc<dyn Store>,
        id: &ChannelId,
        req: RangeRequest,
    ) -> Result<RangePage, StoreError> {
        let Some(room) = self.get(id) else {
            return store.read_range(req).await;
        };
        let hit = {
            let hot = room.hot.lock();
            hot.range(req.after_seq, req.until_seq, req.limit, req.newest)
                .map(|page| (page, hot.head().unwrap_or(0), hot.first().unwrap_or(1)))
        };
        if let Some((page, head_seq, first)) = hit {
            // Copied out of the ring after its lock is released.
            metrics::counter!("im_room_hot_hits_total").increment(1);
            return Ok(RangePage {
                messages: page.iter().map(|m| (**m).clone()).collect(),
                head_seq,
                first_retained_seq: first.min(req.after_seq.saturating_add(1)),
            });
        }
        metrics::counter!("im_room_hot_misses_total").increment(1);
        let key = (req.after_seq, req.until_seq, req.limit, req.newest);
        let load = room
            .loads
            .lock()
            .entry(key)
            .or_insert_with(|| {
                let store = store.clone();
                async move { store.read_range(req).await.map(Arc::new).map_err(Arc::new) }
                    .boxed()
                    .shared()
            })
            .clone();
        let result = load.clone().await;
        {
            // Only this load's entry: a newer load for the key may have started.
            let mut loads = room.loads.lock();
            if loads.get(&key).is_some_and(|l| l.ptr_eq(&load)) {
                loads.remove(&key);
            }
        }
        match result {
            Ok(page) => {
                // The tail of the room seeds an empty ring.
                if page.messages.last().is_some_and(|m| m.seq == page.head_seq) {
                    let mut hot = room.hot.lock();
                    if hot.is_empty() {
                        for m in &page.messages {
                            hot.push(m.seq, Arc::new(m.clone()));
                        }
                    }
                }
                Ok((*page).clone())
            }
            Err(e) => Err(StoreError::Backend {
                retryable: e.is_retryable(),
                source: e.to_string().into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode_server_frame;
    use crate::fanout::Diffusion;
    use crate::ids::{ConversationId, DeviceId, MessageId};

    const QUEUE: usize = 64 * 1024;
    const BODY: usize = 4096;

    fn message(room: &ChannelId, seq: u64) -> StoredMessage {
        StoredMessage {
            conversation: ConversationId::Room(room.clone()),
            seq,
            message_id: MessageId(seq),
            sender: UserId::new("sender").expect("user"),
            sender_device: DeviceId::new("d").expect("device"),
            client_msg_id: None,
            body: Bytes::from(vec![b'x'; BODY]),
            server_time_ms: 0,
        }
    }

    /// The seq a member has caught up to from what was queued to it: the
    /// last pushed message, or the head a notice told it to pull to.
    fn caught_up_to(s: &SessionHandle) -> u64 {
        let mut frames = Vec::new();
        s.out.take_all(&mut frames);
        let last = frames.last().expect("a frame");
        match decode_server_frame(last).expect("frame").body {
            Some(pb::server_frame::Body::Push(p)) => p.messages.last().map_or(0, |m| m.seq),
            Some(pb::server_frame::Body::Notify(n)) => n.head_seq,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A fanout thread that does not run for a while (a busy machine) must
    /// not hand healthy members more than their queues hold when it does.
    #[test]
    fn a_stalled_fanout_thread_never_overflows_healthy_members() {
        let config = EngineConfig {
            outbound_queue_bytes: QUEUE,
            // Every message is its own frame.
            room_batch: BatchConfig {
                max_count: 1,
                max_delay: std::time::Duration::from_secs(1),
                tiers: Vec::new(),
            },
            ..EngineConfig::default()
        };
        // No threads: frames wait until the test runs the turns.
        let index = RoomIndex::new(RoomSettings::from_config(&config), FanoutStage::manual());
        let id = ChannelId::new("r").expect("room");
        let members: Vec<Arc<SessionHandle>> = (0..3)
            .map(|i| {
                let s = Arc::new(SessionHandle::new(
                    SessionId(i + 1),
                    UserId::new(format!("u{i}")).expect("user"),
                    DeviceId::new("d").expect("device"),
                    pb::DeviceKind::Desktop,
                    QUEUE,
                ));
                index.join(&id, &s);
                s
            })
            .collect();
        let plan = FanoutPlan {
            diffusion: Diffusion::Read,
            delivery: Delivery::Push,
            rate_class: RateClass::Fast,
        };
        // Four queues' worth of messages committed while fanout is stalled.
        let n = (4 * QUEUE / BODY) as u64;
        for seq in 1..=n {
            index.on_committed(&id, vec![message(&id, seq)], plan);
        }
        let room = index.get(&id).expect("room");
        while !room.flow.lock().backlog.is_empty() {
            room.clone().run_turn();
        }
        for s in &members {
            assert!(!s.stop.is_cancelled(), "{} was kicked", s.user);
            assert_eq!(caught_up_to(s), n, "{} can catch up", s.user);
        }
    }
}

//! The fanout stage of rooms: per rate class, a few dedicated OS threads
//! ("fanout threads") that take rooms with frames waiting and queue those
//! frames to every member.
//!
//! Not to be confused with the group lane (`engine/group_lane.rs`), which
//! is a Tokio task per shard for big groups; room fanout never runs on the
//! Tokio workers.

use std::sync::{Arc, mpsc};

use bytes::Bytes;

use crate::fanout::RateClass;

use super::Room;
use super::members::{RoomMember, SubRoom};

/// Frames of one room a fanout thread delivers before serving other rooms.
const FRAMES_PER_TURN: usize = 8;
/// Sessions whose queues are touched ahead of the pushes.
const TOUCH_AHEAD: usize = 16;
/// Names of the rate classes, for thread names.
const CLASS_NAMES: [&str; 3] = ["fast", "medium", "slow"];

/// A room with frames waiting, as a fanout thread sees it.
pub(super) trait FanoutTurn: Send + Sync + 'static {
    /// Which fanout thread of its rate class serves it: always the same
    /// one, so its frames stay in order.
    fn thread_slot(&self) -> usize;
    /// Delivers up to a turn's worth of frames; queues itself again if more wait.
    fn run_turn(self: Arc<Self>);
}

/// A fanout thread's queue of rooms to serve.
type TurnSender = mpsc::Sender<Arc<dyn FanoutTurn>>;

/// The fanout threads of rooms, a few per rate class. A room is served by
/// one thread at a time; huge rooms (the slow class) can take at most the
/// slow class's threads, and direct and group chat never wait for any.
pub(crate) struct FanoutStage {
    /// The threads of each rate class, indexed by [`RateClass`].
    threads: [Vec<TurnSender>; 3],
}

impl FanoutStage {
    /// Starts `threads[class]` fanout threads per rate class (at least one each).
    pub(crate) fn start(threads: [usize; 3]) -> Arc<Self> {
        let threads = std::array::from_fn(|class| {
            (0..threads[class].max(1))
                .filter_map(|i| spawn_fanout_thread(CLASS_NAMES[class], i))
                .collect()
        });
        Arc::new(Self { threads })
    }

    /// A stage with no threads: frames wait until [`FanoutTurn::run_turn`]
    /// is called by hand (benches, tests).
    #[cfg(any(test, feature = "bench"))]
    pub(crate) fn manual() -> Arc<Self> {
        Arc::new(Self {
            threads: [Vec::new(), Vec::new(), Vec::new()],
        })
    }

    /// Queues a room on its fanout thread of `class`.
    pub(super) fn submit(&self, class: RateClass, room: Arc<dyn FanoutTurn>) {
        let threads = &self.threads[class as usize];
        if threads.is_empty() {
            return;
        }
        // A room always goes to the same thread of its class.
        let i = room.thread_slot() % threads.len();
        if threads[i].send(room).is_err() {
            tracing::warn!("fanout thread gone");
        }
    }
}

/// Starts fanout thread `i` of a rate class; None (logged) if the OS refuses.
fn spawn_fanout_thread(class: &str, i: usize) -> Option<TurnSender> {
    let (tx, rx) = mpsc::channel::<Arc<dyn FanoutTurn>>();
    let spawned = std::thread::Builder::new()
        .name(format!("im-fanout-{class}-{i}"))
        .spawn(move || fanout_thread(rx));
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::error!(error = %e, "cannot start a fanout thread");
            None
        }
    }
}

/// One fanout thread: serves a turn of each room queued on it.
fn fanout_thread(rx: mpsc::Receiver<Arc<dyn FanoutTurn>>) {
    while let Ok(room) = rx.recv() {
        room.run_turn();
    }
}

impl<M: RoomMember> FanoutTurn for Room<M> {
    /// The room's fanout thread of its rate class.
    fn thread_slot(&self) -> usize {
        self.thread_slot
    }

    /// Delivers up to a turn's worth of backlog; requeues the room if more waits.
    fn run_turn(self: Arc<Self>) {
        for _ in 0..FRAMES_PER_TURN {
            let next = self.flow.lock().next_frame();
            let Some(frame) = next else {
                // Idle: a merge that waited for deliveries can run now.
                self.try_merge(&mut self.members.lock());
                return;
            };
            let sessions = self.deliver(&frame.bytes);
            metrics::counter!("im_room_frames_total").increment(1);
            metrics::counter!("im_deliveries_total")
                .increment(sessions as u64 * u64::from(frame.messages));
        }
        let class = self.flow.lock().rate_class();
        self.stage.clone().submit(class, self);
    }
}

impl<M: RoomMember> Room<M> {
    /// Queues the same bytes to every session of every sub-room; returns
    /// how many sessions took them.
    pub(crate) fn deliver(&self, frame: &Bytes) -> usize {
        let _delivering = self.gate.read();
        let subs = self.members.lock().sub_rooms();
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
}

/// Queues `frame` to every session of these sub-rooms.
fn deliver_subs<M: RoomMember>(subs: &[Arc<SubRoom<M>>], frame: &Bytes) -> usize {
    subs.iter()
        .map(|sub| deliver_to(&sub.sessions.lock(), frame))
        .sum()
}

/// Queues `frame` to each session. Pushes take a lock (a fence), so their
/// cache misses would be paid one after another: a plain read of each queue
/// of the next run first lets those misses overlap.
fn deliver_to<M: RoomMember>(sessions: &[Arc<M>], frame: &Bytes) -> usize {
    let mut n = 0;
    for run in sessions.chunks(TOUCH_AHEAD) {
        let mut busy = false;
        for s in run {
            busy |= s.touch_queue();
        }
        std::hint::black_box(busy);
        for s in run {
            n += usize::from(s.queue_frame(frame.clone()));
        }
    }
    n
}

//! Fanout of big groups off the shard worker.
//!
//! A group above the fast class (more than `fast_max` members by default)
//! may have many live sessions; pushing to all of them inline would hold up
//! every other conversation of its shard. Its frames go to this lane — one
//! task per shard, first in first out, so a group's frames keep their order.
//! A group keeps using the lane while it has frames waiting there, so a
//! later inline delivery can never overtake an earlier queued one.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::ids::{ChannelId, ConversationId, Seq};
use crate::store::StoredMessage;

use super::Shared;
use super::session::{Outgoing, Tally};

/// One conversation's committed messages, encoded once, on their way to
/// the live sessions of a group (inline or through the lane).
pub(crate) struct LaneFrame {
    /// The encoded `Push` (or `Notify` when `notify_only`).
    frame: Bytes,
    /// Highest seq in the frame.
    last_seq: Seq,
    /// Commit time of the batch, ms since the epoch.
    commit_ms: i64,
    /// The fanout plan said notify.
    notify_only: bool,
}

impl LaneFrame {
    /// The frame for `msgs` (in seq order, at least one).
    pub(crate) fn new(frame: Bytes, msgs: &[StoredMessage], notify_only: bool) -> Self {
        let last = msgs.last();
        Self {
            frame,
            last_seq: last.map_or(0, |m| m.seq),
            commit_ms: last.map_or(0, |m| m.server_time_ms),
            notify_only,
        }
    }

    /// What each session is handed.
    pub(crate) fn outgoing<'a>(&'a self, conversation: &'a ConversationId) -> Outgoing<'a> {
        Outgoing {
            conversation,
            last_seq: self.last_seq,
            commit_ms: self.commit_ms,
            frame: &self.frame,
            notify_only: self.notify_only,
        }
    }
}

/// Frames queued per shard before the shard worker waits for the lane.
const LANE_FRAMES: usize = 1024;

/// The sending side, owned by a shard worker.
pub(crate) struct GroupLane {
    tx: mpsc::Sender<(ChannelId, LaneFrame)>,
    /// Frames waiting in the lane, per group.
    waiting: Arc<Mutex<HashMap<ChannelId, usize>>>,
}

impl GroupLane {
    /// Starts the lane's task.
    pub(crate) fn start(shared: Arc<Shared>) -> Self {
        let (tx, rx) = mpsc::channel(LANE_FRAMES);
        let waiting = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(run(shared, rx, waiting.clone()));
        Self { tx, waiting }
    }

    /// True if the group has frames waiting in the lane.
    pub(crate) fn is_busy(&self, group: &ChannelId) -> bool {
        self.waiting.lock().contains_key(group)
    }

    /// Queues a frame for every live session of the group (waits while the
    /// lane is full: back-pressure on the shard, never unbounded memory).
    pub(crate) async fn push(&self, group: ChannelId, frame: LaneFrame) {
        *self.waiting.lock().entry(group.clone()).or_insert(0) += 1;
        if let Err(mpsc::error::SendError((group, _))) = self.tx.send((group, frame)).await {
            done(&self.waiting, &group);
        }
    }
}

fn done(waiting: &Mutex<HashMap<ChannelId, usize>>, group: &ChannelId) {
    let mut w = waiting.lock();
    if let Some(n) = w.get_mut(group) {
        *n -= 1;
        if *n == 0 {
            w.remove(group);
        }
    }
}

async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<(ChannelId, LaneFrame)>,
    waiting: Arc<Mutex<HashMap<ChannelId, usize>>>,
) {
    while let Some((group, frame)) = rx.recv().await {
        // Snapshot the sessions so the index lock is not held while pushing.
        let sessions = shared
            .registry
            .with_group(&group, |it| it.cloned().collect::<Vec<_>>());
        let conv = ConversationId::Group(group.clone());
        let out = frame.outgoing(&conv);
        let mut tally = Tally::default();
        for s in &sessions {
            tally.add(s.deliver(&out));
        }
        tally.record();
        done(&waiting, &group);
        // Let the runtime serve other tasks between big deliveries.
        tokio::task::yield_now().await;
    }
}

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

use crate::ids::ChannelId;

use super::Shared;

/// Frames queued per shard before the shard worker waits for the lane.
const LANE_FRAMES: usize = 1024;

/// The sending side, owned by a shard worker.
pub(crate) struct GroupLane {
    tx: mpsc::Sender<(ChannelId, Bytes)>,
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
    pub(crate) async fn push(&self, group: ChannelId, frame: Bytes) {
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
    mut rx: mpsc::Receiver<(ChannelId, Bytes)>,
    waiting: Arc<Mutex<HashMap<ChannelId, usize>>>,
) {
    while let Some((group, frame)) = rx.recv().await {
        // Snapshot the sessions so the index lock is not held while pushing.
        let sessions = shared
            .registry
            .with_group(&group, |it| it.cloned().collect::<Vec<_>>());
        let delivered = sessions.iter().filter(|s| s.send(frame.clone())).count();
        metrics::counter!("im_deliveries_total").increment(delivered as u64);
        done(&waiting, &group);
        // Let the runtime serve other tasks between big deliveries.
        tokio::task::yield_now().await;
    }
}

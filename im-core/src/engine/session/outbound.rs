//! A session's outbound queue: bounded in bytes, drained in one write.

use std::collections::VecDeque;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::transport::CloseReason;

/// What happened to a frame offered to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// Queued for the writer.
    Queued,
    /// The queue would exceed its byte bound: the frame was dropped and the
    /// session is now closing as a slow consumer.
    Overflow,
    /// The session is closing; the frame was dropped.
    Closed,
}

/// What happens to frames still queued when a session starts closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueuedFrames {
    /// Write them before the last frame: the session ends in order.
    Flush,
    /// Drop them: the peer is too slow to read them anyway.
    Discard,
}

/// The queue behind the lock.
#[derive(Default)]
struct State {
    /// The oldest queued frame, kept inline: a fanout to a million idle
    /// sessions then touches one cache line per session, not two.
    first: Option<Bytes>,
    /// Frames after `first`.
    frames: VecDeque<Bytes>,
    /// Bytes of every queued frame.
    bytes: usize,
    /// Set once closing: the reason the writer closes the connection with.
    closing: Option<CloseReason>,
}

impl State {
    /// Appends a frame.
    fn enqueue(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        if self.first.is_none() && self.frames.is_empty() {
            self.first = Some(frame);
        } else {
            self.frames.push_back(frame);
        }
    }

    /// True if no frame is queued.
    fn is_empty(&self) -> bool {
        self.first.is_none() && self.frames.is_empty()
    }

    /// Moves every queued frame into `out`, oldest first.
    fn take_into(&mut self, out: &mut Vec<Bytes>) {
        out.extend(self.first.take());
        out.extend(self.frames.drain(..));
        self.bytes = 0;
    }
}

/// Frames waiting for a session's writer.
pub(crate) struct Outbound {
    /// The queue itself.
    state: Mutex<State>,
    /// Wakes the writer when the first frame of a burst arrives or on close.
    wake: Notify,
    /// Most bytes queued at once.
    max_bytes: usize,
}

impl Outbound {
    /// An empty queue holding at most `max_bytes`.
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            max_bytes,
        }
    }

    /// The reason the queue is closing with, once it is.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.state.lock().closing.clone()
    }

    /// Queues a frame unless that would pass the byte bound.
    pub(crate) fn push(&self, frame: Bytes) -> Enqueued {
        let mut st = self.state.lock();
        if st.closing.is_some() {
            return Enqueued::Closed;
        }
        if st.bytes + frame.len() > self.max_bytes {
            return Enqueued::Overflow;
        }
        // Only the first frame of a burst wakes the writer: it drains
        // everything queued once it runs (a stored permit covers the race
        // with a writer about to wait).
        let was_empty = st.is_empty();
        st.enqueue(frame);
        drop(st);
        if was_empty {
            self.wake.notify_one();
        }
        Enqueued::Queued
    }

    /// Starts closing: frames already queued are flushed or discarded (a
    /// slow consumer) as `queued` says, then `last` (e.g. a `Kicked` frame) is
    /// written and the connection closed with `reason`. Returns false if
    /// already closing.
    pub(crate) fn close(
        &self,
        last: Option<Bytes>,
        reason: CloseReason,
        queued: QueuedFrames,
    ) -> bool {
        let mut st = self.state.lock();
        if st.closing.is_some() {
            return false;
        }
        if queued == QueuedFrames::Discard {
            st.first = None;
            st.frames.clear();
            st.bytes = 0;
        }
        if let Some(frame) = last {
            st.enqueue(frame);
        }
        st.closing = Some(reason);
        drop(st);
        self.wake.notify_one();
        true
    }

    /// Waits until frames are queued or the queue is closing, then moves every
    /// queued frame into `out`. Returns the close reason once the queue is
    /// closing (after its last frames were handed out).
    pub(crate) async fn drain(&self, out: &mut Vec<Bytes>) -> Option<CloseReason> {
        loop {
            {
                let mut st = self.state.lock();
                if !st.is_empty() {
                    st.take_into(out);
                    return st.closing.clone();
                }
                if let Some(reason) = &st.closing {
                    return Some(reason.clone());
                }
            }
            self.wake.notified().await;
        }
    }

    /// Moves every queued frame into `out` without waiting (benches, tests).
    #[cfg(any(test, feature = "bench"))]
    pub(crate) fn take_all(&self, out: &mut Vec<Bytes>) {
        self.state.lock().take_into(out);
    }

    /// Reads the queue's lock word without taking it: a plain load that
    /// brings the queue's cache line in ahead of a push (fanout loops touch
    /// a run of sessions first so their cache misses overlap).
    #[inline]
    pub(crate) fn touch(&self) -> bool {
        self.state.is_locked()
    }

    /// Bytes currently queued.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.state.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::CloseCode;

    #[tokio::test]
    async fn drains_everything_in_one_batch_and_respects_the_bound() {
        let q = Outbound::new(10);
        assert_eq!(q.push(Bytes::from_static(b"abcd")), Enqueued::Queued);
        assert_eq!(q.push(Bytes::from_static(b"efgh")), Enqueued::Queued);
        assert_eq!(q.push(Bytes::from_static(b"ijk")), Enqueued::Overflow);
        assert_eq!(q.queued_bytes(), 8);
        let mut out = Vec::new();
        assert_eq!(q.drain(&mut out).await, None);
        assert_eq!(out.len(), 2);
        assert_eq!(q.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn closing_keeps_the_last_frame_and_refuses_more() {
        let q = Outbound::new(100);
        q.push(Bytes::from_static(b"old"));
        let reason = CloseReason::new(CloseCode::Policy, "slow");
        assert!(q.close(
            Some(Bytes::from_static(b"bye")),
            reason.clone(),
            QueuedFrames::Discard
        ));
        assert_eq!(q.push(Bytes::from_static(b"late")), Enqueued::Closed);
        let mut out = Vec::new();
        assert_eq!(q.drain(&mut out).await, Some(reason));
        assert_eq!(out, vec![Bytes::from_static(b"bye")]);
    }
}

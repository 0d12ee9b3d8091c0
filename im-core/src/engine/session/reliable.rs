//! The reliable last hop, driven: pushes to `push_acks` sessions go through
//! their [`InFlight`] state machine, the session task resends on one timer,
//! and `Ack`s move the machine at once while the delivered cursors they
//! imply are written to the store in coalesced batches.
//!
//! Sessions without push acks never reach this code beyond one branch:
//! their pushes are queued as before and their `Ack`s handled by
//! `cursors.rs`, one store round trip each, as before.

use std::collections::HashMap;
use std::pin::Pin;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::ids::{ConversationId, Seq, now_ms};
use crate::log_limit::LogLimit;
use crate::pb::{self, server_frame::Body as Out};
use crate::store::CursorUpdate;

use super::in_flight::{Batch, InFlight, InFlightConfig, Offer, Resend, Tick};
use super::{QueuedFrames, RequestError, RequestResult, Session, SessionHandle};

/// Conversations whose delivered cursors a session may hold unwritten; one
/// more writes them at once.
const PENDING_CURSORS_MAX: usize = 1024;

/// A `push_acks` session's in-flight state and the wake-up of its timer.
pub(crate) struct Acks {
    state: Mutex<AckState>,
    /// Wakes the session task when something falls due before its timer.
    wake: Notify,
}

/// Behind the lock.
struct AckState {
    in_flight: InFlight<ConversationId, Bytes>,
    /// When the session task's timer fires (`None`: not armed).
    armed: Option<std::time::Instant>,
}

impl Acks {
    /// Nothing in flight yet.
    pub(crate) fn new(config: InFlightConfig) -> Self {
        Self {
            state: Mutex::new(AckState {
                in_flight: InFlight::new(config),
                armed: None,
            }),
            wake: Notify::new(),
        }
    }
}

/// The clock of the state machine: tokio's, so tests on a paused clock see
/// the schedule move with it.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// One conversation's committed messages on their way to a session.
pub(crate) struct Outgoing<'a> {
    /// The conversation.
    pub(crate) conversation: &'a ConversationId,
    /// The highest seq in the frame.
    pub(crate) last_seq: Seq,
    /// Commit time of the batch, ms since the epoch.
    pub(crate) commit_ms: i64,
    /// The encoded `Push` (or, if `notify_only`, the encoded `Notify`).
    pub(crate) frame: &'a Bytes,
    /// The fanout plan said notify for this conversation.
    pub(crate) notify_only: bool,
}

/// What reaching one session did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// Queued, best effort (a session without push acks).
    Sent,
    /// Queued and tracked until acknowledged.
    Tracked,
    /// A `Notify` queued instead, tracked until acknowledged.
    Notified,
    /// Nothing queued (coalesced into an outstanding notify, already
    /// acknowledged, or the session is closing).
    Nothing,
}

/// Counts of one fanout, recorded as metrics once.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    /// Frames queued to sessions.
    pub(crate) delivered: u64,
    /// Of those, pushes tracked for an ack.
    tracked: u64,
    /// Of those, notifies sent instead of a push.
    notified: u64,
}

impl Tally {
    /// Counts one session's outcome.
    pub(crate) fn add(&mut self, d: Delivered) {
        match d {
            Delivered::Sent => self.delivered += 1,
            Delivered::Tracked => {
                self.delivered += 1;
                self.tracked += 1;
            }
            Delivered::Notified => {
                self.delivered += 1;
                self.notified += 1;
            }
            Delivered::Nothing => {}
        }
    }

    /// Records the counts.
    pub(crate) fn record(self) {
        metrics::counter!("im_deliveries_total").increment(self.delivered);
        if self.tracked > 0 {
            metrics::counter!("im_push_acks_sent_total").increment(self.tracked);
        }
        if self.notified > 0 {
            metrics::counter!("im_push_acks_notifies_total").increment(self.notified);
        }
    }
}

impl SessionHandle {
    /// Hands committed messages to this session: queued as they are for a
    /// session without push acks; through the in-flight state machine for
    /// one with them (pushed and tracked, or a `Notify` while earlier pushes
    /// of the conversation are unacknowledged).
    pub(crate) fn deliver(&self, o: &Outgoing<'_>) -> Delivered {
        let Some(acks) = &self.acks else {
            return if self.send(o.frame.clone()) {
                Delivered::Sent
            } else {
                Delivered::Nothing
            };
        };
        let now = now();
        let batch = Batch {
            last_seq: o.last_seq,
            frame: o.frame.clone(),
            bytes: o.frame.len(),
            commit_ms: o.commit_ms,
            notify_only: o.notify_only,
        };
        let mut st = acks.state.lock();
        let (frame, delivered) = match st.in_flight.offer(o.conversation, batch, now) {
            Offer::Push(frame) => (frame, Delivered::Tracked),
            Offer::Notify(head) => (self.notify_frame(o.conversation, head), Delivered::Notified),
            Offer::Coalesced | Offer::Stale => return Delivered::Nothing,
            Offer::Overflow => {
                drop(st);
                self.ack_timeout(
                    "overflow",
                    "too many unacknowledged pushes: reconnect and catch up",
                );
                return Delivered::Nothing;
            }
        };
        // Queued under the lock: a resend or an ack of this conversation
        // never sees the machine ahead of the queue.
        if !self.send(frame) {
            return Delivered::Nothing;
        }
        let due = st.in_flight.first_due(now);
        if st.armed.is_none_or(|a| due < a) {
            st.armed = Some(due);
            acks.wake.notify_one();
        }
        delivered
    }

    /// A `Notify{conversation, head}` as this session names the conversation.
    fn notify_frame(&self, conv: &ConversationId, head: Seq) -> Bytes {
        crate::codec::encode_server_frame(&crate::codec::server_frame(
            0,
            Out::Notify(pb::Notify {
                conversation: Some(conv.to_wire(&self.user)),
                head_seq: head,
            }),
        ))
    }

    /// Closes the session for leaving pushes unacknowledged.
    fn ack_timeout(&self, cause: &'static str, detail: &str) {
        metrics::counter!("im_push_ack_timeouts_total", "cause" => cause).increment(1);
        static TIMEOUTS: LogLimit = LogLimit::per_second(5);
        if let Some(suppressed) = TIMEOUTS.allow() {
            tracing::info!(session = self.id.0, user = %self.user, cause, suppressed, "push ack timeout");
        }
        self.kick(pb::KickReason::AckTimeout, detail, QueuedFrames::Flush);
    }
}

/// A session's delivered cursors moved by `Ack`s and not yet written.
#[derive(Default)]
pub(super) struct PendingCursors {
    /// Highest acked seq per conversation.
    seqs: HashMap<ConversationId, Seq>,
    /// When they must be written.
    due: Option<Instant>,
}

/// The session task's one timer for the reliable last hop, and the wake-up
/// that re-arms it. Both are kept across reads (a frame does not cost a
/// timer registration); a session without push acks never arms it.
pub(super) struct Timer<'a> {
    /// The session's in-flight state, if it acks pushes.
    acks: Option<&'a Acks>,
    /// Allocated on first use.
    sleep: Option<Pin<Box<Sleep>>>,
    /// False: the timer is off.
    armed: bool,
    /// Waits for a push due before the timer.
    woken: Option<Pin<Box<Notified<'a>>>>,
}

impl<'a> Timer<'a> {
    /// The timer of `handle`'s session, off.
    pub(super) fn new(handle: &'a SessionHandle) -> Self {
        let acks = handle.acks.as_deref();
        Self {
            acks,
            sleep: None,
            armed: false,
            woken: acks.map(|a| Box::pin(a.wake.notified())),
        }
    }

    /// Sets the timer to `deadline`, or off.
    pub(super) fn set(&mut self, deadline: Option<Instant>) {
        self.armed = deadline.is_some();
        let Some(d) = deadline else {
            return;
        };
        match &mut self.sleep {
            Some(s) if s.deadline() == d => {}
            Some(s) => s.as_mut().reset(d),
            None => self.sleep = Some(Box::pin(sleep_until(d))),
        }
    }

    /// Waits until the timer fires (true) or a push asks for an earlier
    /// deadline (false); forever for a session without push acks.
    pub(super) async fn wait(&mut self) -> bool {
        let sleep = async {
            match (&mut self.sleep, self.armed) {
                (Some(s), true) => s.as_mut().await,
                _ => std::future::pending().await,
            }
        };
        let woken = async {
            match &mut self.woken {
                Some(w) => w.as_mut().await,
                None => std::future::pending().await,
            }
        };
        let fired = tokio::select! {
            _ = sleep => true,
            _ = woken => false,
        };
        if !fired && let Some(a) = self.acks {
            self.woken = Some(Box::pin(a.wake.notified()));
        }
        fired
    }
}

impl Session {
    /// When the session task must next wake for the reliable last hop (a
    /// resend, the timeout, or writing cursors).
    pub(super) fn reliable_deadline(&self) -> Option<Instant> {
        let armed = self
            .handle
            .acks
            .as_ref()
            .and_then(|a| a.state.lock().armed)
            .map(Instant::from_std);
        match (armed, self.cursors.due) {
            (Some(a), Some(c)) => Some(a.min(c)),
            (a, c) => a.or(c),
        }
    }

    /// The timer fired: resend what is due (or close the session if
    /// something went unacknowledged through every resend), and write the
    /// cursors if their time came. Returns false once the session is over.
    pub(super) async fn on_reliable_timer(&mut self) -> bool {
        if self.cursors.due.is_some_and(|d| d <= Instant::now()) {
            self.flush_cursors().await;
        }
        let Some(acks) = &self.handle.acks else {
            return true;
        };
        let mut resends = Vec::new();
        let mut st = acks.state.lock();
        if st.armed.is_none_or(|a| a > now()) {
            return true;
        }
        if st.in_flight.tick(now(), &mut resends) == Tick::Expired {
            drop(st);
            let waits = self.engine.shared().config.push_ack_waits.len();
            self.handle.ack_timeout(
                "timeout",
                &format!(
                    "pushes unacknowledged after {} resends: reconnect and catch up",
                    waits.saturating_sub(1)
                ),
            );
            return false;
        }
        st.armed = st.in_flight.next_due();
        for r in resends {
            let (frame, attempt) = match r {
                Resend::Push { frame, attempt, .. } => (frame, attempt),
                Resend::Notify { key, head, attempt } => {
                    (self.handle.notify_frame(&key, head), attempt)
                }
            };
            metrics::counter!("im_push_resends_total", "attempt" => attempt.to_string())
                .increment(1);
            if !self.handle.send(frame) {
                return false;
            }
        }
        true
    }

    /// An `Ack` in a session with push acks: the in-flight state moves at
    /// once; the delivered cursor is written with the next batch.
    pub(super) fn on_push_ack(&mut self, a: pb::Ack) -> RequestResult {
        let conv = self.conversation(a.conversation)?;
        self.authorize_known(&conv)?;
        if let Some(acks) = &self.handle.acks {
            let now_ms = now_ms();
            let mut acked = 0u64;
            let mut st = acks.state.lock();
            let renotify = st.in_flight.ack(&conv, a.seq, now(), |commit_ms| {
                acked += 1;
                let ms = now_ms.saturating_sub(commit_ms).max(0);
                metrics::histogram!("im_push_ack_latency_seconds").record(ms as f64 / 1000.0);
            });
            // Caught up with the last notify while the head moved on: say
            // so now rather than at the notify's resend. Under the lock, as
            // in `deliver`.
            if let Some(head) = renotify {
                metrics::counter!("im_push_acks_notifies_total").increment(1);
                self.handle.send(self.handle.notify_frame(&conv, head));
            }
            drop(st);
            if acked > 0 {
                metrics::counter!("im_push_acks_acked_total").increment(acked);
            }
        }
        if a.seq == 0 {
            return Ok(());
        }
        let seq = self.cursors.seqs.entry(conv).or_insert(0);
        *seq = (*seq).max(a.seq);
        let flush = self.engine.shared().config.ack_cursor_flush;
        self.cursors
            .due
            .get_or_insert_with(|| Instant::now() + flush);
        Ok(())
    }

    /// May this session move its cursor in `conv`? Answered from memory: the
    /// session's groups are indexed (and kept up to date on membership
    /// changes), its rooms known.
    fn authorize_known(&self, conv: &ConversationId) -> RequestResult {
        let allowed = match conv {
            ConversationId::Direct(..) => conv.is_direct_participant(&self.handle.user),
            ConversationId::Room(r) => self.handle.rooms.lock().contains(r),
            ConversationId::Group(g) => self.handle.groups.lock().contains(g),
        };
        if allowed {
            Ok(())
        } else {
            Err(RequestError::new(
                pb::ErrorCode::Forbidden,
                format!("not a member of {conv}"),
            ))
        }
    }

    /// True once the cursors must be written before waiting for more.
    pub(super) fn cursors_full(&self) -> bool {
        self.cursors.seqs.len() >= PENDING_CURSORS_MAX
    }

    /// Writes the delivered cursors acked since the last write: the highest
    /// seq per conversation, capped at its head (a cursor past the head
    /// would hide messages not sent yet), in one store call. Cursors only
    /// move forward in the store, so an older write never undoes a newer one.
    pub(super) async fn flush_cursors(&mut self) {
        self.cursors.due = None;
        if self.cursors.seqs.is_empty() {
            return;
        }
        let pending: Vec<(ConversationId, Seq)> = self.cursors.seqs.drain().collect();
        let store = self.engine.shared().store.clone();
        let convs: Vec<ConversationId> = pending.iter().map(|(c, _)| c.clone()).collect();
        let written = match store.head_seqs(&convs).await {
            Ok(heads) => {
                let updates: Vec<CursorUpdate> = pending
                    .iter()
                    .zip(heads)
                    .filter_map(|((conv, seq), head)| {
                        let seq = (*seq).min(head);
                        (seq > 0).then(|| CursorUpdate {
                            user: self.handle.user.clone(),
                            conversation: conv.clone(),
                            delivered: Some(seq),
                            read: None,
                        })
                    })
                    .collect();
                if updates.is_empty() {
                    Ok(())
                } else {
                    store.update_cursors(updates).await
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            metrics::counter!("im_ack_cursor_write_failures_total").increment(1);
            static FAILED: LogLimit = LogLimit::per_second(5);
            if let Some(suppressed) = FAILED.allow() {
                tracing::warn!(session = self.handle.id.0, error = %e, suppressed, "writing delivered cursors failed; retrying");
            }
            // Kept for the next write (merged with anything acked since).
            for (conv, seq) in pending {
                let s = self.cursors.seqs.entry(conv).or_insert(0);
                *s = (*s).max(seq);
            }
            let flush = self.engine.shared().config.ack_cursor_flush;
            self.cursors.due = Some(Instant::now() + flush);
        }
    }
}

//! What a `push_acks` session has been sent and not yet acknowledged: the
//! resend and push-vs-notify state machine of the reliable last hop.
//!
//! Pure: no IO, no clock, no tasks. Time comes in as an [`Instant`]; frames
//! are opaque values the caller sends (the engine's shared `Bytes`, resent
//! as they are, never encoded again). The session task drives it with one
//! timer set to [`InFlight::next_due`].
//!
//! Per conversation:
//! - with nothing outstanding, a new batch is **pushed** and tracked;
//! - while pushes (or a notify) are unacknowledged, newer batches become one
//!   **notice** ("the conversation is at seq N"): the first sends a
//!   `Notify`, later ones only raise its head (coalesced);
//! - an `Ack` of seq N drops every push whose last seq is at most N and the
//!   notice once N reaches its head; with nothing left, pushes resume. An
//!   ack that reaches the head the last `Notify` said while newer messages
//!   raised it since gets a fresh `Notify` at once;
//! - each tracked push and notice is resent after `waits[0]`, then
//!   `waits[1]`, … since its previous send; when the last wait passes with
//!   no ack the session has timed out ([`Tick::Expired`]).
//!
//! Bounded: at most `max_entries` pushes and notices and `max_bytes` of
//! push frames at once. A push that does not fit becomes a notice; a
//! notice that does not fit is [`Offer::Overflow`] (the caller closes the
//! session; the messages stay in the store for catch-up).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ids::Seq;

/// The bounds and the resend schedule, shared by every session of an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InFlightConfig {
    /// Waits after a send before the next resend; after the last one the
    /// session has timed out. Never empty (an empty schedule is read as
    /// one wait of [`FALLBACK_WAIT`]).
    pub(crate) waits: Arc<[Duration]>,
    /// Most pushes and notices tracked at once.
    pub(crate) max_entries: usize,
    /// Most bytes of push frames tracked at once.
    pub(crate) max_bytes: usize,
}

/// The wait used when a configuration names no schedule at all.
pub(crate) const FALLBACK_WAIT: Duration = Duration::from_secs(10);

impl InFlightConfig {
    /// The wait after send number `attempt` (0: the original send).
    fn wait(&self, attempt: u32) -> Duration {
        self.waits
            .get(attempt as usize)
            .copied()
            .unwrap_or(FALLBACK_WAIT)
    }

    /// Resends before the session times out.
    pub(crate) fn resends(&self) -> u32 {
        self.waits.len().saturating_sub(1) as u32
    }
}

/// One conversation's new messages, as offered to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch<F> {
    /// The highest seq in the batch.
    pub(crate) last_seq: Seq,
    /// The encoded push.
    pub(crate) frame: F,
    /// The frame's size, for the byte bound.
    pub(crate) bytes: usize,
    /// Commit time of the batch (ms since the epoch), reported on its ack.
    pub(crate) commit_ms: i64,
    /// The fanout plan said notify, not push.
    pub(crate) notify_only: bool,
}

/// What to send for an offered batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Offer<F> {
    /// Send this push; it is tracked until acknowledged.
    Push(F),
    /// Send a `Notify` with this head; it is tracked until acknowledged.
    Notify(Seq),
    /// A notice is already outstanding; its head was raised. Send nothing.
    Coalesced,
    /// The session already acknowledged past it. Send nothing.
    Stale,
    /// The bounds are reached even for a notice: close the session.
    Overflow,
}

/// Something to send again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resend<K, F> {
    /// The same push frame, for the `attempt`-th time (1 = first resend).
    Push {
        /// The conversation.
        key: K,
        /// The frame as first sent.
        frame: F,
        /// Resend number.
        attempt: u32,
    },
    /// A `Notify` with the conversation's current head.
    Notify {
        /// The conversation.
        key: K,
        /// The newest seq the session was told of.
        head: Seq,
        /// Resend number.
        attempt: u32,
    },
}

/// The outcome of a timer tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tick {
    /// Resends (if any) were handed out.
    Ok,
    /// Something went unacknowledged through every resend: close the session.
    Expired,
}

/// A tracked push.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pushed<F> {
    last_seq: Seq,
    frame: F,
    bytes: usize,
    commit_ms: i64,
    /// Resends so far.
    attempt: u32,
    due: Instant,
}

/// A tracked notice: the session was told the conversation moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Notice {
    /// The newest seq of the conversation.
    head: Seq,
    /// The head the last `Notify` sent said.
    sent: Seq,
    attempt: u32,
    due: Instant,
}

/// One conversation with something outstanding.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Conv<F> {
    /// Highest seq the session acknowledged while this entry lived.
    acked: Seq,
    /// Unacknowledged pushes, oldest first.
    pushes: Vec<Pushed<F>>,
    notice: Option<Notice>,
}

impl<F> Conv<F> {
    fn is_clean(&self) -> bool {
        self.pushes.is_empty() && self.notice.is_none()
    }
}

/// A session's unacknowledged pushes and notices (see the module comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InFlight<K: Hash + Eq, F> {
    config: InFlightConfig,
    /// Only conversations with something outstanding.
    convs: HashMap<K, Conv<F>>,
    entries: usize,
    bytes: usize,
}

impl<K: Hash + Eq + Clone, F: Clone> InFlight<K, F> {
    /// Nothing in flight.
    pub(crate) fn new(config: InFlightConfig) -> Self {
        Self {
            config,
            convs: HashMap::new(),
            entries: 0,
            bytes: 0,
        }
    }

    /// Pushes and notices tracked.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.entries
    }

    /// Bytes of tracked push frames.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// True if nothing is outstanding.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Decides how a conversation's new batch reaches the session, and
    /// tracks what is sent.
    pub(crate) fn offer(&mut self, key: &K, batch: Batch<F>, now: Instant) -> Offer<F> {
        let fits_push = self.entries < self.config.max_entries
            && self.bytes + batch.bytes <= self.config.max_bytes;
        let fits_notice = self.entries < self.config.max_entries;
        let due = self.first_due(now);
        if let Some(conv) = self.convs.get_mut(key) {
            if batch.last_seq <= conv.acked {
                return Offer::Stale;
            }
            if let Some(n) = &mut conv.notice {
                n.head = n.head.max(batch.last_seq);
                return Offer::Coalesced;
            }
            // Pushes outstanding: this batch waits behind them as a notice.
            if !fits_notice {
                return Offer::Overflow;
            }
            conv.notice = Some(Notice {
                head: batch.last_seq,
                sent: batch.last_seq,
                attempt: 0,
                due,
            });
            self.entries += 1;
            return Offer::Notify(batch.last_seq);
        }
        if batch.notify_only || !fits_push {
            if !fits_notice {
                return Offer::Overflow;
            }
            self.convs.insert(
                key.clone(),
                Conv {
                    acked: 0,
                    pushes: Vec::new(),
                    notice: Some(Notice {
                        head: batch.last_seq,
                        sent: batch.last_seq,
                        attempt: 0,
                        due,
                    }),
                },
            );
            self.entries += 1;
            return Offer::Notify(batch.last_seq);
        }
        self.entries += 1;
        self.bytes += batch.bytes;
        let frame = batch.frame.clone();
        self.convs.insert(
            key.clone(),
            Conv {
                acked: 0,
                pushes: vec![Pushed {
                    last_seq: batch.last_seq,
                    frame: batch.frame,
                    bytes: batch.bytes,
                    commit_ms: batch.commit_ms,
                    attempt: 0,
                    due,
                }],
                notice: None,
            },
        );
        Offer::Push(frame)
    }

    /// The session acknowledged the conversation up to `seq`: drops every
    /// push ending at or below it (`acked` is called with each one's commit
    /// time) and the notice once `seq` reaches its head. An ack below the
    /// notice's head restarts the notice's schedule (the client is
    /// pulling); if it reaches the head the last `Notify` said, the head
    /// moved on since and the caller must send a `Notify` with the returned
    /// head now. Repeated or older acks change nothing.
    pub(crate) fn ack(
        &mut self,
        key: &K,
        seq: Seq,
        now: Instant,
        mut acked: impl FnMut(i64),
    ) -> Option<Seq> {
        let conv = self.convs.get_mut(key)?;
        if seq <= conv.acked {
            return None;
        }
        conv.acked = seq;
        let (mut entries, mut bytes) = (0, 0);
        conv.pushes.retain(|p| {
            let keep = p.last_seq > seq;
            if !keep {
                entries += 1;
                bytes += p.bytes;
                acked(p.commit_ms);
            }
            keep
        });
        let mut renotify = None;
        if let Some(n) = &mut conv.notice {
            if n.head <= seq {
                conv.notice = None;
                entries += 1;
            } else {
                n.attempt = 0;
                n.due = now + self.config.wait(0);
                if seq >= n.sent {
                    n.sent = n.head;
                    renotify = Some(n.head);
                }
            }
        }
        self.entries -= entries;
        self.bytes -= bytes;
        if conv.is_clean() {
            self.convs.remove(key);
        }
        renotify
    }

    /// When something sent at `now` is first due again.
    pub(crate) fn first_due(&self, now: Instant) -> Instant {
        now + self.config.wait(0)
    }

    /// When the next resend (or the timeout) is due, if anything is tracked.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.convs
            .values()
            .flat_map(|c| {
                c.pushes
                    .iter()
                    .map(|p| p.due)
                    .chain(c.notice.map(|n| n.due))
            })
            .min()
    }

    /// Hands out (into `out`) everything due by `now`, each conversation's
    /// pushes oldest first, and schedules the next resend; or says the
    /// session timed out.
    pub(crate) fn tick(&mut self, now: Instant, out: &mut Vec<Resend<K, F>>) -> Tick {
        let config = &self.config;
        let last = config.resends();
        for (key, conv) in &mut self.convs {
            for p in conv.pushes.iter_mut().filter(|p| p.due <= now) {
                if p.attempt >= last {
                    return Tick::Expired;
                }
                p.attempt += 1;
                p.due = now + config.wait(p.attempt);
                out.push(Resend::Push {
                    key: key.clone(),
                    frame: p.frame.clone(),
                    attempt: p.attempt,
                });
            }
            if let Some(n) = conv.notice.as_mut().filter(|n| n.due <= now) {
                if n.attempt >= last {
                    return Tick::Expired;
                }
                n.attempt += 1;
                n.due = now + config.wait(n.attempt);
                n.sent = n.head;
                out.push(Resend::Notify {
                    key: key.clone(),
                    head: n.head,
                    attempt: n.attempt,
                });
            }
        }
        Tick::Ok
    }
}

#[cfg(test)]
mod tests;

//! One conversation's delivery state: local dedup by seq, gap detection and
//! the next range to pull. Pure.

use std::collections::BTreeMap;

use im_core::pb;

/// Out-of-order messages kept per conversation while a gap is pulled; past
/// this the highest are dropped (they are pulled again later).
pub const MAX_BUFFERED: usize = 1024;

/// What became of an offered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Already delivered (or buffered): a repeat, ignored.
    Duplicate,
    /// Delivered, possibly with buffered successors.
    Delivered,
    /// Kept until the gap before it is filled.
    Buffered,
}

/// Delivery state of one conversation.
///
/// Invariant: every seq `<= delivered` was handed to the user exactly once
/// (or reported lost to retention); `buffered` holds only seqs
/// `> delivered + 1`; `known_head >= delivered`.
#[derive(Debug, Clone, Default)]
pub struct Track {
    delivered: u64,
    known_head: u64,
    buffered: BTreeMap<u64, pb::Message>,
    pull_in_flight: bool,
    /// The last seq the outstanding (or last) pull asked for.
    pull_until: u64,
    acked: u64,
    /// A room joined for the first time: where it starts is not known until
    /// `RoomJoined` says its head; messages wait until then.
    awaiting_baseline: bool,
    /// `known_head` when a pull brought nothing: no pull until it moves.
    stalled_at: Option<u64>,
}

impl Track {
    /// A conversation delivered up to `delivered`.
    pub fn new(delivered: u64) -> Self {
        Self {
            delivered,
            known_head: delivered,
            ..Self::default()
        }
    }

    /// A room joined for the first time: nothing is delivered or pulled
    /// until [`Track::set_baseline`].
    pub fn awaiting_baseline() -> Self {
        Self {
            awaiting_baseline: true,
            ..Self::default()
        }
    }

    /// Highest seq delivered without a gap.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Highest seq known to exist.
    pub fn known_head(&self) -> u64 {
        self.known_head
    }

    /// Whether a pull is outstanding.
    pub fn pull_in_flight(&self) -> bool {
        self.pull_in_flight
    }

    /// Messages held back behind a gap.
    pub fn buffered(&self) -> usize {
        self.buffered.len()
    }

    /// Whether the track waits for its room's baseline.
    pub fn is_awaiting_baseline(&self) -> bool {
        self.awaiting_baseline
    }

    /// Sets where a newly joined room starts (its head when joined): seqs at
    /// or below are history, not delivered; buffered successors are.
    pub fn set_baseline(&mut self, head: u64, out: &mut Vec<pb::Message>) {
        if !self.awaiting_baseline {
            return;
        }
        self.awaiting_baseline = false;
        self.skip_to(head);
        self.acked = self.acked.max(head);
        self.drain(out);
    }

    /// Offers a message; whatever became deliverable in order is appended
    /// to `out`.
    pub fn offer(&mut self, msg: pb::Message, out: &mut Vec<pb::Message>) -> Offered {
        let seq = msg.seq;
        if seq == 0 || seq <= self.delivered || self.buffered.contains_key(&seq) {
            return Offered::Duplicate;
        }
        self.known_head = self.known_head.max(seq);
        if seq == self.delivered + 1 && !self.awaiting_baseline {
            self.delivered = seq;
            out.push(msg);
            self.drain(out);
            return Offered::Delivered;
        }
        self.buffered.insert(seq, msg);
        while self.buffered.len() > MAX_BUFFERED {
            // Bounded memory: the highest come back with a later pull.
            self.buffered.pop_last();
        }
        Offered::Buffered
    }

    /// Learns that the conversation has at least `head` messages.
    pub fn observe_head(&mut self, head: u64) {
        self.known_head = self.known_head.max(head);
    }

    /// Whether messages are known to exist that were not delivered.
    pub fn is_behind(&self) -> bool {
        self.known_head > self.delivered
    }

    /// The range `(after, until]` to pull now, if behind and no pull is
    /// outstanding; marks the pull outstanding. It stops below the first
    /// buffered message so nothing held is fetched twice.
    pub fn next_pull(&mut self) -> Option<(u64, u64)> {
        if self.pull_in_flight
            || self.awaiting_baseline
            || !self.is_behind()
            || self.stalled_at == Some(self.known_head)
        {
            return None;
        }
        let until = match self.buffered.first_key_value() {
            Some((&first, _)) => first - 1,
            None => self.known_head,
        };
        if until <= self.delivered {
            return None;
        }
        self.pull_in_flight = true;
        self.pull_until = until;
        Some((self.delivered, until))
    }

    /// Applies a pull's answer. Returns the range lost to retention, if the
    /// server says history now starts past what was delivered.
    pub fn pull_answered(
        &mut self,
        result: pb::PullResult,
        out: &mut Vec<pb::Message>,
    ) -> Option<(u64, u64)> {
        self.pull_in_flight = false;
        let before = self.delivered;
        self.observe_head(result.head_seq);
        let mut lost = None;
        if result.history_start_seq > self.delivered + 1 {
            let until = result.history_start_seq - 1;
            lost = Some((self.delivered, until));
            self.skip_to(until);
            self.drain(out);
        }
        // A page cut short (`has_more`) that only repeated what pushes had
        // delivered meanwhile is progress enough: pull on from there.
        let cut_short = result.has_more && !result.messages.is_empty();
        for m in result.messages {
            self.offer(m, out);
        }
        if self.delivered == before
            && self.delivered < self.pull_until
            && lost.is_none()
            && !cut_short
        {
            // The server had nothing where it said there was something: do
            // not pull the same range forever; a higher head or a new
            // connection tries again.
            self.stalled_at = Some(self.known_head);
        }
        lost
    }

    /// The pull was refused or the connection is gone: it may be planned
    /// again (a new connection also retries a stalled range).
    pub fn pull_abandoned(&mut self) {
        self.pull_in_flight = false;
        self.stalled_at = None;
    }

    /// The pull was refused: no pull until the head moves, a new
    /// connection, or [`Track::unstall`].
    pub fn pull_failed(&mut self) {
        self.pull_in_flight = false;
        self.stalled_at = Some(self.known_head);
    }

    /// Allows pulling a stalled range again.
    pub fn unstall(&mut self) {
        self.stalled_at = None;
    }

    /// The seq to `Ack` if it moved since the last ack.
    pub fn take_ack(&mut self) -> Option<u64> {
        (self.delivered > self.acked).then(|| {
            self.acked = self.delivered;
            self.delivered
        })
    }

    /// Forces an `Ack` of the current position on the next [`Track::take_ack`]
    /// (after a push: the server wants one per pushed conversation).
    pub fn want_ack(&mut self) {
        if self.delivered > 0 {
            self.acked = self.acked.min(self.delivered - 1);
        }
    }

    /// Treats everything up to `seq` as delivered without delivering it.
    fn skip_to(&mut self, seq: u64) {
        if seq > self.delivered {
            self.delivered = seq;
            self.known_head = self.known_head.max(seq);
            self.buffered = self.buffered.split_off(&(seq + 1));
        }
    }

    /// Moves buffered successors of `delivered` to `out`.
    fn drain(&mut self, out: &mut Vec<pb::Message>) {
        while let Some(entry) = self.buffered.first_entry() {
            if *entry.key() != self.delivered + 1 {
                break;
            }
            self.delivered += 1;
            out.push(entry.remove());
        }
    }
}

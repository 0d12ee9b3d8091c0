//! The batching flow of one room: committed messages go into the hot ring
//! and through the batch window; due batches are encoded once into frames
//! that wait in the room's bounded backlog for the room's fanout thread.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::codec::{encode_server_frame, server_frame};
use crate::fanout::{Delivery, FanoutPlan, RateClass};
use crate::ids::ChannelId;
use crate::pb;
use crate::room::{BatchConfig, Batcher};
use crate::store::StoredMessage;

use super::super::wire::message_to_wire;
use super::Room;
use super::members::RoomMember;

/// A frame waiting for fanout, with how many messages it carries.
pub(super) struct Frame {
    /// The encoded frame, shared by every member.
    pub(super) bytes: Bytes,
    /// Messages in it (a notice counts as one).
    pub(super) messages: u32,
}

/// Frames waiting for fanout, in order, with their size in bytes.
#[derive(Default)]
struct Backlog {
    /// The frames, oldest first.
    frames: VecDeque<Frame>,
    /// Their total size.
    bytes: usize,
}

impl Backlog {
    /// Appends a frame.
    fn push(&mut self, frame: Frame) {
        self.bytes += frame.bytes.len();
        self.frames.push_back(frame);
    }

    /// Takes the oldest frame.
    fn pop(&mut self) -> Option<Frame> {
        let frame = self.frames.pop_front()?;
        self.bytes -= frame.bytes.len();
        Some(frame)
    }

    /// True if no frame waits.
    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Drops every waiting frame.
    fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }
}

/// Whether the room waits for, or is in, a turn of its fanout thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TurnState {
    /// Not queued: the next due frame queues the room.
    Idle,
    /// Queued on its fanout thread, or being served by it.
    Queued,
}

/// Whether a timer will flush the batch window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchTimer {
    /// None running: the next pending batch arms one.
    Unarmed,
    /// One is running and will poll the batcher.
    Armed,
}

/// The room's delivery state.
pub(super) struct Flow {
    /// The batch window.
    batcher: Batcher<StoredMessage>,
    /// Frames due, waiting for the fanout thread.
    backlog: Backlog,
    /// The plan of the latest commit.
    plan: Option<FanoutPlan>,
    /// Whether the room is queued on its fanout thread.
    turn: TurnState,
    /// Whether the batch window has a timer.
    timer: BatchTimer,
}

impl Flow {
    /// Nothing waiting yet.
    pub(super) fn new(batch: BatchConfig) -> Self {
        Self {
            batcher: Batcher::new(batch),
            backlog: Backlog::default(),
            plan: None,
            turn: TurnState::Idle,
            timer: BatchTimer::Unarmed,
        }
    }

    /// The rate class the room is served in.
    pub(super) fn rate_class(&self) -> RateClass {
        self.plan.map_or(RateClass::Slow, |p| p.rate_class)
    }

    /// Whether the room is queued on its fanout thread.
    #[cfg(test)]
    pub(super) fn turn(&self) -> TurnState {
        self.turn
    }

    /// The next frame for the fanout thread; with none left the room is
    /// idle again (the next due frame queues it).
    pub(super) fn next_frame(&mut self) -> Option<Frame> {
        let frame = self.backlog.pop();
        if frame.is_none() {
            self.turn = TurnState::Idle;
        }
        frame
    }
}

impl<M: RoomMember> Room<M> {
    /// Takes committed messages (in seq order): into the hot ring, through
    /// the batch window, out to the fanout thread.
    pub(super) fn commit(self: &Arc<Self>, msgs: Vec<StoredMessage>, plan: FanoutPlan) {
        self.hot.record(&msgs);
        let now = Instant::now();
        let mut flow = self.flow.lock();
        flow.plan = Some(plan);
        let mut msgs = msgs.into_iter().peekable();
        while let Some(m) = msgs.next() {
            let batch = flow.batcher.push(now, m);
            if batch.is_some() || msgs.peek().is_none() {
                self.pump(&mut flow, batch);
            }
        }
    }

    /// Moves due batches into the backlog, schedules delivery and arms the
    /// batch timer.
    fn pump(self: &Arc<Self>, flow: &mut Flow, batch: Option<Vec<StoredMessage>>) {
        if let Some(batch) = batch {
            self.enqueue(flow, &batch);
        }
        if !flow.backlog.is_empty() && flow.turn == TurnState::Idle {
            flow.turn = TurnState::Queued;
            self.stage.submit(flow.rate_class(), self.clone());
        }
        if let Some(deadline) = flow.batcher.deadline()
            && flow.timer == BatchTimer::Unarmed
            && tokio::runtime::Handle::try_current().is_ok()
        {
            flow.timer = BatchTimer::Armed;
            let room = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
                room.tick();
            });
        }
    }

    /// Encodes a due batch into the backlog, or collapses the backlog into
    /// one notice when it would grow past its bounds.
    fn enqueue(&self, flow: &mut Flow, batch: &[StoredMessage]) {
        let mut frame = encode_batch(&self.id, batch, flow.plan);
        let backlog = &mut flow.backlog;
        let too_many = backlog.frames.len() >= self.settings.backlog_frames;
        // The backlog is delivered in one burst when the fanout thread gets
        // to run: it must fit a healthy member's outbound queue, or a stalled
        // fanout thread would get every member kicked as a slow consumer.
        let too_big =
            !backlog.is_empty() && backlog.bytes + frame.bytes.len() > self.settings.backlog_bytes;
        if too_many || too_big {
            // Members cannot be fed this fast: replace what waits with one
            // "pull from here" notice (they catch up from the hot ring).
            backlog.clear();
            metrics::counter!("im_room_backlog_collapsed_total").increment(1);
            let head = batch.last().map_or(0, |m| m.seq);
            frame = Frame {
                bytes: notify_frame(&self.id, head),
                messages: 1,
            };
        }
        backlog.push(frame);
    }

    /// The batch timer fired: flushes what is due.
    fn tick(self: Arc<Self>) {
        let mut flow = self.flow.lock();
        flow.timer = BatchTimer::Unarmed;
        let batch = flow.batcher.poll(Instant::now());
        self.pump(&mut flow, batch);
    }
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

/// A "pull up to `head_seq`" notice for the room's members.
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

//! Room tests that need the engine's internals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use crate::codec::decode_server_frame;
use crate::fanout::{Delivery, Diffusion, FanoutPlan, RateClass};
use crate::ids::{ChannelId, ConversationId, DeviceId, MessageId, SessionId, UserId};
use crate::pb;
use crate::room::BatchConfig;
use crate::store::StoredMessage;

use super::super::config::EngineConfig;
use super::super::session::outbound::{Enqueued, Outbound};
use super::fanout::FanoutTurn;
use super::flow::TurnState;
use super::{FanoutStage, RoomIndex, RoomMember, RoomSettings};

/// Each member's outbound queue bound.
const QUEUE: usize = 64 * 1024;
/// Body size of each message.
const BODY: usize = 4096;

/// A session without a socket: a bounded outbound queue that records an
/// overflow (a real session is disconnected as a slow consumer then).
struct Probe {
    id: SessionId,
    out: Outbound,
    overflowed: AtomicBool,
}

impl Probe {
    /// A member whose queue holds at most `queue_bytes`.
    fn new(id: u64, queue_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            id: SessionId(id),
            out: Outbound::new(queue_bytes),
            overflowed: AtomicBool::new(false),
        })
    }
}

impl RoomMember for Probe {
    /// The probe's id.
    fn session_id(&self) -> SessionId {
        self.id
    }

    /// As a session does.
    fn touch_queue(&self) -> bool {
        self.out.touch()
    }

    /// Queues the frame, noting an overflow.
    fn queue_frame(&self, frame: Bytes) -> bool {
        match self.out.push(frame) {
            Enqueued::Queued => true,
            Enqueued::Overflow => {
                self.overflowed.store(true, Ordering::Relaxed);
                false
            }
            Enqueued::Closed => false,
        }
    }
}

/// A committed message of `room`.
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
        content_type: crate::store::ContentType::Text,
        event: None,
        recalled: false,
        edit_count: 0,
    }
}

/// The seq a member has caught up to from what was queued to it: the
/// last pushed message, or the head a notice told it to pull to.
fn caught_up_to(s: &Probe) -> u64 {
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
    let members: Vec<Arc<Probe>> = (1..=3)
        .map(|i| {
            let s = Probe::new(i, QUEUE);
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
    while room.flow.lock().turn() == TurnState::Queued {
        room.clone().run_turn();
    }
    for s in &members {
        assert!(
            !s.overflowed.load(Ordering::Relaxed),
            "{:?} overflowed",
            s.id
        );
        assert_eq!(caught_up_to(s), n, "{:?} can catch up", s.id);
    }
}

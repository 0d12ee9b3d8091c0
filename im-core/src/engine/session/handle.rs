//! A live session as the rest of the engine sees it: who it is, what it is
//! indexed under, and its outbound queue.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::codec::{encode_server_frame, server_frame};
use crate::directory::SessionInfo;
use crate::ids::{ChannelId, DeviceId, SessionId, UserId};
use crate::log_limit::LogLimit;
use crate::pb;
use crate::transport::{CloseCode, CloseReason};

use super::in_flight::InFlightConfig;
use super::outbound::{Enqueued, Outbound, QueuedFrames};
use super::reliable::Acks;
use crate::engine::rooms::RoomMember;

/// One live session, shared by its reader, its writer and the indexes.
pub(crate) struct SessionHandle {
    /// Unique among the engine's sessions.
    pub(crate) id: SessionId,
    /// The authenticated user.
    pub(crate) user: UserId,
    /// The device the client named at connect.
    pub(crate) device: DeviceId,
    /// The kind of device, for the kick policy.
    pub(crate) device_kind: pb::DeviceKind,
    /// Frames waiting for the session's writer.
    pub(crate) out: Outbound,
    /// Cancelled when the session must stop reading.
    pub(crate) stop: CancellationToken,
    /// Rooms this session has joined.
    pub(crate) rooms: Mutex<HashSet<ChannelId>>,
    /// Groups this session is indexed under.
    pub(crate) groups: Mutex<HashSet<ChannelId>>,
    /// Set (under the index locks) once the session left every index: it
    /// must never be indexed again.
    pub(crate) gone: AtomicBool,
    /// The client asked for `TypingEvent`s at connect.
    pub(crate) typing_events: AtomicBool,
    /// The client asked for `ReadReceipt`s at connect.
    pub(crate) receipt_events: AtomicBool,
    /// The in-flight pushes of a session that acknowledges them
    /// (`Connect.push_acks`); `None` for best-effort sessions.
    pub(crate) acks: Option<Box<Acks>>,
    /// The first `KickReason` the session was kicked with (0: never), for
    /// the host's `SessionObserver`.
    kicked: AtomicI32,
}

impl SessionHandle {
    /// The session as the session directory is told of it.
    pub(crate) fn info(&self) -> SessionInfo {
        SessionInfo {
            session: self.id,
            user: self.user.clone(),
            device: self.device.clone(),
        }
    }

    /// A new, unindexed session whose outbound queue holds at most
    /// `queue_bytes`; with `push_acks`, its pushes are tracked until acked.
    pub(crate) fn new(
        id: SessionId,
        user: UserId,
        device: DeviceId,
        device_kind: pb::DeviceKind,
        queue_bytes: usize,
        push_acks: Option<InFlightConfig>,
    ) -> Self {
        Self {
            id,
            user,
            device,
            device_kind,
            out: Outbound::new(queue_bytes),
            stop: CancellationToken::new(),
            rooms: Mutex::default(),
            groups: Mutex::default(),
            gone: AtomicBool::new(false),
            typing_events: AtomicBool::new(false),
            receipt_events: AtomicBool::new(false),
            acks: push_acks.map(|c| Box::new(Acks::new(c))),
            kicked: AtomicI32::new(0),
        }
    }

    /// Queues an encoded frame; a full queue disconnects the session as a slow consumer.
    pub(crate) fn send(&self, frame: Bytes) -> bool {
        match self.out.push(frame) {
            Enqueued::Queued => true,
            Enqueued::Closed => false,
            Enqueued::Overflow => {
                metrics::counter!("im_slow_consumer_disconnects_total").increment(1);
                static SLOW: LogLimit = LogLimit::per_second(5);
                if let Some(suppressed) = SLOW.allow() {
                    tracing::info!(session = self.id.0, user = %self.user, suppressed, "slow consumer disconnected");
                }
                self.kick(
                    pb::KickReason::SlowConsumer,
                    "outbound queue full: reconnect and sync",
                    QueuedFrames::Discard,
                );
                false
            }
        }
    }

    /// Sends a frame built from a body.
    pub(crate) fn send_frame(&self, request_id: u64, body: pb::server_frame::Body) -> bool {
        self.send(encode_server_frame(&server_frame(request_id, body)))
    }

    /// Ends the session with a `Kicked` frame.
    pub(crate) fn kick(&self, reason: pb::KickReason, detail: &str, queued: QueuedFrames) {
        let _ =
            self.kicked
                .compare_exchange(0, reason as i32, Ordering::Relaxed, Ordering::Relaxed);
        let frame = encode_server_frame(&server_frame(
            0,
            pb::server_frame::Body::Kicked(pb::Kicked {
                reason: reason as i32,
                detail: detail.to_owned(),
            }),
        ));
        let code = match reason {
            pb::KickReason::Shutdown => CloseCode::GoingAway,
            pb::KickReason::Replaced | pb::KickReason::ByHost => CloseCode::Normal,
            _ => CloseCode::Policy,
        };
        self.close(Some(frame), CloseReason::new(code, detail), queued);
    }

    /// Why the session ended, once it has: its first kick, else the reason
    /// the server closed it, else the client's doing.
    pub(crate) fn disconnect_reason(&self) -> crate::hooks::DisconnectReason {
        use crate::hooks::DisconnectReason;
        let kicked = self.kicked.load(Ordering::Relaxed);
        if let Ok(reason) = pb::KickReason::try_from(kicked)
            && reason != pb::KickReason::Unspecified
        {
            return DisconnectReason::Kicked(reason);
        }
        match self.out.close_reason() {
            Some(r) if r.code != CloseCode::Normal => DisconnectReason::Failed(r.detail),
            _ => DisconnectReason::Closed,
        }
    }

    /// Ends the session with an optional last frame.
    pub(crate) fn close(&self, last: Option<Bytes>, reason: CloseReason, queued: QueuedFrames) {
        self.out.close(last, reason, queued);
        self.stop.cancel();
    }
}

/// Rooms see a session only through this: its id and its outbound queue.
impl RoomMember for SessionHandle {
    /// The session's id.
    fn session_id(&self) -> SessionId {
        self.id
    }

    /// Touches the outbound queue ahead of a push.
    fn touch_queue(&self) -> bool {
        self.out.touch()
    }

    /// Queues a frame, disconnecting a slow consumer (see [`SessionHandle::send`]).
    fn queue_frame(&self, frame: Bytes) -> bool {
        self.send(frame)
    }
}

//! The handshake: the `Connect` frame, authentication, and which of the
//! user's older sessions a new one replaces.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::time::timeout;

use crate::auth::AuthRequest;
use crate::codec::{decode_client_frame, encode_server_frame, error_frame};
use crate::engine::config::KickPolicy;
use crate::engine::{Engine, HOST_DEVICE};
use crate::ids::{DeviceId, SessionId, UserId};
use crate::pb::{self, client_frame::Body as In};
use crate::transport::{
    CloseCode, CloseReason, ConnectionInfo, FrameReader, FrameWriter, TransportError,
};

use super::{QueuedFrames, RequestError, RequestResult, SessionHandle};

/// A connection that passed the handshake.
pub(super) struct Handshake {
    /// The new session, not registered nor indexed yet.
    pub(super) handle: Arc<SessionHandle>,
    /// The `Connect` frame's request id, echoed by `Connected`.
    pub(super) request_id: u64,
    /// The user's inbox head at connect time.
    pub(super) inbox_version: u64,
}

impl Handshake {
    /// A new session for an authenticated `Connect`.
    fn open(engine: &Engine, request_id: u64, who: Authenticated) -> Self {
        let handle = Arc::new(SessionHandle::new(
            SessionId(engine.next_session_id()),
            who.user,
            who.device,
            who.device_kind,
            engine.shared().config.outbound_queue_bytes,
            who.push_acks.then(|| engine.shared().in_flight.clone()),
        ));
        handle
            .typing_events
            .store(who.typing_events, Ordering::Relaxed);
        handle
            .receipt_events
            .store(who.receipt_events, Ordering::Relaxed);
        Self {
            handle,
            request_id,
            inbox_version: who.inbox_version,
        }
    }
}

/// Who a `Connect` frame authenticated.
struct Authenticated {
    /// The user the token belongs to.
    user: UserId,
    /// The device the client named.
    device: DeviceId,
    /// The kind of device the client said it is.
    device_kind: pb::DeviceKind,
    /// The user's inbox head.
    inbox_version: u64,
    /// The client asked for typing events.
    typing_events: bool,
    /// The client asked for read receipts.
    receipt_events: bool,
    /// The client acknowledges pushes.
    push_acks: bool,
}

/// Why a connection is closed before its handshake completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Busy {
    /// Its address already has all the pending handshakes it may.
    Address,
    /// It was the slowest pending handshake and a newer connection needed
    /// its slot.
    Evicted,
}

/// Answers a connection that may not (or no longer) authenticate now with
/// a retryable `Unavailable` error, and closes it.
pub(super) async fn refuse_busy(writer: &mut dyn FrameWriter, why: Busy) {
    let (detail, close) = match why {
        Busy::Address => (
            "too many connections from your address are authenticating; retry shortly",
            "server busy",
        ),
        Busy::Evicted => (
            "closed to make room: no Connect frame in time while the server is busy; retry",
            "server busy: handshake too slow",
        ),
    };
    let frame = error_frame(0, pb::ErrorCode::Unavailable, detail, true);
    let _ = writer.write_frames(&[encode_server_frame(&frame)]).await;
    let _ = writer
        .close(CloseReason::new(CloseCode::Policy, close))
        .await;
}

/// Reads and checks the `Connect` frame. On failure answers and closes.
pub(super) async fn handshake(
    engine: &Engine,
    reader: &mut dyn FrameReader,
    writer: &mut dyn FrameWriter,
    info: ConnectionInfo,
) -> Option<Handshake> {
    let shared = engine.shared();
    let refuse = |request_id: u64, code: pb::ErrorCode, reason: String, close: CloseCode| {
        let frame = encode_server_frame(&error_frame(request_id, code, reason.clone(), false));
        (frame, CloseReason::new(close, reason))
    };
    let first = tokio::select! {
        r = timeout(shared.config.handshake_timeout, reader.read_frame()) => r,
        _ = shared.shutdown.cancelled() => return None,
    };
    let (frame, reason) = match first {
        Err(_) => refuse(
            0,
            pb::ErrorCode::NotConnected,
            "no Connect frame within the handshake timeout".into(),
            CloseCode::Policy,
        ),
        Ok(Ok(None)) | Ok(Err(TransportError::Closed | TransportError::Io(_))) => return None,
        Ok(Err(e)) => transport_refusal(&e),
        Ok(Ok(Some(bytes))) => match decode_client_frame(&bytes) {
            Ok(pb::ClientFrame {
                request_id,
                body: Some(In::Connect(c)),
            }) => match authenticate(engine, c, &info).await {
                Ok(who) => return Some(Handshake::open(engine, request_id, who)),
                Err(e) => {
                    let frame = encode_server_frame(&error_frame(
                        request_id,
                        e.code,
                        e.reason.clone(),
                        e.retryable,
                    ));
                    (frame, CloseReason::new(CloseCode::Policy, e.reason))
                }
            },
            // Every answer to a frame echoes its request id, refusals too.
            Ok(other) => refuse(
                other.request_id,
                pb::ErrorCode::NotConnected,
                "the first frame must be Connect".into(),
                CloseCode::Policy,
            ),
            Err(e) => refuse(
                0,
                pb::ErrorCode::MalformedFrame,
                e.to_string(),
                CloseCode::InvalidData,
            ),
        },
    };
    let _ = writer.write_frames(&[frame]).await;
    let _ = writer.close(reason).await;
    None
}

/// Checks a `Connect` frame's device id and token.
async fn authenticate(
    engine: &Engine,
    c: pb::Connect,
    info: &ConnectionInfo,
) -> RequestResult<Authenticated> {
    let shared = engine.shared();
    let device = DeviceId::new(&c.device_id)?;
    if device.as_str() == HOST_DEVICE {
        return Err(RequestError::new(
            pb::ErrorCode::InvalidArgument,
            format!("device id {:?} is reserved for the host", HOST_DEVICE),
        ));
    }
    let kind = pb::DeviceKind::try_from(c.device_kind).unwrap_or(pb::DeviceKind::Unspecified);
    let (typing_events, receipt_events) = (c.typing_events, c.receipt_events);
    let req = AuthRequest {
        token: c.token,
        device_id: c.device_id,
        device_kind: kind,
        transport: info.transport,
        peer_addr: info.peer_addr,
    };
    let user = shared
        .auth
        .authenticate(&req)
        .await
        .map_err(|e| RequestError {
            code: pb::ErrorCode::Unauthenticated,
            retryable: matches!(e, crate::error::AuthError::Unavailable(_)),
            reason: e.to_string(),
        })?;
    let inbox_version = shared.store.inbox_head(&user).await?;
    Ok(Authenticated {
        user,
        device,
        device_kind: kind,
        inbox_version,
        typing_events,
        receipt_events,
        push_acks: c.push_acks,
    })
}

/// The error frame and close reason for a transport failure.
pub(super) fn transport_refusal(e: &TransportError) -> (Bytes, CloseReason) {
    let (code, close) = match e {
        TransportError::FrameTooLarge { .. } => (pb::ErrorCode::FrameTooLarge, CloseCode::TooBig),
        TransportError::InvalidData(_) => (pb::ErrorCode::MalformedFrame, CloseCode::InvalidData),
        _ => (pb::ErrorCode::MalformedFrame, CloseCode::Policy),
    };
    let reason = e.to_string();
    (
        encode_server_frame(&error_frame(0, code, reason.clone(), false)),
        CloseReason::new(close, reason),
    )
}

/// Kicks the user's older sessions the policy does not allow beside `new`.
pub(super) fn apply_kick_policy(
    policy: KickPolicy,
    new: &SessionHandle,
    others: &[Arc<SessionHandle>],
) {
    for old in others {
        let replace = old.device == new.device
            || match policy {
                KickPolicy::AllowMany => false,
                KickPolicy::OnePerDeviceKind => old.device_kind == new.device_kind,
                KickPolicy::One => true,
            };
        if replace {
            old.kick(
                pb::KickReason::Replaced,
                "another session of this user or device connected",
                QueuedFrames::Flush,
            );
        }
    }
}

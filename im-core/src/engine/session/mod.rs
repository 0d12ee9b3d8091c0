//! One connection's life: handshake, request handling, heartbeats, writer.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};

use crate::codec::{decode_client_frame, encode_server_frame, error_frame};
use crate::error::StoreError;
use crate::hooks::SessionDetails;
use crate::ids::{ChannelId, ConversationId, now_ms};
use crate::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use crate::room::TokenBucket;
use crate::store::StoreExt;
use crate::transport::{
    CloseCode, CloseReason, Connection, FrameReader, FrameWriter, TransportError,
};

use super::{Engine, Shared};

mod amend;
mod call;
mod cursors;
mod group_admin;
mod handle;
mod handshake;
mod heads;
mod in_flight;
mod list;
pub(crate) mod outbound;
mod paging;
mod presence;
mod presend;
mod pull;
mod read_counts;
mod reliable;
mod request_error;
mod rooms;
mod send;
mod settings;
mod typing;

use cursors::Cursor;
pub(crate) use handle::SessionHandle;
use handshake::{Busy, Handshake, apply_kick_policy, handshake, refuse_busy, transport_refusal};
pub(crate) use in_flight::InFlightConfig;
pub(crate) use outbound::QueuedFrames;
pub(crate) use reliable::{Outgoing, Tally};
use reliable::{PendingCursors, Timer};
use request_error::{RequestError, RequestResult};

/// Malformed frames tolerated on one session before it is closed.
const MAX_MALFORMED_FRAMES: u32 = 8;
/// Unread counts are computed up to this, enough to tell "99+".
const UNREAD_CAP: u32 = 100;

/// Takes a session out of every index, and tells the session directory.
fn unregister(shared: &Shared, handle: &SessionHandle) {
    let rooms: Vec<ChannelId> = handle.rooms.lock().iter().cloned().collect();
    shared.registry.unregister(handle);
    let info = handle.info();
    for room in &rooms {
        shared.directory.room_left(room, &info);
    }
    shared.directory.session_closed(&info);
}

/// Runs a connection until it ends.
pub(crate) async fn run(engine: Engine, conn: Connection) {
    let Connection {
        mut reader,
        mut writer,
        info,
    } = conn;
    let shared = engine.shared().clone();
    let (transport, peer_addr) = (info.transport, info.peer_addr);
    // What the transport enforces is what the client is told.
    let max_frame_bytes = info
        .max_frame_bytes
        .unwrap_or(shared.config.max_frame_bytes);
    let Some(pending) = shared.handshakes.admit(info.peer_addr.map(|a| a.ip())) else {
        // Its address holds all the pending handshakes it may: refuse
        // before reading anything.
        refuse_busy(&mut *writer, Busy::Address).await;
        return;
    };
    let outcome = tokio::select! {
        // Boxed: its state would otherwise sit in every idle session's future.
        h = Box::pin(handshake(&engine, &mut *reader, &mut *writer, info)) => Some(h),
        // A newer connection needed the slot this slow one held.
        _ = pending.evicted() => None,
    };
    let connected = match outcome {
        Some(Some(connected)) => connected,
        // Refused or gone; already answered.
        Some(None) => return,
        None => {
            refuse_busy(&mut *writer, Busy::Evicted).await;
            return;
        }
    };
    drop(pending);
    let Handshake {
        handle,
        request_id,
        inbox_version,
    } = connected;
    // `Connected` is queued first: nothing may reach the client before it.
    handle.send_frame(
        request_id,
        Out::Connected(connected_body(
            &handle,
            inbox_version,
            max_frame_bytes,
            &shared.config,
        )),
    );
    let writer_task = tokio::spawn(write_loop(handle.clone(), writer));
    let others = shared.registry.register(&handle);
    shared.directory.session_opened(&handle.info());
    apply_kick_policy(shared.config.kick_policy, &handle, &others);
    if let Err(e) = index_groups(&shared, &handle).await {
        let frame = error_frame(request_id, pb::ErrorCode::Unavailable, e.to_string(), true);
        handle.close(
            Some(encode_server_frame(&frame)),
            CloseReason::new(CloseCode::InternalError, "store unavailable"),
            QueuedFrames::Flush,
        );
    }
    if shared.shutdown.is_cancelled() {
        // Connected while shutdown was kicking everyone: it would wait forever.
        handle.kick(
            pb::KickReason::Shutdown,
            "server shutting down",
            QueuedFrames::Flush,
        );
    }
    let details = shared.hooks.session_events.as_ref().map(|events| {
        let details = SessionDetails {
            session: handle.id,
            user: handle.user.clone(),
            device: handle.device.clone(),
            transport,
            peer_addr,
        };
        events.connected(details.clone());
        details
    });
    tracing::debug!(session = handle.id.0, user = %handle.user, device = %handle.device, "connected");
    let typing = TokenBucket::new(shared.config.typing_rate, shared.config.typing_burst);
    let mut session = Session {
        engine,
        handle: handle.clone(),
        malformed: 0,
        cursors: PendingCursors::default(),
        typing,
        calls: call::CallLimits::new(&shared.config),
    };
    session.read_loop(&mut *reader).await;
    // What the session acked is written before it is known to be gone.
    session.flush_cursors().await;
    unregister(&shared, &handle);
    if let (Some(events), Some(details)) = (&shared.hooks.session_events, details) {
        events.disconnected(details, handle.disconnect_reason());
    }
    handle.close(
        None,
        CloseReason::new(CloseCode::Normal, "session ended"),
        QueuedFrames::Flush,
    );
    join_writer(writer_task, shared.config.shutdown_grace).await;
    tracing::debug!(session = handle.id.0, user = %handle.user, "disconnected");
}

/// The `Connected` answer to a handshake; `max_frame_bytes` is the limit
/// the session's transport enforces.
fn connected_body(
    handle: &SessionHandle,
    inbox_version: u64,
    max_frame_bytes: usize,
    config: &super::EngineConfig,
) -> pb::Connected {
    pb::Connected {
        user_id: handle.user.to_string(),
        device_id: handle.device.to_string(),
        session_id: handle.id.0,
        inbox_version,
        server_time_ms: now_ms(),
        heartbeat_interval_ms: config.heartbeat_interval.as_millis() as u32,
        max_frame_bytes: u32::try_from(max_frame_bytes).unwrap_or(u32::MAX),
        push_acks: handle.acks.is_some(),
    }
}

/// Attempts at indexing a new session before membership changes stop racing it.
const INDEX_ATTEMPTS: usize = 8;

/// Indexes a registered session under its groups. The groups are loaded at a
/// membership epoch and indexed only if no change happened meanwhile, so a
/// member removed while connecting never stays indexed.
async fn index_groups(shared: &Shared, handle: &Arc<SessionHandle>) -> Result<(), StoreError> {
    for _ in 0..INDEX_ATTEMPTS {
        let epoch = shared.registry.membership_epoch();
        let groups = shared.store.user_groups(&handle.user).await?;
        if shared.registry.index_groups_at(handle, &groups, epoch) {
            return Ok(());
        }
    }
    Err(StoreError::Unavailable(
        "group membership kept changing while connecting; retry".into(),
    ))
}

/// Waits for the writer to flush the last frames, at most `grace`: a peer
/// that stopped reading does not get to hold the session task forever.
async fn join_writer(mut writer_task: JoinHandle<()>, grace: Duration) {
    if timeout(grace, &mut writer_task).await.is_err() {
        writer_task.abort();
    }
}

/// Writes whatever is queued, all at once, until the queue closes.
async fn write_loop(handle: Arc<SessionHandle>, mut writer: Box<dyn FrameWriter>) {
    let mut batch = Vec::new();
    loop {
        let closing = handle.out.drain(&mut batch).await;
        if !batch.is_empty() {
            // Bounded by the transport's write timeout; `run` also stops
            // waiting for this task after `shutdown_grace`.
            let result = writer.write_frames(&batch).await;
            batch.clear();
            if let Err(e) = result {
                tracing::debug!(session = handle.id.0, error = %e, "write failed");
                handle.close(
                    None,
                    CloseReason::new(CloseCode::Normal, "write failed"),
                    QueuedFrames::Discard,
                );
                return;
            }
        }
        if let Some(reason) = closing {
            let _ = writer.close(reason).await;
            return;
        }
    }
}

/// An authenticated session's reading side: it reads requests and answers
/// them through its handle's outbound queue.
struct Session {
    /// The engine the session belongs to.
    engine: Engine,
    /// The session as the rest of the engine sees it.
    handle: Arc<SessionHandle>,
    /// Malformed frames received so far.
    malformed: u32,
    /// The session's allowance of forwarded `Typing` frames.
    typing: TokenBucket,
    /// Delivered cursors acked (in a `push_acks` session) and not yet written.
    cursors: PendingCursors,
    /// The session's allowance of `Call`s.
    calls: call::CallLimits,
}

impl Session {
    /// Reads and handles frames until the session stops, the peer goes away
    /// or stays silent past two heartbeats.
    async fn read_loop(&mut self, reader: &mut dyn FrameReader) {
        let shared = self.engine.shared().clone();
        let idle = shared.config.heartbeat_interval * 2;
        let mut silent_until = Instant::now() + idle;
        let mut draining = false;
        let handle = self.handle.clone();
        let mut timer = Timer::new(&handle);
        loop {
            timer.set(self.reliable_deadline());
            let read = tokio::select! {
                biased;
                _ = self.handle.stop.cancelled() => return,
                _ = shared.shutdown.cancelled(), if !draining => {
                    // Keep the session until shutdown kicks it so in-flight
                    // sends are still acked; what it reads from now on is
                    // refused, so no request goes unanswered.
                    draining = true;
                    continue;
                }
                // Resends, the ack timeout and cursor writes (push acks
                // only); or a push due before the timer: set it again.
                fired = timer.wait() => {
                    if fired && !self.on_reliable_timer().await {
                        return;
                    }
                    continue;
                }
                // `read_frame` is cancel safe, so the other branches may win.
                r = timeout_at(silent_until, reader.read_frame()) => r,
            };
            match read {
                Err(_) => {
                    self.handle.kick(
                        pb::KickReason::HeartbeatTimeout,
                        "no frame for two heartbeat intervals",
                        QueuedFrames::Flush,
                    );
                    return;
                }
                Ok(Ok(Some(bytes))) if draining => self.refuse_while_draining(&bytes),
                // Boxed per frame, so an idle session's task stays small.
                Ok(Ok(Some(bytes))) => Box::pin(self.on_frame(&bytes)).await,
                Ok(Ok(None)) | Ok(Err(TransportError::Closed | TransportError::Io(_))) => return,
                Ok(Err(e)) => {
                    let (frame, reason) = transport_refusal(&e);
                    self.handle.close(Some(frame), reason, QueuedFrames::Flush);
                    return;
                }
            }
            silent_until = Instant::now() + idle;
            if self.cursors_full() {
                self.flush_cursors().await;
            }
        }
    }

    /// Answers a request read after shutdown began with a retryable
    /// `SHUTTING_DOWN` (an `Ack` or a `Typing`, which have no answer, is
    /// dropped): the
    /// client resends it to another server, with the same `client_msg_id`.
    fn refuse_while_draining(&self, bytes: &[u8]) {
        let Ok(frame) = decode_client_frame(bytes) else {
            return;
        };
        if matches!(frame.body, None | Some(In::Ack(_) | In::Typing(_))) {
            return;
        }
        let reply = error_frame(
            frame.request_id,
            pb::ErrorCode::ShuttingDown,
            "the server is shutting down; send it again to another server",
            true,
        );
        self.handle.send(encode_server_frame(&reply));
    }

    /// Handles one frame; a failed request is answered with an `Error` frame.
    async fn on_frame(&mut self, bytes: &[u8]) {
        let frame = match decode_client_frame(bytes) {
            Ok(f) => f,
            Err(e) => {
                self.malformed += 1;
                let reply = error_frame(0, pb::ErrorCode::MalformedFrame, e.to_string(), false);
                if self.malformed >= MAX_MALFORMED_FRAMES {
                    self.handle.close(
                        Some(encode_server_frame(&reply)),
                        CloseReason::new(CloseCode::InvalidData, "too many malformed frames"),
                        QueuedFrames::Flush,
                    );
                } else {
                    self.handle.send(encode_server_frame(&reply));
                }
                return;
            }
        };
        let id = frame.request_id;
        let result = match frame.body {
            Some(In::Send(s)) => self.on_send(id, s).await,
            Some(In::Pull(p)) => self.on_pull(id, p).await,
            Some(In::Sync(s)) => self.on_sync(id, s).await,
            Some(In::Ack(a)) if self.handle.acks.is_some() => self.on_push_ack(a),
            Some(In::Ack(a)) => {
                self.on_cursor(id, a.conversation, a.seq, Cursor::Delivered)
                    .await
            }
            Some(In::Read(r)) => {
                self.on_cursor(id, r.conversation, r.seq, Cursor::Read)
                    .await
            }
            Some(In::JoinRoom(j)) => self.on_join(id, j).await,
            Some(In::LeaveRoom(l)) => self.on_leave(id, l),
            Some(In::ListConversations(l)) => self.on_list(id, l).await,
            Some(In::Typing(t)) => self.on_typing(t).await,
            Some(In::ReadCounts(r)) => self.on_read_counts(id, r).await,
            Some(In::Recall(r)) => self.on_recall(id, r).await,
            Some(In::Edit(e)) => self.on_edit(id, e).await,
            Some(In::Call(c)) => self.on_call(id, c),
            Some(In::WatchPresence(w)) => self.on_watch_presence(id, w).await,
            Some(In::GroupOnline(g)) => self.on_group_online(id, g).await,
            Some(In::SetConversationSettings(m)) => self.on_set_settings(id, m).await,
            Some(In::BlockUser(b)) => self.on_block_user(id, b).await,
            Some(In::AddMembers(a)) => {
                self.on_group_action(id, &a.group_id, group_admin::add(&a))
                    .await
            }
            Some(In::RemoveMembers(r)) => {
                self.on_group_action(id, &r.group_id, group_admin::remove(&r))
                    .await
            }
            Some(In::SetMemberRole(r)) => {
                self.on_group_action(id, &r.group_id, group_admin::set_role(&r))
                    .await
            }
            Some(In::MuteMember(m)) => {
                self.on_group_action(id, &m.group_id, group_admin::mute(&m))
                    .await
            }
            Some(In::LeaveGroup(l)) => {
                self.on_group_action(id, &l.group_id, Ok(crate::engine::GroupChange::Leave))
                    .await
            }
            Some(In::Ping(p)) => {
                self.reply(
                    id,
                    Out::Pong(pb::Pong {
                        client_time_ms: p.client_time_ms,
                        server_time_ms: now_ms(),
                    }),
                );
                Ok(())
            }
            Some(In::Connect(_)) => Err(RequestError::new(
                pb::ErrorCode::NotConnected,
                "already connected",
            )),
            None => Err(RequestError::new(
                pb::ErrorCode::InvalidArgument,
                "empty or unknown frame body",
            )),
        };
        if let Err(e) = result {
            self.handle.send(encode_server_frame(&error_frame(
                id,
                e.code,
                e.reason,
                e.retryable,
            )));
        }
    }

    /// Queues the answer to a request.
    fn reply(&self, request_id: u64, body: Out) {
        self.handle.send_frame(request_id, body);
    }

    /// The conversation a request names, from this session's point of view.
    fn conversation(&self, r: Option<pb::ConversationRef>) -> RequestResult<ConversationId> {
        let r = r.ok_or_else(|| {
            RequestError::new(pb::ErrorCode::InvalidArgument, "conversation missing")
        })?;
        Ok(ConversationId::from_wire(&self.handle.user, &r)?)
    }

    /// May this session read `conv`?
    async fn authorize_read(&self, conv: &ConversationId) -> RequestResult {
        let allowed = match conv {
            ConversationId::Direct(..) => conv.is_direct_participant(&self.handle.user),
            ConversationId::Room(r) => self.handle.rooms.lock().contains(r),
            // A missing group answers like one the user is not in, so
            // group names cannot be probed.
            ConversationId::Group(g) => {
                self.engine
                    .shared()
                    .store
                    .is_member(g, &self.handle.user)
                    .await?
            }
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
}

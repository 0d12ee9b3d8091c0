//! One connection's life: handshake, request handling, heartbeats, writer.

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::timeout;

use crate::auth::AuthRequest;
use crate::codec::{decode_client_frame, encode_server_frame, error_frame};
use crate::error::StoreError;
use crate::ids::{ChannelId, ConversationId, DeviceId, SessionId, UserId, now_ms};
use crate::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use crate::store::{ConversationStatesRequest, CursorUpdate, InboxRequest, RangeRequest};
use crate::transport::{
    CloseCode, CloseReason, Connection, FrameReader, FrameWriter, TransportError,
};

use super::Engine;
use super::config::KickPolicy;
use super::registry::SessionHandle;
use super::shard::{PendingSend, Reply};
use super::wire::{message_to_wire, summary_to_wire, unread_display};

mod paging;
mod request_error;

use paging::{PageEnd, page_limit, pull_window, sync_window, trim_inbox, trim_range};
use request_error::{RequestError, RequestResult};

/// Malformed frames tolerated on one session before it is closed.
const MAX_MALFORMED_FRAMES: u32 = 8;
/// Most bytes of message bodies in one `PullResult` or `SyncResult` (the
/// outbound queue bound also caps it at half the queue).
const PAGE_BYTES_MAX: usize = 5 * 1024 * 1024;
/// Unread counts are computed up to this, enough to tell "99+".
const UNREAD_CAP: u32 = 100;
/// Largest accepted `client_msg_id`, in bytes.
const MAX_CLIENT_MSG_ID: usize = 128;

/// Runs a connection until it ends.
pub(crate) async fn run(engine: Engine, conn: Connection) {
    let Connection {
        mut reader,
        mut writer,
        info,
    } = conn;
    let shared = engine.shared().clone();
    let Ok(pending) = shared.handshakes.clone().try_acquire_owned() else {
        // Too many unauthenticated connections: refuse before reading anything.
        metrics::counter!("im_handshakes_refused_total").increment(1);
        let frame = error_frame(
            0,
            pb::ErrorCode::Unavailable,
            "too many connections are authenticating; retry shortly",
            true,
        );
        let _ = writer.write_frames(&[encode_server_frame(&frame)]).await;
        let _ = writer
            .close(CloseReason::new(CloseCode::Policy, "server busy"))
            .await;
        return;
    };
    let Some((handle, request_id, inbox_version)) =
        // Boxed: its state would otherwise sit in every idle session's future.
        Box::pin(handshake(&engine, &mut *reader, &mut *writer, info)).await
    else {
        return;
    };
    drop(pending);
    // `Connected` is queued first: nothing may reach the client before it.
    handle.send_frame(
        request_id,
        Out::Connected(pb::Connected {
            user_id: handle.user.to_string(),
            device_id: handle.device.to_string(),
            session_id: handle.id.0,
            inbox_version,
            server_time_ms: now_ms(),
            heartbeat_interval_ms: shared.config.heartbeat_interval.as_millis() as u32,
            max_frame_bytes: shared.config.max_frame_bytes as u32,
        }),
    );
    let writer_task = tokio::spawn(write_loop(handle.clone(), writer));
    let others = shared.registry.register(&handle);
    apply_kick_policy(shared.config.kick_policy, &handle, &others);
    if let Err(e) = index_groups(&shared, &handle).await {
        let frame = error_frame(request_id, pb::ErrorCode::Unavailable, e.to_string(), true);
        handle.close(
            Some(encode_server_frame(&frame)),
            CloseReason::new(CloseCode::InternalError, "store unavailable"),
            false,
        );
    }
    if shared.shutdown.is_cancelled() {
        // Connected while shutdown was kicking everyone: it would wait forever.
        handle.kick(pb::KickReason::Shutdown, "server shutting down", false);
    }
    tracing::debug!(session = handle.id.0, user = %handle.user, device = %handle.device, "connected");
    Session {
        engine,
        handle: handle.clone(),
        malformed: 0,
    }
    .read_loop(&mut *reader)
    .await;
    shared.registry.unregister(&handle);
    handle.close(
        None,
        CloseReason::new(CloseCode::Normal, "session ended"),
        false,
    );
    // The writer flushes the last frames; a peer that stopped reading does not
    // get to hold the session task forever.
    let mut writer_task = writer_task;
    if timeout(shared.config.shutdown_grace, &mut writer_task)
        .await
        .is_err()
    {
        writer_task.abort();
    }
    tracing::debug!(session = handle.id.0, user = %handle.user, "disconnected");
}

/// Attempts at indexing a new session before membership changes stop racing it.
const INDEX_ATTEMPTS: usize = 8;

/// Indexes a registered session under its groups. The groups are loaded at a
/// membership epoch and indexed only if no change happened meanwhile, so a
/// member removed while connecting never stays indexed.
async fn index_groups(
    shared: &super::Shared,
    handle: &Arc<SessionHandle>,
) -> Result<(), StoreError> {
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

/// Reads and checks the `Connect` frame. On failure answers and closes.
async fn handshake(
    engine: &Engine,
    reader: &mut dyn FrameReader,
    writer: &mut dyn FrameWriter,
    info: crate::transport::ConnectionInfo,
) -> Option<(Arc<SessionHandle>, u64, u64)> {
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
                Ok((user, device, kind, inbox_version)) => {
                    let handle = Arc::new(SessionHandle::new(
                        SessionId(engine.next_session_id()),
                        user,
                        device,
                        kind,
                        shared.config.outbound_queue_bytes,
                    ));
                    return Some((handle, request_id, inbox_version));
                }
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

async fn authenticate(
    engine: &Engine,
    c: pb::Connect,
    info: &crate::transport::ConnectionInfo,
) -> RequestResult<(UserId, DeviceId, pb::DeviceKind, u64)> {
    let shared = engine.shared();
    let device = DeviceId::new(&c.device_id)?;
    if device.as_str() == super::HOST_DEVICE {
        return Err(RequestError::new(
            pb::ErrorCode::InvalidArgument,
            format!(
                "device id {:?} is reserved for the host",
                super::HOST_DEVICE
            ),
        ));
    }
    let kind = pb::DeviceKind::try_from(c.device_kind).unwrap_or(pb::DeviceKind::Unspecified);
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
    Ok((user, device, kind, inbox_version))
}

/// The error frame and close reason for a transport failure.
fn transport_refusal(e: &TransportError) -> (Bytes, CloseReason) {
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
fn apply_kick_policy(policy: KickPolicy, new: &SessionHandle, others: &[Arc<SessionHandle>]) {
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
                false,
            );
        }
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
                    true,
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

struct Session {
    engine: Engine,
    handle: Arc<SessionHandle>,
    malformed: u32,
}

impl Session {
    async fn read_loop(&mut self, reader: &mut dyn FrameReader) {
        let shared = self.engine.shared().clone();
        let idle = shared.config.heartbeat_interval * 2;
        let mut draining = false;
        loop {
            let read = tokio::select! {
                biased;
                _ = self.handle.stop.cancelled() => return,
                _ = shared.shutdown.cancelled(), if !draining => {
                    // Stop reading; keep the session until shutdown kicks it so
                    // in-flight sends are still acked.
                    draining = true;
                    continue;
                }
                r = timeout(idle, reader.read_frame()), if !draining => r,
            };
            match read {
                Err(_) => {
                    self.handle.kick(
                        pb::KickReason::HeartbeatTimeout,
                        "no frame for two heartbeat intervals",
                        false,
                    );
                    return;
                }
                // Boxed per frame, so an idle session's task stays small.
                Ok(Ok(Some(bytes))) => Box::pin(self.on_frame(&bytes)).await,
                Ok(Ok(None)) | Ok(Err(TransportError::Closed | TransportError::Io(_))) => return,
                Ok(Err(e)) => {
                    let (frame, reason) = transport_refusal(&e);
                    self.handle.close(Some(frame), reason, false);
                    return;
                }
            }
        }
    }

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
                        false,
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
            Some(In::Ack(a)) => self.on_cursor(id, a.conversation, a.seq, false).await,
            Some(In::Read(r)) => self.on_cursor(id, r.conversation, r.seq, true).await,
            Some(In::JoinRoom(j)) => self.on_join(id, j).await,
            Some(In::LeaveRoom(l)) => self.on_leave(id, l),
            Some(In::ListConversations(l)) => self.on_list(id, l).await,
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

    /// Most body bytes one page may carry to this session.
    fn page_bytes(&self) -> usize {
        PAGE_BYTES_MAX.min(self.engine.shared().config.outbound_queue_bytes / 2)
    }

    fn reply(&self, request_id: u64, body: Out) {
        self.handle.send_frame(request_id, body);
    }

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
            ConversationId::Group(g) => {
                let store = &self.engine.shared().store;
                if store.member_count(g).await?.is_none() {
                    return Err(RequestError::new(
                        pb::ErrorCode::NotFound,
                        format!("group {g} not found"),
                    ));
                }
                store
                    .are_members(g, std::slice::from_ref(&self.handle.user))
                    .await?
                    .first()
                    .copied()
                    .unwrap_or(false)
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

    async fn on_send(&mut self, request_id: u64, s: pb::Send) -> RequestResult {
        let shared = self.engine.shared();
        if s.client_msg_id.is_empty() || s.client_msg_id.len() > MAX_CLIENT_MSG_ID {
            return Err(RequestError::new(
                pb::ErrorCode::InvalidArgument,
                format!("client_msg_id must be 1..={MAX_CLIENT_MSG_ID} bytes"),
            ));
        }
        if s.body.len() > shared.config.max_body_bytes {
            return Err(RequestError::new(
                pb::ErrorCode::InvalidArgument,
                format!(
                    "body of {} bytes exceeds {}",
                    s.body.len(),
                    shared.config.max_body_bytes
                ),
            ));
        }
        let conversation = self.conversation(s.conversation)?;
        if let ConversationId::Room(r) = &conversation {
            if !self.handle.rooms.lock().contains(r) {
                return Err(RequestError::new(
                    pb::ErrorCode::Forbidden,
                    format!("join room {r} before sending to it"),
                ));
            }
            shared.registry.rooms().check_send(r, &self.handle.user)?;
        }
        self.engine
            .submit(PendingSend {
                conversation,
                sender: self.handle.user.clone(),
                device: self.handle.device.clone(),
                client_msg_id: Some(s.client_msg_id),
                body: s.body,
                check_membership: true,
                reply: Reply::Session {
                    session: self.handle.clone(),
                    request_id,
                },
            })
            .await?;
        Ok(())
    }

    async fn on_pull(&mut self, request_id: u64, p: pb::Pull) -> RequestResult {
        let conv = self.conversation(p.conversation)?;
        self.authorize_read(&conv).await?;
        let shared = self.engine.shared();
        let limit = page_limit(p.limit, shared.config.pull_page_max);
        let until_seq = (p.until_seq != 0).then_some(p.until_seq);
        let end = PageEnd::from_newest(p.newest);
        let req = RangeRequest {
            conversation: conv.clone(),
            after_seq: p.after_seq,
            until_seq,
            limit,
            newest: p.newest,
        };
        let mut page = match &conv {
            // Rooms answer from their hot ring, one store load per miss.
            ConversationId::Room(r) => {
                let rooms = shared.registry.rooms();
                rooms.read_range(&shared.store, r, req).await?
            }
            _ => shared.store.read_range(req).await?,
        };
        trim_range(&mut page.messages, end, self.page_bytes());
        let window = pull_window(p.after_seq, until_seq, &page);
        let user = &self.handle.user;
        self.reply(
            request_id,
            Out::PullResult(pb::PullResult {
                conversation: Some(conv.to_wire(user)),
                has_more: window.has_more,
                messages: page
                    .messages
                    .iter()
                    .map(|m| message_to_wire(m, user))
                    .collect(),
                head_seq: page.head_seq,
                history_start_seq: window.history_start_seq,
            }),
        );
        Ok(())
    }

    async fn on_sync(&mut self, request_id: u64, s: pb::Sync) -> RequestResult {
        let shared = self.engine.shared();
        let limit = page_limit(s.limit, shared.config.sync_page_max);
        let mut page = shared
            .store
            .read_inbox(InboxRequest {
                user: self.handle.user.clone(),
                after_version: s.inbox_version,
                limit,
            })
            .await?;
        let refs: Vec<(ConversationId, u64)> = page
            .entries
            .iter()
            .map(|e| (e.conversation.clone(), e.seq))
            .collect();
        let mut messages = shared.store.get_messages(&refs).await?;
        trim_inbox(&mut page, &mut messages, self.page_bytes());
        let window = sync_window(s.inbox_version, &page);
        let user = &self.handle.user;
        self.reply(
            request_id,
            Out::SyncResult(pb::SyncResult {
                entries: page
                    .entries
                    .iter()
                    .map(|e| pb::InboxEntry {
                        version: e.version,
                        conversation: Some(e.conversation.to_wire(user)),
                        seq: e.seq,
                    })
                    .collect(),
                messages: messages.iter().map(|m| message_to_wire(m, user)).collect(),
                inbox_version: page.head_version,
                has_more: window.has_more,
                full_sync_required: window.full_sync_required,
            }),
        );
        Ok(())
    }

    async fn on_cursor(
        &mut self,
        request_id: u64,
        conversation: Option<pb::ConversationRef>,
        seq: u64,
        read: bool,
    ) -> RequestResult {
        let conv = self.conversation(conversation)?;
        self.authorize_read(&conv).await?;
        let store = &self.engine.shared().store;
        let user = self.handle.user.clone();
        // A cursor past the head would hide messages not yet sent.
        let head = store.head_seqs(std::slice::from_ref(&conv)).await?;
        let seq = seq.min(head.first().copied().unwrap_or(0));
        store
            .update_cursors(vec![CursorUpdate {
                user: user.clone(),
                conversation: conv.clone(),
                delivered: (!read).then_some(seq),
                read: read.then_some(seq),
            }])
            .await?;
        if !read {
            return Ok(());
        }
        let state = store
            .conversation_states(ConversationStatesRequest {
                user: user.clone(),
                only: Some(vec![conv.clone()]),
                unread_cap: UNREAD_CAP,
                limit: 1,
            })
            .await?;
        let (read_seq, count) = state.first().map_or((seq, 0), |s| (s.read_seq, s.unread));
        let (unread, unread_more) = unread_display(count);
        self.reply(
            request_id,
            Out::ReadAck(pb::ReadAck {
                conversation: Some(conv.to_wire(&user)),
                read_seq,
                unread,
                unread_more,
            }),
        );
        Ok(())
    }

    async fn on_list(&mut self, request_id: u64, l: pb::ListConversations) -> RequestResult {
        let shared = self.engine.shared();
        let limit = page_limit(l.limit, shared.config.list_max);
        let states = shared
            .store
            .conversation_states(ConversationStatesRequest {
                user: self.handle.user.clone(),
                only: None,
                unread_cap: UNREAD_CAP,
                limit,
            })
            .await?;
        let user = &self.handle.user;
        self.reply(
            request_id,
            Out::ConversationList(pb::ConversationList {
                conversations: states.iter().map(|s| summary_to_wire(s, user)).collect(),
            }),
        );
        Ok(())
    }

    async fn on_join(&mut self, request_id: u64, j: pb::JoinRoom) -> RequestResult {
        let room = ChannelId::new(&j.room_id)?;
        let shared = self.engine.shared();
        let max_rooms = shared.config.max_rooms_per_session;
        let joined = self.handle.rooms.lock().len();
        if joined >= max_rooms && !self.handle.rooms.lock().contains(&room) {
            return Err(RequestError::new(
                pb::ErrorCode::InvalidArgument,
                format!("a session may be in at most {max_rooms} rooms; leave one first"),
            ));
        }
        let conv = ConversationId::Room(room.clone());
        // Seated before reading the head: anything committed after the head
        // read is pushed, anything before is covered by `head_seq`.
        let online = shared.registry.join_room(&room, &self.handle);
        let head = match shared.store.head_seqs(std::slice::from_ref(&conv)).await {
            Ok(head) => head,
            Err(e) => {
                // The client is told the join failed: it must not stay seated.
                shared.registry.leave_room(&room, &self.handle);
                return Err(e.into());
            }
        };
        self.reply(
            request_id,
            Out::RoomJoined(pb::RoomJoined {
                room_id: room.to_string(),
                head_seq: head.first().copied().unwrap_or(0),
                online: online as u64,
            }),
        );
        Ok(())
    }

    fn on_leave(&mut self, request_id: u64, l: pb::LeaveRoom) -> RequestResult {
        let room = ChannelId::new(&l.room_id)?;
        self.engine
            .shared()
            .registry
            .leave_room(&room, &self.handle);
        self.reply(
            request_id,
            Out::RoomLeft(pb::RoomLeft {
                room_id: room.to_string(),
            }),
        );
        Ok(())
    }
}

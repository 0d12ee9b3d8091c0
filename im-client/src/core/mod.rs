//! The protocol logic of the SDK, free of IO (sans-IO, quinn-proto style).
//!
//! [`ClientCore`] is fed what happens — a connection opened or was lost, a
//! server frame arrived, the application sent a message — and answers with
//! frames to write ([`ClientCore::poll_transmit`]) and events for the
//! application ([`ClientCore::poll_event`]). It owns local dedup by
//! (conversation, seq), gap detection, pending sends and the catch-up plan;
//! the async driver in [`crate::Client`] only moves bytes and keeps time.

mod backoff;
mod sends;
mod track;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use bytes::Bytes;
use im_core::pb::{self, client_frame::Body as In, server_frame::Body as Out};

pub use backoff::Backoff;
pub use sends::{PendingSend, PendingSends};
pub use track::{MAX_BUFFERED, Offered, Track};

use crate::event::{ConnectionState, Event};
use crate::key::{ConversationKey, Kind};

/// What the core needs to know about the user and device.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Credential for the server's authenticator.
    pub token: String,
    /// Stable id of this device.
    pub device_id: String,
    /// Kind of device (for the kick policy).
    pub device_kind: pb::DeviceKind,
    /// Ask for acknowledged pushes (`Connect.push_acks`).
    pub push_acks: bool,
    /// Ask for typing signals (`Event::Typing`).
    pub typing_events: bool,
    /// Ask for read receipts (`Event::ReadReceipt`).
    pub receipt_events: bool,
    /// Free-form client name, for the server's logs.
    pub client_info: String,
    /// Most unacknowledged sends held; more are refused.
    pub max_pending_sends: usize,
}

impl CoreConfig {
    /// Defaults for `token` and `device_id`.
    pub fn new(token: impl Into<String>, device_id: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            device_id: device_id.into(),
            device_kind: pb::DeviceKind::Desktop,
            push_acks: true,
            typing_events: true,
            receipt_events: true,
            client_info: concat!("im-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_pending_sends: 10_000,
        }
    }
}

/// Why the core refused an application call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// A send with this `client_msg_id` is still pending.
    #[error("a send with client_msg_id {0:?} is already pending")]
    DuplicateId(String),
    /// [`CoreConfig::max_pending_sends`] sends are unacknowledged.
    #[error("too many unacknowledged sends ({0})")]
    TooManyPending(usize),
    /// The client stopped for good.
    #[error("the client has stopped: {0}")]
    Stopped(String),
    /// The call needs a live connection.
    #[error("not connected")]
    NotConnected,
}

/// The answer to a request the application made through
/// [`ClientCore::request`].
pub type Answer = Result<Out, AnswerError>;

/// Why a request the application made got no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// The server answered with an error.
    #[error("server error {code:?}: {reason}", code = pb::ErrorCode::try_from(.0.code).unwrap_or_default(), reason = .0.reason)]
    Server(pb::Error),
    /// The connection was lost before the answer came.
    #[error("the connection was lost before the answer came")]
    Disconnected,
}

/// What an outstanding request was for.
#[derive(Debug, Clone)]
enum Request {
    Connect,
    Send,
    Sync,
    List,
    Pull(ConversationKey),
    Join(String),
    /// Made by the application; the answer goes to [`ClientCore::poll_answer`].
    Application,
    /// Answer ignored (Ping, Read, LeaveRoom).
    Ignored,
}

/// The catch-up of the current connection.
#[derive(Debug, Default)]
struct CatchUp {
    sync_pending: bool,
    list_pending: bool,
    rooms_pending: BTreeSet<String>,
    done: bool,
}

/// Counters for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Messages received again and dropped by the local dedup.
    pub duplicates: u64,
    /// Pulls issued to fill gaps and catch up.
    pub pulls: u64,
    /// Connections authenticated.
    pub connections: u64,
    /// Catch-ups that needed a full sync.
    pub full_syncs: u64,
}

/// The SDK's protocol state machine. See the [module docs](self).
#[derive(Debug)]
pub struct ClientCore {
    config: CoreConfig,
    connected: Option<pb::Connected>,
    next_request: u64,
    requests: HashMap<u64, Request>,
    inbox_version: u64,
    tracks: BTreeMap<ConversationKey, Track>,
    rooms: BTreeSet<String>,
    sends: PendingSends,
    catch_up: CatchUp,
    outbox: VecDeque<pb::ClientFrame>,
    events: VecDeque<Event>,
    answers: VecDeque<(u64, Answer)>,
    close: Option<String>,
    stopped: Option<String>,
    retry_pulls: bool,
    stats: CoreStats,
}

impl ClientCore {
    /// A core that has never connected.
    pub fn new(config: CoreConfig) -> Self {
        Self {
            config,
            connected: None,
            next_request: 1,
            requests: HashMap::new(),
            inbox_version: 0,
            tracks: BTreeMap::new(),
            rooms: BTreeSet::new(),
            sends: PendingSends::default(),
            catch_up: CatchUp::default(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            answers: VecDeque::new(),
            close: None,
            stopped: None,
            retry_pulls: false,
            stats: CoreStats::default(),
        }
    }

    // ------------------------------------------------------------ outputs

    /// The next frame to write to the connection.
    pub fn poll_transmit(&mut self) -> Option<pb::ClientFrame> {
        self.outbox.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next answer to a request made with [`ClientCore::request`].
    pub fn poll_answer(&mut self) -> Option<(u64, Answer)> {
        self.answers.pop_front()
    }

    /// `Some(reason)` once: the current connection should be closed (the
    /// server kicked the session or refused a request the catch-up needs);
    /// the driver then reports [`ClientCore::connection_lost`].
    pub fn take_close(&mut self) -> Option<String> {
        self.close.take()
    }

    /// `Some(reason)` once the client has stopped for good.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    // -------------------------------------------------------------- state

    /// What the server said on the current connection, once authenticated.
    pub fn connected(&self) -> Option<&pb::Connected> {
        self.connected.as_ref()
    }

    /// Whether the current connection finished its catch-up.
    pub fn is_caught_up(&self) -> bool {
        self.connected.is_some() && self.catch_up.done
    }

    /// Inbox version synced so far.
    pub fn inbox_version(&self) -> u64 {
        self.inbox_version
    }

    /// Highest seq delivered without a gap in `conversation`.
    pub fn delivered(&self, conversation: &ConversationKey) -> u64 {
        self.tracks.get(conversation).map_or(0, Track::delivered)
    }

    /// Sends not yet acknowledged, oldest first.
    pub fn pending_sends(&self) -> impl Iterator<Item = &PendingSend> {
        self.sends.iter()
    }

    /// Rooms the client is in (rejoined on every connection).
    pub fn rooms(&self) -> impl Iterator<Item = &String> {
        self.rooms.iter()
    }

    /// Counters.
    pub fn stats(&self) -> CoreStats {
        self.stats
    }

    // ------------------------------------------------------- connection

    /// The driver starts connecting to `address`.
    pub fn connecting(&mut self, address: &str) {
        self.state(ConnectionState::Connecting {
            address: address.to_owned(),
        });
    }

    /// A transport connection is open: authenticate.
    pub fn connection_opened(&mut self) {
        let body = In::Connect(pb::Connect {
            token: self.config.token.clone(),
            device_id: self.config.device_id.clone(),
            device_kind: self.config.device_kind as i32,
            inbox_version: self.inbox_version,
            client_info: self.config.client_info.clone(),
            push_acks: self.config.push_acks,
            typing_events: self.config.typing_events,
            receipt_events: self.config.receipt_events,
        });
        self.transmit(Request::Connect, body);
    }

    /// The connection is gone (socket error, close, kick): forget what was
    /// in flight on it; everything unfinished is redone on the next one.
    pub fn connection_lost(&mut self, reason: &str) {
        self.outbox.clear();
        self.close = None;
        for (id, request) in self.requests.drain() {
            if let Request::Application = request {
                self.answers.push_back((id, Err(AnswerError::Disconnected)));
            }
        }
        self.sends.connection_lost();
        for track in self.tracks.values_mut() {
            track.pull_abandoned();
        }
        self.catch_up = CatchUp::default();
        let was_connected = self.connected.take().is_some();
        if self.stopped.is_none() && (was_connected || !reason.is_empty()) {
            self.state(ConnectionState::Disconnected {
                reason: reason.to_owned(),
            });
        }
    }

    /// Stops for good (the application closes the client).
    pub fn stop(&mut self, reason: &str) {
        if self.stopped.is_none() {
            self.stopped = Some(reason.to_owned());
            self.state(ConnectionState::Stopped {
                reason: reason.to_owned(),
            });
        }
    }

    // ------------------------------------------------------ application

    /// Queues a message; it is written now if connected, else on the next
    /// connection, and again on every connection until acknowledged.
    pub fn send(
        &mut self,
        conversation: ConversationKey,
        client_msg_id: String,
        body: Bytes,
    ) -> Result<(), CoreError> {
        if let Some(reason) = &self.stopped {
            return Err(CoreError::Stopped(reason.clone()));
        }
        if self.sends.contains(&client_msg_id) {
            return Err(CoreError::DuplicateId(client_msg_id));
        }
        if self.sends.len() >= self.config.max_pending_sends {
            return Err(CoreError::TooManyPending(self.sends.len()));
        }
        self.sends.push(PendingSend {
            client_msg_id,
            conversation,
            body,
            attempts: 0,
        });
        self.flush_sends();
        Ok(())
    }

    /// Joins a live room now and on every later connection. Messages start
    /// at the room's head when first joined (pull older ones with
    /// [`ClientCore::request`] if wanted).
    pub fn join_room(&mut self, room_id: &str) {
        if !self.rooms.insert(room_id.to_owned()) {
            return;
        }
        self.tracks
            .entry(ConversationKey::room(room_id))
            .or_insert_with(Track::awaiting_baseline);
        if self.connected.is_some() {
            self.send_join(room_id);
        }
    }

    /// Leaves a live room.
    pub fn leave_room(&mut self, room_id: &str) {
        if self.rooms.remove(room_id) {
            self.tracks.remove(&ConversationKey::room(room_id));
            self.catch_up.rooms_pending.remove(room_id);
            if self.connected.is_some() {
                let body = In::LeaveRoom(pb::LeaveRoom {
                    room_id: room_id.to_owned(),
                });
                self.transmit(Request::Ignored, body);
            }
        }
    }

    /// Marks `conversation` read up to `seq`; answered by [`Event::ReadAck`].
    pub fn read(&mut self, conversation: &ConversationKey, seq: u64) -> Result<(), CoreError> {
        self.require_connected()?;
        let body = In::Read(pb::Read {
            conversation: Some(conversation.to_wire()),
            seq,
        });
        self.transmit(Request::Application, body);
        Ok(())
    }

    /// A request of the application's own (a history page, the conversation
    /// list, ...): returns its request id; the answer comes from
    /// [`ClientCore::poll_answer`] with that id.
    pub fn request(&mut self, body: In) -> Result<u64, CoreError> {
        self.require_connected()?;
        Ok(self.transmit(Request::Application, body))
    }

    /// A heartbeat.
    pub fn ping(&mut self, now_ms: i64) {
        if self.connected.is_some() {
            let body = In::Ping(pb::Ping {
                client_time_ms: now_ms,
            });
            self.transmit(Request::Ignored, body);
        }
    }

    /// Runs the catch-up again (as after a reconnect).
    pub fn resync(&mut self) {
        if self.connected.is_some() && self.catch_up.done {
            self.start_catch_up(false);
        }
    }

    /// Whether [`ClientCore::retry_tick`] has work (sends or pulls that got
    /// a retryable error).
    pub fn wants_retry_tick(&self) -> bool {
        self.sends.has_backoff() || self.retry_pulls
    }

    /// Writes again what got a retryable error.
    pub fn retry_tick(&mut self) {
        self.sends.retry_backed_off();
        self.flush_sends();
        if std::mem::take(&mut self.retry_pulls) {
            self.tracks.values_mut().for_each(Track::unstall);
            self.plan_pulls();
        }
    }

    // ------------------------------------------------------------ input

    /// Handles one frame from the server.
    pub fn handle_frame(&mut self, frame: pb::ServerFrame) {
        let Some(body) = frame.body else {
            return;
        };
        let request = match frame.request_id {
            0 => None,
            id => self.requests.remove(&id),
        };
        let mut touched = BTreeSet::new();
        match (request, body) {
            (Some(Request::Connect), Out::Connected(c)) => self.on_connected(c),
            (Some(Request::Connect), Out::Error(e)) => {
                if e.retryable {
                    self.close = Some(format!("connect refused: {}", e.reason));
                } else {
                    self.stop(&format!("connect refused: {}", e.reason));
                }
            }
            (Some(Request::Send), body) => {
                self.on_send_answer(frame.request_id, body, &mut touched)
            }
            (Some(Request::Sync), Out::SyncResult(r)) => self.on_sync(r, &mut touched),
            (Some(Request::Sync), other) => {
                self.catch_up.sync_pending = false;
                self.close = Some(format!("sync failed: {other:?}"));
            }
            (Some(Request::List), Out::ConversationList(l)) => self.on_list(l),
            (Some(Request::List), other) => {
                self.catch_up.list_pending = false;
                self.close = Some(format!("conversation list failed: {other:?}"));
            }
            (Some(Request::Pull(key)), Out::PullResult(r)) => self.on_pull(key, r, &mut touched),
            (Some(Request::Pull(key)), other) => {
                // Not pulled again in a loop: a retryable error waits for the
                // retry tick, any error for a new head or connection.
                if let Some(t) = self.tracks.get_mut(&key) {
                    t.pull_failed();
                }
                if let Out::Error(e) = other {
                    self.retry_pulls |= e.retryable;
                    self.events.push_back(Event::ServerError(e));
                }
            }
            (Some(Request::Join(room)), Out::RoomJoined(j)) => {
                self.on_joined(room, j, &mut touched)
            }
            (Some(Request::Join(room)), Out::Error(error)) => {
                self.catch_up.rooms_pending.remove(&room);
                if self.rooms.remove(&room) {
                    self.tracks.remove(&ConversationKey::room(room.clone()));
                    self.events.push_back(Event::RoomFailed {
                        room_id: room,
                        error,
                    });
                }
            }
            (Some(Request::Application), body) => {
                let answer = match body {
                    Out::Error(e) => Err(AnswerError::Server(e)),
                    Out::ReadAck(r) => {
                        self.events.push_back(Event::ReadAck(r.clone()));
                        Ok(Out::ReadAck(r))
                    }
                    other => Ok(other),
                };
                self.answers.push_back((frame.request_id, answer));
            }
            (_, Out::Push(p)) => self.on_push(p, &mut touched),
            (_, Out::Notify(n)) => {
                if let Some(key) = ConversationKey::from_wire(n.conversation.as_ref())
                    && let Some(t) = self.track_for(&key)
                {
                    t.observe_head(n.head_seq);
                }
            }
            (_, Out::Kicked(k)) => self.on_kicked(k),
            (_, Out::Typing(t)) => self.events.push_back(Event::Typing(t)),
            (_, Out::ReadReceipt(r)) => self.events.push_back(Event::ReadReceipt(r)),
            (_, Out::Instruction(i)) => self.events.push_back(Event::Instruction(i)),
            (_, Out::Error(e)) => self.events.push_back(Event::ServerError(e)),
            // Pong, RoomLeft, or an answer of an unexpected kind: nothing to do.
            _ => {}
        }
        self.send_acks(&touched);
        self.plan_pulls();
        self.check_caught_up();
    }

    // ---------------------------------------------------------- handlers

    fn on_connected(&mut self, c: pb::Connected) {
        self.connected = Some(c);
        self.stats.connections += 1;
        self.state(ConnectionState::CatchingUp);
        self.start_catch_up(true);
        self.flush_sends();
    }

    fn start_catch_up(&mut self, rejoin: bool) {
        self.catch_up = CatchUp {
            sync_pending: true,
            ..CatchUp::default()
        };
        self.send_sync();
        if rejoin {
            let rooms: Vec<String> = self.rooms.iter().cloned().collect();
            for room in rooms {
                self.send_join(&room);
            }
        }
    }

    fn send_sync(&mut self) {
        let body = In::Sync(pb::Sync {
            inbox_version: self.inbox_version,
            limit: 0,
            include_heads: true,
        });
        self.transmit(Request::Sync, body);
    }

    fn send_join(&mut self, room_id: &str) {
        self.catch_up.rooms_pending.insert(room_id.to_owned());
        let body = In::JoinRoom(pb::JoinRoom {
            room_id: room_id.to_owned(),
        });
        self.transmit(Request::Join(room_id.to_owned()), body);
    }

    fn on_sync(&mut self, r: pb::SyncResult, touched: &mut BTreeSet<ConversationKey>) {
        let first_page = self.catch_up.sync_pending && !self.catch_up.list_pending;
        for m in r.messages {
            self.offer(m, touched);
        }
        for e in &r.entries {
            if let Some(key) = ConversationKey::from_wire(e.conversation.as_ref())
                && let Some(t) = self.track_for(&key)
            {
                t.observe_head(e.seq);
            }
        }
        let heads_given = !r.heads.is_empty();
        for h in &r.heads {
            if let Some(key) = ConversationKey::from_wire(h.conversation.as_ref())
                && let Some(t) = self.track_for(&key)
            {
                t.observe_head(h.head_seq);
            }
        }
        if r.full_sync_required {
            // Behind by more than the inbox keeps: list and pull everything.
            self.stats.full_syncs += 1;
            self.inbox_version = r.inbox_version;
            self.catch_up.sync_pending = false;
            self.send_list();
            return;
        }
        self.inbox_version = r.entries.last().map_or(r.inbox_version, |e| e.version);
        if r.has_more {
            self.send_sync();
            return;
        }
        self.catch_up.sync_pending = false;
        let push_acks = self.connected.as_ref().is_some_and(|c| c.push_acks);
        if first_page && !heads_given && !push_acks {
            // A server that predates `include_heads` never reports the
            // read-diffusion groups' heads: learn them from the list.
            self.send_list();
        }
    }

    fn send_list(&mut self) {
        self.catch_up.list_pending = true;
        let body = In::ListConversations(pb::ListConversations { limit: 0 });
        self.transmit(Request::List, body);
    }

    fn on_list(&mut self, l: pb::ConversationList) {
        self.catch_up.list_pending = false;
        for c in &l.conversations {
            if let Some(key) = ConversationKey::from_wire(c.conversation.as_ref())
                && let Some(t) = self.track_for(&key)
            {
                t.observe_head(c.head_seq);
            }
        }
    }

    fn on_pull(
        &mut self,
        key: ConversationKey,
        r: pb::PullResult,
        touched: &mut BTreeSet<ConversationKey>,
    ) {
        let Some(track) = self.tracks.get_mut(&key) else {
            return;
        };
        let mut out = Vec::new();
        let lost = track.pull_answered(r, &mut out);
        if let Some((after_seq, until_seq)) = lost {
            self.events.push_back(Event::HistoryGap {
                conversation: key.clone(),
                after_seq,
                until_seq,
            });
        }
        if !out.is_empty() || lost.is_some() {
            touched.insert(key);
        }
        self.events.extend(out.into_iter().map(Event::Message));
    }

    fn on_joined(
        &mut self,
        room: String,
        j: pb::RoomJoined,
        touched: &mut BTreeSet<ConversationKey>,
    ) {
        self.catch_up.rooms_pending.remove(&room);
        if !self.rooms.contains(&room) {
            return;
        }
        let key = ConversationKey::room(room);
        let track = self.tracks.entry(key.clone()).or_default();
        let mut out = Vec::new();
        if track.is_awaiting_baseline() {
            track.set_baseline(j.head_seq, &mut out);
        } else {
            track.observe_head(j.head_seq);
        }
        if !out.is_empty() {
            touched.insert(key);
        }
        self.events.push_back(Event::RoomJoined(j));
        self.events.extend(out.into_iter().map(Event::Message));
    }

    fn on_push(&mut self, p: pb::Push, touched: &mut BTreeSet<ConversationKey>) {
        for m in p.messages {
            if let Some(key) = ConversationKey::from_wire(m.conversation.as_ref()) {
                if let Some(t) = self.tracks.get_mut(&key) {
                    // One Ack per pushed conversation, even for repeats.
                    t.want_ack();
                }
                self.offer(m, touched);
                touched.insert(key);
            }
        }
    }

    fn on_send_answer(
        &mut self,
        request_id: u64,
        body: Out,
        touched: &mut BTreeSet<ConversationKey>,
    ) {
        match body {
            Out::SendAck(a) => {
                let Some(send) = self.sends.finish(request_id) else {
                    return;
                };
                let own = pb::Message {
                    conversation: Some(send.conversation.to_wire()),
                    seq: a.seq,
                    message_id: a.message_id,
                    sender_user: self
                        .connected
                        .as_ref()
                        .map(|c| c.user_id.clone())
                        .unwrap_or_default(),
                    sender_device: self.config.device_id.clone(),
                    client_msg_id: send.client_msg_id.clone(),
                    body: send.body,
                    server_time_ms: a.server_time_ms,
                    ..Default::default()
                };
                self.offer(own, touched);
                self.events.push_back(Event::SendAcked {
                    client_msg_id: send.client_msg_id,
                    conversation: send.conversation,
                    seq: a.seq,
                    message_id: a.message_id,
                });
            }
            Out::Error(e) if e.retryable => {
                self.sends.back_off(request_id);
            }
            Out::Error(error) => {
                if let Some(send) = self.sends.finish(request_id) {
                    self.events.push_back(Event::SendFailed {
                        client_msg_id: send.client_msg_id,
                        conversation: send.conversation,
                        error,
                    });
                }
            }
            _ => {
                // Not an answer to a send: write it again on the next connection.
                self.sends.back_off(request_id);
            }
        }
    }

    fn on_kicked(&mut self, k: pb::Kicked) {
        let reason = pb::KickReason::try_from(k.reason).unwrap_or_default();
        self.events.push_back(Event::Kicked {
            reason,
            detail: k.detail.clone(),
        });
        let text = format!("kicked ({}): {}", reason.as_str_name(), k.detail);
        match reason {
            // Another session took this device, or the host removed the
            // user: reconnecting would fight it.
            pb::KickReason::Replaced | pb::KickReason::ByHost => self.stop(&text),
            _ => self.close = Some(text),
        }
    }

    // ----------------------------------------------------------- helpers

    /// The track of `key`, created for a conversation seen for the first
    /// time (delivered from seq 1), except for rooms the client is not in.
    fn track_for(&mut self, key: &ConversationKey) -> Option<&mut Track> {
        if key.kind == Kind::Room && !self.rooms.contains(&key.id) {
            return None;
        }
        Some(self.tracks.entry(key.clone()).or_default())
    }

    fn offer(&mut self, m: pb::Message, touched: &mut BTreeSet<ConversationKey>) {
        let Some(key) = ConversationKey::from_wire(m.conversation.as_ref()) else {
            return;
        };
        let mut out = Vec::new();
        let Some(track) = self.track_for(&key) else {
            return;
        };
        if track.offer(m, &mut out) == Offered::Duplicate {
            self.stats.duplicates += 1;
        }
        if !out.is_empty() {
            touched.insert(key);
        }
        self.events.extend(out.into_iter().map(Event::Message));
    }

    fn send_acks(&mut self, touched: &BTreeSet<ConversationKey>) {
        if self.connected.is_none() {
            return;
        }
        for key in touched {
            let Some(seq) = self.tracks.get_mut(key).and_then(Track::take_ack) else {
                continue;
            };
            self.outbox.push_back(pb::ClientFrame {
                request_id: 0,
                body: Some(In::Ack(pb::Ack {
                    conversation: Some(key.to_wire()),
                    seq,
                })),
            });
        }
    }

    fn plan_pulls(&mut self) {
        if self.connected.is_none() {
            return;
        }
        let mut pulls = Vec::new();
        for (key, track) in &mut self.tracks {
            if let Some((after_seq, until_seq)) = track.next_pull() {
                pulls.push((key.clone(), after_seq, until_seq));
            }
        }
        for (key, after_seq, until_seq) in pulls {
            self.stats.pulls += 1;
            let body = In::Pull(pb::Pull {
                conversation: Some(key.to_wire()),
                after_seq,
                until_seq,
                limit: 0,
                newest: false,
            });
            self.transmit(Request::Pull(key), body);
        }
    }

    fn check_caught_up(&mut self) {
        let c = &self.catch_up;
        if self.connected.is_none()
            || c.done
            || c.sync_pending
            || c.list_pending
            || !c.rooms_pending.is_empty()
            || self.tracks.values().any(Track::pull_in_flight)
        {
            return;
        }
        self.catch_up.done = true;
        self.state(ConnectionState::Online);
    }

    fn flush_sends(&mut self) {
        if self.connected.is_none() {
            return;
        }
        let mut next = self.next_request;
        let sends = self.sends.take_waiting(|| {
            let id = next;
            next += 1;
            id
        });
        self.next_request = next;
        for (id, send) in sends {
            self.requests.insert(id, Request::Send);
            self.outbox.push_back(pb::ClientFrame {
                request_id: id,
                body: Some(In::Send(pb::Send {
                    client_msg_id: send.client_msg_id,
                    conversation: Some(send.conversation.to_wire()),
                    body: send.body,
                    ..Default::default()
                })),
            });
        }
    }

    fn transmit(&mut self, request: Request, body: In) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        self.requests.insert(id, request);
        self.outbox.push_back(pb::ClientFrame {
            request_id: id,
            body: Some(body),
        });
        id
    }

    fn require_connected(&self) -> Result<(), CoreError> {
        if let Some(reason) = &self.stopped {
            return Err(CoreError::Stopped(reason.clone()));
        }
        if self.connected.is_none() {
            return Err(CoreError::NotConnected);
        }
        Ok(())
    }

    fn state(&mut self, s: ConnectionState) {
        self.events.push_back(Event::State(s));
    }
}

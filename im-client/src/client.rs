//! The async driver: owns the socket and the clock, feeds the pure
//! [`ClientCore`], and hands events to the application.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use im_core::codec::{decode_server_frame, encode_client_frame};
use im_core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::core::{Answer, Backoff, ClientCore, CoreConfig};
use crate::transport::{Conn, ServerAddr};
use crate::{ClientError, ConversationKey, Event};

/// How a [`Client`] connects and behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server addresses, tried in turn (`HOST:PORT`, `tcp://…`, `ws://…/ws`).
    pub servers: Vec<String>,
    /// User, device and protocol options.
    pub core: CoreConfig,
    /// First reconnect delay (doubled per failure, with jitter).
    pub backoff_base: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Seed of the backoff jitter (`None`: from the clock).
    pub jitter_seed: Option<u64>,
    /// Longest wait for a TCP/WebSocket connection to open.
    pub connect_timeout: Duration,
    /// Heartbeat period (`None`: half the server's `heartbeat_interval_ms`).
    pub heartbeat: Option<Duration>,
    /// A connection silent this long is considered dead and replaced
    /// (`None`: three heartbeats). Also bounds each write.
    pub idle_timeout: Option<Duration>,
    /// Pause before a send or pull that got a retryable error is retried.
    pub retry_interval: Duration,
    /// Events buffered for the application; when full the SDK waits (and the
    /// server, if the application never reads, eventually drops the session).
    pub event_buffer: usize,
    /// Largest frame accepted from the server.
    pub max_frame_bytes: usize,
}

impl ClientConfig {
    /// Defaults for one server, a token and a device id.
    pub fn new(
        server: impl Into<String>,
        token: impl Into<String>,
        device_id: impl Into<String>,
    ) -> Self {
        Self {
            servers: vec![server.into()],
            core: CoreConfig::new(token, device_id),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(15),
            jitter_seed: None,
            connect_timeout: Duration::from_secs(5),
            heartbeat: None,
            idle_timeout: None,
            retry_interval: Duration::from_millis(500),
            event_buffer: 1024,
            max_frame_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Application calls, carried to the driver task.
enum Command {
    Send {
        conversation: ConversationKey,
        client_msg_id: String,
        body: Bytes,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Request {
        body: In,
        reply: oneshot::Sender<Result<Out, ClientError>>,
    },
    JoinRoom(String),
    LeaveRoom(String),
    Resync,
    Close,
}

/// A handle on a running client. Cheap to share behind an `Arc`; dropping
/// every handle stops the client.
#[derive(Debug)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    id_prefix: String,
    next_id: AtomicU64,
    task: tokio::task::JoinHandle<()>,
}

/// The events of a [`Client`], in order. A [`Stream`]; ends when the client stops.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the client stopped.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

impl Client {
    /// Starts a client in the current tokio runtime: it connects, catches up
    /// and reconnects on its own until [`Client::close`].
    pub fn start(config: ClientConfig) -> Result<(Self, Events), ClientError> {
        let servers = config
            .servers
            .iter()
            .map(|s| ServerAddr::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(ClientError::Address(String::new()));
        }
        let (commands, commands_rx) = mpsc::channel(256);
        let (events_tx, rx) = mpsc::channel(config.event_buffer.max(1));
        let nonce = clock_nonce();
        let id_prefix = format!("{}-{nonce:x}", config.core.device_id);
        let seed = config.jitter_seed.unwrap_or(nonce);
        let driver = Driver {
            core: ClientCore::new(config.core.clone()),
            backoff: Backoff::new(config.backoff_base, config.backoff_max, seed),
            config,
            servers,
            commands: commands_rx,
            events: events_tx,
            waiting: HashMap::new(),
        };
        let task = tokio::spawn(driver.run());
        Ok((
            Self {
                commands,
                id_prefix,
                next_id: AtomicU64::new(1),
                task,
            },
            Events { rx },
        ))
    }

    /// Sends a message: returns its `client_msg_id` once queued. The SDK
    /// writes it on every connection until [`Event::SendAcked`] (or
    /// [`Event::SendFailed`]); the server commits it once.
    pub async fn send(
        &self,
        conversation: ConversationKey,
        body: impl Into<Bytes>,
    ) -> Result<String, ClientError> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", self.id_prefix);
        self.send_with_id(conversation, id.clone(), body).await?;
        Ok(id)
    }

    /// [`Client::send`] with an id of the application's choosing (unique
    /// per user and device, also across restarts of the application).
    pub async fn send_with_id(
        &self,
        conversation: ConversationKey,
        client_msg_id: String,
        body: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Send {
            conversation,
            client_msg_id,
            body: body.into(),
            reply,
        })
        .await?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// One request of the application's own, answered on the current
    /// connection (not retried: [`ClientError::Disconnected`] if it breaks).
    pub async fn request(&self, body: In) -> Result<Out, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Request { body, reply }).await?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// The user's conversations with heads and unread counts.
    pub async fn list_conversations(&self) -> Result<Vec<pb::ConversationSummary>, ClientError> {
        match self
            .request(In::ListConversations(pb::ListConversations { limit: 0 }))
            .await?
        {
            Out::ConversationList(l) => Ok(l.conversations),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// History: the newest `limit` messages with seq `<= until_seq` (0: up
    /// to the head). These are not [`Event::Message`]s.
    pub async fn history(
        &self,
        conversation: &ConversationKey,
        until_seq: u64,
        limit: u32,
    ) -> Result<pb::PullResult, ClientError> {
        match self
            .request(In::Pull(pb::Pull {
                conversation: Some(conversation.to_wire()),
                after_seq: 0,
                until_seq,
                limit,
                newest: true,
            }))
            .await?
        {
            Out::PullResult(r) => Ok(r),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Marks `conversation` read up to `seq`.
    pub async fn read(
        &self,
        conversation: &ConversationKey,
        seq: u64,
    ) -> Result<pb::ReadAck, ClientError> {
        match self
            .request(In::Read(pb::Read {
                conversation: Some(conversation.to_wire()),
                seq,
            }))
            .await?
        {
            Out::ReadAck(r) => Ok(r),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Joins a live room, now and after every reconnect ([`Event::RoomJoined`]).
    pub async fn join_room(&self, room_id: &str) -> Result<(), ClientError> {
        self.command(Command::JoinRoom(room_id.to_owned())).await
    }

    /// Leaves a live room.
    pub async fn leave_room(&self, room_id: &str) -> Result<(), ClientError> {
        self.command(Command::LeaveRoom(room_id.to_owned())).await
    }

    /// Runs the catch-up again without reconnecting.
    pub async fn resync(&self) -> Result<(), ClientError> {
        self.command(Command::Resync).await
    }

    /// Stops the client (pending sends are abandoned) and waits for its task.
    pub async fn close(self) {
        let _ = self.commands.send(Command::Close).await;
        let _ = self.task.await;
    }

    async fn command(&self, c: Command) -> Result<(), ClientError> {
        self.commands.send(c).await.map_err(|_| ClientError::Closed)
    }
}

/// A per-start nonce so `client_msg_id`s never repeat across restarts.
fn clock_nonce() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

/// Why a connection's loop ended.
enum Ended {
    /// The connection broke (the reason); reconnect.
    Lost(String),
    /// The application closed the client or it stopped.
    Stop,
}

/// The driver task's state.
struct Driver {
    core: ClientCore,
    backoff: Backoff,
    config: ClientConfig,
    servers: Vec<ServerAddr>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    waiting: HashMap<u64, oneshot::Sender<Result<Out, ClientError>>>,
}

impl Driver {
    async fn run(mut self) {
        let mut next_server = 0;
        while self.core.stopped().is_none() {
            let addr = self.servers[next_server % self.servers.len()].clone();
            next_server += 1;
            self.core.connecting(&addr.to_string());
            self.deliver().await;
            let opened = tokio::time::timeout(
                self.config.connect_timeout,
                Conn::open(&addr, self.config.max_frame_bytes),
            )
            .await;
            let reason = match opened {
                Ok(Ok(conn)) => match self.connection(conn).await {
                    Ended::Lost(reason) => reason,
                    Ended::Stop => break,
                },
                Ok(Err(e)) => e.to_string(),
                Err(_) => "connect timed out".to_owned(),
            };
            self.core.connection_lost(&reason);
            self.deliver().await;
            if self.core.stopped().is_some() {
                break;
            }
            let pause = tokio::time::sleep(self.backoff.next_delay());
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    c = self.commands.recv() => {
                        if !self.apply(c) {
                            break;
                        }
                        self.deliver().await;
                    }
                }
            }
        }
        self.core.connection_lost("");
        self.core.stop("closed");
        self.deliver().await;
    }

    /// Serves one open connection until it breaks or the client stops.
    async fn connection(&mut self, mut conn: Conn) -> Ended {
        self.core.connection_opened();
        let mut ping_every = self.config.heartbeat.unwrap_or(Duration::from_secs(5));
        let mut idle = self.config.idle_timeout.unwrap_or(ping_every * 3);
        let mut next_ping = Instant::now() + ping_every;
        let mut last_heard = Instant::now();
        let mut was_connected = false;
        loop {
            let frames: Vec<Bytes> = std::iter::from_fn(|| self.core.poll_transmit())
                .map(|f| encode_client_frame(&f))
                .collect();
            if !frames.is_empty() {
                match tokio::time::timeout(idle, conn.send_all(frames)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Ended::Lost(e.to_string()),
                    Err(_) => return Ended::Lost("write timed out".to_owned()),
                }
            }
            self.deliver().await;
            if self.core.stopped().is_some() {
                return Ended::Stop;
            }
            if let Some(reason) = self.core.take_close() {
                return Ended::Lost(reason);
            }
            if !was_connected && let Some(c) = self.core.connected() {
                was_connected = true;
                self.backoff.reset();
                let server = Duration::from_millis(u64::from(c.heartbeat_interval_ms.max(200)));
                ping_every = self.config.heartbeat.unwrap_or(server / 2);
                idle = self.config.idle_timeout.unwrap_or(ping_every * 3);
                next_ping = Instant::now() + ping_every;
            }
            let retry = self.core.wants_retry_tick();
            tokio::select! {
                frame = conn.recv() => match frame {
                    Ok(Some(bytes)) => {
                        last_heard = Instant::now();
                        match decode_server_frame(&bytes) {
                            Ok(f) => self.core.handle_frame(f),
                            Err(e) => return Ended::Lost(e.to_string()),
                        }
                    }
                    Ok(None) => return Ended::Lost("closed by the server".to_owned()),
                    Err(e) => return Ended::Lost(e.to_string()),
                },
                c = self.commands.recv() => {
                    if !self.apply(c) {
                        return Ended::Stop;
                    }
                }
                _ = tokio::time::sleep_until(next_ping) => {
                    self.core.ping(im_core::ids::now_ms());
                    next_ping = Instant::now() + ping_every;
                }
                _ = tokio::time::sleep_until(last_heard + idle) => {
                    return Ended::Lost(format!("nothing from the server for {idle:?}"));
                }
                _ = tokio::time::sleep(self.config.retry_interval), if retry => {
                    self.core.retry_tick();
                }
            }
        }
    }

    /// Applies an application command; false when the client must stop.
    fn apply(&mut self, command: Option<Command>) -> bool {
        match command {
            None | Some(Command::Close) => {
                self.core.stop("closed by the application");
                false
            }
            Some(Command::Send {
                conversation,
                client_msg_id,
                body,
                reply,
            }) => {
                let result = self.core.send(conversation, client_msg_id, body);
                let _ = reply.send(result.map_err(ClientError::from));
                true
            }
            Some(Command::Request { body, reply }) => {
                match self.core.request(body) {
                    Ok(id) => {
                        self.waiting.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
                true
            }
            Some(Command::JoinRoom(room)) => {
                self.core.join_room(&room);
                true
            }
            Some(Command::LeaveRoom(room)) => {
                self.core.leave_room(&room);
                true
            }
            Some(Command::Resync) => {
                self.core.resync();
                true
            }
        }
    }

    /// Hands events and answers to the application.
    async fn deliver(&mut self) {
        while let Some((id, answer)) = self.core.poll_answer() {
            if let Some(reply) = self.waiting.remove(&id) {
                let _ = reply.send(answer_result(answer));
            }
        }
        while let Some(event) = self.core.poll_event() {
            // An application that dropped its `Events` just misses them.
            let _ = self.events.send(event).await;
        }
    }
}

fn answer_result(a: Answer) -> Result<Out, ClientError> {
    a.map_err(ClientError::from)
}

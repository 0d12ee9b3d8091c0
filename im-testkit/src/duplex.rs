//! An in-memory connection for engine tests: no sockets, no real time.
//!
//! [`MemClient::pair`] makes an [`im_core::Connection`] (for
//! [`Engine::accept`]) and the client end of it; [`MemClient::connect`]
//! also does the `Connect` handshake. Frames cross over channels, so
//! everything that happens is driven by Tokio alone: under
//! `#[tokio::test(start_paused = true)]` the clock only moves when every task
//! is idle, and timers (heartbeats, handshake timeouts, batch windows) fire
//! in virtual time, deterministically and at once.
//!
//! Use it for tests of the engine; tests of a transport keep their sockets.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use im_core::Engine;
//! # use im_testkit::duplex::MemClient;
//! # async fn run(engine: Engine) {
//! let alice = MemClient::connect(&engine, "alice", "phone").await.expect("connect");
//! alice.ping().await.expect("pong");
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use im_core::codec::{decode_server_frame, encode_client_frame};
use im_core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_core::{
    CloseReason, Connection, ConnectionInfo, Engine, FrameReader, FrameWriter, TransportError,
};
use im_transport_tcp::client::ClientError;
use std::sync::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

/// Frames the engine may write that the client has not taken yet before the
/// engine's writer blocks (as a socket whose peer stopped reading does).
pub const DEFAULT_CAPACITY: usize = 1024;

/// What the engine wrote.
enum ServerEvent {
    Frame(Bytes),
    Close(CloseReason),
}

/// The engine's read half: frames the client sent.
struct MemReader {
    rx: mpsc::UnboundedReceiver<Bytes>,
    max_frame: usize,
    taken: u64,
    /// How many frames the engine had taken when it last asked for the next
    /// one, i.e. how many it has fully handled (`None` before its first read).
    handled: watch::Sender<Option<u64>>,
}

#[im_core::async_trait]
impl FrameReader for MemReader {
    async fn read_frame(&mut self) -> Result<Option<Bytes>, TransportError> {
        // Asking for frame n+1 means frame n was handled.
        self.handled.send_replace(Some(self.taken));
        match self.rx.recv().await {
            None => Ok(None),
            Some(frame) if frame.len() > self.max_frame => Err(TransportError::FrameTooLarge {
                size: frame.len(),
                max: self.max_frame,
            }),
            Some(frame) => {
                self.taken += 1;
                Ok(Some(frame))
            }
        }
    }
}

/// The engine's write half: frames for the client.
struct MemWriter {
    tx: Option<mpsc::Sender<ServerEvent>>,
}

#[im_core::async_trait]
impl FrameWriter for MemWriter {
    async fn write_frames(&mut self, frames: &[Bytes]) -> Result<(), TransportError> {
        let tx = self.tx.as_ref().ok_or(TransportError::Closed)?;
        for f in frames {
            tx.send(ServerEvent::Frame(f.clone()))
                .await
                .map_err(|_| TransportError::Closed)?;
        }
        Ok(())
    }

    async fn close(&mut self, reason: CloseReason) -> Result<(), TransportError> {
        let tx = self.tx.take().ok_or(TransportError::Closed)?;
        tx.send(ServerEvent::Close(reason))
            .await
            .map_err(|_| TransportError::Closed)
    }
}

type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<pb::ServerFrame>>>>>;

/// State the router task shares with the client.
#[derive(Default)]
struct Shared {
    /// The last error the engine sent on its own (request id 0).
    last_error: Option<pb::Error>,
    /// How the engine closed the connection, if it did.
    close: Option<CloseReason>,
}

/// The client end of an in-memory connection.
///
/// Requests are correlated by `request_id`; frames the engine sends on its
/// own arrive through [`MemClient::next_event`]. The methods mirror those of
/// the TCP client (`im_transport_tcp::client::Client`) and fail with its
/// [`ClientError`], so a test reads the same over either.
pub struct MemClient {
    tx: Option<mpsc::UnboundedSender<Bytes>>,
    sent: AtomicU64,
    handled: watch::Receiver<Option<u64>>,
    pending: Pending,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<pb::ServerFrame>>,
    shared: Arc<Mutex<Shared>>,
    router: Option<tokio::task::JoinHandle<()>>,
    next_id: AtomicU64,
    /// What the engine said on connect (default until [`MemClient::connect`]).
    pub connected: pb::Connected,
    /// How long requests wait for an answer (virtual time under a paused clock).
    pub timeout: Duration,
}

impl std::fmt::Debug for MemClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemClient")
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

impl MemClient {
    /// A connection for [`Engine::accept`] and its client end, with no
    /// handshake done. The engine may write [`DEFAULT_CAPACITY`] frames ahead
    /// of the client; frames larger than `max_frame` bytes are refused as a
    /// transport would.
    pub fn pair(max_frame: usize) -> (Connection, Self) {
        Self::pair_with_capacity(max_frame, DEFAULT_CAPACITY)
    }

    /// [`MemClient::pair`] with the engine allowed `capacity` frames ahead of
    /// the client (at least 1) before its writer blocks.
    pub fn pair_with_capacity(max_frame: usize, capacity: usize) -> (Connection, Self) {
        let (client_tx, server_rx) = mpsc::unbounded_channel();
        let (server_tx, client_rx) = mpsc::channel(capacity.max(1));
        let (handled_tx, handled_rx) = watch::channel(None);
        let conn = Connection {
            reader: Box::new(MemReader {
                rx: server_rx,
                max_frame,
                taken: 0,
                handled: handled_tx,
            }),
            writer: Box::new(MemWriter {
                tx: Some(server_tx),
            }),
            info: ConnectionInfo::new("memory", None).with_max_frame_bytes(max_frame),
        };
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let router = tokio::spawn(route(client_rx, pending.clone(), events_tx, shared.clone()));
        let client = Self {
            tx: Some(client_tx),
            sent: AtomicU64::new(0),
            handled: handled_rx,
            pending,
            events: tokio::sync::Mutex::new(events_rx),
            shared,
            router: Some(router),
            next_id: AtomicU64::new(1),
            connected: pb::Connected::default(),
            timeout: Duration::from_secs(10),
        };
        (conn, client)
    }

    /// Connects `user` from `device` to `engine` with the insecure dev
    /// authenticator's token (`"user:device"`) and waits for `Connected`.
    pub async fn connect(engine: &Engine, user: &str, device: &str) -> Result<Self, ClientError> {
        Self::connect_with_token(engine, &format!("{user}:{device}"), device).await
    }

    /// Connects with an explicit token and waits for `Connected`.
    pub async fn connect_with_token(
        engine: &Engine,
        token: &str,
        device_id: &str,
    ) -> Result<Self, ClientError> {
        let (conn, mut client) = Self::pair(engine.config().max_frame_bytes);
        engine.accept(conn);
        let answer = client
            .request(In::Connect(pb::Connect {
                token: token.to_owned(),
                device_id: device_id.to_owned(),
                device_kind: pb::DeviceKind::Desktop as i32,
                inbox_version: 0,
                client_info: "im-testkit/duplex".to_owned(),
                push_acks: false,
                ..Default::default()
            }))
            .await?;
        match answer {
            Out::Connected(c) => client.connected = c,
            other => return Err(unexpected(other)),
        }
        Ok(client)
    }

    /// Sends a frame without waiting for an answer.
    pub fn send_frame(&self, frame: &pb::ClientFrame) -> Result<(), ClientError> {
        self.send_raw(encode_client_frame(frame))
    }

    /// Sends arbitrary bytes as one frame.
    pub fn send_raw(&self, payload: impl Into<Bytes>) -> Result<(), ClientError> {
        let tx = self.tx.as_ref().ok_or(ClientError::Closed)?;
        tx.send(payload.into()).map_err(|_| ClientError::Closed)?;
        self.sent.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Waits until the engine has handled every frame sent so far: it took
    /// each and asked for the next one. With nothing sent, waits until the
    /// engine started reading the connection (its session is running).
    /// `Err(Closed)` if the engine let go of the connection first.
    pub async fn handled(&self) -> Result<(), ClientError> {
        let sent = self.sent.load(Ordering::SeqCst);
        let mut handled = self.handled.clone();
        handled
            .wait_for(|n| n.is_some_and(|n| n >= sent))
            .await
            .map(|_| ())
            .map_err(|_| ClientError::Closed)
    }

    /// Sends a request and waits for its answer (an `Error` answer becomes
    /// [`ClientError::Server`]).
    pub async fn request(&self, body: In) -> Result<Out, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match lock(&self.pending).as_mut() {
            Some(p) => p.insert(id, tx),
            None => return Err(self.closed_error()),
        };
        let forget = || {
            if let Some(p) = lock(&self.pending).as_mut() {
                p.remove(&id);
            }
        };
        if let Err(e) = self.send_frame(&pb::ClientFrame {
            request_id: id,
            body: Some(body),
        }) {
            forget();
            return Err(e);
        }
        let frame = match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(_)) => return Err(self.closed_error()),
            Err(_) => {
                forget();
                return Err(ClientError::Timeout);
            }
        };
        match frame.body {
            Some(Out::Error(e)) => Err(ClientError::Server(e)),
            Some(body) => Ok(body),
            None => Err(ClientError::Unexpected(Box::new(frame))),
        }
    }

    /// Sends a message and waits for its `SendAck`.
    pub async fn send(
        &self,
        conversation: pb::ConversationRef,
        client_msg_id: &str,
        body: impl Into<Bytes>,
    ) -> Result<pb::SendAck, ClientError> {
        match self
            .request(In::Send(pb::Send {
                client_msg_id: client_msg_id.to_owned(),
                conversation: Some(conversation),
                body: body.into(),
                ..Default::default()
            }))
            .await?
        {
            Out::SendAck(a) => Ok(a),
            other => Err(unexpected(other)),
        }
    }

    /// Reads inbox entries after `inbox_version`.
    pub async fn sync(&self, inbox_version: u64) -> Result<pb::SyncResult, ClientError> {
        match self
            .request(In::Sync(pb::Sync {
                inbox_version,
                limit: 0,
                include_heads: false,
            }))
            .await?
        {
            Out::SyncResult(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Lists conversations with unread counts.
    pub async fn list_conversations(&self) -> Result<Vec<pb::ConversationSummary>, ClientError> {
        match self
            .request(In::ListConversations(pb::ListConversations { limit: 0 }))
            .await?
        {
            Out::ConversationList(l) => Ok(l.conversations),
            other => Err(unexpected(other)),
        }
    }

    /// Sends a heartbeat and waits for the `Pong`.
    pub async fn ping(&self) -> Result<pb::Pong, ClientError> {
        match self
            .request(In::Ping(pb::Ping {
                client_time_ms: im_core::ids::now_ms(),
            }))
            .await?
        {
            Out::Pong(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// The next frame the engine sent on its own, waiting up to `wait`;
    /// `Ok(None)` if none came in time, `Err(Closed)` once the engine closed
    /// the connection and every frame before the close was taken.
    pub async fn next_event(&self, wait: Duration) -> Result<Option<pb::ServerFrame>, ClientError> {
        let mut events = self.events.lock().await;
        match tokio::time::timeout(wait, events.recv()).await {
            Err(_) => Ok(None),
            Ok(Some(f)) => Ok(Some(f)),
            Ok(None) => Err(ClientError::Closed),
        }
    }

    /// Collects pushed messages until `count` arrived or `wait` passed since
    /// the last one.
    pub async fn collect_pushed(
        &self,
        count: usize,
        wait: Duration,
    ) -> Result<Vec<pb::Message>, ClientError> {
        let mut out = Vec::new();
        while out.len() < count {
            match self.next_event(wait).await? {
                Some(pb::ServerFrame {
                    body: Some(Out::Push(p)),
                    ..
                }) => out.extend(p.messages),
                Some(_) => {}
                None => break,
            }
        }
        Ok(out)
    }

    /// How the engine closed the connection, if it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        lock(&self.shared).close.clone()
    }

    /// Ends the connection from the client's side (the engine reads the end
    /// of the stream) and waits until the engine has let go of it: its
    /// session is over. Returns the engine's close reason, if it gave one.
    pub async fn close(mut self) -> Option<CloseReason> {
        self.tx.take();
        if let Some(router) = self.router.take() {
            let _ = router.await;
        }
        self.close_reason()
    }

    fn closed_error(&self) -> ClientError {
        lock(&self.shared)
            .last_error
            .clone()
            .map_or(ClientError::Closed, ClientError::Server)
    }
}

/// Dispatches what the engine wrote: answers to their requests, the rest to
/// the events queue. Ends when the engine drops its writer.
async fn route(
    mut rx: mpsc::Receiver<ServerEvent>,
    pending: Pending,
    events: mpsc::UnboundedSender<pb::ServerFrame>,
    shared: Arc<Mutex<Shared>>,
) {
    while let Some(event) = rx.recv().await {
        let bytes = match event {
            ServerEvent::Frame(bytes) => bytes,
            ServerEvent::Close(reason) => {
                lock(&shared).close = Some(reason);
                continue;
            }
        };
        let frame = match decode_server_frame(&bytes) {
            Ok(f) => f,
            Err(e) => panic!("the engine wrote an undecodable frame: {e}"),
        };
        if let (0, Some(Out::Error(e))) = (frame.request_id, &frame.body) {
            lock(&shared).last_error = Some(e.clone());
        }
        let waiter = match frame.request_id {
            0 => None,
            id => lock(&pending).as_mut().and_then(|p| p.remove(&id)),
        };
        match waiter {
            Some(tx) => {
                let _ = tx.send(frame);
            }
            None => {
                let _ = events.send(frame);
            }
        }
    }
    // Wake every waiter: the connection is gone.
    lock(&pending).take();
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unexpected(body: Out) -> ClientError {
    ClientError::Unexpected(Box::new(pb::ServerFrame {
        request_id: 0,
        body: Some(body),
    }))
}

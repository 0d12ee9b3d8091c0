//! A small async client for the TCP transport: for bots, tools and tests.
//!
//! Requests are correlated by `request_id`; frames the server sends on its
//! own (`Push`, `Notify`, `Kicked`, …) arrive through [`Client::next_event`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use im_core::codec::{decode_server_frame, encode_client_frame};
use im_core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use crate::codec::FrameCodec;

/// Unsolicited frames buffered for the application; more are dropped and counted.
const EVENT_BUFFER: usize = 4096;
/// Largest frame the client accepts from the server.
const MAX_SERVER_FRAME: usize = 16 * 1024 * 1024;

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Socket failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The server answered with an `Error` frame.
    #[error("server error {code:?}: {reason}", code = pb::ErrorCode::try_from(.0.code).unwrap_or_default(), reason = .0.reason)]
    Server(pb::Error),
    /// The connection closed before an answer came.
    #[error("connection closed")]
    Closed,
    /// The server answered with a frame of the wrong kind.
    #[error("unexpected answer: {0:?}")]
    Unexpected(Box<pb::ServerFrame>),
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
}

impl ClientError {
    /// The server's error code, if the server answered with an error.
    pub fn code(&self) -> Option<pb::ErrorCode> {
        match self {
            Self::Server(e) => pb::ErrorCode::try_from(e.code).ok(),
            _ => None,
        }
    }
}

type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<pb::ServerFrame>>>>>;

/// The last error the server sent on its own (request id 0), kept so a
/// request cut off by the close that follows reports it instead of `Closed`.
type LastError = Arc<Mutex<Option<pb::Error>>>;

/// The write half of whatever stream the client runs on.
struct Writer(Box<dyn AsyncWrite + Send + Unpin>);

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

/// A connected, authenticated client.
#[derive(Debug)]
pub struct Client {
    writer: tokio::sync::Mutex<Writer>,
    pending: Pending,
    events: tokio::sync::Mutex<mpsc::Receiver<pb::ServerFrame>>,
    next_id: AtomicU64,
    dropped: Arc<AtomicU64>,
    last_error: LastError,
    /// What the server said on connect.
    pub connected: pb::Connected,
    /// How long requests wait for an answer.
    pub timeout: Duration,
}

/// The `Connect` frame of a plain login: no push acks, no typing events.
fn connect_body(token: &str, device_id: &str, device_kind: pb::DeviceKind) -> pb::Connect {
    pb::Connect {
        token: token.to_owned(),
        device_id: device_id.to_owned(),
        device_kind: device_kind as i32,
        client_info: concat!("im-transport-tcp/", env!("CARGO_PKG_VERSION")).to_owned(),
        ..Default::default()
    }
}

impl Client {
    /// Connects and authenticates with `token` as `device_id`.
    pub async fn connect(
        addr: impl ToSocketAddrs,
        token: &str,
        device_id: &str,
    ) -> Result<Self, ClientError> {
        Self::connect_with(addr, token, device_id, pb::DeviceKind::Desktop).await
    }

    /// Connects with an explicit device kind.
    pub async fn connect_with(
        addr: impl ToSocketAddrs,
        token: &str,
        device_id: &str,
        device_kind: pb::DeviceKind,
    ) -> Result<Self, ClientError> {
        Self::connect_frame(addr, connect_body(token, device_id, device_kind)).await
    }

    /// Connects with a `Connect` frame of the caller's (to set options such
    /// as `typing_events` or `push_acks`). This client never acks on its
    /// own: see [`Client::ack`].
    pub async fn connect_frame(
        addr: impl ToSocketAddrs,
        connect: pb::Connect,
    ) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Self::connect_halves(read, Writer(Box::new(write)), connect).await
    }

    /// Connects and authenticates over a stream the caller opened: a TLS
    /// stream (e.g. from `tokio_rustls::TlsConnector`), a Unix socket, or an
    /// in-memory duplex.
    pub async fn connect_stream<S>(
        stream: S,
        token: &str,
        device_id: &str,
        device_kind: pb::DeviceKind,
    ) -> Result<Self, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        let connect = connect_body(token, device_id, device_kind);
        Self::connect_halves(read, Writer(Box::new(write)), connect).await
    }

    async fn connect_halves<R>(
        read: R,
        write: Writer,
        connect: pb::Connect,
    ) -> Result<Self, ClientError>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let dropped = Arc::new(AtomicU64::new(0));
        let last_error = LastError::default();
        tokio::spawn(read_loop(
            FramedRead::new(read, FrameCodec::new(MAX_SERVER_FRAME)),
            pending.clone(),
            tx,
            dropped.clone(),
            last_error.clone(),
        ));
        let mut client = Self {
            writer: tokio::sync::Mutex::new(write),
            pending,
            events: tokio::sync::Mutex::new(rx),
            next_id: AtomicU64::new(1),
            dropped,
            last_error,
            connected: pb::Connected::default(),
            timeout: Duration::from_secs(10),
        };
        match client.request(In::Connect(connect)).await? {
            Out::Connected(c) => client.connected = c,
            other => return Err(unexpected(other)),
        }
        Ok(client)
    }

    /// Events dropped because the application did not read them in time
    /// (more than the event buffer held); sync to catch up.
    pub fn dropped_events(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The authenticated user id.
    pub fn user_id(&self) -> &str {
        &self.connected.user_id
    }

    /// Sends a request and waits for its answer (an `Error` answer becomes
    /// [`ClientError::Server`]).
    pub async fn request(&self, body: In) -> Result<Out, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match self.pending.lock().as_mut() {
            Some(p) => p.insert(id, tx),
            None => return Err(ClientError::Closed),
        };
        let forget = || {
            if let Some(p) = self.pending.lock().as_mut() {
                p.remove(&id);
            }
        };
        if let Err(e) = self
            .send_frame(&pb::ClientFrame {
                request_id: id,
                body: Some(body),
            })
            .await
        {
            forget();
            return Err(e);
        }
        let frame = match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(_)) => {
                // Closed: say why if the server did.
                return Err(self
                    .last_error
                    .lock()
                    .clone()
                    .map_or(ClientError::Closed, ClientError::Server));
            }
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

    /// Sends a frame without waiting for an answer.
    pub async fn send_frame(&self, frame: &pb::ClientFrame) -> Result<(), ClientError> {
        self.send_raw(&encode_client_frame(frame)).await
    }

    /// Sends arbitrary bytes as one length-prefixed frame (for testing servers).
    pub async fn send_raw(&self, payload: &[u8]) -> Result<(), ClientError> {
        let mut buf = BytesMut::with_capacity(4 + payload.len());
        buf.put_u32(payload.len() as u32);
        buf.put_slice(payload);
        self.writer.lock().await.0.write_all(&buf).await?;
        Ok(())
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

    /// Pulls `(after_seq, until_seq]` (0 = head).
    pub async fn pull(
        &self,
        conversation: pb::ConversationRef,
        after_seq: u64,
        until_seq: u64,
        limit: u32,
    ) -> Result<pb::PullResult, ClientError> {
        match self
            .request(In::Pull(pb::Pull {
                conversation: Some(conversation),
                after_seq,
                until_seq,
                limit,
                newest: false,
            }))
            .await?
        {
            Out::PullResult(r) => Ok(r),
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

    /// Marks a conversation read up to `seq`.
    pub async fn read(
        &self,
        conversation: pb::ConversationRef,
        seq: u64,
    ) -> Result<pb::ReadAck, ClientError> {
        match self
            .request(In::Read(pb::Read {
                conversation: Some(conversation),
                seq,
            }))
            .await?
        {
            Out::ReadAck(r) => Ok(r),
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

    /// Joins a live room.
    pub async fn join_room(&self, room_id: &str) -> Result<pb::RoomJoined, ClientError> {
        match self
            .request(In::JoinRoom(pb::JoinRoom {
                room_id: room_id.to_owned(),
            }))
            .await?
        {
            Out::RoomJoined(r) => Ok(r),
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

    /// Acknowledges `conversation` up to `seq` (an `Ack`, which has no answer).
    pub async fn ack(
        &self,
        conversation: pb::ConversationRef,
        seq: u64,
    ) -> Result<(), ClientError> {
        self.send_frame(&pb::ClientFrame {
            request_id: 0,
            body: Some(In::Ack(pb::Ack {
                conversation: Some(conversation),
                seq,
            })),
        })
        .await
    }

    /// The next frame the server sent on its own, waiting up to `wait`;
    /// `Ok(None)` if none came in time.
    pub async fn next_event(&self, wait: Duration) -> Result<Option<pb::ServerFrame>, ClientError> {
        let mut events = self.events.lock().await;
        match tokio::time::timeout(wait, events.recv()).await {
            Err(_) => Ok(None),
            Ok(Some(f)) => Ok(Some(f)),
            Ok(None) => Err(ClientError::Closed),
        }
    }

    /// Collects pushed messages until `count` arrived or `wait` passed since the last one.
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

    /// Closes the connection.
    pub async fn close(self) -> Result<(), ClientError> {
        self.writer.lock().await.0.shutdown().await?;
        Ok(())
    }
}

/// A conversation reference for the wire.
pub fn conversation(kind: pb::ConversationKind, id: &str) -> pb::ConversationRef {
    pb::ConversationRef {
        kind: kind as i32,
        id: id.to_owned(),
    }
}

/// The direct conversation with `peer`.
pub fn direct(peer: &str) -> pb::ConversationRef {
    conversation(pb::ConversationKind::Direct, peer)
}

/// A group conversation.
pub fn group(id: &str) -> pb::ConversationRef {
    conversation(pb::ConversationKind::Group, id)
}

/// A room conversation.
pub fn room(id: &str) -> pb::ConversationRef {
    conversation(pb::ConversationKind::Room, id)
}

fn unexpected(body: Out) -> ClientError {
    ClientError::Unexpected(Box::new(pb::ServerFrame {
        request_id: 0,
        body: Some(body),
    }))
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut frames: FramedRead<R, FrameCodec>,
    pending: Pending,
    events: mpsc::Sender<pb::ServerFrame>,
    dropped: Arc<AtomicU64>,
    last_error: LastError,
) {
    while let Some(Ok(bytes)) = frames.next().await {
        let Ok(frame) = decode_server_frame(&bytes) else {
            tracing::warn!("undecodable frame from server");
            continue;
        };
        if let (0, Some(Out::Error(e))) = (frame.request_id, &frame.body) {
            *last_error.lock() = Some(e.clone());
        }
        let waiter = match frame.request_id {
            0 => None,
            id => pending.lock().as_mut().and_then(|p| p.remove(&id)),
        };
        match waiter {
            Some(tx) => {
                let _ = tx.send(frame);
            }
            // Answers must keep flowing even if the application never reads
            // events: when the event buffer is full, events are dropped and
            // counted (resync to catch up).
            None => match events.try_send(frame) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            },
        }
    }
    // Wake every waiter: the connection is gone.
    pending.lock().take();
}

//! The transport seam: a transport turns a socket into a [`Connection`] and
//! hands it to [`crate::Engine::accept`].
//!
//! A transport only frames bytes; the engine decodes protobuf, enforces the
//! handshake timeout and heartbeats, and decides when to close and why.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::log_limit::LogLimit;

/// Failure to read or write a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer announced or sent a frame larger than the limit. The frame was
    /// not buffered; the connection must be closed.
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Announced or observed size (a lower bound if not known exactly).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The peer sent something the transport cannot frame (e.g. a WebSocket
    /// text frame with invalid UTF-8).
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// The peer broke the transport's protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Why the engine closes a connection; transports map it to their own
/// close codes (WebSocket: 1000, 1001, 1007, 1008, 1009, 1011).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseCode {
    /// The session ended normally (client left, kicked by the host, replaced).
    Normal,
    /// The server is shutting down.
    GoingAway,
    /// A frame was too large.
    TooBig,
    /// A frame could not be decoded.
    InvalidData,
    /// A policy was violated (authentication, heartbeats, slow consumer, flood).
    Policy,
    /// The server failed.
    InternalError,
}

/// A close code and a short human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// Machine-readable code.
    pub code: CloseCode,
    /// Human-readable reason (kept short: WebSocket allows 123 bytes).
    pub detail: String,
}

impl CloseReason {
    /// A close reason.
    pub fn new(code: CloseCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

/// Reads whole frames (one encoded `ClientFrame` each) from a connection.
#[async_trait]
pub trait FrameReader: Send + 'static {
    /// The next frame, `Ok(None)` at a clean end of stream. Must be cancel safe:
    /// the engine races it against timers.
    async fn read_frame(&mut self) -> Result<Option<Bytes>, TransportError>;
}

/// Writes frames (one encoded `ServerFrame` each) to a connection.
#[async_trait]
pub trait FrameWriter: Send + 'static {
    /// Writes every frame, in order, with as few system calls as the
    /// transport allows (ideally one), and flushes.
    async fn write_frames(&mut self, frames: &[Bytes]) -> Result<(), TransportError>;

    /// Closes the connection with a reason, after anything already written.
    async fn close(&mut self, reason: CloseReason) -> Result<(), TransportError>;
}

/// Facts about a connection, for logs, the authenticator and `Connected`.
/// Build one with [`ConnectionInfo::new`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// Transport name, e.g. `"tcp"` or `"ws"`.
    pub transport: &'static str,
    /// The peer's address, if known.
    pub peer_addr: Option<SocketAddr>,
    /// The largest frame this connection's transport accepts from the
    /// client, which the engine announces in `Connected.max_frame_bytes`:
    /// the transport that enforces the limit is the one place that decides
    /// it. `None` (a transport with no limit of its own, such as an
    /// in-memory one): the engine announces `EngineConfig::max_frame_bytes`.
    pub max_frame_bytes: Option<usize>,
}

impl ConnectionInfo {
    /// A connection over `transport` from `peer_addr`, with no frame limit
    /// of the transport's own.
    pub fn new(transport: &'static str, peer_addr: Option<SocketAddr>) -> Self {
        Self {
            transport,
            peer_addr,
            max_frame_bytes: None,
        }
    }

    /// The largest frame the transport accepts on this connection.
    pub fn with_max_frame_bytes(mut self, max_frame_bytes: usize) -> Self {
        self.max_frame_bytes = Some(max_frame_bytes);
        self
    }
}

/// One accepted connection, ready to become a session.
pub struct Connection {
    /// Incoming frames.
    pub reader: Box<dyn FrameReader>,
    /// Outgoing frames.
    pub writer: Box<dyn FrameWriter>,
    /// Facts about it.
    pub info: ConnectionInfo,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// How long the accept loop waits after a failed accept (typically EMFILE:
/// out of file descriptors) before trying again, instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Connections the kernel queues before they are accepted, by default.
/// std's 128 overflows when refused clients reconnect in a loop, and the
/// kernel then drops honest SYNs for a second at a time.
pub const DEFAULT_LISTEN_BACKLOG: u32 = 1024;

/// Binds a TCP listener with `SO_REUSEADDR` and a listen backlog of
/// `backlog` (the first address of `addr` that binds).
pub async fn bind_listener(
    addr: impl tokio::net::ToSocketAddrs,
    backlog: u32,
) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(backlog)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")
    }))
}

/// Accepts TCP connections until `stop` is cancelled (use
/// [`crate::Engine::shutdown_token`]), handing each to `on_accept`. A failed
/// accept is logged and retried after a short back-off. The accept loop of
/// every TCP-based transport.
pub async fn accept_until(
    listener: &TcpListener,
    stop: &CancellationToken,
    mut on_accept: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => on_accept(stream, peer),
            Err(e) => {
                // At the descriptor limit this fails as fast as it is
                // retried: back off, and log a few lines, not thousands.
                static ACCEPT_FAILED: LogLimit = LogLimit::per_second(2);
                if let Some(suppressed) = ACCEPT_FAILED.allow() {
                    tracing::warn!(error = %e, suppressed, "accept failed");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

#![doc = include_str!("../README.md")]

pub mod client;
mod codec;
#[cfg(feature = "tls")]
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use im_core::transport::accept_until;
use im_core::{
    CloseReason, Connection, ConnectionInfo, Engine, FrameReader, FrameWriter, TransportError,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

pub use codec::{FrameCodec, LENGTH_PREFIX_BYTES};

/// Read buffer a new connection starts with.
const INITIAL_READ_BUFFER: usize = 1024;

/// Settings of the TCP transport.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TcpConfig {
    /// Largest frame accepted from a client. A larger announced length gets
    /// an `Error{FRAME_TOO_LARGE}` and a close, without buffering the frame.
    /// The engine announces this limit to the client in
    /// `Connected.max_frame_bytes` (it travels in the connection's
    /// `ConnectionInfo`), so this is the one setting of it. Default 256 KiB.
    pub max_frame_bytes: usize,
    /// Disable Nagle's algorithm (lower latency for small frames).
    pub nodelay: bool,
    /// Longest a single write may block on a peer that stopped reading
    /// before the connection is dropped.
    pub write_timeout: Duration,
    /// Connections the kernel queues before they are accepted.
    pub listen_backlog: u32,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 256 * 1024,
            nodelay: true,
            write_timeout: Duration::from_secs(10),
            listen_backlog: im_core::transport::DEFAULT_LISTEN_BACKLOG,
        }
    }
}

impl TcpConfig {
    /// Sets the largest accepted frame.
    pub fn max_frame_bytes(mut self, n: usize) -> Self {
        self.max_frame_bytes = n;
        self
    }
}

/// A bound TCP listener that feeds connections to an [`Engine`].
#[derive(Debug)]
pub struct TcpServer {
    listener: TcpListener,
    config: TcpConfig,
    #[cfg(feature = "tls")]
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl TcpServer {
    /// Binds a listener.
    pub async fn bind(addr: impl ToSocketAddrs, config: TcpConfig) -> io::Result<Self> {
        Ok(Self {
            listener: im_core::transport::bind_listener(addr, config.listen_backlog).await?,
            config,
            #[cfg(feature = "tls")]
            tls: None,
        })
    }

    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until the engine shuts down.
    pub fn serve(self, engine: Engine) -> JoinHandle<()> {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.clone() {
            return tls::serve(self.listener, self.config, tls.into(), engine);
        }
        tokio::spawn(async move {
            let stop = engine.shutdown_token();
            accept_until(&self.listener, &stop, |stream, peer| {
                match connection(stream, Some(peer), &self.config) {
                    Ok(conn) => engine.accept(conn),
                    Err(e) => tracing::debug!(%peer, error = %e, "could not set up connection"),
                }
            })
            .await;
        })
    }
}

/// Wraps an accepted stream as an engine [`Connection`].
pub fn connection(
    stream: TcpStream,
    peer_addr: Option<SocketAddr>,
    config: &TcpConfig,
) -> io::Result<Connection> {
    stream.set_nodelay(config.nodelay)?;
    let (read, write) = stream.into_split();
    Ok(framed_connection(read, write, peer_addr, config))
}

/// Wraps any byte stream (a TLS stream, a Unix socket, a test duplex) as an
/// engine [`Connection`] speaking this transport's length-prefixed frames.
pub fn stream_connection<S>(
    stream: S,
    peer_addr: Option<SocketAddr>,
    config: &TcpConfig,
) -> Connection
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(stream);
    framed_connection(read, write, peer_addr, config)
}

fn framed_connection<R, W>(
    read: R,
    write: W,
    peer_addr: Option<SocketAddr>,
    config: &TcpConfig,
) -> Connection
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    Connection {
        reader: Box::new(TcpFrameReader {
            // Small to start: an idle connection should cost little; the
            // buffer grows with the frames that actually arrive.
            frames: FramedRead::with_capacity(
                read,
                FrameCodec::new(config.max_frame_bytes),
                INITIAL_READ_BUFFER,
            ),
        }),
        writer: Box::new(TcpFrameWriter {
            stream: write,
            write_timeout: config.write_timeout,
        }),
        info: ConnectionInfo::new("tcp", peer_addr).with_max_frame_bytes(config.max_frame_bytes),
    }
}

struct TcpFrameReader<R> {
    frames: FramedRead<R, FrameCodec>,
}

#[async_trait]
impl<R: AsyncRead + Send + Unpin + 'static> FrameReader for TcpFrameReader<R> {
    async fn read_frame(&mut self) -> Result<Option<Bytes>, TransportError> {
        match self.frames.next().await {
            None => Ok(None),
            Some(Ok(frame)) => Ok(Some(frame.freeze())),
            Some(Err(e)) => Err(e),
        }
    }
}

struct TcpFrameWriter<W> {
    stream: W,
    write_timeout: Duration,
}

fn timed_out() -> TransportError {
    TransportError::Io(io::Error::new(io::ErrorKind::TimedOut, "write timed out"))
}

#[async_trait]
impl<W: AsyncWrite + Send + Unpin + 'static> FrameWriter for TcpFrameWriter<W> {
    async fn write_frames(&mut self, frames: &[Bytes]) -> Result<(), TransportError> {
        // One buffer per batch, freed after the write: an idle connection
        // keeps no write buffer, and the whole batch is one system call.
        let total: usize = frames.iter().map(|f| LENGTH_PREFIX_BYTES + f.len()).sum();
        let mut buf = BytesMut::with_capacity(total);
        for f in frames {
            let len = u32::try_from(f.len())
                .map_err(|_| TransportError::Protocol("outgoing frame exceeds 4 GiB".into()))?;
            buf.put_u32(len);
            buf.put_slice(f);
        }
        tokio::time::timeout(self.write_timeout, self.stream.write_all(&buf))
            .await
            .map_err(|_| timed_out())??;
        Ok(())
    }

    async fn close(&mut self, _reason: CloseReason) -> Result<(), TransportError> {
        // TCP has no close reason of its own: the engine sent an Error or
        // Kicked frame before asking to close.
        tokio::time::timeout(self.write_timeout, self.stream.shutdown())
            .await
            .map_err(|_| timed_out())??;
        Ok(())
    }
}

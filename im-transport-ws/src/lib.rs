#![doc = include_str!("../README.md")]

#[cfg(feature = "axum")]
pub mod axum_endpoint;
mod config;
mod conn;
mod error;
mod handshake;
#[cfg(feature = "tls")]
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use im_core::admission::PendingHandshakes;
use im_core::transport::accept_until;
use im_core::{Connection, Engine};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::JoinHandle;

pub use config::{SUBPROTOCOL, WsConfig};
pub use conn::{close_code, close_code_for_error, connection};
pub use error::WsError;
use handshake::accept_unless_evicted;
pub use handshake::{Accepted, HttpHandler, accept};
/// Re-exported so [`HttpHandler`] implementors can name the HTTP types.
pub use http;
/// Re-exported so users of [`accept`] can name the WebSocket types.
pub use tokio_tungstenite;

/// A bound TCP listener that upgrades connections to WebSocket and feeds them
/// to an [`Engine`]; plain HTTP requests go to an optional [`HttpHandler`].
pub struct WsServer {
    listener: TcpListener,
    config: Arc<WsConfig>,
    http: Option<Arc<dyn HttpHandler>>,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for WsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsServer")
            .field("listener", &self.listener)
            .field("config", &self.config)
            .field("http", &self.http.is_some())
            .field("tls", &self.tls_enabled())
            .finish()
    }
}

impl WsServer {
    /// Binds a listener.
    pub async fn bind(addr: impl ToSocketAddrs, config: WsConfig) -> io::Result<Self> {
        Ok(Self {
            listener: im_core::transport::bind_listener(addr, config.listen_backlog).await?,
            config: Arc::new(config),
            http: None,
            #[cfg(feature = "tls")]
            tls: None,
        })
    }

    /// True if connections are TLS (`wss://`).
    fn tls_enabled(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// Answers plain HTTP requests on the same port with `handler` (e.g. a
    /// static page beside a `/ws` endpoint; see [`WsConfig::path`]).
    pub fn with_http_handler(mut self, handler: Arc<dyn HttpHandler>) -> Self {
        self.http = Some(handler);
        self
    }

    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until the engine shuts down. Each handshake runs
    /// on its own task, bounded by [`WsConfig::handshake_timeout`].
    pub fn serve(self, engine: Engine) -> JoinHandle<()> {
        tokio::spawn(async move {
            let stop = engine.shutdown_token();
            let handshakes = PendingHandshakes::new(self.config.handshake_limits(), "ws_upgrade");
            accept_until(&self.listener, &stop, |stream, peer| {
                let Some(pending) = handshakes.admit(Some(peer.ip())) else {
                    // Closed at once: answering would cost a task per refusal.
                    tracing::debug!(%peer, "too many handshakes in progress from this address: closed");
                    return;
                };
                let engine = engine.clone();
                let config = self.config.clone();
                let http = self.http.clone();
                #[cfg(feature = "tls")]
                let tls = self.tls.clone();
                tokio::spawn(async move {
                    let upgraded = async {
                        stream.set_nodelay(config.nodelay)?;
                        #[cfg(feature = "tls")]
                        if let Some(acceptor) = tls {
                            let stream =
                                tls::handshake(&acceptor, stream, &config, pending.evicted())
                                    .await?;
                            return upgrade_stream_unless_evicted(
                                stream,
                                Some(peer),
                                &config,
                                http.as_deref(),
                                pending.evicted(),
                            )
                            .await;
                        }
                        upgrade_stream_unless_evicted(
                            stream,
                            Some(peer),
                            &config,
                            http.as_deref(),
                            pending.evicted(),
                        )
                        .await
                    }
                    .await;
                    drop(pending);
                    match upgraded {
                        Ok(Some(conn)) => engine.accept(conn),
                        Ok(None) => {}
                        Err(e) => tracing::debug!(%peer, error = %e, "websocket handshake failed"),
                    }
                });
            })
            .await;
        })
    }
}

/// Runs the opening handshake on an accepted TCP stream and wraps the result
/// as an engine [`Connection`]. Plain HTTP requests are answered by `http`
/// (or `426 Upgrade Required`) and give `Ok(None)`.
pub async fn upgrade_with(
    stream: TcpStream,
    peer_addr: Option<SocketAddr>,
    config: &WsConfig,
    http: Option<&dyn HttpHandler>,
) -> Result<Option<Connection>, WsError> {
    stream.set_nodelay(config.nodelay)?;
    upgrade_stream(stream, peer_addr, config, http).await
}

/// Like [`upgrade_with`], for any byte stream (TLS, a Unix socket, a test
/// duplex).
pub async fn upgrade_stream<S>(
    stream: S,
    peer_addr: Option<SocketAddr>,
    config: &WsConfig,
    http: Option<&dyn HttpHandler>,
) -> Result<Option<Connection>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    upgrade_stream_unless_evicted(stream, peer_addr, config, http, std::future::pending()).await
}

/// [`upgrade_stream`], given up (with a `503`) if `evicted` completes first.
async fn upgrade_stream_unless_evicted<S>(
    stream: S,
    peer_addr: Option<SocketAddr>,
    config: &WsConfig,
    http: Option<&dyn HttpHandler>,
    evicted: impl Future<Output = ()>,
) -> Result<Option<Connection>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match accept_unless_evicted(stream, config, http, evicted).await? {
        Accepted::WebSocket { stream, .. } => Ok(Some(connection(*stream, peer_addr, config))),
        Accepted::Http { path, status } => {
            tracing::debug!(?peer_addr, %path, %status, "answered plain HTTP");
            Ok(None)
        }
    }
}

//! TLS termination (feature `tls`): `wss://` on the standalone server.
//!
//! ```no_run
//! use std::sync::Arc;
//! use im_transport_ws::tls::rustls::ServerConfig;
//! use im_transport_ws::{WsConfig, WsServer};
//!
//! # async fn run(engine: im_core::Engine, tls: Arc<ServerConfig>) -> std::io::Result<()> {
//! WsServer::bind("127.0.0.1:8443", WsConfig::default())
//!     .await?
//!     .with_tls(tls)
//!     .serve(engine);
//! # Ok(())
//! # }
//! ```
//!
//! The TLS handshake runs in the slot the connection holds among the
//! pending handshakes ([`crate::WsConfig::max_pending_handshakes`], with
//! eviction of the slowest), within [`crate::WsConfig::handshake_timeout`];
//! the HTTP upgrade that follows gets its own `handshake_timeout`. A client
//! that speaks plain HTTP to the TLS port fails the TLS handshake and is
//! closed.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::{WsConfig, WsError, WsServer};

/// Re-exported so hosts can build a [`rustls::ServerConfig`] with the same
/// rustls version.
pub use tokio_rustls::rustls;

impl WsServer {
    /// Terminates TLS on every accepted connection with `config` (e.g. from
    /// `im_engine::tls::server_config_from_pem`); clients connect with
    /// `wss://`.
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(TlsAcceptor::from(config));
        self
    }
}

/// The server side of a TLS handshake, bounded by the handshake timeout and
/// given up if `evicted` completes first.
pub(crate) async fn handshake<S>(
    acceptor: &TlsAcceptor,
    stream: S,
    config: &WsConfig,
    evicted: impl Future<Output = ()>,
) -> Result<TlsStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        r = tokio::time::timeout(config.handshake_timeout, acceptor.accept(stream)) => match r {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => Err(WsError::Tls(e)),
            Err(_) => Err(WsError::HandshakeTimeout),
        },
        () = evicted => Err(WsError::Evicted),
    }
}

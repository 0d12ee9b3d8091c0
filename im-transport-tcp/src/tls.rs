//! TLS termination (feature `tls`): the same frames inside a rustls stream.
//!
//! ```no_run
//! use std::sync::Arc;
//! use im_transport_tcp::tls::rustls::ServerConfig;
//! use im_transport_tcp::{TcpConfig, TcpServer};
//!
//! # async fn run(engine: im_core::Engine, tls: Arc<ServerConfig>) -> std::io::Result<()> {
//! TcpServer::bind("127.0.0.1:7443", TcpConfig::default())
//!     .await?
//!     .with_tls(tls)
//!     .serve(engine);
//! # Ok(())
//! # }
//! ```
//!
//! The TLS handshake counts as part of the login: it is bounded by the
//! engine's `handshake_timeout` and by its limits on pending handshakes (in
//! total and per address, with eviction of the slowest; see
//! [`im_core::admission`]), so clients that open TLS connections and never
//! finish them cannot hold the server's sockets. A client that speaks plain
//! TCP to a TLS port fails the handshake and is closed; nothing reaches the
//! engine.

use std::sync::Arc;

use im_core::Engine;
use im_core::admission::PendingHandshakes;
use im_core::transport::accept_until;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::{TcpConfig, TcpServer, stream_connection};

/// Re-exported so hosts can build a [`rustls::ServerConfig`] with the same
/// rustls version.
pub use tokio_rustls::rustls;

impl TcpServer {
    /// Terminates TLS on every accepted connection with `config` (e.g. from
    /// `im_engine::tls::server_config_from_pem`).
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }
}

/// The accept loop of a TLS listener: each handshake on its own task,
/// admitted and timed like a login.
pub(crate) fn serve(
    listener: TcpListener,
    config: TcpConfig,
    acceptor: TlsAcceptor,
    engine: Engine,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let stop = engine.shutdown_token();
        let handshakes = PendingHandshakes::new(engine.config().handshake_limits(), "tls");
        let timeout = engine.config().handshake_timeout;
        let config = Arc::new(config);
        accept_until(&listener, &stop, |stream, peer| {
            let Some(pending) = handshakes.admit(Some(peer.ip())) else {
                tracing::debug!(%peer, "too many handshakes in progress from this address: closed");
                return;
            };
            if let Err(e) = stream.set_nodelay(config.nodelay) {
                tracing::debug!(%peer, error = %e, "could not set up connection");
                return;
            }
            let (engine, acceptor, config) = (engine.clone(), acceptor.clone(), config.clone());
            tokio::spawn(async move {
                let handshake = tokio::select! {
                    r = tokio::time::timeout(timeout, acceptor.accept(stream)) => r,
                    () = pending.evicted() => {
                        tracing::debug!(%peer, "TLS handshake evicted to make room for another connection");
                        return;
                    }
                };
                drop(pending);
                match handshake {
                    Ok(Ok(tls)) => engine.accept(stream_connection(tls, Some(peer), &config)),
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, ?timeout, "TLS handshake timed out"),
                }
            });
        })
        .await;
    })
}

//! The WebSocket endpoint on a host's axum router (feature `axum`): one
//! port serves the host's own routes and the chat.
//!
//! ```no_run
//! use axum::Router;
//! use axum::routing::get;
//! use im_transport_ws::WsConfig;
//! use im_transport_ws::axum_endpoint::WsEndpoint;
//!
//! # fn app(engine: im_core::Engine) -> Router {
//! Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .route("/ws", WsEndpoint::new(engine, WsConfig::default()).method_router())
//! # }
//! ```
//!
//! Serve the router with `into_make_service_with_connect_info::<SocketAddr>()`
//! so the engine knows each client's address (its login limits per address
//! need it; without it every client counts as one unknown address).
//!
//! The same code as the standalone [`WsServer`](crate::WsServer) checks the
//! upgrade (accept key, version, subprotocol: refusals are `400` with the
//! reason; a plain `GET` gets `426`) and carries the frames afterwards, so the
//! message and frame limits of the [`WsConfig`] and the close codes are the
//! same, and the engine's login admission and handshake timeout apply as on
//! every transport. What the standalone server does itself and a host's HTTP
//! server does here: reading the request head (its size and time limits,
//! `WsConfig::max_request_head_bytes`, `handshake_timeout` for the head and
//! the pending-handshake limits are the host server's), routing by path
//! (`WsConfig::path` is not used), and `TCP_NODELAY` (with
//! `axum::serve::ListenerExt::tap_io` on the listener).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use axum::routing::MethodRouter;
use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use im_core::Engine;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::config::WsConfig;
use crate::connection;
use crate::handshake::{is_upgrade, plain, switching_protocols, upgrade_required};

/// The engine's WebSocket endpoint as an axum handler.
#[derive(Clone)]
pub struct WsEndpoint {
    engine: Engine,
    config: Arc<WsConfig>,
}

impl std::fmt::Debug for WsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsEndpoint")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WsEndpoint {
    /// An endpoint feeding `engine`, with the limits of `config`.
    pub fn new(engine: Engine, config: WsConfig) -> Self {
        Self {
            engine,
            config: Arc::new(config),
        }
    }

    /// The endpoint as a `GET` route, for `Router::route(path, ..)`.
    pub fn method_router<S>(self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        axum::routing::get(move |request: Request| {
            let endpoint = self.clone();
            async move { endpoint.upgrade(request) }
        })
    }

    /// Answers one request: `101 Switching Protocols` and a session for the
    /// engine once the connection is upgraded, or a refusal with its reason.
    pub fn upgrade(&self, request: Request) -> Response {
        if self.engine.shutdown_token().is_cancelled() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down; reconnect to another".into(),
            );
        }
        let (mut parts, _body) = request.into_parts();
        let on_upgrade = parts.extensions.remove::<OnUpgrade>();
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        let head = http::Request::from_parts(parts, ());
        if !is_upgrade(&head) {
            return closing(upgrade_required());
        }
        let (response, _) = match switching_protocols(&head, &self.config) {
            Ok(r) => r,
            Err((status, reason)) => return text(status, reason),
        };
        let Some(on_upgrade) = on_upgrade else {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this HTTP server cannot hand over the connection (HTTP/1.1 upgrades \
                 through hyper are needed)"
                    .into(),
            );
        };
        let (engine, config) = (self.engine.clone(), self.config.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(config.handshake_timeout, on_upgrade).await {
                Ok(Ok(upgraded)) => {
                    let ws = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(config.websocket_config()),
                    )
                    .await;
                    engine.accept(connection(ws, peer, &config));
                }
                Ok(Err(e)) => tracing::debug!(?peer, error = %e, "websocket upgrade failed"),
                Err(_) => tracing::debug!(?peer, "websocket upgrade timed out"),
            }
        });
        response.map(|()| Body::empty())
    }
}

/// A plain-text refusal, as the standalone server writes them, closing the
/// connection after it (as the standalone server does).
fn text(status: StatusCode, mut reason: String) -> Response {
    reason.push('\n');
    closing(plain(status, reason))
}

fn closing(response: http::Response<Bytes>) -> Response {
    let mut response = response.map(Body::from);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

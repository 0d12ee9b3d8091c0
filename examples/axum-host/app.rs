//! The host application's router: its own routes, and the chat's WebSocket
//! endpoint mounted on `/ws` beside them (shared with `tests/axum_host.rs`).

use axum::Router;
use axum::routing::get;
use im_engine::Engine;
use im_engine::transport_ws::WsConfig;
use im_engine::transport_ws::axum_endpoint::WsEndpoint;

/// The host's page.
const INDEX: &str = "<!doctype html><title>host app</title>\
<p>The host application's own page. The chat's WebSocket is on <code>/ws</code> \
(subprotocol <code>im.v1.proto</code>).</p>\n";

/// The whole app: the host's routes plus the chat.
pub fn app(engine: Engine) -> Router {
    let chat = WsEndpoint::new(engine.clone(), WsConfig::default());
    Router::new()
        .route("/", get(|| async { axum::response::Html(INDEX) }))
        .route("/api/health", get(|| async { "ok\n" }))
        .route(
            "/api/online",
            get(move || {
                let engine = engine.clone();
                async move { format!("{}\n", engine.session_count()) }
            }),
        )
        .route("/ws", chat.method_router())
}

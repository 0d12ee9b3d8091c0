//! A host application built on axum that also serves the chat: its own
//! routes (`/`, `/api/health`, `/api/online`) and the engine's WebSocket
//! endpoint (`/ws`) on one port.
//!
//! ```text
//! cargo run --example axum-host --features axum
//! curl http://127.0.0.1:8080/api/health
//! ```
//!
//! Host hooks (`hooks.rs`): `--deny-word spam` refuses messages containing
//! "spam" with `ERROR_CODE_REJECTED`; a `Call{method: "whoami"}` is
//! answered with the caller's user and device; sessions are logged as they
//! connect and end.
//!
//! Authentication is the engine's insecure development mode: replace
//! `insecure_dev_auth()` with your own `Authenticator` (see the `jwt`
//! feature) before putting this anywhere but your own machine.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use clap::Parser;
use im_engine::Engine;

mod app;
mod hooks;
#[path = "../common/logging.rs"]
mod logging;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "A host app on axum serving its own routes and the chat on one port")]
struct Args {
    /// Address of the HTTP server (routes and `/ws`).
    #[arg(long, env = "IM_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Refuse messages containing this word (repeat for more).
    #[arg(long = "deny-word", value_name = "WORD")]
    deny_words: Vec<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    logging::init("info,im_core=info");
    logging::exit_code("axum-host", run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tracing::warn!(
        "DEVELOPMENT AUTHENTICATION: any token is accepted as that user. Replace \
         insecure_dev_auth() with your own Authenticator before exposing this server."
    );
    let mut builder = Engine::builder(Arc::new(im_engine::store_memory::MemoryStore::new()))
        .call_handler(Arc::new(hooks::Calls))
        .session_observer(Arc::new(hooks::LogSessions))
        .insecure_dev_auth();
    if let Some(deny) = hooks::DenyWords::new(args.deny_words) {
        builder = builder.pre_send_hook(Arc::new(deny));
    }
    let engine = builder.build()?;
    let stop = im_engine::ShutdownSignal::listen()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?
        // Chat frames are small: send them at once (as the standalone transports do).
        .tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY");
            }
        });
    tracing::info!(listen = %args.listen, "axum-host ready: / and /api/health, chat on /ws");
    let drained = engine.shutdown_token();
    let server = tokio::spawn(
        axum::serve(
            listener,
            app::app(engine.clone()).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { drained.cancelled().await })
        .into_future(),
    );
    let signal = stop.await;
    tracing::info!(%signal, "shutting down: draining the chat");
    // Upgraded WebSockets are the engine's: it answers what it read and
    // closes each with `Kicked{SHUTDOWN}`; axum then stops accepting.
    engine.shutdown().await;
    server.await??;
    Ok(())
}

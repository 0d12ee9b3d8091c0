//! Web chat: a starter server that serves a chat page and its WebSocket
//! endpoint on one port, plus (optionally) the TCP transport on another, all
//! on one engine with the in-memory store.
//!
//! ```text
//! cargo run --example web-chat
//! # then open the printed URL in two browser windows, log in as alice and bob
//! # three nodes of one cluster (NATS + a shared PostgreSQL), see the README:
//! cargo run --example web-chat --features cluster -- --addr 127.0.0.1:8081 \
//!     --postgres postgres://postgres@127.0.0.1/test --cluster nats://127.0.0.1:4222 \
//!     --cluster-name demo --node-id a --node-index 1
//! ```
//!
//! Authentication is the engine's insecure development mode: the page's user
//! name is trusted as it is. Replace it with your own `Authenticator` before
//! putting this anywhere but your own machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use im_engine::core::{
    ChannelId, ConversationId, Engine, EngineConfig, EngineError, StoreError, UserId,
};
use im_engine::transport_tcp::{TcpConfig, TcpServer};
use im_engine::transport_ws::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use im_engine::transport_ws::{HttpHandler, WsConfig, WsServer};

#[path = "../common/cluster.rs"]
mod cluster;
#[path = "../common/logging.rs"]
mod logging;
#[path = "../common/memory_store.rs"]
mod memory_store;
#[path = "../common/store.rs"]
mod store;

/// Web chat starter server (development authentication: any user name is trusted).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address of the web page and its WebSocket endpoint (`/ws`).
    #[arg(long, env = "IM_WEB_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Also serve the TCP transport here (for `chat-cli`), e.g. 127.0.0.1:7400.
    #[arg(long, env = "IM_TCP_ADDR")]
    tcp_addr: Option<SocketAddr>,
    /// Demo group created at start.
    #[arg(long, default_value = "lobby")]
    group: String,
    /// Members of the demo group.
    #[arg(long, value_delimiter = ',', default_value = "alice,bob,carol")]
    members: Vec<String>,
    /// Largest WebSocket message accepted from a client, in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    max_message_bytes: usize,
    /// Bytes queued for one session before it is disconnected as too slow.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    outbound_queue_bytes: usize,
    /// Heartbeat interval announced to clients, in seconds.
    #[arg(long, default_value_t = 30)]
    heartbeat_secs: u64,
    /// In memory or PostgreSQL.
    #[command(flatten)]
    store: store::StoreArgs,
    /// Cluster over NATS.
    #[command(flatten)]
    cluster: cluster::ClusterArgs,
}

/// The page and its assets, compiled into the binary.
struct StaticFiles;

const INDEX_HTML: &str = include_str!("static/index.html");
const APP_JS: &str = include_str!("static/app.js");
const STYLE_CSS: &str = include_str!("static/style.css");
const PROTOBUF_JS: &str = include_str!("static/vendor/protobuf.min.js");
// The JavaScript client module the page uses (clients/js, see its README section).
const IM_CLIENT_JS: &str = include_str!("../../clients/js/im-client.mjs");
const IM_SYNC_JS: &str = include_str!("../../clients/js/im-sync.mjs");
const IM_TIMELINE_JS: &str = include_str!("../../clients/js/im-timeline.mjs");
const IM_TYPING_JS: &str = include_str!("../../clients/js/im-typing.mjs");
const IM_PRESENCE_JS: &str = include_str!("../../clients/js/im-presence.mjs");
const IM_SYSTEM_JS: &str = include_str!("../../clients/js/im-system.mjs");

impl HttpHandler for StaticFiles {
    fn handle(&self, request: &Request<()>) -> Response<Bytes> {
        if request.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        let (body, content_type) = match request.uri().path() {
            "/" | "/index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
            "/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
            "/style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
            "/vendor/protobuf.min.js" => (PROTOBUF_JS, "text/javascript; charset=utf-8"),
            "/im-client.mjs" => (IM_CLIENT_JS, "text/javascript; charset=utf-8"),
            "/im-sync.mjs" => (IM_SYNC_JS, "text/javascript; charset=utf-8"),
            "/im-timeline.mjs" => (IM_TIMELINE_JS, "text/javascript; charset=utf-8"),
            "/im-typing.mjs" => (IM_TYPING_JS, "text/javascript; charset=utf-8"),
            "/im-presence.mjs" => (IM_PRESENCE_JS, "text/javascript; charset=utf-8"),
            "/im-system.mjs" => (IM_SYSTEM_JS, "text/javascript; charset=utf-8"),
            // The page parses the server's own schema: one source of truth.
            "/im.proto" => (im_engine::core::PROTO, "text/plain; charset=utf-8"),
            _ => return text(StatusCode::NOT_FOUND, "not found\n"),
        };
        let mut response = Response::new(Bytes::from_static(body.as_bytes()));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(body.as_bytes()));
    *response.status_mut() = status;
    response
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    logging::init("info");
    logging::exit_code("web-chat", run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();

    let mut config = EngineConfig::default();
    config.outbound_queue_bytes = args.outbound_queue_bytes;
    config.max_frame_bytes = args.max_message_bytes;
    config.heartbeat_interval = Duration::from_secs(args.heartbeat_secs);
    let cluster::Started { engine, node, .. } =
        cluster::start_dev_engine("web-chat", &args.store, &args.cluster, config).await?;

    let group = ChannelId::new(&args.group)?;
    let members = args
        .members
        .iter()
        .map(UserId::new)
        .collect::<Result<Vec<_>, _>>()?;
    match engine.create_group(&group, &members).await {
        Ok(()) => welcome(&engine, &group, &args).await?,
        // A shared store (PostgreSQL, another node of the cluster) has it.
        Err(EngineError::Store(StoreError::AlreadyExists(_))) => {
            tracing::info!(group = %args.group, "group exists; membership left as it is")
        }
        Err(e) => return Err(e.into()),
    }

    // Listen before accepting: SIGTERM and Ctrl-C both drain.
    let stop = im_engine::ShutdownSignal::listen()?;
    let ws = WsServer::bind(
        args.addr,
        WsConfig::default()
            .path("/ws")
            .max_message_bytes(args.max_message_bytes),
    )
    .await?
    .with_http_handler(Arc::new(StaticFiles));
    let web_addr = ws.local_addr()?;
    let mut servers = vec![ws.serve(engine.clone())];
    if let Some(addr) = args.tcp_addr {
        let tcp = TcpServer::bind(addr, TcpConfig::default()).await?;
        tracing::info!(addr = %tcp.local_addr()?, "TCP transport listening");
        servers.push(tcp.serve(engine.clone()));
    }

    // One line a script can read, then a friendly hint.
    println!("web chat listening on http://{web_addr}/");
    println!(
        "open it in two browser windows and log in as {} (any name works: development authentication)",
        args.members.join(", ")
    );

    let signal = stop.await;
    tracing::info!(%signal, "shutting down: draining in-flight commits");
    engine.shutdown().await;
    node.leave().await;
    for s in servers {
        let _ = s.await;
    }
    Ok(())
}

/// The demo group's first message, posted when the group is created.
async fn welcome(
    engine: &Engine,
    group: &ChannelId,
    args: &Args,
) -> Result<(), Box<dyn std::error::Error>> {
    engine
        .send_as(
            ConversationId::Group(group.clone()),
            UserId::new("system")?,
            Bytes::from(format!(
                "Welcome to #{}! Members: {}.",
                args.group,
                args.members.join(", ")
            )),
            Some("welcome".into()),
        )
        .await?;
    Ok(())
}

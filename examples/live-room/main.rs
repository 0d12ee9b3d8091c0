//! A starter server for live-stream rooms: TCP and (with the `ws` feature)
//! WebSocket on one engine, in-memory store, room limits as flags.
//!
//! ```text
//! cargo run --release --example live-room -- --room-send-rate 2000
//! cargo run --release --example live-room --features ws -- --ws 127.0.0.1:7001
//! # one node of a cluster (NATS + a shared PostgreSQL), see the README:
//! cargo run --release --example live-room --features cluster -- --listen 127.0.0.1:7001 \
//!     --postgres postgres://postgres@127.0.0.1/test --cluster nats://127.0.0.1:4222 \
//!     --cluster-name live --node-id a --node-index 1
//! ```
//!
//! Clients `JoinRoom{room_id}` and send to `ConversationRef{ROOM, room_id}`.
//! Rooms need no setup: whoever is joined right now receives. Copy it and
//! replace `insecure_dev_auth()` with your own `Authenticator` before shipping.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use im_engine::core::EngineConfig;
use im_engine::core::room::{BatchConfig, BatchTier};
use im_engine::transport_tcp::{TcpConfig, TcpServer};

#[path = "../common/cluster.rs"]
mod cluster;
#[path = "../common/logging.rs"]
mod logging;
#[path = "../common/memory_store.rs"]
mod memory_store;
#[path = "../common/store.rs"]
mod store;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    about = "Starter live-room server: TCP (+WS) + in-memory store (development authentication)"
)]
struct Args {
    /// Address of the TCP listener.
    #[arg(long, default_value = "127.0.0.1:7000", env = "IM_LISTEN")]
    listen: SocketAddr,
    /// Address of the WebSocket listener (feature `ws`).
    #[cfg(feature = "ws")]
    #[arg(long, env = "IM_WS")]
    ws: Option<SocketAddr>,
    /// Address of the Prometheus `/metrics` endpoint (none if unset).
    #[arg(long, env = "IM_METRICS")]
    metrics: Option<SocketAddr>,
    /// Sessions per sub-room.
    #[arg(long, default_value_t = 500)]
    sub_room_capacity: u32,
    /// Messages per second one room accepts (0: unlimited).
    #[arg(long, default_value_t = 1000)]
    room_send_rate: u32,
    /// Room messages per second one user may send (0: unlimited).
    #[arg(long, default_value_t = 20)]
    user_send_rate: u32,
    /// Most messages in one pushed batch.
    #[arg(long, default_value_t = 10)]
    batch_max: usize,
    /// Longest a message waits in a batch window, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    batch_max_delay_ms: u64,
    /// Recent messages kept in memory per room.
    #[arg(long, default_value_t = 1000)]
    hot_ring: usize,
    /// Bytes queued for one session before it is dropped as a slow consumer.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    outbound_queue_bytes: usize,
    /// Largest message body, in bytes.
    #[arg(long, default_value_t = 4096)]
    max_body_bytes: usize,
    /// Heartbeat interval in seconds.
    #[arg(long, default_value_t = 30)]
    heartbeat_secs: u64,
    /// Print the server's memory use every this many seconds (0: never).
    #[arg(long, default_value_t = 0)]
    report_secs: u64,
    /// In memory or PostgreSQL.
    #[command(flatten)]
    store: store::StoreArgs,
    /// Cluster over NATS.
    #[command(flatten)]
    cluster: cluster::ClusterArgs,
}

impl Args {
    fn config(&self) -> EngineConfig {
        let mut c = EngineConfig::default();
        c.room_sub_room_capacity = self.sub_room_capacity;
        c.room_sub_room_merge_below = self.sub_room_capacity / 4;
        c.room_send_rate = self.room_send_rate;
        c.room_send_burst = self.room_send_rate.saturating_mul(2);
        c.user_room_send_rate = self.user_send_rate;
        c.user_room_send_burst = self.user_send_rate.saturating_mul(2);
        let max_delay = Duration::from_millis(self.batch_max_delay_ms);
        c.room_batch = BatchConfig {
            max_count: self.batch_max,
            max_delay,
            tiers: BatchConfig::default()
                .tiers
                .into_iter()
                .map(|t| BatchTier {
                    window: t.window.min(max_delay),
                    ..t
                })
                .collect(),
        };
        c.room_hot_ring = self.hot_ring;
        c.outbound_queue_bytes = self.outbound_queue_bytes;
        c.max_body_bytes = self.max_body_bytes;
        c.heartbeat_interval = Duration::from_secs(self.heartbeat_secs);
        c
    }
}

/// Resident memory of this process, from /proc (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    logging::init("info,im_core=warn");
    logging::exit_code("live-room", run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let metrics = match args.metrics {
        Some(addr) => {
            let handle =
                metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
            Some((handle, listener))
        }
        None => None,
    };
    tracing::warn!("DEVELOPMENT AUTHENTICATION: any `user:device` token is accepted");
    let cluster::Started {
        engine,
        store,
        node,
    } = cluster::start_dev_engine("live-room", &args.store, &args.cluster, args.config()).await?;
    if let Some((handle, listener)) = metrics {
        // Bounded: a flood of half-sent scrapes cannot take the server's sockets.
        im_engine::metrics_http::MetricsHttp::new(listener, move || handle.render())
            .spawn(engine.shutdown_token());
    }

    // Listen before accepting: SIGTERM and Ctrl-C both drain.
    let stop = im_engine::ShutdownSignal::listen()?;
    let tcp = TcpServer::bind(args.listen, TcpConfig::default())
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(listen = %tcp.local_addr()?, "live-room: TCP ready");
    let serving = tcp.serve(engine.clone());

    #[cfg(feature = "ws")]
    if let Some(addr) = args.ws {
        use im_engine::transport_ws::{WsConfig, WsServer};
        let ws = WsServer::bind(addr, WsConfig::default()).await?;
        tracing::info!(listen = %ws.local_addr()?, "live-room: WebSocket ready");
        ws.serve(engine.clone());
    }

    if args.report_secs > 0 {
        let engine = engine.clone();
        let memory = store.memory().cloned();
        let every = Duration::from_secs(args.report_secs);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                tracing::info!(
                    sessions = engine.session_count(),
                    rss_kib = rss_kib(),
                    memory_store_bytes = memory.as_ref().map(|m| m.retained_bytes()),
                    "live-room"
                );
            }
        });
    }

    let signal = stop.await;
    tracing::info!(%signal, "shutting down: draining in-flight commits");
    engine.shutdown().await;
    node.leave().await;
    serving.await?;
    Ok(())
}

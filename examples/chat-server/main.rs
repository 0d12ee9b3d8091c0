//! A starter IM server: TCP transport, in-memory store (or PostgreSQL),
//! Prometheus metrics.
//!
//! ```text
//! cargo run --example chat-server -- --demo
//! cargo run --example chat-server --features postgres -- --postgres postgres://postgres@127.0.0.1/test
//! cargo run --example chat-server --features cluster -- --postgres postgres://postgres@127.0.0.1/test \
//!     --cluster nats://127.0.0.1:4222 --cluster-name demo --node-id a --node-index 1 --listen 127.0.0.1:7001
//! cargo run --example chat-server --features tls -- --tls-cert cert.pem --tls-key key.pem
//! ```
//!
//! Copy it and replace `insecure_dev_auth()` with your own `Authenticator`
//! before shipping.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use im_engine::core::{ChannelId, EngineConfig, EngineError, KickPolicy, StoreError, UserId};
use im_engine::metrics_http::MetricsHttp;
use im_engine::transport_tcp::{TcpConfig, TcpServer};
use tokio::net::TcpListener;

#[path = "../common/cluster.rs"]
mod cluster;
#[path = "../common/logging.rs"]
mod logging;
#[path = "../common/memory_store.rs"]
mod memory_store;
#[path = "../common/store.rs"]
mod store;
#[path = "../common/tls.rs"]
mod tls;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Starter IM server: TCP + in-memory store (development authentication)")]
struct Args {
    /// Address of the TCP listener.
    #[arg(long, default_value = "127.0.0.1:7000", env = "IM_LISTEN")]
    listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint. The default port, 7090,
    /// sits next to the chat port and outside 9090-9999, the range the
    /// Prometheus "default port allocations" list has fully handed out to
    /// exporters (node_exporter is 9100), so it clashes with none of them.
    #[arg(long, default_value = "127.0.0.1:7090", env = "IM_METRICS")]
    metrics: SocketAddr,
    /// Largest frame accepted from a client, in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    max_frame_bytes: usize,
    /// Largest message body, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    max_body_bytes: usize,
    /// Bytes queued for one session before it is dropped as a slow consumer.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    outbound_queue_bytes: usize,
    /// Heartbeat interval in seconds (a session silent for two is dropped).
    #[arg(long, default_value_t = 30)]
    heartbeat_secs: u64,
    /// Multi-device policy: many, per-kind or one.
    #[arg(long, default_value = "many", value_parser = parse_kick_policy)]
    kick_policy: KickPolicy,
    /// Create the demo group `lobby` with alice, bob and carol.
    #[arg(long)]
    demo: bool,
    /// In memory or PostgreSQL.
    #[command(flatten)]
    store: store::StoreArgs,
    /// TLS on the listener.
    #[command(flatten)]
    tls: tls::TlsArgs,
    /// Create a group: `NAME=user1,user2,...` (repeatable; kept if it exists).
    #[arg(long = "group", value_name = "NAME=USERS")]
    groups: Vec<String>,
    /// Cluster over NATS.
    #[command(flatten)]
    cluster: cluster::ClusterArgs,
}

fn parse_kick_policy(s: &str) -> Result<KickPolicy, String> {
    match s {
        "many" => Ok(KickPolicy::AllowMany),
        "per-kind" => Ok(KickPolicy::OnePerDeviceKind),
        "one" => Ok(KickPolicy::One),
        _ => Err(format!("unknown kick policy {s:?} (many, per-kind, one)")),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    logging::init("info,im_core=info");
    logging::exit_code("chat-server", run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let tls = args.tls.load()?;

    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let metrics_listener = TcpListener::bind(args.metrics)
        .await
        .map_err(|e| format!("cannot listen for metrics on {}: {e}", args.metrics))?;

    let mut config = EngineConfig::default();
    config.max_frame_bytes = args.max_frame_bytes;
    config.max_body_bytes = args.max_body_bytes;
    config.outbound_queue_bytes = args.outbound_queue_bytes;
    config.heartbeat_interval = Duration::from_secs(args.heartbeat_secs);
    config.kick_policy = args.kick_policy;

    tracing::warn!(
        "DEVELOPMENT AUTHENTICATION: any token `user` or `user:anything` is accepted as that user. \
         Replace insecure_dev_auth() with your own Authenticator before exposing this server."
    );
    let cluster::Started { engine, node, .. } =
        cluster::start_dev_engine("chat-server", &args.store, &args.cluster, config).await?;
    // Bounded: a flood of half-sent scrapes cannot take the server's sockets.
    MetricsHttp::new(metrics_listener, move || prometheus.render()).spawn(engine.shutdown_token());

    let mut groups = args.groups.clone();
    if args.demo {
        groups.push("lobby=alice,bob,carol".to_owned());
    }
    for spec in &groups {
        let (name, users) = spec
            .split_once('=')
            .ok_or_else(|| format!("--group expects NAME=user1,user2, got {spec:?}"))?;
        let members = users
            .split(',')
            .map(UserId::new)
            .collect::<Result<Vec<_>, _>>()?;
        match engine.create_group(&ChannelId::new(name)?, &members).await {
            Ok(()) => tracing::info!(group = name, members = users, "group created"),
            Err(EngineError::Store(StoreError::AlreadyExists(_))) => {
                tracing::info!(group = name, "group exists; membership left as it is")
            }
            Err(e) => return Err(e.into()),
        }
    }

    // Listen before accepting: from here on SIGTERM (systemd, Docker,
    // Kubernetes) and Ctrl-C both drain instead of killing the process.
    let stop = im_engine::ShutdownSignal::listen()?;
    let tcp = TcpServer::bind(
        args.listen,
        TcpConfig::default().max_frame_bytes(args.max_frame_bytes),
    )
    .await
    .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    #[cfg(feature = "tls")]
    let tcp = match tls {
        Some(tls) => tcp.with_tls(tls),
        None => tcp,
    };
    #[cfg(not(feature = "tls"))]
    let _ = tls;
    tracing::info!(listen = %tcp.local_addr()?, metrics = %args.metrics, tls = args.tls.tls_cert.is_some(), "chat-server ready");
    let serving = tcp.serve(engine.clone());

    let signal = stop.await;
    tracing::info!(%signal, "shutting down: draining in-flight commits");
    engine.shutdown().await;
    node.leave().await;
    tracing::info!("drained");
    serving.await?;
    Ok(())
}

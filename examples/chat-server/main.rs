//! A starter IM server: TCP transport, in-memory store, Prometheus metrics.
//!
//! ```text
//! cargo run --example chat-server -- --demo
//! ```
//!
//! Copy it and replace `insecure_dev_auth()` with your own `Authenticator`
//! before shipping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use im_engine::core::{ChannelId, Engine, EngineConfig, KickPolicy, UserId};
use im_engine::store_memory::MemoryStore;
use im_engine::transport_tcp::{TcpConfig, TcpServer};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Starter IM server: TCP + in-memory store (development authentication)")]
struct Args {
    /// Address of the TCP listener.
    #[arg(long, default_value = "127.0.0.1:7000", env = "IM_LISTEN")]
    listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, default_value = "127.0.0.1:9100", env = "IM_METRICS")]
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
    /// Create a group: `NAME=user1,user2,...` (repeatable).
    #[arg(long = "group", value_name = "NAME=USERS")]
    groups: Vec<String>,
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
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,im_core=info".into()),
        )
        .init();
    let args = Args::parse();

    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(args.metrics)
        .install()?;

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
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .config(config)
        .insecure_dev_auth()
        .build()?;

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
        engine
            .create_group(&ChannelId::new(name)?, &members)
            .await?;
        tracing::info!(group = name, members = users, "group created");
    }

    let tcp = TcpServer::bind(
        args.listen,
        TcpConfig::default().max_frame_bytes(args.max_frame_bytes),
    )
    .await?;
    tracing::info!(listen = %tcp.local_addr()?, metrics = %args.metrics, "chat-server ready");
    let serving = tcp.serve(engine.clone());

    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down: draining in-flight commits");
    engine.shutdown().await;
    serving.await?;
    Ok(())
}

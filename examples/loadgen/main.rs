//! Load generator for live rooms over real TCP connections.
//!
//! `loadgen run` starts the server as a child process (`loadgen serve`, the
//! engine with an in-memory store and no send limits) so the server's RSS
//! can be read from `/proc/<pid>/status` apart from the clients'. Then it:
//!
//! 1. opens N member connections (raw frames: connect, join the room, count
//!    pushed messages without decoding them; every `--probe-every`th one
//!    decodes to measure latency from the send timestamp in the body);
//! 2. reads the server's RSS per idle connection;
//! 3. measures a 1:1 chat's latency on the idle server;
//! 4. floods the room: S senders at R msgs/s each, for D seconds, while the
//!    same 1:1 chat goes on; deliveries/s, room latency p50/p99/p999 and
//!    the chat's p99 are recorded;
//! 5. writes `loadgen.json` and `loadgen.svg` to `--out`.
//!
//! ```text
//! cargo run --release --example loadgen -- run --connections 10000 --senders 4 --rate 100
//! ```
//!
//! One process holds about 19k sockets (the 20k file-descriptor limit);
//! for more, run several `loadgen run --server ADDR` against one server.

mod chat_load;
#[path = "../common/cluster.rs"]
mod cluster;
#[cfg(feature = "cluster")]
mod cluster_load;
#[cfg(feature = "postgres")]
mod durable;
mod members;
#[path = "../common/memory_store.rs"]
mod memory_store;
#[cfg(feature = "cluster")]
mod nodes;
#[path = "../common/store.rs"]
mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use im_engine::core::codec::{decode_server_frame, encode_client_frame};
use im_engine::core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_engine::core::{Engine, EngineConfig};
use im_engine::store_memory::MemoryStore;
use im_engine::transport_tcp::client::{Client, direct, room};
use im_engine::transport_tcp::{TcpConfig, TcpServer};
use im_engine::transport_ws::{SUBPROTOCOL, WsConfig, WsServer};
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use members::{Stats, chat, member, ws_member};

#[derive(Debug, Parser)]
#[command(about = "Room load generator over TCP")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve the engine (used by `run`, `chat` and `cluster`; no send limits).
    Serve(ServeArgs),
    /// Run the load and write the report.
    Run(RunArgs),
    /// Steady 1:1 chat load, with or without push acks (`--push-acks`).
    Chat(chat_load::ChatArgs),
    /// Durable messages/s and ack latency on PostgreSQL vs the memory store.
    #[cfg(feature = "postgres")]
    Durable(durable::DurableArgs),
    /// One room over N cluster nodes: deliveries/s, latency, bus messages
    /// per room message, bus bytes per delivery, server RSS per connection.
    #[cfg(feature = "cluster")]
    Cluster(cluster_load::ClusterArgs),
    /// Room members in a child process (used by `cluster`).
    #[cfg(feature = "cluster")]
    Members(cluster_load::MembersArgs),
}

/// Options of `loadgen serve`.
#[derive(Debug, Clone, Parser)]
struct ServeArgs {
    /// TCP listen address.
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: SocketAddr,
    /// WebSocket listen address (none: TCP only).
    #[arg(long)]
    ws_listen: Option<SocketAddr>,
    /// Prometheus `/metrics` address (none: no metrics).
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// In memory (unbounded unless bounds are given) or PostgreSQL.
    #[command(flatten)]
    store: store::StoreArgs,
    /// Cluster over NATS (the starter servers' flags).
    #[command(flatten)]
    cluster: cluster::ClusterArgs,
}

#[derive(Debug, Clone, Parser)]
struct RunArgs {
    /// Use this server instead of starting one (RSS is then not measured).
    #[arg(long)]
    server: Option<SocketAddr>,
    /// Listen address of the child server.
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: SocketAddr,
    /// Member connections.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Percentage of members connected over WebSocket instead of TCP.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    ws_percent: u8,
    /// WebSocket listen address of the child server.
    #[arg(long, default_value = "127.0.0.1:7401")]
    ws_listen: SocketAddr,
    /// Senders.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Messages per second per sender.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Flood duration in seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Message body bytes.
    #[arg(long, default_value_t = 100)]
    body: usize,
    /// One member in this many decodes messages for latency.
    #[arg(long, default_value_t = 50)]
    probe_every: usize,
    /// Chat messages per second in the 1:1 isolation measurement.
    #[arg(long, default_value_t = 50)]
    chat_rate: u64,
    /// Where to write loadgen.json and loadgen.svg.
    #[arg(long, default_value = "target/loadgen")]
    out: std::path::PathBuf,
}

type AnyError = Box<dyn std::error::Error + Send + Sync>;

const ROOM: &str = "load";

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn body(len: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(len.max(8));
    b.put_u64_le(now_us());
    b.resize(len.max(8), b'x');
    b.freeze()
}

fn sent_at(body: &[u8]) -> Option<u64> {
    (body.len() >= 8).then(|| (&body[..8]).get_u64_le())
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

#[tokio::main]
async fn main() -> Result<(), AnyError> {
    match Cli::parse().cmd {
        Cmd::Serve(args) => serve(args).await,
        Cmd::Run(args) => run(args).await,
        Cmd::Chat(args) => chat_load::run(args).await,
        #[cfg(feature = "postgres")]
        Cmd::Durable(args) => durable::run(args).await,
        #[cfg(feature = "cluster")]
        Cmd::Cluster(args) => cluster_load::run(args).await,
        #[cfg(feature = "cluster")]
        Cmd::Members(args) => cluster_load::members(args).await,
    }
}

async fn serve(args: ServeArgs) -> Result<(), AnyError> {
    let ServeArgs {
        listen, ws_listen, ..
    } = args;
    let mut c = EngineConfig::default();
    c.room_send_rate = 0;
    c.user_room_send_rate = 0;
    c.heartbeat_interval = Duration::from_secs(600);
    // Every simulated member connects from 127.0.0.1: one address may hold
    // the whole login pool, as behind a proxy or a load balancer.
    c.max_pending_handshakes_per_address = c.max_pending_handshakes;
    c.pending_handshakes_reserved_for_new_addresses = 0;
    args.cluster.configure(&mut c);
    let metrics = match args.metrics {
        Some(addr) => Some((
            metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?,
            tokio::net::TcpListener::bind(addr).await?,
        )),
        None => None,
    };
    let to_any = |e: Box<dyn std::error::Error>| -> AnyError { e.to_string().into() };
    let node = args
        .cluster
        .join("loadgen serve", args.store.is_shared())
        .await
        .map_err(to_any)?;
    let store: Arc<dyn im_engine::core::Store> = match args.store.postgres {
        // Unbounded: what is measured is the engine, not the store's bounds.
        None => Arc::new(MemoryStore::new()),
        Some(_) => args
            .store
            .open("loadgen serve")
            .await
            .map_err(to_any)?
            .store(),
    };
    let builder = Engine::builder(store).config(c).insecure_dev_auth();
    let engine = node.wire(builder).build()?;
    if let Some((handle, listener)) = metrics {
        im_engine::metrics_http::MetricsHttp::new(listener, move || handle.render())
            .spawn(engine.shutdown_token());
    }
    // Listen before accepting: SIGTERM and Ctrl-C both drain.
    let stop = im_engine::ShutdownSignal::listen()?;
    let tcp = TcpServer::bind(listen, TcpConfig::default()).await?;
    tcp.serve(engine.clone());
    if let Some(addr) = ws_listen {
        let limits = WsConfig::default();
        let total = limits.max_pending_handshakes;
        let ws = WsServer::bind(addr, limits.pending_handshakes(total, total, 0)).await?;
        ws.serve(engine.clone());
    }
    println!("READY");
    stop.await;
    engine.shutdown().await;
    node.leave().await;
    Ok(())
}

/// Starts `loadgen serve` as a child process and waits until it listens.
async fn spawn_server(
    listen: SocketAddr,
    ws_listen: Option<SocketAddr>,
) -> Result<tokio::process::Child, AnyError> {
    let mut args = vec!["--listen".to_owned(), listen.to_string()];
    if let Some(ws) = ws_listen {
        args.extend(["--ws-listen".to_owned(), ws.to_string()]);
    }
    spawn_serve(&args).await
}

/// Starts `loadgen serve ARGS` and waits until it prints READY (it listens).
async fn spawn_serve(args: &[String]) -> Result<tokio::process::Child, AnyError> {
    let exe = std::env::current_exe()?;
    let mut c = tokio::process::Command::new(exe)
        .arg("serve")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut out = c.stdout.take().ok_or("no child stdout")?;
    let mut line = [0u8; 6];
    out.read_exact(&mut line)
        .await
        .map_err(|e| format!("loadgen serve {args:?} did not start: {e}"))?;
    Ok(c)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn pct(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn run(args: RunArgs) -> Result<(), AnyError> {
    std::fs::create_dir_all(&args.out)?;
    let mut child = None;
    let addr = match args.server {
        Some(a) => a,
        None => {
            child = Some(spawn_server(args.listen, Some(args.ws_listen)).await?);
            args.listen
        }
    };
    let pid = child.as_ref().and_then(|c| c.id());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = pid.and_then(rss_kib);

    // 1. Members.
    let stats = Arc::new(Stats::new());
    let bar = ProgressBar::new(args.connections as u64).with_style(ProgressStyle::with_template(
        "{msg:12} {bar:40} {pos}/{len} {per_sec}",
    )?);
    bar.set_message("connecting");
    let t = Instant::now();
    let ws_addr = args.ws_listen;
    let start = |i: usize| {
        let stats = stats.clone();
        let probe = i.is_multiple_of(args.probe_every.max(1));
        let over_ws = i % 100 < usize::from(args.ws_percent);
        tokio::spawn(async move {
            let joined = if over_ws {
                ws_member(ws_addr, i, probe, stats).await
            } else {
                member(addr, i, probe, stats).await
            };
            if let Err(e) = joined {
                eprintln!("member {i}: {e}");
            }
        });
    };
    members::join_all(0..args.connections, &stats, start, |n| bar.set_position(n)).await?;
    bar.finish_with_message("joined");
    let connect_secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_joined = pid.and_then(rss_kib);
    let per_conn = match (rss_idle, rss_joined) {
        (Some(a), Some(b)) => Some((b.saturating_sub(a)) as f64 * 1024.0 / args.connections as f64),
        _ => None,
    };

    // 2. Chat on the idle server.
    let chat_idle = chat(addr, "idle", args.chat_rate, 3, args.body).await?;

    // 3. Flood, with the chat beside it.
    let mut senders = Vec::new();
    for i in 0..args.senders {
        let c = Client::connect(addr, &format!("sender{i}:d"), "d").await?;
        c.join_room(ROOM).await?;
        senders.push(c);
    }
    let flood_start = stats.deliveries.load(Ordering::Relaxed);
    {
        let mut h = stats.room_latency.lock();
        h.0.reset();
        h.1.reset();
    }
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let sent = Arc::new(AtomicU64::new(0));
    let tasks = members::flood(senders, args.rate, args.body, deadline, sent.clone());
    let chat_task = tokio::spawn(chat(
        addr,
        "flood",
        args.chat_rate,
        args.duration.saturating_sub(1).max(1),
        args.body,
    ));
    let bar = ProgressBar::new(args.duration).with_style(ProgressStyle::with_template(
        "{msg:40} {bar:30} {pos}/{len}s",
    )?);
    let mut series = Vec::new();
    let mut last = flood_start;
    for s in 1..=args.duration + 2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = stats.deliveries.load(Ordering::Relaxed);
        let p99 = {
            let mut h = stats.room_latency.lock();
            let p = if h.1.is_empty() { 0.0 } else { pct(&h.1, 0.99) };
            h.1.reset();
            p
        };
        series.push((s, now - last, p99));
        bar.set_position(s.min(args.duration));
        bar.set_message(format!(
            "{:.2} M deliveries/s, p99 {p99:.1} ms",
            (now - last) as f64 / 1e6
        ));
        last = now;
    }
    bar.finish();
    for t in tasks {
        let _ = t.await;
    }
    let chat_flood = chat_task.await??;
    let total = stats.deliveries.load(Ordering::Relaxed) - flood_start;
    let room_h = stats.room_latency.lock().0.clone();
    let busy: Vec<u64> = series
        .iter()
        .take(args.duration as usize)
        .skip(1)
        .map(|s| s.1)
        .collect();
    let steady = busy.iter().sum::<u64>() as f64 / busy.len().max(1) as f64;

    let report = serde_json::json!({
        "connections": args.connections,
        "ws_percent": args.ws_percent,
        "senders": args.senders,
        "rate_per_sender": args.rate,
        "body_bytes": args.body,
        "duration_s": args.duration,
        "connect_s": connect_secs,
        "messages_sent": sent.load(Ordering::Relaxed),
        "deliveries": total,
        "deliveries_per_s_steady": steady,
        "kicked": stats.kicked.load(Ordering::Relaxed),
        "room_latency_ms": { "p50": pct(&room_h, 0.5), "p99": pct(&room_h, 0.99), "p999": pct(&room_h, 0.999), "max": room_h.max() as f64 / 1000.0, "samples": room_h.len() },
        "chat_latency_ms": {
            "idle": { "p50": pct(&chat_idle, 0.5), "p99": pct(&chat_idle, 0.99), "samples": chat_idle.len() },
            "during_flood": { "p50": pct(&chat_flood, 0.5), "p99": pct(&chat_flood, 0.99), "samples": chat_flood.len() },
        },
        "server_rss_kib": { "idle": rss_idle, "joined": rss_joined, "bytes_per_connection": per_conn, "measured": "server child process /proc/<pid>/status VmRSS" },
        "series": series.iter().map(|(s, d, p)| serde_json::json!({"s": s, "deliveries": d, "p99_ms": p})).collect::<Vec<_>>(),
    });
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(args.out.join("loadgen.json"), &json)?;
    chart(&args.out.join("loadgen.svg"), &series)?;
    println!("{json}");
    drop(child);
    Ok(())
}

fn chart(path: &std::path::Path, series: &[(u64, u64, f64)]) -> Result<(), AnyError> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(300);
    let max_d = series.iter().map(|s| s.1).max().unwrap_or(1) as f64 / 1e6;
    let xs = series.len() as u64 + 1;
    let mut c = ChartBuilder::on(&top)
        .caption("room deliveries per second (millions)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0u64..xs, 0f64..max_d * 1.1 + 0.01)?;
    c.configure_mesh().x_desc("s").draw()?;
    c.draw_series(LineSeries::new(
        series.iter().map(|s| (s.0, s.1 as f64 / 1e6)),
        &BLUE,
    ))?;
    let max_p = series.iter().map(|s| s.2).fold(1.0, f64::max);
    let mut c = ChartBuilder::on(&bottom)
        .caption("room latency p99 per second (ms)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0u64..xs, 0f64..max_p * 1.1)?;
    c.configure_mesh().x_desc("s").draw()?;
    c.draw_series(LineSeries::new(series.iter().map(|s| (s.0, s.2)), &RED))?;
    root.present()?;
    Ok(())
}

//! `loadgen cluster`: one room with members spread evenly over N cluster
//! nodes (`loadgen serve --cluster` processes, see `nodes.rs`).
//!
//! The members live in child processes (`loadgen members`), each holding
//! as many sockets as its file-descriptor limit allows (`ulimit -n`), so
//! the run can hold more connections than one process may. One sender on
//! the first node posts to the room at `--rate`. Reported:
//!
//! - deliveries/s and send-to-delivery latency p50/p99 (probe members);
//! - bus messages per room message, from the nodes' own counters
//!   (`im_cluster_bus_*_total{kind="batch"}`): a batch is published once
//!   and received once by every *other* node with members, so
//!   `1 + received / published` is the number of nodes a batch reached,
//!   which must be the number of nodes with members, not the members;
//! - bus bytes per delivery (batches and head beacons, payload bytes);
//! - server RSS per connection (each node's `/proc/<pid>/status`).
//!
//! ```text
//! cargo run --release --features cluster --example loadgen -- cluster --nodes 3 --connections-per-node 2000
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use im_engine::transport_tcp::client::Client;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::members::{self, Stats, member};
use super::nodes::{Nodes, NodesArgs, scrape};
use super::{AnyError, ROOM, histogram, pct};

/// Options of `loadgen cluster`.
#[derive(Debug, Clone, Parser)]
pub(super) struct ClusterArgs {
    /// Cluster nodes (server processes).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Room members connected to each node.
    #[arg(long, default_value_t = 2000)]
    connections_per_node: usize,
    /// Members per client process (0: the file-descriptor limit less 200).
    #[arg(long, default_value_t = 0)]
    per_process: usize,
    /// Room messages per second from the sender.
    #[arg(long, default_value_t = 20)]
    rate: u64,
    /// Sending duration in seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Message body bytes.
    #[arg(long, default_value_t = 100)]
    body: usize,
    /// One member in this many decodes messages for latency.
    #[arg(long, default_value_t = 20)]
    probe_every: usize,
    /// Where the nodes find NATS and PostgreSQL.
    #[command(flatten)]
    infra: NodesArgs,
    /// Where to write cluster-n<N>.json.
    #[arg(long, default_value = "target/loadgen")]
    out: std::path::PathBuf,
}

/// Options of `loadgen members` (a child of `cluster`).
#[derive(Debug, Clone, Parser)]
pub(super) struct MembersArgs {
    /// The nodes; member `i` connects to node `i % N`.
    #[arg(long, value_delimiter = ',', required = true)]
    servers: Vec<SocketAddr>,
    /// Index of the first member.
    #[arg(long)]
    first: usize,
    /// Members to open.
    #[arg(long)]
    count: usize,
    /// One member in this many decodes messages for latency.
    #[arg(long, default_value_t = 20)]
    probe_every: usize,
}

/// The soft limit on open files of this process (`ulimit -n`).
fn fd_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `loadgen members`: opens the members, prints `J <joined> <deliveries>`
/// every 200 ms, and on a line on stdin (or its end) prints its latency
/// histogram as `H <µs> <count> ...` and exits.
pub(super) async fn members(args: MembersArgs) -> Result<(), AnyError> {
    let stats = Arc::new(Stats::new());
    let reporter = {
        let stats = stats.clone();
        tokio::spawn(async move {
            loop {
                let line = format!(
                    "J {} {}\n",
                    stats.joined.load(Ordering::Relaxed),
                    stats.deliveries.load(Ordering::Relaxed)
                );
                if print(&line).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let start = |i: usize| {
        let (stats, addr) = (stats.clone(), args.servers[i % args.servers.len()]);
        let probe = i.is_multiple_of(args.probe_every.max(1));
        tokio::spawn(async move {
            if let Err(e) = member(addr, i, probe, stats).await {
                eprintln!("member {i}: {e}");
            }
        });
    };
    members::join_all(args.first..args.first + args.count, &stats, start, |_| {}).await?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let _ = stdin.next_line().await;
    reporter.abort();
    let h = stats.room_latency.lock().0.clone();
    let mut line = String::from("H");
    for v in h.iter_recorded() {
        line.push_str(&format!(
            " {} {}",
            v.value_iterated_to(),
            v.count_at_value()
        ));
    }
    line.push('\n');
    print(&line)?;
    // The members' sockets close with the process.
    std::process::exit(0);
}

/// Writes `line` to stdout at once (the parent reads it as it comes).
fn print(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.flush()
}

/// A `loadgen members` child as the parent sees it.
struct MembersChild {
    joined: Arc<AtomicU64>,
    deliveries: Arc<AtomicU64>,
    histogram: tokio::sync::oneshot::Receiver<Histogram<u64>>,
    stdin: tokio::process::ChildStdin,
    _child: tokio::process::Child,
}

impl MembersChild {
    /// Starts members `first..first + count` in a child process.
    fn spawn(
        servers: &[SocketAddr],
        first: usize,
        count: usize,
        probe_every: usize,
    ) -> Result<Self, AnyError> {
        let servers: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("members")
            .args(["--servers", &servers.join(",")])
            .args(["--first", &first.to_string(), "--count", &count.to_string()])
            .args(["--probe-every", &probe_every.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no child stdin")?;
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        let (joined, deliveries) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (tx, merged) = tokio::sync::oneshot::channel();
        let (j, d) = (joined.clone(), deliveries.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut words = line.split_whitespace();
                match words.next() {
                    Some("J") => {
                        let mut n = words.filter_map(|w| w.parse::<u64>().ok());
                        j.store(n.next().unwrap_or(0), Ordering::Relaxed);
                        d.store(n.next().unwrap_or(0), Ordering::Relaxed);
                    }
                    Some("H") => {
                        let mut h = histogram();
                        let n: Vec<u64> = words.filter_map(|w| w.parse().ok()).collect();
                        for pair in n.chunks_exact(2) {
                            let _ = h.record_n(pair[0], pair[1]);
                        }
                        let _ = tx.send(h);
                        return;
                    }
                    _ => {}
                }
            }
        });
        Ok(Self {
            joined,
            deliveries,
            histogram: merged,
            stdin,
            _child: child,
        })
    }
}

/// The bus counters of one kind, summed over the nodes.
#[derive(Debug, Default, Clone, Copy)]
struct Bus {
    published: f64,
    published_bytes: f64,
    received: f64,
    received_bytes: f64,
}

impl Bus {
    /// Reads kind `kind` from each node's metrics page and sums it.
    async fn read(nodes: &Nodes, kind: &str) -> Result<Self, AnyError> {
        let mut sum = Self::default();
        for node in &nodes.nodes {
            let page: HashMap<String, f64> = scrape(node.metrics).await?;
            let get = |name: &str| {
                page.get(&format!("im_cluster_bus_{name}{{kind=\"{kind}\"}}"))
                    .copied()
                    .unwrap_or(0.0)
            };
            sum.published += get("published_total");
            sum.published_bytes += get("published_bytes_total");
            sum.received += get("received_total");
            sum.received_bytes += get("received_bytes_total");
        }
        Ok(sum)
    }

    /// What was counted since `before`.
    fn since(self, before: Self) -> Self {
        Self {
            published: self.published - before.published,
            published_bytes: self.published_bytes - before.published_bytes,
            received: self.received - before.received,
            received_bytes: self.received_bytes - before.received_bytes,
        }
    }
}

/// Runs the load and prints (and writes) the report.
pub(super) async fn run(args: ClusterArgs) -> Result<(), AnyError> {
    std::fs::create_dir_all(&args.out)?;
    let nodes = Nodes::start(&args.infra, args.nodes.max(1)).await?;
    let servers: Vec<SocketAddr> = nodes.nodes.iter().map(|n| n.addr).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle: Vec<Option<u64>> = nodes.nodes.iter().map(|n| n.rss_kib()).collect();

    // Members, in child processes sized to the fd limit.
    let total = args.connections_per_node * servers.len();
    let per_process = match args.per_process {
        0 => fd_limit().map_or(1000, |l| l.saturating_sub(200).max(100)),
        n => n,
    };
    let t = Instant::now();
    let mut children = Vec::new();
    for first in (0..total).step_by(per_process) {
        let count = per_process.min(total - first);
        children.push(MembersChild::spawn(
            &servers,
            first,
            count,
            args.probe_every,
        )?);
    }
    eprintln!(
        "{total} members in {} client process(es) of up to {per_process}",
        children.len()
    );
    let sum = |f: fn(&MembersChild) -> &AtomicU64| {
        children
            .iter()
            .map(|c| f(c).load(Ordering::Relaxed))
            .sum::<u64>()
    };
    while sum(|c| &c.joined) < total as u64 {
        if t.elapsed() > Duration::from_secs(300) {
            return Err(format!("only {} of {total} joined in 300 s", sum(|c| &c.joined)).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect_secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_joined: Vec<Option<u64>> = nodes.nodes.iter().map(|n| n.rss_kib()).collect();
    let rss: Vec<serde_json::Value> = rss_idle
        .iter()
        .zip(&rss_joined)
        .map(|(a, b)| {
            let per = a.zip(*b).map(|(a, b)| {
                b.saturating_sub(a) as f64 * 1024.0 / args.connections_per_node as f64
            });
            serde_json::json!({ "idle_kib": a, "joined_kib": b, "bytes_per_connection": per })
        })
        .collect();

    // The sender, on the first node.
    let sender = Client::connect(servers[0], "sender0:d", "d").await?;
    sender.join_room(ROOM).await?;
    let batch_before = Bus::read(&nodes, "batch").await?;
    let beacon_before = Bus::read(&nodes, "beacon").await?;
    let delivered_before = sum(|c| &c.deliveries);
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let tasks = members::flood(vec![sender], args.rate, args.body, deadline, sent.clone());
    let mut series = Vec::new();
    let mut last = delivered_before;
    for _ in 0..args.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = sum(|c| &c.deliveries);
        series.push(now - last);
        last = now;
    }
    for task in tasks {
        task.await?;
    }
    // Drain: until every member has every message, or 5 s without progress.
    let mut quiet = Instant::now();
    loop {
        let expected = sent.load(Ordering::Relaxed) * total as u64;
        let now = sum(|c| &c.deliveries) - delivered_before;
        if now >= expected || quiet.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if sum(|c| &c.deliveries) - delivered_before > now {
            quiet = Instant::now();
        }
    }
    // The head beacons go on for 2 s after the last batch.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let batch = Bus::read(&nodes, "batch").await?.since(batch_before);
    let beacon = Bus::read(&nodes, "beacon").await?.since(beacon_before);
    let delivered = sum(|c| &c.deliveries) - delivered_before;

    let mut latency = histogram();
    for c in &mut children {
        c.stdin.write_all(b"report\n").await?;
    }
    for c in children {
        if let Ok(h) = tokio::time::timeout(Duration::from_secs(30), c.histogram).await? {
            latency.add(&h)?;
        }
    }

    let messages = sent.load(Ordering::Relaxed) as f64;
    let busy = series.iter().skip(1).copied().collect::<Vec<_>>();
    let steady = busy.iter().sum::<u64>() as f64 / busy.len().max(1) as f64;
    let report = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "nodes": servers.len(),
        "nodes_with_members": servers.len(),
        "connections_per_node": args.connections_per_node,
        "connections": total,
        "client_processes_of_up_to": per_process,
        "connect_s": connect_secs,
        "rate": args.rate,
        "body_bytes": args.body,
        "duration_s": args.duration,
        "room_messages_sent": messages,
        "deliveries": delivered,
        "deliveries_expected": messages as u64 * total as u64,
        "deliveries_per_s_steady": steady,
        "latency_ms": { "p50": pct(&latency, 0.5), "p99": pct(&latency, 0.99), "max": latency.max() as f64 / 1000.0, "samples": latency.len() },
        "bus": {
            "batches_published": batch.published,
            "batches_received": batch.received,
            "room_messages_per_batch": messages / batch.published.max(1.0),
            "nodes_reached_per_batch": 1.0 + batch.received / batch.published.max(1.0),
            "bus_messages_per_room_message": (batch.published + batch.received) / messages.max(1.0),
            "beacons_per_room_message": (beacon.published + beacon.received) / messages.max(1.0),
            "bus_bytes_per_delivery": (batch.published_bytes + batch.received_bytes + beacon.published_bytes + beacon.received_bytes) / delivered.max(1) as f64,
            "batch_bytes_per_room_message": (batch.published_bytes + batch.received_bytes) / messages.max(1.0),
            "batch_bytes_per_delivery": (batch.published_bytes + batch.received_bytes) / delivered.max(1) as f64,
            "measured": "sum over nodes of im_cluster_bus_{published,received}{,_bytes}_total{kind=batch|beacon} across the sending window (+2.5 s for beacons); bytes are NATS payload bytes",
        },
        "server_rss": rss,
        "series_deliveries_per_s": series,
    });
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(
        args.out.join(format!("cluster-n{}.json", servers.len())),
        &json,
    )?;
    println!("{json}");
    Ok(())
}

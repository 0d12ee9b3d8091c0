//! `loadgen chat`: steady 1:1 chat load, with or without push acks.
//!
//! P pairs; in each, one client sends R messages/s to the other for D
//! seconds. The receiver measures send-to-push latency from the timestamp
//! in the body and counts distinct seqs (repeats are resends); with
//! `--push-acks` it connects with `Connect.push_acks` and acks each push.
//! The server's CPU time is read from `/proc/<pid>/stat` around the load.
//! Run it twice, with and without `--push-acks`, to get the cost of acks.
//! With `--sdk` every client is an `im-client` SDK client (which acks
//! pushes, dedups and pulls on gaps by itself): the figures are what an
//! application on the SDK sees.
//!
//! ```text
//! cargo run --release --example loadgen -- chat --pairs 200 --rate 20 --duration 10
//! cargo run --release --example loadgen -- chat --pairs 200 --rate 20 --duration 10 --push-acks
//! cargo run --release --example loadgen -- chat --pairs 200 --rate 20 --duration 10 --sdk
//! ```
//!
//! With `--cluster-nodes 2` (feature `cluster`) the server is two cluster
//! nodes on PostgreSQL (see `nodes.rs`): senders on the first, receivers on
//! the second, so every message crosses the bus; `--same-node` puts the
//! receivers on the first node too, the baseline on the same store. The
//! server CPU is summed over the nodes.
//!
//! ```text
//! cargo run --release --features cluster --example loadgen -- chat --pairs 200 --rate 20 --cluster-nodes 2
//! cargo run --release --features cluster --example loadgen -- chat --pairs 200 --rate 20 --cluster-nodes 2 --same-node
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use im_engine::core::pb::{self, server_frame::Body as Out};
use im_engine::transport_tcp::client::{Client, direct};
use parking_lot::Mutex;

use super::{AnyError, body, histogram, now_us, pct, sent_at, spawn_server};

/// Options of `loadgen chat`.
#[derive(Debug, Clone, Parser)]
pub(super) struct ChatArgs {
    /// Use this server instead of starting one (its CPU is then not measured).
    #[arg(long)]
    server: Option<SocketAddr>,
    /// Listen address of the child server.
    #[arg(long, default_value = "127.0.0.1:7402")]
    listen: SocketAddr,
    /// Sender/receiver pairs.
    #[arg(long, default_value_t = 200)]
    pairs: usize,
    /// Messages per second per pair.
    #[arg(long, default_value_t = 20)]
    rate: u64,
    /// Load duration in seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Message body bytes.
    #[arg(long, default_value_t = 100)]
    body: usize,
    /// Receivers connect with `push_acks` and ack every push.
    #[arg(long)]
    push_acks: bool,
    /// Every client is an `im-client` SDK client (with push acks).
    #[arg(long, conflicts_with = "push_acks")]
    sdk: bool,
    /// Start this many cluster nodes (PostgreSQL store) instead of one
    /// in-memory server: senders on the first, receivers on the second.
    #[cfg(feature = "cluster")]
    #[arg(long, default_value_t = 0, conflicts_with = "server")]
    cluster_nodes: usize,
    /// With `--cluster-nodes`: receivers on the senders' node.
    #[cfg(feature = "cluster")]
    #[arg(long, requires = "cluster_nodes")]
    same_node: bool,
    /// Where the cluster nodes find NATS and PostgreSQL.
    #[cfg(feature = "cluster")]
    #[command(flatten)]
    infra: super::nodes::NodesArgs,
    /// Where to write chat.json (chat-acks.json with `--push-acks`).
    #[arg(long, default_value = "target/loadgen")]
    out: std::path::PathBuf,
}

/// What the receivers saw, over all pairs.
struct Received {
    /// Distinct messages received.
    messages: AtomicU64,
    /// Push frames holding a message seen before (resends).
    repeats: AtomicU64,
    /// Acks sent.
    acks: AtomicU64,
    /// Notifies received (each followed by a pull).
    notifies: AtomicU64,
    /// Send-to-arrival latency, µs.
    latency: Mutex<Histogram<u64>>,
    /// Commit-to-ack latency, ms + 1 (so 0 ms is recordable).
    commit_to_ack: Mutex<Histogram<u64>>,
}

impl Received {
    /// Counts message `m`, which arrived at `now` (µs): a repeat of a seq in
    /// `seen`, or a new message with its send-to-arrival latency.
    fn arrived(&self, seen: &mut HashSet<u64>, m: &pb::Message, now: u64) {
        if !seen.insert(m.seq) {
            self.repeats.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.messages.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = sent_at(&m.body) {
            let _ = self.latency.lock().record(now.saturating_sub(t).max(1));
        }
    }
}

/// Server CPU time (user + system) in clock ticks, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// The servers under load: where senders and receivers connect, and the
/// processes whose CPU is measured (stopped when dropped).
struct Servers {
    senders: SocketAddr,
    receivers: SocketAddr,
    pids: Vec<u32>,
    _child: Option<tokio::process::Child>,
    #[cfg(feature = "cluster")]
    _nodes: Option<super::nodes::Nodes>,
}

impl Servers {
    /// `--server`, the cluster nodes or a child server, as the flags say.
    async fn start(args: &ChatArgs) -> Result<Self, AnyError> {
        #[cfg(feature = "cluster")]
        if args.cluster_nodes > 0 {
            let nodes = super::nodes::Nodes::start(&args.infra, args.cluster_nodes).await?;
            let first = nodes.nodes[0].addr;
            let second = nodes.nodes[1 % nodes.nodes.len()].addr;
            return Ok(Self {
                senders: first,
                receivers: if args.same_node { first } else { second },
                pids: nodes.pids(),
                _child: None,
                _nodes: Some(nodes),
            });
        }
        let child = match args.server {
            Some(_) => None,
            None => Some(spawn_server(args.listen, None).await?),
        };
        let addr = args.server.unwrap_or(args.listen);
        Ok(Self {
            senders: addr,
            receivers: addr,
            pids: child.as_ref().and_then(|c| c.id()).into_iter().collect(),
            _child: child,
            #[cfg(feature = "cluster")]
            _nodes: None,
        })
    }

    /// The servers' CPU time, summed, if all of them are measured.
    fn cpu_ticks(&self) -> Option<u64> {
        if self.pids.is_empty() {
            return None;
        }
        self.pids.iter().map(|&p| cpu_ticks(p)).sum()
    }

    /// The servers' CPU seconds since `before` (ticks).
    fn cpu_seconds(&self, before: Option<u64>) -> Option<f64> {
        match (before, self.cpu_ticks()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / TICKS_PER_SEC),
            _ => None,
        }
    }
}

/// Runs the load and prints (and writes) the report.
pub(super) async fn run(args: ChatArgs) -> Result<(), AnyError> {
    std::fs::create_dir_all(&args.out)?;
    let servers = Servers::start(&args).await?;
    let received = Arc::new(Received {
        messages: AtomicU64::new(0),
        repeats: AtomicU64::new(0),
        acks: AtomicU64::new(0),
        notifies: AtomicU64::new(0),
        latency: Mutex::new(histogram()),
        commit_to_ack: Mutex::new(histogram()),
    });
    let total = args.rate * args.duration;
    if args.sdk {
        return finish(
            &args,
            sdk::run(&args, &servers, total, received.clone()).await?,
            &received,
            servers,
        );
    }
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for i in 0..args.pairs {
        let a = Client::connect(servers.senders, &format!("ca{i}:d"), "d").await?;
        let connect = pb::Connect {
            token: format!("cb{i}:d"),
            device_id: "d".into(),
            push_acks: args.push_acks,
            ..Default::default()
        };
        let b = Client::connect_frame(servers.receivers, connect).await?;
        receivers.push(tokio::spawn(receive(
            b,
            format!("ca{i}"),
            total,
            args.push_acks,
            received.clone(),
        )));
        senders.push(a);
    }
    let cpu_before = servers.cpu_ticks();
    let t = Instant::now();
    let mut sending = Vec::new();
    for (i, a) in senders.into_iter().enumerate() {
        let (rate, size) = (args.rate, args.body);
        sending.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
            for n in 0..total {
                tick.tick().await;
                a.send(direct(&format!("cb{i}")), &format!("{n}"), body(size))
                    .await?;
            }
            Ok::<_, AnyError>(())
        }));
    }
    for s in sending {
        s.await??;
    }
    for r in receivers {
        r.await?;
    }
    let measured = Measured {
        seconds: t.elapsed().as_secs_f64(),
        cpu: servers.cpu_seconds(cpu_before),
        sent: total * args.pairs as u64,
    };
    finish(&args, measured, &received, servers)
}

/// The load's duration, the server's CPU time over it and the messages sent.
struct Measured {
    seconds: f64,
    cpu: Option<f64>,
    sent: u64,
}

/// Prints and writes the report, then stops the servers it started.
fn finish(
    args: &ChatArgs,
    measured: Measured,
    received: &Received,
    servers: Servers,
) -> Result<(), AnyError> {
    let Measured {
        seconds: secs,
        cpu,
        sent,
    } = measured;
    let got = received.messages.load(Ordering::Relaxed);
    let acks = received.acks.load(Ordering::Relaxed);
    let h = received.latency.lock().clone();
    let c = received.commit_to_ack.lock().clone();
    // Recorded as ms + 1.
    let ack_ms = |q: f64| (c.value_at_quantile(q) as f64 - 1.0).max(0.0);
    let placement = if servers.senders == servers.receivers {
        "same-node"
    } else {
        "cross-node"
    };
    let report = serde_json::json!({
        "push_acks": args.push_acks || args.sdk,
        "sdk": args.sdk,
        "pairs": args.pairs,
        "rate_per_pair": args.rate,
        "seconds": secs,
        "sent": sent,
        "received": got,
        "arrival_rate": got as f64 / sent.max(1) as f64,
        "repeats": received.repeats.load(Ordering::Relaxed),
        // Every send waits for its ack (ack after commit).
        "send_acks_per_sec": sent as f64 / secs,
        // The SDK acks by itself: not counted from outside.
        "acks_per_sec": (!args.sdk).then(|| acks as f64 / secs),
        "notifies": received.notifies.load(Ordering::Relaxed),
        "latency_ms": { "p50": pct(&h, 0.5), "p99": pct(&h, 0.99), "max": h.max() as f64 / 1000.0 },
        "commit_to_ack_ms": (!args.sdk).then(|| serde_json::json!({ "p50": ack_ms(0.5), "p99": ack_ms(0.99), "samples": c.len(), "measured": "client clock at the ack minus the message's server_time_ms (ms resolution)" })),
        "cluster_nodes": servers.pids.len(),
        "receivers": placement,
        "server_cpu_seconds": cpu,
        "server_cpu_share": cpu.map(|c| c / secs),
        "server_cpu_us_per_message": cpu.map(|c| c * 1e6 / sent.max(1) as f64),
    });
    let json = serde_json::to_string_pretty(&report)?;
    let name = match (args.sdk, args.push_acks) {
        (true, _) => "chat-sdk",
        (false, true) => "chat-acks",
        (false, false) => "chat",
    };
    #[cfg(feature = "cluster")]
    let name = match args.cluster_nodes {
        0 => name.to_owned(),
        n => format!("{name}-cluster{n}-{placement}"),
    };
    std::fs::write(args.out.join(format!("{name}.json")), &json)?;
    println!("{json}");
    drop(servers);
    Ok(())
}

/// Takes pushes (and pulls on a notify) until seq `total` arrived (or
/// 5 s of silence), acking when asked to. Records send-to-arrival latency
/// and, at each ack, commit-to-ack latency (from the message's commit time).
async fn receive(b: Client, peer: String, total: u64, push_acks: bool, out: Arc<Received>) {
    let mut seen = HashSet::new();
    let mut have = 0;
    while have < total {
        let Ok(Some(frame)) = b.next_event(Duration::from_secs(5)).await else {
            break;
        };
        let messages = match frame.body {
            Some(Out::Push(p)) => p.messages,
            // Pushes in flight: the rest is pulled, as a client must.
            Some(Out::Notify(n)) => {
                out.notifies.fetch_add(1, Ordering::Relaxed);
                match b.pull(direct(&peer), have, n.head_seq, 0).await {
                    Ok(page) => page.messages,
                    Err(_) => break,
                }
            }
            _ => continue,
        };
        let now = now_us();
        for m in &messages {
            // Seqs arrive in order; a repeat never lowers what we have.
            have = have.max(m.seq);
            out.arrived(&mut seen, m, now);
        }
        if push_acks && b.ack(direct(&peer), have).await.is_ok() {
            out.acks.fetch_add(1, Ordering::Relaxed);
            let ms = (now / 1000) as i64;
            let mut h = out.commit_to_ack.lock();
            for m in &messages {
                // Milliseconds: the resolution of the commit time.
                let _ = h.record(ms.saturating_sub(m.server_time_ms).max(0) as u64 + 1);
            }
        }
    }
}

/// `--sdk`: the same pairs as `im-client` SDK clients.
mod sdk {
    use super::*;
    use im_client::{ClientConfig, ConversationKey, Event};

    /// Starts an SDK client of `user`.
    fn start(
        addr: SocketAddr,
        user: &str,
    ) -> Result<(im_client::Client, im_client::Events), AnyError> {
        let config = ClientConfig::new(addr.to_string(), format!("{user}:d"), "d");
        Ok(im_client::Client::start(config)?)
    }

    /// Runs the load with SDK clients; fills `out` as the raw receivers do
    /// (the SDK acks by itself, so acks and commit-to-ack are not counted).
    pub(super) async fn run(
        args: &ChatArgs,
        servers: &Servers,
        total: u64,
        out: Arc<Received>,
    ) -> Result<Measured, AnyError> {
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for i in 0..args.pairs {
            let (a, a_events) = start(servers.senders, &format!("ca{i}"))?;
            let (b, b_events) = start(servers.receivers, &format!("cb{i}"))?;
            receivers.push(tokio::spawn(receive(b, b_events, total, out.clone())));
            senders.push((a, a_events));
        }
        let cpu_before = servers.cpu_ticks();
        let t = Instant::now();
        let mut sending = Vec::new();
        for (i, (a, events)) in senders.into_iter().enumerate() {
            let (rate, size) = (args.rate, args.body);
            // The SDK waits when its events are not read: count the acks.
            let acked = tokio::spawn(count_acks(events, total));
            sending.push(tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
                for _ in 0..total {
                    tick.tick().await;
                    a.send(ConversationKey::direct(format!("cb{i}")), body(size))
                        .await?;
                }
                acked.await?;
                a.close().await;
                Ok::<_, AnyError>(())
            }));
        }
        for s in sending {
            s.await??;
        }
        for r in receivers {
            r.await?;
        }
        Ok(Measured {
            seconds: t.elapsed().as_secs_f64(),
            cpu: servers.cpu_seconds(cpu_before),
            sent: total * args.pairs as u64,
        })
    }

    /// Reads a sender's events until `total` of its sends were acked (or
    /// 10 s of silence).
    async fn count_acks(mut events: im_client::Events, total: u64) {
        let mut acked = 0;
        while acked < total {
            match tokio::time::timeout(Duration::from_secs(10), events.next()).await {
                Ok(Some(Event::SendAcked { .. })) => acked += 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// Takes the SDK's messages until `total` arrived (or 5 s of silence).
    async fn receive(
        b: im_client::Client,
        mut events: im_client::Events,
        total: u64,
        out: Arc<Received>,
    ) {
        let mut seen = HashSet::new();
        while (seen.len() as u64) < total {
            let m = match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
                Ok(Some(Event::Message(m))) => m,
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            };
            out.arrived(&mut seen, &m, now_us());
        }
        b.close().await;
    }
}

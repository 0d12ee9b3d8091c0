//! `loadgen durable`: messages per second through the engine with
//! ack-after-commit on PostgreSQL, and the ack latency, against the same load
//! on the in-memory store measured in the same run (the engine's ceiling).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use im_engine::core::{Engine, EngineConfig, Store};
use im_engine::store_memory::MemoryStore;
use im_engine::store_postgres::{PgStore, PgStoreConfig};
use im_engine::transport_tcp::client::{Client, direct};
use im_engine::transport_tcp::{TcpConfig, TcpServer};
use parking_lot::Mutex;

use super::{AnyError, histogram, pct};

/// Options of `loadgen durable`.
#[derive(Debug, Clone, clap::Args)]
pub struct DurableArgs {
    /// PostgreSQL URL (a fresh schema is created and dropped).
    #[arg(
        long,
        env = "IM_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres: String,
    /// Sending clients, each to its own direct conversation.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Sends each client keeps in flight.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Seconds measured per store (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Message body bytes.
    #[arg(long, default_value_t = 100)]
    body: usize,
    /// Conversation-owner shards of the engine (fewer means bigger group commits).
    #[arg(long, default_value_t = EngineConfig::default().shards)]
    shards: usize,
    /// Where to write durable.json.
    #[arg(long, default_value = "target/loadgen")]
    out: std::path::PathBuf,
}

/// What one store sustained.
struct Outcome {
    acks_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    errors: u64,
}

impl Outcome {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "acks_per_s": self.acks_per_s,
            "ack_latency_ms": { "p50": self.p50_ms, "p99": self.p99_ms, "p999": self.p999_ms },
            "errors": self.errors,
        })
    }
}

/// Runs the same load on the memory store, then on PostgreSQL.
pub async fn run(args: DurableArgs) -> Result<(), AnyError> {
    std::fs::create_dir_all(&args.out)?;
    eprintln!("baseline: in-memory store ...");
    let memory = measure(Arc::new(MemoryStore::new()), &args).await?;
    let schema = format!("loadgen_durable_{}", std::process::id());
    let pg = PgStore::connect(
        PgStoreConfig::new(&args.postgres)
            .with_schema(&schema)
            .with_pool_size(16),
    )
    .await?;
    eprintln!("PostgreSQL (schema {schema}) ...");
    let durable = measure(Arc::new(pg), &args).await;
    let _ = std::process::Command::new("psql")
        .args([
            &args.postgres,
            "-qc",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        ])
        .status();
    let durable = durable?;
    let report = serde_json::json!({
        "clients": args.clients,
        "window": args.window,
        "body_bytes": args.body,
        "duration_s": args.duration,
        "shards": args.shards,
        "memory_store": memory.json(),
        "postgres": durable.json(),
        "postgres_vs_memory": durable.acks_per_s / memory.acks_per_s.max(1.0),
    });
    let path = args.out.join("durable.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!("wrote {}", path.display());
    Ok(())
}

async fn measure(store: Arc<dyn Store>, args: &DurableArgs) -> Result<Outcome, AnyError> {
    let mut config = EngineConfig::default();
    config.shards = args.shards;
    let engine = Engine::builder(store)
        .config(config)
        .insecure_dev_auth()
        .build()?;
    let tcp = TcpServer::bind("127.0.0.1:0", TcpConfig::default()).await?;
    let addr = tcp.local_addr()?;
    let serving = tcp.serve(engine.clone());

    let warmup_end = Instant::now() + Duration::from_secs(1);
    let end = warmup_end + Duration::from_secs(args.duration);
    let latencies = Arc::new(Mutex::new(histogram()));
    let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let body = bytes::Bytes::from(vec![b'x'; args.body]);
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let client = Arc::new(Client::connect(addr, &format!("sender{c}:d"), "d").await?);
        let (latencies, counted, errors, body) = (
            latencies.clone(),
            counted.clone(),
            errors.clone(),
            body.clone(),
        );
        let window = args.window;
        tasks.push(tokio::spawn(async move {
            let peer = format!("sink{c}");
            let mut inflight = FuturesUnordered::new();
            let mut next = 0u64;
            loop {
                while inflight.len() < window && Instant::now() < end {
                    next += 1;
                    let (client, body, peer) = (client.clone(), body.clone(), peer.clone());
                    inflight.push(async move {
                        let start = Instant::now();
                        let ack = client.send(direct(&peer), &format!("m{next}"), body).await;
                        (start, ack)
                    });
                }
                let Some((start, ack)) = inflight.next().await else {
                    break;
                };
                let now = Instant::now();
                match ack {
                    Ok(_) if start >= warmup_end && now <= end => {
                        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let us = now.duration_since(start).as_micros() as u64;
                        let _ = latencies.lock().record(us.max(1));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    engine.shutdown().await;
    serving.abort();
    let h = latencies.lock().clone();
    Ok(Outcome {
        acks_per_s: counted.load(std::sync::atomic::Ordering::Relaxed) as f64
            / args.duration as f64,
        p50_ms: pct(&h, 0.5),
        p99_ms: pct(&h, 0.99),
        p999_ms: pct(&h, 0.999),
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
    })
}

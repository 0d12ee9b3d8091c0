//! The online index: a group of 1M durable members with 1k online costs
//! what a group of 1k members (all online) costs. Measured end to end
//! through the engine (commit to the memory store, fanout, session writer)
//! with in-memory connections instead of sockets.
//!
//! Run: `cargo bench --bench group_online`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use im_engine::core::codec::encode_client_frame;
use im_engine::core::pb::{self, client_frame::Body as In};
use im_engine::core::{
    ChannelId, CloseReason, Connection, ConnectionInfo, ConversationId, Engine, EngineConfig,
    FrameReader, FrameWriter, TransportError, UserId,
};
use im_engine::store_memory::MemoryStore;
use tokio::sync::Notify;

const ONLINE: usize = 1_000;

/// Sends `Connect`, then stays silent.
struct Silent(Option<Bytes>);

#[async_trait]
impl FrameReader for Silent {
    async fn read_frame(&mut self) -> Result<Option<Bytes>, TransportError> {
        match self.0.take() {
            Some(f) => Ok(Some(f)),
            None => std::future::pending().await,
        }
    }
}

/// Counts frames written, over all connections.
#[derive(Clone)]
struct Counter {
    frames: Arc<AtomicU64>,
    wake: Arc<Notify>,
}

#[async_trait]
impl FrameWriter for Counter {
    async fn write_frames(&mut self, frames: &[Bytes]) -> Result<(), TransportError> {
        self.frames
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        self.wake.notify_one();
        Ok(())
    }
    async fn close(&mut self, _: CloseReason) -> Result<(), TransportError> {
        Ok(())
    }
}

impl Counter {
    async fn wait_for(&self, n: u64) {
        while self.frames.load(Ordering::Relaxed) < n {
            let _ = tokio::time::timeout(Duration::from_millis(5), self.wake.notified()).await;
        }
    }
}

struct Setup {
    engine: Engine,
    group: ConversationId,
    sender: UserId,
    counter: Counter,
}

async fn setup(members: usize) -> Setup {
    let mut config = EngineConfig::default();
    config.heartbeat_interval = Duration::from_secs(3600);
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .config(config)
        .insecure_dev_auth()
        .build()
        .expect("engine");
    let group = ChannelId::new(format!("g{members}")).expect("id");
    let users: Vec<UserId> = (0..members)
        .map(|i| UserId::new(format!("m{i}")).expect("user"))
        .collect();
    engine.create_group(&group, &users).await.expect("group");
    let counter = Counter {
        frames: Arc::new(AtomicU64::new(0)),
        wake: Arc::new(Notify::new()),
    };
    for u in users.iter().take(ONLINE) {
        let connect = encode_client_frame(&pb::ClientFrame {
            request_id: 1,
            body: Some(In::Connect(pb::Connect {
                token: format!("{u}:d"),
                device_id: "d".into(),
                ..Default::default()
            })),
        });
        engine.accept(Connection {
            reader: Box::new(Silent(Some(connect))),
            writer: Box::new(counter.clone()),
            info: ConnectionInfo::new("bench", None),
        });
    }
    // Every session has written its `Connected`.
    counter.wait_for(ONLINE as u64).await;
    Setup {
        engine,
        group: ConversationId::Group(group),
        sender: users[0].clone(),
        counter,
    }
}

fn group_online(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("group_1k_online");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(ONLINE as u64));
    for members in [1_000usize, 1_000_000] {
        let t = Instant::now();
        let s = rt.block_on(setup(members));
        println!("group of {members}: set up in {:.1?}", t.elapsed());
        g.bench_function(BenchmarkId::new("members", members), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let before = s.counter.frames.load(Ordering::Relaxed);
                        s.engine
                            .send_as(
                                s.group.clone(),
                                s.sender.clone(),
                                Bytes::from_static(&[b'x'; 100]),
                                None,
                            )
                            .await
                            .expect("send");
                        s.counter.wait_for(before + ONLINE as u64).await;
                    }
                    start.elapsed()
                })
            })
        });
        rt.block_on(s.engine.shutdown());
    }
    g.finish();
}

criterion_group!(benches, group_online);
criterion_main!(benches);

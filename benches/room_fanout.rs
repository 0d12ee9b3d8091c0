//! In-process fanout to a room of 1k / 10k / 100k / 1M member sessions, no
//! sockets: the engine's room delivery (sub-rooms, byte-bounded session
//! queues, one encoded frame shared by all) against two baselines measured
//! in the same run: a per-member `VecDeque<Bytes>` push loop and a tokio
//! `broadcast` channel with one receiver per member.
//!
//! Throughput is in deliveries (one message in one member's queue) per
//! second; the time per iteration at 1M is "one message in all 1M queues".
//! Queues are emptied between iterations, outside the timing.
//!
//! Run: `cargo bench --bench room_fanout` (or `-- 1000000` for one size).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use im_engine::core::EngineConfig;
use im_engine::core::bench_support::RoomFanoutBench;

const SIZES: [usize; 4] = [1_000, 10_000, 100_000, 1_000_000];
const BODY: usize = 100;

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("room_fanout");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let config = EngineConfig::default();
    for n in SIZES {
        g.throughput(Throughput::Elements(n as u64));
        let room = RoomFanoutBench::new(n, &config).expect("room");
        let frame = room.frame(BODY);
        g.bench_with_input(BenchmarkId::new("engine", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let reached = room.deliver(&frame);
                    total += t.elapsed();
                    assert_eq!(reached, n);
                    room.drain();
                }
                total
            })
        });
        drop(room);

        let mut queues: Vec<VecDeque<Bytes>> = (0..n).map(|_| VecDeque::new()).collect();
        g.bench_with_input(BenchmarkId::new("vecdeque", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    for q in &mut queues {
                        q.push_back(frame.clone());
                    }
                    total += t.elapsed();
                    queues.iter_mut().for_each(VecDeque::clear);
                }
                total
            })
        });
        drop(queues);

        let (tx, _) = tokio::sync::broadcast::channel::<Bytes>(16);
        let mut rxs: Vec<_> = (0..n).map(|_| tx.subscribe()).collect();
        g.bench_with_input(BenchmarkId::new("tokio_broadcast", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let _ = tx.send(frame.clone());
                    for rx in &mut rxs {
                        let _ = std::hint::black_box(rx.try_recv());
                    }
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

/// Ten messages per frame (a full batch window): deliveries count messages.
fn batched(c: &mut Criterion) {
    let mut g = c.benchmark_group("room_fanout_batch10");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let n = 1_000_000;
    let room = RoomFanoutBench::new(n, &EngineConfig::default()).expect("room");
    let frame = room.batch_frame(10, BODY);
    g.throughput(Throughput::Elements(10 * n as u64));
    g.bench_function(BenchmarkId::new("engine", n), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                room.deliver(&frame);
                total += t.elapsed();
                room.drain();
            }
            total
        })
    });
    g.finish();
}

/// Joining and leaving cost the same in a room of 1k and of 1M.
fn join_leave(c: &mut Criterion) {
    let mut g = c.benchmark_group("room_join_leave");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(1));
    for n in [1_000, 1_000_000] {
        let room = RoomFanoutBench::new(n, &EngineConfig::default()).expect("room");
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|i| room.join_leave(i).expect("join/leave"))
                    .sum()
            })
        });
        println!("room of {n}: {} sub-rooms", room.sub_rooms());
    }
    g.finish();
}

criterion_group!(benches, fanout, batched, join_leave);
criterion_main!(benches);

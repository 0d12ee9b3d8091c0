//! Durable messages per second through `PgStore::append` (the engine's group
//! commit), against baselines measured in the same run on the same server:
//!
//! - `one_row_per_tx`: one autocommitted `INSERT` per message (what a naive
//!   store does per send);
//! - `multi_row_values`: one `INSERT … VALUES (…), (…), …` of 1024 rows with
//!   8,192 bind parameters, messages only (no inboxes, no checks);
//! - `store_append/1024`: the store's batch of 1024 messages — dedup and
//!   seq checks, messages, heads, and 2 inbox entries per message (direct
//!   chats) — one round trip, committed;
//! - `store_append_parallel/4x1024`: four such batches in flight at once on
//!   disjoint conversations but shared users (the engine's shard workers).
//!
//! Needs the server at `IM_PG_TEST_URL` (default the local one); works in a
//! schema of its own, dropped at the end. Run with
//! `cargo bench -p im-store-postgres --bench pg_append`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use im_core::ids::{ConversationId, DeviceId, MessageId, UserId};
use im_core::store::{AppendRequest, NewMessage, StoredMessage, Timeline};
use im_store_postgres::{PgStore, PgStoreConfig};
use tokio::runtime::Runtime;
use tokio_postgres::types::ToSql;

const BATCH: u64 = 1024;
/// Conversations per batch; each gets `BATCH / CONVERSATIONS` messages.
const CONVERSATIONS: u64 = 64;
const PER_CONVERSATION: u64 = BATCH / CONVERSATIONS;
const BODY: &[u8] = &[b'x'; 100];

fn url() -> String {
    std::env::var("IM_PG_TEST_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn id(s: String) -> UserId {
    UserId::new(s).unwrap_or_else(|e| panic!("valid id: {e}"))
}

/// Batch number `n` of writer `w`: 64 direct conversations between users
/// `w<w>-s<i>` and `w<w>-r<i % 16>`, 16 messages each, continuing their seqs.
fn batch(w: u64, n: u64) -> AppendRequest {
    let device = DeviceId::new("bench").unwrap_or_else(|e| panic!("valid id: {e}"));
    let mut messages = Vec::with_capacity(BATCH as usize);
    for c in 0..CONVERSATIONS {
        let sender = id(format!("w{w}-s{c}"));
        let peer = id(format!("w{w}-r{}", c % 16));
        let conversation = ConversationId::direct(sender.clone(), peer.clone());
        for k in 0..PER_CONVERSATION {
            let seq = n * PER_CONVERSATION + k + 1;
            messages.push(NewMessage {
                message: StoredMessage {
                    conversation: conversation.clone(),
                    seq,
                    message_id: MessageId((w << 48) | (c << 32) | seq),
                    sender: sender.clone(),
                    sender_device: device.clone(),
                    client_msg_id: Some(format!("{c}-{seq}")),
                    body: Bytes::from_static(BODY),
                    server_time_ms: 1_700_000_000_000,
                    content_type: im_core::store::ContentType::Text,
                    event: None,
                    recalled: false,
                    edit_count: 0,
                },
                inbox_recipients: vec![sender.clone(), peer.clone()],
            });
        }
    }
    AppendRequest { messages }
}

const BASELINE_TABLE: &str = "CREATE TABLE bench_messages (
    conv text COLLATE \"C\" NOT NULL, seq bigint NOT NULL, message_id bigint NOT NULL,
    sender text COLLATE \"C\" NOT NULL, device text COLLATE \"C\" NOT NULL,
    client_msg_id text COLLATE \"C\", body bytea NOT NULL, server_time_ms bigint NOT NULL,
    PRIMARY KEY (conv, seq));
    CREATE UNIQUE INDEX ON bench_messages (sender, device, client_msg_id)";

fn multi_row_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO bench_messages (conv, seq, message_id, sender, device, client_msg_id, body, server_time_ms) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        let b = r * 8;
        sql.push_str(&format!(
            "(${},${},${},${},${},${},${},${})",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5,
            b + 6,
            b + 7,
            b + 8
        ));
    }
    sql
}

struct Fixture {
    rt: Runtime,
    store: PgStore,
    raw: tokio_postgres::Client,
    schema: String,
}

fn fixture() -> Fixture {
    let rt = Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    let schema = format!("bench_{}", std::process::id());
    let (store, raw) = rt.block_on(async {
        let store = PgStore::connect(
            PgStoreConfig::new(url())
                .with_schema(schema.clone())
                .with_pool_size(8),
        )
        .await
        .unwrap_or_else(|e| panic!("connect to {} (set IM_PG_TEST_URL): {e}", url()));
        let (raw, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("raw connect: {e}"));
        tokio::spawn(conn);
        raw.batch_execute(&format!("SET search_path TO {schema}; {BASELINE_TABLE}"))
            .await
            .unwrap_or_else(|e| panic!("baseline table: {e}"));
        (store, raw)
    });
    Fixture {
        rt,
        store,
        raw,
        schema,
    }
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    let rows_done = AtomicU64::new(0);

    let mut g = c.benchmark_group("baseline");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_row_per_tx", |b| {
        let stmt =
            f.rt.block_on(f.raw.prepare(&multi_row_sql(1)))
                .unwrap_or_else(|e| panic!("prepare: {e}"));
        b.to_async(&f.rt).iter(|| async {
            let n = rows_done.fetch_add(1, Ordering::Relaxed);
            let conv = format!("one:{}", n / 16);
            let seq = i64::try_from(n).unwrap_or(0);
            let cmid = format!("one-{n}");
            let params: [&(dyn ToSql + Sync); 8] =
                [&conv, &seq, &seq, &"sender", &"bench", &cmid, &BODY, &seq];
            black_box(f.raw.execute(&stmt, &params).await)
                .unwrap_or_else(|e| panic!("insert: {e}"));
        });
    });
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("multi_row_values/1024", |b| {
        let stmt =
            f.rt.block_on(f.raw.prepare(&multi_row_sql(BATCH as usize)))
                .unwrap_or_else(|e| panic!("prepare: {e}"));
        b.to_async(&f.rt).iter(|| async {
            let n = rows_done.fetch_add(BATCH, Ordering::Relaxed);
            let rows: Vec<(String, i64, String)> = (0..BATCH)
                .map(|k| {
                    let r = n + k;
                    (
                        format!("multi:{}", r / 16),
                        i64::try_from(r).unwrap_or(0),
                        format!("multi-{r}"),
                    )
                })
                .collect();
            let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(rows.len() * 8);
            for (conv, seq, cmid) in &rows {
                params.extend_from_slice(&[conv, seq, seq, &"sender", &"bench", cmid, &BODY, seq]);
            }
            black_box(f.raw.execute(&stmt, &params).await)
                .unwrap_or_else(|e| panic!("insert: {e}"));
        });
    });
    g.finish();

    let mut g = c.benchmark_group("store_append");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(BATCH));
    let batches = AtomicU64::new(0);
    g.bench_function("1024", |b| {
        b.to_async(&f.rt).iter_batched(
            || batch(0, batches.fetch_add(1, Ordering::Relaxed)),
            |req| async {
                f.store
                    .append(req)
                    .await
                    .unwrap_or_else(|e| panic!("append: {e}"));
            },
            criterion::BatchSize::PerIteration,
        );
    });
    g.finish();

    let mut g = c.benchmark_group("store_append_parallel");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(4 * BATCH));
    let counters: Arc<Vec<AtomicU64>> = Arc::new((0..4).map(|_| AtomicU64::new(0)).collect());
    g.bench_function("4x1024", |b| {
        b.to_async(&f.rt).iter_batched(
            || {
                (1..=4u64)
                    .map(|w| batch(w, counters[w as usize - 1].fetch_add(1, Ordering::Relaxed)))
                    .collect::<Vec<_>>()
            },
            |reqs| async {
                let tasks: Vec<_> = reqs
                    .into_iter()
                    .map(|req| {
                        let store = f.store.clone();
                        tokio::spawn(async move { store.append(req).await })
                    })
                    .collect();
                for t in tasks {
                    t.await
                        .unwrap_or_else(|e| panic!("task: {e}"))
                        .unwrap_or_else(|e| panic!("append: {e}"));
                }
            },
            criterion::BatchSize::PerIteration,
        );
    });
    g.finish();

    f.rt.block_on(async {
        f.store.close();
        let _ = f
            .raw
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", f.schema))
            .await;
    });
}

criterion_group!(pg_append, benches);
criterion_main!(pg_append);

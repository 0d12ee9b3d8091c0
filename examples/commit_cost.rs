//! A deterministic commit-path workload, for counting instructions per send
//! with callgrind (repeatable whatever else the machine is doing, unlike
//! wall-clock benches on a shared 2-core machine): W concurrent host
//! senders, each M sends into its own direct chat, on a current-thread
//! runtime with one shard, on the in-memory store. The worst case for
//! per-batch overhead: each batch holds one send per conversation.
//!
//! ```text
//! cargo build --release --example commit_cost
//! valgrind --tool=callgrind target/release/examples/commit_cost 32 300   # "Collected" / 9600 = instructions per send
//! ```
use std::sync::Arc;

use im_engine::core::{ConversationId, Engine, EngineConfig, UserId};
use im_engine::store_memory::MemoryStore;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("n"))
        .collect();
    let (w, m) = (
        args.first().copied().unwrap_or(32),
        args.get(1).copied().unwrap_or(500),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async move {
        let mut config = EngineConfig::default();
        config.shards = 1;
        let engine = Engine::builder(Arc::new(MemoryStore::new()))
            .config(config)
            .insecure_dev_auth()
            .build()
            .expect("engine");
        let mut tasks = Vec::new();
        for i in 0..w {
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                let me = UserId::new(format!("u{i}")).expect("id");
                let conv =
                    ConversationId::direct(me.clone(), UserId::new(format!("p{i}")).expect("id"));
                for k in 0..m {
                    engine
                        .send_as(
                            conv.clone(),
                            me.clone(),
                            vec![b'x'; 100].into(),
                            Some(format!("k{k}")),
                        )
                        .await
                        .expect("send");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        println!("sent {}", w * m);
    });
}

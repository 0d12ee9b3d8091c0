//! The engine-level model test (im-testkit) over real TCP sessions, on the
//! memory store: random connects, disconnects, sends, bursts, retries,
//! acks, reads, pulls, syncs, room joins and membership changes, checked
//! against a reference model of the contract.

use std::sync::Arc;

use im_engine::core::Store;
use im_engine::store_memory::MemoryStore;
use im_testkit::engine::{EngineModelConfig, run_model};

#[test]
fn engine_keeps_the_contract_under_random_actions() {
    run_model(
        || async { Arc::new(MemoryStore::new()) as Arc<dyn Store> },
        EngineModelConfig::default().with_cases(32).with_max_ops(40),
    );
}

//! The im-testkit store conformance suite and store model, run against the
//! PostgreSQL store (every check gets a fresh schema).

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use im_core::Store;
use im_store_postgres::{PgStore, PgStoreConfig};
use im_testkit::ConformanceConfig;

/// Makes stores in fresh schemas; the schemas are dropped with `self`.
#[derive(Default)]
struct Factory {
    guards: Mutex<Vec<SchemaGuard>>,
}

impl Factory {
    async fn store(&self, inbox_capacity: u64, timeline_capacity: Option<u64>) -> Arc<dyn Store> {
        let guard = SchemaGuard::fresh();
        let config = PgStoreConfig::new(tagged_url(&guard.0))
            .with_pool_size(4)
            .with_schema(guard.0.clone())
            .with_inbox_capacity(inbox_capacity)
            .with_timeline_capacity(timeline_capacity)
            .with_prune_slack(2);
        let store = PgStore::connect(config).await.expect("connect");
        self.guards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(guard);
        Arc::new(store)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_default_capacities() {
    let factory = Factory::default();
    im_testkit::store::conformance(
        || factory.store(10_000, None),
        ConformanceConfig::new().with_inbox_capacity(Some(10_000)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_small_retention() {
    let factory = Factory::default();
    im_testkit::store::conformance(
        || factory.store(5, Some(8)),
        ConformanceConfig::new()
            .with_inbox_capacity(Some(5))
            .with_timeline_capacity(Some(8)),
    )
    .await;
}

#[test]
fn store_model_with_small_retention() {
    let factory = Factory::default();
    im_testkit::run_store_model(
        || factory.store(4, Some(6)),
        ConformanceConfig::new()
            .with_inbox_capacity(Some(4))
            .with_timeline_capacity(Some(6)),
        16,
    );
}

//! The memory store against the im-testkit conformance suite and store model.

use std::sync::Arc;

use im_core::Store;
use im_store_memory::{MemoryStore, MemoryStoreConfig};
use im_testkit::ConformanceConfig;

fn store(inbox: usize, timeline: Option<usize>) -> Arc<dyn Store> {
    Arc::new(MemoryStore::with_config(
        MemoryStoreConfig::default()
            .with_inbox_capacity(inbox)
            .with_timeline_capacity(timeline),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_default_config() {
    // The default keeps 10,000 inbox entries: the retention check writes that many.
    im_testkit::store::conformance(
        || async { Arc::new(MemoryStore::new()) as Arc<dyn Store> },
        ConformanceConfig::new().with_inbox_capacity(Some(10_000)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_small_retention() {
    im_testkit::store::conformance(
        || async { store(5, Some(5)) },
        ConformanceConfig::new()
            .with_inbox_capacity(Some(5))
            .with_timeline_capacity(Some(5)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_no_inbox() {
    im_testkit::store::conformance(
        || async { store(0, Some(0)) },
        ConformanceConfig::new()
            .with_inbox_capacity(Some(0))
            .with_timeline_capacity(Some(0)),
    )
    .await;
}

#[test]
fn store_model() {
    im_testkit::run_store_model(
        || async { Arc::new(MemoryStore::new()) as Arc<dyn Store> },
        ConformanceConfig::new(),
        256,
    );
}

#[test]
fn store_model_with_retention() {
    im_testkit::run_store_model(
        || async { store(4, Some(3)) },
        ConformanceConfig::new()
            .with_inbox_capacity(Some(4))
            .with_timeline_capacity(Some(3)),
        256,
    );
}

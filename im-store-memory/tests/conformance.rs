//! The memory store against the im-testkit conformance suite and store model.

use std::sync::Arc;

use im_core::Store;
use im_store_memory::{MemoryStore, MemoryStoreConfig};
use im_testkit::ConformanceConfig;

fn store(inbox: usize, timeline: Option<usize>) -> Arc<dyn Store> {
    Arc::new(MemoryStore::with_config(
        MemoryStoreConfig::unbounded()
            .with_inbox_capacity(inbox)
            .with_timeline_capacity(timeline),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_default_config() {
    // The default keeps 10,000 inbox entries and 10,000 messages per
    // conversation: the retention checks write that many. Its 256 MiB budget
    // is far above what any check writes.
    im_testkit::store::conformance(
        || async { Arc::new(MemoryStore::new()) as Arc<dyn Store> },
        ConformanceConfig::new()
            .with_inbox_capacity(Some(10_000))
            .with_timeline_capacity(Some(10_000)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_unbounded() {
    im_testkit::store::conformance(
        || async {
            Arc::new(MemoryStore::with_config(MemoryStoreConfig::unbounded())) as Arc<dyn Store>
        },
        ConformanceConfig::new().with_inbox_capacity(Some(10_000)),
    )
    .await;
}

/// A byte budget of 32 KiB: above what the exact checks keep under a
/// capacity of 5, below the 60 KiB of 4 KiB messages that
/// `retained_history_is_contiguous` keeps under that capacity, so there the
/// budget evicts across conversations and the check holds the flags to what
/// was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_small_retention_and_byte_budget() {
    im_testkit::store::conformance(
        || async {
            Arc::new(MemoryStore::with_config(
                MemoryStoreConfig::default()
                    .with_inbox_capacity(5)
                    .with_timeline_capacity(Some(5))
                    .with_max_total_bytes(Some(32 << 10)),
            )) as Arc<dyn Store>
        },
        ConformanceConfig::new()
            .with_inbox_capacity(Some(5))
            .with_timeline_capacity(Some(5)),
    )
    .await;
}

/// A byte budget alone (no per-conversation capacity) that the exact checks
/// never reach but `retained_history_is_contiguous` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_byte_budget_only() {
    im_testkit::store::conformance(
        || async {
            Arc::new(MemoryStore::with_config(
                MemoryStoreConfig::unbounded().with_max_total_bytes(Some(256 << 10)),
            )) as Arc<dyn Store>
        },
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
        || async {
            Arc::new(MemoryStore::with_config(MemoryStoreConfig::unbounded())) as Arc<dyn Store>
        },
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

#![doc = include_str!("../README.md")]
// A test kit: failing a check by panicking with a clear message is its job.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

pub mod duplex;
pub mod engine;
pub mod fault_proxy;
pub mod faults;
pub mod fixtures;
pub mod garbage;
pub mod model;
pub mod probe;
pub mod store;
pub mod strategies;

pub use model::{StoreModel, check_against_model, run_store_model};
pub use store::conformance;

/// How the store a factory produces is configured, so the checks know which
/// retention to expect.
///
/// `Default` describes a store that keeps everything (no inbox or timeline
/// capacity). A store with a capacity must say so, or checks that write more
/// entries than the capacity will see "lost" entries and fail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConformanceConfig {
    /// Entries the store keeps per user inbox (`None`: it keeps every entry,
    /// or more than any check writes). Retention checks run only when set.
    pub inbox_capacity: Option<usize>,
    /// Messages the store keeps per conversation (`None`: all). Timeline
    /// retention checks run only when set.
    pub timeline_capacity: Option<usize>,
}

impl ConformanceConfig {
    /// A store that keeps everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`ConformanceConfig::inbox_capacity`].
    #[must_use]
    pub fn with_inbox_capacity(mut self, entries: Option<usize>) -> Self {
        self.inbox_capacity = entries;
        self
    }

    /// Sets [`ConformanceConfig::timeline_capacity`].
    #[must_use]
    pub fn with_timeline_capacity(mut self, messages: Option<usize>) -> Self {
        self.timeline_capacity = messages;
        self
    }
}

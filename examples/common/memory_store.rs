//! The in-memory store's bounds as command-line flags, shared by the
//! starter servers (`#[path]`-included: copy this file along with a
//! starter).
//!
//! The store keeps everything in the process's memory, so each bound is on
//! by default; `0` lifts one. What a bound drops is flagged to clients, not
//! skipped: a `Pull` reports where history starts (`history_start_seq`), a
//! `Sync` past lost entries or messages asks for a full sync.

use im_engine::store_memory::{MemoryStore, MemoryStoreConfig};

/// Bounds of the in-memory store.
#[derive(Debug, Clone, clap::Args)]
pub struct MemoryStoreArgs {
    /// Bytes of messages the in-memory store keeps across all conversations
    /// (bodies, ids and ~260 bytes of overhead each; suffix K, M or G for
    /// KiB, MiB, GiB); past it the oldest messages are dropped. 0: no limit.
    #[arg(long, env = "IM_STORE_MAX_BYTES", default_value = "256M", value_parser = parse_bytes)]
    pub store_max_bytes: usize,
    /// Messages the in-memory store keeps per conversation (the newest).
    /// 0: no limit.
    #[arg(long, env = "IM_STORE_CONVERSATION_MESSAGES", default_value_t = 10_000)]
    pub store_conversation_messages: usize,
    /// Entries the in-memory store keeps per user inbox; a device further
    /// behind is told to do a full sync.
    #[arg(long, env = "IM_STORE_INBOX_ENTRIES", default_value_t = 10_000)]
    pub store_inbox_entries: usize,
}

impl MemoryStoreArgs {
    /// The store configuration the flags describe.
    pub fn config(&self) -> MemoryStoreConfig {
        let bound = |n: usize| (n > 0).then_some(n);
        MemoryStoreConfig::default()
            .with_max_total_bytes(bound(self.store_max_bytes))
            .with_timeline_capacity(bound(self.store_conversation_messages))
            .with_inbox_capacity(self.store_inbox_entries)
    }

    /// An empty store with these bounds, which it logs.
    pub fn open(&self) -> MemoryStore {
        let config = self.config();
        let or_unbounded =
            |n: Option<usize>| n.map_or_else(|| "unbounded".to_owned(), |n| n.to_string());
        tracing::info!(
            max_total_bytes = %or_unbounded(config.max_total_bytes),
            messages_per_conversation = %or_unbounded(config.timeline_capacity),
            inbox_entries = config.inbox_capacity,
            "store: in memory (everything is lost on exit; older history is dropped past these bounds)"
        );
        MemoryStore::with_config(config)
    }
}

/// A byte count: digits, optionally followed by K, M or G (binary units,
/// with or without `iB`/`B`).
fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: usize = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number of bytes, e.g. 268435456 or 256M"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        other => return Err(format!("{s:?}: unknown unit {other:?} (K, M or G)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?}: too large"))
}

//! Memory bounds: fill the store past its retention, then read from the
//! start: whatever was dropped must be flagged, never silently missing.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use im_transport_tcp::client::{Client, direct};

use super::siege::verdict;
use super::{Tokens, bump, counts, default_prefix, describe};

/// Settings of [`memory_bounds`].
///
/// Sockets: 1. Time: the sends (`request_timeout` each at worst,
/// `in_flight` at once), then at most `max_pages` pulls and syncs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MemoryBoundsConfig {
    /// Prefix of the users' ids (one sender, `conversations` peers).
    pub user_prefix: String,
    /// Direct chats the messages are spread over, round robin. Default 4.
    pub conversations: usize,
    /// Messages sent. Default 2,000.
    pub messages: usize,
    /// Body bytes of each message (keep it within the deployment's body
    /// limit; the engine's default is 64 KiB). Default 1 KiB.
    pub body_bytes: usize,
    /// Sends in flight at once. Default 32.
    pub in_flight: usize,
    /// Messages asked per pull (0: the server's page size). Default 0.
    pub pull_limit: u32,
    /// Most pulls per conversation, and most syncs. Default 10,000.
    pub max_pages: usize,
    /// Longest any one request may wait for its answer. Default 10 s.
    pub request_timeout: Duration,
}

impl Default for MemoryBoundsConfig {
    fn default() -> Self {
        Self {
            user_prefix: default_prefix("memory"),
            conversations: 4,
            messages: 2_000,
            body_bytes: 1024,
            in_flight: 32,
            pull_limit: 0,
            max_pages: 10_000,
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl MemoryBoundsConfig {
    /// Sets [`MemoryBoundsConfig::messages`] and
    /// [`MemoryBoundsConfig::body_bytes`].
    #[must_use]
    pub fn with_messages(mut self, messages: usize, body_bytes: usize) -> Self {
        self.messages = messages;
        self.body_bytes = body_bytes;
        self
    }

    /// Sets [`MemoryBoundsConfig::conversations`].
    #[must_use]
    pub fn with_conversations(mut self, n: usize) -> Self {
        self.conversations = n.max(1);
        self
    }
}

/// What one conversation retained, as a pull from the start saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConversationRetention {
    /// The peer of the direct chat.
    pub peer: String,
    /// Sends acked into it.
    pub acked: usize,
    /// Its head when pulled.
    pub head_seq: u64,
    /// The first message a pull from the start returned (`None`: none).
    pub first_retained_seq: Option<u64>,
    /// Messages the pulls returned.
    pub retained: usize,
    /// The largest `history_start_seq` a pull answered (0: none).
    pub history_start_seq: u64,
}

impl ConversationRetention {
    /// Messages no longer retained (`acked - retained`).
    pub fn dropped(&self) -> usize {
        self.acked.saturating_sub(self.retained)
    }
}

/// What [`memory_bounds`] measured.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct MemoryBoundsReport {
    /// Messages sent.
    pub sent: usize,
    /// Messages acked.
    pub acked: usize,
    /// Why the others failed, counted.
    pub failed: BTreeMap<String, usize>,
    /// Body bytes acked.
    pub bytes_acked: usize,
    /// Each conversation as a pull from the start saw it.
    pub conversations: Vec<ConversationRetention>,
    /// Inbox entries a sync from version 0 returned.
    pub sync_entries: usize,
    /// The inbox version the last sync reported.
    pub inbox_version: u64,
    /// A sync answered `full_sync_required`.
    pub full_sync_required: bool,
    /// Pulls and syncs that failed, counted.
    pub read_errors: BTreeMap<String, usize>,
    /// Missing messages or inbox entries nothing flagged: the failures.
    pub silent_gaps: Vec<String>,
    /// The whole run.
    pub elapsed: Duration,
}

impl MemoryBoundsReport {
    /// Messages retained over all conversations.
    pub fn retained(&self) -> usize {
        self.conversations.iter().map(|c| c.retained).sum()
    }

    /// The store dropped some of the oldest messages (and, if the report
    /// passes, flagged it).
    pub fn oldest_dropped(&self) -> bool {
        self.conversations.iter().any(|c| c.dropped() > 0)
    }

    /// What missed (empty: passed): no silent gap, every send acked, every
    /// read answered.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.acked != self.sent {
            out.push(format!(
                "{} of {} sends failed ({})",
                self.sent - self.acked,
                self.sent,
                counts(&self.failed)
            ));
        }
        if !self.read_errors.is_empty() {
            out.push(format!("reads failed: {}", counts(&self.read_errors)));
        }
        if !self.silent_gaps.is_empty() {
            out.push(format!(
                "{} silent gaps: {}",
                self.silent_gaps.len(),
                self.silent_gaps
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        out
    }

    /// Panics with the report and what missed.
    pub fn check(&self) {
        if !self.failures().is_empty() {
            panic!(
                "memory bounds failed: {}\n{self}",
                self.failures().join("; ")
            );
        }
    }

    /// Panics unless the store dropped some of the oldest messages: for a
    /// run sized past the deployment's retention, where "nothing dropped"
    /// means the bound did not hold.
    pub fn assert_oldest_dropped(&self) {
        if !self.oldest_dropped() {
            panic!("memory bounds: the store kept every message\n{self}");
        }
    }
}

impl fmt::Display for MemoryBoundsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "memory bounds ({:.1?}):", self.elapsed)?;
        writeln!(
            f,
            "  sent {} messages, {} acked ({} body bytes; failed: {}); retained {}, dropped {}",
            self.sent,
            self.acked,
            self.bytes_acked,
            counts(&self.failed),
            self.retained(),
            self.acked.saturating_sub(self.retained()),
        )?;
        for c in &self.conversations {
            writeln!(
                f,
                "    {}: head {}, first retained {}, {} retained, {} dropped, history_start_seq {}",
                c.peer,
                c.head_seq,
                c.first_retained_seq
                    .map_or_else(|| "none".to_owned(), |s| s.to_string()),
                c.retained,
                c.dropped(),
                c.history_start_seq,
            )?;
        }
        writeln!(
            f,
            "  sync from 0: {} entries, inbox version {}, full_sync_required {}",
            self.sync_entries, self.inbox_version, self.full_sync_required
        )?;
        writeln!(f, "  silent gaps: {}", self.silent_gaps.len())?;
        write!(f, "  verdict: {}", verdict(&self.failures()))
    }
}

/// Memory bounds: one user sends `messages` messages of `body_bytes` bytes
/// into `conversations` direct chats, then pulls each chat from seq 0 to
/// its head and syncs its inbox from version 0. The deployment's store
/// decides what it retains; the report says what was seen (bytes acked,
/// first retained seq, `history_start_seq`, `full_sync_required`) and lists
/// every silent gap: a missing message or inbox entry that no
/// `history_start_seq` or `full_sync_required` accounts for.
///
/// Fds: 1.
///
/// # Panics
///
/// If the sender cannot log in within `request_timeout`.
pub async fn memory_bounds(
    addr: SocketAddr,
    tokens: impl Fn(&str) -> String + Send + Sync + 'static,
    cfg: MemoryBoundsConfig,
) -> MemoryBoundsReport {
    let tokens: Tokens = Arc::new(tokens);
    let started = Instant::now();
    let sender = format!("{}-sender", cfg.user_prefix);
    let peers: Vec<String> = (0..cfg.conversations.max(1))
        .map(|i| format!("{}-peer-{i}", cfg.user_prefix))
        .collect();
    let mut client = tokio::time::timeout(
        cfg.request_timeout,
        Client::connect(addr, &tokens(&sender), "faults"),
    )
    .await
    .unwrap_or_else(|_| panic!("{sender} could not log in in time"))
    .unwrap_or_else(|e| panic!("{sender} could not log in: {e}"));
    client.timeout = cfg.request_timeout;
    let client = &client;

    let mut report = MemoryBoundsReport {
        sent: cfg.messages,
        ..Default::default()
    };
    let body = vec![b'm'; cfg.body_bytes];
    let peers_ref = &peers;
    let results: Vec<_> = futures::stream::iter(0..cfg.messages)
        .map(|k| {
            let conv = k % peers_ref.len();
            let (peer, body) = (&peers_ref[conv], body.clone());
            async move {
                let r = client.send(direct(peer), &format!("m{k}"), body).await;
                (conv, r.map_err(|e| describe(&e)))
            }
        })
        .buffer_unordered(cfg.in_flight.max(1))
        .collect()
        .await;
    let mut acked = vec![0; peers.len()];
    for (conv, r) in results {
        match r {
            Ok(_) => {
                report.acked += 1;
                report.bytes_acked += cfg.body_bytes;
                acked[conv] += 1;
            }
            Err(why) => bump(&mut report.failed, why),
        }
    }

    for (peer, acked) in peers.iter().zip(acked) {
        let mut c = ConversationRetention {
            peer: peer.clone(),
            acked,
            ..Default::default()
        };
        walk_conversation(client, &cfg, &mut c, &mut report).await;
        report.conversations.push(c);
    }
    walk_inbox(client, &cfg, &mut report).await;
    report.elapsed = started.elapsed();
    report
}

/// Pulls a conversation from the start, page by page, checking that each
/// page continues where the last one ended or says where history starts.
async fn walk_conversation(
    client: &Client,
    cfg: &MemoryBoundsConfig,
    c: &mut ConversationRetention,
    report: &mut MemoryBoundsReport,
) {
    let conv = direct(&c.peer);
    let mut expect = 1u64;
    for _ in 0..cfg.max_pages {
        let page = match client
            .pull(conv.clone(), expect - 1, 0, cfg.pull_limit)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                bump(&mut report.read_errors, format!("pull: {}", describe(&e)));
                return;
            }
        };
        c.head_seq = c.head_seq.max(page.head_seq);
        if page.history_start_seq > expect {
            c.history_start_seq = c.history_start_seq.max(page.history_start_seq);
            expect = page.history_start_seq;
        }
        for m in &page.messages {
            if m.seq != expect {
                report.silent_gaps.push(format!(
                    "{}: expected seq {expect}, got {} (history_start_seq {})",
                    c.peer, m.seq, page.history_start_seq
                ));
            }
            c.first_retained_seq.get_or_insert(m.seq);
            c.retained += 1;
            expect = m.seq + 1;
        }
        if !page.has_more || page.messages.is_empty() {
            break;
        }
    }
    if expect <= c.head_seq {
        report.silent_gaps.push(format!(
            "{}: seqs {expect}..={} missing, not flagged",
            c.peer, c.head_seq
        ));
    }
}

/// Syncs the inbox from version 0, checking that versions are continuous
/// and every entry's message came with it, unless `full_sync_required`.
async fn walk_inbox(client: &Client, cfg: &MemoryBoundsConfig, report: &mut MemoryBoundsReport) {
    let mut version = 0u64;
    for _ in 0..cfg.max_pages {
        let page = match client.sync(version).await {
            Ok(p) => p,
            Err(e) => {
                bump(&mut report.read_errors, format!("sync: {}", describe(&e)));
                return;
            }
        };
        report.inbox_version = page.inbox_version;
        report.full_sync_required |= page.full_sync_required;
        let delivered: HashSet<(String, u64)> = page
            .messages
            .iter()
            .map(|m| {
                let id = m.conversation.as_ref().map_or("", |c| c.id.as_str());
                (id.to_owned(), m.seq)
            })
            .collect();
        for e in &page.entries {
            if e.version != version + 1 && !page.full_sync_required {
                report.silent_gaps.push(format!(
                    "inbox: expected version {}, got {}",
                    version + 1,
                    e.version
                ));
            }
            let id = e.conversation.as_ref().map_or("", |c| c.id.as_str());
            if !delivered.contains(&(id.to_owned(), e.seq)) && !page.full_sync_required {
                report.silent_gaps.push(format!(
                    "inbox: entry {} ({id} seq {}) came without its message",
                    e.version, e.seq
                ));
            }
            version = e.version;
            report.sync_entries += 1;
        }
        if !page.has_more || page.entries.is_empty() {
            break;
        }
    }
    if version < report.inbox_version && !report.full_sync_required {
        report.silent_gaps.push(format!(
            "inbox: versions {}..={} missing, not flagged",
            version + 1,
            report.inbox_version
        ));
    }
}

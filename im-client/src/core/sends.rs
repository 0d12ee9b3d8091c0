//! Sends not yet acknowledged: resent with the same `client_msg_id` on every
//! connection until a `SendAck` or a non-retryable error. Pure.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::key::ConversationKey;

/// One send waiting for its `SendAck`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSend {
    /// The id the server deduplicates by.
    pub client_msg_id: String,
    /// Where it goes.
    pub conversation: ConversationKey,
    /// The payload.
    pub body: Bytes,
    /// Times it was written to a connection.
    pub attempts: u32,
}

/// Where a pending send stands on the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Not written on this connection yet (or to be retried).
    Waiting,
    /// Written with this request id; the answer is awaited.
    InFlight(u64),
    /// A retryable error came back; written again at the next retry tick.
    Backoff,
}

/// The queue of unacknowledged sends, in the order they were made.
#[derive(Debug, Default)]
pub struct PendingSends {
    next: u64,
    queue: BTreeMap<u64, (PendingSend, Slot)>,
    by_request: HashMap<u64, u64>,
    ids: HashMap<String, u64>,
}

impl PendingSends {
    /// Sends not yet acknowledged.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether a send with this id is pending.
    pub fn contains(&self, client_msg_id: &str) -> bool {
        self.ids.contains_key(client_msg_id)
    }

    /// Queues a send (not yet written).
    pub fn push(&mut self, send: PendingSend) {
        let key = self.next;
        self.next += 1;
        self.ids.insert(send.client_msg_id.clone(), key);
        self.queue.insert(key, (send, Slot::Waiting));
    }

    /// Sends waiting to be written, oldest first; `request_id` gives each
    /// the request id it is written with.
    pub fn take_waiting(&mut self, mut request_id: impl FnMut() -> u64) -> Vec<(u64, PendingSend)> {
        let mut out = Vec::new();
        for (key, (send, slot)) in &mut self.queue {
            if *slot == Slot::Waiting {
                let id = request_id();
                *slot = Slot::InFlight(id);
                send.attempts += 1;
                self.by_request.insert(id, *key);
                out.push((id, send.clone()));
            }
        }
        out
    }

    /// The answer to `request_id` arrived: the send is done (acked or
    /// refused for good).
    pub fn finish(&mut self, request_id: u64) -> Option<PendingSend> {
        let key = self.by_request.remove(&request_id)?;
        let (send, _) = self.queue.remove(&key)?;
        self.ids.remove(&send.client_msg_id);
        Some(send)
    }

    /// A retryable error answered `request_id`: write it again after a pause.
    pub fn back_off(&mut self, request_id: u64) -> bool {
        let Some(key) = self.by_request.remove(&request_id) else {
            return false;
        };
        if let Some((_, slot)) = self.queue.get_mut(&key) {
            *slot = Slot::Backoff;
        }
        true
    }

    /// Whether any send waits for a retry tick.
    pub fn has_backoff(&self) -> bool {
        self.queue.values().any(|(_, s)| *s == Slot::Backoff)
    }

    /// The retry tick: sends that backed off become waiting again.
    pub fn retry_backed_off(&mut self) {
        for (_, slot) in self.queue.values_mut() {
            if *slot == Slot::Backoff {
                *slot = Slot::Waiting;
            }
        }
    }

    /// The connection is gone: every unacknowledged send is written again
    /// on the next one.
    pub fn connection_lost(&mut self) {
        self.by_request.clear();
        for (_, slot) in self.queue.values_mut() {
            *slot = Slot::Waiting;
        }
    }

    /// Pending sends, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &PendingSend> {
        self.queue.values().map(|(s, _)| s)
    }
}

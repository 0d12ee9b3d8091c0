//! Forwarding a send to its conversation's owner: what crosses (a send, its
//! outcome) and the pure decisions — where a send is committed ([`route`])
//! and how queued forwards are grouped into bus messages ([`plan_batches`]).
//!
//! The owner is advice for routing, never the safety argument: whichever
//! node commits a send, its append is checked against the store's head, so
//! two nodes that both believe they own a conversation interleave their
//! appends (each retries a seq conflict from the store's head) and never
//! fork or gap its timeline. See "One writer per conversation" in
//! `ARCHITECTURE.md`.

use bytes::Bytes;

use crate::content::{ContentType, MessageEvent};
use crate::error::{EngineError, StoreError};
use crate::ids::{ConversationId, DeviceId, MessageId, Seq, UserId};
use crate::pb;

use super::{NodeId, owner};

/// A send on its way to the conversation's owner: everything the owner's
/// commit path needs, nothing about where the answer goes (the origin keeps
/// that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedSend {
    /// Where the message goes.
    pub conversation: ConversationId,
    /// Who sends it.
    pub sender: UserId,
    /// From which device.
    pub device: DeviceId,
    /// The idempotency key: a resend with the same key lands once.
    pub client_msg_id: Option<String>,
    /// The opaque body.
    pub body: Bytes,
    /// How to read the body.
    pub content_type: ContentType,
    /// For a recall or an edit, the change (checked by the store at commit).
    pub event: Option<MessageEvent>,
    /// False for host sends, which may send anywhere.
    pub check_membership: bool,
}

/// A forwarded send the owner committed (or had committed before: a retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedAck {
    /// The message's seq.
    pub seq: Seq,
    /// The message's id.
    pub message_id: MessageId,
    /// Commit time, milliseconds since the Unix epoch.
    pub server_time_ms: i64,
    /// True if this was a retry of an already committed message.
    pub duplicate: bool,
}

/// Why a forwarded send was not committed, as the client will be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardError {
    /// The error code.
    pub code: pb::ErrorCode,
    /// What happened.
    pub message: String,
    /// True if the same send may succeed when resent (same `client_msg_id`).
    pub retryable: bool,
}

/// The outcome of one forwarded send.
pub type ForwardResult = Result<ForwardedAck, ForwardError>;

impl ForwardError {
    /// A retryable `UNAVAILABLE`: the owner did not answer (it died, the bus
    /// is away, it is leaving). The send may or may not have committed; a
    /// resend with the same `client_msg_id` lands exactly once.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            code: pb::ErrorCode::Unavailable,
            message: message.into(),
            retryable: true,
        }
    }

    /// The error the owner's engine answered, as it travels back. A
    /// shutting-down owner is a retryable `UNAVAILABLE` to the origin:
    /// ownership moves on and the resend lands elsewhere.
    pub fn from_engine(err: &EngineError) -> Self {
        if matches!(err, EngineError::ShuttingDown) {
            return Self::unavailable("the owner node is shutting down");
        }
        Self {
            code: crate::engine::error_code(err),
            message: err.to_string(),
            retryable: err.is_retryable(),
        }
    }

    /// The engine error the origin answers with: the same code and retry
    /// flag the owner decided on.
    pub fn into_engine_error(self) -> EngineError {
        let Self {
            code,
            message,
            retryable,
        } = self;
        match code {
            pb::ErrorCode::NotFound => EngineError::Store(StoreError::NotFound(message)),
            pb::ErrorCode::InvalidArgument => EngineError::InvalidRequest(message),
            pb::ErrorCode::Forbidden => EngineError::Forbidden(message),
            pb::ErrorCode::RateLimited => EngineError::RateLimited(message),
            pb::ErrorCode::Blocked => EngineError::Blocked(message),
            pb::ErrorCode::Muted => EngineError::Muted(message),
            _ if retryable => EngineError::Store(StoreError::Unavailable(message.into())),
            _ => EngineError::Store(StoreError::Backend {
                source: message.into(),
                retryable: false,
            }),
        }
    }
}

/// Where a send is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// On this node.
    Here,
    /// On this other node, its owner.
    Forward(NodeId),
}

/// Where a send to the conversation with store key `key` is committed, as
/// `me` sees the live nodes `live`: here when this node owns it (or knows
/// of no live node), else forwarded to the owner.
pub fn route(key: &str, live: &[NodeId], me: &NodeId) -> Route {
    match owner(key, live) {
        Some(o) if o != me => Route::Forward(o.clone()),
        _ => Route::Here,
    }
}

/// How large one bus message of forwarded sends may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Sends per batch (at least 1).
    pub max_sends: usize,
    /// Bytes per batch; a single send larger than this travels alone.
    pub max_bytes: usize,
}

/// Groups queued forwards, in arrival order, into batches of one owner
/// each: every item lands in exactly one batch; a batch holds at most
/// `max_sends` items and `max_bytes` bytes (an item larger alone); one
/// owner's items keep their order across its batches, and batches come in
/// the order of their first item. Items are `(owner, size in bytes, item)`.
pub fn plan_batches<T>(
    items: impl IntoIterator<Item = (NodeId, usize, T)>,
    limits: BatchLimits,
) -> Vec<(NodeId, Vec<T>)> {
    let max_sends = limits.max_sends.max(1);
    // The open batch of each owner: (index in `out`, bytes so far).
    let mut open: Vec<(NodeId, usize, usize)> = Vec::new();
    let mut out: Vec<(NodeId, Vec<T>)> = Vec::new();
    for (node, size, item) in items {
        let slot = open.iter().position(|(n, _, _)| *n == node);
        let fits = slot.is_some_and(|i| {
            let (_, at, bytes) = open[i];
            out[at].1.len() < max_sends && bytes.saturating_add(size) <= limits.max_bytes
        });
        match (slot, fits) {
            (Some(i), true) => {
                let (_, at, bytes) = &mut open[i];
                out[*at].1.push(item);
                *bytes += size;
            }
            (slot, _) => {
                let entry = (node.clone(), out.len(), size);
                match slot {
                    Some(i) => open[i] = entry,
                    None => open.push(entry),
                }
                out.push((node, vec![item]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(i: u8) -> NodeId {
        NodeId::new(format!("n{i}")).expect("valid")
    }

    #[test]
    fn a_node_commits_what_it_owns_and_forwards_the_rest() {
        let live = vec![node(0), node(1), node(2)];
        let mut seen = [0; 3];
        for k in 0..300 {
            let key = format!("g:g{k}");
            let owner = owner(&key, &live).expect("live").clone();
            for (i, me) in live.iter().enumerate() {
                match route(&key, &live, me) {
                    Route::Here => {
                        assert_eq!(*me, owner);
                        seen[i] += 1;
                    }
                    Route::Forward(to) => assert_eq!(to, owner),
                }
            }
        }
        assert!(seen.iter().all(|n| *n > 0), "{seen:?}");
        assert_eq!(route("g:x", &[], &node(0)), Route::Here, "alone: here");
    }

    #[test]
    fn errors_keep_their_code_and_retry_flag_across_nodes() {
        let cases = [
            EngineError::Forbidden("not a member".into()),
            EngineError::InvalidRequest("too big".into()),
            EngineError::RateLimited("slow down".into()),
            EngineError::Blocked("bob does not accept direct messages from you".into()),
            EngineError::Muted("muted in g:team until unmuted".into()),
            EngineError::Store(StoreError::NotFound("group g".into())),
            EngineError::Store(StoreError::Timeout),
            EngineError::Store(StoreError::Backend {
                source: "disk".into(),
                retryable: false,
            }),
        ];
        for e in cases {
            let there = ForwardError::from_engine(&e);
            let back = there.clone().into_engine_error();
            assert_eq!(there.code, crate::engine::error_code(&e), "{e}");
            assert_eq!(crate::engine::error_code(&back), there.code, "{e}");
            assert_eq!(back.is_retryable(), e.is_retryable(), "{e}");
        }
        let leaving = ForwardError::from_engine(&EngineError::ShuttingDown);
        assert!(leaving.retryable);
        assert_eq!(leaving.code, pb::ErrorCode::Unavailable);
    }

    proptest! {
        /// Every queued forward is in exactly one batch, of its own owner,
        /// within the limits, and each owner's forwards keep their order.
        #[test]
        fn batches_hold_each_forward_once_per_owner_in_order_within_limits(
            items in proptest::collection::vec((0u8..4, 0usize..300), 0..200),
            max_sends in 1usize..20,
            max_bytes in 1usize..1000,
        ) {
            let limits = BatchLimits { max_sends, max_bytes };
            let queued: Vec<(NodeId, usize, usize)> = items
                .iter()
                .enumerate()
                .map(|(i, (n, size))| (node(*n), *size, i))
                .collect();
            let batches = plan_batches(queued.clone(), limits);
            let mut placed: Vec<usize> = Vec::new();
            for (owner, batch) in &batches {
                prop_assert!(!batch.is_empty());
                prop_assert!(batch.len() <= max_sends);
                let bytes: usize = batch.iter().map(|i| queued[*i].1).sum();
                prop_assert!(bytes <= max_bytes || batch.len() == 1, "{} bytes", bytes);
                for i in batch {
                    prop_assert_eq!(&queued[*i].0, owner);
                }
                placed.extend(batch);
            }
            let mut sorted = placed.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..queued.len()).collect::<Vec<_>>(), "each once");
            for n in 0u8..4 {
                let of: Vec<usize> = placed.iter().copied().filter(|i| queued[*i].0 == node(n)).collect();
                prop_assert!(of.windows(2).all(|w| w[0] < w[1]), "order of {:?}", n);
            }
            let firsts: Vec<usize> = batches.iter().map(|(_, b)| b[0]).collect();
            prop_assert!(firsts.windows(2).all(|w| w[0] < w[1]), "batches in arrival order");
        }
    }
}

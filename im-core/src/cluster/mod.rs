//! Pure building blocks of a cluster of engine processes ("nodes"): who is
//! alive ([`LiveNodes`]) and which live node owns a conversation
//! ([`owner`]). No IO here: a bus adapter (such as `im-cluster-nats`) feeds
//! [`LiveNodes`] with what it hears and asks [`owner`] where to route.
//!
//! Ownership is advice for routing, never the safety argument: two nodes
//! that briefly both believe they own a conversation (one has not yet seen a
//! membership change) cannot fork its timeline, because every append is
//! checked against the store's head ([`Timeline::append`] fails with a
//! conflict when the first seq is not head + 1).
//!
//! [`Timeline::append`]: crate::store::Timeline::append

mod bus;
mod forward;
mod liveness;
mod order;
mod ownership;

pub use bus::{ClusterBus, ClusterInbound, Control, ForwardedOutcomes, Inbound, Interest};
pub use forward::{
    BatchLimits, ForwardError, ForwardResult, ForwardedAck, ForwardedSend, Route, plan_batches,
    route,
};
pub use liveness::{LiveNodes, MembershipChange};
pub(crate) use order::{Admit, admit};
pub use ownership::{owner, owner_weight};

use std::fmt;
use std::sync::Arc;

/// One engine process of a cluster, named by the host (e.g. `node-a` or a
/// pod name). 1..=64 bytes of ASCII letters, digits, `-` and `_`, so it can
/// stand in a bus subject.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

/// True if `s` can stand as one token of a bus subject and as a node or
/// cluster name: 1 to 64 ASCII letters, digits, `-` or `_`.
pub fn is_subject_token(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Why a string is not a [`NodeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node id {0:?}: use 1 to 64 ASCII letters, digits, '-' or '_'")]
pub struct InvalidNodeId(pub String);

impl NodeId {
    /// Validates and wraps `s`.
    pub fn new(s: impl AsRef<str>) -> Result<Self, InvalidNodeId> {
        let s = s.as_ref();
        if is_subject_token(s) {
            Ok(Self(Arc::from(s)))
        } else {
            Err(InvalidNodeId(s.to_owned()))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_short_subject_safe_tokens() {
        assert!(NodeId::new("node-a_1").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", "é", &"x".repeat(65)] {
            assert!(NodeId::new(bad).is_err(), "{bad:?} must be refused");
        }
    }
}

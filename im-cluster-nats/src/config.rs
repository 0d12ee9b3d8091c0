//! How a node joins a cluster.

use std::time::Duration;

use im_core::cluster::{NodeId, is_subject_token};

use crate::ClusterError;

/// Where the cluster's NATS is, what the cluster is called and who this
/// node is, with the membership timings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub(crate) url: String,
    pub(crate) cluster: String,
    pub(crate) node: NodeId,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) node_timeout: Duration,
    pub(crate) node_index: u16,
    pub(crate) forward_timeout: Duration,
}

impl ClusterConfig {
    /// A node `node` of cluster `cluster` on the NATS server at `url`,
    /// heartbeating every 500 ms, dropping peers silent for 3 s, and
    /// waiting 3 s for an owner to answer a forwarded send.
    pub fn new(
        url: impl Into<String>,
        cluster: impl Into<String>,
        node: NodeId,
    ) -> Result<Self, ClusterError> {
        let cluster = cluster.into();
        if !is_subject_token(&cluster) {
            return Err(ClusterError::InvalidClusterName(cluster));
        }
        Ok(Self {
            url: url.into(),
            cluster,
            node,
            heartbeat_interval: Duration::from_millis(500),
            node_timeout: Duration::from_secs(3),
            node_index: 0,
            forward_timeout: Duration::from_secs(3),
        })
    }

    /// How often this node says it is alive.
    pub fn with_heartbeat_interval(mut self, every: Duration) -> Self {
        self.heartbeat_interval = every.max(Duration::from_millis(10));
        self
    }

    /// How long a silent peer stays in the live set. Keep it several
    /// heartbeat intervals long so one lost heartbeat does not evict a node.
    pub fn with_node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// This node's index in message ids: the same as its engine's
    /// `EngineConfig::node_index`, different on every node. Joining fails
    /// if a live node already uses it.
    pub fn with_node_index(mut self, index: u16) -> Self {
        self.node_index = index;
        self
    }

    /// How long a send forwarded to its conversation's owner waits for the
    /// owner's answer before the client is told to resend (a retryable
    /// `UNAVAILABLE`; the resend with the same `client_msg_id` lands once).
    /// Default 3 s: about the node timeout, so a dead owner's sends fail
    /// while the cluster notices it died.
    pub fn with_forward_timeout(mut self, timeout: Duration) -> Self {
        self.forward_timeout = timeout;
        self
    }

    /// This node.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The subject heartbeats travel on.
    pub(crate) fn alive_subject(&self) -> String {
        format!("im.{}.node.alive", self.cluster)
    }

    /// The subject goodbyes travel on.
    pub(crate) fn left_subject(&self) -> String {
        format!("im.{}.node.left", self.cluster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_name_must_fit_in_a_subject() {
        let node = NodeId::new("n1").expect("valid");
        assert!(ClusterConfig::new("nats://x", "chat-1", node.clone()).is_ok());
        for bad in ["", "a.b", "a*", "a >"] {
            assert!(matches!(
                ClusterConfig::new("nats://x", bad, node.clone()),
                Err(ClusterError::InvalidClusterName(_))
            ));
        }
    }
}

//! Errors of the NATS cluster adapter.

use im_core::cluster::NodeId;

/// What went wrong joining or running a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The cluster name cannot stand in a NATS subject.
    #[error("invalid cluster name {0:?}: use 1 to 64 ASCII letters, digits, '-' or '_'")]
    InvalidClusterName(String),
    /// The NATS server could not be reached at start.
    #[error("cannot connect to NATS at {url}: {source} (is nats-server running there?)")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why it failed.
        #[source]
        source: async_nats::ConnectError,
    },
    /// Another live node already uses this node's index in message ids.
    #[error(
        "node index {index} is already used by live node {holder}: give every node of \
         the cluster its own index (0 to 63)"
    )]
    NodeIndexTaken {
        /// The index asked for.
        index: u16,
        /// The live node that has it.
        holder: NodeId,
    },
    /// Subscribing to the membership subjects failed.
    #[error("cannot subscribe to {subject} on NATS at {url}: {source}")]
    Subscribe {
        /// The URL of the server.
        url: String,
        /// The subject.
        subject: String,
        /// Why it failed.
        #[source]
        source: async_nats::SubscribeError,
    },
    /// NATS did not confirm the first subscriptions.
    #[error("NATS at {url} did not answer a flush: {source}")]
    Flush {
        /// The URL of the server.
        url: String,
        /// Why it failed.
        #[source]
        source: async_nats::client::FlushError,
    },
}

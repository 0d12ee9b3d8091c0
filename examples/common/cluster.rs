//! `--cluster`: join other starter-server processes over NATS so they serve
//! as one (they must share one PostgreSQL store). Shared by the starter
//! servers (`#[path]`-included: copy this file along with a starter).

use im_engine::core::{Engine, EngineBuilder, EngineConfig};

use super::store::{OpenedStore, StoreArgs};

/// A starter's engine and what it runs on.
#[allow(dead_code)] // loadgen builds its engine itself
pub struct Started {
    /// The engine (development authentication).
    pub engine: Engine,
    /// The store the flags chose.
    pub store: OpenedStore,
    /// Its place in the cluster; `leave` it on shutdown.
    pub node: ClusterNode,
}

/// Joins the cluster the flags name (if any), opens the store they chose
/// and builds an engine with development authentication and `config` on
/// both; `server` names the program in errors.
#[allow(dead_code)] // loadgen builds its engine itself
pub async fn start_dev_engine(
    server: &str,
    store: &StoreArgs,
    cluster: &ClusterArgs,
    mut config: EngineConfig,
) -> Result<Started, Box<dyn std::error::Error>> {
    cluster.configure(&mut config);
    let node = cluster.join(server, store.is_shared()).await?;
    let opened = store.open(server).await?;
    let builder = Engine::builder(opened.store())
        .config(config)
        .insecure_dev_auth();
    let engine = node.wire(builder).build()?;
    Ok(Started {
        engine,
        store: opened,
        node,
    })
}

/// Cluster options.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Join a cluster over the NATS server at this URL (e.g.
    /// nats://127.0.0.1:4222). Needs --postgres: the nodes share the store.
    #[arg(long = "cluster", env = "IM_CLUSTER", value_name = "NATS_URL")]
    pub url: Option<String>,
    /// The cluster's name: several clusters can share one NATS.
    #[arg(long, env = "IM_CLUSTER_NAME", default_value = "im")]
    pub cluster_name: String,
    /// This node's name in the cluster (letters, digits, '-', '_').
    #[arg(long, env = "IM_NODE_ID")]
    pub node_id: Option<String>,
    /// This node's index in message ids, 0 to 63, different on every node
    /// (joining fails if a live node has it).
    #[arg(long, env = "IM_NODE_INDEX", default_value_t = 0)]
    pub node_index: u16,
}

impl ClusterArgs {
    /// Puts this node's index (part of every message id) in `config`.
    pub fn configure(&self, config: &mut EngineConfig) {
        config.node_index = self.node_index;
    }

    /// Joins the cluster the flags name, if any; `server` names the program
    /// in errors. Refuses `--cluster` without a shared store (`has_postgres`)
    /// and in a build without the `cluster` feature.
    pub async fn join(
        &self,
        server: &str,
        has_postgres: bool,
    ) -> Result<ClusterNode, Box<dyn std::error::Error>> {
        let Some(url) = &self.url else {
            return Ok(ClusterNode::default());
        };
        if !has_postgres {
            return Err(
                "--cluster needs --postgres: the nodes of a cluster share one store".into(),
            );
        }
        #[cfg(feature = "cluster")]
        {
            use im_engine::cluster_nats::{ClusterConfig, Membership, NatsBus};
            use im_engine::core::cluster::NodeId;
            let _ = server;
            let node = self
                .node_id
                .as_deref()
                .ok_or("--cluster needs --node-id, a name for this node unique in the cluster")?;
            let config = ClusterConfig::new(url, &self.cluster_name, NodeId::new(node)?)?
                .with_node_index(self.node_index);
            // The error names the URL (ClusterError::Connect).
            let bus = NatsBus::connect(&config).await?;
            let membership = Membership::join(config).await?;
            // Sends to a conversation another live node owns are committed there.
            bus.route_by(&membership);
            tracing::info!(nats = %url, cluster = %self.cluster_name, node, "joined the cluster");
            Ok(ClusterNode {
                joined: Some(Joined { bus, membership }),
            })
        }
        #[cfg(not(feature = "cluster"))]
        {
            let _ = url;
            Err(format!(
                "--cluster is set, but this {server} was built without clustering: \
                 run it with `--features cluster`"
            )
            .into())
        }
    }
}

/// This process's place in a cluster: none when `--cluster` is not set.
#[derive(Default)]
pub struct ClusterNode {
    #[cfg(feature = "cluster")]
    joined: Option<Joined>,
}

/// A joined cluster: the bus the engine delivers through and this node's
/// membership (heartbeats; said goodbye to on shutdown).
#[cfg(feature = "cluster")]
struct Joined {
    bus: std::sync::Arc<im_engine::cluster_nats::NatsBus>,
    membership: im_engine::cluster_nats::Membership,
}

impl ClusterNode {
    /// Delivers through the cluster's bus, if joined.
    pub fn wire(&self, builder: EngineBuilder) -> EngineBuilder {
        #[cfg(feature = "cluster")]
        if let Some(j) = &self.joined {
            return builder.cluster(j.bus.clone());
        }
        builder
    }

    /// Says goodbye, so the other nodes take over this node's conversations
    /// at once instead of after its silence.
    pub async fn leave(self) {
        #[cfg(feature = "cluster")]
        if let Some(j) = self.joined {
            j.membership.leave().await;
        }
    }
}

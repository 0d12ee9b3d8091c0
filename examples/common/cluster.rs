//! `--cluster`: join other chat-server processes over NATS so they serve
//! as one (they must share one PostgreSQL store).

/// Cluster options.
#[derive(Debug, clap::Args)]
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

/// A joined cluster: the bus the engine delivers through and this node's
/// membership (heartbeats; said goodbye to on shutdown).
#[cfg(feature = "cluster")]
pub struct Joined {
    pub bus: std::sync::Arc<im_engine::cluster_nats::NatsBus>,
    pub membership: im_engine::cluster_nats::Membership,
}

/// Joins the cluster the flags name, if any.
#[cfg(feature = "cluster")]
pub async fn join(
    args: &ClusterArgs,
    has_postgres: bool,
) -> Result<Option<Joined>, Box<dyn std::error::Error>> {
    use im_engine::cluster_nats::{ClusterConfig, Membership, NatsBus};
    use im_engine::core::cluster::NodeId;
    let Some(url) = &args.url else {
        return Ok(None);
    };
    if !has_postgres {
        return Err("--cluster needs --postgres: the nodes of a cluster share one store".into());
    }
    let node = args
        .node_id
        .as_deref()
        .ok_or("--cluster needs --node-id, a name for this node unique in the cluster")?;
    let config = ClusterConfig::new(url, &args.cluster_name, NodeId::new(node)?)?
        .with_node_index(args.node_index);
    let bus = NatsBus::connect(&config).await?;
    let membership = Membership::join(config).await?;
    tracing::info!(nats = %url, cluster = %args.cluster_name, node, "joined the cluster");
    Ok(Some(Joined { bus, membership }))
}

/// Refuses `--cluster` in a build without it.
#[cfg(not(feature = "cluster"))]
pub fn refuse(args: &ClusterArgs) -> Result<(), Box<dyn std::error::Error>> {
    if args.url.is_some() {
        return Err(
            "--cluster is set, but this chat-server was built without clustering: \
                    run it with `--features cluster`"
                .into(),
        );
    }
    Ok(())
}

//! The nodes of a throwaway cluster: `loadgen serve --cluster` processes
//! under a cluster name of their own on the NATS given, sharing a
//! PostgreSQL schema of their own (dropped at the end). Used by `cluster`
//! and `chat --cluster-nodes`.

use std::collections::HashMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{AnyError, rss_kib, spawn_serve};

/// Where the nodes find NATS and PostgreSQL.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct NodesArgs {
    /// NATS of the cluster (each run uses a cluster name of its own on it).
    #[arg(long, env = "IM_CLUSTER", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// PostgreSQL the nodes share (each run uses a schema of its own,
    /// dropped at the end).
    #[arg(
        long,
        env = "IM_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres: String,
}

/// One node: its chat and metrics addresses and its process.
pub(super) struct Node {
    /// The TCP listener clients connect to.
    pub(super) addr: SocketAddr,
    /// Its Prometheus endpoint.
    pub(super) metrics: SocketAddr,
    child: tokio::process::Child,
}

impl Node {
    /// The node's process id.
    pub(super) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The node's resident memory (KiB).
    pub(super) fn rss_kib(&self) -> Option<u64> {
        self.pid().and_then(rss_kib)
    }
}

/// The running nodes; dropping them stops them and drops the schema.
pub(super) struct Nodes {
    /// In start order: node `i` is `n{i}` with message-id index `i + 1`.
    pub(super) nodes: Vec<Node>,
    schema: String,
    postgres: String,
}

/// A port nobody listens on right now.
fn free_addr() -> Result<SocketAddr, AnyError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

impl Nodes {
    /// Starts `n` nodes, one after the other (the first creates the schema).
    pub(super) async fn start(args: &NodesArgs, n: usize) -> Result<Self, AnyError> {
        let run = format!("{}_{}", std::process::id(), free_addr()?.port());
        let mut nodes = Self {
            nodes: Vec::new(),
            schema: format!("loadgen_cluster_{run}"),
            postgres: args.postgres.clone(),
        };
        let cluster = format!("loadgen-{run}");
        for i in 0..n {
            let (addr, metrics) = (free_addr()?, free_addr()?);
            let flags = [
                ("--listen", addr.to_string()),
                ("--metrics", metrics.to_string()),
                ("--postgres", args.postgres.clone()),
                ("--pg-schema", nodes.schema.clone()),
                ("--cluster", args.nats.clone()),
                ("--cluster-name", cluster.clone()),
                ("--node-id", format!("n{i}")),
                ("--node-index", (i + 1).to_string()),
            ];
            let flags: Vec<String> = flags
                .into_iter()
                .flat_map(|(k, v)| [k.to_owned(), v])
                .collect();
            let child = spawn_serve(&flags).await?;
            nodes.nodes.push(Node {
                addr,
                metrics,
                child,
            });
        }
        eprintln!(
            "{n} node(s) up: cluster {cluster} on {}, schema {}",
            args.nats, nodes.schema
        );
        Ok(nodes)
    }

    /// The nodes' process ids.
    pub(super) fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(Node::pid).collect()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.child.start_kill();
        }
        let _ = std::process::Command::new("psql")
            .args([
                &self.postgres,
                "-qc",
                &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema),
            ])
            .env("PGOPTIONS", "--client-min-messages=warning")
            .status();
    }
}

/// The samples of a Prometheus text page, by name with labels (e.g.
/// `im_cluster_bus_published_total{kind="batch"}`).
pub(super) async fn scrape(addr: SocketAddr) -> Result<HashMap<String, f64>, AnyError> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: loadgen\r\n\r\n")
        .await?;
    let mut page = String::new();
    s.read_to_string(&mut page).await?;
    let body = page.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect())
}

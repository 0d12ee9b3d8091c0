//! A node's membership: its heartbeat, and the live set it hears.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::{Client, ConnectOptions, Subscriber};
use futures::StreamExt;
use im_core::ConversationId;
use im_core::cluster::{LiveNodes, MembershipChange, NodeId, owner};
use im_core::log_limit::LogLimit;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::heartbeat::Beat;
use crate::{ClusterConfig, ClusterError};

/// How long a goodbye may take to reach NATS before a leaving node gives up.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// This node's place in a cluster: it heartbeats while it lives and keeps the
/// live set of the cluster's nodes (itself always included).
///
/// Dropping it stops the heartbeat without a goodbye, as a crash would: the
/// other nodes drop it after their node timeout. [`Membership::leave`] says
/// goodbye so they drop it at once.
#[derive(Debug)]
pub struct Membership {
    client: Client,
    me: Beat,
    left_subject: String,
    live: watch::Receiver<Vec<NodeId>>,
    heartbeat: JoinHandle<()>,
    listener: JoinHandle<()>,
}

impl Membership {
    /// Connects to NATS and joins the cluster. Fails with the URL in the
    /// error when NATS cannot be reached; once joined, a lost NATS is
    /// reconnected to in the background (peers fall out of the live set
    /// while it is away and come back with their heartbeats).
    pub async fn join(config: ClusterConfig) -> Result<Self, ClusterError> {
        let client = ConnectOptions::new()
            .name(format!("im-engine {}", config.node))
            .max_reconnects(Option::<usize>::None)
            .connect(&config.url)
            .await
            .map_err(|source| ClusterError::Connect {
                url: config.url.clone(),
                source,
            })?;
        let subscribe = |subject: String| {
            let client = client.clone();
            let url = config.url.clone();
            async move {
                client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|source| ClusterError::Subscribe {
                        url,
                        subject,
                        source,
                    })
            }
        };
        let alive = subscribe(config.alive_subject()).await?;
        let left = subscribe(config.left_subject()).await?;
        let me = Beat {
            node: config.node.clone(),
            incarnation: incarnation(),
            index: config.node_index,
        };
        let mut nodes = LiveNodes::new(config.node_timeout);
        nodes.heard(me.node.clone(), me.incarnation, Instant::now());
        let (tx, live) = watch::channel(nodes.nodes());
        let (taken_tx, taken) = watch::channel(None);
        let watchers = Watchers {
            live: tx,
            index_taken: taken_tx,
        };
        let listener = tokio::spawn(listen(alive, left, nodes, me.clone(), watchers));
        let heartbeat = tokio::spawn(beat(
            client.clone(),
            config.alive_subject(),
            me.encode(),
            config.heartbeat_interval,
        ));
        let joined = Self {
            client,
            me,
            left_subject: config.left_subject(),
            live,
            heartbeat,
            listener,
        };
        // Hear the live nodes' heartbeats before minting any message id
        // with this index.
        tokio::time::sleep(config.heartbeat_interval * 3).await;
        let holder = taken.borrow().clone();
        if let Some(holder) = holder {
            joined.leave().await;
            return Err(ClusterError::NodeIndexTaken {
                index: config.node_index,
                holder,
            });
        }
        tracing::info!(node = %joined.me.node, url = %config.url, "joined cluster {}", config.cluster);
        Ok(joined)
    }

    /// This node.
    pub fn node(&self) -> &NodeId {
        &self.me.node
    }

    /// The live nodes, in id order (this node included).
    pub fn nodes(&self) -> Vec<NodeId> {
        self.live.borrow().clone()
    }

    /// The live set, to wait for a change.
    pub fn watch(&self) -> watch::Receiver<Vec<NodeId>> {
        self.live.clone()
    }

    /// The live node that owns `conversation` (this node if it is alone).
    pub fn owner_of(&self, conversation: &ConversationId) -> NodeId {
        let nodes = self.live.borrow();
        owner(&conversation.to_key(), &nodes)
            .cloned()
            .unwrap_or_else(|| self.me.node.clone())
    }

    /// True if this node owns `conversation`.
    pub fn owns(&self, conversation: &ConversationId) -> bool {
        self.owner_of(conversation) == self.me.node
    }

    /// Says goodbye (so peers drop this node at once) and stops.
    pub async fn leave(self) {
        self.heartbeat.abort();
        let goodbye = async {
            self.client
                .publish(self.left_subject.clone(), self.me.encode())
                .await
                .ok()?;
            self.client.flush().await.ok()
        };
        if tokio::time::timeout(GOODBYE_TIMEOUT, goodbye)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            tracing::warn!(node = %self.me.node, "leaving without a goodbye: NATS did not take it");
        }
        tracing::info!(node = %self.me.node, "left the cluster");
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.heartbeat.abort();
        self.listener.abort();
    }
}

/// This run's incarnation: nanoseconds since the Unix epoch at join, so a
/// restarted node outranks its previous run.
fn incarnation() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Publishes this node's heartbeat every `every`.
async fn beat(client: Client, subject: String, payload: bytes::Bytes, every: Duration) {
    static FAILED: LogLimit = LogLimit::per_second(1);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = client.publish(subject.clone(), payload.clone()).await
            && let Some(suppressed) = FAILED.allow()
        {
            tracing::warn!(error = %e, suppressed, "heartbeat not published");
        }
    }
}

/// What the listener keeps up to date.
struct Watchers {
    /// The live set.
    live: watch::Sender<Vec<NodeId>>,
    /// A live node other than this one that uses this node's index.
    index_taken: watch::Sender<Option<NodeId>>,
}

/// Keeps the live set from heartbeats, goodbyes and silence.
async fn listen(
    mut alive: Subscriber,
    mut left: Subscriber,
    mut nodes: LiveNodes,
    me: Beat,
    watchers: Watchers,
) {
    let mut indexes: HashMap<NodeId, u16> = HashMap::new();
    static GARBAGE: LogLimit = LogLimit::per_second(1);
    loop {
        // Just past the next expiry, so the wake-up finds the node overdue.
        let next_expiry =
            nodes.next_expiry().unwrap_or_else(Instant::now) + Duration::from_millis(1);
        let mut changes = Vec::new();
        tokio::select! {
            msg = alive.next() => match msg.map(|m| Beat::decode(&m.payload)) {
                Some(Some(b)) => {
                    indexes.insert(b.node.clone(), b.index);
                    changes.extend(nodes.heard(b.node, b.incarnation, Instant::now()));
                }
                Some(None) => if let Some(suppressed) = GARBAGE.allow() {
                    tracing::warn!(suppressed, "ignored a heartbeat that is not `<node> <incarnation>`");
                },
                None => return,
            },
            msg = left.next() => match msg.map(|m| Beat::decode(&m.payload)) {
                Some(Some(b)) if b.node != me.node || b.incarnation != me.incarnation => {
                    changes.extend(nodes.left(&b.node, b.incarnation));
                }
                Some(_) => {}
                None => return,
            },
            () = tokio::time::sleep_until(next_expiry.into()) => {}
        }
        // This node is live while it runs, whatever NATS delivers.
        let now = Instant::now();
        nodes.heard(me.node.clone(), me.incarnation, now);
        changes.extend(nodes.expire(now));
        for change in &changes {
            match change {
                MembershipChange::Joined(n) => tracing::info!(node = %me.node, "node {n} joined"),
                MembershipChange::Left(n) => tracing::info!(node = %me.node, "node {n} left"),
            }
        }
        let current = nodes.nodes();
        metrics::gauge!("im_cluster_nodes").set(current.len() as f64);
        indexes.retain(|n, _| current.contains(n));
        let holder = indexes
            .iter()
            .find(|(n, i)| **n != me.node && **i == me.index)
            .map(|(n, _)| n.clone());
        if let Some(h) = &holder
            && watchers.index_taken.borrow().as_ref() != Some(h)
        {
            tracing::error!(node = %me.node, "node {h} uses this node's index {} too: message ids may repeat", me.index);
        }
        watchers.index_taken.send_replace(holder);
        watchers.live.send_if_modified(|seen| {
            let changed = *seen != current;
            *seen = current;
            changed
        });
    }
}

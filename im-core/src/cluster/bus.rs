//! The bus seam: what crosses nodes, in the spirit of centrifuge's
//! Broker/Controller split.
//!
//! - **Batches** ([`ClusterBus::publish`]): the messages of one
//!   conversation committed together on this node, in seq order. The bus
//!   carries them to every *other* node with interested sessions, once per
//!   node, and hands them in through [`ClusterInbound::deliver`].
//! - **Interest** ([`ClusterBus::interest`]): this node now has, or no
//!   longer has, local sessions of a user, online members of a group, or
//!   members in a room. The bus uses it to know where batches must go.
//! - **Control** ([`ClusterBus::control`]): kick a user everywhere; a
//!   group's membership changed, so other nodes drop their caches and
//!   re-index their sessions.
//! - **Forwarding** ([`ClusterBus::remote_owner`], [`ClusterBus::forward`]):
//!   a send to a conversation another node owns is committed there, and its
//!   outcome comes back. A bus that does not route (the default) leaves
//!   every send to the node it arrived at.
//!
//! A single-node engine has no bus at all (the engine checks an `Option`),
//! so none of this costs it anything. The bus is at most once: a receiving
//! engine repairs gaps from the store (see `engine/cluster.rs`).

use std::fmt;

use tokio::sync::oneshot;

use super::NodeId;
use super::forward::{ForwardResult, ForwardedSend};
use crate::ids::{ChannelId, ConversationId, Seq, UserId};
use crate::store::StoredMessage;

pub use crate::engine::{ClusterInbound, ForwardedOutcomes};

/// What a node's sessions are interested in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Interest {
    /// Messages of direct chats of this user (either participant).
    User(UserId),
    /// Messages of this group.
    Group(ChannelId),
    /// Messages of this live room.
    Room(ChannelId),
}

/// A command for every node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Disconnect every session of `user` with `Kicked{BY_HOST}`.
    KickUser {
        /// Whose sessions.
        user: UserId,
        /// The reason shown to the client.
        detail: String,
    },
    /// A group's membership changed (or it was created): forget cached
    /// facts about it and index or unindex the local sessions of these users.
    GroupChanged {
        /// The group.
        group: ChannelId,
        /// Users who became members.
        added: Vec<UserId>,
        /// Users who are no longer members.
        removed: Vec<UserId>,
    },
}

/// What the bus hands in from another node.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// Committed messages of one conversation, in seq order.
    Batch(Vec<StoredMessage>),
    /// A conversation's head as its publisher last committed it: if this
    /// node delivered less, it reads the rest from the store (repairs a lost
    /// last batch).
    Head(ConversationId, Seq),
    /// A control command.
    Control(Control),
}

/// Carries what crosses nodes. Every method is called on the engine's hot
/// paths (shard workers, session connect and disconnect, under index
/// locks): never block; queue the work for a task of your own.
pub trait ClusterBus: Send + Sync + fmt::Debug + 'static {
    /// Called once by `EngineBuilder::build` with the engine's inbound side;
    /// keep it and call it for what arrives from other nodes.
    fn attach(&self, inbound: ClusterInbound);

    /// One conversation's messages committed together on this node, in seq
    /// order (never empty).
    fn publish(&self, conversation: &ConversationId, messages: &[StoredMessage]);

    /// This node's interest changed: `on` when the first local session of it
    /// appears, off when the last goes. Calls for one interest arrive in
    /// order.
    fn interest(&self, interest: Interest, on: bool);

    /// Sends a control command to every other node.
    fn control(&self, control: Control);

    /// The node that commits sends to `conversation` when that is another
    /// node (its owner among the live nodes), `None` to commit here. Called
    /// for every send: keep it cheap. Default: `None` (no routing).
    fn remote_owner(&self, conversation: &ConversationId) -> Option<NodeId> {
        let _ = conversation;
        None
    }

    /// Carries `send` to `owner`, which commits it through its own commit
    /// path, and answers `done` with the outcome — or with a retryable
    /// error when the owner does not answer in time. Never block: queue it.
    /// Default (a bus that never routes): drops `done`, which the engine
    /// answers as a retryable `UNAVAILABLE`.
    fn forward(&self, owner: NodeId, send: ForwardedSend, done: oneshot::Sender<ForwardResult>) {
        let _ = (owner, send, done);
    }
}

//! The engine's side of a cluster bus ([`ClusterBus`]): what it publishes,
//! what it hands in, and the order of delivery on this node.
//!
//! Without a bus (a single node) nothing here runs: `Shared::cluster` and
//! `ShardWorker::cluster` are `None` and every call site is one branch.
//!
//! With a bus:
//! - **Out.** A shard worker publishes each conversation's committed batch
//!   ([`ClusterBus::publish`]) before it fans it out here. Host calls
//!   publish control ([`Engine::kick_user`], group membership changes).
//! - **Interest.** [`InterestDirectory`] wraps the session directory and
//!   tells the bus when the first local session of a user, or the first
//!   member of a room, arrives and when the last leaves; the registry tells
//!   it when a group gets its first online member here and loses its last
//!   (`Registry::group_interest`).
//! - **In.** The bus holds a [`ClusterInbound`] (given by
//!   `EngineBuilder::build` through [`ClusterBus::attach`]). A remote batch
//!   goes to the shard worker of its conversation, like a local commit, and
//!   is delivered by the same functions (`deliver_to_user`,
//!   `deliver_to_group`, `deliver_to_room`), so encode-once frames, group
//!   lanes and sub-rooms apply to it as to a local one.
//! - **Order and repair.** Each shard worker keeps, per conversation, the
//!   last seq this node delivered, from local commits and from the bus
//!   alike (`order::admit`). What was delivered is dropped; a gap (a batch
//!   lost on the bus, or one still on its way) is read from the store and
//!   delivered first. The store has every seq below a committed one (its
//!   head check), so the read finds them. A lost *last* batch is repaired
//!   by the publisher's head beacons ([`Inbound::Head`]). On a
//!   conversation's first batch here the node has no delivered seq to
//!   compare with: it delivers the few seqs before it committed in the last
//!   seconds (`FIRST_SIGHT_LOOKBACK`), which a local commit may have
//!   overtaken on the bus.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use quick_cache::UnitWeighter;
use quick_cache::unsync::Cache;

use crate::cluster::{Admit, ClusterBus, Control, Inbound, Interest, admit};
use crate::directory::{SessionDirectory, SessionInfo};
use crate::fast_hash::FastHasher;
use crate::ids::{ChannelId, ConversationId, Seq, SessionId, UserId, now_ms};
use crate::pb;
use crate::store::{RangeRequest, StoredMessage};

use super::commit::{Committed, GroupFacts, GroupMembers};
use super::session::QueuedFrames;
use super::session::Tally;
use super::shard::{ShardCommand, ShardWorker, by_conversation};
use super::{Engine, Inner};

/// The longest gap a node repairs by pushing what it reads from the store.
/// Longer gaps mean the node had no interest for a while and its clients
/// caught up by syncing: the batch is delivered as it is.
pub(crate) const MAX_REPAIR: u64 = 200;

/// On a conversation's first batch here, how many seqs before it are read
/// back, and how recent (commit time) they must be to be delivered: a
/// batch committed here can overtake one from another node still on the
/// bus. A heuristic on pushes only (a client still dedups by seq and pulls
/// on a seq jump), never on what is committed.
const FIRST_SIGHT_LOOKBACK: u64 = 32;
/// See [`FIRST_SIGHT_LOOKBACK`].
const FIRST_SIGHT_WINDOW_MS: i64 = 5_000;

/// The engine as a cluster bus sees it: where it hands in what arrives from
/// other nodes. Given to the bus by [`ClusterBus::attach`] when the engine
/// is built; it does not keep the engine alive.
#[derive(Clone)]
pub struct ClusterInbound {
    pub(super) inner: Weak<Inner>,
}

impl std::fmt::Debug for ClusterInbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterInbound").finish_non_exhaustive()
    }
}

impl ClusterInbound {
    /// Hands in what arrived from another node. Waits while the shard of a
    /// batch's conversation is busy (back-pressure on the bus reader).
    /// Returns false once the engine is gone.
    pub async fn deliver(&self, inbound: Inbound) -> bool {
        let Some(inner) = self.inner.upgrade() else {
            return false;
        };
        let engine = Engine { inner };
        match inbound {
            Inbound::Batch(messages) => {
                let Some(first) = messages.first() else {
                    return true;
                };
                let conv = first.conversation.clone();
                engine
                    .to_shard(&conv, ShardCommand::Remote(Remote::Batch(messages)))
                    .await;
            }
            Inbound::Head(conv, head) => {
                let cmd = ShardCommand::Remote(Remote::Head(conv.clone(), head));
                engine.to_shard(&conv, cmd).await;
            }
            Inbound::Control(Control::KickUser { user, detail }) => {
                engine.kick_local(&user, &detail);
            }
            Inbound::Control(Control::GroupChanged {
                group,
                added,
                removed,
            }) => {
                let registry = &engine.shared().registry;
                registry.add_group_members(&group, &added);
                registry.remove_group_members(&group, &removed);
                engine.invalidate_group(&group).await;
            }
        }
        true
    }
}

impl Engine {
    /// Sends a command to the shard of `conv` (dropped if the engine stops).
    async fn to_shard(&self, conv: &ConversationId, cmd: ShardCommand) {
        let _ = self.inner.shards[self.shard_of(conv)].send(cmd).await;
    }

    /// Kicks the user's sessions on this node; returns how many.
    pub(super) fn kick_local(&self, user: &UserId, detail: &str) -> usize {
        let sessions = self.shared().registry.user_sessions(user);
        for s in &sessions {
            s.kick(pb::KickReason::ByHost, detail, QueuedFrames::Flush);
        }
        sessions.len()
    }

    /// Tells the other nodes, if there are any.
    pub(super) fn tell_cluster(&self, control: impl FnOnce() -> Control) {
        if let Some(bus) = &self.shared().cluster {
            bus.control(control());
        }
    }
}

/// What a shard worker is handed from the bus.
pub(crate) enum Remote {
    /// Committed messages of one conversation, in seq order.
    Batch(Vec<StoredMessage>),
    /// A conversation's head as its publisher committed it.
    Head(ConversationId, Seq),
}

/// One shard worker's part: the bus, and what it delivered per conversation.
pub(crate) struct ShardCluster {
    bus: Arc<dyn ClusterBus>,
    delivered: Cache<ConversationId, Seq, UnitWeighter, FastHasher>,
}

impl ShardCluster {
    /// Remembers the delivered seq of about `entries` conversations.
    pub(crate) fn new(bus: Arc<dyn ClusterBus>, entries: usize) -> Self {
        let entries = entries.max(1);
        Self {
            bus,
            delivered: Cache::with(
                entries,
                entries as u64,
                UnitWeighter,
                FastHasher::default(),
                Default::default(),
            ),
        }
    }
}

impl ShardWorker {
    /// Before a local commit fans out: publishes each conversation's batch
    /// and puts any gap before it (seqs committed on other nodes and not yet
    /// heard of) in front, read from the store.
    pub(super) async fn cluster_local(&mut self, committed: Committed) -> Committed {
        if self.cluster.is_none() {
            return committed;
        }
        let Committed {
            messages,
            groups,
            heads,
        } = committed;
        let mut out = Vec::with_capacity(messages.len());
        for (conv, msgs) in by_conversation(messages) {
            if let Some(cl) = &self.cluster {
                cl.bus.publish(&conv, &msgs);
            }
            out.extend(self.in_order(&conv, msgs).await);
        }
        Committed {
            messages: out,
            groups,
            heads,
        }
    }

    /// Delivers what another node committed, in order, repairing gaps.
    pub(super) async fn on_remote(&mut self, remote: Remote) {
        match remote {
            Remote::Batch(msgs) => {
                let Some(first) = msgs.first() else { return };
                let conv = first.conversation.clone();
                metrics::counter!("im_cluster_batches_in_total").increment(1);
                let msgs = self.in_order(&conv, msgs).await;
                if let Some(last) = msgs.last() {
                    // The other node's commit moved the head: spare the next
                    // local append a conflict.
                    self.shared.sequencer.advanced(&[(conv.clone(), last.seq)]);
                    self.deliver_remote(&conv, msgs).await;
                }
            }
            Remote::Head(conv, head) => {
                let Some(cl) = &mut self.cluster else { return };
                let Some(&d) = cl.delivered.get(&conv) else {
                    return; // nothing delivered here: nothing to continue
                };
                if head <= d || head - d > MAX_REPAIR {
                    return;
                }
                let missing = self.read_missing(&conv, d, head).await;
                if let (Some(cl), Some(last)) = (&mut self.cluster, missing.last()) {
                    cl.delivered.insert(conv.clone(), last.seq);
                    self.deliver_remote(&conv, missing).await;
                }
            }
        }
    }

    /// The messages of `msgs` not delivered yet, after any gap before them
    /// read from the store; notes them as delivered.
    async fn in_order(
        &mut self,
        conv: &ConversationId,
        mut msgs: Vec<StoredMessage>,
    ) -> Vec<StoredMessage> {
        let Some(cl) = &mut self.cluster else {
            return msgs;
        };
        let (Some(first), Some(last)) = (msgs.first(), msgs.last()) else {
            return msgs;
        };
        let (first, last) = (first.seq, last.seq);
        let delivered = cl.delivered.get(conv).copied();
        if delivered.is_none() && first > 1 {
            // First sight here: the seqs just before may still be on the
            // bus (or lost), overtaken by this batch. Deliver the recent
            // ones now; older ones predate this node's interest, and its
            // clients synced them.
            let after = first - 1 - (first - 1).min(FIRST_SIGHT_LOOKBACK);
            let since = now_ms() - FIRST_SIGHT_WINDOW_MS;
            let mut recent = self.read_missing(conv, after, first - 1).await;
            recent.retain(|m| m.server_time_ms >= since);
            recent.append(&mut msgs);
            msgs = recent;
        }
        match admit(delivered, first, last, MAX_REPAIR) {
            Admit::Stale => return Vec::new(),
            Admit::Deliver { skip } => {
                msgs.drain(..skip.min(msgs.len()));
            }
            Admit::Repair { after, until } => {
                let mut missing = self.read_missing(conv, after, until).await;
                metrics::counter!("im_cluster_repaired_total").increment(missing.len() as u64);
                missing.append(&mut msgs);
                msgs = missing;
            }
        }
        if let Some(cl) = &mut self.cluster {
            cl.delivered.insert(conv.clone(), last);
        }
        msgs
    }

    /// `(after, until]` of a conversation from the store (what it has of it;
    /// nothing if it fails, and the clients pull on the seq jump).
    async fn read_missing(
        &self,
        conv: &ConversationId,
        after: Seq,
        until: Seq,
    ) -> Vec<StoredMessage> {
        let req = RangeRequest {
            conversation: conv.clone(),
            after_seq: after,
            until_seq: Some(until),
            limit: usize::try_from(until - after).unwrap_or(usize::MAX),
            newest: false,
        };
        match self.shared.store.read_range(req).await {
            Ok(page) => page.messages,
            Err(e) => {
                tracing::warn!(conversation = %conv.to_key(), error = %e, "cannot repair a bus gap from the store");
                Vec::new()
            }
        }
    }

    /// Delivers another node's messages to the sessions here, through the
    /// functions local commits use. No offline push: the committing node
    /// did that.
    async fn deliver_remote(&mut self, conv: &ConversationId, msgs: Vec<StoredMessage>) {
        let mut tally = Tally::default();
        match conv {
            ConversationId::Direct(pair) => {
                for u in pair.participants() {
                    if self.shared.registry.is_online(u) {
                        self.deliver_to_user(u, conv, &msgs, &mut tally);
                    }
                }
            }
            ConversationId::Group(g) => {
                let facts = self.load_groups(vec![g.clone()]).await;
                if let Some((_, Ok(Some(f)))) = facts.into_iter().next() {
                    let facts = GroupFacts {
                        member_count: f.member_count,
                        members: GroupMembers::Unlisted,
                        muted: None,
                    };
                    self.deliver_to_group(g, &facts, &msgs, &mut tally).await;
                }
            }
            ConversationId::Room(r) => self.deliver_to_room(r, msgs),
        }
        tally.record();
    }
}

/// A [`SessionDirectory`] that also tells the bus when this node gains its
/// first session of a user or member of a room, and loses its last.
#[derive(Debug)]
pub(crate) struct InterestDirectory {
    inner: Arc<dyn SessionDirectory>,
    bus: Arc<dyn ClusterBus>,
    users: Mutex<HashMap<UserId, HashSet<SessionId>>>,
    rooms: Mutex<HashMap<ChannelId, HashSet<SessionId>>>,
}

impl InterestDirectory {
    /// Wraps `inner`.
    pub(crate) fn new(inner: Arc<dyn SessionDirectory>, bus: Arc<dyn ClusterBus>) -> Self {
        Self {
            inner,
            bus,
            users: Mutex::default(),
            rooms: Mutex::default(),
        }
    }
}

/// Adds or removes `session` under `key`; tells the bus on the first and
/// the last (under the lock, so one key's calls reach it in order).
fn track<K: std::hash::Hash + Eq + Clone>(
    map: &Mutex<HashMap<K, HashSet<SessionId>>>,
    key: &K,
    session: SessionId,
    on: bool,
    tell: impl FnOnce(bool),
) {
    let mut map = map.lock();
    if on {
        let set = map.entry(key.clone()).or_default();
        if set.insert(session) && set.len() == 1 {
            tell(true);
        }
    } else if let Some(set) = map.get_mut(key)
        && set.remove(&session)
        && set.is_empty()
    {
        map.remove(key);
        tell(false);
    }
}

impl SessionDirectory for InterestDirectory {
    fn session_opened(&self, s: &SessionInfo) {
        track(&self.users, &s.user, s.session, true, |on| {
            self.bus.interest(Interest::User(s.user.clone()), on);
        });
        self.inner.session_opened(s);
    }

    fn session_closed(&self, s: &SessionInfo) {
        track(&self.users, &s.user, s.session, false, |on| {
            self.bus.interest(Interest::User(s.user.clone()), on);
        });
        self.inner.session_closed(s);
    }

    fn room_joined(&self, room: &ChannelId, s: &SessionInfo) {
        track(&self.rooms, room, s.session, true, |on| {
            self.bus.interest(Interest::Room(room.clone()), on);
        });
        self.inner.room_joined(room, s);
    }

    fn room_left(&self, room: &ChannelId, s: &SessionInfo) {
        track(&self.rooms, room, s.session, false, |on| {
            self.bus.interest(Interest::Room(room.clone()), on);
        });
        self.inner.room_left(room, s);
    }

    fn is_online(&self, user: &UserId, here: bool) -> bool {
        self.inner.is_online(user, here)
    }
}

//! Conversation owners: one worker per shard assigns seqs, group-commits
//! pending sends in one store append, acks after commit, then fans out.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use quick_cache::UnitWeighter;
use quick_cache::unsync::Cache;
use tokio::sync::{mpsc, oneshot};

use crate::codec::{encode_server_frame, error_frame, server_frame};
use crate::error::{EngineError, StoreError};
use crate::fanout::{Delivery, Diffusion, FanoutInput, FanoutPlan, RateClass};
use crate::fast_hash::{FastHasher, FastMap};
use crate::ids::{ChannelId, ConversationId, ConversationKind, Seq, SessionId, UserId, now_ms};
use crate::pb;
use crate::push::OfflineNotice;
use crate::store::{ContentType, StoreExt, StoredMessage};

use super::Shared;
use super::cluster::{Remote, ShardCluster};
use super::commit::{
    Admission, CommitBatch, Committed, GroupFacts, GroupLookup, GroupMembers, HoldBacks, Outcome,
    Step,
};
use super::group_lane::{GroupLane, LaneFrame};
use super::session::{SessionHandle, Tally};
use super::wire::{error_code, message_to_wire, send_ack};

/// Members read per store call when a group's member list is loaded.
const MEMBERS_PAGE: usize = 1000;
/// At most this many muted members of one group are loaded with its facts
/// (and so enforced); a group with more logs a warning.
const MUTED_LOAD_MAX: usize = 10_000;

/// Work for a shard worker.
pub(crate) enum ShardCommand {
    /// Commit a message.
    Send(PendingSend),
    /// Group membership changed: forget what is cached about it.
    InvalidateGroup(ChannelId),
    /// Answer once every command queued before this one is done.
    Drain(oneshot::Sender<()>),
    /// Deliver what another node committed (`engine/cluster.rs`).
    Remote(Remote),
}

/// A send waiting for its commit, answered through a [`Reply`].
pub(crate) type PendingSend = super::commit::PendingSend<Reply>;

/// Where the outcome of a send goes.
pub(crate) enum Reply {
    /// A client session, answered with `SendAck` or `Error`.
    Session {
        /// The session.
        session: Arc<SessionHandle>,
        /// The request id of its `Send`.
        request_id: u64,
    },
    /// The host API.
    Host(oneshot::Sender<Result<SendReceipt, EngineError>>),
}

/// The outcome of a committed send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    /// The conversation.
    pub conversation: ConversationId,
    /// The message's seq.
    pub seq: Seq,
    /// The message's id.
    pub message_id: crate::ids::MessageId,
    /// Commit time, milliseconds since the Unix epoch.
    pub server_time_ms: i64,
    /// True if this was a retry of an already committed message.
    pub duplicate: bool,
}

impl Reply {
    /// The session the send came from (none for host sends).
    fn session_id(&self) -> Option<SessionId> {
        match self {
            Reply::Session { session, .. } => Some(session.id),
            Reply::Host(_) => None,
        }
    }

    /// Answers a committed send.
    pub(crate) fn ok(self, msg: &StoredMessage, duplicate: bool) {
        match self {
            Reply::Session {
                session,
                request_id,
            } => {
                let ack = send_ack(msg, &session.user, duplicate);
                session.send_frame(request_id, pb::server_frame::Body::SendAck(ack));
            }
            Reply::Host(tx) => {
                let _ = tx.send(Ok(SendReceipt {
                    conversation: msg.conversation.clone(),
                    seq: msg.seq,
                    message_id: msg.message_id,
                    server_time_ms: msg.server_time_ms,
                    duplicate,
                }));
            }
        }
    }

    /// Answers a send committed on another node (see `engine/forward.rs`).
    pub(crate) fn receipt(self, r: SendReceipt, client_msg_id: Option<String>) {
        match self {
            Reply::Session {
                session,
                request_id,
            } => {
                let ack = pb::SendAck {
                    client_msg_id: client_msg_id.unwrap_or_default(),
                    conversation: Some(r.conversation.to_wire(&session.user)),
                    seq: r.seq,
                    message_id: r.message_id.0,
                    server_time_ms: r.server_time_ms,
                    duplicate: r.duplicate,
                };
                session.send_frame(request_id, pb::server_frame::Body::SendAck(ack));
            }
            Reply::Host(tx) => {
                let _ = tx.send(Ok(r));
            }
        }
    }

    /// Answers a failed send.
    pub(crate) fn fail(self, err: EngineError) {
        match self {
            Reply::Session {
                session,
                request_id,
            } => {
                let code = error_code(&err);
                let retryable = err.is_retryable();
                session.send(encode_server_frame(&error_frame(
                    request_id,
                    code,
                    err.to_string(),
                    retryable,
                )));
            }
            Reply::Host(tx) => {
                let _ = tx.send(Err(err));
            }
        }
    }
}

/// One shard's worker: the IO loop around [`CommitBatch`].
pub(crate) struct ShardWorker {
    pub(super) shared: Arc<Shared>,
    group_lane: GroupLane,
    groups: Cache<ChannelId, Arc<GroupFacts>, UnitWeighter, FastHasher>,
    holds: HoldBacks,
    /// Cross-node order and repair (`None` on a single node).
    pub(super) cluster: Option<ShardCluster>,
    /// Sends answered in the current batch, recorded once per batch.
    answered: Answered,
}

/// Sends answered, by outcome (`im_sends_total{outcome}`: the send success
/// rate is committed / all).
#[derive(Debug, Default, Clone, Copy)]
struct Answered {
    committed: u64,
    duplicate: u64,
    failed: u64,
}

impl Answered {
    /// Records the counts and starts again from zero.
    fn record(&mut self) {
        for (outcome, n) in [
            ("committed", self.committed),
            ("duplicate", self.duplicate),
            ("failed", self.failed),
        ] {
            if n > 0 {
                metrics::counter!("im_sends_total", "outcome" => outcome).increment(n);
            }
        }
        *self = Self::default();
    }
}

impl ShardWorker {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let entries = shared.config.shard_cache_entries.max(1);
        Self {
            group_lane: GroupLane::start(shared.clone()),
            cluster: shared
                .cluster
                .clone()
                .map(|bus| ShardCluster::new(bus, entries)),
            shared,
            groups: Cache::with(
                entries,
                entries as u64,
                UnitWeighter,
                FastHasher::default(),
                Default::default(),
            ),
            holds: HoldBacks::new(entries),
            answered: Answered::default(),
        }
    }

    /// Runs until every sender of the channel is gone.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<ShardCommand>) {
        let max = self.shared.config.max_commit_batch.max(1);
        let mut sends = Vec::with_capacity(max);
        let mut drains = Vec::new();
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    ShardCommand::Send(s) => sends.push(s),
                    ShardCommand::InvalidateGroup(g) => {
                        // Commit what came before with the old view, then forget it.
                        self.commit(std::mem::take(&mut sends)).await;
                        self.groups.remove(&g);
                    }
                    ShardCommand::Drain(tx) => drains.push(tx),
                    ShardCommand::Remote(r) => {
                        // After what came before, in arrival order.
                        self.commit(std::mem::take(&mut sends)).await;
                        self.on_remote(r).await;
                    }
                }
                if sends.len() < max {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(std::mem::take(&mut sends)).await;
            for tx in drains.drain(..) {
                let _ = tx.send(());
            }
        }
    }

    /// Commits one batch: performs the IO its [`CommitBatch`] asks for.
    async fn commit(&mut self, sends: Vec<PendingSend>) {
        if sends.is_empty() {
            return;
        }
        let sends = self.hold_back_after_failures(sends);
        self.forget_changed_groups(&sends);
        self.commit_admitted(sends).await;
        self.answered.record();
    }

    /// A group change writes the store first, then commits its SYSTEM
    /// event through the group's shard (on the owner node in a cluster):
    /// read such a group afresh, so the event and the sends after it see
    /// the new members and mutes even when the change was made on another
    /// node, whose `GroupChanged` control may still be on the bus (or lost).
    fn forget_changed_groups(&mut self, sends: &[PendingSend]) {
        for s in sends {
            if s.content_type == ContentType::System
                && let ConversationId::Group(g) = &s.conversation
            {
                self.groups.remove(g);
            }
        }
    }

    /// Commits the sends a batch admitted.
    async fn commit_admitted(&mut self, sends: Vec<PendingSend>) {
        let mut batch = CommitBatch::new(sends, now_ms());
        let store = self.shared.store.clone();
        loop {
            match batch.next_step(&self.shared.ids) {
                Step::LoadGroups(groups) => {
                    let facts = self.load_groups(groups).await;
                    batch.on_groups(facts);
                }
                Step::CheckMembers { group, users } => {
                    batch.on_members(store.are_members(&group, &users).await);
                }
                Step::CheckBlocks(pairs) => {
                    batch.on_blocks(store.are_blocked(&pairs).await);
                }
                Step::FindOriginals(keys) => {
                    batch.on_originals(store.find_by_dedup_keys(&keys).await);
                }
                Step::LoadHeads(convs) => {
                    let heads = self.shared.sequencer.heads(&*store, &convs).await;
                    batch.on_heads(heads);
                }
                Step::Append(req) => batch.on_appended(store.append(req).await),
                Step::ForgetHeads(convs) => self.shared.sequencer.forget(&convs),
                Step::Answer(reply, outcome) => self.answer(reply, outcome),
                Step::Committed(committed) => {
                    metrics::counter!("im_messages_committed_total")
                        .increment(committed.messages.len() as u64);
                    metrics::histogram!("im_commit_batch_size")
                        .record(committed.messages.len() as f64);
                    self.shared.sequencer.advanced(&committed.heads);
                    let committed = self.cluster_local(committed).await;
                    self.fan_out(committed).await;
                }
                Step::Done => return,
            }
        }
    }

    /// Answers one send, remembering a retryable failure so the session's
    /// later sends to that conversation wait for its resend.
    fn answer(&mut self, reply: Reply, outcome: Outcome) {
        match outcome {
            Outcome::Committed { message, duplicate } => {
                if duplicate {
                    self.answered.duplicate += 1;
                } else {
                    self.answered.committed += 1;
                }
                reply.ok(&message, duplicate)
            }
            Outcome::Failed { error, hold_back } => {
                self.answered.failed += 1;
                if let (Some((conv, id)), Some(session)) = (hold_back, reply.session_id()) {
                    self.holds.note(session, conv, &id);
                }
                reply.fail(error);
            }
        }
    }

    /// Refuses sends that would overtake an earlier failed one from the same
    /// session; the resend of the failed one lifts the hold.
    fn hold_back_after_failures(&mut self, sends: Vec<PendingSend>) -> Vec<PendingSend> {
        if self.holds.is_empty() {
            return sends;
        }
        let mut out = Vec::with_capacity(sends.len());
        for s in sends {
            let Some(session) = s.reply.session_id() else {
                out.push(s);
                continue;
            };
            match self
                .holds
                .admit(session, &s.conversation, s.client_msg_id.as_deref())
            {
                Admission::Pass | Admission::Resend => out.push(s),
                Admission::Held(first) => {
                    self.answered.failed += 1;
                    s.reply.fail(EngineError::Store(StoreError::Backend {
                        source: format!(
                            "an earlier send ({first}) to this conversation failed: \
                         resend from it to keep your order"
                        )
                        .into(),
                        retryable: true,
                    }))
                }
            }
        }
        out
    }

    /// Facts for each group, from the cache or the store.
    pub(super) async fn load_groups(&mut self, groups: Vec<ChannelId>) -> Vec<GroupLookup> {
        let mut out = Vec::with_capacity(groups.len());
        for g in groups {
            if let Some(f) = self.groups.get(&g) {
                let f = f.clone();
                out.push((g, Ok(Some(f))));
                continue;
            }
            let facts = self.load_group_facts(&g).await;
            if let Ok(Some(f)) = &facts {
                self.groups.insert(g.clone(), f.clone());
            }
            out.push((g, facts));
        }
        out
    }

    /// Reads a group's size and, when the policy picks write diffusion for
    /// it, its member list.
    async fn load_group_facts(
        &self,
        group: &ChannelId,
    ) -> Result<Option<Arc<GroupFacts>>, StoreError> {
        let store = &self.shared.store;
        let Some(count) = store.member_count(group).await? else {
            return Ok(None);
        };
        let plan = self.shared.policy.plan(&FanoutInput {
            kind: ConversationKind::Group,
            member_count: count,
            online_sessions: 0,
        });
        let members = match plan.diffusion {
            Diffusion::Write => {
                let all = store.all_members(group, MEMBERS_PAGE).await?;
                GroupMembers::Listed(Arc::new(all.into_iter().collect()))
            }
            Diffusion::Read => GroupMembers::Unlisted,
        };
        let muted = store.muted_members(group, now_ms(), MUTED_LOAD_MAX).await?;
        if muted.len() >= MUTED_LOAD_MAX {
            tracing::warn!(%group, limit = MUTED_LOAD_MAX, "more muted members than enforced");
        }
        let muted = (!muted.is_empty()).then(|| Arc::new(muted.into_iter().collect()));
        Ok(Some(Arc::new(GroupFacts {
            member_count: count,
            members,
            muted,
        })))
    }

    /// Delivers committed messages to live sessions: one frame per
    /// conversation per batch, encoded once, the same bytes to every session.
    async fn fan_out(&self, committed: Committed) {
        let Committed {
            messages, groups, ..
        } = committed;
        let mut tally = Tally::default();
        for (conv, msgs) in by_conversation(messages) {
            match &conv {
                ConversationId::Direct(pair) => {
                    for user in pair.participants() {
                        self.deliver_to_user(user, &conv, &msgs, &mut tally);
                    }
                }
                ConversationId::Group(g) => {
                    if let Some(facts) = groups.get(g) {
                        self.deliver_to_group(g, facts, &msgs, &mut tally).await;
                    }
                }
                ConversationId::Room(r) => {
                    self.deliver_to_room(r, msgs);
                }
            }
        }
        tally.record();
    }

    /// Delivers a group's messages with the diffusion the commit used.
    pub(super) async fn deliver_to_group(
        &self,
        g: &ChannelId,
        facts: &GroupFacts,
        msgs: &[StoredMessage],
        tally: &mut Tally,
    ) {
        let online = self.shared.registry.group_online(g) as u64;
        let mut plan = self.shared.policy.plan(&FanoutInput {
            kind: ConversationKind::Group,
            member_count: facts.member_count,
            online_sessions: online,
        });
        // The inboxes were written by the facts' decision; delivery follows it.
        plan.diffusion = facts.diffusion();
        let conv = ConversationId::Group(g.clone());
        let frame = batch_frame(&conv, msgs, plan);
        if let GroupMembers::Listed(members) = &facts.members {
            self.offline_push(members, msgs);
        }
        let lane = LaneFrame::new(frame, msgs, plan.delivery == Delivery::Notify);
        if plan.rate_class == RateClass::Fast && !self.group_lane.is_busy(g) {
            let out = lane.outgoing(&conv);
            self.shared.registry.with_group(g, |it| {
                for s in it {
                    tally.add(s.deliver(&out));
                }
            });
        } else {
            // Big group: off this worker (counted by the lane).
            self.group_lane.push(g.clone(), lane).await;
        }
    }

    /// Hands a room's messages to its batch window. Rooms are batched and
    /// delivered by the room fanout threads (engine/rooms/), never on this
    /// worker. They stay best effort: no acks are tracked for them.
    pub(super) fn deliver_to_room(&self, r: &ChannelId, msgs: Vec<StoredMessage>) {
        let online = self.shared.registry.room_online(r) as u64;
        let plan = self.shared.policy.plan(&FanoutInput {
            kind: ConversationKind::Room,
            member_count: online,
            online_sessions: online,
        });
        self.shared.registry.rooms().on_committed(r, msgs, plan);
    }

    /// Pushes a direct conversation's messages to one user's sessions, named
    /// as that user sees the conversation.
    pub(super) fn deliver_to_user(
        &self,
        user: &UserId,
        conv: &ConversationId,
        msgs: &[StoredMessage],
        tally: &mut Tally,
    ) {
        let sessions = self.shared.registry.user_sessions(user);
        if sessions.is_empty() {
            let elsewhere = self.shared.directory.is_online(user, false);
            if let Some(push) = self.shared.offline_push.as_ref().filter(|_| !elsewhere) {
                for m in msgs.iter().filter(|m| &m.sender != user) {
                    push.dispatch(OfflineNotice {
                        message: m.clone(),
                        users: vec![user.clone()],
                    });
                }
            }
            return;
        }
        let frame = encode_server_frame(&server_frame(
            0,
            pb::server_frame::Body::Push(pb::Push {
                messages: msgs.iter().map(|m| message_to_wire(m, user)).collect(),
            }),
        ));
        let lane = LaneFrame::new(frame, msgs, false);
        let out = lane.outgoing(conv);
        for s in &sessions {
            tally.add(s.deliver(&out));
        }
    }

    /// Hands each message to the offline push hook for members not online.
    fn offline_push(&self, members: &HashSet<UserId>, msgs: &[StoredMessage]) {
        let Some(push) = &self.shared.offline_push else {
            return;
        };
        for m in msgs {
            let users: Vec<UserId> = members
                .iter()
                .filter(|u| **u != m.sender && !self.shared.is_online(u))
                .cloned()
                .collect();
            if users.is_empty() {
                continue;
            }
            push.dispatch(OfflineNotice {
                message: m.clone(),
                users,
            });
        }
    }
}

/// Committed messages grouped by conversation, in first-commit order.
pub(super) fn by_conversation(
    messages: Vec<StoredMessage>,
) -> Vec<(ConversationId, Vec<StoredMessage>)> {
    let mut by_conv: Vec<(ConversationId, Vec<StoredMessage>)> = Vec::new();
    let mut index: FastMap<ConversationId, usize> = FastMap::default();
    for m in messages {
        match index.get(&m.conversation) {
            Some(&i) => by_conv[i].1.push(m),
            None => {
                index.insert(m.conversation.clone(), by_conv.len());
                by_conv.push((m.conversation.clone(), vec![m]));
            }
        }
    }
    by_conv
}

/// One frame for a batch of one conversation's messages: the messages
/// themselves, or only the new head when the plan says notify.
fn batch_frame(conv: &ConversationId, msgs: &[StoredMessage], plan: FanoutPlan) -> Bytes {
    // Group and room names do not depend on the viewer.
    let viewer = &msgs[0].sender;
    let body = match plan.delivery {
        Delivery::Push => pb::server_frame::Body::Push(pb::Push {
            messages: msgs.iter().map(|m| message_to_wire(m, viewer)).collect(),
        }),
        Delivery::Notify => pb::server_frame::Body::Notify(pb::Notify {
            conversation: Some(conv.to_wire(viewer)),
            head_seq: msgs.last().map_or(0, |m| m.seq),
        }),
    };
    encode_server_frame(&server_frame(0, body))
}

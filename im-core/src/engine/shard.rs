//! Conversation owners: one worker per shard assigns seqs, group-commits
//! pending sends in one store append, acks after commit, then fans out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::codec::{encode_server_frame, error_frame, server_frame};
use crate::error::{EngineError, StoreError};
use crate::fanout::{Delivery, Diffusion, FanoutInput, FanoutPlan, RateClass};
use crate::ids::{ChannelId, ConversationId, DedupKey, DeviceId, Seq, SessionId, UserId, now_ms};
use crate::pb;
use crate::push::OfflineNotice;
use crate::store::{AppendRequest, NewMessage, StoredMessage};

use super::Shared;
use super::group_lane::GroupLane;
use super::sequencer::assign_seqs;
use super::session::SessionHandle;
use super::wire::{error_code, message_to_wire, send_ack};

/// Caches are dropped and reloaded when they grow past this many entries.
const CACHE_LIMIT: usize = 100_000;
/// Appends retried after duplicate or seq conflicts before giving up.
const APPEND_ATTEMPTS: usize = 4;

/// Work for a shard worker.
pub(crate) enum ShardCommand {
    /// Commit a message.
    Send(PendingSend),
    /// Group membership changed: forget what is cached about it.
    InvalidateGroup(ChannelId),
    /// Answer once every command queued before this one is done.
    Drain(oneshot::Sender<()>),
}

/// A send waiting for its commit.
pub(crate) struct PendingSend {
    pub(crate) conversation: ConversationId,
    pub(crate) sender: UserId,
    pub(crate) device: DeviceId,
    pub(crate) client_msg_id: Option<String>,
    pub(crate) body: Bytes,
    /// False for sends by the host, which may send anywhere.
    pub(crate) check_membership: bool,
    pub(crate) reply: Reply,
}

/// Where the outcome of a send goes.
pub(crate) enum Reply {
    /// A client session, answered with `SendAck` or `Error`.
    Session {
        session: Arc<SessionHandle>,
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

    fn ok(self, msg: &StoredMessage, duplicate: bool) {
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

    fn fail(self, err: EngineError) {
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

/// What a worker knows about a group.
#[derive(Clone)]
struct GroupInfo {
    member_count: u64,
    /// The full member set, kept only for groups small enough for write diffusion.
    members: Option<Arc<HashSet<UserId>>>,
}

/// A send that passed authorization, with the sends that retried it in the same batch.
struct Admitted {
    send: PendingSend,
    retries: Vec<Reply>,
}

impl Admitted {
    /// Answers the send and every retry folded into it with the committed message.
    fn ok(self, msg: &StoredMessage, duplicate: bool) {
        for r in self.retries {
            r.ok(msg, true);
        }
        self.send.reply.ok(msg, duplicate);
    }

    /// Answers the send and every retry folded into it with an error.
    fn fail(self, err: impl Fn() -> EngineError) {
        for r in self.retries {
            r.fail(err());
        }
        self.send.reply.fail(err());
    }
}

/// One shard's worker.
pub(crate) struct ShardWorker {
    shared: Arc<Shared>,
    group_lane: GroupLane,
    heads: HashMap<ConversationId, Seq>,
    groups: HashMap<ChannelId, GroupInfo>,
    /// Sessions whose send to a conversation failed, with the first failed
    /// `client_msg_id`: their later sends there are refused until that one is
    /// sent again, so a failure never lets later messages overtake it.
    failed: HashMap<(SessionId, ConversationId), String>,
}

impl ShardWorker {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            group_lane: GroupLane::start(shared.clone()),
            shared,
            heads: HashMap::new(),
            groups: HashMap::new(),
            failed: HashMap::new(),
        }
    }

    /// Remembers that a session's send failed (retryably), keeping the first one.
    fn note_failure(&mut self, s: &PendingSend) {
        let (Some(session), Some(id)) = (s.reply.session_id(), &s.client_msg_id) else {
            return;
        };
        if self.failed.len() >= CACHE_LIMIT {
            self.failed.clear();
        }
        self.failed
            .entry((session, s.conversation.clone()))
            .or_insert_with(|| id.clone());
    }

    /// Refuses sends that would overtake an earlier failed one from the same
    /// session; the resend of the failed one lifts the hold.
    fn hold_back_after_failures(&mut self, sends: Vec<PendingSend>) -> Vec<PendingSend> {
        if self.failed.is_empty() {
            return sends;
        }
        let mut out = Vec::with_capacity(sends.len());
        for s in sends {
            let key = s.reply.session_id().map(|id| (id, s.conversation.clone()));
            let first_failed = key.as_ref().and_then(|k| self.failed.get(k));
            match first_failed {
                None => out.push(s),
                Some(first) if s.client_msg_id.as_ref() == Some(first) => {
                    if let Some(k) = key {
                        self.failed.remove(&k);
                    }
                    out.push(s);
                }
                Some(first) => {
                    let first = first.clone();
                    s.reply.fail(store_failure(
                        &format!(
                            "an earlier send ({first}) to this conversation failed: \
                             resend from it to keep your order"
                        ),
                        true,
                    ));
                }
            }
        }
        out
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

    /// Authorizes, deduplicates, sequences, appends, acks and fans out one batch.
    async fn commit(&mut self, sends: Vec<PendingSend>) {
        if sends.is_empty() {
            return;
        }
        let sends = self.hold_back_after_failures(sends);
        let admitted = self.authorize(sends).await;
        let mut pending = dedup_within_batch(admitted);
        for attempt in 1..=APPEND_ATTEMPTS {
            if pending.is_empty() {
                return;
            }
            match self.append(&pending).await {
                Ok(committed) => {
                    metrics::counter!("im_messages_committed_total")
                        .increment(committed.len() as u64);
                    metrics::histogram!("im_commit_batch_size").record(committed.len() as f64);
                    for (a, msg) in pending.into_iter().zip(&committed) {
                        a.ok(msg, false);
                    }
                    self.fan_out(committed).await;
                    return;
                }
                Err(StoreError::Duplicate(keys)) if attempt < APPEND_ATTEMPTS => {
                    pending = self.answer_duplicates(pending, keys).await;
                }
                Err(StoreError::SeqConflict { .. }) if attempt < APPEND_ATTEMPTS => {
                    self.heads.clear();
                }
                Err(e) => {
                    // The outcome is unknown (e.g. a timeout after COMMIT): reload
                    // heads from the store; clients retry with the same id.
                    self.heads.clear();
                    metrics::counter!("im_send_failures_total").increment(pending.len() as u64);
                    tracing::warn!(error = %e, count = pending.len(), "append failed");
                    // Conflicts that outlast every attempt are worth retrying too.
                    let retryable = e.is_retryable() || matches!(e, StoreError::Duplicate(_));
                    let msg = e.to_string();
                    for a in pending {
                        if retryable {
                            self.note_failure(&a.send);
                        }
                        a.fail(|| store_failure(&msg, retryable));
                    }
                    return;
                }
            }
        }
    }

    /// Drops sends the sender may not make, answering them.
    async fn authorize(&mut self, sends: Vec<PendingSend>) -> Vec<PendingSend> {
        let mut out = Vec::with_capacity(sends.len());
        let mut refused = Vec::new();
        // Large groups keep no member set: ask the store once per group.
        let mut to_check: HashMap<ChannelId, Vec<PendingSend>> = HashMap::new();
        for s in sends {
            let group = match &s.conversation {
                ConversationId::Group(g) => g.clone(),
                ConversationId::Direct(..) | ConversationId::Room(_) => {
                    out.push(s);
                    continue;
                }
            };
            let info = match self.group_info(&group).await {
                Ok(Some(info)) => info,
                Ok(None) => {
                    s.reply
                        .fail(EngineError::Store(StoreError::NotFound(format!(
                            "group {group}"
                        ))));
                    continue;
                }
                Err(e) => {
                    if e.is_retryable() {
                        self.note_failure(&s);
                    }
                    s.reply.fail(EngineError::Store(e));
                    continue;
                }
            };
            if !s.check_membership {
                out.push(s);
                continue;
            }
            match &info.members {
                Some(m) if m.contains(&s.sender) => out.push(s),
                Some(_) => refused.push(s),
                None => to_check.entry(group).or_default().push(s),
            }
        }
        for (group, sends) in to_check {
            let users: Vec<UserId> = sends.iter().map(|s| s.sender.clone()).collect();
            match self.shared.store.are_members(&group, &users).await {
                Ok(flags) => {
                    for (s, ok) in sends.into_iter().zip(flags) {
                        if ok {
                            out.push(s);
                        } else {
                            refused.push(s);
                        }
                    }
                }
                Err(e) => {
                    let (msg, retryable) = (e.to_string(), e.is_retryable());
                    for s in sends {
                        if retryable {
                            self.note_failure(&s);
                        }
                        s.reply.fail(store_failure(&msg, retryable));
                    }
                }
            }
        }
        self.refuse_non_members(refused).await;
        // Each conversation's sends took one path above, so their order holds.
        out
    }

    /// Answers sends from non-members with FORBIDDEN, unless the send is a
    /// retry of a message committed while the sender was still a member: a
    /// retry gets its original ack (idempotency), never a second message.
    async fn refuse_non_members(&self, refused: Vec<PendingSend>) {
        if refused.is_empty() {
            return;
        }
        let keys: Vec<DedupKey> = refused.iter().filter_map(dedup_key).collect();
        let originals: HashMap<DedupKey, StoredMessage> =
            match self.shared.store.find_by_dedup_keys(&keys).await {
                Ok(found) => keys
                    .into_iter()
                    .zip(found)
                    .filter_map(|(k, m)| Some((k, m?)))
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "dedup lookup for refused sends failed");
                    HashMap::new()
                }
            };
        for s in refused {
            let original = dedup_key(&s)
                .and_then(|k| originals.get(&k).cloned())
                .filter(|m| m.conversation == s.conversation);
            match (original, &s.conversation) {
                (Some(msg), _) => s.reply.ok(&msg, true),
                (None, ConversationId::Group(g)) => {
                    let err = not_member(g);
                    s.reply.fail(err)
                }
                (None, conv) => s
                    .reply
                    .fail(EngineError::Forbidden(format!("not a member of {conv}"))),
            }
        }
    }

    async fn group_info(&mut self, group: &ChannelId) -> Result<Option<GroupInfo>, StoreError> {
        if let Some(info) = self.groups.get(group) {
            return Ok(Some(info.clone()));
        }
        let store = &self.shared.store;
        let Some(count) = store.member_count(group).await? else {
            return Ok(None);
        };
        let write = self.shared.policy.plan(&FanoutInput {
            kind: crate::ids::ConversationKind::Group,
            member_count: count,
            online_sessions: 0,
        });
        let members = if write.diffusion == Diffusion::Write {
            let mut all = HashSet::with_capacity(count as usize);
            let mut after: Option<UserId> = None;
            loop {
                let page = store.members(group, after.as_ref(), 1000).await?;
                let Some(last) = page.last().cloned() else {
                    break;
                };
                all.extend(page);
                after = Some(last);
            }
            Some(Arc::new(all))
        } else {
            None
        };
        if self.groups.len() >= CACHE_LIMIT {
            self.groups.clear();
        }
        let info = GroupInfo {
            member_count: count,
            members,
        };
        self.groups.insert(group.clone(), info.clone());
        Ok(Some(info))
    }

    /// Assigns seqs from the cached heads and appends the batch in one call.
    async fn append(&mut self, pending: &[Admitted]) -> Result<Vec<StoredMessage>, StoreError> {
        let missing: Vec<ConversationId> = {
            let mut seen = HashSet::new();
            pending
                .iter()
                .map(|a| &a.send.conversation)
                .filter(|c| !self.heads.contains_key(*c) && seen.insert(*c))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            let heads = self.shared.store.head_seqs(&missing).await?;
            if self.heads.len() + missing.len() > CACHE_LIMIT {
                self.heads.clear();
            }
            self.heads.extend(missing.into_iter().zip(heads));
        }
        let assigned = assign_seqs(&self.heads, pending.iter().map(|a| &a.send.conversation));
        let now = now_ms();
        let mut req = AppendRequest {
            messages: Vec::with_capacity(pending.len()),
        };
        for (a, seq) in pending.iter().zip(assigned.seqs) {
            let s = &a.send;
            let message = StoredMessage {
                conversation: s.conversation.clone(),
                seq,
                message_id: self.shared.ids.next(),
                sender: s.sender.clone(),
                sender_device: s.device.clone(),
                client_msg_id: s.client_msg_id.clone(),
                body: s.body.clone(),
                server_time_ms: now,
            };
            let inbox_recipients = self.inbox_recipients(&s.conversation);
            req.messages.push(NewMessage {
                message,
                inbox_recipients,
            });
        }
        // Inbox recipient lists can be long: keep only the messages for after.
        let committed: Vec<StoredMessage> =
            req.messages.iter().map(|m| m.message.clone()).collect();
        self.shared.store.append(req).await?;
        self.heads.extend(assigned.heads);
        Ok(committed)
    }

    /// Inbox entries go to every member under write diffusion, to no one under read.
    fn inbox_recipients(&self, conversation: &ConversationId) -> Vec<UserId> {
        match conversation {
            ConversationId::Direct(pair) => pair.participants().cloned().collect(),
            ConversationId::Group(g) => self
                .groups
                .get(g)
                .and_then(|i| i.members.as_ref())
                .map(|m| m.iter().cloned().collect())
                .unwrap_or_default(),
            ConversationId::Room(_) => Vec::new(),
        }
    }

    /// Answers sends whose key the store already has; returns the rest.
    async fn answer_duplicates(
        &mut self,
        pending: Vec<Admitted>,
        keys: Vec<DedupKey>,
    ) -> Vec<Admitted> {
        let keys: HashSet<DedupKey> = keys.into_iter().collect();
        let (dups, rest): (Vec<Admitted>, Vec<Admitted>) = pending
            .into_iter()
            .partition(|a| dedup_key(&a.send).is_some_and(|k| keys.contains(&k)));
        let lookup: Vec<DedupKey> = dups.iter().filter_map(|a| dedup_key(&a.send)).collect();
        match self.shared.store.find_by_dedup_keys(&lookup).await {
            Ok(found) => {
                for (a, original) in dups.into_iter().zip(found) {
                    match original {
                        Some(msg) => a.ok(&msg, true),
                        None => a.fail(|| {
                            store_failure("store reported a duplicate it cannot find", true)
                        }),
                    }
                }
            }
            Err(e) => {
                let (msg, retryable) = (e.to_string(), e.is_retryable());
                for a in dups {
                    a.fail(|| store_failure(&msg, retryable));
                }
            }
        }
        rest
    }

    /// Delivers committed messages to live sessions: one frame per
    /// conversation per batch, encoded once, the same bytes to every session.
    async fn fan_out(&self, committed: Vec<StoredMessage>) {
        let mut by_conv: Vec<(ConversationId, Vec<StoredMessage>)> = Vec::new();
        let mut index: HashMap<ConversationId, usize> = HashMap::new();
        for m in committed {
            match index.get(&m.conversation) {
                Some(&i) => by_conv[i].1.push(m),
                None => {
                    index.insert(m.conversation.clone(), by_conv.len());
                    by_conv.push((m.conversation.clone(), vec![m]));
                }
            }
        }
        for (conv, msgs) in by_conv {
            let delivered = match &conv {
                ConversationId::Direct(pair) => pair
                    .participants()
                    .map(|user| self.deliver_to_user(user, &msgs))
                    .sum(),
                ConversationId::Group(g) => {
                    let online = self.shared.registry.group_online(g) as u64;
                    let plan = self.plan(&conv, online, g);
                    let frame = batch_frame(&conv, &msgs, plan);
                    if plan.diffusion == Diffusion::Write {
                        self.offline_push(g, &msgs);
                    }
                    if plan.rate_class == RateClass::Fast && !self.group_lane.is_busy(g) {
                        self.shared
                            .registry
                            .with_group(g, |it| it.filter(|s| s.send(frame.clone())).count())
                    } else {
                        // Big group: off this worker (counted by the lane).
                        self.group_lane.push(g.clone(), frame).await;
                        0
                    }
                }
                ConversationId::Room(r) => {
                    // Rooms are batched and delivered by the room fanout
                    // lanes (engine/rooms.rs), never on this worker.
                    let online = self.shared.registry.room_online(r) as u64;
                    let plan = self.plan(&conv, online, r);
                    self.shared.registry.rooms().on_committed(r, msgs, plan);
                    0
                }
            };
            metrics::counter!("im_deliveries_total").increment(delivered as u64);
        }
    }

    fn plan(&self, conv: &ConversationId, online: u64, channel: &ChannelId) -> FanoutPlan {
        let member_count = match conv {
            ConversationId::Group(_) => self.groups.get(channel).map_or(online, |i| i.member_count),
            _ => online,
        };
        self.shared.policy.plan(&FanoutInput {
            kind: conv.kind(),
            member_count,
            online_sessions: online,
        })
    }

    /// Pushes a direct conversation's messages to one user's sessions, named
    /// as that user sees the conversation.
    fn deliver_to_user(&self, user: &UserId, msgs: &[StoredMessage]) -> usize {
        let sessions = self.shared.registry.user_sessions(user);
        if sessions.is_empty() {
            if let Some(push) = &self.shared.offline_push {
                for m in msgs.iter().filter(|m| &m.sender != user) {
                    push.dispatch(OfflineNotice {
                        message: m.clone(),
                        users: vec![user.clone()],
                    });
                }
            }
            return 0;
        }
        let frame = encode_server_frame(&server_frame(
            0,
            pb::server_frame::Body::Push(pb::Push {
                messages: msgs.iter().map(|m| message_to_wire(m, user)).collect(),
            }),
        ));
        sessions.iter().filter(|s| s.send(frame.clone())).count()
    }

    fn offline_push(&self, group: &ChannelId, msgs: &[StoredMessage]) {
        let Some(push) = &self.shared.offline_push else {
            return;
        };
        let Some(members) = self.groups.get(group).and_then(|i| i.members.clone()) else {
            return;
        };
        let registry = &self.shared.registry;
        for m in msgs {
            let users: Vec<UserId> = members
                .iter()
                .filter(|u| **u != m.sender && !registry.is_online(u))
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

fn dedup_key(s: &PendingSend) -> Option<DedupKey> {
    s.client_msg_id.as_ref().map(|id| DedupKey {
        user: s.sender.clone(),
        device: s.device.clone(),
        client_msg_id: id.clone(),
    })
}

/// Folds sends that repeat an earlier send's key within one batch into it.
fn dedup_within_batch(sends: Vec<PendingSend>) -> Vec<Admitted> {
    let mut out: Vec<Admitted> = Vec::with_capacity(sends.len());
    let mut seen: HashMap<DedupKey, usize> = HashMap::new();
    for s in sends {
        if let Some(key) = dedup_key(&s) {
            if let Some(&i) = seen.get(&key) {
                out[i].retries.push(s.reply);
                continue;
            }
            seen.insert(key, out.len());
        }
        out.push(Admitted {
            send: s,
            retries: Vec::new(),
        });
    }
    out
}

fn not_member(group: &ChannelId) -> EngineError {
    EngineError::Forbidden(format!("not a member of group {group}"))
}

fn store_failure(msg: &str, retryable: bool) -> EngineError {
    EngineError::Store(StoreError::Backend {
        source: msg.to_owned().into(),
        retryable,
    })
}

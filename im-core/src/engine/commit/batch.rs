//! [`CommitBatch`]: the state machine of one group commit.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::error::{SharedStoreError, StoreError};
use crate::fast_hash::{FastMap, FastSet};
use crate::ids::{ChannelId, ConversationId, DedupKey, MessageIdGenerator, Seq, UserId};
use crate::sequencer::assign_seqs;
use crate::store::{AppendRequest, BlockPair, MessageEvent, NewMessage, StoredMessage};

use super::step::{Committed, GroupFacts, GroupLookup, GroupMembers, PendingSend, Refusal, Step};

/// Appends retried after duplicate or seq conflicts before giving up.
const APPEND_ATTEMPTS: usize = 4;

/// A send that passed authorization, with the sends that retried it in the
/// same batch.
pub(super) struct Admitted<R> {
    pub(super) send: PendingSend<R>,
    pub(super) retries: Vec<R>,
}

/// A run of sends appended together; split in halves when the store refuses
/// it for a reason that is not its own, until the one at fault is alone.
pub(super) struct Chunk<R> {
    pub(super) sends: Vec<Admitted<R>>,
    pub(super) attempts: usize,
}

/// Where the machine is.
pub(super) enum Phase<R> {
    /// Sends in, nothing asked yet.
    Start(Vec<PendingSend<R>>),
    /// Waiting for group facts.
    AwaitGroups(Vec<PendingSend<R>>),
    /// Authorizing: big groups are checked one by one.
    Authorize(Authorizing<R>),
    /// Waiting for originals of refused sends; the admitted ones wait too.
    AwaitRefusedOriginals {
        refused: Vec<(PendingSend<R>, Refusal)>,
        admitted: Vec<PendingSend<R>>,
    },
    /// Appending the chunks.
    Append,
    /// Waiting for heads.
    AwaitHeads(Vec<ConversationId>),
    /// Waiting for the append of the top chunk.
    AwaitAppend(Vec<StoredMessage>),
    /// Waiting for originals of sends the store called duplicates.
    AwaitDuplicates(Vec<Admitted<R>>),
    /// Finished.
    Done,
}

/// Authorization in progress.
pub(super) struct Authorizing<R> {
    pub(super) admitted: Vec<PendingSend<R>>,
    pub(super) refused: Vec<(PendingSend<R>, Refusal)>,
    to_check: VecDeque<(ChannelId, Vec<PendingSend<R>>)>,
    checking: Option<Vec<PendingSend<R>>>,
    /// Direct sends from clients, checked against blocks after the groups.
    pub(super) direct: Vec<PendingSend<R>>,
    /// The direct sends whose blocks are being asked, with the pairs asked.
    pub(super) checking_blocks: Option<(Vec<PendingSend<R>>, Vec<BlockPair>)>,
}

/// One batch's commit, from sends in to answers and deliveries out.
pub(crate) struct CommitBatch<R> {
    pub(super) phase: Phase<R>,
    groups: FastMap<ChannelId, Arc<GroupFacts>>,
    pub(super) heads: FastMap<ConversationId, Seq>,
    /// A stack: the last chunk is appended next.
    pub(super) chunks: Vec<Chunk<R>>,
    pub(super) out: VecDeque<Step<R>>,
    now_ms: i64,
}

impl<R> CommitBatch<R> {
    /// A batch of sends, committed at `now_ms`.
    pub(crate) fn new(sends: Vec<PendingSend<R>>, now_ms: i64) -> Self {
        Self {
            phase: Phase::Start(sends),
            groups: FastMap::default(),
            heads: FastMap::default(),
            chunks: Vec::new(),
            out: VecDeque::new(),
            now_ms,
        }
    }

    /// The next thing to do. After an IO step, call its `on_*` method before
    /// asking again.
    pub(crate) fn next_step(&mut self, ids: &MessageIdGenerator) -> Step<R> {
        loop {
            if let Some(step) = self.out.pop_front() {
                return step;
            }
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Start(sends) => self.start(sends),
                Phase::Authorize(auth) => self.authorize(auth),
                Phase::Append => self.append_next(ids),
                Phase::Done => return Step::Done,
                waiting => {
                    // An IO step is outstanding: the worker must feed it first.
                    self.phase = waiting;
                    return Step::Done;
                }
            }
        }
    }

    fn start(&mut self, sends: Vec<PendingSend<R>>) {
        let mut seen = FastSet::default();
        let groups: Vec<ChannelId> = sends
            .iter()
            .filter_map(|s| match &s.conversation {
                ConversationId::Group(g) if seen.insert(g) => Some(g.clone()),
                _ => None,
            })
            .collect();
        if groups.is_empty() {
            self.phase = Phase::Authorize(self.sort_by_facts(sends));
        } else {
            self.out.push_back(Step::LoadGroups(groups));
            self.phase = Phase::AwaitGroups(sends);
        }
    }

    /// Takes the facts of the groups asked for: `Ok(None)` for a group that
    /// does not exist.
    pub(crate) fn on_groups(&mut self, facts: Vec<GroupLookup>) {
        let Phase::AwaitGroups(sends) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        let mut failed: FastMap<ChannelId, SharedStoreError> = FastMap::default();
        let mut missing: FastSet<ChannelId> = FastSet::default();
        for (group, result) in facts {
            match result {
                Ok(Some(f)) => {
                    self.groups.insert(group, f);
                }
                Ok(None) => {
                    missing.insert(group);
                }
                Err(e) => {
                    failed.insert(group, e.shared());
                }
            }
        }
        let mut known = Vec::with_capacity(sends.len());
        for s in sends {
            let group = match &s.conversation {
                ConversationId::Group(g) => g,
                _ => {
                    known.push(s);
                    continue;
                }
            };
            if let Some(e) = failed.get(group) {
                self.fail_store(s, e);
            } else if missing.contains(group) || !self.groups.contains_key(group) {
                if s.check_membership {
                    // A client hears the same as for a group it is not in,
                    // so group names cannot be probed.
                    self.refuse(s);
                } else {
                    let error = StoreError::NotFound(format!("group {group}")).into();
                    self.answer_failed(s, error, None);
                }
            } else {
                known.push(s);
            }
        }
        self.phase = Phase::Authorize(self.sort_by_facts(known));
    }

    /// Splits sends by what authorization they need, keeping each
    /// conversation's sends on one path so their order holds.
    fn sort_by_facts(&self, sends: Vec<PendingSend<R>>) -> Authorizing<R> {
        let mut auth = Authorizing {
            admitted: Vec::with_capacity(sends.len()),
            refused: Vec::new(),
            to_check: VecDeque::new(),
            checking: None,
            direct: Vec::new(),
            checking_blocks: None,
        };
        let mut check_index: FastMap<ChannelId, usize> = FastMap::default();
        for s in sends {
            let group = match &s.conversation {
                ConversationId::Group(g) if s.check_membership => g,
                ConversationId::Direct(_) if s.check_membership => {
                    auth.direct.push(s);
                    continue;
                }
                _ => {
                    auth.admitted.push(s);
                    continue;
                }
            };
            let facts = self.groups.get(group);
            // A muted member may still recall; everything else waits.
            if let Some(until) = facts.and_then(|f| f.muted_until(&s.sender, self.now_ms))
                && !matches!(s.event, Some(MessageEvent::Recall { .. }))
            {
                auth.refused.push((s, Refusal::Muted(until)));
                continue;
            }
            match facts.map(|f| &f.members) {
                Some(GroupMembers::Listed(m)) if m.contains(&s.sender) => auth.admitted.push(s),
                Some(GroupMembers::Listed(_)) | None => auth.refused.push((s, Refusal::NotMember)),
                Some(GroupMembers::Unlisted) => {
                    let i = *check_index.entry(group.clone()).or_insert_with(|| {
                        auth.to_check.push_back((group.clone(), Vec::new()));
                        auth.to_check.len() - 1
                    });
                    auth.to_check[i].1.push(s);
                }
            }
        }
        auth
    }

    fn authorize(&mut self, mut auth: Authorizing<R>) {
        if let Some((group, sends)) = auth.to_check.pop_front() {
            let users = sends.iter().map(|s| s.sender.clone()).collect();
            auth.checking = Some(sends);
            self.out.push_back(Step::CheckMembers { group, users });
            self.phase = Phase::Authorize(auth);
            return;
        }
        if self.check_blocks(&mut auth) {
            self.phase = Phase::Authorize(auth);
            return;
        }
        let keys: Vec<DedupKey> = auth
            .refused
            .iter()
            .filter_map(|(s, _)| s.dedup_key())
            .collect();
        if keys.is_empty() {
            for (s, why) in auth.refused {
                self.refuse_for(s, why);
            }
            self.begin_append(auth.admitted);
        } else {
            self.out.push_back(Step::FindOriginals(keys));
            self.phase = Phase::AwaitRefusedOriginals {
                refused: auth.refused,
                admitted: auth.admitted,
            };
        }
    }

    /// Takes the store's membership answer for the group being checked.
    pub(crate) fn on_members(&mut self, result: Result<Vec<bool>, StoreError>) {
        let Phase::Authorize(mut auth) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        let sends = auth.checking.take().unwrap_or_default();
        match result {
            Ok(flags) => {
                let mut flags = flags.into_iter();
                for s in sends {
                    if flags.next().unwrap_or(false) {
                        auth.admitted.push(s);
                    } else {
                        auth.refused.push((s, Refusal::NotMember));
                    }
                }
            }
            Err(e) => {
                let e = e.shared();
                for s in sends {
                    self.fail_store(s, &e);
                }
            }
        }
        self.phase = Phase::Authorize(auth);
    }

    /// Takes the committed originals of the keys asked for, in order.
    pub(crate) fn on_originals(&mut self, found: Result<Vec<Option<StoredMessage>>, StoreError>) {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::AwaitRefusedOriginals { refused, admitted } => {
                self.answer_refused(refused, found);
                self.begin_append(admitted);
            }
            Phase::AwaitDuplicates(dups) => {
                self.answer_duplicates(dups, found);
                self.phase = Phase::Append;
            }
            other => self.phase = other,
        }
    }

    /// Folds in-batch retries and starts appending.
    fn begin_append(&mut self, admitted: Vec<PendingSend<R>>) {
        let sends = fold_retries(admitted);
        if !sends.is_empty() {
            self.chunks.push(Chunk { sends, attempts: 0 });
        }
        self.phase = Phase::Append;
    }

    /// Asks for missing heads, or builds the top chunk's append.
    fn append_next(&mut self, ids: &MessageIdGenerator) {
        let Some(chunk) = self.chunks.last() else {
            self.phase = Phase::Done;
            return;
        };
        let mut seen = FastSet::default();
        let missing: Vec<ConversationId> = chunk
            .sends
            .iter()
            .map(|a| &a.send.conversation)
            .filter(|c| !self.heads.contains_key(*c) && seen.insert(*c))
            .cloned()
            .collect();
        if !missing.is_empty() {
            self.out.push_back(Step::LoadHeads(missing.clone()));
            self.phase = Phase::AwaitHeads(missing);
            return;
        }
        let assigned = assign_seqs(
            &self.heads,
            chunk.sends.iter().map(|a| &a.send.conversation),
        );
        let mut req = AppendRequest {
            messages: Vec::with_capacity(chunk.sends.len()),
        };
        for (a, seq) in chunk.sends.iter().zip(assigned.seqs) {
            let s = &a.send;
            let message = StoredMessage {
                conversation: s.conversation.clone(),
                seq,
                message_id: ids.next(),
                sender: s.sender.clone(),
                sender_device: s.device.clone(),
                client_msg_id: s.client_msg_id.clone(),
                body: s.body.clone(),
                server_time_ms: self.now_ms,
                content_type: s.content_type.clone(),
                event: s.event,
                recalled: false,
                edit_count: 0,
            };
            let inbox_recipients = self.inbox_recipients(&s.conversation);
            req.messages.push(NewMessage {
                message,
                inbox_recipients,
            });
        }
        // Inbox recipient lists can be long: keep only the messages for after.
        let messages = req.messages.iter().map(|m| m.message.clone()).collect();
        self.out.push_back(Step::Append(req));
        self.phase = Phase::AwaitAppend(messages);
    }

    /// Takes the heads asked for, in order.
    pub(crate) fn on_heads(&mut self, result: Result<Vec<Seq>, StoreError>) {
        let Phase::AwaitHeads(convs) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        match result {
            Ok(heads) if heads.len() == convs.len() => {
                self.heads.extend(convs.into_iter().zip(heads));
                self.phase = Phase::Append;
            }
            Ok(_) => self.fail_remaining(
                StoreError::Backend {
                    source: "the store answered a different number of heads".into(),
                    retryable: true,
                }
                .shared(),
            ),
            Err(e) => self.fail_remaining(e.shared()),
        }
    }

    /// Takes the outcome of the top chunk's append.
    pub(crate) fn on_appended(&mut self, result: Result<(), StoreError>) {
        let Phase::AwaitAppend(messages) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        let Some(mut chunk) = self.chunks.pop() else {
            return;
        };
        chunk.attempts += 1;
        let again = chunk.attempts < APPEND_ATTEMPTS;
        match result {
            Ok(()) => self.committed(chunk, messages),
            Err(StoreError::Duplicate(keys)) if again => self.split_duplicates(chunk, keys),
            Err(StoreError::SeqConflict { .. }) if again => {
                self.out
                    .push_back(Step::ForgetHeads(self.heads.keys().cloned().collect()));
                self.heads.clear();
                self.chunks.push(chunk);
                self.phase = Phase::Append;
            }
            Err(e) if !e.is_retryable() && !conflict(&e) => self.narrow_down(chunk, e),
            Err(e) => {
                self.chunks.push(chunk);
                self.fail_remaining(e.shared());
            }
        }
    }

    /// A refusal that is not the store's fault (bad input, a value it cannot
    /// hold): halve the chunk until the send at fault is alone, and fail only
    /// that one, so no other sender's message fails with it.
    fn narrow_down(&mut self, mut chunk: Chunk<R>, e: StoreError) {
        if chunk.sends.len() > 1 {
            metrics::counter!("im_commit_splits_total").increment(1);
            let tail = chunk.sends.split_off(chunk.sends.len() / 2);
            for sends in [tail, chunk.sends] {
                self.chunks.push(Chunk { sends, attempts: 0 });
            }
        } else if let Some(a) = chunk.sends.pop() {
            static REFUSED: crate::log_limit::LogLimit = crate::log_limit::LogLimit::per_second(5);
            if let Some(suppressed) = REFUSED.allow() {
                tracing::info!(error = %e, conversation = %a.send.conversation, suppressed, "store refused one send");
            }
            metrics::counter!("im_send_failures_total").increment(1);
            self.fail_admitted(a, &e.shared());
        }
        self.phase = Phase::Append;
    }

    fn committed(&mut self, chunk: Chunk<R>, messages: Vec<StoredMessage>) {
        let mut heads: Vec<(ConversationId, Seq)> = Vec::new();
        for m in &messages {
            match heads.iter_mut().find(|(c, _)| *c == m.conversation) {
                Some((_, h)) => *h = m.seq,
                None => heads.push((m.conversation.clone(), m.seq)),
            }
        }
        self.heads.extend(heads.iter().cloned());
        for (a, message) in chunk.sends.into_iter().zip(&messages) {
            for r in a.retries {
                self.answer_committed(r, message, true);
            }
            self.answer_committed(a.send.reply, message, false);
        }
        let groups = messages
            .iter()
            .filter_map(|m| match &m.conversation {
                ConversationId::Group(g) => Some((g.clone(), self.groups.get(g)?.clone())),
                _ => None,
            })
            .collect();
        self.out.push_back(Step::Committed(Committed {
            messages,
            groups,
            heads,
        }));
        self.phase = Phase::Append;
    }

    /// Answers the sends the store already has after a lookup; the rest
    /// are appended again.
    fn split_duplicates(&mut self, chunk: Chunk<R>, keys: Vec<DedupKey>) {
        let keys: FastSet<DedupKey> = keys.into_iter().collect();
        let (dups, rest): (Vec<Admitted<R>>, Vec<Admitted<R>>) = chunk
            .sends
            .into_iter()
            .partition(|a| a.send.dedup_key().is_some_and(|k| keys.contains(&k)));
        if !rest.is_empty() {
            self.chunks.push(Chunk {
                sends: rest,
                attempts: chunk.attempts,
            });
        }
        if dups.is_empty() {
            // The store named keys this chunk does not have: append again.
            self.phase = Phase::Append;
            return;
        }
        let lookup = dups.iter().filter_map(|a| a.send.dedup_key()).collect();
        self.out.push_back(Step::FindOriginals(lookup));
        self.phase = Phase::AwaitDuplicates(dups);
    }

    /// Inbox entries go to every member under write diffusion, to no one
    /// under read; the decision is the one this batch's facts carry.
    fn inbox_recipients(&self, conversation: &ConversationId) -> Vec<UserId> {
        match conversation {
            ConversationId::Direct(pair) => pair.participants().cloned().collect(),
            ConversationId::Group(g) => match self.groups.get(g).map(|f| &f.members) {
                Some(GroupMembers::Listed(m)) => m.iter().cloned().collect(),
                Some(GroupMembers::Unlisted) | None => Vec::new(),
            },
            ConversationId::Room(_) => Vec::new(),
        }
    }
}

impl<R> Admitted<R> {
    fn alone(send: PendingSend<R>) -> Self {
        Self {
            send,
            retries: Vec::new(),
        }
    }
}

/// A duplicate or seq conflict that outlasted every attempt.
pub(super) fn conflict(e: &StoreError) -> bool {
    matches!(e, StoreError::Duplicate(_) | StoreError::SeqConflict { .. })
}

/// Folds sends that repeat an earlier send's key within one batch into it.
fn fold_retries<R>(sends: Vec<PendingSend<R>>) -> Vec<Admitted<R>> {
    let mut out: Vec<Admitted<R>> = Vec::with_capacity(sends.len());
    let mut seen: FastMap<DedupKey, usize> = FastMap::default();
    for s in sends {
        if let Some(key) = s.dedup_key() {
            if let Some(&i) = seen.get(&key) {
                out[i].retries.push(s.reply);
                continue;
            }
            seen.insert(key, out.len());
        }
        out.push(Admitted::alone(s));
    }
    out
}

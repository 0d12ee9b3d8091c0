//! Property tests of [`CommitBatch`] against an in-memory harness that
//! performs its steps the way the shard worker does, with a model store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::error::StoreError;
use crate::ids::{ChannelId, ConversationId, DedupKey, DeviceId, MessageIdGenerator, Seq, UserId};
use crate::store::{AppendRequest, StoredMessage};

fn user(i: u8) -> UserId {
    UserId::new(format!("u{i}")).expect("id")
}

fn group(i: u8) -> ChannelId {
    ChannelId::new(format!("g{i}")).expect("id")
}

/// A model store: timelines, committed keys and what each inbox received.
#[derive(Default)]
struct ModelStore {
    timelines: HashMap<ConversationId, Vec<StoredMessage>>,
    keys: HashMap<DedupKey, StoredMessage>,
    inboxes: HashMap<UserId, Vec<(ConversationId, Seq)>>,
    /// Groups: members and whether they are listed (write diffusion).
    groups: HashMap<ChannelId, (HashSet<UserId>, bool)>,
    /// Blocks: (blocker, blocked).
    blocks: HashSet<(UserId, UserId)>,
    /// Bodies the store refuses (a value it cannot hold).
    poison: Vec<u8>,
    /// Appends that fail as unavailable before the store recovers.
    outages: usize,
    /// Forget every group once their facts were handed out, as a worker's
    /// cache may evict them while the batch is in flight.
    forget_groups_after_load: bool,
    /// Members muted (in every group) until the time given.
    muted: HashMap<UserId, i64>,
}

impl ModelStore {
    fn append(&mut self, req: AppendRequest) -> Result<(), StoreError> {
        if self.outages > 0 {
            self.outages -= 1;
            return Err(StoreError::Unavailable("down".into()));
        }
        if req
            .messages
            .iter()
            .any(|m| m.message.body[..] == self.poison[..])
        {
            return Err(StoreError::Rejected("poison".into()));
        }
        let dups: Vec<DedupKey> = req
            .messages
            .iter()
            .filter_map(|m| key_of(&m.message))
            .filter(|k| self.keys.contains_key(k))
            .collect();
        if !dups.is_empty() {
            return Err(StoreError::Duplicate(dups));
        }
        let mut heads: HashMap<&ConversationId, Seq> = HashMap::new();
        for m in &req.messages {
            let c = &m.message.conversation;
            let head = heads
                .entry(c)
                .or_insert_with(|| self.timelines.get(c).map_or(0, |t| t.len() as Seq));
            if m.message.seq != *head + 1 {
                return Err(StoreError::SeqConflict {
                    conversation: c.clone(),
                    expected: *head,
                    actual: m.message.seq,
                });
            }
            *head += 1;
        }
        for m in req.messages {
            let msg = m.message;
            if let Some(k) = key_of(&msg) {
                self.keys.insert(k, msg.clone());
            }
            for u in m.inbox_recipients {
                self.inboxes
                    .entry(u)
                    .or_default()
                    .push((msg.conversation.clone(), msg.seq));
            }
            self.timelines
                .entry(msg.conversation.clone())
                .or_default()
                .push(msg);
        }
        Ok(())
    }

    fn facts(&self, g: &ChannelId) -> Option<Arc<GroupFacts>> {
        let (members, listed) = self.groups.get(g)?;
        Some(Arc::new(GroupFacts {
            member_count: members.len() as u64,
            members: if *listed {
                GroupMembers::Listed(Arc::new(members.clone()))
            } else {
                GroupMembers::Unlisted
            },
            muted: (!self.muted.is_empty())
                .then(|| Arc::new(self.muted.iter().map(|(u, t)| (u.clone(), *t)).collect())),
        }))
    }
}

fn key_of(m: &StoredMessage) -> Option<DedupKey> {
    m.client_msg_id.as_ref().map(|id| DedupKey {
        user: m.sender.clone(),
        device: m.sender_device.clone(),
        client_msg_id: id.clone(),
    })
}

/// Runs a batch to the end; returns the outcome per send index.
fn run(store: &mut ModelStore, sends: Vec<PendingSend<usize>>) -> HashMap<usize, Vec<Outcome>> {
    let ids = MessageIdGenerator::new();
    let mut batch = CommitBatch::new(sends, 1);
    let mut answers: HashMap<usize, Vec<Outcome>> = HashMap::new();
    loop {
        match batch.next_step(&ids) {
            Step::LoadGroups(gs) => {
                let facts = gs
                    .into_iter()
                    .map(|g| {
                        let f = store.facts(&g);
                        (g, Ok(f))
                    })
                    .collect();
                batch.on_groups(facts);
                if store.forget_groups_after_load {
                    store.groups.clear();
                }
            }
            Step::CheckMembers { group, users } => {
                let members = &store.groups[&group].0;
                batch.on_members(Ok(users.iter().map(|u| members.contains(u)).collect()));
            }
            Step::CheckBlocks(pairs) => {
                batch.on_blocks(Ok(pairs
                    .iter()
                    .map(|p| {
                        store
                            .blocks
                            .contains(&(p.blocker.clone(), p.blocked.clone()))
                    })
                    .collect()));
            }
            Step::FindOriginals(keys) => {
                batch.on_originals(Ok(keys
                    .iter()
                    .map(|k| store.keys.get(k).cloned())
                    .collect()));
            }
            Step::LoadHeads(convs) => batch.on_heads(Ok(convs
                .iter()
                .map(|c| store.timelines.get(c).map_or(0, |t| t.len() as Seq))
                .collect())),
            Step::Append(req) => {
                let r = store.append(req);
                batch.on_appended(r);
            }
            Step::ForgetHeads(_) | Step::Committed(_) => {}
            Step::Answer(i, outcome) => answers.entry(i).or_default().push(outcome),
            Step::Done => return answers,
        }
    }
}

/// One generated send: (sender, group, client id, poisoned).
type SendSpec = (u8, u8, u8, bool);

fn sends_strategy() -> impl Strategy<Value = Vec<SendSpec>> {
    proptest::collection::vec(
        (0u8..4, 0u8..3, 0u8..12, proptest::bool::weighted(0.1)),
        1..60,
    )
}

fn build(specs: &[SendSpec]) -> Vec<PendingSend<usize>> {
    specs
        .iter()
        .enumerate()
        .map(|(i, &(u, g, id, poisoned))| PendingSend {
            conversation: ConversationId::Group(group(g)),
            sender: user(u),
            device: DeviceId::new("d").expect("id"),
            // A poisoned send has a key of its own, so no good send folds into it.
            client_msg_id: Some(if poisoned {
                format!("p{i}")
            } else {
                format!("c{id}")
            }),
            body: if poisoned {
                "poison".into()
            } else {
                format!("m{i}").into()
            },
            content_type: crate::store::ContentType::Text,
            event: None,
            check_membership: true,
            reply: i,
        })
        .collect()
}

/// g0: listed (write diffusion) with u0..u2; g1: unlisted with u0..u2;
/// g2: listed with u0 and u3 only. u3 is not a member of g0 or g1.
fn model() -> ModelStore {
    let mut store = ModelStore {
        poison: b"poison".to_vec(),
        ..ModelStore::default()
    };
    let three: HashSet<UserId> = (0..3).map(user).collect();
    store.groups.insert(group(0), (three.clone(), true));
    store.groups.insert(group(1), (three, false));
    store
        .groups
        .insert(group(2), ([user(0), user(3)].into(), true));
    store
}

proptest! {
    #[test]
    fn every_send_is_answered_once_and_timelines_stay_gap_free(specs in sends_strategy()) {
        let mut store = model();
        let answers = run(&mut store, build(&specs));
        prop_assert_eq!(answers.len(), specs.len());
        prop_assert!(answers.values().all(|a| a.len() == 1));
        for t in store.timelines.values() {
            let seqs: Vec<Seq> = t.iter().map(|m| m.seq).collect();
            prop_assert_eq!(seqs, (1..=t.len() as Seq).collect::<Vec<_>>());
        }
    }

    #[test]
    fn only_members_commit_and_only_the_poisoned_fail(specs in sends_strategy()) {
        let mut store = model();
        let answers = run(&mut store, build(&specs));
        for (i, &(u, g, _, poisoned)) in specs.iter().enumerate() {
            let member = store.groups[&group(g)].0.contains(&user(u));
            match &answers[&i][0] {
                Outcome::Committed { message, .. } => {
                    prop_assert!(member, "send {} by a non-member committed", i);
                    prop_assert_eq!(&message.sender, &user(u));
                }
                Outcome::Failed { error, hold_back } => {
                    let expected = if !member { "forbidden" } else { "refused the input" };
                    prop_assert!(
                        error.to_string().contains(expected),
                        "send {} (member {}, poisoned {}): {}", i, member, poisoned, error
                    );
                    prop_assert!(member == poisoned || !member);
                    prop_assert!(hold_back.is_none());
                }
            }
        }
    }

    #[test]
    fn a_repeated_key_commits_once_and_every_copy_gets_that_message(specs in sends_strategy()) {
        let mut store = model();
        let answers = run(&mut store, build(&specs));
        let mut by_key: HashMap<(u8, u8), Seq> = HashMap::new();
        for (i, &(u, _, id, _)) in specs.iter().enumerate() {
            if let Outcome::Committed { message, .. } = &answers[&i][0] {
                let seq = *by_key.entry((u, id)).or_insert(message.seq);
                prop_assert_eq!(seq, message.seq, "key ({}, {}) committed twice", u, id);
            }
        }
        let committed: usize = store.timelines.values().map(Vec::len).sum();
        prop_assert_eq!(committed, store.keys.len());
    }

    #[test]
    fn inboxes_follow_each_groups_diffusion(specs in sends_strategy()) {
        let mut store = model();
        run(&mut store, build(&specs));
        for (g, (members, listed)) in &store.groups {
            let conv = ConversationId::Group(g.clone());
            let count = store.timelines.get(&conv).map_or(0, Vec::len);
            for m in members {
                let got = store
                    .inboxes
                    .get(m)
                    .map_or(0, |e| e.iter().filter(|(c, _)| *c == conv).count());
                prop_assert_eq!(got, if *listed { count } else { 0 }, "{} in {}", m, g);
            }
        }
    }

    #[test]
    fn one_senders_messages_commit_in_the_order_sent(specs in sends_strategy()) {
        let mut store = model();
        let answers = run(&mut store, build(&specs));
        let mut last: HashMap<(u8, u8), Seq> = HashMap::new();
        for (i, &(u, g, _, _)) in specs.iter().enumerate() {
            if let Outcome::Committed { message, duplicate: false } = &answers[&i][0] {
                let prev = last.insert((u, g), message.seq).unwrap_or(0);
                prop_assert!(message.seq > prev, "send {} overtook an earlier one", i);
            }
        }
    }

    #[test]
    fn an_outage_fails_everything_retryably_and_commits_nothing(specs in sends_strategy()) {
        let mut store = model();
        store.poison = b"-".to_vec();
        store.outages = usize::MAX;
        let answers = run(&mut store, build(&specs));
        prop_assert!(store.timelines.is_empty());
        // Per key, the one send that was appended holds its session's later
        // sends back; its folded copies need no hold of their own.
        let mut holds: HashMap<(u8, String), usize> = HashMap::new();
        for (i, &(u, g, _, _)) in specs.iter().enumerate() {
            let member = store.groups[&group(g)].0.contains(&user(u));
            match &answers[&i][0] {
                Outcome::Failed { error, hold_back } if member => {
                    prop_assert!(error.is_retryable(), "{}", error);
                    if let Some((conv, id)) = hold_back {
                        prop_assert_eq!(conv, &ConversationId::Group(group(g)));
                        *holds.entry((u, id.clone())).or_default() += 1;
                    }
                }
                Outcome::Failed { .. } => {}
                Outcome::Committed { .. } => prop_assert!(false, "committed during an outage"),
            }
        }
        prop_assert!(holds.values().all(|n| *n == 1), "{:?}", holds);
        let member_keys: HashSet<(u8, String)> = specs
            .iter()
            .enumerate()
            .filter(|(_, s)| store.groups[&group(s.1)].0.contains(&user(s.0)))
            .map(|(i, s)| (s.0, if s.3 { format!("p{i}") } else { format!("c{}", s.2) }))
            .collect();
        prop_assert_eq!(holds.len(), member_keys.len());
    }
}

#[test]
fn a_batch_keeps_its_group_facts_when_the_worker_forgets_them() {
    // The worker's cache may evict a group between steps; the batch decides
    // inbox recipients from the facts it was handed, never from a cache.
    let mut store = model();
    store.forget_groups_after_load = true;
    let sends = build(&[(0, 0, 1, false), (3, 2, 2, false), (0, 0, 3, false)]);
    run(&mut store, sends);
    assert!(
        store.groups.is_empty(),
        "the groups were forgotten mid-batch"
    );
    let inbox = |u: u8| store.inboxes.get(&user(u)).map_or(0, Vec::len);
    assert_eq!((inbox(0), inbox(1), inbox(2), inbox(3)), (3, 2, 2, 1));
}

/// One generated direct or group send: (sender, peer or group, client id,
/// to a group).
type MixedSpec = (u8, u8, u8, bool);

fn mixed_strategy() -> impl Strategy<Value = Vec<MixedSpec>> {
    proptest::collection::vec(
        (0u8..4, 0u8..4, 0u8..12, proptest::bool::weighted(0.3)),
        1..60,
    )
}

fn build_mixed(specs: &[MixedSpec]) -> Vec<PendingSend<usize>> {
    let groups: Vec<SendSpec> = specs
        .iter()
        .map(|&(u, g, id, _)| (u, g % 3, id, false))
        .collect();
    build(&groups)
        .into_iter()
        .zip(specs)
        .map(|(mut s, &(u, peer, _, to_group))| {
            if !to_group {
                s.conversation = ConversationId::direct(user(u), user(peer));
            }
            s
        })
        .collect()
}

/// The model with u1 blocking u0 and u2 blocking u3.
fn blocking_model() -> ModelStore {
    let mut store = model();
    store.blocks.insert((user(1), user(0)));
    store.blocks.insert((user(2), user(3)));
    store
}

fn blocked_between(a: u8, b: u8) -> bool {
    let pair = (a.min(b), a.max(b));
    pair == (0, 1) || pair == (2, 3)
}

proptest! {
    #[test]
    fn direct_sends_between_blocked_users_are_refused_either_way(specs in mixed_strategy()) {
        let mut store = blocking_model();
        let answers = run(&mut store, build_mixed(&specs));
        prop_assert_eq!(answers.len(), specs.len());
        for (i, &(u, peer, _, to_group)) in specs.iter().enumerate() {
            let outcome = &answers[&i][0];
            if to_group {
                // Blocks never touch groups.
                let member = store.groups[&group(peer % 3)].0.contains(&user(u));
                prop_assert_eq!(matches!(outcome, Outcome::Committed { .. }), member);
                continue;
            }
            match outcome {
                Outcome::Committed { duplicate, .. } => prop_assert!(
                    !blocked_between(u, peer) || *duplicate,
                    "send {} between blocked users committed", i
                ),
                Outcome::Failed { error, hold_back } => {
                    prop_assert!(blocked_between(u, peer), "send {}: {}", i, error);
                    prop_assert!(matches!(error, crate::error::EngineError::Blocked(_)));
                    prop_assert!(!error.is_retryable());
                    prop_assert!(hold_back.is_none());
                }
            }
        }
    }
}

#[test]
fn a_retry_of_a_message_sent_before_the_block_gets_its_original() {
    let mut store = model();
    let send = || build_mixed(&[(0, 1, 7, false)]);
    let first = run(&mut store, send());
    let Outcome::Committed { message, .. } = &first[&0][0] else {
        panic!("not committed: {:?}", first[&0]);
    };
    let seq = message.seq;
    store.blocks.insert((user(1), user(0)));
    let again = run(&mut store, send());
    assert!(
        matches!(&again[&0][0], Outcome::Committed { message, duplicate: true } if message.seq == seq),
        "{:?}",
        again[&0]
    );
    let mut recall = build_mixed(&[(0, 1, 8, false)]);
    recall[0].event = Some(crate::store::MessageEvent::Recall { target: seq });
    let recalled = run(&mut store, recall);
    assert!(matches!(
        &recalled[&0][0],
        Outcome::Committed {
            duplicate: false,
            ..
        }
    ));
    let fresh = run(&mut store, build_mixed(&[(0, 1, 9, false)]));
    assert!(matches!(
        &fresh[&0][0],
        Outcome::Failed {
            error: crate::error::EngineError::Blocked(_),
            ..
        }
    ));
}

/// A muted member's sends and edits are refused with `Muted` (in write and
/// read diffusion groups alike), a recall passes, and a mute that ended
/// (the batch commits at time 1) no longer counts.
#[test]
fn muted_members_are_refused_until_their_mute_ends() {
    let mut store = model();
    store.muted.insert(user(1), 5);
    store.muted.insert(user(2), 1);
    let mut sends = build(&[
        (0, 0, 0, false),
        (1, 0, 1, false),
        (2, 0, 2, false),
        (1, 1, 3, false),
    ]);
    let mut recall = build(&[(1, 0, 4, false)]).remove(0);
    recall.event = Some(crate::store::MessageEvent::Recall { target: 1 });
    recall.reply = 4;
    sends.push(recall);
    let answers = run(&mut store, sends);
    let muted = |i: usize| {
        matches!(
            answers[&i].as_slice(),
            [Outcome::Failed {
                error: crate::error::EngineError::Muted(_),
                ..
            }]
        )
    };
    let committed = |i: usize| matches!(answers[&i].as_slice(), [Outcome::Committed { .. }]);
    assert!(committed(0) && committed(2), "{answers:?}");
    assert!(muted(1) && muted(3), "{answers:?}");
    assert!(committed(4), "a muted member may still recall: {answers:?}");
}

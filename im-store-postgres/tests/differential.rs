//! Random operation sequences run against the PostgreSQL store and the
//! in-memory reference store; every answer must be identical.
//!
//! This is what makes the suite fail against a store that drops, duplicates
//! or reorders anything: every read (ranges, inboxes, dedup lookups,
//! conversation lists, membership) is compared with the reference after
//! random appends that include duplicates, seq conflicts and retention.

mod common;

use std::fmt::Debug;

use bytes::Bytes;
use common::*;
use im_core::error::StoreError;
use im_core::ids::{ChannelId, ConversationId, DedupKey, DeviceId, MessageId, UserId};
use im_core::store::{
    AppendRequest, ConversationStatesRequest, CursorUpdate, Cursors, InboxRequest, Inboxes,
    Membership, NewMessage, RangeRequest, Store, StoredMessage, Timeline,
};
use im_store_memory::{MemoryStore, MemoryStoreConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

const USERS: &[&str] = &["a", "b", "c", "d"];
const GROUPS: &[&str] = &["g1", "g2"];
const DEVICES: &[&str] = &["phone", "tablet"];

fn conversations() -> Vec<ConversationId> {
    vec![
        group("g1"),
        group("g2"),
        direct("a", "b"),
        direct("a", "c"),
        direct("c", "c"),
        ConversationId::room("r1").expect("valid"),
    ]
}

#[derive(Debug, Clone)]
struct MsgSpec {
    conv: usize,
    sender: usize,
    device: usize,
    cmid: Option<u8>,
    recipients: Vec<usize>,
    /// Added to the correct seq: 0 almost always, ±1 to provoke conflicts.
    skew: i8,
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<MsgSpec>),
    Range {
        conv: usize,
        after: u64,
        until: Option<u64>,
        limit: usize,
        newest: bool,
    },
    Inbox {
        user: usize,
        after: u64,
        limit: usize,
    },
    InboxHead(usize),
    Heads(Vec<usize>),
    Get(Vec<(usize, u64)>),
    Find(Vec<(usize, usize, u8)>),
    Cursors(Vec<(usize, usize, Option<u64>, Option<u64>)>),
    States {
        user: usize,
        only: Option<Vec<usize>>,
        cap: u32,
        limit: usize,
    },
    CreateGroup(usize, Vec<usize>),
    AddMembers(usize, Vec<usize>),
    RemoveMembers(usize, Vec<usize>),
    MemberCount(usize),
    AreMembers(usize, Vec<usize>),
    Members(usize, Option<usize>, usize),
    UserGroups(usize),
}

fn users_vec() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..USERS.len(), 0..4)
}

fn msg_spec() -> impl Strategy<Value = MsgSpec> {
    (
        0..6usize,
        0..USERS.len(),
        0..DEVICES.len(),
        prop::option::weighted(0.6, 0..8u8),
        users_vec(),
        prop_oneof![18 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)],
    )
        .prop_map(|(conv, sender, device, cmid, recipients, skew)| MsgSpec {
            conv,
            sender,
            device,
            cmid,
            recipients,
            skew,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let group_ix = 0..GROUPS.len() + 1; // the last one never exists
    prop_oneof![
        6 => prop::collection::vec(msg_spec(), 1..6).prop_map(Op::Append),
        2 => (0..6usize, 0..8u64, prop::option::of(0..10u64), 0..6usize, any::<bool>())
            .prop_map(|(conv, after, until, limit, newest)| Op::Range { conv, after, until, limit, newest }),
        2 => (0..USERS.len(), 0..10u64, 0..6usize)
            .prop_map(|(user, after, limit)| Op::Inbox { user, after, limit }),
        1 => (0..USERS.len()).prop_map(Op::InboxHead),
        1 => prop::collection::vec(0..6usize, 0..4).prop_map(Op::Heads),
        1 => prop::collection::vec((0..6usize, 0..8u64), 0..5).prop_map(Op::Get),
        1 => prop::collection::vec((0..USERS.len(), 0..DEVICES.len(), 0..8u8), 0..4).prop_map(Op::Find),
        2 => prop::collection::vec(
                (0..USERS.len(), 0..6usize, prop::option::of(0..8u64), prop::option::of(0..8u64)),
                0..4,
            ).prop_map(Op::Cursors),
        2 => (0..USERS.len(), prop::option::of(prop::collection::vec(0..6usize, 0..4)), 0..4u32, 0..8usize)
            .prop_map(|(user, only, cap, limit)| Op::States { user, only, cap, limit }),
        1 => (group_ix.clone(), users_vec()).prop_map(|(g, u)| Op::CreateGroup(g, u)),
        1 => (group_ix.clone(), users_vec()).prop_map(|(g, u)| Op::AddMembers(g, u)),
        1 => (group_ix.clone(), users_vec()).prop_map(|(g, u)| Op::RemoveMembers(g, u)),
        1 => group_ix.clone().prop_map(Op::MemberCount),
        1 => (group_ix.clone(), users_vec()).prop_map(|(g, u)| Op::AreMembers(g, u)),
        1 => (group_ix.clone(), prop::option::of(0..USERS.len()), 0..4usize)
            .prop_map(|(g, a, l)| Op::Members(g, a, l)),
        1 => (0..USERS.len()).prop_map(Op::UserGroups),
    ]
}

fn channel(i: usize) -> ChannelId {
    ChannelId::new(GROUPS.get(i).copied().unwrap_or("missing")).expect("valid")
}

fn users_of(ix: &[usize]) -> Vec<UserId> {
    ix.iter().map(|&i| user(USERS[i])).collect()
}

/// Errors compared by kind and content (backend failures never match).
fn describe(e: &StoreError) -> String {
    match e {
        StoreError::Duplicate(keys) => format!("Duplicate({keys:?})"),
        StoreError::SeqConflict {
            conversation,
            expected,
            actual,
        } => format!("SeqConflict({conversation}, {expected}, {actual})"),
        StoreError::NotFound(what) => format!("NotFound({what})"),
        StoreError::AlreadyExists(what) => format!("AlreadyExists({what})"),
        other => format!("unexpected backend error: {other}"),
    }
}

fn same<T: PartialEq + Debug>(
    what: &str,
    pg: Result<T, StoreError>,
    mem: Result<T, StoreError>,
) -> Result<(), TestCaseError> {
    match (pg, mem) {
        (Ok(p), Ok(m)) => prop_assert_eq!(p, m, "{}", what),
        (Err(p), Err(m)) => prop_assert_eq!(describe(&p), describe(&m), "{}", what),
        (p, m) => prop_assert!(false, "{what}: postgres {p:?} vs memory {m:?}"),
    }
    Ok(())
}

async fn build_append(mem: &MemoryStore, specs: &[MsgSpec], next_id: &mut u64) -> AppendRequest {
    let convs = conversations();
    let heads = mem
        .head_seqs(&convs)
        .await
        .expect("memory store never fails");
    let mut counts = vec![0u64; convs.len()];
    let messages = specs
        .iter()
        .map(|s| {
            counts[s.conv] += 1;
            let seq = (heads[s.conv] + counts[s.conv]).saturating_add_signed(i64::from(s.skew));
            *next_id += 1;
            NewMessage {
                message: StoredMessage {
                    conversation: convs[s.conv].clone(),
                    seq,
                    message_id: MessageId(*next_id),
                    sender: user(USERS[s.sender]),
                    sender_device: DeviceId::new(DEVICES[s.device]).expect("valid"),
                    client_msg_id: s.cmid.map(|c| format!("m{c}")),
                    body: Bytes::from(format!("body {next_id}")),
                    server_time_ms: i64::try_from(*next_id).unwrap_or(0),
                    content_type: im_core::store::ContentType::Text,
                    event: None,
                    recalled: false,
                    edit_count: 0,
                },
                inbox_recipients: users_of(&s.recipients),
            }
        })
        .collect();
    AppendRequest { messages }
}

async fn apply(
    pg: &dyn Store,
    mem: &MemoryStore,
    op: &Op,
    next_id: &mut u64,
) -> Result<(), TestCaseError> {
    let convs = conversations();
    match op {
        Op::Append(specs) => {
            let req = build_append(mem, specs, next_id).await;
            let m = mem.append(req.clone()).await;
            same("append", pg.append(req).await, m)?;
        }
        Op::Range {
            conv,
            after,
            until,
            limit,
            newest,
        } => {
            let req = RangeRequest {
                conversation: convs[*conv].clone(),
                after_seq: *after,
                until_seq: *until,
                limit: *limit,
                newest: *newest,
            };
            let p = pg
                .read_range(req.clone())
                .await
                .map(|r| (r.messages, r.head_seq, r.first_retained_seq));
            let m = mem
                .read_range(req)
                .await
                .map(|r| (r.messages, r.head_seq, r.first_retained_seq));
            same("read_range", p, m)?;
        }
        Op::Inbox {
            user: u,
            after,
            limit,
        } => {
            let req = InboxRequest {
                user: user(USERS[*u]),
                after_version: *after,
                limit: *limit,
            };
            let p = pg
                .read_inbox(req.clone())
                .await
                .map(|r| (r.entries, r.head_version, r.first_retained_version));
            let m = mem
                .read_inbox(req)
                .await
                .map(|r| (r.entries, r.head_version, r.first_retained_version));
            same("read_inbox", p, m)?;
        }
        Op::InboxHead(u) => {
            let id = user(USERS[*u]);
            same(
                "inbox_head",
                pg.inbox_head(&id).await,
                mem.inbox_head(&id).await,
            )?;
        }
        Op::Heads(ix) => {
            let list: Vec<_> = ix.iter().map(|&i| convs[i].clone()).collect();
            same(
                "head_seqs",
                pg.head_seqs(&list).await,
                mem.head_seqs(&list).await,
            )?;
        }
        Op::Get(refs) => {
            let refs: Vec<_> = refs.iter().map(|&(c, s)| (convs[c].clone(), s)).collect();
            same(
                "get_messages",
                pg.get_messages(&refs).await,
                mem.get_messages(&refs).await,
            )?;
        }
        Op::Find(keys) => {
            let keys: Vec<_> = keys
                .iter()
                .map(|&(u, d, c)| DedupKey {
                    user: user(USERS[u]),
                    device: DeviceId::new(DEVICES[d]).expect("valid"),
                    client_msg_id: format!("m{c}"),
                })
                .collect();
            same(
                "find_by_dedup_keys",
                pg.find_by_dedup_keys(&keys).await,
                mem.find_by_dedup_keys(&keys).await,
            )?;
        }
        Op::Cursors(updates) => {
            let updates: Vec<_> = updates
                .iter()
                .map(|&(u, c, delivered, read)| CursorUpdate {
                    user: user(USERS[u]),
                    conversation: convs[c].clone(),
                    delivered,
                    read,
                })
                .collect();
            same(
                "update_cursors",
                pg.update_cursors(updates.clone()).await,
                mem.update_cursors(updates).await,
            )?;
        }
        Op::States {
            user: u,
            only,
            cap,
            limit,
        } => {
            let req = ConversationStatesRequest {
                user: user(USERS[*u]),
                only: only
                    .as_ref()
                    .map(|ix| ix.iter().map(|&i| convs[i].clone()).collect()),
                unread_cap: *cap,
                limit: *limit,
            };
            same(
                "conversation_states",
                pg.conversation_states(req.clone()).await,
                mem.conversation_states(req).await,
            )?;
        }
        Op::CreateGroup(g, u) => {
            let (g, u) = (channel(*g), users_of(u));
            same(
                "create_group",
                pg.create_group(&g, &u).await,
                mem.create_group(&g, &u).await,
            )?;
        }
        Op::AddMembers(g, u) => {
            let (g, u) = (channel(*g), users_of(u));
            same(
                "add_members",
                pg.add_members(&g, &u).await,
                mem.add_members(&g, &u).await,
            )?;
        }
        Op::RemoveMembers(g, u) => {
            let (g, u) = (channel(*g), users_of(u));
            same(
                "remove_members",
                pg.remove_members(&g, &u).await,
                mem.remove_members(&g, &u).await,
            )?;
        }
        Op::MemberCount(g) => {
            let g = channel(*g);
            same(
                "member_count",
                pg.member_count(&g).await,
                mem.member_count(&g).await,
            )?;
        }
        Op::AreMembers(g, u) => {
            let (g, u) = (channel(*g), users_of(u));
            same(
                "are_members",
                pg.are_members(&g, &u).await,
                mem.are_members(&g, &u).await,
            )?;
        }
        Op::Members(g, after, limit) => {
            let g = channel(*g);
            let after = after.map(|a| user(USERS[a]));
            same(
                "members",
                pg.members(&g, after.as_ref(), *limit).await,
                mem.members(&g, after.as_ref(), *limit).await,
            )?;
        }
        Op::UserGroups(u) => {
            let u = user(USERS[*u]);
            same(
                "user_groups",
                pg.user_groups(&u).await,
                mem.user_groups(&u).await,
            )?;
        }
    }
    Ok(())
}

/// After the sequence: every conversation, inbox and list read in full.
async fn compare_everything(pg: &dyn Store, mem: &MemoryStore) -> Result<(), TestCaseError> {
    let mut next_id = 0;
    for conv in 0..conversations().len() {
        let op = Op::Range {
            conv,
            after: 0,
            until: None,
            limit: 1000,
            newest: false,
        };
        apply(pg, mem, &op, &mut next_id).await?;
    }
    for u in 0..USERS.len() {
        apply(
            pg,
            mem,
            &Op::Inbox {
                user: u,
                after: 0,
                limit: 1000,
            },
            &mut next_id,
        )
        .await?;
        let states = Op::States {
            user: u,
            only: None,
            cap: 100,
            limit: 100,
        };
        apply(pg, mem, &states, &mut next_id).await?;
        apply(pg, mem, &Op::UserGroups(u), &mut next_id).await?;
    }
    Ok(())
}

fn run_differential(inbox_capacity: u64, timeline_capacity: Option<u64>, prune_slack: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(24);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    });
    let result = runner.run(&prop::collection::vec(op(), 1..60), |ops| {
        rt.block_on(async {
            let db = TestDb::with(|c| {
                c.with_inbox_capacity(inbox_capacity)
                    .with_timeline_capacity(timeline_capacity)
                    .with_prune_slack(prune_slack)
            })
            .await;
            let mem = MemoryStore::with_config(
                MemoryStoreConfig::default()
                    .with_inbox_capacity(usize::try_from(inbox_capacity).expect("small"))
                    .with_timeline_capacity(
                        timeline_capacity.map(|t| usize::try_from(t).expect("small")),
                    ),
            );
            let mut next_id = 0;
            for op in &ops {
                apply(&db.store, &mem, op, &mut next_id).await?;
            }
            compare_everything(&db.store, &mem).await
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn matches_the_memory_store_without_timeline_retention() {
    run_differential(3, None, 2);
}

#[test]
fn matches_the_memory_store_with_timeline_retention() {
    run_differential(4, Some(3), 1);
}

#[test]
fn matches_the_memory_store_with_default_capacities() {
    run_differential(10_000, None, 256);
}

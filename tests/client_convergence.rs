//! SDK clients through a fault proxy converge: every acknowledged message is
//! seen exactly once by every member, in seq order (LOST = 0, DUP = 0).
//!
//! Four users chat through `im_testkit::fault_proxy` with a seeded random
//! fault per connection (cuts after N bytes, stalls, delays): direct chats,
//! a small group (write diffusion), a 1,000-member group (read diffusion;
//! only the four are online, the rest exist in the store) and a live room.
//! Replay a failure with `IM_FAULT_SEED=<seed printed on failure>`.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::Server;
use im_client::{Client, ClientConfig, ConversationKey, Event, Kind};
use im_engine::core::{ConversationId, EngineConfig};
use im_engine::store_memory::MemoryStore;
use im_testkit::fault_proxy::{Direction, Fault, FaultMix, FaultPlan, FaultProxy};
use parking_lot::Mutex;
use tokio::sync::watch;

const USERS: usize = 4;
const ROUNDS: usize = 8;
const SENDS_PER_ROUND: usize = 5;
const BIG_GROUP: usize = 1_000;
const DEADLINE: Duration = Duration::from_secs(25);

/// What one client's user saw.
#[derive(Debug, Default)]
struct View {
    /// Per conversation (canonical name), the (seq, client_msg_id) seen, in order.
    seen: BTreeMap<String, Vec<(u64, String)>>,
    /// client_msg_ids acknowledged to this client.
    acked: HashSet<String>,
    /// client_msg_ids refused for good.
    failed: Vec<String>,
    rooms_joined: usize,
}

/// One name for a conversation whichever member looks at it.
fn canonical(me: &str, key: &ConversationKey) -> String {
    match key.kind {
        Kind::Direct => {
            let (a, b) = if me < key.id.as_str() {
                (me, key.id.as_str())
            } else {
                (key.id.as_str(), me)
            };
            format!("dm:{a}:{b}")
        }
        _ => key.to_string(),
    }
}

/// Prints the seed if the test fails.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "client_convergence failed with seed {0}: replay with IM_FAULT_SEED={0}",
                self.0
            );
        }
    }
}

/// Waits until `done` holds for the views, woken by every change.
async fn wait_for(
    changed: &mut watch::Receiver<u64>,
    views: &[Arc<Mutex<View>>],
    what: &str,
    done: impl Fn(&[Arc<Mutex<View>>]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done(views) {
        match tokio::time::timeout_at(deadline, changed.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!("timed out waiting until {what}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_clients_converge_through_random_faults() {
    let seed = std::env::var("IM_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let _guard = SeedGuard(seed);
    println!("seed {seed}");

    let store = Arc::new(MemoryStore::new());
    let mut config = EngineConfig::default();
    // Room sends are rate-limited per user by default; this test is about
    // delivery, not limits.
    config.user_room_send_rate = 10_000;
    config.user_room_send_burst = 10_000;
    let server = Server::start_with(config, store.clone()).await;
    let users: Vec<String> = (0..USERS).map(|i| format!("u{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    server.group("team", &names).await;
    let mut big: Vec<String> = users.clone();
    big.extend((users.len()..BIG_GROUP).map(|i| format!("offline{i}")));
    let big_names: Vec<&str> = big.iter().map(String::as_str).collect();
    server.group("big", &big_names).await;

    // u0..u2 go through one proxy; the last user through its own, which
    // the test can take down to make that user miss messages entirely.
    let mix = FaultMix {
        max_bytes: 3 * 1024,
        max_stall: Duration::from_millis(700),
        ..FaultMix::default()
    };
    let proxy = FaultProxy::start(server.addr, FaultPlan::random(seed, mix))
        .await
        .expect("proxy");
    let down = Arc::new(AtomicBool::new(false));
    let mut lone_plan = FaultPlan::random(seed.wrapping_add(1), mix);
    let is_down = down.clone();
    let lone_proxy = FaultProxy::start(
        server.addr,
        FaultPlan::from_fn(move |n| {
            if is_down.load(Ordering::SeqCst) {
                Fault::CutAfter {
                    bytes: 0,
                    direction: Direction::ToServer,
                }
            } else {
                lone_plan.draw(n)
            }
        }),
    )
    .await
    .expect("proxy");

    let (changed_tx, mut changed) = watch::channel(0u64);
    let changed_tx = Arc::new(changed_tx);
    let mut clients = Vec::new();
    let mut views = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let via = if i == USERS - 1 { &lone_proxy } else { &proxy };
        let mut config = ClientConfig::new(via.addr().to_string(), format!("{user}:d"), "d");
        config.backoff_base = Duration::from_millis(5);
        config.backoff_max = Duration::from_millis(100);
        config.jitter_seed = Some(seed ^ i as u64);
        config.heartbeat = Some(Duration::from_millis(100));
        config.idle_timeout = Some(Duration::from_millis(400));
        config.retry_interval = Duration::from_millis(20);
        let (client, mut events) = Client::start(config).expect("client");
        let view = Arc::new(Mutex::new(View::default()));
        let (me, v, tx) = (user.clone(), view.clone(), changed_tx.clone());
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                {
                    let mut v = v.lock();
                    match event {
                        Event::Message(m) => {
                            let key = ConversationKey::from_wire(m.conversation.as_ref())
                                .expect("conversation");
                            v.seen
                                .entry(canonical(&me, &key))
                                .or_default()
                                .push((m.seq, m.client_msg_id));
                        }
                        Event::SendAcked { client_msg_id, .. } => {
                            v.acked.insert(client_msg_id);
                        }
                        Event::SendFailed { client_msg_id, .. } => v.failed.push(client_msg_id),
                        Event::RoomJoined(_) => v.rooms_joined += 1,
                        _ => continue,
                    }
                }
                tx.send_modify(|n| *n += 1);
            }
        });
        client.join_room("live").await.expect("join");
        clients.push(client);
        views.push(view);
    }
    // Room messages are seen from the head at the first join: every
    // member is in before anyone sends.
    wait_for(&mut changed, &views, "every client joined the room", |vs| {
        vs.iter().all(|v| v.lock().rooms_joined > 0)
    })
    .await;

    // Each user's conversations: its two direct peers, the groups, the room.
    let convs_of = |i: usize| {
        vec![
            ConversationKey::direct(format!("u{}", (i + 1) % USERS)),
            ConversationKey::direct(format!("u{}", (i + USERS - 1) % USERS)),
            ConversationKey::group("team"),
            ConversationKey::group("big"),
            ConversationKey::room("live"),
        ]
    };
    // Rounds: every live connection is cut, and sends are made while the
    // clients reconnect through new random faults.
    let mut sent: HashMap<String, String> = HashMap::new();
    for round in 0..ROUNDS {
        let last_round = round == ROUNDS - 1;
        if last_round {
            // The last user is away for this whole round: only the
            // catch-up brings it the round's messages (and the 1,000-member
            // group's only through its heads, read diffusion).
            down.store(true, Ordering::SeqCst);
        }
        proxy.cut_all();
        lone_proxy.cut_all();
        for n in 0..SENDS_PER_ROUND {
            for (i, client) in clients.iter().enumerate() {
                if last_round && i == USERS - 1 {
                    continue;
                }
                let convs = convs_of(i);
                let key = &convs[(round * SENDS_PER_ROUND + n + i) % convs.len()];
                let id = client
                    .send(key.clone(), format!("u{i} r{round} #{n}"))
                    .await
                    .expect("queued");
                sent.insert(id, canonical(&users[i], key));
            }
        }
        let total = sent.len();
        wait_for(&mut changed, &views, "every send was acknowledged", |vs| {
            vs.iter().map(|v| v.lock().acked.len()).sum::<usize>() == total
        })
        .await;
    }
    down.store(false, Ordering::SeqCst);

    // Faults stop; every connection is cut once more so each client catches
    // up from a fresh one, and converges.
    for p in [&proxy, &lone_proxy] {
        p.heal();
        p.cut_all();
    }
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for conv in sent.values() {
        *expected.entry(conv.clone()).or_default() += 1;
    }
    let member_convs: Vec<Vec<String>> = (0..USERS)
        .map(|i| {
            convs_of(i)
                .iter()
                .map(|k| canonical(&users[i], k))
                .collect()
        })
        .collect();
    wait_for(
        &mut changed,
        &views,
        "every member saw every message",
        |vs| {
            vs.iter().enumerate().all(|(i, v)| {
                let v = v.lock();
                member_convs[i].iter().all(|c| {
                    v.seen.get(c).map_or(0, Vec::len) >= expected.get(c).copied().unwrap_or(0)
                })
            })
        },
    )
    .await;

    // LOST and DUP as each user sees it; order per conversation.
    let mut lost = 0usize;
    let mut dup = 0usize;
    for (i, v) in views.iter().enumerate() {
        let v = v.lock();
        assert!(v.failed.is_empty(), "u{i}: sends refused: {:?}", v.failed);
        for conv in &member_convs[i] {
            let seen = v.seen.get(conv).cloned().unwrap_or_default();
            let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
            let in_order: Vec<u64> = (1..=seqs.len() as u64).collect();
            assert_eq!(seqs, in_order, "u{i} {conv}: seqs not 1..=n in order");
            let ids: HashSet<&String> = seen.iter().map(|(_, id)| id).collect();
            dup += seen.len() - ids.len();
            lost += sent
                .iter()
                .filter(|(id, c)| *c == conv && !ids.contains(id))
                .count();
        }
    }
    println!(
        "seed {seed}: {} messages, {} proxied connections, {} cut; LOST = {lost}, DUP = {dup}",
        sent.len(),
        proxy.connections() + lone_proxy.connections(),
        proxy.cuts() + lone_proxy.cuts()
    );
    assert_eq!((lost, dup), (0, 0), "LOST = {lost}, DUP = {dup}");

    // Exactly once in the store too: no send committed twice.
    let stored_convs = [
        ConversationId::group("team").expect("id"),
        ConversationId::group("big").expect("id"),
        ConversationId::room("live").expect("id"),
    ];
    let mut committed = 0;
    for c in &stored_convs {
        committed += common::stored(store.as_ref(), c).await.len();
    }
    for i in 0..USERS {
        let pair = ConversationId::direct(
            common::user(&users[i]),
            common::user(&users[(i + 1) % USERS]),
        );
        committed += common::stored(store.as_ref(), &pair).await.len();
    }
    assert_eq!(committed, sent.len(), "the store committed each send once");
    assert!(proxy.cuts() > 0, "the faults happened");
    for c in clients {
        c.close().await;
    }
}

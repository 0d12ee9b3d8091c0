//! The engine-level model test (im-testkit) over real TCP sessions, on the
//! memory store: random connects, disconnects, sends, bursts, retries,
//! acks, reads, pulls, syncs, room joins and membership changes, checked
//! against a reference model of the contract; with the engine's defaults,
//! and with a host's own fanout policy, sequencer and session directory.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use im_engine::core::async_trait;
use im_engine::core::fanout::{Delivery, Diffusion, FanoutInput, FanoutPlan, RateClass};
use im_engine::core::store::StoreResult;
use im_engine::core::{
    CachedSequencer, ConversationId, ConversationKind, DefaultFanoutPolicy, FanoutPolicy, Seq,
    Sequencer, SessionDirectory, SessionInfo, Store,
};
use im_engine::store_memory::MemoryStore;
use im_testkit::engine::{
    EngineModelConfig, EngineOp, EngineSeams, Target, check_engine_against_model_with_seams,
    run_model,
};
use parking_lot::Mutex;

async fn fresh_store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

#[test]
fn engine_keeps_the_contract_under_random_actions() {
    run_model(
        fresh_store,
        EngineModelConfig::default().with_cases(32).with_max_ops(40),
    );
}

/// A host's policy: only groups of at most two members get inbox entries
/// and full pushes; bigger ones use read diffusion, a notify to pull, and
/// the slow lane. `g0` ({alice, bob, carol}) starts as read diffusion, `g1`
/// ({bob, dave}) as write diffusion, and membership changes move them
/// across.
#[derive(Debug)]
struct PairsOnlyInbox;

impl FanoutPolicy for PairsOnlyInbox {
    fn plan(&self, input: &FanoutInput) -> FanoutPlan {
        let mut plan = DefaultFanoutPolicy::default().plan(input);
        if input.kind == ConversationKind::Group && input.member_count > 2 {
            plan.diffusion = Diffusion::Read;
            plan.delivery = Delivery::Notify;
            plan.rate_class = RateClass::Slow;
        }
        plan
    }
}

fn pairs_only() -> EngineSeams {
    EngineSeams::default().with_fanout_policy(Arc::new(PairsOnlyInbox))
}

#[test]
fn a_host_policy_with_read_diffusion_for_g0_keeps_the_contract() {
    let g0 = FanoutInput {
        kind: ConversationKind::Group,
        member_count: 3,
        online_sessions: 0,
    };
    assert_eq!(PairsOnlyInbox.plan(&g0).diffusion, Diffusion::Read);
    run_model(
        fresh_store,
        EngineModelConfig::default()
            .with_cases(24)
            .with_max_ops(40)
            .with_seams(pairs_only),
    );
}

#[tokio::test(flavor = "current_thread")]
async fn read_diffusion_for_g0_leaves_inboxes_alone_but_g1_writes_them() {
    use EngineOp::*;
    let ops = [
        Send {
            user: "alice",
            device: "phone",
            to: Target::Group("g0"),
        },
        Send {
            user: "bob",
            device: "phone",
            to: Target::Group("g1"),
        },
        Sync {
            user: "alice",
            device: "phone",
            from_zero: true,
        },
        Sync {
            user: "bob",
            device: "phone",
            from_zero: true,
        },
        // g1 grows to three (read diffusion), g0 shrinks to two (write).
        AddMember {
            group: "g1",
            user: "carol",
        },
        RemoveMember {
            group: "g0",
            user: "carol",
        },
        Send {
            user: "dave",
            device: "laptop",
            to: Target::Group("g1"),
        },
        Send {
            user: "alice",
            device: "phone",
            to: Target::Group("g0"),
        },
        Sync {
            user: "carol",
            device: "phone",
            from_zero: true,
        },
        Sync {
            user: "bob",
            device: "phone",
            from_zero: false,
        },
        // A non-member and a group that does not exist: both FORBIDDEN.
        Send {
            user: "dave",
            device: "phone",
            to: Target::Group("g0"),
        },
        Send {
            user: "dave",
            device: "phone",
            to: Target::Group("g2"),
        },
        Pull {
            user: "dave",
            device: "phone",
            to: Target::Group("g2"),
            after: 0,
            limit: 0,
        },
        Read {
            user: "dave",
            device: "phone",
            to: Target::Group("g2"),
            pick: 0,
        },
        Ack {
            user: "dave",
            device: "phone",
            to: Target::Group("g2"),
            pick: 0,
        },
    ];
    let store = fresh_store().await;
    check_engine_against_model_with_seams(store, Default::default(), &pairs_only(), &ops)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// A host's sequencer over [`CachedSequencer`] that now and then answers a
/// head one behind the truth. The store refuses the append; the engine
/// forgets and asks again. It lies about a conversation at most once until
/// a commit there advances it, so a send never runs out of attempts.
#[derive(Debug)]
struct StaleNowAndThen {
    inner: CachedSequencer,
    calls: AtomicUsize,
    lied_about: Mutex<HashSet<ConversationId>>,
    lies: Arc<AtomicUsize>,
    forgets: Arc<AtomicUsize>,
}

#[async_trait]
impl Sequencer for StaleNowAndThen {
    async fn heads(&self, store: &dyn Store, convs: &[ConversationId]) -> StoreResult<Vec<Seq>> {
        let mut heads = self.inner.heads(store, convs).await?;
        if self.calls.fetch_add(1, Ordering::SeqCst) % 3 != 2 {
            return Ok(heads);
        }
        let mut lied_about = self.lied_about.lock();
        let mut lied = false;
        for (c, h) in convs.iter().zip(heads.iter_mut()) {
            if *h > 0 && lied_about.insert(c.clone()) {
                *h -= 1;
                lied = true;
            }
        }
        if lied {
            self.lies.fetch_add(1, Ordering::SeqCst);
        }
        Ok(heads)
    }

    fn advanced(&self, heads: &[(ConversationId, Seq)]) {
        let mut lied_about = self.lied_about.lock();
        for (c, _) in heads {
            lied_about.remove(c);
        }
        self.inner.advanced(heads);
    }

    fn forget(&self, convs: &[ConversationId]) {
        self.forgets.fetch_add(1, Ordering::SeqCst);
        self.inner.forget(convs);
    }
}

/// A host's directory that counts the sessions it is told of.
#[derive(Debug)]
struct CountingDirectory(Arc<AtomicUsize>);

impl SessionDirectory for CountingDirectory {
    fn session_opened(&self, _: &SessionInfo) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_host_sequencer_that_answers_stale_heads_keeps_the_contract() {
    let lies = Arc::new(AtomicUsize::new(0));
    let forgets = Arc::new(AtomicUsize::new(0));
    let opened = Arc::new(AtomicUsize::new(0));
    let seams = {
        let (lies, forgets, opened) = (lies.clone(), forgets.clone(), opened.clone());
        move || {
            EngineSeams::default()
                .with_sequencer(Arc::new(StaleNowAndThen {
                    inner: CachedSequencer::new(1_000),
                    calls: AtomicUsize::new(0),
                    lied_about: Mutex::new(HashSet::new()),
                    lies: lies.clone(),
                    forgets: forgets.clone(),
                }))
                .with_session_directory(Arc::new(CountingDirectory(opened.clone())))
        }
    };
    run_model(
        fresh_store,
        EngineModelConfig::default()
            .with_cases(24)
            .with_max_ops(40)
            .with_seams(seams),
    );
    let (lies, forgets) = (lies.load(Ordering::SeqCst), forgets.load(Ordering::SeqCst));
    assert!(lies > 0, "the sequencer never answered a stale head");
    // Not every stale head meets the fence: a batch of retries only is
    // answered from the store's duplicates without an append.
    assert!(forgets > 0, "{lies} stale heads, none fenced");
    assert!(
        opened.load(Ordering::SeqCst) > 0,
        "the directory was not used"
    );
}

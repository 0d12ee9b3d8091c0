//! The card's seams: a host replaces a default through the builder, and the
//! engine keeps its contract with the host's implementation.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use common::*;
use im_engine::core::store::{RangeRequest, Store, StoreResult, Timeline};
use im_engine::core::{CachedSequencer, ConversationId, Engine, EngineConfig, Seq, Sequencer};
use im_engine::store_memory::MemoryStore;

/// A host's sequencer that answers stale heads (0) while `lies` > 0, and
/// counts how often the engine told it to forget.
#[derive(Debug)]
struct StaleSequencer {
    inner: CachedSequencer,
    lies: AtomicUsize,
    forgotten: AtomicUsize,
}

#[async_trait]
impl Sequencer for StaleSequencer {
    async fn heads(&self, store: &dyn Store, convs: &[ConversationId]) -> StoreResult<Vec<Seq>> {
        let lie = self
            .lies
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if lie {
            return Ok(vec![0; convs.len()]);
        }
        self.inner.heads(store, convs).await
    }
    fn advanced(&self, heads: &[(ConversationId, Seq)]) {
        self.inner.advanced(heads);
    }
    fn forget(&self, convs: &[ConversationId]) {
        self.forgotten.fetch_add(1, Ordering::SeqCst);
        self.inner.forget(convs);
    }
}

#[tokio::test]
async fn a_host_sequencer_that_answers_stale_heads_cannot_fork_a_timeline() {
    let sequencer = Arc::new(StaleSequencer {
        inner: CachedSequencer::new(100),
        lies: AtomicUsize::new(0),
        forgotten: AtomicUsize::new(0),
    });
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::builder(store.clone())
        .config(EngineConfig::default())
        .sequencer(sequencer.clone())
        .insecure_dev_auth()
        .build()
        .expect("engine");
    let conv = ConversationId::direct(user("alice"), user("bob"));
    for i in 1..=3u64 {
        let r = engine
            .send_as(conv.clone(), user("alice"), format!("m{i}").into(), None)
            .await
            .expect("send");
        assert_eq!(r.seq, i);
    }
    // The sequencer now claims the chat is empty: the store refuses seq 1,
    // the engine forgets and asks again, and the message lands at seq 4.
    sequencer.lies.store(1, Ordering::SeqCst);
    let r = engine
        .send_as(conv.clone(), user("bob"), "m4".into(), None)
        .await
        .expect("send after a stale head");
    assert_eq!(r.seq, 4);
    assert!(sequencer.forgotten.load(Ordering::SeqCst) >= 1);
    let page = store
        .read_range(RangeRequest {
            conversation: conv,
            after_seq: 0,
            until_seq: None,
            limit: 100,
            newest: false,
        })
        .await
        .expect("read");
    let seqs: Vec<Seq> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    let bodies: Vec<&[u8]> = page.messages.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, vec![&b"m1"[..], b"m2", b"m3", b"m4"]);
}

//! The hot-ring cache of one room: its recent messages, so late joiners and
//! pulls are served from memory, and one store load per distinct range that
//! misses it.

use std::collections::HashMap;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use parking_lot::Mutex;

use crate::error::StoreError;
use crate::room::HotRing;
use crate::store::{RangePage, RangeRequest, Store, StoredMessage};

/// A pull range, the key under which concurrent misses share one load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct LoadKey {
    /// Messages after this seq.
    after_seq: u64,
    /// Up to this seq, if bounded.
    until_seq: Option<u64>,
    /// At most this many.
    limit: usize,
    /// The newest of the range rather than the oldest (as the request asked).
    newest: bool,
}

impl LoadKey {
    /// The key of a request.
    fn of(req: &RangeRequest) -> Self {
        Self {
            after_seq: req.after_seq,
            until_seq: req.until_seq,
            limit: req.limit,
            newest: req.newest,
        }
    }
}
/// A store load that every pull of the same range awaits.
type Load = Shared<BoxFuture<'static, Result<Arc<RangePage>, Arc<StoreError>>>>;

/// Recent messages of one room and the store loads in flight.
pub(super) struct HotCache {
    /// Recent messages, shared: a pull clones pointers under the lock, not messages.
    ring: Mutex<HotRing<Arc<StoredMessage>>>,
    /// Store loads in flight, one per distinct range.
    loads: Mutex<HashMap<LoadKey, Load>>,
}

impl HotCache {
    /// An empty cache keeping the last `capacity` messages.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            ring: Mutex::new(HotRing::new(capacity)),
            loads: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps newly committed messages (in seq order).
    pub(super) fn record(&self, msgs: &[StoredMessage]) {
        let shared: Vec<Arc<StoredMessage>> = msgs.iter().cloned().map(Arc::new).collect();
        let mut ring = self.ring.lock();
        for m in shared {
            ring.push(m.seq, m);
        }
    }

    /// Reads a range from the ring, or from the store with one load per
    /// distinct range in flight (others wait for it).
    pub(super) async fn read_range(
        &self,
        store: &Arc<dyn Store>,
        req: RangeRequest,
    ) -> Result<RangePage, StoreError> {
        if let Some(page) = self.read_hot(&req) {
            metrics::counter!("im_room_hot_hits_total").increment(1);
            return Ok(page);
        }
        metrics::counter!("im_room_hot_misses_total").increment(1);
        let key = LoadKey::of(&req);
        let load = self
            .loads
            .lock()
            .entry(key)
            .or_insert_with(|| {
                let store = store.clone();
                async move { store.read_range(req).await.map(Arc::new).map_err(Arc::new) }
                    .boxed()
                    .shared()
            })
            .clone();
        let result = load.clone().await;
        {
            // Only this load's entry: a newer load for the key may have started.
            let mut loads = self.loads.lock();
            if loads.get(&key).is_some_and(|l| l.ptr_eq(&load)) {
                loads.remove(&key);
            }
        }
        match result {
            Ok(page) => {
                self.seed(&page);
                Ok((*page).clone())
            }
            Err(e) => Err(StoreError::Backend {
                retryable: e.is_retryable(),
                source: e.to_string().into(),
            }),
        }
    }

    /// The range, if the ring holds all of it.
    fn read_hot(&self, req: &RangeRequest) -> Option<RangePage> {
        let (page, head_seq, first) = {
            let ring = self.ring.lock();
            ring.range(req.after_seq, req.until_seq, req.limit, req.newest)
                .map(|page| (page, ring.head().unwrap_or(0), ring.first().unwrap_or(1)))?
        };
        // Copied out of the ring after its lock is released.
        Some(RangePage {
            messages: page.iter().map(|m| (**m).clone()).collect(),
            head_seq,
            first_retained_seq: first.min(req.after_seq.saturating_add(1)),
        })
    }

    /// The tail of the room, loaded from the store, seeds an empty ring.
    fn seed(&self, page: &RangePage) {
        if page.messages.last().is_some_and(|m| m.seq == page.head_seq) {
            let mut ring = self.ring.lock();
            if ring.is_empty() {
                for m in &page.messages {
                    ring.push(m.seq, Arc::new(m.clone()));
                }
            }
        }
    }
}

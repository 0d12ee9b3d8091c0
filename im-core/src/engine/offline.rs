//! Hands offline notices to the host's [`OfflinePush`] hook off the hot path,
//! with a bound on how many may be in flight, leaving out the recipients who
//! muted the conversation.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::push::{OfflineNotice, OfflinePush};
use crate::store::Store;

/// The host's hook behind a bound: a slow push backend costs dropped notices
/// (counted), never unbounded tasks.
pub(crate) struct OfflineDispatch {
    push: Arc<dyn OfflinePush>,
    store: Arc<dyn Store>,
    in_flight: Arc<Semaphore>,
}

impl OfflineDispatch {
    pub(crate) fn new(
        push: Arc<dyn OfflinePush>,
        store: Arc<dyn Store>,
        max_in_flight: usize,
    ) -> Self {
        Self {
            push,
            store,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
    }

    /// Starts delivering a notice without waiting for it. The mute check
    /// (one store read per notice) runs in the notice's own task, so the
    /// shard worker that called this never waits for it.
    pub(crate) fn dispatch(&self, notice: OfflineNotice) {
        match self.in_flight.clone().try_acquire_owned() {
            Ok(permit) => {
                let push = self.push.clone();
                let store = self.store.clone();
                tokio::spawn(async move {
                    if let Some(notice) = without_muted(&*store, notice).await {
                        push.notify(notice).await;
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                metrics::counter!("im_offline_push_dropped_total").increment(1);
                tracing::debug!("offline push backlog full: notice dropped");
            }
        }
    }
}

/// The notice for the recipients who did not mute its conversation (`None`
/// if every one did). If the store cannot say, the notice goes to all of
/// them: a notification too many beats a message nobody hears of.
async fn without_muted(store: &dyn Store, mut notice: OfflineNotice) -> Option<OfflineNotice> {
    match store
        .muted(&notice.message.conversation, &notice.users)
        .await
    {
        Ok(muted) if muted.len() == notice.users.len() => {
            let mut muted = muted.into_iter();
            notice.users.retain(|_| !muted.next().unwrap_or(false));
        }
        Ok(_) | Err(_) => {
            metrics::counter!("im_offline_push_mute_check_failures_total").increment(1);
        }
    }
    if notice.users.is_empty() {
        metrics::counter!("im_offline_push_muted_total").increment(1);
        return None;
    }
    Some(notice)
}

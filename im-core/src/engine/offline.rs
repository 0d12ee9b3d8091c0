//! Hands offline notices to the host's [`OfflinePush`] hook off the hot path,
//! with a bound on how many may be in flight.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::push::{OfflineNotice, OfflinePush};

/// The host's hook behind a bound: a slow push backend costs dropped notices
/// (counted), never unbounded tasks.
pub(crate) struct OfflineDispatch {
    push: Arc<dyn OfflinePush>,
    in_flight: Arc<Semaphore>,
}

impl OfflineDispatch {
    pub(crate) fn new(push: Arc<dyn OfflinePush>, max_in_flight: usize) -> Self {
        Self {
            push,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
    }

    /// Starts delivering a notice without waiting for it.
    pub(crate) fn dispatch(&self, notice: OfflineNotice) {
        match self.in_flight.clone().try_acquire_owned() {
            Ok(permit) => {
                let push = self.push.clone();
                tokio::spawn(async move {
                    push.notify(notice).await;
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

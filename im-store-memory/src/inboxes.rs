//! [`Inboxes`] in memory: inbox pages and heads.

use async_trait::async_trait;
use im_core::ids::UserId;
use im_core::store::{InboxPage, InboxRequest, Inboxes, StoreResult};

use crate::MemoryStore;

impl MemoryStore {
    /// [`Inboxes::read_inbox`]: the retained entries after the requested
    /// version, cut to the limit.
    fn read_inbox_sync(&self, req: &InboxRequest) -> InboxPage {
        let Some(handle) = self.user(&req.user) else {
            return InboxPage {
                entries: Vec::new(),
                head_version: 0,
                first_retained_version: 1,
            };
        };
        let user = handle.lock();
        let first = user.first_retained_version();
        let start = req.after_version.saturating_add(1).max(first);
        let skip = usize::try_from(start - first).unwrap_or(usize::MAX);
        InboxPage {
            entries: user
                .inbox
                .iter()
                .skip(skip)
                .take(req.limit)
                .cloned()
                .collect(),
            head_version: user.inbox_head,
            first_retained_version: first,
        }
    }
}

#[async_trait]
impl Inboxes for MemoryStore {
    async fn read_inbox(&self, req: InboxRequest) -> StoreResult<InboxPage> {
        Ok(self.read_inbox_sync(&req))
    }

    async fn inbox_head(&self, user: &UserId) -> StoreResult<u64> {
        Ok(self.user(user).map_or(0, |h| h.lock().inbox_head))
    }
}

//! [`Timeline`] in memory: the append (in `append.rs`), heads, ranges and
//! lookups by seq or idempotency key.

use async_trait::async_trait;
use im_core::ids::{ConversationId, DedupKey, Seq};
use im_core::store::{
    AppendRequest, RangePage, RangeRequest, StoreResult, StoredMessage, Timeline,
};

use crate::MemoryStore;

impl MemoryStore {
    /// [`Timeline::read_range`]: the retained part of the range, cut to the
    /// limit from the requested end.
    fn read_range_sync(&self, req: &RangeRequest) -> RangePage {
        let Some(handle) = self.conversation(&req.conversation) else {
            return RangePage {
                messages: Vec::new(),
                head_seq: 0,
                first_retained_seq: 1,
            };
        };
        let conv = handle.read();
        let first = conv.first_retained();
        let lo = req.after_seq.saturating_add(1).max(first);
        let hi = req.until_seq.map_or(conv.head, |u| u.min(conv.head));
        let mut messages = Vec::new();
        if lo <= hi && req.limit > 0 {
            let span = hi - lo + 1;
            let take = span.min(u64::try_from(req.limit).unwrap_or(u64::MAX));
            let start = if req.newest { hi - take + 1 } else { lo };
            let skip = usize::try_from(start - first).unwrap_or(usize::MAX);
            let take = usize::try_from(take).unwrap_or(usize::MAX);
            messages = conv
                .messages
                .iter()
                .skip(skip)
                .take(take)
                .cloned()
                .collect();
        }
        RangePage {
            messages,
            head_seq: conv.head,
            first_retained_seq: first,
        }
    }
}

#[async_trait]
impl Timeline for MemoryStore {
    async fn append(&self, req: AppendRequest) -> StoreResult<()> {
        self.append_sync(req)
    }

    async fn head_seqs(&self, conversations: &[ConversationId]) -> StoreResult<Vec<Seq>> {
        let handles: Vec<_> = {
            let map = self.conversations.read();
            conversations.iter().map(|c| map.get(c).cloned()).collect()
        };
        Ok(handles
            .iter()
            .map(|h| h.as_ref().map_or(0, |h| h.read().head))
            .collect())
    }

    async fn read_range(&self, req: RangeRequest) -> StoreResult<RangePage> {
        Ok(self.read_range_sync(&req))
    }

    async fn get_messages(
        &self,
        refs: &[(ConversationId, Seq)],
    ) -> StoreResult<Vec<StoredMessage>> {
        let handles: Vec<_> = {
            let map = self.conversations.read();
            refs.iter().map(|(c, _)| map.get(c).cloned()).collect()
        };
        Ok(refs
            .iter()
            .zip(&handles)
            .filter_map(|((_, seq), h)| h.as_ref()?.read().get(*seq).cloned())
            .collect())
    }

    async fn find_by_dedup_keys(
        &self,
        keys: &[DedupKey],
    ) -> StoreResult<Vec<Option<StoredMessage>>> {
        Ok(keys
            .iter()
            .map(|k| {
                // The index shard is released before the conversation is locked.
                let (conversation, seq) = self.dedup[self.shard_of(k)].lock().get(k).cloned()?;
                let handle = self.conversation(&conversation)?;
                handle.read().get(seq).cloned()
            })
            .collect())
    }
}

//! A memory store whose appends can be held at a gate, made to fail, or
//! refused for a poisoned body; and that counts cursor writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use im_engine::core::store::*;
use im_engine::core::{ChannelId, ConversationId, DedupKey, Seq, StoreError, UserId};
use im_engine::store_memory::MemoryStore;
use tokio::sync::{Notify, Semaphore};

/// A body [`GatedStore`] refuses, failing the whole append it is in.
pub const POISON: &[u8] = b"poison";

/// A memory store whose appends can be held at a gate or made to fail.
pub struct GatedStore {
    pub inner: MemoryStore,
    pub gate: Semaphore,
    /// Signalled each time an append reaches the gate.
    pub arrived: Notify,
    pub failing: AtomicBool,
    /// Cursor updates written.
    pub cursor_writes: AtomicUsize,
}

impl GatedStore {
    /// A store whose gate starts open or shut.
    pub fn new(open: bool) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::new(),
            gate: Semaphore::new(if open { Semaphore::MAX_PERMITS } else { 0 }),
            arrived: Notify::new(),
            failing: AtomicBool::new(false),
            cursor_writes: Default::default(),
        })
    }
}

#[async_trait]
impl Timeline for GatedStore {
    async fn append(&self, req: AppendRequest) -> StoreResult<()> {
        self.arrived.notify_one();
        let permit = self.gate.acquire().await.expect("gate");
        permit.forget();
        self.gate.add_permits(1);
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("database is down (test)".into()));
        }
        // Like PostgreSQL with a NUL in text: the whole batch is refused.
        if req.messages.iter().any(|m| &m.message.body[..] == POISON) {
            return Err(StoreError::Rejected(
                "this store cannot hold `poison`".into(),
            ));
        }
        self.inner.append(req).await
    }
    async fn head_seqs(&self, c: &[ConversationId]) -> StoreResult<Vec<Seq>> {
        self.inner.head_seqs(c).await
    }
    async fn read_range(&self, req: RangeRequest) -> StoreResult<RangePage> {
        self.inner.read_range(req).await
    }
    async fn get_messages(
        &self,
        refs: &[(ConversationId, Seq)],
    ) -> StoreResult<Vec<StoredMessage>> {
        self.inner.get_messages(refs).await
    }
    async fn find_by_dedup_keys(
        &self,
        keys: &[DedupKey],
    ) -> StoreResult<Vec<Option<StoredMessage>>> {
        self.inner.find_by_dedup_keys(keys).await
    }
}

#[async_trait]
impl Inboxes for GatedStore {
    async fn read_inbox(&self, req: InboxRequest) -> StoreResult<InboxPage> {
        self.inner.read_inbox(req).await
    }
    async fn inbox_head(&self, user: &UserId) -> StoreResult<u64> {
        self.inner.inbox_head(user).await
    }
}

#[async_trait]
impl Cursors for GatedStore {
    async fn update_cursors(&self, updates: Vec<CursorUpdate>) -> StoreResult<()> {
        self.cursor_writes
            .fetch_add(updates.len(), Ordering::SeqCst);
        self.inner.update_cursors(updates).await
    }
    async fn conversation_states(
        &self,
        req: ConversationStatesRequest,
    ) -> StoreResult<Vec<ConversationState>> {
        self.inner.conversation_states(req).await
    }
    async fn read_cursors(&self, keys: &[(UserId, ConversationId)]) -> StoreResult<Vec<Seq>> {
        self.inner.read_cursors(keys).await
    }
    async fn read_counts(&self, req: ReadCountsRequest) -> StoreResult<Vec<u64>> {
        self.inner.read_counts(req).await
    }
}

#[async_trait]
impl Membership for GatedStore {
    async fn create_group(&self, g: &ChannelId, m: &[UserId]) -> StoreResult<()> {
        self.inner.create_group(g, m).await
    }
    async fn add_members(&self, g: &ChannelId, u: &[UserId]) -> StoreResult<()> {
        self.inner.add_members(g, u).await
    }
    async fn remove_members(&self, g: &ChannelId, u: &[UserId]) -> StoreResult<()> {
        self.inner.remove_members(g, u).await
    }
    async fn member_count(&self, g: &ChannelId) -> StoreResult<Option<u64>> {
        self.inner.member_count(g).await
    }
    async fn are_members(&self, g: &ChannelId, u: &[UserId]) -> StoreResult<Vec<bool>> {
        self.inner.are_members(g, u).await
    }
    async fn members(
        &self,
        g: &ChannelId,
        after: Option<&UserId>,
        limit: usize,
    ) -> StoreResult<Vec<UserId>> {
        self.inner.members(g, after, limit).await
    }
    async fn user_groups(&self, u: &UserId) -> StoreResult<Vec<ChannelId>> {
        self.inner.user_groups(u).await
    }
    async fn create_group_with_owner(
        &self,
        g: &ChannelId,
        owner: &UserId,
        m: &[UserId],
    ) -> StoreResult<()> {
        self.inner.create_group_with_owner(g, owner, m).await
    }
    async fn member_infos(
        &self,
        g: &ChannelId,
        u: &[UserId],
    ) -> StoreResult<Vec<Option<MemberInfo>>> {
        self.inner.member_infos(g, u).await
    }
    async fn set_roles(&self, g: &ChannelId, roles: &[(UserId, GroupRole)]) -> StoreResult<()> {
        self.inner.set_roles(g, roles).await
    }
    async fn set_muted(&self, g: &ChannelId, u: &[UserId], until: Option<i64>) -> StoreResult<()> {
        self.inner.set_muted(g, u, until).await
    }
    async fn muted_members(
        &self,
        g: &ChannelId,
        now_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<(UserId, i64)>> {
        self.inner.muted_members(g, now_ms, limit).await
    }
}

#[async_trait]
impl Settings for GatedStore {
    async fn update_settings(&self, change: SettingsChange) -> StoreResult<ConversationSettings> {
        self.inner.update_settings(change).await
    }
    async fn settings(
        &self,
        u: &UserId,
        c: &[ConversationId],
    ) -> StoreResult<Vec<ConversationSettings>> {
        self.inner.settings(u, c).await
    }
    async fn pinned(&self, u: &UserId, limit: usize) -> StoreResult<Vec<ConversationId>> {
        self.inner.pinned(u, limit).await
    }
    async fn muted(&self, c: &ConversationId, u: &[UserId]) -> StoreResult<Vec<bool>> {
        self.inner.muted(c, u).await
    }
}

#[async_trait]
impl Blocks for GatedStore {
    async fn set_block(&self, pair: BlockPair, on: bool) -> StoreResult<()> {
        self.inner.set_block(pair, on).await
    }
    async fn are_blocked(&self, pairs: &[BlockPair]) -> StoreResult<Vec<bool>> {
        self.inner.are_blocked(pairs).await
    }
    async fn blocked_users(
        &self,
        u: &UserId,
        after: Option<&UserId>,
        limit: usize,
    ) -> StoreResult<Vec<UserId>> {
        self.inner.blocked_users(u, after, limit).await
    }
}

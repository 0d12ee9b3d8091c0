//! Per-user conversation settings (mute, pin) and user-level blocks: the
//! types and the two store traits that keep them (issue 11 items 6 and 8).
//!
//! Both live in the store, never in a node-local map, so every node of a
//! cluster sees the same answer. The engine reads them off the hot path:
//! settings when it lists conversations and when it hands a notice to the
//! offline push hook; blocks once per commit batch that holds direct sends
//! from clients (one batched [`Blocks::are_blocked`] call, see
//! `engine/commit/`).

use async_trait::async_trait;

use crate::error::StoreError;
use crate::ids::{ConversationId, UserId};

type StoreResult<T> = Result<T, StoreError>;

/// One user's settings of one conversation. The default (neither muted nor
/// pinned) is what a user has for every conversation never set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ConversationSettings {
    /// Still counted as unread, but never handed to the offline push hook.
    pub muted: bool,
    /// Listed before the others by `ListConversations`.
    pub pinned: bool,
}

/// A change to one user's settings of one conversation: `None` leaves a
/// setting as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsChange {
    /// Whose settings.
    pub user: UserId,
    /// Which conversation.
    pub conversation: ConversationId,
    /// Mute (`Some(true)`) or unmute (`Some(false)`).
    pub muted: Option<bool>,
    /// Pin (`Some(true)`) or unpin (`Some(false)`).
    pub pinned: Option<bool>,
}

impl SettingsChange {
    /// `current` after this change: the reference every store follows.
    pub fn apply(&self, current: ConversationSettings) -> ConversationSettings {
        ConversationSettings {
            muted: self.muted.unwrap_or(current.muted),
            pinned: self.pinned.unwrap_or(current.pinned),
        }
    }
}

/// Per-user settings of conversations.
///
/// A store need not keep a row for default settings: a change that brings
/// a conversation back to the default may forget it.
#[async_trait]
pub trait Settings: Send + Sync + 'static {
    /// Applies `change` ([`SettingsChange::apply`]) and returns the settings
    /// after it. Atomic per (user, conversation): two concurrent changes of
    /// different settings both take effect.
    async fn update_settings(&self, change: SettingsChange) -> StoreResult<ConversationSettings>;

    /// `user`'s settings of each conversation, in request order (the
    /// default for one never set).
    async fn settings(
        &self,
        user: &UserId,
        conversations: &[ConversationId],
    ) -> StoreResult<Vec<ConversationSettings>>;

    /// The conversations `user` pinned, in key order
    /// ([`ConversationId::to_key`]), at most `limit`.
    async fn pinned(&self, user: &UserId, limit: usize) -> StoreResult<Vec<ConversationId>>;

    /// Which of `users` muted `conversation`, in request order.
    async fn muted(
        &self,
        conversation: &ConversationId,
        users: &[UserId],
    ) -> StoreResult<Vec<bool>>;
}

/// Who blocked whom: `blocker` refuses direct messages from `blocked`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockPair {
    /// The user who blocks.
    pub blocker: UserId,
    /// The user blocked.
    pub blocked: UserId,
}

/// User-level blocks (for direct chats; groups are not affected).
#[async_trait]
pub trait Blocks: Send + Sync + 'static {
    /// Records (`on`) or removes a block; either is idempotent.
    async fn set_block(&self, pair: BlockPair, on: bool) -> StoreResult<()>;

    /// Whether each pair is blocked, in request order: one call for a whole
    /// commit batch.
    async fn are_blocked(&self, pairs: &[BlockPair]) -> StoreResult<Vec<bool>>;

    /// The users `blocker` blocked, in id order, after `after` (exclusive),
    /// at most `limit`.
    async fn blocked_users(
        &self,
        blocker: &UserId,
        after: Option<&UserId>,
        limit: usize,
    ) -> StoreResult<Vec<UserId>>;
}

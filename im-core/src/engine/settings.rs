//! Conversation settings (mute, pin) and user-level blocks: the host API,
//! shared with the session's `SetConversationSettings` and `BlockUser`
//! (`session/settings.rs`). State lives in the store (`Settings`, `Blocks`),
//! so every node of a cluster sees it at once. Who learns of a change: the
//! user's other devices see new settings on their next `ListConversations`
//! (no event is pushed); a block is enforced by the commit step
//! (`commit/blocks.rs`) for every batch checked after it was written.

use crate::error::EngineError;
use crate::ids::{ConversationId, UserId};
use crate::store::{BlockPair, ConversationSettings, SettingsChange};

use super::Engine;

/// Most conversations one user may pin (`ListConversations` reads them all).
pub const MAX_PINNED_CONVERSATIONS: usize = 100;

/// Most users one user may block.
pub const MAX_BLOCKED_USERS: usize = 1_000;

impl Engine {
    /// Changes `change.user`'s settings of a direct chat or group and
    /// returns them as they now are. Live rooms have no settings; a user
    /// pins at most [`MAX_PINNED_CONVERSATIONS`]
    /// ([`EngineError::InvalidRequest`] past that). The host is trusted:
    /// membership is not checked here (clients are checked by their session).
    pub async fn set_conversation_settings(
        &self,
        change: SettingsChange,
    ) -> Result<ConversationSettings, EngineError> {
        check_has_settings(&change.user, &change.conversation)?;
        let store = &self.shared().store;
        if change.pinned == Some(true) {
            let pinned = store.pinned(&change.user, MAX_PINNED_CONVERSATIONS).await?;
            if pinned.len() >= MAX_PINNED_CONVERSATIONS && !pinned.contains(&change.conversation) {
                return Err(EngineError::InvalidRequest(format!(
                    "at most {MAX_PINNED_CONVERSATIONS} conversations may be pinned"
                )));
            }
        }
        Ok(store.update_settings(change).await?)
    }

    /// `user`'s settings of a direct chat or group (the default if never set).
    pub async fn conversation_settings(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<ConversationSettings, EngineError> {
        check_has_settings(user, conversation)?;
        let got = self
            .shared()
            .store
            .settings(user, std::slice::from_ref(conversation))
            .await?;
        Ok(got.into_iter().next().unwrap_or_default())
    }

    /// `blocker` blocks `blocked` for direct chats: while it lasts, direct
    /// sends between them are refused either way with
    /// `ERROR_CODE_BLOCKED`. Idempotent; groups are not affected. A user
    /// blocks at most [`MAX_BLOCKED_USERS`] users.
    pub async fn block_user(&self, blocker: &UserId, blocked: &UserId) -> Result<(), EngineError> {
        let pair = block_pair(blocker, blocked)?;
        let store = &self.shared().store;
        if store
            .are_blocked(std::slice::from_ref(&pair))
            .await?
            .first()
            .copied()
            .unwrap_or(false)
        {
            return Ok(());
        }
        let count = store
            .blocked_users(blocker, None, MAX_BLOCKED_USERS)
            .await?
            .len();
        if count >= MAX_BLOCKED_USERS {
            return Err(EngineError::InvalidRequest(format!(
                "at most {MAX_BLOCKED_USERS} users may be blocked"
            )));
        }
        Ok(store.set_block(pair, true).await?)
    }

    /// Lifts `blocker`'s block of `blocked` (idempotent).
    pub async fn unblock_user(
        &self,
        blocker: &UserId,
        blocked: &UserId,
    ) -> Result<(), EngineError> {
        let pair = block_pair(blocker, blocked)?;
        Ok(self.shared().store.set_block(pair, false).await?)
    }

    /// The users `blocker` blocks, in id order (at most
    /// [`MAX_BLOCKED_USERS`]).
    pub async fn blocked_users(&self, blocker: &UserId) -> Result<Vec<UserId>, EngineError> {
        Ok(self
            .shared()
            .store
            .blocked_users(blocker, None, MAX_BLOCKED_USERS)
            .await?)
    }
}

/// Refuses conversations that have no per-user settings: live rooms, and
/// direct chats `user` is not in.
fn check_has_settings(user: &UserId, conversation: &ConversationId) -> Result<(), EngineError> {
    match conversation {
        ConversationId::Room(_) => Err(EngineError::InvalidRequest(
            "live rooms have no conversation settings".into(),
        )),
        ConversationId::Direct(pair) if !pair.contains(user) => Err(EngineError::InvalidRequest(
            format!("{user} is not in {conversation}"),
        )),
        _ => Ok(()),
    }
}

/// The pair for a block; a user cannot block themselves.
fn block_pair(blocker: &UserId, blocked: &UserId) -> Result<BlockPair, EngineError> {
    if blocker == blocked {
        return Err(EngineError::InvalidRequest(
            "a user cannot block themselves".into(),
        ));
    }
    Ok(BlockPair {
        blocker: blocker.clone(),
        blocked: blocked.clone(),
    })
}

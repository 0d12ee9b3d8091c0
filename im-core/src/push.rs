//! The offline push hook (APNs, FCM, vendor push): implemented by the host.

use async_trait::async_trait;

use crate::ids::UserId;
use crate::store::StoredMessage;

/// Members of a conversation who had no live session when a message committed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OfflineNotice {
    /// The committed message. A recall or edit is a message too
    /// (`message.event` is set): skip it, or update the notification it
    /// changes.
    pub message: StoredMessage,
    /// Recipients with no live session who did not mute the conversation
    /// (`store::Settings`): a muted conversation still counts unread but is
    /// never handed to this hook.
    pub users: Vec<UserId>,
}

/// Tells users who are offline that something arrived. Called after commit,
/// off the hot path; failures are the implementation's to log.
#[async_trait]
pub trait OfflinePush: Send + Sync + 'static {
    /// Notifies offline recipients of one message.
    async fn notify(&self, notice: OfflineNotice);
}

/// An [`OfflinePush`] that does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoOfflinePush;

#[async_trait]
impl OfflinePush for NoOfflinePush {
    async fn notify(&self, _notice: OfflineNotice) {}
}

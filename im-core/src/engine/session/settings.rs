//! `SetConversationSettings` and `BlockUser`: a client changes its own
//! settings and blocks through the host API (`engine/settings.rs`), after
//! the checks a client needs and the host does not.

use crate::ids::{ConversationId, UserId};
use crate::pb::{self, server_frame::Body as Out};
use crate::store::{SettingsChange, StoreExt};

use super::{RequestError, RequestResult, Session};

impl Session {
    /// Answers `SetConversationSettings` with the settings after the change.
    /// Only a group the user is in, or a direct chat that has a message, can
    /// be set: so the rows a client can make are bounded by its real
    /// conversations.
    pub(super) async fn on_set_settings(
        &mut self,
        request_id: u64,
        m: pb::SetConversationSettings,
    ) -> RequestResult {
        let conv = self.conversation(m.conversation)?;
        match &conv {
            ConversationId::Room(_) => {
                return Err(RequestError::new(
                    pb::ErrorCode::InvalidArgument,
                    "live rooms have no conversation settings",
                ));
            }
            ConversationId::Group(_) => self.authorize_read(&conv).await?,
            ConversationId::Direct(_) => {
                if self.engine.shared().store.head_seq(&conv).await? == 0 {
                    return Err(RequestError::new(
                        pb::ErrorCode::NotFound,
                        format!("{conv} has no message yet"),
                    ));
                }
            }
        }
        let user = self.handle.user.clone();
        let settings = if m.muted.is_none() && m.pinned.is_none() {
            self.engine.conversation_settings(&user, &conv).await?
        } else {
            self.engine
                .set_conversation_settings(SettingsChange {
                    user: user.clone(),
                    conversation: conv.clone(),
                    muted: m.muted,
                    pinned: m.pinned,
                })
                .await?
        };
        self.reply(
            request_id,
            Out::ConversationSettings(pb::ConversationSettingsResult {
                conversation: Some(conv.to_wire(&user)),
                muted: settings.muted,
                pinned: settings.pinned,
            }),
        );
        Ok(())
    }

    /// Answers `BlockUser` with the block as it now stands.
    pub(super) async fn on_block_user(
        &mut self,
        request_id: u64,
        b: pb::BlockUser,
    ) -> RequestResult {
        let other = UserId::new(&b.user)?;
        let me = &self.handle.user;
        if b.blocked {
            self.engine.block_user(me, &other).await?;
        } else {
            self.engine.unblock_user(me, &other).await?;
        }
        self.reply(
            request_id,
            Out::BlockUserResult(pb::BlockUserResult {
                user: other.to_string(),
                blocked: b.blocked,
            }),
        );
        Ok(())
    }
}

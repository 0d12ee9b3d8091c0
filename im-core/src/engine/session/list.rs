//! `ListConversations`: the user's conversations with unread counts.

use crate::engine::wire::summary_to_wire;
use crate::pb::{self, server_frame::Body as Out};
use crate::store::ConversationStatesRequest;

use super::paging::page_limit;
use super::{RequestResult, Session, UNREAD_CAP};

impl Session {
    /// Answers `ListConversations` with the user's conversation summaries.
    pub(super) async fn on_list(
        &mut self,
        request_id: u64,
        l: pb::ListConversations,
    ) -> RequestResult {
        // The list shows this session's own acks.
        self.flush_cursors().await;
        let shared = self.engine.shared();
        let limit = page_limit(l.limit, shared.config.list_max);
        let states = shared
            .store
            .conversation_states(ConversationStatesRequest {
                user: self.handle.user.clone(),
                only: None,
                unread_cap: UNREAD_CAP,
                limit,
            })
            .await?;
        let user = &self.handle.user;
        self.reply(
            request_id,
            Out::ConversationList(pb::ConversationList {
                conversations: states.iter().map(|s| summary_to_wire(s, user)).collect(),
            }),
        );
        Ok(())
    }
}

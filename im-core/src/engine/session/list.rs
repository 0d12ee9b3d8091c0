//! `ListConversations`: the user's conversations with unread counts.

use crate::engine::wire::summary_to_wire;
use crate::error::StoreError;
use crate::ids::{ConversationId, Seq, UserId};
use crate::pb::{self, server_frame::Body as Out};
use crate::store::{ConversationState, ConversationStatesRequest, Store};

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
        let peer_reads = peer_read_seqs(shared.store.as_ref(), user, &states).await?;
        self.reply(
            request_id,
            Out::ConversationList(pb::ConversationList {
                conversations: states
                    .iter()
                    .zip(peer_reads)
                    .map(|(s, peer_read)| summary_to_wire(s, user, peer_read))
                    .collect(),
            }),
        );
        Ok(())
    }
}

/// The other side's read cursor of each direct conversation in `states`
/// (0 for groups), in one store call.
async fn peer_read_seqs(
    store: &dyn Store,
    user: &UserId,
    states: &[ConversationState],
) -> Result<Vec<Seq>, StoreError> {
    let keys: Vec<(UserId, ConversationId)> = states
        .iter()
        .filter_map(|s| match &s.conversation {
            ConversationId::Direct(pair) => {
                Some((pair.peer_of(user).clone(), s.conversation.clone()))
            }
            _ => None,
        })
        .collect();
    let mut reads = if keys.is_empty() {
        Vec::new()
    } else {
        store.read_cursors(&keys).await?
    }
    .into_iter();
    Ok(states
        .iter()
        .map(|s| match s.conversation {
            ConversationId::Direct(_) => reads.next().unwrap_or(0),
            _ => 0,
        })
        .collect())
}

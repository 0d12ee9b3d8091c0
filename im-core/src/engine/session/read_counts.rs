//! `ReadCounts`: how many members of a group have read some of its messages,
//! counted from their read cursors when asked (nothing is kept per message).

use crate::ids::ConversationId;
use crate::pb::{self, server_frame::Body as Out};
use crate::store::ReadCountsRequest;

use super::{RequestError, RequestResult, Session};

impl Session {
    /// Answers `ReadCounts` for a group of at most `read_counts_max_members`.
    pub(super) async fn on_read_counts(
        &mut self,
        request_id: u64,
        r: pb::ReadCounts,
    ) -> RequestResult {
        let conv = self.conversation(r.conversation)?;
        let ConversationId::Group(group) = &conv else {
            return Err(RequestError::new(
                pb::ErrorCode::InvalidArgument,
                "read counts are kept for groups; a direct chat has ReadReceipt and peer_read_seq",
            ));
        };
        let config = &self.engine.shared().config;
        if r.seqs.len() > config.read_counts_max_seqs {
            return Err(RequestError::new(
                pb::ErrorCode::InvalidArgument,
                format!(
                    "at most {} seqs per ReadCounts, got {}",
                    config.read_counts_max_seqs,
                    r.seqs.len()
                ),
            ));
        }
        self.authorize_read(&conv).await?;
        let store = &self.engine.shared().store;
        let members = store.member_count(group).await?.unwrap_or(0);
        if members > config.read_counts_max_members {
            return Err(RequestError::new(
                pb::ErrorCode::InvalidArgument,
                format!(
                    "{conv} has {members} members; read counts are kept for groups of at most {}",
                    config.read_counts_max_members
                ),
            ));
        }
        let counts = store
            .read_counts(ReadCountsRequest {
                group: group.clone(),
                viewer: self.handle.user.clone(),
                seqs: r.seqs,
            })
            .await?;
        self.reply(
            request_id,
            Out::ReadCountsResult(pb::ReadCountsResult {
                conversation: Some(conv.to_wire(&self.handle.user)),
                counts,
            }),
        );
        Ok(())
    }
}

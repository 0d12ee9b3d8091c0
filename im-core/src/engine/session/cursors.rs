//! `Ack` and `Read`: moving the user's delivered and read cursors.

use crate::pb::{self, server_frame::Body as Out};
use crate::store::{ConversationStatesRequest, CursorUpdate};

use super::{RequestResult, Session, UNREAD_CAP};
use crate::engine::wire::unread_display;

impl Session {
    pub(super) async fn on_cursor(
        &mut self,
        request_id: u64,
        conversation: Option<pb::ConversationRef>,
        seq: u64,
        read: bool,
    ) -> RequestResult {
        let conv = self.conversation(conversation)?;
        self.authorize_read(&conv).await?;
        let store = &self.engine.shared().store;
        let user = self.handle.user.clone();
        // A cursor past the head would hide messages not yet sent.
        let head = store.head_seqs(std::slice::from_ref(&conv)).await?;
        let seq = seq.min(head.first().copied().unwrap_or(0));
        store
            .update_cursors(vec![CursorUpdate {
                user: user.clone(),
                conversation: conv.clone(),
                delivered: (!read).then_some(seq),
                read: read.then_some(seq),
            }])
            .await?;
        if !read {
            return Ok(());
        }
        let state = store
            .conversation_states(ConversationStatesRequest {
                user: user.clone(),
                only: Some(vec![conv.clone()]),
                unread_cap: UNREAD_CAP,
                limit: 1,
            })
            .await?;
        let (read_seq, count) = state.first().map_or((seq, 0), |s| (s.read_seq, s.unread));
        let (unread, unread_more) = unread_display(count);
        self.reply(
            request_id,
            Out::ReadAck(pb::ReadAck {
                conversation: Some(conv.to_wire(&user)),
                read_seq,
                unread,
                unread_more,
            }),
        );
        Ok(())
    }
}

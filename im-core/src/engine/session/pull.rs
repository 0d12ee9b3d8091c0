//! `Pull` (one conversation's timeline) and `Sync` (the user's inbox),
//! both cut to a page that fits the session's outbound queue.

use crate::engine::wire::message_to_wire;
use crate::ids::ConversationId;
use crate::pb::{self, server_frame::Body as Out};
use crate::store::{InboxRequest, RangeRequest};

use super::paging::{PageEnd, page_limit, pull_window, sync_window, trim_inbox, trim_range};
use super::{RequestResult, Session};

/// Most bytes of message bodies in one `PullResult` or `SyncResult` (the
/// outbound queue bound also caps it at half the queue).
const PAGE_BYTES_MAX: usize = 5 * 1024 * 1024;

impl Session {
    /// Most body bytes one page may carry to this session.
    fn page_bytes(&self) -> usize {
        PAGE_BYTES_MAX.min(self.engine.shared().config.outbound_queue_bytes / 2)
    }

    /// Answers a `Pull` with a page of one conversation's timeline.
    pub(super) async fn on_pull(&mut self, request_id: u64, p: pb::Pull) -> RequestResult {
        let conv = self.conversation(p.conversation)?;
        self.authorize_read(&conv).await?;
        let shared = self.engine.shared();
        let limit = page_limit(p.limit, shared.config.pull_page_max);
        let until_seq = (p.until_seq != 0).then_some(p.until_seq);
        let end = PageEnd::from_newest(p.newest);
        let req = RangeRequest {
            conversation: conv.clone(),
            after_seq: p.after_seq,
            until_seq,
            limit,
            newest: p.newest,
        };
        let mut page = match &conv {
            // Rooms answer from their hot ring, one store load per miss.
            ConversationId::Room(r) => {
                let rooms = shared.registry.rooms();
                rooms.read_range(&shared.store, r, req).await?
            }
            _ => shared.store.read_range(req).await?,
        };
        trim_range(&mut page.messages, end, self.page_bytes());
        let window = pull_window(p.after_seq, until_seq, &page);
        let user = &self.handle.user;
        self.reply(
            request_id,
            Out::PullResult(pb::PullResult {
                conversation: Some(conv.to_wire(user)),
                has_more: window.has_more,
                messages: page
                    .messages
                    .iter()
                    .map(|m| message_to_wire(m, user))
                    .collect(),
                head_seq: page.head_seq,
                history_start_seq: window.history_start_seq,
            }),
        );
        Ok(())
    }

    /// Answers a `Sync` with the inbox entries after the client's version
    /// and their messages, and with `include_heads` the heads of the user's
    /// read-diffusion groups.
    pub(super) async fn on_sync(&mut self, request_id: u64, s: pb::Sync) -> RequestResult {
        let shared = self.engine.shared();
        let limit = page_limit(s.limit, shared.config.sync_page_max);
        let mut page = shared
            .store
            .read_inbox(InboxRequest {
                user: self.handle.user.clone(),
                after_version: s.inbox_version,
                limit,
            })
            .await?;
        let refs: Vec<(ConversationId, u64)> = page
            .entries
            .iter()
            .map(|e| (e.conversation.clone(), e.seq))
            .collect();
        let mut messages = shared.store.get_messages(&refs).await?;
        trim_inbox(&mut page, &mut messages, self.page_bytes());
        let window = sync_window(s.inbox_version, &page, &messages);
        let heads = if s.include_heads {
            self.read_diffusion_heads().await?
        } else {
            Vec::new()
        };
        let user = &self.handle.user;
        self.reply(
            request_id,
            Out::SyncResult(pb::SyncResult {
                entries: page
                    .entries
                    .iter()
                    .map(|e| pb::InboxEntry {
                        version: e.version,
                        conversation: Some(e.conversation.to_wire(user)),
                        seq: e.seq,
                    })
                    .collect(),
                messages: messages.iter().map(|m| message_to_wire(m, user)).collect(),
                inbox_version: page.head_version,
                has_more: window.has_more,
                full_sync_required: window.full_sync_required,
                heads,
            }),
        );
        Ok(())
    }
}

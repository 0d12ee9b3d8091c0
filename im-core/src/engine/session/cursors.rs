//! `Ack` and `Read`: moving the user's delivered and read cursors.

use std::sync::atomic::Ordering;

use crate::codec::{encode_server_frame, server_frame};
use crate::engine::wire::unread_display;
use crate::ids::{ConversationId, UserId};
use crate::pb::{self, server_frame::Body as Out};
use crate::store::{CursorUpdate, StoreExt};

use super::{RequestResult, Session, UNREAD_CAP};

/// Which of the user's cursors in a conversation a request moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cursor {
    /// `Ack`: messages up to the seq reached one of the user's devices.
    Delivered,
    /// `Read`: the user read up to the seq; answered with a `ReadAck`.
    Read,
}

/// The answer to a `Read` at seq 0: nothing read, nothing unread.
fn empty_read_ack(conv: &ConversationId, user: &UserId) -> pb::ReadAck {
    pb::ReadAck {
        conversation: Some(conv.to_wire(user)),
        read_seq: 0,
        unread: 0,
        unread_more: false,
    }
}

impl Session {
    /// Moves `cursor` to `seq` (capped at the head); a `Read` is answered
    /// with the unread count left.
    pub(super) async fn on_cursor(
        &mut self,
        request_id: u64,
        conversation: Option<pb::ConversationRef>,
        seq: u64,
        cursor: Cursor,
    ) -> RequestResult {
        let conv = self.conversation(conversation)?;
        self.authorize_read(&conv).await?;
        let store = &self.engine.shared().store;
        let user = self.handle.user.clone();
        // A cursor past the head would hide messages not yet sent.
        let head = store.head_seq(&conv).await?;
        let seq = seq.min(head);
        // A cursor at 0 records nothing: a conversation without messages
        // keeps no hidden state for it (200k such reads once cost 42 MiB).
        if seq > 0 {
            let (delivered, read) = match cursor {
                Cursor::Delivered => (Some(seq), None),
                Cursor::Read => (None, Some(seq)),
            };
            store
                .update_cursors(vec![CursorUpdate {
                    user: user.clone(),
                    conversation: conv.clone(),
                    delivered,
                    read,
                }])
                .await?;
        }
        if cursor == Cursor::Delivered {
            return Ok(());
        }
        if head == 0 {
            self.reply(request_id, Out::ReadAck(empty_read_ack(&conv, &user)));
            return Ok(());
        }
        let state = store.conversation_state(&user, &conv, UNREAD_CAP).await?;
        let (read_seq, count) = state.map_or((seq, 0), |s| (s.read_seq, s.unread));
        self.announce_read(&conv, read_seq);
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

    /// Tells the sessions that asked for receipts that this user read up to
    /// `read_seq`: the other side of a direct chat and the reader's other
    /// devices (in a group, only the reader's other devices).
    fn announce_read(&self, conv: &ConversationId, read_seq: u64) {
        let reader = &self.handle.user;
        let registry = &self.engine.shared().registry;
        let frame = |viewer: &UserId| {
            encode_server_frame(&server_frame(
                0,
                Out::ReadReceipt(pb::ReadReceipt {
                    conversation: Some(conv.to_wire(viewer)),
                    user_id: reader.to_string(),
                    read_seq,
                }),
            ))
        };
        let tell = |sessions: Vec<std::sync::Arc<super::SessionHandle>>, frame: bytes::Bytes| {
            for s in sessions
                .iter()
                .filter(|s| s.id != self.handle.id && s.receipt_events.load(Ordering::Relaxed))
            {
                s.send(frame.clone());
            }
        };
        tell(registry.user_sessions(reader), frame(reader));
        if let ConversationId::Direct(pair) = conv {
            let peer = pair.peer_of(reader);
            if peer != reader {
                tell(registry.user_sessions(peer), frame(peer));
            }
        }
    }
}

//! `Send`: a client message, checked here and committed by its shard.

use crate::engine::shard::{PendingSend, Reply};
use crate::ids::ConversationId;
use crate::pb;
use crate::store::ContentType;

use super::presend::{PreSend, Target};
use super::{RequestError, RequestResult, Session};

impl Session {
    /// Checks a `Send` (the host's pre-send hook last, if set) and hands it
    /// to the conversation's shard, which answers with `SendAck` once it is
    /// committed.
    pub(super) async fn on_send(&mut self, request_id: u64, s: pb::Send) -> RequestResult {
        let shared = self.engine.shared();
        // Checked like every id, so nothing a store may refuse enters a batch.
        crate::ids::validate_client_msg_id(&s.client_msg_id)?;
        if s.body.len() > shared.config.max_body_bytes {
            return Err(RequestError::new(
                pb::ErrorCode::InvalidArgument,
                format!(
                    "body of {} bytes exceeds {}",
                    s.body.len(),
                    shared.config.max_body_bytes
                ),
            ));
        }
        let content_type = ContentType::from_client(s.content_type, &s.custom_content_type)?;
        let conversation = self.conversation(s.conversation)?;
        if let ConversationId::Room(r) = &conversation {
            if !self.handle.rooms.lock().contains(r) {
                return Err(RequestError::new(
                    pb::ErrorCode::Forbidden,
                    format!("join room {r} before sending to it"),
                ));
            }
            shared.registry.rooms().check_send(r, &self.handle.user)?;
        }
        let target = Target {
            conversation: &conversation,
            client_msg_id: &s.client_msg_id,
            edit_of: None,
        };
        let cleared = match self
            .pre_send(request_id, target, s.body, content_type)
            .await?
        {
            PreSend::Go(cleared) => cleared,
            PreSend::AlreadyCommitted => return Ok(()),
        };
        self.engine
            .submit(PendingSend {
                conversation,
                sender: self.handle.user.clone(),
                device: self.handle.device.clone(),
                client_msg_id: Some(s.client_msg_id),
                body: cleared.body,
                content_type: cleared.content_type,
                event: None,
                check_membership: true,
                reply: Reply::Session {
                    session: self.handle.clone(),
                    request_id,
                },
            })
            .await?;
        Ok(())
    }
}

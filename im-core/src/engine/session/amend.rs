//! `Recall` and `Edit`: checked and committed by `Engine::amend`, answered
//! with a `SendAck` for the event message.

use bytes::Bytes;

use crate::amend::{Actor, Change};
use crate::engine::amend::AmendRequest;
use crate::engine::shard::Reply;
use crate::ids::Seq;
use crate::pb;
use crate::store::ContentType;

use super::presend::{PreSend, Target};
use super::{RequestResult, Session};

impl Session {
    /// Recalls one of the user's messages.
    pub(super) async fn on_recall(&mut self, request_id: u64, r: pb::Recall) -> RequestResult {
        self.amend(
            request_id,
            r.conversation,
            r.target_seq,
            Change::Recall,
            r.client_msg_id,
            Bytes::new(),
            ContentType::Text,
        )
        .await
    }

    /// Edits one of the user's messages.
    pub(super) async fn on_edit(&mut self, request_id: u64, e: pb::Edit) -> RequestResult {
        let content_type = ContentType::from_client(e.content_type, &e.custom_content_type)?;
        self.amend(
            request_id,
            e.conversation,
            e.target_seq,
            Change::Edit,
            e.client_msg_id,
            e.body,
            content_type,
        )
        .await
    }

    /// Checks access, then hands the change to `Engine::amend`.
    #[allow(clippy::too_many_arguments)]
    async fn amend(
        &mut self,
        request_id: u64,
        conversation: Option<pb::ConversationRef>,
        seq: Seq,
        change: Change,
        client_msg_id: String,
        body: Bytes,
        content_type: ContentType,
    ) -> RequestResult {
        // Checked before the target is read, so a non-member cannot probe
        // which seqs exist.
        crate::ids::validate_client_msg_id(&client_msg_id)?;
        let conversation = self.conversation(conversation)?;
        self.authorize_read(&conversation).await?;
        // A recall carries no body: only edits go past the host's hook.
        let (body, content_type) = if change == Change::Edit {
            let target = Target {
                conversation: &conversation,
                client_msg_id: &client_msg_id,
                edit_of: Some(seq),
            };
            match self
                .pre_send(request_id, target, body, content_type)
                .await?
            {
                PreSend::Go(cleared) => (cleared.body, cleared.content_type),
                PreSend::AlreadyCommitted => return Ok(()),
            }
        } else {
            (body, content_type)
        };
        let user = self.handle.user.clone();
        self.engine
            .amend(
                AmendRequest {
                    conversation,
                    seq,
                    change,
                    actor: Actor::User(&user),
                    device: self.handle.device.clone(),
                    client_msg_id: Some(client_msg_id),
                    body,
                    content_type,
                },
                Reply::Session {
                    session: self.handle.clone(),
                    request_id,
                },
                true,
            )
            .await?;
        Ok(())
    }
}

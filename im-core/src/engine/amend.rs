//! Recall and edit: the host API on [`Engine`], and the one path both it
//! and a session's `Recall`/`Edit` take.
//!
//! A recall or edit is committed as an *event message* through the
//! conversation's ordinary send path (same shard, ordering, dedup and
//! ack-after-commit); the store applies the event to its target in the same
//! append. See "Recall and edit" in `proto/im.proto` and `ARCHITECTURE.md`.

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::amend::{Actor, Change, Refusal, authorize};
use crate::error::{EngineError, StoreError};
use crate::group_roles::GroupRole;
use crate::ids::{ConversationId, DedupKey, DeviceId, Seq, now_ms};
use crate::store::{ContentType, StoreExt};

use super::shard::{PendingSend, Reply};
use super::{Engine, HOST_DEVICE, SendReceipt};

/// One recall or edit, as asked.
pub(crate) struct AmendRequest<'a> {
    /// The conversation of the target.
    pub(crate) conversation: ConversationId,
    /// The target's seq.
    pub(crate) seq: Seq,
    /// Recall or edit.
    pub(crate) change: Change,
    /// Who asks.
    pub(crate) actor: Actor<'a>,
    /// The device the event message is sent from.
    pub(crate) device: DeviceId,
    /// Its idempotency key.
    pub(crate) client_msg_id: Option<String>,
    /// For an edit, the new body (empty for a recall).
    pub(crate) body: Bytes,
    /// For an edit, the new body's type.
    pub(crate) content_type: ContentType,
}

impl Engine {
    /// Recalls the message at `seq` of `conversation`, as `by`:
    /// [`Actor::Host`] may recall any message at any time,
    /// [`Actor::User`] only their own within
    /// [`EngineConfig::recall_window`](super::EngineConfig::recall_window)
    /// (e.g. for a host that takes recalls over its own API). Commits a
    /// recall event message (sent from device `host`) and returns its
    /// receipt; with an `idempotency_key`, a retry returns the original.
    /// Rooms do not support recall. After [`Engine::shutdown`] has begun it
    /// answers [`EngineError::ShuttingDown`] and commits nothing.
    pub async fn recall(
        &self,
        conversation: ConversationId,
        seq: Seq,
        by: Actor<'_>,
        idempotency_key: Option<String>,
    ) -> Result<SendReceipt, EngineError> {
        self.amend_as_host(AmendRequest {
            conversation,
            seq,
            change: Change::Recall,
            actor: by,
            device: DeviceId::new(HOST_DEVICE)?,
            client_msg_id: idempotency_key,
            body: Bytes::new(),
            content_type: ContentType::Text,
        })
        .await
    }

    /// Replaces the body of the message at `seq` of `conversation`, as
    /// `by` ([`Actor::Host`]: any message; [`Actor::User`]: their own).
    /// Commits an edit event message (sent from device `host`) carrying the
    /// new body, and returns its receipt. Rooms do not support edit. After
    /// [`Engine::shutdown`] has begun it answers [`EngineError::ShuttingDown`].
    pub async fn edit(
        &self,
        conversation: ConversationId,
        seq: Seq,
        body: Bytes,
        content_type: ContentType,
        by: Actor<'_>,
        idempotency_key: Option<String>,
    ) -> Result<SendReceipt, EngineError> {
        self.amend_as_host(AmendRequest {
            conversation,
            seq,
            change: Change::Edit,
            actor: by,
            device: DeviceId::new(HOST_DEVICE)?,
            client_msg_id: idempotency_key,
            body,
            content_type,
        })
        .await
    }

    /// [`Engine::amend`] answered to the host API.
    async fn amend_as_host(&self, req: AmendRequest<'_>) -> Result<SendReceipt, EngineError> {
        self.refuse_after_shutdown()?;
        let (tx, rx) = oneshot::channel();
        self.amend(req, Reply::Host(tx), false).await?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Checks a recall or edit and hands its event message to the
    /// conversation's shard, which answers `reply` once it is committed. A
    /// refused request whose idempotency key is already committed is a
    /// retry: `reply` gets the original. `Err` means `reply` was not used.
    /// `check_membership`: the sender must still be a member of a group.
    pub(crate) async fn amend(
        &self,
        req: AmendRequest<'_>,
        reply: Reply,
        check_membership: bool,
    ) -> Result<(), EngineError> {
        let shared = self.shared();
        if let Some(id) = &req.client_msg_id {
            crate::ids::validate_client_msg_id(id)?;
        }
        if req.body.len() > shared.config.max_body_bytes {
            return Err(EngineError::InvalidRequest(format!(
                "body of {} bytes exceeds {}",
                req.body.len(),
                shared.config.max_body_bytes
            )));
        }
        if req.content_type == ContentType::System {
            return Err(EngineError::InvalidRequest(
                "content type SYSTEM is written by the engine only".into(),
            ));
        }
        if matches!(req.conversation, ConversationId::Room(_)) {
            return Err(EngineError::InvalidRequest(
                "rooms do not support recall or edit".into(),
            ));
        }
        let target = shared
            .store
            .get_messages(&[(req.conversation.clone(), req.seq)])
            .await?
            .pop()
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "no retained message at seq {} of {}",
                    req.seq, req.conversation
                ))
            })?;
        let sender = match req.actor {
            Actor::User(u) | Actor::GroupAdmin(u) => u.clone(),
            Actor::Host => target.sender.clone(),
        };
        let now = now_ms();
        let window = shared.config.recall_window;
        let mut decision = authorize(req.change, req.actor, &target, now, window);
        // A user refused a recall may still be a manager of the group, who
        // recalls any message at any time: their role is read only then.
        if let (Err(refusal), Change::Recall, Actor::User(user), ConversationId::Group(g)) =
            (&decision, req.change, req.actor, &req.conversation)
            && refusal.is_forbidden()
            && self
                .group_role(g, user)
                .await?
                .is_some_and(GroupRole::is_manager)
        {
            decision = authorize(req.change, Actor::GroupAdmin(user), &target, now, window);
        }
        let event = match decision {
            Ok(event) => event,
            Err(refusal) => {
                if let Some(id) = &req.client_msg_id {
                    let key = DedupKey {
                        user: sender,
                        device: req.device,
                        client_msg_id: id.clone(),
                    };
                    if let Some(original) = shared.store.find_by_dedup_key(&key).await? {
                        reply.ok(&original, true);
                        return Ok(());
                    }
                }
                return Err(refusal_error(&refusal));
            }
        };
        self.submit(PendingSend {
            conversation: req.conversation,
            sender,
            device: req.device,
            client_msg_id: req.client_msg_id,
            body: req.body,
            content_type: req.content_type,
            event: Some(event),
            check_membership,
            reply,
        })
        .await
    }
}

/// The engine error a refusal is answered with: FORBIDDEN for who asks,
/// INVALID_ARGUMENT for the target's state.
fn refusal_error(r: &Refusal) -> EngineError {
    if r.is_forbidden() {
        EngineError::Forbidden(r.to_string())
    } else {
        EngineError::InvalidRequest(r.to_string())
    }
}

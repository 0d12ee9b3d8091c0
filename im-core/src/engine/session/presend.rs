//! The host's pre-send hook, run on the session's task before a `Send` or
//! `Edit` goes to the conversation's writer.

use std::sync::Arc;

use bytes::Bytes;

use crate::content::ContentType;
use crate::engine::shard::Reply;
use crate::hooks::{OutgoingMessage, PreSendHook, SendVerdict};
use crate::ids::{ConversationId, DedupKey, Seq};
use crate::pb;
use crate::store::StoreExt;

use super::{RequestError, RequestResult, Session};

/// A message the hook let through, possibly rewritten.
pub(super) struct Cleared {
    /// The body to commit.
    pub(super) body: Bytes,
    /// Its content type.
    pub(super) content_type: ContentType,
}

/// Where a message checked by the hook goes.
pub(super) struct Target<'a> {
    /// The conversation.
    pub(super) conversation: &'a ConversationId,
    /// The client's id for the send or edit.
    pub(super) client_msg_id: &'a str,
    /// The seq an edit changes; `None` for a send.
    pub(super) edit_of: Option<Seq>,
}

/// What came of asking the hook.
pub(super) enum PreSend {
    /// Commit this.
    Go(Cleared),
    /// The hook said no, but the message had already committed (a retry):
    /// the original `SendAck` was sent.
    AlreadyCommitted,
}

impl Session {
    /// Asks the host's hook about a message, if the host set one (without
    /// one this is a single branch). A rejection or a timeout of a retry
    /// whose first try committed is answered with the original `SendAck`.
    pub(super) async fn pre_send(
        &self,
        request_id: u64,
        target: Target<'_>,
        body: Bytes,
        content_type: ContentType,
    ) -> RequestResult<PreSend> {
        let Some(hook) = &self.engine.shared().hooks.pre_send else {
            return Ok(PreSend::Go(Cleared { body, content_type }));
        };
        let message = OutgoingMessage {
            sender: self.handle.user.clone(),
            device: self.handle.device.clone(),
            conversation: target.conversation.clone(),
            client_msg_id: target.client_msg_id.to_owned(),
            edit_of: target.edit_of,
            content_type,
            body,
        };
        // Boxed: the hook's state stays out of every send's future.
        Box::pin(self.run_hook(hook.clone(), request_id, message)).await
    }

    async fn run_hook(
        &self,
        hook: Arc<dyn PreSendHook>,
        request_id: u64,
        message: OutgoingMessage,
    ) -> RequestResult<PreSend> {
        let shared = self.engine.shared();
        let verdict = tokio::time::timeout(shared.config.hook_timeout, hook.check(&message)).await;
        let refusal = match verdict {
            Ok(SendVerdict::Allow) => {
                return Ok(PreSend::Go(Cleared {
                    body: message.body,
                    content_type: message.content_type,
                }));
            }
            Ok(SendVerdict::Rewrite { body, content_type }) => {
                if body.len() > shared.config.max_body_bytes {
                    tracing::warn!(
                        bytes = body.len(),
                        "pre-send hook rewrote a body past max_body_bytes"
                    );
                    return Err(RequestError::new(
                        pb::ErrorCode::Internal,
                        "the server's rewrite of this message is too large",
                    ));
                }
                // The host's type passes the checks a client's does: never
                // SYSTEM (the engine's own), a custom name that is valid.
                let (kind, custom) = content_type.to_wire();
                if let Err(e) = crate::store::ContentType::from_client(kind, &custom) {
                    tracing::warn!(error = %e, "pre-send hook rewrote a message into a content type clients may not send");
                    return Err(RequestError::new(
                        pb::ErrorCode::Internal,
                        "the server's rewrite of this message is invalid",
                    ));
                }
                return Ok(PreSend::Go(Cleared { body, content_type }));
            }
            Ok(SendVerdict::Reject { reason }) => {
                RequestError::new(pb::ErrorCode::Rejected, reason)
            }
            Err(_) => {
                metrics::counter!("im_pre_send_hook_timeouts_total").increment(1);
                RequestError {
                    code: pb::ErrorCode::Unavailable,
                    reason: "the server's message check did not answer in time; send it again"
                        .into(),
                    retryable: true,
                }
            }
        };
        // A retry of a message that committed before the rules changed is
        // answered as the retry it is.
        let key = DedupKey {
            user: self.handle.user.clone(),
            device: self.handle.device.clone(),
            client_msg_id: message.client_msg_id,
        };
        match shared.store.find_by_dedup_key(&key).await {
            Ok(Some(original)) => {
                Reply::Session {
                    session: self.handle.clone(),
                    request_id,
                }
                .ok(&original, true);
                Ok(PreSend::AlreadyCommitted)
            }
            Ok(None) => Err(refusal),
            Err(e) => {
                tracing::debug!(error = %e, "dedup lookup after a pre-send refusal failed");
                Err(refusal)
            }
        }
    }
}

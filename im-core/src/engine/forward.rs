//! Sends committed by the conversation's owner on another node: the origin
//! hands them to the bus and answers the client when the outcome comes
//! back; the owner commits what arrives through its ordinary commit path.
//!
//! Only with a routing bus ([`ClusterBus::remote_owner`]); a single node
//! never gets here (`Engine::submit` checks one `Option`).

use tokio::sync::oneshot;

use crate::cluster::{
    ClusterBus, ForwardError, ForwardResult, ForwardedAck, ForwardedSend, NodeId,
};
use crate::error::EngineError;

use super::cluster::ClusterInbound;
use super::shard::{PendingSend, Reply};
use super::{Engine, SendReceipt};

impl Engine {
    /// Hands `send` to `owner` over the bus and answers its reply once the
    /// owner's outcome (or a timeout, as a retryable error) comes back.
    pub(super) fn forward_to_owner(&self, bus: &dyn ClusterBus, owner: NodeId, send: PendingSend) {
        let PendingSend {
            conversation,
            sender,
            device,
            client_msg_id,
            body,
            content_type,
            event,
            check_membership,
            reply,
        } = send;
        let forwarded = ForwardedSend {
            conversation: conversation.clone(),
            sender,
            device,
            client_msg_id: client_msg_id.clone(),
            body,
            content_type,
            event,
            check_membership,
        };
        let (done, outcome) = oneshot::channel();
        metrics::counter!("im_cluster_forwarded_total").increment(1);
        bus.forward(owner, forwarded, done);
        tokio::spawn(async move {
            let outcome = outcome.await.unwrap_or_else(|_| {
                Err(ForwardError::unavailable(
                    "the cluster bus dropped the send",
                ))
            });
            match outcome {
                Ok(ack) => reply.receipt(
                    SendReceipt {
                        conversation,
                        seq: ack.seq,
                        message_id: ack.message_id,
                        server_time_ms: ack.server_time_ms,
                        duplicate: ack.duplicate,
                    },
                    client_msg_id,
                ),
                Err(e) => reply.fail(e.into_engine_error()),
            }
        });
    }
}

/// The outcomes of sends another node forwarded here, in the order given.
#[derive(Debug)]
pub struct ForwardedOutcomes {
    pending: Vec<Result<oneshot::Receiver<Result<SendReceipt, EngineError>>, ForwardError>>,
}

impl ForwardedOutcomes {
    /// Waits for every send's commit (or failure).
    pub async fn outcomes(self) -> Vec<ForwardResult> {
        let mut out = Vec::with_capacity(self.pending.len());
        for p in self.pending {
            let result = match p {
                Err(e) => Err(e),
                Ok(rx) => match rx.await {
                    Ok(Ok(r)) => Ok(ForwardedAck {
                        seq: r.seq,
                        message_id: r.message_id,
                        server_time_ms: r.server_time_ms,
                        duplicate: r.duplicate,
                    }),
                    Ok(Err(e)) => Err(ForwardError::from_engine(&e)),
                    Err(_) => Err(ForwardError::from_engine(&EngineError::ShuttingDown)),
                },
            };
            out.push(result);
        }
        out
    }
}

impl ClusterInbound {
    /// Queues sends another node forwarded here to their shards, in order
    /// (waiting while a shard's queue is full), and returns their outcomes
    /// to wait for. They are committed here whatever this node thinks of
    /// ownership (never forwarded on, so views that differ cannot bounce a
    /// send): the store's head check keeps the timeline whole. After
    /// shutdown began, each is refused as retryable.
    pub async fn commit_forwarded(&self, sends: Vec<ForwardedSend>) -> ForwardedOutcomes {
        let engine = self.inner.upgrade().map(|inner| Engine { inner });
        let mut pending = Vec::with_capacity(sends.len());
        for s in sends {
            let Some(engine) = engine
                .as_ref()
                .filter(|e| e.refuse_after_shutdown().is_ok())
            else {
                pending.push(Err(ForwardError::from_engine(&EngineError::ShuttingDown)));
                continue;
            };
            let (tx, rx) = oneshot::channel();
            let queued = engine
                .submit_here(PendingSend {
                    conversation: s.conversation,
                    sender: s.sender,
                    device: s.device,
                    client_msg_id: s.client_msg_id,
                    body: s.body,
                    content_type: s.content_type,
                    event: s.event,
                    check_membership: s.check_membership,
                    reply: Reply::Host(tx),
                })
                .await;
            pending.push(match queued {
                Ok(()) => Ok(rx),
                Err(e) => Err(ForwardError::from_engine(&e)),
            });
        }
        ForwardedOutcomes { pending }
    }
}

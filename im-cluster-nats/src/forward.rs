//! Sends forwarded to their conversation's owner, over core NATS
//! request/answer on per-node subjects.
//!
//! - **Origin.** [`NatsBus::forward`](crate::NatsBus) queues a send; one
//!   task drains the queue, groups what it drained by owner
//!   ([`plan_batches`]: many sends per NATS message, like the commit
//!   batcher) and publishes each batch to `im.<cluster>.node.<owner>.send`
//!   with this node's answer subject, in queue order (NATS keeps one
//!   connection's order to a subscriber, so one owner commits one session's
//!   sends in the order sent). Each batch waits at most the forward
//!   timeout; then every send of it is answered with a retryable
//!   `UNAVAILABLE` (it may still commit: a resend with the same
//!   `client_msg_id` returns the original).
//! - **Owner.** One task takes requests in arrival order, queues their
//!   sends to the engine's shards (`ClusterInbound::commit_forwarded`),
//!   and answers once they are committed (ack after commit), off the
//!   reading task so the next request is not held up.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::Subscriber;
use futures::StreamExt;
use im_core::cluster::{
    BatchLimits, ForwardError, ForwardResult, ForwardedSend, NodeId, plan_batches,
};
use im_core::log_limit::LogLimit;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::bus::BusState;
use crate::wire::{decode_answer, decode_forward, encode_answer, encode_forward, encode_refusal};

/// Forwards waiting to be sent (beyond: refused at once as retryable).
pub(crate) const FORWARD_QUEUE: usize = 65_536;
/// Forwards drained from the queue per planning round.
const DRAIN: usize = 4_096;
/// One NATS message of forwards: far below NATS's default 1 MiB payload.
const LIMITS: BatchLimits = BatchLimits {
    max_sends: 512,
    max_bytes: 512 * 1024,
};
/// What a send adds to a batch beyond its body (ids, keys, framing).
const SEND_OVERHEAD: usize = 256;

/// A send queued for its owner.
pub(crate) struct Queued {
    pub(crate) owner: NodeId,
    pub(crate) send: ForwardedSend,
    pub(crate) done: oneshot::Sender<ForwardResult>,
}

/// Batches sent and not answered yet, by request id.
#[derive(Default)]
pub(crate) struct Pending(Mutex<HashMap<u64, Vec<oneshot::Sender<ForwardResult>>>>);

impl Pending {
    /// Answers every send of request `id` still waiting with a retryable error.
    fn fail(&self, id: u64, why: &str) {
        let Some(dones) = self.0.lock().remove(&id) else {
            return; // answered already
        };
        metrics::counter!("im_cluster_forward_failed_total").increment(dones.len() as u64);
        for d in dones {
            let _ = d.send(Err(ForwardError::unavailable(why)));
        }
    }
}

/// The origin's task: drains queued forwards, batches them per owner and
/// publishes each batch, arming its timeout.
pub(crate) async fn send_forwards(state: Arc<BusState>, mut rx: mpsc::Receiver<Queued>) {
    let mut next_id: u64 = 0;
    let mut drained = Vec::with_capacity(DRAIN);
    let answer_subject = state.subjects.node_answer(&state.me);
    while let Some(first) = rx.recv().await {
        drained.push(first);
        while drained.len() < DRAIN {
            match rx.try_recv() {
                Ok(q) => drained.push(q),
                Err(_) => break,
            }
        }
        let plan = plan_batches(
            drained.drain(..).map(|q| {
                let size = q.send.body.len() + SEND_OVERHEAD;
                (q.owner, size, (q.send, q.done))
            }),
            LIMITS,
        );
        for (owner, batch) in plan {
            next_id += 1;
            let id = next_id;
            let (sends, dones): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let payload = encode_forward(id, &sends);
            state.pending.0.lock().insert(id, dones);
            metrics::counter!("im_cluster_forward_batches_out_total").increment(1);
            let subject = state.subjects.node_send(&owner);
            if let Err(e) = state
                .client
                .publish_with_reply(subject, answer_subject.clone(), payload)
                .await
            {
                state
                    .pending
                    .fail(id, &format!("cannot forward to owner {owner}: {e}"));
                continue;
            }
            let timeout = state.forward_timeout;
            let state = state.clone();
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                state.pending.fail(
                    id,
                    &format!("owner node {owner} did not answer within {timeout:?}; resend"),
                );
            });
        }
    }
}

/// The origin's task: hands each owner's answer to the sends waiting for it.
pub(crate) async fn listen_answers(state: Arc<BusState>, mut sub: Subscriber) {
    static BAD: LogLimit = LogLimit::per_second(1);
    while let Some(msg) = sub.next().await {
        let answer = match decode_answer(&msg.payload) {
            Ok(a) => a,
            Err(e) => {
                if let Some(suppressed) = BAD.allow() {
                    tracing::warn!(error = %e, suppressed, "ignored a forward answer");
                }
                continue;
            }
        };
        let Some(dones) = state.pending.0.lock().remove(&answer.id) else {
            continue; // timed out already: the client was told to resend
        };
        match answer.outcomes {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for d in dones {
                    let o = outcomes.next().unwrap_or_else(|| {
                        Err(ForwardError::unavailable(
                            "the owner answered fewer sends than it was sent",
                        ))
                    });
                    let _ = d.send(o);
                }
            }
            Err(why) => {
                if let Some(suppressed) = BAD.allow() {
                    tracing::error!(%why, suppressed, "the owner node refused forwarded sends");
                }
                for d in dones {
                    let _ = d.send(Err(ForwardError::unavailable(format!(
                        "the owner node refused the send: {why}"
                    ))));
                }
            }
        }
    }
}

/// The owner's task: commits forwarded sends in arrival order and answers
/// each request once its sends are committed.
pub(crate) async fn serve_forwards(state: Arc<BusState>, mut sub: Subscriber) {
    static BAD: LogLimit = LogLimit::per_second(1);
    while let Some(msg) = sub.next().await {
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let req = match decode_forward(&msg.payload) {
            Ok(req) => req,
            Err((id, e)) => {
                if let Some(suppressed) = BAD.allow() {
                    tracing::error!(error = %e, suppressed, "refused forwarded sends");
                }
                if let Some(id) = id {
                    answer(&state.client, reply, encode_refusal(id, &e.to_string())).await;
                }
                continue;
            }
        };
        let Some(engine) = state.inbound.get() else {
            answer(
                &state.client,
                reply,
                encode_refusal(req.id, "the node is not serving yet"),
            )
            .await;
            continue;
        };
        metrics::counter!("im_cluster_forwarded_in_total").increment(req.sends.len() as u64);
        // Queued here, in arrival order; committed and answered off this task.
        let outcomes = engine.commit_forwarded(req.sends).await;
        let client = state.client.clone();
        tokio::spawn(async move {
            let outcomes = outcomes.outcomes().await;
            answer(&client, reply, encode_answer(req.id, &outcomes)).await;
        });
    }
}

/// Publishes an answer to the origin's answer subject.
async fn answer(client: &async_nats::Client, to: async_nats::Subject, payload: bytes::Bytes) {
    static FAILED: LogLimit = LogLimit::per_second(1);
    if let Err(e) = client.publish(to, payload).await
        && let Some(suppressed) = FAILED.allow()
    {
        tracing::warn!(error = %e, suppressed, "forward answer not published");
    }
}

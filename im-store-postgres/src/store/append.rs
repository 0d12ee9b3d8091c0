//! The append's group commit: one transaction of `im_append_begin`, a
//! binary COPY of the messages and one of the inbox chunks, and the
//! explanations of a refused or raced batch.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::ClientWrapper;
use im_core::error::StoreError;
use im_core::ids::{ConversationId, DedupKey, DeviceId, Seq};
use im_core::store::{AppendRequest, MessageEvent, StoreResult, Timeline, check_event};
use tokio_postgres::Row;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::batch::{Batch, duplicate_list, seq_conflict};
use super::sql::{
    APPEND_BEGIN, APPLY_EDIT, APPLY_RECALL, CHUNK_TYPES, COPY_CHUNKS, COPY_MESSAGES, EVENT_TARGET,
    MESSAGE_TYPES,
};
use super::{corrupt, message_from_row, to_u64, user_from};
use crate::error::PgStoreError;
use crate::{AttemptError, PgStore, Retry};

/// A failure while writing a batch inside its transaction.
enum WriteError {
    /// The driver or the server failed.
    Pg(tokio_postgres::Error),
    /// `im_append_begin` answered something the batch cannot use.
    Store(PgStoreError),
    /// An event message cannot be applied to its target
    /// (`store::check_event`): the batch is refused with `Rejected`.
    Refused(String),
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Pg(e)
    }
}

/// The COPYs of the group commit: the batch's messages, then one inbox
/// chunk per recipient numbered back from its new head (`versions`).
async fn write_batch(
    tx: &deadpool_postgres::Transaction<'_>,
    copy_messages: &tokio_postgres::Statement,
    copy_chunks: &tokio_postgres::Statement,
    b: &Batch<'_>,
    versions: &HashMap<String, i64>,
) -> Result<(), WriteError> {
    let sink = tx.copy_in(copy_messages).await?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &MESSAGE_TYPES));
    for i in 0..b.conv.len() {
        writer
            .as_mut()
            .write(&[
                &b.conv[i],
                &b.seq[i],
                &b.id[i],
                &b.sender[i],
                &b.device[i],
                &b.cmid[i],
                &b.body[i],
                &b.time[i],
                &b.content[i],
                &b.custom[i],
                &b.event_kind[i],
                &b.event_target[i],
                &b.edit_count[i],
            ])
            .await?;
    }
    writer.finish().await?;
    if b.uuser.is_empty() {
        return Ok(());
    }
    let sink = tx.copy_in(copy_chunks).await?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &CHUNK_TYPES));
    let mut convs: Vec<&str> = Vec::new();
    let mut seqs: Vec<i64> = Vec::new();
    for (k, user) in b.uuser.iter().enumerate() {
        let Some(&last) = versions.get(*user) else {
            return Err(WriteError::Store(PgStoreError::CorruptRow(format!(
                "im_append_begin returned no inbox head for {user}"
            ))));
        };
        let first = last - b.un[k] + 1;
        convs.clear();
        seqs.clear();
        for &i in &b.uentries[k] {
            convs.push(&b.conv[i]);
            seqs.push(b.seq[i]);
        }
        writer
            .as_mut()
            .write(&[user, &last, &first, &convs, &seqs])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}

/// What `im_append_begin` answered: committed keys of the batch, or
/// conversations whose head is not where the batch continues, or else every
/// inbox user's new head version.
struct BeginReport {
    /// Committed (retained) idempotency keys of the batch.
    committed: HashSet<DedupKey>,
    /// Heads of the conversations the batch does not continue.
    heads: HashMap<ConversationId, Seq>,
    /// New inbox head version of each inbox user.
    versions: HashMap<String, i64>,
}

impl BeginReport {
    /// Reads the rows of `im_append_begin` (`users`: inbox users of the batch).
    fn read(rows: &[Row], users: usize) -> Result<Self, PgStoreError> {
        let mut committed = HashSet::new();
        let mut heads = HashMap::new();
        let mut versions: HashMap<String, i64> = HashMap::with_capacity(users);
        for row in rows {
            let kind: i32 = row.try_get(0).map_err(|e| corrupt("kind", e))?;
            match kind {
                1 => {
                    let s: &str = row.try_get(2).map_err(|e| corrupt("sender", e))?;
                    let d: &str = row.try_get(3).map_err(|e| corrupt("device", e))?;
                    let c: String = row.try_get(4).map_err(|e| corrupt("cmid", e))?;
                    committed.insert(DedupKey {
                        user: user_from(s)?,
                        device: DeviceId::new(d).map_err(|e| corrupt("device id", e))?,
                        client_msg_id: c,
                    });
                }
                2 => {
                    let conv: &str = row.try_get(1).map_err(|e| corrupt("conv", e))?;
                    let head: i64 = row.try_get(5).map_err(|e| corrupt("head", e))?;
                    heads.insert(
                        ConversationId::from_key(conv).map_err(|e| corrupt("conversation", e))?,
                        to_u64(head, "head")?,
                    );
                }
                _ => {
                    let u: String = row.try_get(2).map_err(|e| corrupt("user", e))?;
                    let v: i64 = row.try_get(5).map_err(|e| corrupt("version", e))?;
                    versions.insert(u, v);
                }
            }
        }
        Ok(Self {
            committed,
            heads,
            versions,
        })
    }

    /// Why `im_append_begin` refused the batch, as the memory store reports
    /// it: duplicates first, then the first seq conflict.
    fn refusal(mut self, req: &AppendRequest, b: &Batch<'_>) -> AttemptError {
        if !self.committed.is_empty() {
            return StoreError::Duplicate(duplicate_list(req, &self.committed)).into();
        }
        let heads = &mut self.heads;
        // Conversations not reported continue their heads.
        for (i, key) in b.cconv.iter().enumerate() {
            if let Some(m) = req.messages.get(b.cfirst_index[i])
                && !heads.contains_key(&m.message.conversation)
            {
                debug_assert_eq!(&m.message.conversation.to_key(), key);
                heads.insert(
                    m.message.conversation.clone(),
                    m.message.seq.saturating_sub(1),
                );
            }
        }
        match seq_conflict(req, heads) {
            Some(e) => e.into(),
            None => StoreError::Backend {
                source: "im_append_begin refused the batch without a reason".into(),
                retryable: false,
            }
            .into(),
        }
    }
}

impl PgStore {
    /// Applies the batch's event messages (recalls, edits) to their
    /// targets, in batch order, inside the append's transaction (after the
    /// COPY, so a target earlier in the same batch is there). Each target
    /// is read and locked, checked with `store::check_event` (the memory
    /// store's rule, word for word), then changed. Ordinary batches skip
    /// this entirely.
    async fn apply_events(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        req: &AppendRequest,
        b: &Batch<'_>,
    ) -> Result<(), WriteError> {
        if b.events.is_empty() {
            return Ok(());
        }
        let target_stmt = tx.prepare_cached(EVENT_TARGET).await?;
        let cap = self.timeline_cap();
        for &i in &b.events {
            let m = &req.messages[i].message;
            let Some(event) = m.event else { continue };
            let Some(target) = b.event_target[i] else {
                continue;
            };
            let conv = &b.conv[i];
            let rows = tx.query(&target_stmt, &[conv, &target, &cap]).await?;
            let found = match rows.first() {
                Some(row) => Some(message_from_row(row, 0).map_err(WriteError::Store)?),
                None => None,
            };
            check_event(found.as_ref(), &event).map_err(WriteError::Refused)?;
            match event {
                MessageEvent::Recall { .. } => {
                    let stmt = tx.prepare_cached(APPLY_RECALL).await?;
                    tx.execute(&stmt, &[conv, &target]).await?;
                }
                MessageEvent::Edit { .. } => {
                    let stmt = tx.prepare_cached(APPLY_EDIT).await?;
                    tx.execute(
                        &stmt,
                        &[
                            conv,
                            &target,
                            &b.body[i],
                            &b.content[i],
                            &b.custom[i],
                            &b.edit_count[i],
                        ],
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// One attempt at the group commit: one transaction of
    /// `im_append_begin` (checks, heads, inbox counters), a binary COPY of
    /// the messages and one of the inbox chunks, then COMMIT.
    pub(super) async fn append_once(
        &self,
        client: &mut ClientWrapper,
        req: &AppendRequest,
        b: &Batch<'_>,
    ) -> Result<(), AttemptError> {
        let begin = client.prepare_cached(APPEND_BEGIN).await?;
        let copy_messages = client.prepare_cached(COPY_MESSAGES).await?;
        let copy_chunks = client.prepare_cached(COPY_CHUNKS).await?;
        let inbox_cap = self.inbox_cap();
        let timeline_cap = self.timeline_cap();
        let slack = self.slack();
        // Committed keys are looked up before the COPY (rather than left
        // to the unique index during it), so a duplicate costs no wasted
        // insert, no dead rows and no ERROR in the server log.
        let params: [&(dyn ToSql + Sync); 14] = [
            &b.cconv,
            &b.cfirst,
            &b.ccount,
            &b.clast,
            &b.ca,
            &b.cb,
            &b.uuser,
            &b.un,
            &b.sender,
            &b.device,
            &b.cmid,
            &inbox_cap,
            &timeline_cap,
            &slack,
        ];
        let tx = client.transaction().await?;
        let rows = tx.query(&begin, &params).await?;
        let report = BeginReport::read(&rows, b.uuser.len())?;
        if report.committed.is_empty() && report.heads.is_empty() {
            let written =
                match write_batch(&tx, &copy_messages, &copy_chunks, b, &report.versions).await {
                    Ok(()) => self.apply_events(&tx, req, b).await,
                    Err(e) => Err(e),
                };
            return match written {
                Ok(()) => {
                    // `Ok` only once COMMIT has returned.
                    tx.commit().await?;
                    Ok(())
                }
                Err(WriteError::Pg(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    // A committed key (or a concurrent batch's key or seq)
                    // met the unique indexes; nothing of ours is kept.
                    let constraint = e
                        .as_db_error()
                        .and_then(|d| d.constraint())
                        .unwrap_or_default()
                        .to_owned();
                    tx.rollback().await?;
                    Err(self.explain_race(client, req, &constraint, e).await)
                }
                Err(WriteError::Pg(e)) => Err(e.into()),
                Err(WriteError::Store(e)) => Err(e.into()),
                Err(WriteError::Refused(reason)) => {
                    tx.rollback().await?;
                    Err(StoreError::Rejected(reason).into())
                }
            };
        }
        tx.rollback().await?;
        Err(report.refusal(req, b))
    }

    /// After a unique violation: which keys collided, or which head moved.
    async fn explain_race(
        &self,
        client: &ClientWrapper,
        req: &AppendRequest,
        constraint: &str,
        original: tokio_postgres::Error,
    ) -> AttemptError {
        let explained = if constraint == "messages_dedup_key" {
            self.committed_keys(client, req)
                .await
                .map(|committed| duplicate_list(req, &committed))
                .map(|dups| (!dups.is_empty()).then_some(StoreError::Duplicate(dups)))
        } else {
            self.batch_heads(client, req)
                .await
                .map(|heads| seq_conflict(req, &heads))
        };
        match explained {
            Ok(Some(e)) => e.into(),
            // The colliding transaction rolled back after all: try again.
            Ok(None) => StoreError::Backend {
                source: Box::new(original),
                retryable: true,
            }
            .into(),
            Err(e) => e,
        }
    }

    /// Committed (retained) keys among those of `req`.
    async fn committed_keys(
        &self,
        client: &ClientWrapper,
        req: &AppendRequest,
    ) -> Result<HashSet<DedupKey>, AttemptError> {
        let keys: Vec<DedupKey> = req
            .messages
            .iter()
            .filter_map(|m| m.message.dedup_key())
            .collect();
        let found = self.find_keys(client, &keys).await?;
        Ok(found
            .into_iter()
            .filter_map(|m| m.and_then(|m| m.dedup_key()))
            .collect())
    }

    /// Heads of the conversations of `req`.
    async fn batch_heads(
        &self,
        client: &ClientWrapper,
        req: &AppendRequest,
    ) -> Result<HashMap<ConversationId, Seq>, AttemptError> {
        let mut convs: Vec<ConversationId> = req
            .messages
            .iter()
            .map(|m| m.message.conversation.clone())
            .collect();
        convs.sort_unstable();
        convs.dedup();
        let heads = self.heads(client, &convs).await?;
        Ok(convs.into_iter().zip(heads).collect())
    }

    /// Why a batch that [`Batch::build`] flagged is refused, reported as the
    /// memory store does: duplicates first, then the first seq conflict.
    pub(super) async fn explain_refusal(&self, req: &AppendRequest) -> StoreResult<()> {
        let outcome = self
            .run(Retry::Idempotent, move |client| async move {
                let committed = self.committed_keys(&client, req).await?;
                let dups = duplicate_list(req, &committed);
                if !dups.is_empty() {
                    return Ok(Some(StoreError::Duplicate(dups)));
                }
                let heads = self.batch_heads(&client, req).await?;
                Ok(seq_conflict(req, &heads))
            })
            .await;
        match outcome.result? {
            Some(e) => Err(e),
            None => Err(StoreError::Backend {
                source: "batch refused locally without a reason".into(),
                retryable: false,
            }),
        }
    }

    /// True if every message of `req` is committed with its message id (an
    /// earlier attempt whose answer was lost did commit).
    pub(super) async fn batch_is_committed(&self, req: &AppendRequest) -> StoreResult<bool> {
        let refs: Vec<(ConversationId, Seq)> = req
            .messages
            .iter()
            .map(|m| (m.message.conversation.clone(), m.message.seq))
            .collect();
        let found = self.get_messages(&refs).await?;
        Ok(found.len() == req.messages.len()
            && found
                .iter()
                .zip(&req.messages)
                .all(|(f, m)| f.message_id == m.message.message_id))
    }
}

//! [`Timeline`] on PostgreSQL: the append (its group commit is in
//! `append.rs`), heads, ranges and lookups by seq or idempotency key.

use async_trait::async_trait;
use deadpool_postgres::ClientWrapper;
use im_core::error::StoreError;
use im_core::ids::{ConversationId, DedupKey, Seq};
use im_core::store::{
    AppendRequest, RangePage, RangeRequest, StoreResult, StoredMessage, Timeline,
};

use super::batch::Batch;
use super::sql::{FIND_BY_DEDUP, GET_MESSAGES, HEAD_SEQS, RANGE_NEWEST, RANGE_OLDEST};
use super::{corrupt, limit, message_from_row, optional_message, to_i64, to_u64};
use crate::{AttemptError, PgStore, Retry, RunOutcome};

impl PgStore {
    /// Heads of `conversations` (0 for unknown ones), in order, on `client`.
    pub(super) async fn heads(
        &self,
        client: &ClientWrapper,
        conversations: &[ConversationId],
    ) -> Result<Vec<Seq>, AttemptError> {
        let keys: Vec<String> = conversations.iter().map(ConversationId::to_key).collect();
        let stmt = client.prepare_cached(HEAD_SEQS).await?;
        let rows = client.query(&stmt, &[&keys]).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let head: i64 = row.try_get(0).map_err(|e| corrupt("head", e))?;
            out.push(to_u64(head, "head")?);
        }
        Ok(out)
    }

    /// The retained message of each of `keys` (`None`: not committed or
    /// no longer retained), in order, on `client`.
    pub(super) async fn find_keys(
        &self,
        client: &ClientWrapper,
        keys: &[DedupKey],
    ) -> Result<Vec<Option<StoredMessage>>, AttemptError> {
        let users: Vec<&str> = keys.iter().map(|k| k.user.as_str()).collect();
        let devices: Vec<&str> = keys.iter().map(|k| k.device.as_str()).collect();
        let ids: Vec<&str> = keys.iter().map(|k| k.client_msg_id.as_str()).collect();
        let cap = self.timeline_cap();
        let stmt = client.prepare_cached(FIND_BY_DEDUP).await?;
        let rows = client.query(&stmt, &[&users, &devices, &ids, &cap]).await?;
        let mut out: Vec<Option<StoredMessage>> = vec![None; keys.len()];
        for row in &rows {
            let ord: i64 = row.try_get(0).map_err(|e| corrupt("ord", e))?;
            let slot = usize::try_from(ord - 1)
                .ok()
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| corrupt("ord", ord))?;
            *slot = Some(message_from_row(row, 1)?);
        }
        Ok(out)
    }
}

#[async_trait]
impl Timeline for PgStore {
    async fn append(&self, req: AppendRequest) -> StoreResult<()> {
        if req.messages.is_empty() {
            return Ok(());
        }
        let batch = Batch::build(&req)?;
        if batch.refused_locally {
            return self.explain_refusal(&req).await;
        }
        let (r, b) = (&req, &batch);
        let RunOutcome { result, ambiguous } = self
            .run(Retry::Idempotent, move |mut client| async move {
                self.append_once(&mut client, r, b).await
            })
            .await;
        match result {
            // An earlier attempt lost its answer; if it committed, this
            // refusal is our own batch seen again.
            Err(e @ (StoreError::Duplicate(_) | StoreError::SeqConflict { .. })) if ambiguous => {
                if self.batch_is_committed(&req).await? {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    async fn head_seqs(&self, conversations: &[ConversationId]) -> StoreResult<Vec<Seq>> {
        if conversations.is_empty() {
            return Ok(Vec::new());
        }
        self.run(Retry::Idempotent, move |client| async move {
            self.heads(&client, conversations).await
        })
        .await
        .result
    }

    async fn read_range(&self, req: RangeRequest) -> StoreResult<RangePage> {
        let key = req.conversation.to_key();
        let after = to_i64(req.after_seq.min(i64::MAX as u64), "after_seq")?;
        let until = req.until_seq.map(|u| u.min(i64::MAX as u64) as i64);
        let lim = limit(req.limit);
        let cap = self.timeline_cap();
        let sql = if req.newest {
            RANGE_NEWEST
        } else {
            RANGE_OLDEST
        };
        let (key, until, cap) = (&key, &until, &cap);
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(sql).await?;
            let rows = client
                .query(&stmt, &[&key, &cap, &after, &until, &lim])
                .await?;
            let Some(first_row) = rows.first() else {
                return Ok(RangePage {
                    messages: Vec::new(),
                    head_seq: 0,
                    first_retained_seq: 1,
                });
            };
            let head: i64 = first_row.try_get(0).map_err(|e| corrupt("head", e))?;
            let first: i64 = first_row.try_get(1).map_err(|e| corrupt("first", e))?;
            let mut messages = Vec::with_capacity(rows.len());
            for row in &rows {
                if let Some(m) = optional_message(row, 2)? {
                    messages.push(m);
                }
            }
            Ok(RangePage {
                messages,
                head_seq: to_u64(head, "head")?,
                first_retained_seq: to_u64(first, "first")?,
            })
        })
        .await
        .result
    }

    async fn get_messages(
        &self,
        refs: &[(ConversationId, Seq)],
    ) -> StoreResult<Vec<StoredMessage>> {
        if refs.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = refs.iter().map(|(c, _)| c.to_key()).collect();
        // Seqs past i64::MAX cannot exist; clamp them to a seq that does not.
        let seqs: Vec<i64> = refs
            .iter()
            .map(|(_, s)| i64::try_from(*s).unwrap_or(-1))
            .collect();
        let cap = self.timeline_cap();
        let (keys, seqs, cap) = (&keys, &seqs, &cap);
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(GET_MESSAGES).await?;
            let rows = client.query(&stmt, &[&keys, &seqs, &cap]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(message_from_row(row, 0)?);
            }
            Ok(out)
        })
        .await
        .result
    }

    async fn find_by_dedup_keys(
        &self,
        keys: &[DedupKey],
    ) -> StoreResult<Vec<Option<StoredMessage>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.run(Retry::Idempotent, move |client| async move {
            self.find_keys(&client, keys).await
        })
        .await
        .result
    }
}

//! [`Cursors`] on PostgreSQL: forward-only cursor updates and conversation
//! states.

use std::collections::HashMap;

use async_trait::async_trait;
use im_core::ids::{ConversationId, Seq, UserId};
use im_core::store::{
    ConversationState, ConversationStatesRequest, CursorUpdate, Cursors, ReadCountsRequest,
    StoreResult,
};

use super::sql::{READ_COUNTS, READ_CURSORS, STATES_LISTING, STATES_ONLY, UPDATE_CURSORS};
use super::{corrupt, limit, optional_message, to_i64, to_u64};
use crate::{PgStore, PgStoreError, Retry};
use tokio_postgres::Row;

#[async_trait]
impl Cursors for PgStore {
    async fn update_cursors(&self, updates: Vec<CursorUpdate>) -> StoreResult<()> {
        // Cursors only move forward, so several updates of one cursor fold
        // into their maximum; rows are written in key order (no deadlock
        // between concurrent batches).
        let mut merged: HashMap<(String, String), (u64, u64)> = HashMap::new();
        for u in &updates {
            let entry = merged
                .entry((u.user.as_str().to_owned(), u.conversation.to_key()))
                .or_default();
            entry.0 = entry.0.max(u.delivered.unwrap_or(0));
            entry.1 = entry.1.max(u.read.unwrap_or(0));
        }
        if merged.is_empty() {
            return Ok(());
        }
        let mut rows: Vec<_> = merged.into_iter().collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut users = Vec::with_capacity(rows.len());
        let mut convs = Vec::with_capacity(rows.len());
        let mut delivered = Vec::with_capacity(rows.len());
        let mut read = Vec::with_capacity(rows.len());
        for ((user, conv), (d, r)) in rows {
            users.push(user);
            convs.push(conv);
            // A read cursor also moves the delivered one.
            delivered.push(to_i64(d.max(r), "delivered cursor")?);
            read.push(to_i64(r, "read cursor")?);
        }
        let (users, convs, delivered, read) = (&users, &convs, &delivered, &read);
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(UPDATE_CURSORS).await?;
            client
                .execute(&stmt, &[&users, &convs, &delivered, &read])
                .await?;
            Ok(())
        })
        .await
        .result
    }

    async fn conversation_states(
        &self,
        req: ConversationStatesRequest,
    ) -> StoreResult<Vec<ConversationState>> {
        let user = req.user.as_str();
        let lim = limit(req.limit);
        let unread_cap = i64::from(req.unread_cap);
        let cap = self.timeline_cap();
        let only_keys: Option<Vec<String>> = req
            .only
            .as_ref()
            .map(|list| list.iter().map(ConversationId::to_key).collect());
        let (only_keys, req, cap) = (&only_keys, &req, &cap);
        self.run(Retry::Idempotent, move |client| async move {
            let rows = match only_keys {
                Some(keys) => {
                    let stmt = client.prepare_cached(STATES_ONLY).await?;
                    client
                        .query(&stmt, &[&user, keys, &lim, &unread_cap, &cap])
                        .await?
                }
                None => {
                    let stmt = client.prepare_cached(STATES_LISTING).await?;
                    client
                        .query(&stmt, &[&user, &lim, &unread_cap, &cap])
                        .await?
                }
            };
            let mut out = Vec::with_capacity(rows.len());
            for (i, row) in rows.iter().enumerate() {
                let conversation = match req.only.as_ref().and_then(|l| l.get(i)) {
                    Some(c) => c.clone(),
                    None => {
                        let key: &str = row.try_get(0).map_err(|e| corrupt("conv", e))?;
                        ConversationId::from_key(key).map_err(|e| corrupt("conversation", e))?
                    }
                };
                let head: i64 = row.try_get(1).map_err(|e| corrupt("head", e))?;
                let delivered: i64 = row.try_get(2).map_err(|e| corrupt("delivered", e))?;
                let read: i64 = row.try_get(3).map_err(|e| corrupt("read", e))?;
                let unread: i64 = row.try_get(4).map_err(|e| corrupt("unread", e))?;
                out.push(ConversationState {
                    conversation,
                    head_seq: to_u64(head, "head")?,
                    delivered_seq: to_u64(delivered, "delivered")?,
                    read_seq: to_u64(read, "read")?,
                    unread: u32::try_from(unread).unwrap_or(u32::MAX),
                    last_message: optional_message(row, 5)?,
                });
            }
            Ok(out)
        })
        .await
        .result
    }

    async fn read_cursors(&self, keys: &[(UserId, ConversationId)]) -> StoreResult<Vec<Seq>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let users: Vec<&str> = keys.iter().map(|(u, _)| u.as_str()).collect();
        let convs: Vec<String> = keys.iter().map(|(_, c)| c.to_key()).collect();
        let (users, convs) = (&users, &convs);
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(READ_CURSORS).await?;
            let rows = client.query(&stmt, &[users, convs]).await?;
            Ok(first_column_u64(&rows, "read")?)
        })
        .await
        .result
    }

    async fn read_counts(&self, req: ReadCountsRequest) -> StoreResult<Vec<u64>> {
        if req.seqs.is_empty() {
            return Ok(Vec::new());
        }
        let conv = ConversationId::Group(req.group.clone()).to_key();
        let seqs = req
            .seqs
            .iter()
            .map(|&s| to_i64(s, "seq"))
            .collect::<Result<Vec<i64>, _>>()?;
        let (conv, group, viewer, seqs) = (&conv, req.group.as_str(), req.viewer.as_str(), &seqs);
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(READ_COUNTS).await?;
            let rows = client.query(&stmt, &[conv, &group, &viewer, seqs]).await?;
            Ok(first_column_u64(&rows, "read count")?)
        })
        .await
        .result
    }
}

/// The first column of each row, a non-negative bigint.
fn first_column_u64(rows: &[Row], what: &str) -> Result<Vec<u64>, PgStoreError> {
    rows.iter()
        .map(|row| {
            let v: i64 = row.try_get(0).map_err(|e| corrupt(what, e))?;
            to_u64(v, what)
        })
        .collect()
}

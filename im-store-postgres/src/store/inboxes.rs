//! [`Inboxes`] on PostgreSQL: inbox pages unpacked from their chunks, and
//! inbox heads.

use async_trait::async_trait;
use im_core::ids::{ConversationId, UserId};
use im_core::store::{InboxEntry, InboxPage, InboxRequest, Inboxes, StoreResult};

use super::sql::{INBOX_HEAD, READ_INBOX};
use super::{corrupt, limit, to_u64};
use crate::{PgStore, Retry};

#[async_trait]
impl Inboxes for PgStore {
    async fn read_inbox(&self, req: InboxRequest) -> StoreResult<InboxPage> {
        let user = req.user.as_str();
        let cap = self.inbox_cap();
        let after = i64::try_from(req.after_version).unwrap_or(i64::MAX);
        let lim = limit(req.limit);
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(READ_INBOX).await?;
            let rows = client.query(&stmt, &[&user, &cap, &after, &lim]).await?;
            let Some(first_row) = rows.first() else {
                return Ok(InboxPage {
                    entries: Vec::new(),
                    head_version: 0,
                    first_retained_version: 1,
                });
            };
            let head: i64 = first_row.try_get(0).map_err(|e| corrupt("version", e))?;
            let first: i64 = first_row.try_get(1).map_err(|e| corrupt("first", e))?;
            let mut entries = Vec::with_capacity(rows.len());
            for row in &rows {
                let version: Option<i64> = row.try_get(2).map_err(|e| corrupt("version", e))?;
                let Some(version) = version else { continue };
                let conv: &str = row.try_get(3).map_err(|e| corrupt("conv", e))?;
                let seq: i64 = row.try_get(4).map_err(|e| corrupt("seq", e))?;
                entries.push(InboxEntry {
                    version: to_u64(version, "version")?,
                    conversation: ConversationId::from_key(conv)
                        .map_err(|e| corrupt("conversation", e))?,
                    seq: to_u64(seq, "seq")?,
                });
            }
            Ok(InboxPage {
                entries,
                head_version: to_u64(head, "version")?,
                first_retained_version: to_u64(first, "first")?,
            })
        })
        .await
        .result
    }

    async fn inbox_head(&self, user: &UserId) -> StoreResult<u64> {
        let user = user.as_str();
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(INBOX_HEAD).await?;
            let row = client.query_opt(&stmt, &[&user]).await?;
            match row {
                Some(row) => {
                    let v: i64 = row.try_get(0).map_err(|e| corrupt("version", e))?;
                    Ok(to_u64(v, "version")?)
                }
                None => Ok(0),
            }
        })
        .await
        .result
    }
}

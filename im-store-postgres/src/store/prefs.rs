//! [`Settings`] and [`Blocks`] on PostgreSQL: the `conversation_settings`
//! and `user_blocks` tables (migration 6). Every method is one statement.

use async_trait::async_trait;
use im_core::ids::{ConversationId, UserId};
use im_core::store::{
    BlockPair, Blocks, ConversationSettings, Settings, SettingsChange, StoreResult,
};

use super::{corrupt, limit, user_from};
use crate::error::PgStoreError;
use crate::{PgStore, Retry};

/// Sets the given settings of ($1 user, $2 conv) ($3 muted, $4 pinned;
/// NULL keeps the current value) and returns them. The upsert locks the
/// row, so concurrent changes of different settings both take effect. A
/// row back at the default is kept (deleting it in the same statement
/// would race a concurrent change); rows are bounded by the conversations
/// a user really has (the engine checks that before a client's change).
const UPDATE_SETTINGS: &str = "INSERT INTO conversation_settings AS s (user_id, conv, muted, pinned) \
    VALUES ($1, $2, coalesce($3, false), coalesce($4, false)) \
    ON CONFLICT (user_id, conv) DO UPDATE \
        SET muted = coalesce($3, s.muted), pinned = coalesce($4, s.pinned) \
    RETURNING muted, pinned";

/// ($1 user)'s settings of each conversation of $2, in input order.
const SETTINGS: &str = "SELECT coalesce(s.muted, false), coalesce(s.pinned, false) \
    FROM unnest($2::text[]) WITH ORDINALITY AS x(c, ord) \
    LEFT JOIN conversation_settings s ON s.user_id = $1 AND s.conv = x.c \
    ORDER BY x.ord";

/// The conversations ($1 user) pinned, in key order, at most $2.
const PINNED: &str = "SELECT conv FROM conversation_settings \
    WHERE user_id = $1 AND pinned ORDER BY conv LIMIT $2";

/// Whether each user of $2 muted ($1 conv), in input order.
const MUTED: &str = "SELECT EXISTS (SELECT 1 FROM conversation_settings s \
        WHERE s.conv = $1 AND s.user_id = x.u AND s.muted) \
    FROM unnest($2::text[]) WITH ORDINALITY AS x(u, ord) ORDER BY x.ord";

/// Records a block.
const BLOCK: &str =
    "INSERT INTO user_blocks (blocker, blocked) VALUES ($1, $2) ON CONFLICT DO NOTHING";

/// Lifts a block.
const UNBLOCK: &str = "DELETE FROM user_blocks WHERE blocker = $1 AND blocked = $2";

/// Whether each pair ($1[i] blocks $2[i]) is blocked, in input order.
const ARE_BLOCKED: &str = "SELECT EXISTS (SELECT 1 FROM user_blocks b \
        WHERE b.blocker = x.a AND b.blocked = x.b) \
    FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS x(a, b, ord) ORDER BY x.ord";

/// Who ($1 blocker) blocks, in id order, after $2 (NULL: from the start), at most $3.
const BLOCKED_USERS: &str = "SELECT blocked FROM user_blocks \
    WHERE blocker = $1 AND ($2::text IS NULL OR blocked > $2) ORDER BY blocked LIMIT $3";

/// Reads the (muted, pinned) columns of a row.
fn settings_from(row: &tokio_postgres::Row) -> Result<ConversationSettings, PgStoreError> {
    Ok(ConversationSettings {
        muted: row.try_get(0).map_err(|e| corrupt("muted", e))?,
        pinned: row.try_get(1).map_err(|e| corrupt("pinned", e))?,
    })
}

/// Reads a column of booleans.
fn flags(rows: &[tokio_postgres::Row], what: &str) -> Result<Vec<bool>, PgStoreError> {
    rows.iter()
        .map(|r| r.try_get(0).map_err(|e| corrupt(what, e)))
        .collect()
}

#[async_trait]
impl Settings for PgStore {
    async fn update_settings(&self, change: SettingsChange) -> StoreResult<ConversationSettings> {
        let user = change.user.as_str();
        let conv = change.conversation.to_key();
        let conv = &conv;
        let (muted, pinned) = (change.muted, change.pinned);
        // Setting a value is idempotent, so a lost answer may be retried.
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(UPDATE_SETTINGS).await?;
            let row = client
                .query_one(&stmt, &[&user, conv, &muted, &pinned])
                .await?;
            Ok(settings_from(&row)?)
        })
        .await
        .result
    }

    async fn settings(
        &self,
        user: &UserId,
        conversations: &[ConversationId],
    ) -> StoreResult<Vec<ConversationSettings>> {
        if conversations.is_empty() {
            return Ok(Vec::new());
        }
        let user = user.as_str();
        let keys: Vec<String> = conversations.iter().map(ConversationId::to_key).collect();
        let keys = &keys;
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(SETTINGS).await?;
            let rows = client.query(&stmt, &[&user, keys]).await?;
            Ok(rows
                .iter()
                .map(settings_from)
                .collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .result
    }

    async fn pinned(&self, user: &UserId, limit_n: usize) -> StoreResult<Vec<ConversationId>> {
        let user = user.as_str();
        let lim = limit(limit_n);
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(PINNED).await?;
            let rows = client.query(&stmt, &[&user, &lim]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let c: &str = row.try_get(0).map_err(|e| corrupt("conv", e))?;
                out.push(ConversationId::from_key(c).map_err(|e| corrupt("conversation", e))?);
            }
            Ok(out)
        })
        .await
        .result
    }

    async fn muted(
        &self,
        conversation: &ConversationId,
        users: &[UserId],
    ) -> StoreResult<Vec<bool>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let conv = conversation.to_key();
        let conv = &conv;
        let users: Vec<&str> = users.iter().map(UserId::as_str).collect();
        let users = &users;
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(MUTED).await?;
            let rows = client.query(&stmt, &[conv, users]).await?;
            Ok(flags(&rows, "muted")?)
        })
        .await
        .result
    }
}

#[async_trait]
impl Blocks for PgStore {
    async fn set_block(&self, pair: BlockPair, on: bool) -> StoreResult<()> {
        let (blocker, blocked) = (pair.blocker.as_str(), pair.blocked.as_str());
        let sql = if on { BLOCK } else { UNBLOCK };
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(sql).await?;
            client.execute(&stmt, &[&blocker, &blocked]).await?;
            Ok(())
        })
        .await
        .result
    }

    async fn are_blocked(&self, pairs: &[BlockPair]) -> StoreResult<Vec<bool>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let blockers: Vec<&str> = pairs.iter().map(|p| p.blocker.as_str()).collect();
        let blocked: Vec<&str> = pairs.iter().map(|p| p.blocked.as_str()).collect();
        let (blockers, blocked) = (&blockers, &blocked);
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(ARE_BLOCKED).await?;
            let rows = client.query(&stmt, &[blockers, blocked]).await?;
            Ok(flags(&rows, "blocked")?)
        })
        .await
        .result
    }

    async fn blocked_users(
        &self,
        blocker: &UserId,
        after: Option<&UserId>,
        limit_n: usize,
    ) -> StoreResult<Vec<UserId>> {
        let blocker = blocker.as_str();
        let after = after.map(UserId::as_str);
        let lim = limit(limit_n);
        self.run(Retry::Idempotent, move |client| async move {
            let stmt = client.prepare_cached(BLOCKED_USERS).await?;
            let rows = client.query(&stmt, &[&blocker, &after, &lim]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let u: &str = row.try_get(0).map_err(|e| corrupt("blocked", e))?;
                out.push(user_from(u)?);
            }
            Ok(out)
        })
        .await
        .result
    }
}

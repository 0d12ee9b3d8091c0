//! The storage traits on PostgreSQL.
//!
//! [`PgStore`] itself, its pool and the retry runner live in the crate
//! root; this module holds the trait implementations, one file per trait
//! (the append's group commit in its own two), the SQL text, and the row
//! conversions they share.

use bytes::Bytes;
use im_core::ids::{ConversationId, DeviceId, MessageId, UserId};
use im_core::store::{ContentType, MessageEvent, StoredMessage};
use tokio_postgres::Row;

use crate::PgStore;
use crate::error::PgStoreError;

mod append;
mod batch;
mod cursors;
mod inboxes;
mod membership;
mod prefs;
mod sql;
mod timeline;

/// `v` as a database `bigint`; `what` names it in the error.
fn to_i64(v: u64, what: &'static str) -> Result<i64, PgStoreError> {
    i64::try_from(v).map_err(|_| PgStoreError::OutOfRange(what))
}

/// A database `bigint` as a `u64`: negative values are corrupt rows.
fn to_u64(v: i64, what: &str) -> Result<u64, PgStoreError> {
    u64::try_from(v).map_err(|_| PgStoreError::CorruptRow(format!("negative {what}: {v}")))
}

/// A `LIMIT` value: `usize` counts past `i64::MAX` mean "no limit".
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A row that does not hold what the schema promises.
fn corrupt(what: &str, e: impl std::fmt::Display) -> PgStoreError {
    PgStoreError::CorruptRow(format!("{what}: {e}"))
}

/// A user id read back from a row.
fn user_from(s: &str) -> Result<UserId, PgStoreError> {
    UserId::new(s).map_err(|e| corrupt("user id", e))
}

/// Reads a message from `row` starting at column `at`: conv, seq,
/// message_id, sender, device, client_msg_id, body, server_time_ms,
/// content_type, content_custom, event_kind, event_target, edit_count,
/// recalled (`recalled_at IS NOT NULL`).
fn message_from_row(row: &Row, at: usize) -> Result<StoredMessage, PgStoreError> {
    let conv: &str = row.try_get(at).map_err(|e| corrupt("conv", e))?;
    let seq: i64 = row.try_get(at + 1).map_err(|e| corrupt("seq", e))?;
    let id: i64 = row.try_get(at + 2).map_err(|e| corrupt("message_id", e))?;
    let sender: &str = row.try_get(at + 3).map_err(|e| corrupt("sender", e))?;
    let device: &str = row.try_get(at + 4).map_err(|e| corrupt("device", e))?;
    let client_msg_id: Option<String> = row.try_get(at + 5).map_err(|e| corrupt("cmid", e))?;
    let body: Vec<u8> = row.try_get(at + 6).map_err(|e| corrupt("body", e))?;
    let server_time_ms: i64 = row.try_get(at + 7).map_err(|e| corrupt("time", e))?;
    let content: i16 = row
        .try_get(at + 8)
        .map_err(|e| corrupt("content_type", e))?;
    let custom: Option<&str> = row
        .try_get(at + 9)
        .map_err(|e| corrupt("content_custom", e))?;
    let event_kind: i16 = row.try_get(at + 10).map_err(|e| corrupt("event_kind", e))?;
    let event_target: Option<i64> = row
        .try_get(at + 11)
        .map_err(|e| corrupt("event_target", e))?;
    let edit_count: i32 = row.try_get(at + 12).map_err(|e| corrupt("edit_count", e))?;
    let recalled: bool = row.try_get(at + 13).map_err(|e| corrupt("recalled", e))?;
    let content_type =
        ContentType::from_code(content, custom).ok_or_else(|| corrupt("content_type", content))?;
    let edit_count = u32::try_from(edit_count).map_err(|e| corrupt("edit_count", e))?;
    let event = match (event_kind, event_target) {
        (0, _) => None,
        (kind, Some(target)) => Some(
            MessageEvent::from_code(kind, to_u64(target, "event_target")?, edit_count)
                .ok_or_else(|| corrupt("event_kind", kind))?,
        ),
        (kind, None) => return Err(corrupt("event_target", format!("missing for kind {kind}"))),
    };
    Ok(StoredMessage {
        conversation: ConversationId::from_key(conv).map_err(|e| corrupt("conversation", e))?,
        seq: to_u64(seq, "seq")?,
        // Message ids are stored bit-for-bit in a signed column.
        message_id: MessageId(u64::from_ne_bytes(id.to_ne_bytes())),
        sender: user_from(sender)?,
        sender_device: DeviceId::new(device).map_err(|e| corrupt("device id", e))?,
        client_msg_id,
        body: Bytes::from(body),
        server_time_ms,
        content_type,
        recalled,
        // An edit event's column holds the count it produced (in `event`).
        edit_count: if event.is_some() { 0 } else { edit_count },
        event,
    })
}

/// Reads an optional message (a `LEFT JOIN` that may have found nothing).
fn optional_message(row: &Row, at: usize) -> Result<Option<StoredMessage>, PgStoreError> {
    let seq: Option<i64> = row.try_get(at + 1).map_err(|e| corrupt("seq", e))?;
    match seq {
        Some(_) => message_from_row(row, at).map(Some),
        None => Ok(None),
    }
}

impl PgStore {
    /// [`PgStoreConfig::timeline_capacity`](crate::PgStoreConfig::timeline_capacity)
    /// as a query parameter (NULL: unlimited).
    fn timeline_cap(&self) -> Option<i64> {
        // Validated to fit at connect time.
        self.config
            .timeline_capacity
            .map(|c| i64::try_from(c).unwrap_or(i64::MAX))
    }

    /// [`PgStoreConfig::inbox_capacity`](crate::PgStoreConfig::inbox_capacity)
    /// as a query parameter.
    fn inbox_cap(&self) -> i64 {
        i64::try_from(self.config.inbox_capacity).unwrap_or(i64::MAX)
    }

    /// [`PgStoreConfig::prune_slack`](crate::PgStoreConfig::prune_slack)
    /// as a query parameter.
    fn slack(&self) -> i64 {
        i64::try_from(self.config.prune_slack).unwrap_or(i64::MAX)
    }
}

//! The schema migration runner.
//!
//! Migrations run in one transaction holding a transaction-level advisory
//! lock keyed by the schema name, so two processes starting at once apply
//! them exactly once (the second waits, then finds them applied), and a
//! process dying half-way leaves nothing half-applied.

use deadpool_postgres::ClientWrapper;

use crate::error::{PgStoreError, map_pg};

/// The migrations, in order: `(version, name, SQL)`. Versions start at 1
/// and go +1.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.sql")),
    (
        2,
        "append_offsets",
        include_str!("migrations/0002_append_offsets.sql"),
    ),
    (
        3,
        "inbox_chunks",
        include_str!("migrations/0003_inbox_chunks.sql"),
    ),
    (
        4,
        "copy_append",
        include_str!("migrations/0004_copy_append.sql"),
    ),
    (
        5,
        "message_events",
        include_str!("migrations/0005_message_events.sql"),
    ),
    (
        6,
        "settings_blocks",
        include_str!("migrations/0006_settings_blocks.sql"),
    ),
    (
        7,
        "group_roles",
        include_str!("migrations/0007_group_roles.sql"),
    ),
];

/// Advisory lock key for `schema`: a stable 64-bit FNV-1a hash, so every
/// process agrees on it.
fn lock_key(schema: Option<&str>) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"im-store-postgres/migrate/"
        .iter()
        .chain(schema.unwrap_or("").as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// Applies pending migrations; returns the version after the run.
pub(crate) async fn run(
    client: &mut ClientWrapper,
    schema: Option<&str>,
) -> Result<i32, PgStoreError> {
    let tx = client.transaction().await.map_err(map_pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)])
        .await
        .map_err(map_pg)?;
    if let Some(schema) = schema {
        // The name was validated (lowercase, digits, '_'), so quoting it is
        // enough; identifiers cannot be bound as parameters.
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\"; SET LOCAL search_path TO \"{schema}\""
        ))
        .await
        .map_err(map_pg)?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS im_schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(map_pg)?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM im_schema_migrations",
            &[],
        )
        .await
        .map_err(map_pg)?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > known {
        // Roll back now rather than on drop, which only queues the rollback.
        tx.rollback().await.map_err(map_pg)?;
        return Err(PgStoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    let mut version = current;
    for (v, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tracing::info!(version = v, name, schema, "applying migration");
        tx.batch_execute(sql).await.map_err(map_pg)?;
        tx.execute(
            "INSERT INTO im_schema_migrations (version, name) VALUES ($1, $2)",
            &[v, name],
        )
        .await
        .map_err(map_pg)?;
        version = *v;
    }
    tx.commit().await.map_err(map_pg)?;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_go_up_by_one() {
        for (i, (v, _, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*v as usize, i + 1);
        }
    }

    #[test]
    fn lock_keys_differ_by_schema() {
        assert_eq!(lock_key(Some("a")), lock_key(Some("a")));
        assert_ne!(lock_key(Some("a")), lock_key(Some("b")));
        assert_ne!(lock_key(None), lock_key(Some("a")));
    }
}

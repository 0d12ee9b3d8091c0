//! A PostgreSQL schema of the shared test server that a test uses alone,
//! dropped with everything in it when the guard is dropped.
#![allow(dead_code)]

use std::process::Command;

#[path = "../../im-store-postgres/tests/common/throwaway.rs"]
mod throwaway;

/// The shared test server.
pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A name no other test (or run) uses, for a schema or a cluster:
/// `<prefix>_<pid>_<n>_<nanos>`.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Drops schema `.0` of [`PG_URL`] when dropped (even if the test panicked).
pub struct Schema(pub String);

impl Drop for Schema {
    fn drop(&mut self) {
        // Cleanup only: without psql the schema stays (and says so).
        let Some(psql) = throwaway::pg_tool("psql") else {
            eprintln!("psql not found: schema {} left in place", self.0);
            return;
        };
        let _ = Command::new(psql)
            .args([
                PG_URL,
                "-qc",
                &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0),
            ])
            .env("PGOPTIONS", "--client-min-messages=warning")
            .status();
    }
}

/// A PostgreSQL store in a fresh schema named after `prefix`, this process
/// and a counter, and the guard that drops the schema.
#[cfg(feature = "postgres")]
pub async fn pg_store(
    prefix: &str,
) -> (std::sync::Arc<im_engine::store_postgres::PgStore>, Schema) {
    use std::sync::atomic::{AtomicU32, Ordering};

    use im_engine::store_postgres::{PgStore, PgStoreConfig};

    static N: AtomicU32 = AtomicU32::new(0);
    let schema = Schema(format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let store = PgStore::connect(
        PgStoreConfig::new(PG_URL)
            .with_pool_size(4)
            .with_schema(schema.0.clone()),
    )
    .await
    .expect("connect to the test server");
    (std::sync::Arc::new(store), schema)
}

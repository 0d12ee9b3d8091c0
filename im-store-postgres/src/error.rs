//! Errors of this crate and their mapping into [`StoreError`].

use std::error::Error as _;

use deadpool_postgres::PoolError;
use im_core::error::StoreError;
use tokio_postgres::error::SqlState;

/// What building, connecting or migrating a [`PgStore`](crate::PgStore) can
/// fail with, and the crate's own failures carried inside
/// [`StoreError::Backend`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgStoreError {
    /// The configuration is invalid (bad URL, bad schema name, zero pool size…).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The database's schema was migrated by a newer build of this crate.
    #[error("database schema is at version {found}, newer than the {known} this build knows")]
    SchemaTooNew {
        /// Version recorded in the database.
        found: i32,
        /// Newest version this build knows.
        known: i32,
    },
    /// A stored row could not be turned back into engine types.
    #[error("corrupt row: {0}")]
    CorruptRow(String),
    /// A number does not fit the database's signed 64-bit integers.
    #[error("{0} is out of range for PostgreSQL bigint")]
    OutOfRange(&'static str),
    /// The database could not be reached or refused the connection when the
    /// store opened: names the connection string (password hidden) and the
    /// `sslmode` in force.
    #[error(
        "cannot connect to PostgreSQL at {url} (sslmode={sslmode}): {}",
        chain(source)
    )]
    Connect {
        /// The connection string, password replaced by `***`.
        url: String,
        /// The TLS mode in force.
        sslmode: crate::SslMode,
        /// What failed.
        source: StoreError,
    },
    /// A store operation failed (also returned by [`PgStore::connect`](crate::PgStore::connect)
    /// when the database cannot be reached or migrated).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PgStoreError> for StoreError {
    /// A connect failure keeps its kind (an unreachable server stays
    /// `Unavailable`, retryable) and its message (URL and sslmode).
    fn from(e: PgStoreError) -> Self {
        match e {
            PgStoreError::Store(inner) => inner,
            PgStoreError::Connect {
                source: StoreError::Unavailable(_),
                ..
            } => StoreError::Unavailable(Box::new(e)),
            PgStoreError::Connect { ref source, .. } => StoreError::Backend {
                retryable: source.is_retryable(),
                source: Box::new(e),
            },
            other => StoreError::Backend {
                source: Box::new(other),
                retryable: false,
            },
        }
    }
}

/// An error and its sources, one after the other ("db error" alone does not
/// say which database is missing; its source does).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

/// Maps a driver error to a [`StoreError`] kind.
///
/// - connection failures, `admin_shutdown`, `crash_shutdown`,
///   `cannot_connect_now`, too many connections, read-only (a standby after
///   failover) → [`StoreError::Unavailable`];
/// - `query_canceled` (the statement timeout) → [`StoreError::Timeout`];
/// - serialization failures, deadlocks, lock timeouts → retryable
///   [`StoreError::Backend`];
/// - data exceptions (class 22: a NUL in text, a value out of range) →
///   [`StoreError::Rejected`], the input's fault, not the server's;
/// - anything else → non-retryable [`StoreError::Backend`].
pub(crate) fn map_pg(e: tokio_postgres::Error) -> StoreError {
    if let Some(code) = e.code() {
        let c = code.code();
        if *code == SqlState::QUERY_CANCELED {
            return StoreError::Timeout;
        }
        if c.starts_with("22") {
            let why = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned());
            return StoreError::Rejected(format!("{why} (SQLSTATE {c})"));
        }
        let unavailable = c.starts_with("08") // connection exception
            || c.starts_with("53") // insufficient resources
            || c.starts_with("57P") // operator intervention: shutdown, cannot connect now
            || *code == SqlState::READ_ONLY_SQL_TRANSACTION;
        if unavailable {
            return StoreError::Unavailable(Box::new(e));
        }
        let retryable = *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::LOCK_NOT_AVAILABLE;
        return StoreError::Backend {
            source: Box::new(e),
            retryable,
        };
    }
    if e.is_closed() || has_io_source(&e) {
        return StoreError::Unavailable(Box::new(e));
    }
    // Driver-side failures without a server code: a connect timeout is
    // transient, the rest (type conversions, protocol errors) are not.
    let transient = e.to_string().starts_with("timeout");
    StoreError::Backend {
        source: Box::new(e),
        retryable: transient,
    }
}

fn has_io_source(e: &tokio_postgres::Error) -> bool {
    let mut source = e.source();
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Maps a pool error: failing to get a connection in time, or to open one,
/// means the database is unreachable or saturated.
pub(crate) fn map_pool(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(pg) => match map_pg(pg) {
            // Opening a connection failed without a server verdict.
            StoreError::Backend {
                source,
                retryable: true,
            } => StoreError::Unavailable(source),
            other => other,
        },
        PoolError::Timeout(_) => StoreError::Unavailable(Box::new(e)),
        other => StoreError::Backend {
            source: Box::new(other),
            retryable: false,
        },
    }
}

/// True if the error came back from the server for a statement that was
/// therefore not committed (as opposed to a lost connection, after which the
/// statement may or may not have committed).
pub(crate) fn is_server_verdict(e: &tokio_postgres::Error) -> bool {
    e.code().is_some() && !e.is_closed()
}

#![doc = include_str!("../README.md")]

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use im_core::error::StoreError;
use im_core::store::StoreResult;

mod error;
mod migrate;
mod sslmode;
mod store;
#[cfg(feature = "tls")]
mod tls;

pub use error::PgStoreError;
pub use migrate::MIGRATIONS;
pub use sslmode::{SslMode, TlsParams, redact_url, split_tls_params};

use error::{is_server_verdict, map_pg, map_pool};

/// Settings of a [`PgStore`].
///
/// Build it with [`PgStoreConfig::new`] and the `with_*` setters (the struct
/// is `#[non_exhaustive]`):
///
/// ```
/// use std::time::Duration;
/// use im_store_postgres::PgStoreConfig;
///
/// let config = PgStoreConfig::new("postgres://postgres@127.0.0.1:5432/test")
///     .with_pool_size(8)
///     .with_schema("chat")
///     .with_statement_timeout(Some(Duration::from_secs(5)))
///     .with_inbox_capacity(1_000);
/// assert_eq!(config.pool_size, 8);
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgStoreConfig {
    /// Connection string: a `postgres://` URL or `key=value` pairs, as
    /// accepted by `tokio_postgres::Config`, plus libpq's `sslmode`
    /// (`disable`, `prefer` (default), `require`, `verify-ca`,
    /// `verify-full`; see [`SslMode`]) and `sslrootcert` (a PEM file of
    /// roots, or `system`). Modes beyond `prefer` need the crate's `tls`
    /// feature; without it `prefer` connects in plain text.
    pub url: String,
    /// Most connections the pool opens. Default 16.
    pub pool_size: usize,
    /// Limit on opening one connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Limit on waiting for a free pooled connection. Default 5 s.
    pub acquire_timeout: Duration,
    /// Server-side `statement_timeout` of every connection (`None`: the
    /// server's default). A statement that runs longer fails with
    /// [`StoreError::Timeout`]. Default 10 s.
    pub statement_timeout: Option<Duration>,
    /// Schema holding the tables (created by the migrations if missing, and
    /// put on every connection's `search_path`). `None` uses the server's
    /// default `search_path` (normally `public`). Lowercase ASCII letters,
    /// digits and `_`, at most 63 bytes, not starting with a digit.
    pub schema: Option<String>,
    /// Entries kept per user inbox (as `MemoryStoreConfig::inbox_capacity`).
    /// Default 10,000.
    pub inbox_capacity: u64,
    /// Messages kept per conversation; `None` keeps all. Default `None`.
    pub timeline_capacity: Option<u64>,
    /// Retention is enforced exactly on reads, but rows past the window are
    /// deleted in chunks: a user's inbox (or a conversation's timeline) is
    /// pruned each time its window moves by this many entries, so it holds
    /// at most capacity + slack rows. Default 256 (minimum 1).
    pub prune_slack: u64,
    /// How many times an operation is retried after a retryable failure
    /// (connection lost, database restarting, serialization failure,
    /// deadlock) before the error is returned. Default 3.
    pub max_retries: u32,
    /// Delay before the first retry; doubled for each further one.
    /// Default 50 ms.
    pub retry_backoff: Duration,
}

impl fmt::Debug for PgStoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password.
        f.debug_struct("PgStoreConfig")
            .field("url", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("schema", &self.schema)
            .field("inbox_capacity", &self.inbox_capacity)
            .field("timeline_capacity", &self.timeline_capacity)
            .field("prune_slack", &self.prune_slack)
            .field("max_retries", &self.max_retries)
            .field("retry_backoff", &self.retry_backoff)
            .finish()
    }
}

impl PgStoreConfig {
    /// Defaults for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_secs(10)),
            schema: None,
            inbox_capacity: 10_000,
            timeline_capacity: None,
            prune_slack: 256,
            max_retries: 3,
            retry_backoff: Duration::from_millis(50),
        }
    }

    /// Sets [`PgStoreConfig::pool_size`].
    #[must_use]
    pub fn with_pool_size(mut self, connections: usize) -> Self {
        self.pool_size = connections;
        self
    }

    /// Sets [`PgStoreConfig::connect_timeout`].
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`PgStoreConfig::acquire_timeout`].
    #[must_use]
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Sets [`PgStoreConfig::statement_timeout`].
    #[must_use]
    pub fn with_statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Sets [`PgStoreConfig::schema`].
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Sets [`PgStoreConfig::inbox_capacity`].
    #[must_use]
    pub fn with_inbox_capacity(mut self, entries: u64) -> Self {
        self.inbox_capacity = entries;
        self
    }

    /// Sets [`PgStoreConfig::timeline_capacity`].
    #[must_use]
    pub fn with_timeline_capacity(mut self, messages: Option<u64>) -> Self {
        self.timeline_capacity = messages;
        self
    }

    /// Sets [`PgStoreConfig::prune_slack`].
    #[must_use]
    pub fn with_prune_slack(mut self, entries: u64) -> Self {
        self.prune_slack = entries;
        self
    }

    /// Sets [`PgStoreConfig::max_retries`] and [`PgStoreConfig::retry_backoff`].
    #[must_use]
    pub fn with_retries(mut self, max_retries: u32, backoff: Duration) -> Self {
        self.max_retries = max_retries;
        self.retry_backoff = backoff;
        self
    }

    fn validate(&self) -> Result<(), PgStoreError> {
        if self.pool_size == 0 {
            return Err(PgStoreError::InvalidConfig(
                "pool_size must be at least 1".into(),
            ));
        }
        if self.prune_slack == 0 {
            return Err(PgStoreError::InvalidConfig(
                "prune_slack must be at least 1".into(),
            ));
        }
        if let Some(schema) = &self.schema {
            let ok = !schema.is_empty()
                && schema.len() <= 63
                && !schema.starts_with(|c: char| c.is_ascii_digit())
                && schema
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(PgStoreError::InvalidConfig(format!(
                    "schema {schema:?}: use lowercase ASCII letters, digits and '_' (at most 63 bytes, not starting with a digit)"
                )));
            }
        }
        for (name, value) in [
            ("inbox_capacity", Some(self.inbox_capacity)),
            ("timeline_capacity", self.timeline_capacity),
            ("prune_slack", Some(self.prune_slack)),
        ] {
            if value.is_some_and(|v| i64::try_from(v).is_err()) {
                return Err(PgStoreError::InvalidConfig(format!("{name} is too large")));
            }
        }
        Ok(())
    }

    /// The TLS settings of [`PgStoreConfig::url`].
    pub fn tls_params(&self) -> Result<TlsParams, PgStoreError> {
        self.split_url().map(|(_, params)| params)
    }

    fn split_url(&self) -> Result<(String, TlsParams), PgStoreError> {
        split_tls_params(&self.url).map_err(|e| {
            PgStoreError::InvalidConfig(format!("connection string {}: {e}", redact_url(&self.url)))
        })
    }

    /// The driver configuration: URL plus timeouts, TLS mode and `search_path`.
    fn pg_config(&self) -> Result<(tokio_postgres::Config, TlsParams), PgStoreError> {
        let (rest, tls) = self.split_url()?;
        let mut pg = tokio_postgres::Config::from_str(&rest).map_err(|e| {
            PgStoreError::InvalidConfig(format!("connection string {}: {e}", redact_url(&self.url)))
        })?;
        pg.ssl_mode(match tls.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        pg.connect_timeout(self.connect_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("im-store-postgres");
        }
        let mut options: Vec<String> = pg.get_options().map(str::to_owned).into_iter().collect();
        if let Some(schema) = &self.schema {
            options.push(format!("-c search_path={schema}"));
        }
        if let Some(t) = self.statement_timeout {
            options.push(format!("-c statement_timeout={}", t.as_millis().max(1)));
        }
        if !options.is_empty() {
            pg.options(options.join(" "));
        }
        Ok((pg, tls))
    }

    /// The pool's connection manager, with the TLS connector `tls` asks for.
    fn manager(
        &self,
        pg: tokio_postgres::Config,
        tls: &TlsParams,
    ) -> Result<Manager, PgStoreError> {
        let config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        #[cfg(feature = "tls")]
        if tls.mode != SslMode::Disable {
            let connector = tls::connector(tls).map_err(|e| {
                PgStoreError::InvalidConfig(format!(
                    "connection string {}: {e}",
                    redact_url(&self.url)
                ))
            })?;
            return Ok(Manager::from_config(pg, connector, config));
        }
        #[cfg(not(feature = "tls"))]
        if tls.mode.requires_tls() {
            return Err(PgStoreError::InvalidConfig(format!(
                "connection string {} asks for sslmode={}, but im-store-postgres was built \
                 without TLS: enable its `tls` feature (im-engine: feature `tls`)",
                redact_url(&self.url),
                tls.mode
            )));
        }
        Ok(Manager::from_config(pg, tokio_postgres::NoTls, config))
    }
}

/// How an operation may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Repeating the operation is harmless: retry every retryable failure.
    Idempotent,
    /// Retry only failures that certainly left nothing committed.
    DefiniteOnly,
}

/// A failed attempt: the error and whether the database certainly did not
/// commit anything of it.
#[derive(Debug)]
pub(crate) struct AttemptError {
    pub(crate) error: StoreError,
    pub(crate) definite: bool,
}

impl From<tokio_postgres::Error> for AttemptError {
    fn from(e: tokio_postgres::Error) -> Self {
        let definite = is_server_verdict(&e);
        Self {
            error: map_pg(e),
            definite,
        }
    }
}

impl From<StoreError> for AttemptError {
    fn from(error: StoreError) -> Self {
        Self {
            error,
            definite: true,
        }
    }
}

impl From<PgStoreError> for AttemptError {
    fn from(e: PgStoreError) -> Self {
        StoreError::from(e).into()
    }
}

/// Outcome of [`PgStore::run`]: the result, and whether an earlier attempt
/// failed in a way that may have committed.
pub(crate) struct RunOutcome<T> {
    pub(crate) result: StoreResult<T>,
    pub(crate) ambiguous: bool,
}

/// The PostgreSQL store: implements every [`im_core::store`] trait.
///
/// Semantics follow `im-store-memory` (the reference) exactly; see the crate
/// documentation for the schema, the group commit and error mapping.
/// Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: PgStoreConfig,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PgStore")
            .field("config", &self.config)
            .field("pool_size", &status.size)
            .field("pool_available", &status.available)
            .finish()
    }
}

impl PgStore {
    /// Opens the pool and applies pending migrations (creating the schema if
    /// configured). Safe when several processes start at once: migrations
    /// run under a PostgreSQL advisory lock.
    pub async fn connect(config: PgStoreConfig) -> Result<Self, PgStoreError> {
        config.validate()?;
        let (pg, tls) = config.pg_config()?;
        let manager = config.manager(pg, &tls)?;
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(config.acquire_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| PgStoreError::InvalidConfig(format!("pool: {e}")))?;
        let store = Self { pool, config };
        match store.migrate().await {
            Ok(_) => Ok(store),
            Err(PgStoreError::Store(source)) => Err(PgStoreError::Connect {
                url: redact_url(&store.config.url),
                sslmode: tls.mode,
                source,
            }),
            Err(e) => Err(e),
        }
    }

    /// The configuration the store was built with.
    pub fn config(&self) -> &PgStoreConfig {
        &self.config
    }

    /// Applies pending migrations; [`PgStore::connect`] already did. Returns
    /// the schema version after the run.
    pub async fn migrate(&self) -> Result<i32, PgStoreError> {
        let mut client = self.pool.get().await.map_err(map_pool)?;
        migrate::run(&mut client, self.config.schema.as_deref()).await
    }

    /// Closes the pool: later operations fail, open connections are dropped.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Runs `op` on a pooled connection, retrying retryable failures as
    /// configured.
    pub(crate) async fn run<T, F, Fut>(&self, retry: Retry, op: F) -> RunOutcome<T>
    where
        F: Fn(Object) -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let mut attempt = 0u32;
        let mut ambiguous = false;
        loop {
            let outcome = match self.pool.get().await {
                Ok(client) => op(client).await,
                Err(e) => Err(AttemptError {
                    error: map_pool(e),
                    definite: true,
                }),
            };
            let failure = match outcome {
                Ok(value) => {
                    return RunOutcome {
                        result: Ok(value),
                        ambiguous,
                    };
                }
                Err(failure) => failure,
            };
            // Timeouts and seq conflicts are answers for the caller, not
            // transient faults to hide.
            let transient = matches!(
                failure.error,
                StoreError::Unavailable(_)
                    | StoreError::Backend {
                        retryable: true,
                        ..
                    }
            );
            let allowed = retry == Retry::Idempotent || failure.definite;
            if !transient || !allowed || attempt >= self.config.max_retries {
                return RunOutcome {
                    result: Err(failure.error),
                    ambiguous,
                };
            }
            ambiguous |= !failure.definite;
            let delay = self
                .config
                .retry_backoff
                .saturating_mul(1u32 << attempt.min(16));
            tracing::debug!(attempt, ?delay, error = %failure.error, "retrying store operation");
            attempt += 1;
            tokio::time::sleep(delay).await;
        }
    }
}

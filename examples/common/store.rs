//! The store flags of the starter servers: in memory (bounded, see
//! `memory_store.rs`, which must be included next to this file as
//! `memory_store`) or PostgreSQL with `--postgres` (feature `postgres`),
//! which a cluster's nodes share. `#[path]`-included: copy it along with a
//! starter.

use std::sync::Arc;

use im_engine::core::Store;
use im_engine::store_memory::MemoryStore;

use super::memory_store::MemoryStoreArgs;

/// Where messages are kept.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Bounds of the in-memory store.
    #[command(flatten)]
    pub memory: MemoryStoreArgs,
    /// Store everything in PostgreSQL at this URL instead of in memory.
    #[arg(long, env = "IM_PG_URL")]
    pub postgres: Option<String>,
    /// PostgreSQL schema for the tables (created and migrated on start).
    #[arg(long, env = "IM_PG_SCHEMA", default_value = "im")]
    pub pg_schema: String,
}

/// The store the flags chose.
pub enum OpenedStore {
    /// The bounded in-memory store.
    Memory(Arc<MemoryStore>),
    /// PostgreSQL (or any other shared store).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Shared(Arc<dyn Store>),
}

impl OpenedStore {
    /// The store, for `Engine::builder`.
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Self::Memory(m) => m.clone(),
            Self::Shared(s) => s.clone(),
        }
    }

    /// The in-memory store, if that is the one.
    #[allow(dead_code)] // not every starter reports the memory store's size
    pub fn memory(&self) -> Option<&Arc<MemoryStore>> {
        match self {
            Self::Memory(m) => Some(m),
            Self::Shared(_) => None,
        }
    }
}

impl StoreArgs {
    /// True when the store is shared (PostgreSQL), as a cluster needs.
    pub fn is_shared(&self) -> bool {
        self.postgres.is_some()
    }

    /// Opens (and migrates) the store; `server` names the program in errors.
    pub async fn open(&self, server: &str) -> Result<OpenedStore, Box<dyn std::error::Error>> {
        let Some(url) = &self.postgres else {
            return Ok(OpenedStore::Memory(Arc::new(self.memory.open())));
        };
        #[cfg(feature = "postgres")]
        {
            use im_engine::store_postgres::{PgStore, PgStoreConfig};
            let _ = server;
            let store = PgStore::connect(PgStoreConfig::new(url).with_schema(&self.pg_schema))
                .await
                // Names the URL (without its password), the sslmode and the cause.
                .map_err(|e| e.to_string())?;
            tracing::info!(schema = %self.pg_schema, "store: PostgreSQL");
            Ok(OpenedStore::Shared(Arc::new(store)))
        }
        #[cfg(not(feature = "postgres"))]
        {
            let _ = url;
            Err(format!(
                "--postgres / IM_PG_URL is set, but this {server} was built without \
                 PostgreSQL: run it with `--features postgres`"
            )
            .into())
        }
    }
}

//! Shared test fixtures: a store in a fresh schema of the local server.

#![allow(dead_code)]

pub mod throwaway;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use im_core::ids::{ConversationId, DeviceId, MessageId, Seq, UserId};
use im_core::store::{NewMessage, StoredMessage};
use im_store_postgres::{PgStore, PgStoreConfig};

/// The test server: `IM_PG_TEST_URL`, or the local one.
pub fn test_url() -> String {
    std::env::var("IM_PG_TEST_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The test URL with `application_name` set to `tag`, so the schema guard
/// can find (and end) every session a test left behind.
pub fn tagged_url(tag: &str) -> String {
    let url = test_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={tag}")
}

/// A schema name no other test uses.
pub fn fresh_schema() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let h = RandomState::new().hash_one((nanos, n, std::process::id()));
    format!("t_{h:016x}")
}

/// A store in its own schema, dropped (with everything in it) when this
/// value is dropped, even if the test panicked.
pub struct TestDb {
    pub store: PgStore,
    pub schema: String,
    pub config: PgStoreConfig,
    _guard: SchemaGuard,
}

/// Drops a schema of the test server when dropped.
pub struct SchemaGuard(pub String);

impl SchemaGuard {
    /// Guards a fresh schema name (the schema itself is created by the store).
    pub fn fresh() -> Self {
        Self(fresh_schema())
    }
}

impl TestDb {
    /// Default settings.
    pub async fn new() -> Self {
        Self::with(|c| c).await
    }

    /// Settings adjusted by `f` (the schema is set afterwards).
    pub async fn with(f: impl FnOnce(PgStoreConfig) -> PgStoreConfig) -> Self {
        let schema = fresh_schema();
        let config = f(PgStoreConfig::new(tagged_url(&schema)).with_pool_size(4))
            .with_schema(schema.clone());
        let store = PgStore::connect(config.clone())
            .await
            .expect("connect to the test server (set IM_PG_TEST_URL)");
        Self {
            store,
            schema: schema.clone(),
            config,
            _guard: SchemaGuard(schema),
        }
    }

    /// A second store on the same schema (another "process").
    pub async fn reopen(&self) -> PgStore {
        PgStore::connect(self.config.clone())
            .await
            .expect("reconnect")
    }

    /// A raw connection with the schema on its search_path.
    pub async fn raw(&self) -> tokio_postgres::Client {
        raw_client(&tagged_url(&self.schema), Some(&self.schema)).await
    }
}

/// A plain driver connection.
pub async fn raw_client(url: &str, schema: Option<&str>) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("raw connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    if let Some(schema) = schema {
        client
            .batch_execute(&format!("SET search_path TO \"{schema}\""))
            .await
            .expect("search_path");
    }
    client
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.store.close();
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let schema = self.0.clone();
        // Drop runs inside the test's runtime: clean up from a thread of our own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&test_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    // Sessions of the test (tagged with the schema name) may
                    // still hold locks, e.g. if it panicked mid-transaction.
                    let _ = client
                        .execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                             WHERE application_name = $1 AND pid <> pg_backend_pid()",
                            &[&schema],
                        )
                        .await;
                    let _ = client
                        .batch_execute(&format!(
                            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                        ))
                        .await;
                }
            });
        })
        .join();
    }
}

pub fn user(s: &str) -> UserId {
    UserId::new(s).expect("valid user id")
}

pub fn group(s: &str) -> ConversationId {
    ConversationId::group(s).expect("valid group id")
}

pub fn direct(a: &str, b: &str) -> ConversationId {
    ConversationId::direct(user(a), user(b))
}

/// A message from `sender` (device "phone") with a body naming its seq.
pub fn message(
    conv: &ConversationId,
    seq: Seq,
    sender: &str,
    cmid: Option<&str>,
    recipients: &[&str],
) -> NewMessage {
    NewMessage {
        message: StoredMessage {
            conversation: conv.clone(),
            seq,
            message_id: MessageId(1_000_000 + seq),
            sender: user(sender),
            sender_device: DeviceId::new("phone").expect("valid device"),
            client_msg_id: cmid.map(str::to_owned),
            body: Bytes::from(format!("{conv} #{seq} from {sender}")),
            server_time_ms: 1_700_000_000_000 + seq as i64,
            content_type: im_core::store::ContentType::Text,
            event: None,
            recalled: false,
            edit_count: 0,
        },
        inbox_recipients: recipients.iter().map(|r| user(r)).collect(),
    }
}

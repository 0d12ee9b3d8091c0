//! Concurrent processes and sessions on one database: migrations, racing
//! writers, deadlock-prone batches, timeouts and unreachable servers.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use im_core::error::StoreError;
use im_core::ids::{ConversationId, Seq};
use im_core::store::{AppendRequest, InboxRequest, Inboxes, RangeRequest, StoreExt, Timeline};
use im_store_postgres::{MIGRATIONS, PgStore, PgStoreConfig, PgStoreError};

#[tokio::test]
async fn concurrent_startups_migrate_exactly_once() {
    let guard = SchemaGuard::fresh();
    let config = PgStoreConfig::new(tagged_url(&guard.0))
        .with_pool_size(2)
        .with_schema(guard.0.clone());
    let starts: Vec<_> = (0..6)
        .map(|_| tokio::spawn(PgStore::connect(config.clone())))
        .collect();
    let mut stores = Vec::new();
    for s in starts {
        stores.push(s.await.expect("task").expect("every process starts"));
    }
    let raw = raw_client(&tagged_url(&guard.0), Some(&guard.0)).await;
    let versions: Vec<i32> = raw
        .query(
            "SELECT version FROM im_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let known: Vec<i32> = MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(versions, known);
    // A later start finds nothing to do, and every store works.
    let again = PgStore::connect(config.clone()).await.expect("restart");
    assert_eq!(
        again.migrate().await.expect("migrate"),
        *known.last().expect("one")
    );
    let g = group("g");
    for (i, store) in stores.iter().enumerate() {
        store
            .append(AppendRequest {
                messages: vec![message(&g, i as Seq + 1, "a", None, &[])],
            })
            .await
            .expect("append through every store");
    }
    for s in stores.iter().chain([&again]) {
        s.close();
    }
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let db = TestDb::new().await;
    let raw = db.raw().await;
    raw.execute(
        "INSERT INTO im_schema_migrations (version, name) VALUES (9999, 'future')",
        &[],
    )
    .await
    .expect("insert");
    match PgStore::connect(db.config.clone()).await {
        Err(PgStoreError::SchemaTooNew { found: 9999, .. }) => {}
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

/// Many conversations, each with its own writer, all writing to the same
/// users' inboxes with recipients listed in different orders: no deadlock,
/// and every inbox is continuous, complete and in per-conversation order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_batches_to_shared_inboxes_stay_continuous() {
    let db = TestDb::with(|c| c.with_pool_size(8)).await;
    let users: Vec<String> = (0..12).map(|i| format!("u{i:02}")).collect();
    let writers = 8usize;
    let batches = 15u64;
    let per_batch = 6u64;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = db.store.clone();
        let users = users.clone();
        tasks.push(tokio::spawn(async move {
            let conv = group(&format!("w{w}"));
            // Each writer names the recipients in its own rotation.
            let mut order: Vec<&str> = users.iter().map(String::as_str).collect();
            order.rotate_left(w * 5 % users.len());
            if w % 2 == 1 {
                order.reverse();
            }
            let mut seq = 0;
            for _ in 0..batches {
                let messages = (0..per_batch)
                    .map(|_| {
                        seq += 1;
                        message(&conv, seq, "sender", None, &order)
                    })
                    .collect();
                store
                    .append(AppendRequest { messages })
                    .await
                    .expect("no deadlock, no conflict");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let total = writers as u64 * batches * per_batch;
    for u in &users {
        let page = db
            .store
            .read_inbox(InboxRequest {
                user: user(u),
                after_version: 0,
                limit: 10_000,
            })
            .await
            .expect("inbox");
        assert_eq!(page.head_version, total, "{u}");
        let versions: Vec<u64> = page.entries.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=total).collect::<Vec<_>>(), "{u}: continuous");
        let mut last: HashMap<ConversationId, Seq> = HashMap::new();
        for e in &page.entries {
            let prev = last.insert(e.conversation.clone(), e.seq).unwrap_or(0);
            assert_eq!(
                e.seq,
                prev + 1,
                "{u}: {} in order, no gap, no repeat",
                e.conversation
            );
        }
        assert_eq!(last.len(), writers);
        assert!(last.values().all(|&s| s == batches * per_batch));
    }
}

/// Two writers racing for the same conversation (as two engine processes
/// would): exactly one wins each seq, the loser gets a `SeqConflict`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_never_fork_a_timeline() {
    let db = TestDb::new().await;
    let other = db.reopen().await;
    let g = group("race");
    let mut wins = [0u32; 2];
    for round in 0..40u64 {
        let head = db.store.head_seq(&g).await.expect("head");
        let a = db.store.append(AppendRequest {
            messages: vec![message(
                &g,
                head + 1,
                "a",
                Some(&format!("a{round}")),
                &["x"],
            )],
        });
        let b = other.append(AppendRequest {
            messages: vec![message(
                &g,
                head + 1,
                "b",
                Some(&format!("b{round}")),
                &["x"],
            )],
        });
        let (ra, rb) = tokio::join!(a, b);
        match (&ra, &rb) {
            (Ok(()), Err(StoreError::SeqConflict { actual, .. })) => {
                assert_eq!(*actual, head + 1);
                wins[0] += 1;
            }
            (Err(StoreError::SeqConflict { actual, .. }), Ok(())) => {
                assert_eq!(*actual, head + 1);
                wins[1] += 1;
            }
            other => panic!("round {round}: exactly one must win: {other:?}"),
        }
    }
    let page = db
        .store
        .read_range(RangeRequest {
            conversation: g.clone(),
            after_seq: 0,
            until_seq: None,
            limit: 1000,
            newest: false,
        })
        .await
        .expect("range");
    let seqs: Vec<Seq> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    let inbox = db
        .store
        .read_inbox(InboxRequest {
            user: user("x"),
            after_version: 0,
            limit: 1000,
        })
        .await
        .expect("inbox");
    assert_eq!(inbox.entries.len(), 40, "losers wrote no inbox entry");
    other.close();
}

/// The same idempotency key sent into two conversations at once: one
/// commits, the other is told it is a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_duplicates_commit_once() {
    let db = TestDb::new().await;
    let other = db.reopen().await;
    for round in 0..30u64 {
        let key = format!("k{round}");
        let g1 = group(&format!("one{round}"));
        let g2 = group(&format!("two{round}"));
        let (ra, rb) = tokio::join!(
            db.store.append(AppendRequest {
                messages: vec![message(&g1, 1, "a", Some(&key), &[])],
            }),
            other.append(AppendRequest {
                messages: vec![message(&g2, 1, "a", Some(&key), &[])],
            }),
        );
        let dup = match (ra, rb) {
            (Ok(()), Err(e)) | (Err(e), Ok(())) => e,
            other => panic!("round {round}: exactly one must commit: {other:?}"),
        };
        match dup {
            StoreError::Duplicate(keys) => {
                assert_eq!(keys.len(), 1);
                assert_eq!(keys[0].client_msg_id, key);
            }
            other => panic!("expected Duplicate, got {other:?}"),
        }
        let heads = db.store.head_seqs(&[g1, g2]).await.expect("heads");
        assert_eq!(heads.iter().sum::<u64>(), 1);
    }
    other.close();
}

/// A statement stuck behind a lock past `statement_timeout` is reported as
/// `Timeout` (retryable), writes nothing, and the store works afterwards.
#[tokio::test]
async fn statement_timeout_maps_to_timeout() {
    let db = TestDb::with(|c| c.with_statement_timeout(Some(Duration::from_millis(200)))).await;
    let g = group("locked");
    db.store
        .append(AppendRequest {
            messages: vec![message(&g, 1, "a", None, &[])],
        })
        .await
        .expect("first");
    let mut raw = db.raw().await;
    let tx = raw.transaction().await.expect("begin");
    tx.execute(
        "SELECT 1 FROM conversations WHERE conv = $1 FOR UPDATE",
        &[&g.to_key()],
    )
    .await
    .expect("lock");
    let err = db
        .store
        .append(AppendRequest {
            messages: vec![message(&g, 2, "a", None, &["b"])],
        })
        .await
        .expect_err("blocked past the timeout");
    assert!(matches!(err, StoreError::Timeout), "{err:?}");
    assert!(err.is_retryable());
    tx.rollback().await.expect("release");
    assert_eq!(db.store.head_seq(&g).await.expect("head"), 1);
    db.store
        .append(AppendRequest {
            messages: vec![message(&g, 2, "a", None, &["b"])],
        })
        .await
        .expect("works again");
}

/// No server listening: connecting fails with a retryable `Unavailable`,
/// named with the URL and the sslmode.
#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let config = PgStoreConfig::new(format!("postgres://postgres@127.0.0.1:{port}/test"))
        .with_connect_timeout(Duration::from_secs(1))
        .with_retries(1, Duration::from_millis(10));
    match PgStore::connect(config).await {
        Err(e @ PgStoreError::Connect { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&format!("127.0.0.1:{port}/test")), "{text}");
            assert!(text.contains("sslmode=prefer"), "{text}");
            let PgStoreError::Connect { source, .. } = &e else {
                unreachable!()
            };
            assert!(matches!(source, StoreError::Unavailable(_)), "{e:?}");
            let e = StoreError::from(e);
            assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
            assert!(e.is_retryable());
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_settings_are_refused() {
    for config in [
        PgStoreConfig::new(test_url()).with_schema("Bad-Name"),
        PgStoreConfig::new(test_url()).with_pool_size(0),
        PgStoreConfig::new(test_url()).with_prune_slack(0),
        PgStoreConfig::new("not a url ://"),
    ] {
        assert!(matches!(
            PgStore::connect(config).await,
            Err(PgStoreError::InvalidConfig(_))
        ),);
    }
}

/// A database left at schema version 2 (one inbox row per entry) is
/// upgraded in place: its inbox entries read back the same.
#[tokio::test]
async fn upgrade_from_version_2_keeps_inboxes() {
    let guard = SchemaGuard::fresh();
    let raw = raw_client(&tagged_url(&guard.0), None).await;
    raw.batch_execute(&format!(
        "CREATE SCHEMA {s}; SET search_path TO {s}; \
         CREATE TABLE im_schema_migrations (version integer PRIMARY KEY, name text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now());",
        s = guard.0
    ))
    .await
    .expect("schema");
    for (v, name, sql) in &MIGRATIONS[..2] {
        raw.batch_execute(sql).await.expect("old migration");
        raw.execute(
            "INSERT INTO im_schema_migrations (version, name) VALUES ($1, $2)",
            &[v, name],
        )
        .await
        .expect("record");
    }
    raw.batch_execute(
        "INSERT INTO inbox_heads (user_id, version) VALUES ('bob', 3); \
         INSERT INTO inbox (user_id, version, conv, seq) VALUES \
             ('bob', 1, 'g:a', 1), ('bob', 2, 'g:b', 7), ('bob', 3, 'g:a', 2)",
    )
    .await
    .expect("old rows");
    let store = PgStore::connect(
        PgStoreConfig::new(tagged_url(&guard.0))
            .with_pool_size(1)
            .with_schema(guard.0.clone()),
    )
    .await
    .expect("upgrade");
    let page = store
        .read_inbox(InboxRequest {
            user: user("bob"),
            after_version: 1,
            limit: 10,
        })
        .await
        .expect("inbox");
    let got: Vec<_> = page
        .entries
        .iter()
        .map(|e| (e.version, e.conversation.clone(), e.seq))
        .collect();
    assert_eq!(got, vec![(2, group("b"), 7), (3, group("a"), 2)]);
    assert_eq!(page.head_version, 3);
    store.close();
}

/// A database left at schema version 3 (the single-statement `im_append`)
/// is upgraded in place, and the COPY-based group commit continues its
/// conversations, keys and inboxes.
#[tokio::test]
async fn upgrade_from_version_3_continues_appends() {
    let guard = SchemaGuard::fresh();
    let raw = raw_client(&tagged_url(&guard.0), None).await;
    raw.batch_execute(&format!(
        "CREATE SCHEMA {s}; SET search_path TO {s}; \
         CREATE TABLE im_schema_migrations (version integer PRIMARY KEY, name text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now());",
        s = guard.0
    ))
    .await
    .expect("schema");
    for (v, name, sql) in &MIGRATIONS[..3] {
        raw.batch_execute(sql).await.expect("old migration");
        raw.execute(
            "INSERT INTO im_schema_migrations (version, name) VALUES ($1, $2)",
            &[v, name],
        )
        .await
        .expect("record");
    }
    raw.batch_execute(
        "INSERT INTO conversations (conv, head, activity) VALUES ('g:a', 2, 1); \
         INSERT INTO messages (conv, seq, message_id, sender, device, client_msg_id, body, server_time_ms) \
             VALUES ('g:a', 1, 1, 'alice', 'phone', 'k1', 'one', 0), \
                    ('g:a', 2, 2, 'alice', 'phone', 'k2', 'two', 0); \
         INSERT INTO inbox_heads (user_id, version) VALUES ('bob', 2); \
         INSERT INTO inbox_chunks (user_id, last_version, first_version, convs, seqs) \
             VALUES ('bob', 2, 1, '{g:a,g:a}', '{1,2}')",
    )
    .await
    .expect("old rows");
    let store = PgStore::connect(
        PgStoreConfig::new(tagged_url(&guard.0))
            .with_pool_size(1)
            .with_schema(guard.0.clone()),
    )
    .await
    .expect("upgrade");
    let g = group("a");
    store
        .append(AppendRequest {
            messages: vec![message(&g, 3, "alice", Some("k3"), &["bob", "alice"])],
        })
        .await
        .expect("append after upgrade");
    match store
        .append(AppendRequest {
            messages: vec![message(&g, 4, "alice", Some("k1"), &["bob"])],
        })
        .await
    {
        Err(StoreError::Duplicate(keys)) => {
            assert_eq!(keys.len(), 1);
            assert_eq!(keys[0].client_msg_id, "k1");
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    assert!(matches!(
        store
            .append(AppendRequest {
                messages: vec![message(&g, 3, "alice", None, &["bob"])],
            })
            .await,
        Err(StoreError::SeqConflict { actual: 3, .. })
    ));
    let page = store
        .read_inbox(InboxRequest {
            user: user("bob"),
            after_version: 0,
            limit: 10,
        })
        .await
        .expect("inbox");
    let got: Vec<_> = page
        .entries
        .iter()
        .map(|e| (e.version, e.conversation.clone(), e.seq))
        .collect();
    assert_eq!(
        got,
        vec![(1, g.clone(), 1), (2, g.clone(), 2), (3, g.clone(), 3)]
    );
    let range = store
        .read_range(RangeRequest {
            conversation: g.clone(),
            after_seq: 0,
            until_seq: None,
            limit: 10,
            newest: false,
        })
        .await
        .expect("range");
    let seqs: Vec<Seq> = range.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(range.head_seq, 3);
    store.close();
}

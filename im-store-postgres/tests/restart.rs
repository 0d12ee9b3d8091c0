//! PostgreSQL restarts under the store (a throwaway server of the test's
//! own): appends fail with a retryable error while it is down, nothing is
//! acknowledged without being committed, and the store recovers by itself.

mod common;

use std::time::{Duration, Instant};

use common::throwaway::ThrowawayPg;
use common::*;
use im_core::error::StoreError;
use im_core::ids::{DedupKey, DeviceId, Seq};
use im_core::store::{AppendRequest, RangeRequest, StoreExt, Timeline};
use im_store_postgres::{PgStore, PgStoreConfig};

fn config(url: String) -> PgStoreConfig {
    PgStoreConfig::new(url)
        .with_pool_size(2)
        .with_connect_timeout(Duration::from_secs(1))
        .with_acquire_timeout(Duration::from_secs(2))
        .with_retries(2, Duration::from_millis(20))
}

async fn read_all(store: &PgStore, conv: &im_core::ids::ConversationId) -> Vec<(Seq, String)> {
    store
        .read_range(RangeRequest {
            conversation: conv.clone(),
            after_seq: 0,
            until_seq: None,
            limit: 100_000,
            newest: false,
        })
        .await
        .expect("read back")
        .messages
        .into_iter()
        .map(|m| (m.seq, m.client_msg_id.unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_survives_a_server_restart() {
    let Some(pg) = ThrowawayPg::start().await else {
        return;
    };
    let store = PgStore::connect(config(pg.url())).await.expect("connect");
    let g = group("restart");
    for seq in 1..=3 {
        store
            .append(AppendRequest {
                messages: vec![message(&g, seq, "a", Some(&format!("m{seq}")), &["b"])],
            })
            .await
            .expect("append while up");
    }

    for mode in ["fast", "immediate"] {
        pg.stop(mode).await;
        let head = 3 + u64::from(mode == "immediate");
        let err = store
            .append(AppendRequest {
                messages: vec![message(&g, head + 1, "a", Some("down"), &["b"])],
            })
            .await
            .expect_err("no ack while the server is down");
        assert!(err.is_retryable(), "{mode}: {err:?}");
        assert!(matches!(err, StoreError::Unavailable(_)), "{mode}: {err:?}");
        let err = store.head_seq(&g).await.expect_err("reads fail too");
        assert!(err.is_retryable(), "{mode}: {err:?}");

        pg.restart().await;
        // The pool drops the dead connections and opens new ones: the first
        // call after the restart succeeds without any help.
        let started = Instant::now();
        store
            .append(AppendRequest {
                messages: vec![message(
                    &g,
                    head + 1,
                    "a",
                    Some(&format!("after-{mode}")),
                    &["b"],
                )],
            })
            .await
            .expect("recovers by itself");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    let got = read_all(&store, &g).await;
    assert_eq!(
        got,
        vec![
            (1, "m1".into()),
            (2, "m2".into()),
            (3, "m3".into()),
            (4, "after-fast".into()),
            (5, "after-immediate".into()),
        ],
        "the refused appends left nothing behind"
    );
    store.close();
}

/// Waits until the writer's (acks, failures) satisfy `done`.
async fn wait_progress(
    progress: &mut tokio::sync::watch::Receiver<(usize, u32)>,
    done: impl Fn((usize, u32)) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(30), progress.wait_for(|p| done(*p)))
        .await
        .expect("the writer made progress in time")
        .expect("the writer is alive");
}

/// A writer keeps sending (retrying each message until it is acknowledged,
/// re-reading the head after failures, as the engine does) while the server
/// is stopped and started twice. Every acknowledged message is there,
/// exactly once, in a gap-free timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_flowing_through_restarts_lose_and_duplicate_nothing() {
    let Some(pg) = ThrowawayPg::start().await else {
        return;
    };
    let store = PgStore::connect(config(pg.url())).await.expect("connect");
    let g = group("flow");
    // The writer reports (acks, failures) as it goes; the test moves on when
    // they change, never after a fixed time.
    let (progress_tx, mut progress) = tokio::sync::watch::channel((0usize, 0u32));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let store = store.clone();
        let g = g.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acked: Vec<(Seq, String)> = Vec::new();
            let mut failures = 0u32;
            let mut head: Option<Seq> = Some(0);
            // True while the current message's fate is unknown: the writer
            // only stops once it has learned it.
            let mut unresolved = false;
            let mut i = 0u64;
            while unresolved || !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let cmid = format!("m{i}");
                let Some(h) = head else {
                    // After a failure the outcome is unknown: learn the head.
                    match store.head_seq(&g).await {
                        Ok(h) => head = Some(h),
                        Err(e) => {
                            assert!(e.is_retryable(), "{e:?}");
                            // Back-off while the server is down, not a wait
                            // for anything.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    continue;
                };
                let req = AppendRequest {
                    messages: vec![message(&g, h + 1, "a", Some(&cmid), &["b"])],
                };
                match store.append(req).await {
                    Ok(()) => {
                        acked.push((h + 1, cmid));
                        head = Some(h + 1);
                        unresolved = false;
                        i += 1;
                    }
                    Err(StoreError::Duplicate(keys)) => {
                        // An attempt whose answer was lost did commit.
                        assert_eq!(keys.len(), 1);
                        let m = store
                            .find_by_dedup_key(&DedupKey {
                                user: user("a"),
                                device: DeviceId::new("phone").expect("valid"),
                                client_msg_id: cmid.clone(),
                            })
                            .await
                            .expect("lookup")
                            .expect("the duplicate is stored");
                        acked.push((m.seq, cmid));
                        head = None;
                        unresolved = false;
                        i += 1;
                    }
                    Err(e) => {
                        assert!(e.is_retryable(), "clear retryable error: {e:?}");
                        failures += 1;
                        head = None;
                        unresolved = true;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                let _ = progress_tx.send((acked.len(), failures));
            }
            (acked, failures)
        })
    };
    for mode in ["fast", "immediate"] {
        let (acks, fails) = *progress.borrow();
        // Traffic flows, then the server goes down until the writer fails.
        wait_progress(&mut progress, |(a, _)| a >= acks + 20).await;
        pg.stop(mode).await;
        wait_progress(&mut progress, |(_, f)| f > fails).await;
        pg.restart().await;
    }
    let (acks, _) = *progress.borrow();
    wait_progress(&mut progress, |(a, _)| a >= acks + 20).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (acked, failures) = writer.await.expect("writer");
    assert!(failures > 0, "the writer saw the outages");
    assert!(acked.len() > 20, "sends flowed: {}", acked.len());

    let stored = read_all(&store, &g).await;
    let seqs: Vec<Seq> = stored.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as Seq).collect::<Vec<_>>(),
        "gap-free"
    );
    for (seq, cmid) in &acked {
        assert!(
            stored.contains(&(*seq, cmid.clone())),
            "acknowledged {cmid} at {seq} is stored"
        );
    }
    let mut ids: Vec<&String> = stored.iter().map(|(_, c)| c).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), stored.len(), "no message stored twice");
    // Every stored message was sent by the writer and acknowledged to it
    // (the writer retries each message until it learns its fate).
    assert_eq!(stored.len(), acked.len(), "nothing stored without an ack");
    store.close();
}

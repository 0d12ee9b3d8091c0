//! PostgreSQL restarts while sends flow through the engine (a throwaway
//! server this test starts itself with `initdb`/`pg_ctl`; the shared one is
//! left alone): no ack without commit, the sender gets a clear retryable
//! error (`UNAVAILABLE`, `retryable`) during the outage, and the engine
//! recovers by itself once the database is back.
#![cfg(feature = "postgres")]

#[path = "../im-store-postgres/tests/common/throwaway.rs"]
mod throwaway;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use im_engine::core::pb;
use im_engine::core::{ChannelId, Engine, UserId};
use im_engine::store_postgres::{PgStore, PgStoreConfig};
use im_engine::transport_tcp::client::{Client, ClientError, group};
use im_engine::transport_tcp::{TcpConfig, TcpServer};
use throwaway::ThrowawayPg;
use tokio::sync::watch;

/// Acked sends that show sends are flowing (before each outage and after).
const FLOWING: usize = 20;

/// Waits until what the sender has seen satisfies `ok`; fails after 30 s.
async fn wait_until(
    seen: &mut watch::Receiver<(usize, u32)>,
    ok: impl FnMut(&(usize, u32)) -> bool,
    what: &str,
) {
    match tokio::time::timeout(Duration::from_secs(30), seen.wait_for(ok)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => panic!("the sender stopped before: {what}"),
        Err(_) => panic!("timed out waiting until {what}"),
    }
}

fn user(s: &str) -> UserId {
    UserId::new(s).expect("user id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_survive_postgres_restarts() {
    let Some(pg) = ThrowawayPg::start().await else {
        return;
    };
    let store = PgStore::connect(
        PgStoreConfig::new(pg.url())
            .with_pool_size(4)
            .with_connect_timeout(Duration::from_secs(1))
            .with_acquire_timeout(Duration::from_secs(2))
            .with_retries(2, Duration::from_millis(20)),
    )
    .await
    .expect("connect to the throwaway server");
    let engine = Engine::builder(Arc::new(store))
        .insecure_dev_auth()
        .build()
        .expect("engine");
    let tcp = TcpServer::bind("127.0.0.1:0", TcpConfig::default())
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("addr");
    tcp.serve(engine.clone());
    engine
        .create_group(
            &ChannelId::new("g").expect("id"),
            &[user("alice"), user("bob")],
        )
        .await
        .expect("group");

    let alice = Arc::new(
        Client::connect(addr, "alice:phone", "phone")
            .await
            .expect("alice connects"),
    );
    // Keep alice's unsolicited frames drained.
    let stop = Arc::new(AtomicBool::new(false));
    let drain = {
        let (alice, stop) = (alice.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if alice.next_event(Duration::from_millis(100)).await.is_err() {
                    break;
                }
            }
        })
    };

    // What the sender has seen so far: (sends acked, refusals as UNAVAILABLE).
    let (seen_tx, mut seen) = watch::channel((0usize, 0u32));
    let stop_sending = Arc::new(AtomicBool::new(false));
    let sender = {
        let (alice, stop) = (alice.clone(), stop_sending.clone());
        tokio::spawn(async move {
            let mut acked: Vec<(String, u64)> = Vec::new();
            let mut unavailable = 0u32;
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let cmid = format!("m{i}");
                match alice.send(group("g"), &cmid, format!("body {i}")).await {
                    Ok(ack) => {
                        assert_eq!(ack.client_msg_id, cmid);
                        acked.push((cmid, ack.seq));
                        seen_tx.send_replace((acked.len(), unavailable));
                        i += 1;
                    }
                    Err(ClientError::Server(e)) => {
                        // The clear, retryable refusal; retry the same id.
                        assert_eq!(
                            pb::ErrorCode::try_from(e.code).ok(),
                            Some(pb::ErrorCode::Unavailable),
                            "{e:?}"
                        );
                        assert!(e.retryable, "{e:?}");
                        unavailable += 1;
                        seen_tx.send_replace((acked.len(), unavailable));
                        // Back-off before retrying, not synchronisation.
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                    Err(other) => panic!("the session must survive the outage: {other:?}"),
                }
            }
            (acked, unavailable)
        })
    };

    // Each outage starts once sends flow, and ends once the sender was refused.
    for mode in ["fast", "immediate"] {
        let (flowing, refused) = *seen.borrow();
        wait_until(&mut seen, |&(a, _)| a >= flowing + FLOWING, "sends flow").await;
        pg.stop(mode).await;
        wait_until(
            &mut seen,
            |&(_, u)| u > refused,
            "the sender sees the outage",
        )
        .await;
        pg.restart().await;
    }
    let (recovered, _) = *seen.borrow();
    wait_until(
        &mut seen,
        |&(a, _)| a >= recovered + FLOWING,
        "sends flow after the last restart",
    )
    .await;
    stop_sending.store(true, Ordering::Relaxed);
    let (acked, unavailable) = sender.await.expect("sender");
    stop.store(true, Ordering::Relaxed);
    let _ = drain.await;
    eprintln!(
        "{} sends acked, {unavailable} refused as UNAVAILABLE",
        acked.len()
    );
    assert!(unavailable > 0, "the sender saw the outages");
    assert!(acked.len() >= 3 * FLOWING, "sends flowed: {}", acked.len());

    // A reader who was not connected during the outages pulls everything.
    let bob = Client::connect(addr, "bob:laptop", "laptop")
        .await
        .expect("bob connects");
    let mut stored: Vec<pb::Message> = Vec::new();
    loop {
        let after = stored.last().map_or(0, |m| m.seq);
        let page = bob.pull(group("g"), after, 0, 200).await.expect("pull");
        let done = !page.has_more || page.messages.is_empty();
        stored.extend(page.messages);
        if done {
            break;
        }
    }
    let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=stored.len() as u64).collect::<Vec<_>>(),
        "gap-free"
    );
    let ids: HashSet<&str> = stored.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(ids.len(), stored.len(), "each send stored once");
    for (cmid, seq) in &acked {
        assert!(
            stored
                .iter()
                .any(|m| m.client_msg_id == *cmid && m.seq == *seq),
            "acked {cmid} at {seq} was committed"
        );
    }
    assert_eq!(
        stored.len(),
        acked.len(),
        "nothing committed without an ack"
    );
    engine.shutdown().await;
}

//! The `im_testkit::faults` suite against the engine served on 127.0.0.1
//! over TCP: a poisoned batch, slowloris, a connection flood and memory
//! bounds, with modest sizes. `--nocapture` prints what each measured.
//!
//! The handshake bounds are scaled down with the attacks (2 s, 64 pending
//! handshakes, 8 per address, 16 kept for new addresses), as in
//! `tests/login_under_attack.rs`, and the memory store keeps at most
//! 512 KiB of messages, so that 1,000 messages of 1 KiB overflow it.
//! Honest clients each log in from their own loopback address (Linux
//! routes all of 127/8 to `lo`); attackers and flood sockets come from 32
//! other addresses.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use common::Server;
use im_engine::core::EngineConfig;
use im_engine::store_memory::{MemoryStore, MemoryStoreConfig};
use im_testkit::faults::{
    self, ConnectionFloodConfig, HonestLogins, MemoryBoundsConfig, PoisonedBatchConfig,
    SlowlorisConfig,
};

const HANDSHAKE: Duration = Duration::from_secs(2);
const BYTE_BUDGET: usize = 512 * 1024;

/// `insecure_dev_auth` takes `user:device`.
fn token(user: &str) -> String {
    format!("{user}:faults")
}

/// 127.a.b.1 ..= 127.a.b.n.
fn addrs(a: u8, b: u8, n: u8) -> Vec<IpAddr> {
    (1..=n)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, a, b, i)))
        .collect()
}

/// 64 logins from 64 addresses, spread over the attack (a bit more than
/// one handshake timeout), each given one handshake timeout.
fn honest() -> HonestLogins {
    HonestLogins::default()
        .with_logins(64)
        .with_concurrency(8)
        .with_from(addrs(0, 3, 64))
        .with_timeouts(Duration::from_secs(5), HANDSHAKE)
        .with_spread_over(HANDSHAKE + Duration::from_millis(500))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_suite_passes_against_the_engine() {
    let mut config = EngineConfig::default();
    config.handshake_timeout = HANDSHAKE;
    config.max_pending_handshakes = 64;
    config.max_pending_handshakes_per_address = 8;
    config.pending_handshakes_reserved_for_new_addresses = 16;
    let store = Arc::new(MemoryStore::with_config(
        MemoryStoreConfig::default().with_max_total_bytes(Some(BYTE_BUDGET)),
    ));
    let server = Server::start_with(config, store.clone()).await;
    let addr = server.addr;

    let poisoned = faults::poisoned_batch(
        addr,
        token,
        PoisonedBatchConfig::default()
            .with_honest(16, 100)
            .with_poison_rounds(8),
    )
    .await;
    eprintln!("{poisoned}\n");

    let slowloris = faults::slowloris(
        addr,
        token,
        SlowlorisConfig::default()
            .with_attackers(256)
            .with_attacker_from(addrs(0, 1, 32))
            .with_honest(honest())
            .with_min_success_ratio(0.95),
    )
    .await;
    eprintln!("{slowloris}\n");

    let flood = faults::connection_flood(
        addr,
        token,
        ConnectionFloodConfig::default()
            .with_sockets(256)
            .with_from(addrs(0, 2, 32))
            .with_hold_for(HANDSHAKE * 3)
            .with_honest(honest())
            .with_min_success_ratio(0.95)
            .with_max_close_after(Some(HANDSHAKE + Duration::from_secs(2))),
    )
    .await;
    eprintln!("{flood}\n");

    let memory = faults::memory_bounds(
        addr,
        token,
        MemoryBoundsConfig::default()
            .with_conversations(4)
            .with_messages(1_000, 1024),
    )
    .await;
    eprintln!(
        "{memory}\n  store: {} bytes retained of a {BYTE_BUDGET}-byte budget\n",
        store.retained_bytes()
    );

    poisoned.check();
    slowloris.check();
    flood.check();
    memory.check();
    memory.assert_oldest_dropped();
    assert!(
        store.retained_bytes() <= BYTE_BUDGET,
        "the store holds {} bytes, over its budget of {BYTE_BUDGET}",
        store.retained_bytes()
    );
}

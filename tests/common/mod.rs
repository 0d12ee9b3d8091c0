//! Shared setup for end-to-end tests: an engine on a real TCP socket.
#![allow(dead_code)]

pub mod gated;
pub mod pg_schema;
#[cfg(feature = "ws")]
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use im_engine::core::pb::{self, server_frame::Body as Out};
use im_engine::core::store::{RangeRequest, StoredMessage};
use im_engine::core::{ChannelId, ConversationId, Engine, EngineConfig, Store, UserId};
use im_engine::store_memory::MemoryStore;
use im_engine::transport_tcp::client::Client;
use im_engine::transport_tcp::{TcpConfig, TcpServer};
use im_testkit::duplex::MemClient;
use im_testkit::probe::SessionProbe;

/// How long tests wait for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long tests wait to be sure something does *not* happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// An engine served on 127.0.0.1 over TCP.
pub struct Server {
    pub engine: Engine,
    pub addr: SocketAddr,
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with(EngineConfig::default(), Arc::new(MemoryStore::new())).await
    }

    pub async fn start_with(config: EngineConfig, store: Arc<dyn Store>) -> Self {
        let engine = Engine::builder(store)
            .config(config)
            .insecure_dev_auth()
            .build()
            .expect("engine");
        Self::serve(engine).await
    }

    /// Like [`Server::start_with`], with a probe to wait on sessions.
    pub async fn start_probed(
        config: EngineConfig,
        store: Arc<dyn Store>,
    ) -> (Self, Arc<SessionProbe>) {
        let (engine, probe) = probed_engine(config, store);
        (Self::serve(engine).await, probe)
    }

    /// Serves an engine built by the test over TCP on 127.0.0.1.
    pub async fn serve(engine: Engine) -> Self {
        let max_frame = engine.config().max_frame_bytes;
        let tcp = TcpServer::bind(
            "127.0.0.1:0",
            TcpConfig::default().max_frame_bytes(max_frame),
        )
        .await
        .expect("bind");
        let addr = tcp.local_addr().expect("addr");
        tcp.serve(engine.clone());
        Self { engine, addr }
    }

    /// Connects `user` from device `device`.
    pub async fn connect(&self, user: &str, device: &str) -> Client {
        Client::connect(self.addr, &format!("{user}:{device}"), device)
            .await
            .expect("connect")
    }

    /// Connects `user` from device `device` with `Connect.push_acks` set:
    /// the server tracks its pushes until it acks them ([`Client::ack`]).
    pub async fn connect_acking(&self, user: &str, device: &str) -> Client {
        let connect = pb::Connect {
            token: format!("{user}:{device}"),
            device_id: device.to_owned(),
            push_acks: true,
            ..Default::default()
        };
        Client::connect_frame(self.addr, connect)
            .await
            .expect("connect")
    }

    pub async fn group(&self, id: &str, members: &[&str]) {
        let members: Vec<UserId> = members.iter().map(|m| user(m)).collect();
        self.engine
            .create_group(&ChannelId::new(id).expect("id"), &members)
            .await
            .expect("create group");
    }
}

/// An engine (development authentication) whose session directory is a
/// probe, to wait on sessions opening and closing.
pub fn probed_engine(config: EngineConfig, store: Arc<dyn Store>) -> (Engine, Arc<SessionProbe>) {
    let probe = Arc::new(SessionProbe::default());
    let engine = Engine::builder(store)
        .config(config)
        .session_directory(probe.clone())
        .insecure_dev_auth()
        .build()
        .expect("engine");
    (engine, probe)
}

pub fn user(s: &str) -> UserId {
    UserId::new(s).expect("user id")
}

/// Waits for the next unsolicited frame matching `pick`, skipping others.
pub async fn next_matching<T>(c: &Client, mut pick: impl FnMut(Out) -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.next_event(left).await {
            Ok(Some(pb::ServerFrame { body: Some(b), .. })) => {
                if let Some(t) = pick(b) {
                    return Some(t);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Connects `user` from `device` with `options` applied to its `Connect`
/// frame (e.g. to ask for typing events or receipts).
pub async fn connect_opted(
    server: &Server,
    user: &str,
    device: &str,
    options: impl FnOnce(&mut pb::Connect),
) -> Client {
    let mut connect = pb::Connect {
        token: format!("{user}:{device}"),
        device_id: device.to_owned(),
        ..Default::default()
    };
    options(&mut connect);
    Client::connect_frame(server.addr, connect)
        .await
        .expect("connect")
}

/// What `pick` takes of the frames `c` receives until it stays quiet for
/// [`QUIET`].
pub async fn until_quiet<T>(c: &Client, mut pick: impl FnMut(Out) -> Option<T>) -> Vec<T> {
    let mut got = Vec::new();
    while let Ok(Some(frame)) = c.next_event(QUIET).await {
        got.extend(frame.body.and_then(&mut pick));
    }
    got
}

/// Bodies of pushed messages, as strings.
pub fn bodies(msgs: &[pb::Message]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

/// An engine with no transport, for clients connected in memory
/// ([`MemClient`]): tests of the engine rather than of a socket, which can
/// run on a paused clock.
pub fn mem_engine(config: EngineConfig, store: Arc<dyn Store>) -> Engine {
    Engine::builder(store)
        .config(config)
        .insecure_dev_auth()
        .build()
        .expect("engine")
}

/// Connects `user` from `device` in memory.
pub async fn mem_connect(engine: &Engine, user: &str, device: &str) -> MemClient {
    MemClient::connect(engine, user, device)
        .await
        .expect("connect")
}

/// [`next_matching`] for an in-memory client.
pub async fn mem_next_matching<T>(
    c: &MemClient,
    mut pick: impl FnMut(Out) -> Option<T>,
) -> Option<T> {
    loop {
        match c.next_event(WAIT).await {
            Ok(Some(pb::ServerFrame { body: Some(b), .. })) => {
                if let Some(t) = pick(b) {
                    return Some(t);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Every message a store holds in `conversation`, oldest first (up to 1,000).
pub async fn stored(store: &dyn Store, conversation: &ConversationId) -> Vec<StoredMessage> {
    store
        .read_range(RangeRequest {
            conversation: conversation.clone(),
            after_seq: 0,
            until_seq: None,
            limit: 1000,
            newest: false,
        })
        .await
        .expect("read the timeline")
        .messages
}

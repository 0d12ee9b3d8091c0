//! Host hooks over real sockets (TCP and WebSocket): the pre-send hook
//! rejects and rewrites without holding anyone else's sends, the room-join
//! policy refuses with a reason, the session observer hears connects and
//! disconnects with their reasons, and `Call` reaches the host's handler.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::ws::WsClient;
use common::{Server, user};
use im_engine::core::content::ContentType;
use im_engine::core::hooks::{
    CallError, CallHandler, CallRequest, DisconnectReason, JoinVerdict, OutgoingMessage,
    PreSendHook, RoomJoinPolicy, RoomJoinRequest, SendVerdict, SessionDetails, SessionObserver,
};
use im_engine::core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_engine::core::{Engine, EngineBuilder, EngineConfig, Store, async_trait};
use im_engine::store_memory::MemoryStore;
use im_engine::transport_tcp::client::{ClientError, direct, group};
use im_engine::transport_ws::{WsConfig, WsServer};
use tokio::sync::{Notify, mpsc};

/// Rejects "badword", rewrites "darn", holds user "slow" until released,
/// and rejects everything once `closed` is set.
#[derive(Default)]
struct Moderator {
    /// Notified when the hook starts checking a message from "slow".
    entered: Notify,
    /// Lets a held message from "slow" through.
    release: Notify,
    /// Reject every message from now on.
    closed: AtomicBool,
}

#[async_trait]
impl PreSendHook for Moderator {
    async fn check(&self, m: &OutgoingMessage) -> SendVerdict {
        let text = String::from_utf8_lossy(&m.body).into_owned();
        if self.closed.load(Ordering::SeqCst) || text.contains("badword") {
            return SendVerdict::Reject {
                reason: "mind your language".into(),
            };
        }
        if m.sender.as_str() == "slow" {
            self.entered.notify_one();
            self.release.notified().await;
        }
        if text.contains("forge") {
            // A buggy host: SYSTEM is the engine's own type.
            return SendVerdict::Rewrite {
                body: m.body.clone(),
                content_type: ContentType::System,
            };
        }
        if text.contains("darn") {
            return SendVerdict::Rewrite {
                body: Bytes::from(text.replace("darn", "d**n")),
                content_type: ContentType::Custom("masked".into()),
            };
        }
        SendVerdict::Allow
    }
}

/// Only "boss" may join room "vip".
struct VipOnly;

#[async_trait]
impl RoomJoinPolicy for VipOnly {
    async fn authorize_join(&self, join: &RoomJoinRequest) -> JoinVerdict {
        if join.room.as_str() == "vip" && join.user.as_str() != "boss" {
            JoinVerdict::Refuse {
                reason: "vip only".into(),
            }
        } else {
            JoinVerdict::Allow
        }
    }
}

/// Every session event, in the order the observer heard them.
#[derive(Debug)]
enum Seen {
    Connected(SessionDetails),
    Disconnected(SessionDetails, DisconnectReason),
}

struct Recorder(mpsc::UnboundedSender<Seen>);

#[async_trait]
impl SessionObserver for Recorder {
    async fn on_connect(&self, s: &SessionDetails) {
        let _ = self.0.send(Seen::Connected(s.clone()));
    }

    async fn on_disconnect(&self, s: &SessionDetails, reason: &DisconnectReason) {
        let _ = self.0.send(Seen::Disconnected(s.clone(), reason.clone()));
    }
}

/// `echo` answers its data prefixed by the caller; `refuse` is refused;
/// `hang` never answers (and says when it started); anything else is
/// unknown.
#[derive(Default)]
struct Calls {
    hanging: Notify,
}

#[async_trait]
impl CallHandler for Calls {
    async fn call(&self, call: CallRequest) -> Result<Bytes, CallError> {
        match call.method.as_str() {
            "echo" => {
                let mut out = format!("{}:", call.user).into_bytes();
                out.extend_from_slice(&call.data);
                Ok(out.into())
            }
            "refuse" => Err(CallError::rejected("not today")),
            "hang" => {
                self.hanging.notify_one();
                std::future::pending().await
            }
            other => Err(CallError::unknown_method(other)),
        }
    }
}

/// An engine served over TCP ([`Server`]) and over WebSocket at `/ws`.
struct Both {
    tcp: Server,
    ws: SocketAddr,
}

impl Both {
    async fn start(builder: EngineBuilder) -> Self {
        let engine = builder.insecure_dev_auth().build().expect("engine");
        let ws = WsServer::bind("127.0.0.1:0", WsConfig::default().path("/ws"))
            .await
            .expect("bind");
        let addr = ws.local_addr().expect("addr");
        ws.serve(engine.clone());
        Self {
            tcp: Server::serve(engine).await,
            ws: addr,
        }
    }

    fn engine(&self) -> &Engine {
        &self.tcp.engine
    }

    async fn ws(&self, user: &str) -> WsClient<tokio::net::TcpStream> {
        WsClient::connect(self.ws, user).await
    }
}

fn builder(store: Arc<dyn Store>, config: EngineConfig) -> EngineBuilder {
    Engine::builder(store).config(config)
}

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

fn send(to: pb::ConversationRef, id: &str, text: &str) -> In {
    In::Send(pb::Send {
        client_msg_id: id.to_owned(),
        conversation: Some(to),
        body: Bytes::from(text.to_owned()),
        ..Default::default()
    })
}

fn call(method: &str, data: &[u8]) -> In {
    In::Call(pb::Call {
        method: method.to_owned(),
        data: Bytes::copy_from_slice(data),
    })
}

/// The error a TCP request was answered with.
fn server_error(r: Result<Out, ClientError>) -> pb::Error {
    match r {
        Err(ClientError::Server(e)) => e,
        other => panic!("expected an Error answer, got {other:?}"),
    }
}

/// The error a WebSocket request was answered with.
fn ws_error(out: Out) -> pb::Error {
    match out {
        Out::Error(e) => e,
        other => panic!("expected an Error answer, got {other:?}"),
    }
}

fn code(e: &pb::Error) -> pb::ErrorCode {
    pb::ErrorCode::try_from(e.code).expect("known code")
}

async fn rejects_and_rewrites(store: Arc<dyn Store>) {
    let hook = Arc::new(Moderator::default());
    let both = Both::start(builder(store, EngineConfig::default()).pre_send_hook(hook)).await;
    let alice = both.tcp.connect("alice", "phone").await;
    let bob = both.tcp.connect("bob", "phone").await;
    let mut carol = both.ws("carol").await;

    // Rejected over TCP, with the host's reason, and nothing is committed.
    let e = server_error(alice.request(send(direct("bob"), "m1", "a badword")).await);
    assert_eq!(code(&e), pb::ErrorCode::Rejected);
    assert_eq!(
        (e.reason.as_str(), e.retryable),
        ("mind your language", false)
    );
    // Rejected over WebSocket too.
    let e = ws_error(carol.request(send(direct("bob"), "c1", "badword")).await);
    assert_eq!(code(&e), pb::ErrorCode::Rejected);
    assert_eq!(e.reason, "mind your language");

    // Rewritten: the receiver and every later pull see the host's version.
    let seq = carol.say(direct("bob"), "c2", "oh darn").await;
    assert_eq!(seq, 1, "the rejected send committed nothing");
    let pushed = common::ws::tcp_pushed_from(&bob, "carol").await;
    assert_eq!(&pushed.body[..], b"oh d**n");
    assert_eq!(pushed.custom_content_type, "masked");
    let pulled = bob.pull(direct("carol"), 0, 0, 10).await.expect("pull");
    assert_eq!(common::bodies(&pulled.messages), ["oh d**n"]);

    // Edits go past the hook too.
    let ack = alice.send(direct("bob"), "m2", "fine").await.expect("send");
    let edit = |id: &str, text: &str| {
        In::Edit(pb::Edit {
            client_msg_id: id.to_owned(),
            conversation: Some(direct("bob")),
            target_seq: ack.seq,
            body: Bytes::from(text.to_owned()),
            ..Default::default()
        })
    };
    let e = server_error(alice.request(edit("e1", "badword")).await);
    assert_eq!(code(&e), pb::ErrorCode::Rejected);
    alice
        .request(edit("e2", "darn it"))
        .await
        .expect("edit allowed");
    let pulled = bob.pull(direct("alice"), 0, 0, 10).await.expect("pull");
    let target = pulled
        .messages
        .iter()
        .find(|m| m.seq == ack.seq)
        .expect("the edited message");
    assert_eq!(&target.body[..], b"d**n it");

    // A rewrite into a type no client may send is refused, not committed.
    let e = server_error(alice.request(send(direct("bob"), "m3", "forge")).await);
    assert_eq!(code(&e), pb::ErrorCode::Internal);
    let pulled = bob.pull(direct("alice"), 0, 0, 10).await.expect("pull");
    assert!(
        pulled.messages.iter().all(|m| &m.body[..] != b"forge"),
        "{:?}",
        pulled.messages
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_rejects_with_its_reason_and_rewrites_what_everyone_sees() {
    rejects_and_rewrites(memory()).await;
}

async fn retried_send_is_acked_after_the_rules_change(store: Arc<dyn Store>) {
    let hook = Arc::new(Moderator::default());
    let both =
        Both::start(builder(store, EngineConfig::default()).pre_send_hook(hook.clone())).await;
    let alice = both.tcp.connect("alice", "phone").await;
    let first = alice.send(direct("bob"), "m1", "hi").await.expect("send");
    assert!(!first.duplicate);
    // The host now refuses everything; a retry of the committed send is
    // still told its original ack, not a refusal.
    hook.closed.store(true, Ordering::SeqCst);
    let retry = alice.send(direct("bob"), "m1", "hi").await.expect("retry");
    assert!(retry.duplicate);
    assert_eq!((retry.seq, retry.message_id), (first.seq, first.message_id));
    // A new message is refused.
    let e = server_error(alice.request(send(direct("bob"), "m2", "hi")).await);
    assert_eq!(code(&e), pb::ErrorCode::Rejected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_send_that_committed_gets_its_ack_even_once_the_hook_refuses() {
    retried_send_is_acked_after_the_rules_change(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_holding_one_sender_does_not_hold_anyone_else() {
    let hook = Arc::new(Moderator::default());
    let mut config = EngineConfig::default();
    // Far beyond the test: only the release lets the held send through.
    config.hook_timeout = Duration::from_secs(60);
    let both = Both::start(builder(memory(), config).pre_send_hook(hook.clone())).await;
    both.tcp.group("g", &["slow", "bob", "carol"]).await;
    let slow = Arc::new(both.tcp.connect("slow", "phone").await);
    let carol = both.tcp.connect("carol", "phone").await;
    let mut bob = both.ws("bob").await;

    let held = tokio::spawn({
        let slow = slow.clone();
        async move { slow.send(group("g"), "s1", "first").await }
    });
    hook.entered.notified().await;
    // While the hook holds slow's message, bob's goes through the same
    // conversation's writer and reaches carol.
    let bob_seq = bob.say(group("g"), "b1", "second").await;
    assert_eq!(bob_seq, 1, "bob's send committed while slow's was held");
    let pushed = common::ws::tcp_pushed_from(&carol, "bob").await;
    assert_eq!(pushed.seq, 1);
    assert!(
        !held.is_finished(),
        "slow's send was answered before release"
    );
    hook.release.notify_one();
    let slow_ack = held.await.expect("task").expect("slow's send");
    assert_eq!(slow_ack.seq, 2, "slow's send committed after bob's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_never_answers_times_out_into_a_retryable_error() {
    let hook = Arc::new(Moderator::default());
    let mut config = EngineConfig::default();
    config.hook_timeout = Duration::from_millis(200);
    let store = memory();
    let both = Both::start(builder(store.clone(), config).pre_send_hook(hook)).await;
    let slow = both.tcp.connect("slow", "phone").await;
    let e = server_error(slow.request(send(direct("bob"), "s1", "hello")).await);
    assert_eq!(code(&e), pb::ErrorCode::Unavailable);
    assert!(e.retryable, "{e:?}");
    let conversation = im_engine::core::ConversationId::direct(user("slow"), user("bob"));
    assert!(common::stored(&*store, &conversation).await.is_empty());
    // The session goes on.
    slow.ping().await.expect("ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_join_policy_refuses_with_its_reason_and_lets_the_rest_in() {
    let both =
        Both::start(builder(memory(), EngineConfig::default()).room_join_policy(Arc::new(VipOnly)))
            .await;
    let alice = both.tcp.connect("alice", "phone").await;
    let boss = both.tcp.connect("boss", "phone").await;
    let mut carol = both.ws("carol").await;

    let e = server_error(
        alice
            .request(In::JoinRoom(pb::JoinRoom {
                room_id: "vip".into(),
            }))
            .await,
    );
    assert_eq!(
        (code(&e), e.reason.as_str()),
        (pb::ErrorCode::Forbidden, "vip only")
    );
    let e = ws_error(
        carol
            .request(In::JoinRoom(pb::JoinRoom {
                room_id: "vip".into(),
            }))
            .await,
    );
    assert_eq!(
        (code(&e), e.reason.as_str()),
        (pb::ErrorCode::Forbidden, "vip only")
    );
    // A refused join leaves no seat: sending there is still forbidden.
    let e = server_error(
        alice
            .request(send(
                im_engine::transport_tcp::client::room("vip"),
                "r1",
                "hi",
            ))
            .await,
    );
    assert_eq!(code(&e), pb::ErrorCode::Forbidden);

    let joined = boss.join_room("vip").await.expect("boss joins");
    assert_eq!(joined.online, 1);
    alice
        .join_room("lobby")
        .await
        .expect("anyone joins the lobby");
    match carol
        .request(In::JoinRoom(pb::JoinRoom {
            room_id: "lobby".into(),
        }))
        .await
    {
        Out::RoomJoined(j) => assert_eq!(j.online, 2),
        other => panic!("expected RoomJoined, got {other:?}"),
    }
}

/// The next event the observer heard.
async fn seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(common::WAIT, rx.recv())
        .await
        .expect("an event in time")
        .expect("observer alive")
}

async fn connected(rx: &mut mpsc::UnboundedReceiver<Seen>) -> SessionDetails {
    match seen(rx).await {
        Seen::Connected(s) => s,
        other => panic!("expected a connect, got {other:?}"),
    }
}

async fn disconnected(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
) -> (SessionDetails, DisconnectReason) {
    match seen(rx).await {
        Seen::Disconnected(s, r) => (s, r),
        other => panic!("expected a disconnect, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observer_hears_connects_and_disconnects_with_their_reasons() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let both = Both::start(
        builder(memory(), EngineConfig::default()).session_observer(Arc::new(Recorder(tx))),
    )
    .await;

    let alice = both.tcp.connect("alice", "phone").await;
    let s = connected(&mut rx).await;
    assert_eq!(
        (s.user.as_str(), s.device.as_str(), s.transport),
        ("alice", "phone", "tcp")
    );
    let alice_session = s.session;
    alice.close().await.expect("close");
    let (s, reason) = disconnected(&mut rx).await;
    assert_eq!(
        (s.session, reason),
        (alice_session, DisconnectReason::Closed)
    );

    let _bob = both.ws("bob").await;
    let s = connected(&mut rx).await;
    assert_eq!((s.user.as_str(), s.transport), ("bob", "ws"));
    both.engine().kick_user(&user("bob"), "bye");
    let (s, reason) = disconnected(&mut rx).await;
    assert_eq!(s.user.as_str(), "bob");
    assert_eq!(reason, DisconnectReason::Kicked(pb::KickReason::ByHost));

    // The same device again replaces the first session.
    let _first = both.tcp.connect("carol", "phone").await;
    let first = connected(&mut rx).await.session;
    let _second = both.tcp.connect("carol", "phone").await;
    let mut events = [seen(&mut rx).await, seen(&mut rx).await];
    events.sort_by_key(|e| matches!(e, Seen::Connected(_)));
    match &events[..] {
        [Seen::Disconnected(s, reason), Seen::Connected(c)] => {
            assert_eq!(s.session, first);
            assert_eq!(*reason, DisconnectReason::Kicked(pb::KickReason::Replaced));
            assert_ne!(c.session, first);
        }
        other => panic!("expected a replacement, got {other:?}"),
    }

    // Closed by the server for breaking the protocol: a failure, with why.
    let dave = both.tcp.connect("dave", "phone").await;
    connected(&mut rx).await;
    for _ in 0..8 {
        dave.send_raw(&[0xff, 0xff, 0xff]).await.expect("write");
    }
    let (s, reason) = disconnected(&mut rx).await;
    assert_eq!(s.user.as_str(), "dave");
    assert_eq!(
        reason,
        DisconnectReason::Failed("too many malformed frames".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observer_hears_a_silent_session_time_out() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut config = EngineConfig::default();
    config.heartbeat_interval = Duration::from_millis(100);
    let both =
        Both::start(builder(memory(), config).session_observer(Arc::new(Recorder(tx)))).await;
    let _silent = both.tcp.connect("alice", "phone").await;
    connected(&mut rx).await;
    let (_, reason) = disconnected(&mut rx).await;
    assert_eq!(
        reason,
        DisconnectReason::Kicked(pb::KickReason::HeartbeatTimeout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_reach_the_host_and_come_back_over_tcp_and_websocket() {
    let mut config = EngineConfig::default();
    config.max_call_bytes = 16;
    config.max_calls_per_session = 1;
    config.call_timeout = Duration::from_secs(60);
    config.call_rate = 0;
    let calls = Arc::new(Calls::default());
    let both = Both::start(builder(memory(), config).call_handler(calls.clone())).await;
    let alice = both.tcp.connect("alice", "phone").await;
    let mut bob = both.ws("bob").await;

    match alice.request(call("echo", b"hi")).await.expect("call") {
        Out::CallResult(r) => assert_eq!(&r.data[..], b"alice:hi"),
        other => panic!("expected CallResult, got {other:?}"),
    }
    match bob.request(call("echo", b"yo")).await {
        Out::CallResult(r) => assert_eq!(&r.data[..], b"bob:yo"),
        other => panic!("expected CallResult, got {other:?}"),
    }
    let e = server_error(alice.request(call("refuse", b"")).await);
    assert_eq!(
        (code(&e), e.reason.as_str()),
        (pb::ErrorCode::Rejected, "not today")
    );
    let e = ws_error(bob.request(call("nope", b"")).await);
    assert_eq!(code(&e), pb::ErrorCode::Unimplemented);
    assert!(e.reason.contains("nope"), "{e:?}");

    // Out of bounds: data over max_call_bytes, a method over 128 bytes, none.
    for (method, data) in [
        ("echo", &[0u8; 17][..]),
        (&*"m".repeat(129), b""),
        ("", b""),
    ] {
        let e = server_error(alice.request(call(method, data)).await);
        assert_eq!(code(&e), pb::ErrorCode::InvalidArgument, "{e:?}");
    }

    // A call the host never answers holds its slot, not the session.
    let alice = Arc::new(alice);
    let _hang = tokio::spawn({
        let alice = alice.clone();
        async move { alice.request(call("hang", b"")).await }
    });
    // Once the hanging call holds the one slot, the next call is refused.
    calls.hanging.notified().await;
    let e = server_error(alice.request(call("echo", b"")).await);
    assert!(e.reason.contains("in flight"), "{e:?}");
    assert_eq!(code(&e), pb::ErrorCode::RateLimited);
    assert!(e.retryable);
    alice.ping().await.expect("the session still reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_the_rate_are_refused_as_retryable() {
    let mut config = EngineConfig::default();
    (config.call_rate, config.call_burst) = (1, 2);
    let both =
        Both::start(builder(memory(), config).call_handler(Arc::new(Calls::default()))).await;
    let alice = both.tcp.connect("alice", "phone").await;
    for _ in 0..2 {
        alice
            .request(call("echo", b""))
            .await
            .expect("within the burst");
    }
    let e = server_error(alice.request(call("echo", b"")).await);
    assert_eq!(code(&e), pb::ErrorCode::RateLimited);
    assert!(e.retryable && e.reason.contains("per second"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_handler_calls_are_unimplemented_and_nothing_else_changes() {
    let both = Both::start(builder(memory(), EngineConfig::default())).await;
    let alice = both.tcp.connect("alice", "phone").await;
    let e = server_error(alice.request(call("echo", b"")).await);
    assert_eq!(code(&e), pb::ErrorCode::Unimplemented);
    // No hooks: sends and joins behave as before.
    alice
        .send(direct("bob"), "m1", "badword")
        .await
        .expect("send");
    alice.join_room("vip").await.expect("join");
}

#[cfg(feature = "postgres")]
mod pg {
    use crate::common::pg_schema::pg_store;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_hook_rejects_and_rewrites_on_postgres() {
        let (store, _schema) = pg_store("hooks").await;
        super::rejects_and_rewrites(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retried_send_gets_its_ack_once_the_hook_refuses_on_postgres() {
        let (store, _schema) = pg_store("hooks").await;
        super::retried_send_is_acked_after_the_rules_change(store).await;
    }
}

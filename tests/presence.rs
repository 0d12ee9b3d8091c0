//! Presence over real sockets (TCP and WebSocket): a session watches the
//! users it chats with and hears when they go online (first device) and
//! offline (last device); only chat partners may be watched; a group's
//! online members come as a full list, then as changes since a version, and
//! as a full list again once the server's change log no longer reaches back.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::ws::{WsClient, serve_ws};
use common::{Server, connect_opted, next_matching, probed_engine, until_quiet, user};
use im_engine::core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_engine::core::{ChannelId, EngineConfig, Store};
use im_engine::store_memory::MemoryStore;
use im_engine::transport_tcp::client::{Client, direct};
use im_testkit::probe::SessionProbe;

/// An engine over `store` with `config`, served over TCP and WebSocket,
/// with a probe to wait for sessions to open and close.
struct Served {
    server: Server,
    ws: SocketAddr,
    probe: Arc<SessionProbe>,
}

impl Served {
    async fn start(config: EngineConfig, store: Arc<dyn Store>) -> Self {
        let (engine, probe) = probed_engine(config, store);
        let ws = serve_ws(&engine).await;
        Self {
            server: Server::serve(engine).await,
            ws,
            probe,
        }
    }

    /// Connects `user` from `device` over TCP; returns once the session is
    /// indexed under its groups (its first request is answered after that).
    async fn connect(&self, user: &str, device: &str) -> Client {
        let c = self.server.connect(user, device).await;
        c.ping().await.expect("ping");
        c
    }

    /// Waits until `user` has `n` sessions open.
    async fn wait_sessions(&self, user: &str, n: usize) {
        self.probe.wait_for(|s| s.sessions_of(user) == n).await;
    }

    async fn group(&self, id: &str, members: &[&str]) {
        self.server.group(id, members).await;
    }
}

fn watch(users: &[&str], watch: bool) -> In {
    In::WatchPresence(pb::WatchPresence {
        users: users.iter().map(|u| u.to_string()).collect(),
        watch,
    })
}

async fn watch_tcp(c: &Client, users: &[&str]) -> pb::PresenceState {
    match c.request(watch(users, true)).await.expect("watch") {
        Out::PresenceState(s) => s,
        other => panic!("expected PresenceState, got {other:?}"),
    }
}

fn presence_event(b: Out) -> Option<pb::UserPresence> {
    match b {
        Out::Presence(p) => Some(p),
        _ => None,
    }
}

/// The (user, online) pairs of a state answer.
fn states(s: &pb::PresenceState) -> Vec<(&str, bool)> {
    let mut v: Vec<_> = s
        .users
        .iter()
        .map(|p| (p.user_id.as_str(), p.online))
        .collect();
    v.sort();
    v
}

/// The next presence event a WebSocket client receives.
async fn ws_presence(c: &mut WsClient<tokio::net::TcpStream>) -> pb::UserPresence {
    loop {
        if let Some(p) = c.next_frame().await.body.and_then(presence_event) {
            return p;
        }
    }
}

#[tokio::test]
async fn a_watcher_hears_a_peer_go_offline_only_when_the_last_device_leaves() {
    let s = Served::start(EngineConfig::default(), Arc::new(MemoryStore::new())).await;
    let alice = s.connect("alice", "phone").await;
    let bob_phone = s.connect("bob", "phone").await;
    alice
        .send(direct("bob"), "hi", "hello bob")
        .await
        .expect("a direct chat");
    // Connected all along and never watching: like an old client, it must
    // never see a presence frame.
    let carol = connect_opted_tcp(&s, "carol").await;

    let state = watch_tcp(&alice, &["bob"]).await;
    assert_eq!(states(&state), [("bob", true)]);
    assert!(state.refused.is_empty());
    // Alice's browser watches too, over WebSocket.
    let mut alice_web = WsClient::connect(s.ws, "alice").await;
    match alice_web.request(watch(&["bob"], true)).await {
        Out::PresenceState(st) => assert_eq!(states(&st), [("bob", true)]),
        other => panic!("expected PresenceState, got {other:?}"),
    }

    // A second device of bob's (over WebSocket) is no change...
    let bob_web = WsClient::connect(s.ws, "bob").await;
    s.wait_sessions("bob", 2).await;
    // ...and neither is the first one leaving while the second stays.
    bob_phone.close().await.expect("close");
    s.wait_sessions("bob", 1).await;
    assert_eq!(until_quiet(&alice, presence_event).await, []);

    // The last one leaving is.
    drop(bob_web);
    s.wait_sessions("bob", 0).await;
    let off = next_matching(&alice, presence_event)
        .await
        .expect("bob went offline");
    assert_eq!((off.user_id.as_str(), off.online), ("bob", false));
    assert!(off.last_seen_ms > 0, "{off:?}");
    let off_web = ws_presence(&mut alice_web).await;
    assert_eq!((off_web.user_id.as_str(), off_web.online), ("bob", false));

    // A watch made now reports when he was last seen.
    let again = watch_tcp(&alice, &["bob"]).await;
    assert_eq!(again.users[0].last_seen_ms, off.last_seen_ms);

    let bob_laptop = s.connect("bob", "laptop").await;
    let on = next_matching(&alice, presence_event)
        .await
        .expect("bob came back");
    assert_eq!(
        (on.user_id.as_str(), on.online, on.last_seen_ms),
        ("bob", true, 0)
    );
    assert!(ws_presence(&mut alice_web).await.online);
    assert_eq!(until_quiet(&carol, presence_event).await, []);

    // Unwatched: bob leaving is not told any more.
    match alice
        .request(watch(&["bob"], false))
        .await
        .expect("unwatch")
    {
        Out::PresenceState(st) => assert!(st.users.is_empty()),
        other => panic!("expected PresenceState, got {other:?}"),
    }
    bob_laptop.close().await.expect("close");
    s.wait_sessions("bob", 0).await;
    assert_eq!(until_quiet(&alice, presence_event).await, []);
}

/// `user` over TCP with the opt-in flags of other live events set, to show
/// that presence needs its own request.
async fn connect_opted_tcp(s: &Served, user: &str) -> Client {
    connect_opted(&s.server, user, "phone", |c| {
        c.typing_events = true;
        c.receipt_events = true;
    })
    .await
}

async fn only_chat_partners_may_be_watched(store: Arc<dyn Store>) {
    let mut config = EngineConfig::default();
    config.presence_watch_max = 4;
    let s = Served::start(config, store).await;
    s.group("team", &["alice", "carol", "erin", "frank"]).await;
    let alice = s.connect("alice", "phone").await;
    alice
        .send(direct("dave"), "hi", "hello dave")
        .await
        .expect("a direct chat");
    // A direct chat with no message is no chat.
    let state = watch_tcp(&alice, &["carol", "dave", "mallory", "nobody"]).await;
    assert_eq!(states(&state), [("carol", false), ("dave", false)]);
    assert_eq!(state.refused, ["mallory", "nobody"]);

    // Mallory coming and going is not told to alice.
    let mallory = s.connect("mallory", "phone").await;
    // And mallory, in no chat with alice's group, may not watch its members.
    let refused = watch_tcp(&mallory, &["alice", "carol"]).await;
    assert!(refused.users.is_empty(), "{refused:?}");
    assert_eq!(refused.refused, ["alice", "carol"]);
    mallory.close().await.expect("close");
    s.wait_sessions("mallory", 0).await;
    let carol = s.connect("carol", "phone").await;
    let on = next_matching(&alice, presence_event).await.expect("carol");
    assert_eq!(on.user_id, "carol", "only carol's coming is told");

    // Past the limit (two watched, three more asked): refused, nothing changes.
    let err = alice
        .request(watch(&["erin", "alice", "frank"], true))
        .await
        .expect_err("too many");
    assert_eq!(err.code(), Some(pb::ErrorCode::InvalidArgument));
    // Frank was not watched by the refused request: his coming is not told
    // (the next event below would be his).
    let _frank = s.connect("frank", "phone").await;
    alice
        .request(watch(&["dave"], false))
        .await
        .expect("unwatch");
    let state = watch_tcp(&alice, &["erin", "carol"]).await;
    assert_eq!(states(&state), [("carol", true), ("erin", false)]);
    carol.close().await.expect("close");
    assert_eq!(
        next_matching(&alice, presence_event)
            .await
            .map(|p| p.user_id),
        Some("carol".to_owned()),
        "carol's leaving is told, and frank's coming was not"
    );
}

#[tokio::test]
async fn only_chat_partners_may_be_watched_memory() {
    only_chat_partners_may_be_watched(Arc::new(MemoryStore::new())).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_chat_partners_may_be_watched_postgres() {
    let (store, _schema) = common::pg_schema::pg_store("presence").await;
    only_chat_partners_may_be_watched(store).await;
}

fn group_online(group: &str, since_version: u64, after_user: &str) -> In {
    In::GroupOnline(pb::GroupOnline {
        group: group.to_owned(),
        since_version,
        after_user: after_user.to_owned(),
    })
}

async fn ws_group_online(
    c: &mut WsClient<tokio::net::TcpStream>,
    since: u64,
    after: &str,
) -> pb::GroupOnlineResult {
    match c.request(group_online("team", since, after)).await {
        Out::GroupOnlineResult(r) => r,
        other => panic!("expected GroupOnlineResult, got {other:?}"),
    }
}

#[tokio::test]
async fn group_online_members_come_in_full_then_as_changes_then_in_full_again() {
    let mut config = EngineConfig::default();
    config.group_online_log = 3;
    config.group_online_page = 2;
    let s = Served::start(config, Arc::new(MemoryStore::new())).await;
    s.group("team", &["alice", "bob", "carol", "dave", "erin", "frank"])
        .await;
    let _bob = s.connect("bob", "phone").await;
    let bob_laptop = s.connect("bob", "laptop").await;
    let carol = s.connect("carol", "phone").await;
    // Alice, over WebSocket; a request answered means she is indexed.
    let mut alice = WsClient::connect(s.ws, "alice").await;

    // The full list, in pages of two.
    let first = ws_group_online(&mut alice, 0, "").await;
    assert!(first.full && first.more, "{first:?}");
    assert_eq!(first.online, ["alice", "bob"]);
    let rest = ws_group_online(&mut alice, 0, "bob").await;
    assert!(rest.full && !rest.more, "{rest:?}");
    assert_eq!(rest.online, ["carol"]);
    let v1 = first.version;

    // Carol leaves, dave comes; one of bob's two devices leaving is no change.
    carol.close().await.expect("close");
    bob_laptop.close().await.expect("close");
    s.wait_sessions("carol", 0).await;
    s.wait_sessions("bob", 1).await;
    let dave = s.connect("dave", "phone").await;
    let diff = ws_group_online(&mut alice, v1, "").await;
    assert!(!diff.full, "{diff:?}");
    assert_eq!(
        (diff.online.as_slice(), diff.offline.as_slice()),
        (&["dave".to_owned()][..], &["carol".to_owned()][..])
    );
    assert_eq!(diff.version, v1 + 2);
    // Nothing since: an empty change set at the same version.
    let same = ws_group_online(&mut alice, diff.version, "").await;
    assert!(!same.full && same.online.is_empty() && same.offline.is_empty());
    assert_eq!(same.version, diff.version);

    // Four more changes: the log of three no longer reaches v2.
    let _erin = s.connect("erin", "phone").await;
    let frank = s.connect("frank", "phone").await;
    frank.close().await.expect("close");
    s.wait_sessions("frank", 0).await;
    dave.close().await.expect("close");
    s.wait_sessions("dave", 0).await;
    let full = ws_group_online(&mut alice, diff.version, "").await;
    assert!(full.full, "{full:?}");
    assert_eq!(full.online, ["alice", "bob"]);
    assert!(full.more);
    assert_eq!(full.version, diff.version + 4);
    // A version from the future is answered in full too.
    assert!(
        ws_group_online(&mut alice, full.version + 10, "")
            .await
            .full
    );
    // The host sees the same list.
    let (online, more) =
        s.server
            .engine
            .online_members(&ChannelId::new("team").expect("id"), None, 10);
    assert_eq!(
        (online, more),
        (vec![user("alice"), user("bob"), user("erin")], false)
    );

    // Not a member: refused, over TCP as over WebSocket.
    let mallory = s.connect("mallory", "phone").await;
    let err = mallory
        .request(group_online("team", 0, ""))
        .await
        .expect_err("not a member");
    assert_eq!(err.code(), Some(pb::ErrorCode::Forbidden));
    let mut mallory_web = WsClient::connect(s.ws, "mallory").await;
    match mallory_web.request(group_online("team", 0, "")).await {
        Out::Error(e) => assert_eq!(e.code(), pb::ErrorCode::Forbidden),
        other => panic!("expected Error, got {other:?}"),
    }
}

/// A block hides presence as it refuses direct messages: the blocked user
/// cannot watch the blocker, and can again after the block is lifted.
#[tokio::test]
async fn a_blocked_user_cannot_watch_the_blocker() {
    let s = Served::start(EngineConfig::default(), Arc::new(MemoryStore::new())).await;
    let alice = s.connect("alice", "phone").await;
    let _bob = s.connect("bob", "phone").await;
    alice
        .send(direct("bob"), "hi", "hello bob")
        .await
        .expect("a direct chat");
    let engine = &s.server.engine;
    let (a, b) = (user("alice"), user("bob"));
    engine.block_user(&b, &a).await.expect("bob blocks alice");
    let state = watch_tcp(&alice, &["bob"]).await;
    assert!(state.users.is_empty(), "{state:?}");
    assert_eq!(state.refused, ["bob"]);
    engine.unblock_user(&b, &a).await.expect("unblock");
    let state = watch_tcp(&alice, &["bob"]).await;
    assert_eq!(states(&state), [("bob", true)]);
}

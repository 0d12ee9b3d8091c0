//! Conversation settings (mute, pin) and user-level blocks over real TCP and
//! WebSocket sockets, on the memory store and (feature `postgres`) on
//! PostgreSQL: settings set on one device show in another device's list,
//! a muted conversation counts unread but reaches no offline push, direct
//! sends between blocked users are refused either way with
//! `ERROR_CODE_BLOCKED` while groups are untouched, and unblocking lets
//! them chat again.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::ws::WsClient;
use common::{QUIET, WAIT, user};
use im_engine::core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_engine::core::store::SettingsChange;
use im_engine::core::{
    ChannelId, ConversationId, Engine, OfflineNotice, OfflinePush, Store, UserId,
};
use im_engine::store_memory::MemoryStore;
use im_engine::transport_tcp::client::{Client, ClientError, direct, group, room};
use im_engine::transport_tcp::{TcpConfig, TcpServer};
use im_engine::transport_ws::{WsConfig, WsServer};
use im_testkit::probe::SessionProbe;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// An offline push hook that hands every notice to the test.
struct RecordingPush(mpsc::UnboundedSender<OfflineNotice>);

#[async_trait]
impl OfflinePush for RecordingPush {
    async fn notify(&self, notice: OfflineNotice) {
        let _ = self.0.send(notice);
    }
}

/// One engine served on TCP and WebSocket, with a recording push hook.
struct Both {
    engine: Engine,
    tcp: std::net::SocketAddr,
    ws: std::net::SocketAddr,
    pushed: mpsc::UnboundedReceiver<OfflineNotice>,
    /// Who is online, to wait on.
    probe: Arc<SessionProbe>,
}

impl Both {
    async fn start(store: Arc<dyn Store>) -> Self {
        let (tx, pushed) = mpsc::unbounded_channel();
        let probe = Arc::new(SessionProbe::default());
        let engine = Engine::builder(store)
            .insecure_dev_auth()
            .session_directory(probe.clone())
            .offline_push(Arc::new(RecordingPush(tx)))
            .build()
            .expect("engine");
        let tcp = TcpServer::bind("127.0.0.1:0", TcpConfig::default())
            .await
            .expect("bind tcp");
        let tcp_addr = tcp.local_addr().expect("addr");
        tcp.serve(engine.clone());
        let ws = WsServer::bind("127.0.0.1:0", WsConfig::default().path("/ws"))
            .await
            .expect("bind ws");
        let ws_addr = ws.local_addr().expect("addr");
        ws.serve(engine.clone());
        Self {
            engine,
            tcp: tcp_addr,
            ws: ws_addr,
            pushed,
            probe,
        }
    }

    async fn tcp(&self, user: &str, device: &str) -> Client {
        Client::connect(self.tcp, &format!("{user}:{device}"), device)
            .await
            .expect("connect")
    }

    async fn ws(&self, user: &str) -> WsClient<TcpStream> {
        WsClient::connect(self.ws, user).await
    }

    async fn group(&self, id: &str, members: &[&str]) {
        let members: Vec<UserId> = members.iter().map(|m| user(m)).collect();
        self.engine
            .create_group(&ChannelId::new(id).expect("id"), &members)
            .await
            .expect("create group");
    }

    /// The next offline notice for `user`, skipping others'.
    async fn next_notice_for(&mut self, who: &str) -> OfflineNotice {
        loop {
            let notice = tokio::time::timeout(WAIT, self.pushed.recv())
                .await
                .expect("a notice in time")
                .expect("hook alive");
            if notice.users.contains(&user(who)) {
                return notice;
            }
        }
    }
}

fn set(conversation: pb::ConversationRef, muted: Option<bool>, pinned: Option<bool>) -> In {
    In::SetConversationSettings(pb::SetConversationSettings {
        conversation: Some(conversation),
        muted,
        pinned,
    })
}

fn block(who: &str, blocked: bool) -> In {
    In::BlockUser(pb::BlockUser {
        user: who.to_owned(),
        blocked,
    })
}

/// The error code of a refused TCP request.
fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> pb::ErrorCode {
    match r {
        Err(ClientError::Server(e)) => {
            assert!(!e.retryable, "{e:?}");
            pb::ErrorCode::try_from(e.code).unwrap_or_default()
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The error code of a refused WebSocket request.
fn ws_code(answer: Out) -> pb::ErrorCode {
    match answer {
        Out::Error(e) => {
            assert!(!e.retryable, "{e:?}");
            pb::ErrorCode::try_from(e.code).unwrap_or_default()
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn settings(answer: Out) -> (bool, bool) {
    match answer {
        Out::ConversationSettings(s) => (s.muted, s.pinned),
        other => panic!("expected ConversationSettingsResult, got {other:?}"),
    }
}

fn ws_send(to: pb::ConversationRef, id: &str) -> In {
    In::Send(pb::Send {
        client_msg_id: id.to_owned(),
        conversation: Some(to),
        body: id.as_bytes().to_vec().into(),
        ..Default::default()
    })
}

/// Settings set over TCP on one device show in the list another device of
/// the same user reads over WebSocket: pinned first, muted flagged, and a
/// change of one setting keeps the other. Rooms, groups the user is not in
/// and direct chats with no message are refused.
async fn settings_show_on_another_device(store: Arc<dyn Store>) {
    let s = Both::start(store).await;
    s.group("crew", &["alice", "bob"]).await;
    s.group("others", &["bob"]).await;
    let phone = s.tcp("alice", "phone").await;
    phone.send(direct("bob"), "d1", "hi").await.expect("send");
    phone.send(group("crew"), "g1", "hey").await.expect("send");

    let got = phone.request(set(direct("bob"), Some(true), None)).await;
    assert_eq!(settings(got.expect("set")), (true, false));
    let got = phone.request(set(group("crew"), None, Some(true))).await;
    assert_eq!(settings(got.expect("set")), (false, true));
    // Pinning the direct chat too keeps it muted.
    let got = phone.request(set(direct("bob"), None, Some(true))).await;
    assert_eq!(settings(got.expect("set")), (true, true));
    let got = phone.request(set(direct("bob"), None, Some(false))).await;
    assert_eq!(settings(got.expect("set")), (true, false));

    assert_eq!(
        code(phone.request(set(room("live"), Some(true), None)).await),
        pb::ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(phone.request(set(group("others"), Some(true), None)).await),
        pb::ErrorCode::Forbidden
    );
    assert_eq!(
        code(phone.request(set(direct("carol"), Some(true), None)).await),
        pb::ErrorCode::NotFound
    );

    // The direct chat is the most recent, but the pinned group comes first.
    let mut browser = s.ws("alice").await;
    let list = match browser
        .request(In::ListConversations(pb::ListConversations { limit: 0 }))
        .await
    {
        Out::ConversationList(l) => l.conversations,
        other => panic!("expected ConversationList, got {other:?}"),
    };
    let view: Vec<(String, bool, bool)> = list
        .iter()
        .map(|c| {
            let r = c.conversation.as_ref().expect("ref");
            (r.id.clone(), c.muted, c.pinned)
        })
        .collect();
    assert_eq!(
        view,
        [("crew".into(), false, true), ("bob".into(), true, false)]
    );
    // Bob's own view is untouched by alice's settings.
    let bob = s.tcp("bob", "phone").await;
    let list = bob.list_conversations().await.expect("list");
    assert!(list.iter().all(|c| !c.muted && !c.pinned), "{list:?}");
}

/// A muted conversation still counts unread, but its messages reach no
/// offline push while an unmuted one's do.
async fn muted_counts_unread_but_is_not_pushed(store: Arc<dyn Store>) {
    let mut s = Both::start(store).await;
    s.group("crew", &["alice", "bob"]).await;
    let bob = user("bob");
    let alice_chat = ConversationId::direct(bob.clone(), user("alice"));
    s.engine
        .set_conversation_settings(SettingsChange {
            user: bob.clone(),
            conversation: alice_chat.clone(),
            muted: Some(true),
            pinned: None,
        })
        .await
        .expect("mute");
    let got = s
        .engine
        .conversation_settings(&bob, &alice_chat)
        .await
        .expect("read");
    assert!(got.muted && !got.pinned);

    let alice = s.tcp("alice", "phone").await;
    alice
        .send(direct("bob"), "m1", "muted")
        .await
        .expect("send");
    alice.send(group("crew"), "m2", "loud").await.expect("send");
    let notice = s.next_notice_for("bob").await;
    assert_eq!(&notice.message.body[..], b"loud");
    // The muted message's notice would have been handed over by now.
    while let Ok(Some(n)) = tokio::time::timeout(QUIET, s.pushed.recv()).await {
        assert!(
            !n.users.contains(&bob),
            "a muted conversation was pushed: {n:?}"
        );
    }

    let mut phone = s.ws("bob").await;
    let list = match phone
        .request(In::ListConversations(pb::ListConversations { limit: 0 }))
        .await
    {
        Out::ConversationList(l) => l.conversations,
        other => panic!("expected ConversationList, got {other:?}"),
    };
    let chat = list
        .iter()
        .find(|c| c.conversation.as_ref().is_some_and(|r| r.id == "alice"))
        .expect("the direct chat is listed");
    assert!(chat.muted);
    assert_eq!(chat.unread, 1, "muted still counts unread");

    // Unmuted again, the next message is pushed.
    let got = settings(phone.request(set(direct("alice"), Some(false), None)).await);
    assert_eq!(got, (false, false));
    drop(phone);
    // Wait until bob's session is gone, so he is offline for the next send.
    s.probe.wait_for(|now| now.sessions_of("bob") == 0).await;
    assert!(!s.engine.is_online(&bob));
    alice
        .send(direct("bob"), "m3", "again")
        .await
        .expect("send");
    let notice = s.next_notice_for("bob").await;
    assert_eq!(&notice.message.body[..], b"again");
}

/// Bob (WebSocket) blocks alice (TCP): direct sends are refused both ways
/// with BLOCKED, the group still works, the host lists the block; after
/// the unblock they chat again. The host API blocks and unblocks too.
async fn blocked_direct_sends_are_refused(store: Arc<dyn Store>) {
    let s = Both::start(store).await;
    s.group("crew", &["alice", "bob"]).await;
    let alice = s.tcp("alice", "phone").await;
    let mut bob = s.ws("bob").await;
    alice
        .send(direct("bob"), "before", "hi")
        .await
        .expect("send before the block");

    match bob.request(block("alice", true)).await {
        Out::BlockUserResult(r) => assert_eq!((r.user.as_str(), r.blocked), ("alice", true)),
        other => panic!("expected BlockUserResult, got {other:?}"),
    }
    assert_eq!(
        s.engine.blocked_users(&user("bob")).await.expect("list"),
        [user("alice")]
    );
    assert_eq!(
        code(alice.send(direct("bob"), "a1", "let me in").await),
        pb::ErrorCode::Blocked
    );
    // The blocker cannot write to the blocked user either.
    assert_eq!(
        ws_code(bob.request(ws_send(direct("alice"), "b1")).await),
        pb::ErrorCode::Blocked
    );
    // A retry of the message sent before the block gets its original ack.
    let again = alice
        .send(direct("bob"), "before", "hi")
        .await
        .expect("retry");
    assert!(again.duplicate);
    // Groups are not affected.
    alice
        .send(group("crew"), "g1", "in the group")
        .await
        .expect("group send");
    bob.say(group("crew"), "g2", "me too").await;
    // Blocking oneself is refused.
    assert_eq!(
        ws_code(bob.request(block("bob", true)).await),
        pb::ErrorCode::InvalidArgument
    );

    match bob.request(block("alice", false)).await {
        Out::BlockUserResult(r) => assert!(!r.blocked),
        other => panic!("expected BlockUserResult, got {other:?}"),
    }
    assert!(
        s.engine
            .blocked_users(&user("bob"))
            .await
            .expect("list")
            .is_empty()
    );
    alice
        .send(direct("bob"), "a2", "hello again")
        .await
        .expect("send after unblock");
    // Bob gets it, and never got the refused one.
    loop {
        let m = bob.pushed_from("alice").await;
        assert_ne!(&m.body[..], b"let me in", "a refused send was pushed");
        if &m.body[..] == b"hello again" {
            break;
        }
    }
    bob.say(direct("alice"), "b2", "welcome back").await;

    // The host API: alice blocks bob.
    s.engine
        .block_user(&user("alice"), &user("bob"))
        .await
        .expect("block");
    s.engine
        .block_user(&user("alice"), &user("bob"))
        .await
        .expect("idempotent");
    assert_eq!(
        ws_code(bob.request(ws_send(direct("alice"), "b3")).await),
        pb::ErrorCode::Blocked
    );
    s.engine
        .unblock_user(&user("alice"), &user("bob"))
        .await
        .expect("unblock");
    bob.say(direct("alice"), "b4", "ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_show_on_another_device_memory() {
    settings_show_on_another_device(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muted_counts_unread_but_is_not_pushed_memory() {
    muted_counts_unread_but_is_not_pushed(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_direct_sends_are_refused_memory() {
    blocked_direct_sends_are_refused(Arc::new(MemoryStore::new())).await;
}

#[cfg(feature = "postgres")]
mod pg {
    use crate::common::pg_schema::pg_store;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn settings_show_on_another_device_postgres() {
        let (store, _schema) = pg_store("settings_blocks").await;
        super::settings_show_on_another_device(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn muted_counts_unread_but_is_not_pushed_postgres() {
        let (store, _schema) = pg_store("settings_blocks").await;
        super::muted_counts_unread_but_is_not_pushed(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocked_direct_sends_are_refused_postgres() {
        let (store, _schema) = pg_store("settings_blocks").await;
        super::blocked_direct_sends_are_refused(store).await;
    }
}

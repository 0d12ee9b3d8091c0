//! Group roles over real sockets (TCP and WebSocket), on the memory store
//! and (feature `postgres`) on PostgreSQL: owners and admins manage
//! members, others are refused with FORBIDDEN, a muted member's send is
//! refused with MUTED, admins recall anyone's message, and every change is
//! a system event in the timeline, live and in `Pull`/`Sync`.

mod common;

use std::sync::Arc;

use common::ws::WsClient;
use common::{Server, next_matching, user};
use im_engine::core::group_roles::{GroupRole, Mute};
use im_engine::core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_engine::core::{ChannelId, EngineConfig, EngineError, GroupActor, GroupChange, Store};
use im_engine::store_memory::MemoryStore;
use im_engine::transport_tcp::client::{Client, ClientError, group};
use im_engine::transport_ws::{WsConfig, WsServer};

use pb::SystemEventKind as Kind;

fn crew() -> ChannelId {
    ChannelId::new("crew").expect("id")
}

fn add(users: &[&str]) -> In {
    In::AddMembers(pb::AddMembers {
        group_id: "crew".into(),
        user_ids: users.iter().map(|u| (*u).to_owned()).collect(),
    })
}

fn remove(users: &[&str]) -> In {
    In::RemoveMembers(pb::RemoveMembers {
        group_id: "crew".into(),
        user_ids: users.iter().map(|u| (*u).to_owned()).collect(),
    })
}

fn set_role(user: &str, role: pb::GroupRole) -> In {
    In::SetMemberRole(pb::SetMemberRole {
        group_id: "crew".into(),
        user_id: user.into(),
        role: role as i32,
    })
}

fn mute(user: &str, forever: bool) -> In {
    In::MuteMember(pb::MuteMember {
        group_id: "crew".into(),
        user_id: user.into(),
        until_ms: 0,
        forever,
    })
}

fn leave() -> In {
    In::LeaveGroup(pb::LeaveGroup {
        group_id: "crew".into(),
    })
}

fn recall(seq: u64, id: &str) -> In {
    In::Recall(pb::Recall {
        client_msg_id: id.into(),
        conversation: Some(group("crew")),
        target_seq: seq,
    })
}

/// The seq of the system event a granted action committed.
async fn granted(c: &Client, action: In) -> u64 {
    match c.request(action).await {
        Ok(Out::GroupActionAck(a)) => {
            assert_eq!(a.group_id, "crew");
            a.event_seq
        }
        other => panic!("expected GroupActionAck, got {other:?}"),
    }
}

/// The code, reason and retry flag of a refused request.
fn refusal<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (pb::ErrorCode, String, bool) {
    match r {
        Err(ClientError::Server(e)) => (
            pb::ErrorCode::try_from(e.code).unwrap_or(pb::ErrorCode::Unspecified),
            e.reason,
            e.retryable,
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn forbidden(c: &Client, action: In) -> String {
    let (code, reason, _) = refusal(c.request(action).await);
    assert_eq!(code, pb::ErrorCode::Forbidden, "{reason}");
    reason
}

/// A system event as a test names it: seq, kind, actor, targets.
type Seen = (u64, Kind, String, Vec<String>);

fn seen(m: &pb::Message) -> Option<Seen> {
    let e = m.system.as_ref()?;
    assert_eq!(m.content_type, pb::ContentType::System as i32, "{m:?}");
    assert_eq!(m.sender_device, "host");
    assert!(!m.body.is_empty(), "old clients get a text: {m:?}");
    Some((
        m.seq,
        Kind::try_from(e.kind).unwrap_or(Kind::Unspecified),
        e.actor.clone(),
        e.targets.clone(),
    ))
}

fn ev(seq: u64, kind: Kind, actor: &str, targets: &[&str]) -> Seen {
    (
        seq,
        kind,
        actor.to_owned(),
        targets.iter().map(|t| (*t).to_owned()).collect(),
    )
}

/// The whole matrix over TCP: the owner promotes, an admin adds, mutes,
/// unmutes, recalls and removes, a member is refused each of those, a muted
/// member cannot send, and the events reach members live, in `Pull` and in
/// an offline member's `Sync`; the removed member gets their own removal.
async fn roles_and_system_events(store: Arc<dyn Store>) {
    let server = Server::start_with(EngineConfig::default(), store).await;
    let engine = &server.engine;
    let created = engine
        .create_group_with_owner(
            &crew(),
            &user("olga"),
            &[user("alice"), user("bob"), user("carol")],
        )
        .await
        .expect("create");
    assert_eq!(created.seq, 1, "creation is the first system event");
    let olga = server.connect("olga", "phone").await;
    let alice = server.connect("alice", "phone").await;
    let bob = server.connect("bob", "phone").await;

    // A member manages nothing.
    assert!(
        forbidden(&bob, add(&["dave"]))
            .await
            .contains("owner and admins")
    );
    forbidden(&bob, remove(&["carol"])).await;
    forbidden(&bob, mute("carol", true)).await;
    assert!(
        forbidden(&bob, set_role("carol", pb::GroupRole::Admin))
            .await
            .contains("owner")
    );
    // A non-member (or a group that does not exist) neither.
    let zed = server.connect("zed", "phone").await;
    assert!(
        forbidden(&zed, add(&["zed"]))
            .await
            .contains("not a member")
    );

    // The owner promotes; only the owner may.
    assert_eq!(
        granted(&olga, set_role("alice", pb::GroupRole::Admin)).await,
        2
    );
    assert!(
        forbidden(&alice, set_role("bob", pb::GroupRole::Admin))
            .await
            .contains("owner")
    );
    // An admin adds and mutes members, but not the owner or another admin.
    assert_eq!(
        granted(&alice, add(&["dave", "carol"])).await,
        3,
        "carol is ignored"
    );
    assert_eq!(granted(&alice, add(&["carol"])).await, 0, "nothing changed");
    forbidden(&alice, remove(&["olga"])).await;
    forbidden(&alice, mute("olga", true)).await;
    forbidden(&olga, leave()).await;
    assert_eq!(granted(&alice, mute("bob", true)).await, 4);

    // A muted member's send is refused with MUTED, not retryable.
    let (code, reason, retryable) = refusal(bob.send(group("crew"), "b1", "hey").await);
    assert_eq!(code, pb::ErrorCode::Muted, "{reason}");
    assert!(!retryable);

    // Admins recall anyone's message at any time; members only their own.
    let carol_msg = server.connect("carol", "tablet").await;
    let said = carol_msg
        .send(group("crew"), "c1", "spam")
        .await
        .expect("send");
    assert_eq!(said.seq, 5);
    let dave = server.connect("dave", "phone").await;
    let (code, reason, _) = refusal(dave.request(recall(5, "d-r1")).await);
    assert_eq!(
        code,
        pb::ErrorCode::Forbidden,
        "a member cannot recall others': {reason}"
    );
    match alice.request(recall(5, "a-r1")).await {
        Ok(Out::SendAck(a)) => assert_eq!(a.seq, 6),
        other => panic!("the admin's recall: {other:?}"),
    }
    assert!(
        alice
            .pull(group("crew"), 4, 5, 1)
            .await
            .expect("pull")
            .messages[0]
            .recalled
    );
    carol_msg.close().await.expect("close");

    // Unmuted, bob sends again; then he is removed and told so live.
    assert_eq!(
        granted(
            &alice,
            In::MuteMember(pb::MuteMember {
                group_id: "crew".into(),
                user_id: "bob".into(),
                ..Default::default()
            })
        )
        .await,
        7
    );
    assert_eq!(
        bob.send(group("crew"), "b2", "back")
            .await
            .expect("send")
            .seq,
        8
    );
    assert_eq!(granted(&alice, remove(&["bob"])).await, 9);
    let own_removal = next_matching(&bob, |b| match b {
        Out::Push(p) => p.messages.iter().find_map(|m| seen(m).filter(|s| s.0 == 9)),
        _ => None,
    })
    .await
    .expect("bob is told of his own removal");
    assert_eq!(own_removal, ev(9, Kind::MembersRemoved, "alice", &["bob"]));
    let (code, ..) = refusal(bob.send(group("crew"), "b3", "still here?").await);
    assert_eq!(code, pb::ErrorCode::Forbidden);
    // A member leaves; the owner hands the group over.
    assert_eq!(granted(&dave, leave()).await, 10);
    assert_eq!(
        granted(&olga, set_role("alice", pb::GroupRole::Owner)).await,
        11
    );
    assert_eq!(
        engine
            .member_info(&crew(), &user("olga"))
            .await
            .expect("info")
            .map(|i| i.role),
        Some(GroupRole::Admin),
        "the old owner is an admin now"
    );

    let expected = vec![
        ev(1, Kind::MembersAdded, "olga", &["alice", "bob", "carol"]),
        ev(2, Kind::RoleChanged, "olga", &["alice"]),
        ev(3, Kind::MembersAdded, "alice", &["dave"]),
        ev(4, Kind::MemberMuted, "alice", &["bob"]),
        ev(7, Kind::MemberUnmuted, "alice", &["bob"]),
        ev(9, Kind::MembersRemoved, "alice", &["bob"]),
        ev(10, Kind::MemberLeft, "dave", &[]),
        ev(11, Kind::RoleChanged, "olga", &["alice"]),
    ];
    // Live, in order, to a member online throughout. Seq 1 committed
    // before she connected, but its push may still have been on its way
    // (the ack comes before the fanout): it is not asked for here.
    let mut live = Vec::new();
    while live.len() < expected.len() - 1 {
        let more = next_matching(&olga, |b| match b {
            Out::Push(p) => Some(
                p.messages
                    .iter()
                    .filter(|m| m.seq > created.seq)
                    .filter_map(seen)
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .await
        .expect("pushes");
        live.extend(more);
    }
    assert_eq!(live, expected[1..]);
    // In a pull, with the text old clients show.
    let page = olga.pull(group("crew"), 0, 11, 50).await.expect("pull");
    let pulled: Vec<Seen> = page.messages.iter().filter_map(seen).collect();
    assert_eq!(pulled, expected);
    let removal = page.messages.iter().find(|m| m.seq == 9).expect("seq 9");
    assert_eq!(removal.body, "alice removed bob");
    // In the catch-up of a member who was offline (inbox entries).
    let carol = server.connect("carol", "laptop").await;
    let sync = carol.sync(0).await.expect("sync");
    let synced: Vec<Seen> = sync.messages.iter().filter_map(seen).collect();
    assert_eq!(synced, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_system_events_memory() {
    roles_and_system_events(Arc::new(MemoryStore::new())).await;
}

/// The host API: roles, mutes and a transfer, each with its event (actor
/// empty, sender "system"); a client may not forge a system event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_manages_roles_and_clients_cannot_forge_events() {
    let server = Server::start().await;
    let engine = &server.engine;
    engine
        .create_group_with_owner(&crew(), &user("olga"), &[user("bob")])
        .await
        .expect("create");
    let muted = engine
        .mute_member(&crew(), &user("bob"), Mute::Until(i64::MAX - 1))
        .await
        .expect("mute")
        .expect("an event");
    assert_eq!(muted.seq, 2);
    let bob = server.connect("bob", "phone").await;
    let (code, ..) = refusal(bob.send(group("crew"), "b1", "hi").await);
    assert_eq!(code, pb::ErrorCode::Muted);
    engine
        .mute_member(&crew(), &user("bob"), Mute::Lifted)
        .await
        .expect("unmute");
    bob.send(group("crew"), "b2", "hi").await.expect("unmuted");
    assert!(
        engine
            .set_member_role(&crew(), &user("bob"), GroupRole::Owner)
            .await
            .is_err(),
        "owners change through transfer_owner"
    );
    engine
        .transfer_owner(&crew(), &user("olga"), &user("bob"))
        .await
        .expect("transfer");
    assert!(
        engine
            .transfer_owner(&crew(), &user("olga"), &user("bob"))
            .await
            .is_err(),
        "olga is no longer the owner"
    );
    let page = bob.pull(group("crew"), 0, 10, 10).await.expect("pull");
    let last = page.messages.last().expect("messages");
    assert_eq!((last.sender_user.as_str(), last.seq), ("system", 5));
    assert_eq!(seen(last), Some(ev(5, Kind::RoleChanged, "", &["bob"])));

    let forged = bob
        .request(In::Send(pb::Send {
            client_msg_id: "f1".into(),
            conversation: Some(group("crew")),
            body: b"x".to_vec().into(),
            content_type: pb::ContentType::System as i32,
            ..Default::default()
        }))
        .await;
    assert_eq!(refusal(forged).0, pb::ErrorCode::InvalidArgument);

    // Not even the host removes the owner: the group would be left with no
    // one to appoint admins.
    assert!(
        matches!(
            engine
                .change_group(
                    &crew(),
                    GroupChange::Remove(vec![user("bob")]),
                    GroupActor::Host
                )
                .await,
            Err(EngineError::Forbidden(_))
        ),
        "the host removed the owner"
    );
    // A mute that would already be over is refused, not committed as an
    // event that mutes no one.
    let past = bob
        .request(In::MuteMember(pb::MuteMember {
            group_id: "crew".into(),
            user_id: "olga".into(),
            until_ms: 1,
            forever: false,
        }))
        .await;
    assert_eq!(refusal(past).0, pb::ErrorCode::InvalidArgument);
}

/// The same rules over WebSocket: the owner promotes, a member is refused,
/// an admin mutes and the muted member's send is refused with MUTED; the
/// events arrive as pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_over_websocket() {
    let engine = im_engine::core::Engine::builder(Arc::new(MemoryStore::new()))
        .insecure_dev_auth()
        .build()
        .expect("engine");
    engine
        .create_group_with_owner(&crew(), &user("olga"), &[user("alice"), user("bob")])
        .await
        .expect("create");
    let ws = WsServer::bind("127.0.0.1:0", WsConfig::default().path("/ws"))
        .await
        .expect("bind");
    let addr = ws.local_addr().expect("addr");
    ws.serve(engine.clone());
    let mut olga = WsClient::connect(addr, "olga").await;
    let mut alice = WsClient::connect(addr, "alice").await;
    let mut bob = WsClient::connect(addr, "bob").await;

    let ack = |out: Out| match out {
        Out::GroupActionAck(a) => a.event_seq,
        other => panic!("expected GroupActionAck, got {other:?}"),
    };
    let code = |out: Out| match out {
        Out::Error(e) => pb::ErrorCode::try_from(e.code).unwrap_or(pb::ErrorCode::Unspecified),
        other => panic!("expected an Error, got {other:?}"),
    };
    assert_eq!(
        code(bob.request(mute("alice", true)).await),
        pb::ErrorCode::Forbidden
    );
    assert_eq!(
        ack(olga.request(set_role("alice", pb::GroupRole::Admin)).await),
        2
    );
    assert_eq!(ack(alice.request(mute("bob", true)).await), 3);
    let refused = bob
        .request(In::Send(pb::Send {
            client_msg_id: "b1".into(),
            conversation: Some(group("crew")),
            body: b"hi".to_vec().into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(code(refused), pb::ErrorCode::Muted);
    assert_eq!(alice.say(group("crew"), "a1", "hello").await, 4);
    let muted = bob.pushed_from("alice").await;
    assert_eq!(
        seen(&muted),
        Some(ev(3, Kind::MemberMuted, "alice", &["bob"]))
    );
}

#[cfg(feature = "postgres")]
mod pg {
    use crate::common::pg_schema::pg_store;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn roles_and_system_events_postgres() {
        let (store, _schema) = pg_store("group_roles").await;
        super::roles_and_system_events(store).await;
    }
}

//! Typing signals: forwarded live to the other participants' sessions that
//! asked for them, never stored, rate-limited, refused where they make no
//! sense.

mod common;

use std::time::Instant;

use common::{Server, connect_opted, next_matching, until_quiet};
use im_engine::core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_engine::transport_tcp::client::{Client, direct, group, room};

/// Connects `user` asking for typing events.
async fn connect_typing(server: &Server, user: &str, device: &str) -> Client {
    connect_opted(server, user, device, |c| c.typing_events = true).await
}

fn typing(conversation: pb::ConversationRef, active: bool) -> pb::ClientFrame {
    pb::ClientFrame {
        request_id: 0,
        body: Some(In::Typing(pb::Typing {
            conversation: Some(conversation),
            active,
        })),
    }
}

fn typing_event(b: Out) -> Option<pb::TypingEvent> {
    match b {
        Out::Typing(t) => Some(t),
        _ => None,
    }
}

async fn next_typing(c: &Client) -> Option<pb::TypingEvent> {
    next_matching(c, typing_event).await
}

/// Typing events `c` receives until the connection stays quiet.
async fn typing_until_quiet(c: &Client) -> Vec<pb::TypingEvent> {
    until_quiet(c, typing_event).await
}

#[tokio::test]
async fn the_peer_sees_typing_named_by_the_typer_and_nobody_else_does() {
    let server = Server::start().await;
    let alice = connect_typing(&server, "alice", "phone").await;
    let alice_laptop = connect_typing(&server, "alice", "laptop").await;
    let bob = connect_typing(&server, "bob", "phone").await;
    // An old client, which never asked for typing events.
    let bob_old = server.connect("bob", "old").await;
    let carol = connect_typing(&server, "carol", "phone").await;

    alice
        .send_frame(&typing(direct("bob"), true))
        .await
        .expect("typing");
    let t = next_typing(&bob).await.expect("bob sees alice typing");
    assert_eq!(t.conversation, Some(direct("alice")));
    assert_eq!((t.user_id.as_str(), t.active), ("alice", true));

    alice
        .send_frame(&typing(direct("bob"), false))
        .await
        .expect("typing");
    let t = next_typing(&bob).await.expect("bob sees alice stop");
    assert!(!t.active);

    for (who, c) in [
        ("alice's other device", &alice_laptop),
        ("bob's old client", &bob_old),
        ("carol", &carol),
    ] {
        assert!(
            typing_until_quiet(c).await.is_empty(),
            "{who} got a typing event"
        );
    }
    // Nothing was stored: the chat has no message.
    let list = alice.list_conversations().await.expect("list");
    assert!(list.iter().all(|c| c.head_seq == 0), "{list:?}");
}

#[tokio::test]
async fn group_members_online_see_typing_and_outsiders_are_refused() {
    let server = Server::start().await;
    server.group("team", &["alice", "bob", "carol"]).await;
    let alice = connect_typing(&server, "alice", "phone").await;
    let bob = connect_typing(&server, "bob", "phone").await;
    let carol = connect_typing(&server, "carol", "phone").await;
    let mallory = connect_typing(&server, "mallory", "phone").await;

    alice
        .send_frame(&typing(group("team"), true))
        .await
        .expect("typing");
    for c in [&bob, &carol] {
        let t = next_typing(c).await.expect("a member sees it");
        assert_eq!(
            (t.conversation, t.user_id.as_str()),
            (Some(group("team")), "alice")
        );
    }

    let refused = mallory
        .request(In::Typing(pb::Typing {
            conversation: Some(group("team")),
            active: true,
        }))
        .await
        .expect_err("not a member");
    assert_eq!(refused.code(), Some(pb::ErrorCode::Forbidden));
    let refused = alice
        .request(In::Typing(pb::Typing {
            conversation: Some(room("lobby")),
            active: true,
        }))
        .await
        .expect_err("no typing in rooms");
    assert_eq!(refused.code(), Some(pb::ErrorCode::InvalidArgument));
    assert!(
        typing_until_quiet(&bob).await.is_empty(),
        "refused typing leaked"
    );
}

#[tokio::test]
async fn a_typing_flood_is_cut_to_the_burst() {
    let server = Server::start().await;
    let alice = connect_typing(&server, "alice", "phone").await;
    let bob = connect_typing(&server, "bob", "phone").await;
    let config = server.engine.config();
    let (burst, rate) = (config.typing_burst as usize, f64::from(config.typing_rate));
    let started = Instant::now();
    for _ in 0..burst * 10 {
        alice
            .send_frame(&typing(direct("bob"), true))
            .await
            .expect("typing");
    }
    // Every frame was handled once alice's ping is answered (one session
    // handles its frames in order).
    alice.ping().await.expect("ping");
    let refilled = (started.elapsed().as_secs_f64() * rate).ceil() as usize;
    let got = typing_until_quiet(&bob).await;
    assert!(
        (burst..=burst + refilled).contains(&got.len()),
        "{} typing events forwarded for a burst of {burst} (+{refilled} refilled)",
        got.len()
    );
}

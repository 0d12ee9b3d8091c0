//! The host calls on `Engine` answer as their docs say: errors, shutdown,
//! and what clients see of a host message.
#![cfg(all(feature = "tcp", feature = "memory"))]

mod common;

use std::sync::Arc;

use common::*;
use im_engine::core::amend::Actor;
use im_engine::core::pb::server_frame::Body as Out;

use im_engine::core::{ChannelId, ConversationId, EngineConfig, EngineError, StoreError};
use im_engine::store_memory::MemoryStore;

fn alice_bob() -> ConversationId {
    ConversationId::direct(user("alice"), user("bob"))
}

#[tokio::test]
async fn host_commits_after_shutdown_are_refused_and_commits_nothing() {
    let store = Arc::new(MemoryStore::new());
    let engine = mem_engine(EngineConfig::default(), store.clone());
    engine
        .send_as(alice_bob(), user("alice"), "before".into(), None)
        .await
        .expect("a send before shutdown commits");
    engine.shutdown().await;
    let after = engine
        .send_as(
            alice_bob(),
            user("alice"),
            "after".into(),
            Some("k1".into()),
        )
        .await;
    assert!(matches!(after, Err(EngineError::ShuttingDown)), "{after:?}");
    let recall = engine
        .recall(alice_bob(), 1, Actor::Host, Some("k2".into()))
        .await;
    assert!(
        matches!(recall, Err(EngineError::ShuttingDown)),
        "{recall:?}"
    );
    let held = stored(store.as_ref(), &alice_bob()).await;
    let bodies: Vec<&[u8]> = held.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, [b"before".as_slice()]);
}

#[tokio::test]
async fn a_host_message_reaches_clients_with_its_idempotency_key_or_none() {
    let server = Server::start().await;
    let bob = server.connect("bob", "phone").await;
    for key in [Some("welcome-1"), None] {
        server
            .engine
            .send_as(alice_bob(), user("alice"), "hi".into(), key.map(Into::into))
            .await
            .expect("send_as");
        let pushed = next_matching(&bob, |b| match b {
            Out::Push(p) => p.messages.into_iter().next(),
            _ => None,
        })
        .await
        .expect("bob gets the message");
        assert_eq!(pushed.client_msg_id, key.unwrap_or(""));
        assert_eq!(pushed.sender_device, "host");
    }
}

#[tokio::test]
async fn host_group_calls_answer_errors_as_documented() {
    let engine = mem_engine(EngineConfig::default(), Arc::new(MemoryStore::new()));
    let g = ChannelId::new("g").expect("id");
    let missing = ChannelId::new("missing").expect("id");
    engine
        .create_group(&g, &[user("alice")])
        .await
        .expect("create");
    let again = engine.create_group(&g, &[user("bob")]).await;
    assert!(
        matches!(again, Err(EngineError::Store(StoreError::AlreadyExists(_)))),
        "{again:?}"
    );
    let add = engine.add_members(&missing, &[user("bob")]).await;
    assert!(
        matches!(add, Err(EngineError::Store(StoreError::NotFound(_)))),
        "{add:?}"
    );
    engine
        .remove_members(&missing, &[user("bob")])
        .await
        .expect("removing from a missing group is a no-op");
    let big = vec![b'x'; engine.config().max_body_bytes + 1];
    let oversize = engine
        .send_as(alice_bob(), user("alice"), big.into(), None)
        .await;
    assert!(
        matches!(oversize, Err(EngineError::InvalidRequest(_))),
        "{oversize:?}"
    );
    let bad_key = engine
        .send_as(alice_bob(), user("alice"), "hi".into(), Some(String::new()))
        .await;
    assert!(
        matches!(bad_key, Err(EngineError::InvalidId(_))),
        "{bad_key:?}"
    );
    let into_missing = engine
        .send_as(
            ConversationId::group("missing").expect("id"),
            user("alice"),
            "hi".into(),
            None,
        )
        .await;
    assert!(
        matches!(
            into_missing,
            Err(EngineError::Store(StoreError::NotFound(_)))
        ),
        "{into_missing:?}"
    );
    assert_eq!(engine.kick_user(&user("nobody"), "bye"), 0);
}

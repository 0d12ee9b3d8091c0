//! An engine session fed arbitrary frames over the in-memory connection
//! (`im_testkit::duplex`), on a paused clock: no panic anywhere in the
//! engine; every frame read is answered (its answer, an `Error`, or a close
//! with a reason; an `Ack` only when it fails); a well-behaved session beside
//! it is still served afterwards.
//!
//! Input: 1 byte of options (bit 0: skip the handshake, so the first frame is
//! the fuzzer's), then frames as a 2-byte big-endian length and that many
//! bytes (a length over 1024 is one byte over the frame limit).
#![no_main]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use im_core::codec::{decode_client_frame, encode_client_frame};
use im_core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_core::{ChannelId, CloseCode, Engine, EngineConfig, UserId};
use im_store_memory::MemoryStore;
use im_testkit::duplex::MemClient;
use libfuzzer_sys::fuzz_target;

const MAX_FRAME: usize = 1024;
const MAX_MALFORMED: usize = 8;
const QUIET: Duration = Duration::from_secs(5);
const LAST_PING: u64 = 0xfeed_f00d_dead_beef;

fn frames(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let [hi, lo, rest @ ..] = data {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        if len > MAX_FRAME {
            out.push(vec![0x08; MAX_FRAME + 1]);
            data = rest;
            continue;
        }
        let len = len.min(rest.len());
        out.push(rest[..len].to_vec());
        data = &rest[len..];
    }
    out
}

async fn engine() -> Engine {
    let mut config = EngineConfig::default();
    config.shards = 1;
    // Small caches: an engine is built per run.
    config.shard_cache_entries = 256;
    config.max_frame_bytes = MAX_FRAME;
    config.heartbeat_interval = Duration::from_secs(3600);
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .config(config)
        .insecure_dev_auth()
        .build()
        .expect("engine");
    let users = [
        UserId::new("u0").expect("id"),
        UserId::new("u1").expect("id"),
    ];
    engine
        .create_group(&ChannelId::new("g0").expect("id"), &users)
        .await
        .expect("group");
    engine
}

#[derive(Default)]
struct Expected {
    required: HashMap<u64, usize>,
    optional: HashMap<u64, usize>,
    close: Option<CloseCode>,
    read: usize,
}

fn expected(frames: &[Vec<u8>]) -> Expected {
    let mut e = Expected::default();
    let mut malformed = 0;
    for bytes in frames {
        e.read += 1;
        if bytes.len() > MAX_FRAME {
            e.close = Some(CloseCode::TooBig);
            *e.required.entry(0).or_default() += 1;
            return e;
        }
        match decode_client_frame(bytes) {
            Err(_) => {
                malformed += 1;
                *e.required.entry(0).or_default() += 1;
                if malformed >= MAX_MALFORMED {
                    e.close = Some(CloseCode::InvalidData);
                    return e;
                }
            }
            Ok(pb::ClientFrame {
                request_id,
                body: Some(In::Ack(_)),
            }) => *e.optional.entry(request_id).or_default() += 1,
            Ok(f) => *e.required.entry(f.request_id).or_default() += 1,
        }
    }
    e
}

/// Answers by request id until the engine goes quiet; `true` if it closed.
async fn observe(client: &MemClient) -> (HashMap<u64, usize>, Vec<u64>, bool) {
    let mut answers = HashMap::new();
    let mut pongs = Vec::new();
    loop {
        match client.next_event(QUIET).await {
            Ok(Some(frame)) => match frame.body {
                Some(Out::Push(_) | Out::Notify(_)) => {}
                Some(Out::Kicked(k)) => panic!("kicked: {k:?}"),
                body => {
                    if let Some(Out::Pong(_)) = body {
                        pongs.push(frame.request_id);
                    }
                    *answers.entry(frame.request_id).or_default() += 1;
                }
            },
            Ok(None) => return (answers, pongs, false),
            Err(_) => return (answers, pongs, true),
        }
    }
}

async fn connected_session(engine: &Engine, mut frames: Vec<Vec<u8>>) {
    let alice = MemClient::connect(engine, "u0", "d0").await.expect("alice");
    frames.push(
        encode_client_frame(&pb::ClientFrame {
            request_id: LAST_PING,
            body: Some(In::Ping(pb::Ping { client_time_ms: 1 })),
        })
        .to_vec(),
    );
    let want = expected(&frames);
    for f in &frames[..want.read] {
        let _ = alice.send_raw(f.clone());
    }
    let (answers, pongs, closed) = observe(&alice).await;
    for (id, n) in &answers {
        let most = want.required.get(id).unwrap_or(&0) + want.optional.get(id).unwrap_or(&0);
        assert!(
            *n <= most,
            "{n} answers to request {id}, at most {most} expected"
        );
    }
    match want.close {
        None => {
            assert!(!closed, "closed: {:?}", alice.close_reason());
            for (id, n) in &want.required {
                let got = answers.get(id).copied().unwrap_or(0);
                assert!(got >= *n, "request {id}: {got} answers of {n}");
            }
            assert!(pongs.contains(&LAST_PING), "no pong after the garbage");
        }
        Some(code) => {
            assert!(closed, "expected a close ({code:?})");
            let reason = alice.close_reason();
            assert!(
                reason
                    .as_ref()
                    .is_some_and(|r| r.code == code && !r.detail.is_empty()),
                "closed with {reason:?}, expected {code:?}"
            );
        }
    }
    drop(alice.close().await);
}

async fn first_frame(engine: &Engine, frame: &[u8]) {
    let (conn, client) = MemClient::pair(MAX_FRAME);
    engine.accept(conn);
    let _ = client.send_raw(frame.to_vec());
    let (mut connected, mut errors, mut closed) = (false, 0, false);
    loop {
        match client.next_event(QUIET).await {
            Ok(Some(pb::ServerFrame {
                body: Some(Out::Connected(_)),
                ..
            })) => connected = true,
            Ok(Some(pb::ServerFrame {
                body: Some(Out::Error(_)),
                ..
            })) => errors += 1,
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) => break,
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    if connected {
        assert!(!closed && errors == 0);
        client.ping().await.expect("served after connecting");
    } else {
        assert_eq!(errors, 1);
        assert!(closed, "refused but not closed");
        let reason = client.close_reason();
        assert!(reason.is_some_and(|r| !r.detail.is_empty()));
    }
    drop(client.close().await);
}

fuzz_target!(|data: &[u8]| {
    let [options, rest @ ..] = data else {
        return;
    };
    let frames = frames(rest);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let engine = engine().await;
        // Bob connects after a fuzzed `Connect` (which may replace him) or
        // beside a connected session fed the frames.
        let bob = match (options & 1, frames.first()) {
            (1, Some(first)) => {
                first_frame(&engine, first).await;
                MemClient::connect(&engine, "u1", "d0").await.expect("bob")
            }
            _ => {
                let bob = MemClient::connect(&engine, "u1", "d0").await.expect("bob");
                connected_session(&engine, frames).await;
                bob
            }
        };
        let to_alice = pb::ConversationRef {
            kind: pb::ConversationKind::Direct as i32,
            id: "u0".into(),
        };
        bob.send(to_alice, "bob-after", &b"still here"[..])
            .await
            .expect("bob is still served");
        MemClient::connect(&engine, "u2", "d0")
            .await
            .expect("a new session connects");
    });
});

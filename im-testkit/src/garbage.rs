//! Checks of an engine session fed arbitrary frames, over the in-memory
//! connection ([`crate::duplex`]): every frame read is answered (its answer,
//! an `Error`, or a close with a reason; an `Ack` or a `Typing` only when it
//! fails), and a well-behaved session beside it is still served afterwards. The stable
//! property test (`im-core/tests/session_garbage.rs`) and the `session`
//! fuzz target (`fuzz/`) both drive these; run them on a paused clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use im_core::codec::{decode_client_frame, encode_client_frame};
use im_core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_core::{ChannelId, CloseCode, Engine, EngineConfig, Store, UserId};

use crate::duplex::MemClient;

/// Malformed frames the engine tolerates on one session before it closes it.
pub const MAX_MALFORMED_FRAMES: usize = 8;
/// How long the engine may stay quiet before a check takes it as done.
const QUIET: Duration = Duration::from_secs(5);
/// The request id of the ping sent after the garbage.
const LAST_PING: u64 = 0xfeed_f00d_dead_beef;

fn user(s: &str) -> UserId {
    UserId::new(s).expect("user id")
}

/// An engine on `store` (fresh) accepting frames up to `max_frame` bytes,
/// where `u0` and `u1` share group `g0`.
pub async fn garbage_engine(store: Arc<dyn Store>, max_frame: usize) -> Engine {
    let mut config = EngineConfig::default();
    config.shards = 2;
    // Small caches: an engine is built per case.
    config.shard_cache_entries = 256;
    config.max_frame_bytes = max_frame;
    // No heartbeat kicks while a case waits out its quiet periods.
    config.heartbeat_interval = Duration::from_secs(3600);
    let engine = Engine::builder(store)
        .config(config)
        .insecure_dev_auth()
        .build()
        .expect("engine");
    engine
        .create_group(
            &ChannelId::new("g0").expect("id"),
            &[user("u0"), user("u1")],
        )
        .await
        .expect("group");
    engine
}

/// What the engine must do with a sequence of frames on an open session.
#[derive(Debug, Default)]
struct Expected {
    /// Answers that must come, by request id.
    required: HashMap<u64, usize>,
    /// Answers that may come (an `Ack` or a `Typing` is answered only when
    /// it fails).
    optional: HashMap<u64, usize>,
    /// The close the frames call for, if any; frames after it are unread.
    close: Option<CloseCode>,
    /// How many frames the engine reads before it closes.
    read: usize,
}

fn expected(frames: &[Vec<u8>], max_frame: usize) -> Expected {
    let mut e = Expected::default();
    let mut malformed = 0;
    for bytes in frames {
        e.read += 1;
        if bytes.len() > max_frame {
            e.close = Some(CloseCode::TooBig);
            // The refusal itself is an `Error` with request id 0.
            *e.required.entry(0).or_default() += 1;
            return e;
        }
        match decode_client_frame(bytes) {
            Err(_) => {
                malformed += 1;
                *e.required.entry(0).or_default() += 1;
                if malformed >= MAX_MALFORMED_FRAMES {
                    e.close = Some(CloseCode::InvalidData);
                    return e;
                }
            }
            Ok(pb::ClientFrame {
                request_id,
                body: Some(In::Ack(_) | In::Typing(_)),
            }) => *e.optional.entry(request_id).or_default() += 1,
            Ok(f) => *e.required.entry(f.request_id).or_default() += 1,
        }
    }
    e
}

/// Everything the engine sent back until it went quiet or closed.
#[derive(Default)]
struct Observed {
    answers: HashMap<u64, usize>,
    pongs: Vec<u64>,
    closed: bool,
}

async fn observe(client: &MemClient) -> Result<Observed, String> {
    let mut o = Observed::default();
    loop {
        match client.next_event(QUIET).await {
            Ok(Some(frame)) => match frame.body {
                // Deliveries, not answers.
                Some(Out::Push(_) | Out::Notify(_)) => {}
                Some(Out::Kicked(k)) => return Err(format!("kicked: {k:?}")),
                body => {
                    if let Some(Out::Pong(_)) = body {
                        o.pongs.push(frame.request_id);
                    }
                    *o.answers.entry(frame.request_id).or_default() += 1;
                }
            },
            Ok(None) => return Ok(o),
            Err(_) => {
                o.closed = true;
                return Ok(o);
            }
        }
    }
}

/// Fails with `msg` unless `ok`.
fn ensure(ok: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(msg()) }
}

/// Feeds `frames` to a connected session of `u0`, then pings it, and checks
/// what came back; then checks that `u1`, connected beside it, is still
/// served and a new session still connects.
pub async fn check_garbage_session(
    engine: &Engine,
    mut frames: Vec<Vec<u8>>,
    max_frame: usize,
) -> Result<(), String> {
    let bob = MemClient::connect(engine, "u1", "d0")
        .await
        .map_err(|e| format!("bob: {e}"))?;
    let alice = MemClient::connect(engine, "u0", "d0")
        .await
        .map_err(|e| format!("alice: {e}"))?;
    frames.push(
        encode_client_frame(&pb::ClientFrame {
            request_id: LAST_PING,
            body: Some(In::Ping(pb::Ping { client_time_ms: 1 })),
        })
        .to_vec(),
    );
    let want = expected(&frames, max_frame);
    for f in &frames[..want.read] {
        // A send fails only once the engine let go of the connection.
        let _ = alice.send_raw(f.clone());
    }
    let got = observe(&alice).await?;
    for (id, n) in &got.answers {
        let most = want.required.get(id).unwrap_or(&0) + want.optional.get(id).unwrap_or(&0);
        ensure(*n <= most, || {
            format!("{n} answers to request {id}, at most {most} expected")
        })?;
    }
    match want.close {
        None => {
            ensure(!got.closed, || {
                format!("closed: {:?}", alice.close_reason())
            })?;
            for (id, n) in &want.required {
                let answers = got.answers.get(id).copied().unwrap_or(0);
                ensure(answers >= *n, || {
                    format!("request {id}: {answers} answers of {n}")
                })?;
            }
            ensure(got.pongs.contains(&LAST_PING), || {
                "no pong after the garbage".into()
            })?;
        }
        Some(code) => {
            ensure(got.closed, || format!("expected a close ({code:?})"))?;
            let reason = alice.close_reason();
            ensure(
                reason
                    .as_ref()
                    .is_some_and(|r| r.code == code && !r.detail.is_empty()),
                || format!("closed with {reason:?}, expected {code:?} and a reason"),
            )?;
            // The refusal itself reached the client.
            ensure(got.answers.get(&0).copied().unwrap_or(0) >= 1, || {
                "the refusal never arrived".into()
            })?;
        }
    }
    // The well-behaved session beside it is still served ...
    let to_alice = pb::ConversationRef {
        kind: pb::ConversationKind::Direct as i32,
        id: "u0".into(),
    };
    let ack = bob.send(to_alice, "bob-after", &b"still here"[..]).await;
    ensure(ack.is_ok(), || format!("bob's send: {ack:?}"))?;
    ensure(bob.ping().await.is_ok(), || "bob's ping".into())?;
    // ... and a new one connects (no handshake slot leaked).
    let carol = MemClient::connect(engine, "u2", "d0").await;
    ensure(carol.is_ok(), || format!("carol: {carol:?}"))?;
    drop(alice.close().await);
    Ok(())
}

/// Feeds `frame` as the first of a connection: it is a `Connect` and
/// answered `Connected`, or refused with one `Error` and a close with a
/// reason; then a well-behaved session connects and is served.
pub async fn check_first_frame(
    engine: &Engine,
    frame: &[u8],
    max_frame: usize,
) -> Result<(), String> {
    let (conn, client) = MemClient::pair(max_frame);
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
            Ok(Some(other)) => return Err(format!("unexpected {other:?}")),
            Ok(None) => break,
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    if connected {
        ensure(!closed && errors == 0, || {
            format!("connected, then closed {closed} / {errors} errors")
        })?;
        let is_connect =
            decode_client_frame(frame).is_ok_and(|f| matches!(f.body, Some(In::Connect(_))));
        ensure(is_connect, || {
            "connected by a frame that is not Connect".into()
        })?;
        ensure(client.ping().await.is_ok(), || {
            "not served after connecting".into()
        })?;
    } else {
        ensure(errors == 1, || {
            format!("{errors} errors for one refused frame")
        })?;
        ensure(closed, || "refused but not closed".into())?;
        let reason = client.close_reason();
        ensure(
            reason.as_ref().is_some_and(|r| !r.detail.is_empty()),
            || format!("closed with {reason:?}"),
        )?;
    }
    drop(client.close().await);
    // A well-behaved session is served after it.
    let bob = MemClient::connect(engine, "u1", "d0")
        .await
        .map_err(|e| format!("bob: {e}"))?;
    let to_alice = pb::ConversationRef {
        kind: pb::ConversationKind::Direct as i32,
        id: "u0".into(),
    };
    let ack = bob.send(to_alice, "bob-after", &b"still here"[..]).await;
    ensure(ack.is_ok(), || format!("bob's send: {ack:?}"))
}

//! A session fed arbitrary frames, with a bounded number of cases on stable:
//! the engine answers every frame it reads (its answer, an `Error`, or a
//! close with a reason), never panics, and keeps serving a well-behaved
//! session beside it. The `cargo fuzz` target `session` (see `fuzz/`) feeds
//! the same engine raw bytes for longer.
//!
//! Sessions run over the in-memory connection (`im_testkit::duplex`) on a
//! paused clock: no sockets, and timers fire in virtual time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use im_core::codec::{decode_client_frame, encode_client_frame};
use im_core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use im_core::{ChannelId, CloseCode, Engine, EngineConfig, UserId};
use im_store_memory::MemoryStore;
use im_testkit::duplex::MemClient;
use im_testkit::strategies::arb_client_frame;
use proptest::collection::vec;
use proptest::prelude::*;

/// The engine's frame limit in these tests (small, so oversize is cheap).
const MAX_FRAME: usize = 4096;
/// Malformed frames the engine tolerates on one session (its
/// `MAX_MALFORMED_FRAMES`); the next one closes the session.
const MAX_MALFORMED: usize = 8;
/// How long to wait, in virtual time, for a frame that may still come.
const QUIET: Duration = Duration::from_secs(5);
/// The request id of the last `Ping` of each case.
const LAST_PING: u64 = 0xfeed_f00d_dead_beef;

/// Panics anywhere in the process (engine tasks included) since start.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// One frame of a case.
#[derive(Debug, Clone)]
enum Item {
    /// Arbitrary bytes (which may happen to decode).
    Raw(Vec<u8>),
    /// A frame from `arb_client_frame`, well formed on the wire.
    Frame(pb::ClientFrame),
    /// A well-formed frame with its encoding cut short.
    Cut(pb::ClientFrame, usize),
    /// One byte over the frame limit.
    Oversize,
}

impl Item {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Item::Raw(b) => b.clone(),
            Item::Frame(f) => encode_client_frame(f).to_vec(),
            Item::Cut(f, at) => {
                let mut b = encode_client_frame(f).to_vec();
                b.truncate(at % (b.len() + 1));
                b
            }
            Item::Oversize => vec![0x08; MAX_FRAME + 1],
        }
    }
}

fn arb_item() -> impl Strategy<Value = Item> {
    prop_oneof![
        6 => vec(any::<u8>(), 0..96).prop_map(Item::Raw),
        40 => arb_client_frame().prop_map(Item::Frame),
        6 => (arb_client_frame(), any::<usize>()).prop_map(|(f, at)| Item::Cut(f, at)),
        1 => Just(Item::Oversize),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime")
}

fn user(s: &str) -> UserId {
    UserId::new(s).expect("user id")
}

/// An engine on a memory store where `u0` and `u1` share group `g0`.
async fn engine() -> Engine {
    let mut config = EngineConfig::default();
    config.shards = 2;
    // Small caches: an engine is built per case.
    config.shard_cache_entries = 256;
    config.max_frame_bytes = MAX_FRAME;
    // No heartbeat kicks while a case waits out its quiet periods.
    config.heartbeat_interval = Duration::from_secs(3600);
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
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
    /// Answers that may come (an `Ack` is answered only when it fails).
    optional: HashMap<u64, usize>,
    /// The close the frames call for, if any; frames after it are unread.
    close: Option<CloseCode>,
    /// How many frames the engine reads before it closes.
    read: usize,
}

fn expected(items: &[Item]) -> Expected {
    let mut e = Expected::default();
    let mut malformed = 0;
    for item in items {
        e.read += 1;
        let bytes = item.bytes();
        if bytes.len() > MAX_FRAME {
            e.close = Some(CloseCode::TooBig);
            // The refusal itself is an `Error` with request id 0.
            *e.required.entry(0).or_default() += 1;
            return e;
        }
        match decode_client_frame(&bytes) {
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

/// Everything the engine sent back until it went quiet or closed.
struct Observed {
    answers: HashMap<u64, usize>,
    pongs: Vec<u64>,
    closed: bool,
}

async fn observe(client: &MemClient) -> Observed {
    let mut o = Observed {
        answers: HashMap::new(),
        pongs: Vec::new(),
        closed: false,
    };
    loop {
        match client.next_event(QUIET).await {
            Ok(Some(frame)) => match frame.body {
                // Deliveries, not answers.
                Some(Out::Push(_) | Out::Notify(_)) => {}
                Some(Out::Kicked(k)) => panic!("kicked: {k:?}"),
                body => {
                    if let Some(Out::Pong(_)) = body {
                        o.pongs.push(frame.request_id);
                    }
                    *o.answers.entry(frame.request_id).or_default() += 1;
                }
            },
            Ok(None) => return o,
            Err(_) => {
                o.closed = true;
                return o;
            }
        }
    }
}

/// Feeds `items` to a connected session, then pings it, and checks what
/// came back; then checks that a second, well-behaved session is served.
fn run_case(items: Vec<Item>) -> Result<(), TestCaseError> {
    count_panics();
    let before = PANICS.load(Ordering::SeqCst);
    runtime().block_on(async {
        let engine = engine().await;
        let bob = MemClient::connect(&engine, "u1", "d0").await.expect("bob");
        let alice = MemClient::connect(&engine, "u0", "d0")
            .await
            .expect("alice");
        let mut items = items;
        items.push(Item::Frame(pb::ClientFrame {
            request_id: LAST_PING,
            body: Some(In::Ping(pb::Ping { client_time_ms: 1 })),
        }));
        let want = expected(&items);
        for item in &items[..want.read] {
            // A send fails only once the engine let go of the connection.
            let _ = alice.send_raw(item.bytes());
        }
        let got = observe(&alice).await;

        for (id, n) in &got.answers {
            let most = want.required.get(id).unwrap_or(&0) + want.optional.get(id).unwrap_or(&0);
            prop_assert!(
                *n <= most,
                "{n} answers to request {id}, at most {most} expected"
            );
        }
        match want.close {
            None => {
                prop_assert!(!got.closed, "closed: {:?}", alice.close_reason());
                for (id, n) in &want.required {
                    let answers = got.answers.get(id).copied().unwrap_or(0);
                    prop_assert!(answers >= *n, "request {id}: {answers} answers of {n}");
                }
                prop_assert!(got.pongs.contains(&LAST_PING), "no pong after the garbage");
            }
            Some(code) => {
                prop_assert!(got.closed, "expected a close ({code:?})");
                let reason = alice.close_reason();
                prop_assert!(
                    reason
                        .as_ref()
                        .is_some_and(|r| r.code == code && !r.detail.is_empty()),
                    "closed with {reason:?}, expected {code:?} and a reason"
                );
                // The refusal itself reached the client.
                prop_assert!(got.answers.get(&0).copied().unwrap_or(0) >= 1);
            }
        }

        // The well-behaved session beside it is still served ...
        let to_alice = pb::ConversationRef {
            kind: pb::ConversationKind::Direct as i32,
            id: "u0".into(),
        };
        let ack = bob.send(to_alice, "bob-after", &b"still here"[..]).await;
        prop_assert!(ack.is_ok(), "bob's send: {ack:?}");
        prop_assert!(bob.ping().await.is_ok());
        // ... and a new one connects (no handshake slot leaked).
        let carol = MemClient::connect(&engine, "u2", "d0").await;
        prop_assert!(carol.is_ok(), "carol: {carol:?}");
        drop(alice.close().await);
        Ok(())
    })?;
    prop_assert_eq!(PANICS.load(Ordering::SeqCst), before, "something panicked");
    Ok(())
}

/// Feeds one frame as the first of a connection: it is `Connect` and
/// answered `Connected`, or refused with an `Error` and a close with a reason.
fn run_first_frame(item: Item) -> Result<(), TestCaseError> {
    count_panics();
    let before = PANICS.load(Ordering::SeqCst);
    runtime().block_on(async {
        let engine = engine().await;
        let (conn, client) = MemClient::pair(MAX_FRAME);
        engine.accept(conn);
        let _ = client.send_raw(item.bytes());
        let mut connected = false;
        let mut errors = 0;
        let mut closed = false;
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
                Ok(Some(other)) => prop_assert!(false, "unexpected {other:?}"),
                Ok(None) => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if connected {
            prop_assert!(!closed && errors == 0);
            let frame = decode_client_frame(&item.bytes()).expect("a Connect frame");
            prop_assert!(matches!(frame.body, Some(In::Connect(_))));
            prop_assert!(client.ping().await.is_ok());
        } else {
            prop_assert_eq!(errors, 1);
            prop_assert!(closed, "refused but not closed");
            let reason = client.close_reason();
            prop_assert!(
                reason.as_ref().is_some_and(|r| !r.detail.is_empty()),
                "closed with {reason:?}"
            );
        }
        drop(client.close().await);
        // A well-behaved session is served after it.
        let bob = MemClient::connect(&engine, "u1", "d0").await;
        prop_assert!(bob.is_ok(), "bob: {bob:?}");
        Ok(())
    })?;
    prop_assert_eq!(PANICS.load(Ordering::SeqCst), before, "something panicked");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_session_answers_every_garbage_frame_and_others_are_still_served(
        items in vec(arb_item(), 0..24),
    ) {
        run_case(items)?;
    }

    #[test]
    fn any_first_frame_connects_or_is_refused_with_a_reason(item in arb_item()) {
        run_first_frame(item)?;
    }
}

#[test]
fn eight_malformed_frames_close_the_session_with_a_reason() {
    let items = vec![Item::Raw(vec![0xff]); MAX_MALFORMED];
    run_case(items).expect("closed with a reason");
}

#[test]
fn an_oversize_frame_closes_the_session_with_a_reason() {
    run_case(vec![Item::Raw(vec![]), Item::Oversize]).expect("closed with a reason");
}

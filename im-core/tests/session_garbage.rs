//! A session fed arbitrary frames, with a bounded number of cases on stable:
//! the engine answers every frame it reads (its answer, an `Error`, or a
//! close with a reason), never panics, and keeps serving a well-behaved
//! session beside it. The `cargo fuzz` target `session` (see `fuzz/`) feeds
//! the same engine raw bytes for longer.
//!
//! Sessions run over the in-memory connection (`im_testkit::duplex`) on a
//! paused clock: no sockets, and timers fire in virtual time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use im_core::codec::encode_client_frame;
use im_core::pb;
use im_store_memory::MemoryStore;
use im_testkit::garbage::{
    MAX_MALFORMED_FRAMES, check_first_frame, check_garbage_session, garbage_engine,
};
use im_testkit::strategies::arb_client_frame;
use proptest::collection::vec;
use proptest::prelude::*;

/// The engine's frame limit in these tests (small, so oversize is cheap).
const MAX_FRAME: usize = 4096;

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

/// Feeds `items` to a connected session beside a well-behaved one (see
/// `im_testkit::garbage`), counting panics anywhere in the engine.
fn run_case(items: Vec<Item>) -> Result<(), TestCaseError> {
    count_panics();
    let before = PANICS.load(Ordering::SeqCst);
    let frames = items.iter().map(Item::bytes).collect();
    runtime()
        .block_on(async {
            let engine = garbage_engine(Arc::new(MemoryStore::new()), MAX_FRAME).await;
            check_garbage_session(&engine, frames, MAX_FRAME).await
        })
        .map_err(TestCaseError::fail)?;
    prop_assert_eq!(PANICS.load(Ordering::SeqCst), before, "something panicked");
    Ok(())
}

/// Feeds one frame as the first of a connection.
fn run_first_frame(item: Item) -> Result<(), TestCaseError> {
    count_panics();
    let before = PANICS.load(Ordering::SeqCst);
    runtime()
        .block_on(async {
            let engine = garbage_engine(Arc::new(MemoryStore::new()), MAX_FRAME).await;
            check_first_frame(&engine, &item.bytes(), MAX_FRAME).await
        })
        .map_err(TestCaseError::fail)?;
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
    let items = vec![Item::Raw(vec![0xff]); MAX_MALFORMED_FRAMES];
    run_case(items).expect("closed with a reason");
}

#[test]
fn an_oversize_frame_closes_the_session_with_a_reason() {
    run_case(vec![Item::Raw(vec![]), Item::Oversize]).expect("closed with a reason");
}

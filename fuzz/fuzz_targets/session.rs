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

use std::sync::Arc;

use im_store_memory::MemoryStore;
use im_testkit::garbage::{check_first_frame, check_garbage_session, garbage_engine};
use libfuzzer_sys::fuzz_target;

const MAX_FRAME: usize = 1024;

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
        let engine = garbage_engine(Arc::new(MemoryStore::new()), MAX_FRAME).await;
        let checked = match (options & 1, frames.first()) {
            (1, Some(first)) => check_first_frame(&engine, first, MAX_FRAME).await,
            _ => check_garbage_session(&engine, frames, MAX_FRAME).await,
        };
        if let Err(e) = checked {
            panic!("{e}");
        }
    });
});

//! The TCP `FrameCodec` decoder on an arbitrary byte stream, fed in
//! arbitrary reads under an arbitrary frame limit: no panic, over-limit
//! prefixes refused, frames within the limit come out whole, and the buffer
//! grows with what arrived, never with what a prefix announced.
//!
//! Input: 3 bytes of limit, 1 byte of read-size seed, then the stream. With
//! the seed's high bit set, the stream is instead cut into payloads at 0xff
//! bytes, encoded, and must come back out unchanged.
#![no_main]

use bytes::{Bytes, BytesMut};
use im_core::TransportError;
use im_transport_tcp::{FrameCodec, LENGTH_PREFIX_BYTES};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

/// The codec's read-ahead cap (`READ_CHUNK`, private to the crate).
const READ_CHUNK: usize = 8 * 1024;

fuzz_target!(|data: &[u8]| {
    let [a, b, c, seed, stream @ ..] = data else {
        return;
    };
    let max = u32::from_be_bytes([0, *a, *b, *c]) as usize;
    let read = usize::from(seed & 0x3f) + 1;
    let mut codec = FrameCodec::new(max);

    let (wire, want) = if seed & 0x80 != 0 {
        let payloads: Vec<&[u8]> = stream
            .split(|&b| b == 0xff)
            .filter(|p| p.len() <= max)
            .collect();
        let mut wire = BytesMut::new();
        for p in &payloads {
            codec
                .encode(Bytes::copy_from_slice(p), &mut wire)
                .expect("encode");
        }
        (wire.to_vec(), Some(payloads))
    } else {
        (stream.to_vec(), None)
    };

    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    'feed: for chunk in wire.chunks(read) {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            let prefix = buf
                .get(..LENGTH_PREFIX_BYTES)
                .map(|p| u32::from_be_bytes(p.try_into().expect("4 bytes")) as usize);
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => out.push(frame.to_vec()),
                Ok(None) => break,
                Err(TransportError::FrameTooLarge { size, max: m }) => {
                    assert_eq!(Some(size), prefix);
                    assert!(size > max && m == max);
                    assert!(want.is_none(), "a frame within the limit was refused");
                    break 'feed;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        // What is buffered is less than one frame; the room reserved past it
        // is bounded by what arrived and one read chunk, whatever the prefix.
        let bound = 2 * (fed.min(LENGTH_PREFIX_BYTES + max) + READ_CHUNK + read);
        assert!(
            buf.capacity() <= bound,
            "buffer of {} for {fed} bytes fed (bound {bound})",
            buf.capacity()
        );
    }
    if let Some(want) = want {
        assert_eq!(out, want);
        assert!(buf.is_empty());
    }
});

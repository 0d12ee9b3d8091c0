//! Length-delimited framing with a size check before any allocation.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use im_core::TransportError;
use tokio_util::codec::{Decoder, Encoder};

/// Bytes of the big-endian length that precedes every frame.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Most buffer space reserved ahead of data that has not arrived yet.
const READ_CHUNK: usize = 8 * 1024;

/// Frames are a 4-byte big-endian length followed by that many bytes. A
/// length over the limit is refused as soon as the prefix arrives, so an
/// oversize frame is never buffered.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max: usize,
}

impl FrameCodec {
    /// A codec refusing frames over `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            max: max_frame_bytes,
        }
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = TransportError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, TransportError> {
        let Some(prefix) = src.get(..LENGTH_PREFIX_BYTES) else {
            return Ok(None);
        };
        let len = (&prefix[..]).get_u32() as usize;
        if len > self.max {
            return Err(TransportError::FrameTooLarge {
                size: len,
                max: self.max,
            });
        }
        let total = LENGTH_PREFIX_BYTES + len;
        if src.len() < total {
            // Grow with the data that actually arrives, not with what the
            // (possibly unauthenticated) peer announced.
            src.reserve((total - src.len()).min(READ_CHUNK));
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX_BYTES);
        Ok(Some(src.split_to(len)))
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = TransportError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), TransportError> {
        let len = u32::try_from(item.len())
            .map_err(|_| TransportError::Protocol("frame exceeds 4 GiB".into()))?;
        dst.reserve(LENGTH_PREFIX_BYTES + item.len());
        dst.put_u32(len);
        dst.put_slice(&item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversize_frames_are_refused_from_the_prefix_alone() {
        let mut codec = FrameCodec::new(16);
        let mut buf = BytesMut::new();
        buf.put_u32(16 * 1024 * 1024);
        match codec.decode(&mut buf) {
            Err(TransportError::FrameTooLarge { size, max }) => {
                assert_eq!((size, max), (16 * 1024 * 1024, 16));
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    }

    #[test]
    fn a_frame_split_across_reads_is_reassembled() {
        let mut codec = FrameCodec::new(64);
        let mut wire = BytesMut::new();
        for payload in [&b"first frame"[..], b"second"] {
            codec
                .encode(Bytes::copy_from_slice(payload), &mut wire)
                .expect("encode");
        }
        // Feed one byte at a time: every prefix must be read as a prefix.
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in wire {
            buf.put_u8(b);
            while let Some(frame) = codec.decode(&mut buf).expect("decode") {
                out.push(frame);
            }
        }
        assert_eq!(out, [&b"first frame"[..], b"second"]);
    }

    #[test]
    fn frames_round_trip_and_partial_input_waits() {
        let mut codec = FrameCodec::new(16);
        let mut buf = BytesMut::new();
        codec
            .encode(bytes::Bytes::from_static(b"hello"), &mut buf)
            .expect("encode");
        let mut partial = buf.split_to(6);
        assert!(codec.decode(&mut partial).expect("ok").is_none());
        partial.unsplit(buf);
        let frame = codec.decode(&mut partial).expect("ok").expect("frame");
        assert_eq!(&frame[..], b"hello");
    }

    /// Properties of the decoder for any length prefix, with a bounded number
    /// of cases. The `cargo fuzz` target `tcp_codec` (see `fuzz/`) explores
    /// the same decoder for longer.
    mod props {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// A length prefix: often near the limit, sometimes anything.
        fn prefix(max: usize) -> impl Strategy<Value = u32> {
            let max = max as u32;
            prop_oneof![
                2 => 0..=max,
                2 => Just(max),
                2 => Just(max.saturating_add(1)),
                2 => any::<u32>(),
                1 => Just(u32::MAX),
            ]
        }

        fn limit_and_prefix() -> impl Strategy<Value = (usize, u32)> {
            prop_oneof![0usize..64, 0usize..=(1 << 20)]
                .prop_flat_map(|max| (Just(max), prefix(max)))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// One decode over a buffer that holds a prefix and some of the
            /// frame: an over-limit prefix is refused without allocating, and
            /// an acceptable one grows the buffer by what arrived or by one
            /// read chunk, never by the announced length.
            #[test]
            fn any_length_prefix_is_refused_or_waited_for_within_bounds(
                (max, len) in limit_and_prefix(),
                tail in vec(any::<u8>(), 0..64),
            ) {
                let mut codec = FrameCodec::new(max);
                let mut wire = len.to_be_bytes().to_vec();
                wire.extend_from_slice(&tail);
                let mut buf = BytesMut::from(&wire[..]);
                let (before, arrived) = (buf.capacity(), buf.len());
                let announced = len as usize;
                match codec.decode(&mut buf) {
                    Err(TransportError::FrameTooLarge { size, max: m }) => {
                        prop_assert!(announced > max);
                        prop_assert_eq!((size, m), (announced, max));
                        prop_assert_eq!(buf.capacity(), before, "refusal allocated");
                    }
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                    Ok(_) if announced > max => prop_assert!(false, "over-limit prefix accepted"),
                    Ok(Some(frame)) => {
                        prop_assert_eq!(&frame[..], &tail[..announced]);
                        prop_assert_eq!(&buf[..], &tail[announced..]);
                    }
                    Ok(None) => {
                        let missing = LENGTH_PREFIX_BYTES + announced - arrived;
                        let grown = buf.capacity().saturating_sub(before);
                        prop_assert!(
                            grown <= arrived.max(missing.min(READ_CHUNK)),
                            "grew by {grown} for {arrived} bytes announcing {announced}"
                        );
                        prop_assert_eq!(buf.len(), arrived, "consumed a partial frame");
                    }
                }
            }

            /// Frames within the limit, split into arbitrary reads, come out
            /// whole and in order; the buffer stays within a few frames' size.
            #[test]
            fn frames_split_into_any_reads_round_trip(
                max in 0usize..512,
                payloads in vec(vec(any::<u8>(), 0..512), 0..8),
                cuts in vec(1usize..700, 1..16),
            ) {
                let mut codec = FrameCodec::new(max);
                let payloads: Vec<Vec<u8>> =
                    payloads.into_iter().filter(|p| p.len() <= max).collect();
                let mut wire = BytesMut::new();
                for p in &payloads {
                    codec.encode(Bytes::copy_from_slice(p), &mut wire).expect("encode");
                }
                let mut buf = BytesMut::new();
                let mut out = Vec::new();
                let mut peak = 0;
                let mut cut = cuts.iter().cycle();
                while !wire.is_empty() {
                    let n = (*cut.next().expect("cycle")).min(wire.len());
                    buf.extend_from_slice(&wire.split_to(n));
                    while let Some(frame) = codec.decode(&mut buf).expect("within the limit") {
                        out.push(frame.to_vec());
                    }
                    peak = peak.max(buf.capacity());
                }
                prop_assert_eq!(out, payloads);
                prop_assert!(buf.is_empty());
                let bound = 2 * (LENGTH_PREFIX_BYTES + max + 700 + READ_CHUNK);
                prop_assert!(peak <= bound, "buffer grew to {peak} (bound {bound})");
            }

            /// Garbage after good frames: the good frames come out, then the
            /// garbage is refused or waited for; nothing panics.
            #[test]
            fn garbage_after_good_frames_never_panics(
                max in 0usize..256,
                good in vec(vec(any::<u8>(), 0..64), 0..4),
                garbage in vec(any::<u8>(), 0..64),
            ) {
                let mut codec = FrameCodec::new(max);
                let good: Vec<Vec<u8>> = good.into_iter().filter(|p| p.len() <= max).collect();
                let mut buf = BytesMut::new();
                for p in &good {
                    codec.encode(Bytes::copy_from_slice(p), &mut buf).expect("encode");
                }
                buf.extend_from_slice(&garbage);
                let mut out = Vec::new();
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some(frame)) => out.push(frame.to_vec()),
                        Ok(None) => break,
                        Err(TransportError::FrameTooLarge { size, .. }) => {
                            prop_assert!(size > max);
                            break;
                        }
                        Err(e) => prop_assert!(false, "unexpected error {e}"),
                    }
                }
                prop_assert!(out.len() >= good.len());
                prop_assert_eq!(&out[..good.len()], &good[..]);
            }
        }
    }
}

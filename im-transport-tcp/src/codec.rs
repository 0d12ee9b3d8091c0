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
}

//! Properties of the protobuf frame codec (`im_core::codec`), run with a
//! bounded number of cases on stable. The `cargo fuzz` targets `frame_decode`
//! (see `fuzz/`) explore the same functions for longer.
//!
//! - decoding arbitrary bytes, or a valid frame with bytes flipped, cut or
//!   appended, never panics;
//! - `decode(encode(frame)) == frame` for every client and server frame;
//! - whatever decodes re-encodes to bytes that decode to the same frame.

use im_core::codec::{
    decode_client_frame, decode_server_frame, encode_client_frame, encode_server_frame,
};
use im_testkit::strategies::{arb_client_frame, arb_server_frame};
use proptest::collection::vec;
use proptest::prelude::*;

/// Both decoders on the same bytes: no panic, and anything accepted is
/// stable under a re-encode.
fn decode_both_and_reencode(bytes: &[u8]) {
    if let Ok(frame) = decode_client_frame(bytes) {
        let again = decode_client_frame(&encode_client_frame(&frame)).expect("re-encoded frame");
        assert_eq!(again, frame);
    }
    if let Ok(frame) = decode_server_frame(bytes) {
        let again = decode_server_frame(&encode_server_frame(&frame)).expect("re-encoded frame");
        assert_eq!(again, frame);
    }
}

/// How a valid encoding is damaged.
#[derive(Debug, Clone)]
enum Damage {
    Flip { at: usize, mask: u8 },
    Truncate { at: usize },
    Append(Vec<u8>),
    Insert { at: usize, byte: u8 },
}

fn arb_damage() -> impl Strategy<Value = Vec<Damage>> {
    let one = prop_oneof![
        3 => (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Damage::Flip { at, mask }),
        1 => any::<usize>().prop_map(|at| Damage::Truncate { at }),
        1 => vec(any::<u8>(), 1..8).prop_map(Damage::Append),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Damage::Insert { at, byte }),
    ];
    vec(one, 1..4)
}

fn damage(mut bytes: Vec<u8>, damage: &[Damage]) -> Vec<u8> {
    for d in damage {
        match d {
            Damage::Flip { at, mask } if !bytes.is_empty() => {
                let i = at % bytes.len();
                bytes[i] ^= mask;
            }
            Damage::Truncate { at } => bytes.truncate(at % (bytes.len() + 1)),
            Damage::Append(tail) => bytes.extend_from_slice(tail),
            Damage::Insert { at, byte } => {
                let i = at % (bytes.len() + 1);
                bytes.insert(i, *byte);
            }
            Damage::Flip { .. } => {}
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in vec(any::<u8>(), 0..256)) {
        decode_both_and_reencode(&bytes);
    }

    #[test]
    fn client_frames_round_trip(frame in arb_client_frame()) {
        let decoded = decode_client_frame(&encode_client_frame(&frame)).expect("decodes");
        prop_assert_eq!(decoded, frame);
    }

    #[test]
    fn server_frames_round_trip(frame in arb_server_frame()) {
        let decoded = decode_server_frame(&encode_server_frame(&frame)).expect("decodes");
        prop_assert_eq!(decoded, frame);
    }

    #[test]
    fn damaged_client_frames_never_panic(frame in arb_client_frame(), how in arb_damage()) {
        decode_both_and_reencode(&damage(encode_client_frame(&frame).to_vec(), &how));
    }

    #[test]
    fn damaged_server_frames_never_panic(frame in arb_server_frame(), how in arb_damage()) {
        decode_both_and_reencode(&damage(encode_server_frame(&frame).to_vec(), &how));
    }
}

#[test]
fn a_length_past_the_end_is_an_error_not_a_panic() {
    // Field 11 (Send), length-delimited, announcing 2^63 bytes.
    let bytes = [
        0x5a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
    ];
    assert!(decode_client_frame(&bytes).is_err());
    // A varint of eleven continuation bytes.
    assert!(
        decode_client_frame(&[
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
        ])
        .is_err()
    );
}

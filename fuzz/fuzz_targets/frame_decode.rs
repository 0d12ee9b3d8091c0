//! `im_core::codec::decode_client_frame` / `decode_server_frame` on arbitrary
//! bytes: no panic, and whatever decodes survives a re-encode unchanged.
#![no_main]

use im_core::codec::{
    decode_client_frame, decode_server_frame, encode_client_frame, encode_server_frame,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode_client_frame(data) {
        let again = decode_client_frame(&encode_client_frame(&frame))
            .expect("a re-encoded client frame decodes");
        assert_eq!(again, frame);
    }
    if let Ok(frame) = decode_server_frame(data) {
        let again = decode_server_frame(&encode_server_frame(&frame))
            .expect("a re-encoded server frame decodes");
        assert_eq!(again, frame);
    }
});

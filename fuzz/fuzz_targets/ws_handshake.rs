//! The WebSocket opening handshake (`im_transport_ws::accept`) on arbitrary
//! bytes followed by the end of the stream: no panic, and every outcome
//! reaches the client as an HTTP status (a refusal with its reason in the
//! body) or as nothing at all when the head never ended.
//!
//! Input: 1 byte of options (require a subprotocol, require the path `/ws`,
//! a 256-byte head limit), then the bytes the client sends.
#![no_main]

use im_transport_ws::http::StatusCode;
use im_transport_ws::{Accepted, WsConfig, WsError, accept};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
}

fuzz_target!(|data: &[u8]| {
    let [options, input @ ..] = data else {
        return;
    };
    let mut config = WsConfig::default().require_subprotocol(options & 1 != 0);
    if options & 2 != 0 {
        config = config.path("/ws");
    }
    if options & 4 != 0 {
        config.max_request_head_bytes = 256;
    }
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(input.len() + 64 * 1024);
            client.write_all(input).await.expect("write");
            client.shutdown().await.expect("shutdown");
            let result = accept(server, &config, None).await.map(|a| match a {
                // Drop the WebSocket (and the server end with it).
                Accepted::WebSocket { .. } => StatusCode::SWITCHING_PROTOCOLS,
                Accepted::Http { status, .. } => status,
            });
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.expect("read");
            let line =
                String::from_utf8_lossy(out.split(|&b| b == b'\r').next().unwrap_or_default())
                    .into_owned();
            match result {
                Ok(status) => {
                    assert!(
                        line.starts_with(&format!("HTTP/1.1 {}", status.as_u16())),
                        "{line:?}"
                    );
                }
                Err(WsError::Refused { status, reason }) => {
                    assert!(status.is_client_error(), "{status}");
                    assert!(
                        line.starts_with(&format!("HTTP/1.1 {}", status.as_u16())),
                        "{line:?}"
                    );
                    assert!(
                        String::from_utf8_lossy(&out).contains(&reason),
                        "reason not sent"
                    );
                }
                Err(WsError::ClosedDuringHandshake) => assert!(out.is_empty()),
                Err(e) => panic!("unexpected {e}"),
            }
        })
    });
});

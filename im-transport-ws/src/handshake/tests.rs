//! The opening handshake: examples and properties.
use super::*;

fn req(protocols: &[&str]) -> Request<()> {
    let mut b = Request::builder().uri("/ws");
    for p in protocols {
        b = b.header(header::SEC_WEBSOCKET_PROTOCOL, *p);
    }
    b.body(()).expect("request")
}

#[test]
fn negotiates_the_engine_subprotocol() {
    assert_eq!(negotiate(&req(&[]), false), Ok(None));
    assert!(negotiate(&req(&[]), true).is_err());
    assert_eq!(
        negotiate(&req(&["chat, im.v1.proto"]), true),
        Ok(Some(SUBPROTOCOL))
    );
    assert_eq!(
        negotiate(&req(&["chat", "im.v1.proto"]), false),
        Ok(Some(SUBPROTOCOL))
    );
    let refused = negotiate(&req(&["mqtt, stomp"]), false).expect_err("refused");
    assert!(refused.contains("mqtt, stomp"), "{refused}");
    assert!(refused.contains(SUBPROTOCOL), "{refused}");
}

#[test]
fn recognises_upgrade_tokens() {
    let r = |v: &str| {
        Request::builder()
            .header(header::UPGRADE, v)
            .body(())
            .expect("request")
    };
    assert!(is_upgrade(&r("websocket")));
    assert!(is_upgrade(&r("h2c, WebSocket")));
    assert!(!is_upgrade(&r("h2c")));
    assert!(!is_upgrade(&Request::new(())));
}

#[tokio::test]
async fn keeps_bytes_after_the_head() {
    let raw = b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n\x82\x80abcd";
    let (mut client, mut server) = tokio::io::duplex(4096);
    client.write_all(raw).await.expect("write");
    let (request, tail) = read_request(&mut server, 8192).await.expect("parsed");
    assert_eq!(request.uri().path(), "/ws");
    assert_eq!(tail, b"\x82\x80abcd");
}

#[tokio::test]
async fn refuses_an_oversize_head() {
    let (mut client, mut server) = tokio::io::duplex(1 << 16);
    let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 10_000));
    client.write_all(&raw).await.expect("write");
    match read_request(&mut server, 8192).await {
        Err(WsError::Refused { status, .. }) => {
            assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Properties of the request-head parser and the whole handshake on
/// arbitrary input, with a bounded number of cases. The `cargo fuzz`
/// target `ws_handshake` (see `fuzz/`) explores the same code for longer.
mod props {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use tokio::io::ReadBuf;

    /// Counts the bytes the parser takes from the stream.
    struct Counting<S> {
        inner: S,
        read: usize,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let before = buf.filled().len();
            let r = Pin::new(&mut self.inner).poll_read(cx, buf);
            self.read += buf.filled().len() - before;
            r
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// What `read_request` returns: the request and the bytes after it.
    type Parsed = Result<(Request<()>, Vec<u8>), WsError>;

    /// Runs `read_request` over `input` followed by the end of the
    /// stream; returns its result and how many bytes it read.
    fn parse(input: &[u8], max: usize) -> (Parsed, usize) {
        runtime().block_on(async {
            let (mut client, server) = tokio::io::duplex(input.len().max(1));
            client.write_all(input).await.expect("write");
            drop(client);
            let mut server = Counting {
                inner: server,
                read: 0,
            };
            let r = read_request(&mut server, max).await;
            (r, server.read)
        })
    }

    /// Runs the whole handshake over `input`; returns its result and
    /// everything the server wrote back.
    fn handshake(
        input: &[u8],
        config: &WsConfig,
    ) -> (Result<Accepted<tokio::io::DuplexStream>, WsError>, Vec<u8>) {
        runtime().block_on(async {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            client.write_all(input).await.expect("write");
            client.shutdown().await.expect("shutdown");
            let accepted = accept(server, config, None).await;
            // Drop the server end (and the WebSocket with it) so the
            // client reads to the end.
            let accepted = accepted.map(|a| match a {
                Accepted::WebSocket { subprotocol, .. } => Accepted::Http {
                    path: format!("ws {subprotocol:?}"),
                    status: StatusCode::SWITCHING_PROTOCOLS,
                },
                other => other,
            });
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.expect("read");
            (accepted, out)
        })
    }

    fn head_line(v: &[&[u8]]) -> impl Strategy<Value = Vec<u8>> + use<> {
        let v: Vec<Vec<u8>> = v.iter().map(|b| b.to_vec()).collect();
        prop_oneof![4 => prop::sample::select(v), 1 => vec(any::<u8>(), 0..12)]
    }

    /// Requests that are mostly well formed: real and broken request
    /// lines, WebSocket headers with good and bad values, odd bytes.
    fn request_like() -> impl Strategy<Value = Vec<u8>> {
        let name = head_line(&[
            b"Host",
            b"Upgrade",
            b"Connection",
            b"Sec-WebSocket-Key",
            b"Sec-WebSocket-Version",
            b"Sec-WebSocket-Protocol",
            b"X-\xff",
            b"Bad Name",
            b"",
        ]);
        let value = head_line(&[
            b"websocket",
            b"Upgrade",
            b"upgrade, keep-alive",
            b"dGhlIHNhbXBsZSBub25jZQ==",
            b"13",
            b"8",
            b"im.v1.proto",
            b"chat, im.v1.proto",
            b"mqtt",
            b"\x00",
            b"\xff\xfe",
            b"a\rb",
            b"",
        ]);
        (
            head_line(&[b"GET", b"POST", b"G T", b"", b"\x00"]),
            head_line(&[
                b"/ws",
                b"/",
                b"*",
                b"http://h/ws",
                b"/\x7f",
                b"/%zz",
                b"//x",
                b"",
            ]),
            head_line(&[b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1\r\n"]),
            vec((name, value), 0..8),
            vec(any::<u8>(), 0..16),
        )
            .prop_map(|(method, path, version, headers, tail)| {
                let mut r = method;
                r.push(b' ');
                r.extend(path);
                r.push(b' ');
                r.extend(version);
                r.extend(b"\r\n");
                for (n, v) in headers {
                    r.extend(n);
                    r.extend(b": ");
                    r.extend(v);
                    r.extend(b"\r\n");
                }
                r.extend(b"\r\n");
                r.extend(tail);
                r
            })
    }

    fn status_line(out: &[u8]) -> String {
        String::from_utf8_lossy(out.split(|&b| b == b'\r').next().unwrap_or_default()).into_owned()
    }

    /// The helper above sees a real upgrade through, so the property
    /// below covers the `101` path too.
    #[test]
    fn a_valid_upgrade_is_answered_101() {
        let input = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: im.v1.proto\r\n\r\n";
        let (r, out) = handshake(input, &WsConfig::default());
        assert!(
            matches!(
                r,
                Ok(Accepted::Http {
                    status: StatusCode::SWITCHING_PROTOCOLS,
                    ..
                })
            ),
            "{r:?}"
        );
        assert!(status_line(&out).starts_with("HTTP/1.1 101"), "{out:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary bytes: a request, a refusal with a 4xx status and a
        /// reason, or the end of the stream; never more than `max` bytes
        /// read.
        #[test]
        fn read_request_never_reads_past_the_limit(
            input in prop_oneof![vec(any::<u8>(), 0..2048), request_like()],
            max in prop_oneof![1usize..64, 64usize..4096],
        ) {
            let (r, read) = parse(&input, max);
            prop_assert!(read <= max, "read {read} bytes past the limit of {max}");
            match r {
                Ok((_, tail)) => prop_assert!(tail.len() < read),
                Err(WsError::Refused { status, reason }) => {
                    prop_assert!(
                        status == StatusCode::BAD_REQUEST
                            || status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "{status}"
                    );
                    prop_assert!(!reason.is_empty());
                }
                // Everything was read and no head ended.
                Err(WsError::ClosedDuringHandshake) => {
                    prop_assert_eq!(read, input.len());
                    prop_assert!(input.len() < max);
                }
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }

        /// A head that does not end within the limit is refused with 431,
        /// however it is cut.
        #[test]
        fn an_oversize_head_is_refused_with_431(
            max in 32usize..2048,
            header in "[a-zA-Z0-9]{1,16}: [ -~]{0,64}",
        ) {
            let mut input = b"GET /ws HTTP/1.1\r\n".to_vec();
            while input.len() <= max + 1 {
                input.extend(header.as_bytes());
                input.extend(b"\r\n");
            }
            let (r, read) = parse(&input, max);
            prop_assert!(read <= max);
            match r {
                Err(WsError::Refused { status, .. }) => {
                    prop_assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
                }
                other => prop_assert!(false, "expected 431, got {other:?}"),
            }
        }

        /// The whole handshake on arbitrary or request-like input: every
        /// refusal reaches the client as an HTTP status with the reason
        /// in its body; nothing panics.
        #[test]
        fn every_handshake_ends_in_an_answer_or_a_clean_refusal(
            input in prop_oneof![vec(any::<u8>(), 0..1024), request_like()],
            require_subprotocol in any::<bool>(),
            path in proptest::option::of(Just("/ws".to_owned())),
        ) {
            let config = WsConfig { require_subprotocol, path, max_request_head_bytes: 512, ..WsConfig::default() };
            let (r, out) = handshake(&input, &config);
            let line = status_line(&out);
            match r {
                Ok(Accepted::Http { status, .. }) => {
                    prop_assert!(
                        line.starts_with(&format!("HTTP/1.1 {}", status.as_u16())),
                        "{line:?} for {status}"
                    );
                }
                Ok(Accepted::WebSocket { .. }) => unreachable!("mapped to Http"),
                Err(WsError::Refused { status, reason }) => {
                    prop_assert!(status.is_client_error(), "{status}");
                    prop_assert!(line.starts_with(&format!("HTTP/1.1 {}", status.as_u16())), "{line:?}");
                    let body = String::from_utf8_lossy(&out);
                    prop_assert!(body.contains(&reason), "reason {reason:?} not in {body:?}");
                }
                Err(WsError::ClosedDuringHandshake) => prop_assert!(out.is_empty()),
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }
}

//! The opening handshake: read the HTTP request head ourselves (bounded in
//! size and time), then either upgrade to WebSocket or answer plain HTTP.
//!
//! Reading the head here rather than inside tungstenite lets one port serve
//! both a page and the WebSocket endpoint, and lets refusals carry an HTTP
//! status with a readable reason. The accept key and header checks are
//! tungstenite's own (`create_response`).

use std::io;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{create_response, write_response};
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::config::{SUBPROTOCOL, WsConfig};
use crate::error::WsError;

/// Most headers accepted in a request head.
const MAX_HEADERS: usize = 64;

/// Answers plain HTTP requests (anything that is not a WebSocket upgrade)
/// arriving on the WebSocket port, e.g. to serve a web page beside `/ws`.
///
/// The request body, if any, is not read; the connection is closed after the
/// response.
pub trait HttpHandler: Send + Sync + 'static {
    /// The response to one request.
    fn handle(&self, request: &Request<()>) -> Response<Bytes>;
}

/// The outcome of [`accept`].
#[derive(Debug)]
pub enum Accepted<S> {
    /// The client was upgraded; frames flow from here on.
    WebSocket {
        /// The WebSocket, configured with the limits of the [`WsConfig`].
        stream: Box<WebSocketStream<S>>,
        /// The subprotocol agreed on, if the client offered one.
        subprotocol: Option<&'static str>,
    },
    /// A plain HTTP request was answered by the [`HttpHandler`] and the
    /// connection closed.
    Http {
        /// Path of the request, for logs.
        path: String,
        /// Status of the response.
        status: StatusCode,
    },
}

/// Runs the opening handshake on an accepted stream, within
/// [`WsConfig::handshake_timeout`].
///
/// WebSocket upgrade requests are checked (method, version, headers, path,
/// subprotocol) and answered `101`, or refused with a `4xx` status and a
/// plain-text reason (then [`WsError::Refused`]). Other requests go to
/// `http` if given, or get `426 Upgrade Required`.
pub async fn accept<S>(
    stream: S,
    config: &WsConfig,
    http: Option<&dyn HttpHandler>,
) -> Result<Accepted<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_unless_evicted(stream, config, http, std::future::pending()).await
}

/// [`accept`], given up if `evicted` completes first (a newer connection
/// needed this one's slot): the client then gets `503` with the reason.
pub(crate) async fn accept_unless_evicted<S>(
    mut stream: S,
    config: &WsConfig,
    http: Option<&dyn HttpHandler>,
    evicted: impl Future<Output = ()>,
) -> Result<Accepted<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let routed = tokio::select! {
        r = tokio::time::timeout(
            config.handshake_timeout,
            accept_inner(&mut stream, config, http),
        ) => Some(r),
        () = evicted => None,
    };
    match routed {
        None => {
            let status = StatusCode::SERVICE_UNAVAILABLE;
            let reason = "closed to make room: request not complete in time while the \
                          server is busy; retry"
                .to_owned();
            let refusal = refuse(&mut stream, status, reason.clone());
            Err(tokio::time::timeout(config.write_timeout, refusal)
                .await
                .unwrap_or(WsError::Refused { status, reason }))
        }
        Some(Err(_)) => Err(WsError::HandshakeTimeout),
        Some(Ok(Err(e))) => Err(e),
        Some(Ok(Ok(Routed::Http { path, status }))) => Ok(Accepted::Http { path, status }),
        Some(Ok(Ok(Routed::Upgrade { tail, subprotocol }))) => {
            let ws = WebSocketStream::from_partially_read(
                stream,
                tail,
                Role::Server,
                Some(config.websocket_config()),
            )
            .await;
            Ok(Accepted::WebSocket {
                stream: Box::new(ws),
                subprotocol,
            })
        }
    }
}

enum Routed {
    Upgrade {
        tail: Vec<u8>,
        subprotocol: Option<&'static str>,
    },
    Http {
        path: String,
        status: StatusCode,
    },
}

async fn accept_inner<S>(
    stream: &mut S,
    config: &WsConfig,
    http: Option<&dyn HttpHandler>,
) -> Result<Routed, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (request, tail) = match read_request(stream, config.max_request_head_bytes).await {
        Ok(r) => r,
        Err(WsError::Refused { status, reason }) => {
            return Err(refuse(stream, status, reason).await);
        }
        Err(e) => return Err(e),
    };
    if !is_upgrade(&request) {
        let path = request.uri().path().to_owned();
        let response = match http {
            Some(h) => h.handle(&request),
            None => plain(
                StatusCode::UPGRADE_REQUIRED,
                format!("this endpoint speaks WebSocket (subprotocol {SUBPROTOCOL})\n"),
            ),
        };
        let status = response.status();
        write_http(stream, response).await?;
        return Ok(Routed::Http { path, status });
    }
    if let Some(want) = &config.path {
        if request.uri().path() != want {
            return Err(refuse(
                stream,
                StatusCode::NOT_FOUND,
                format!("no WebSocket endpoint here; connect to {want}"),
            )
            .await);
        }
    }
    let mut response = match create_response(&request) {
        Ok(r) => r,
        Err(e) => {
            return Err(refuse(stream, StatusCode::BAD_REQUEST, e.to_string()).await);
        }
    };
    let subprotocol = match negotiate(&request, config.require_subprotocol) {
        Ok(p) => p,
        Err(reason) => return Err(refuse(stream, StatusCode::BAD_REQUEST, reason).await),
    };
    if let Some(p) = subprotocol {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
        debug_assert_eq!(p, SUBPROTOCOL);
    }
    let mut out = Vec::with_capacity(256);
    write_response(&mut out, &response).map_err(|e| WsError::Io(io::Error::other(e)))?;
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(Routed::Upgrade { tail, subprotocol })
}

/// Reads and parses the request head. Returns the request and any bytes
/// read past the head.
async fn read_request<S>(stream: &mut S, max: usize) -> Result<(Request<()>, Vec<u8>), WsError>
where
    S: AsyncRead + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(1024.min(max));
    let mut chunk = [0u8; 1024];
    loop {
        let room = max.saturating_sub(buf.len());
        if room == 0 {
            return Err(WsError::Refused {
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                reason: format!("request head exceeds {max} bytes"),
            });
        }
        let want = room.min(chunk.len());
        let n = stream.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(WsError::ClosedDuringHandshake);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(len)) => {
                let request = to_request(&parsed)?;
                return Ok((request, buf.split_off(len)));
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(WsError::Refused {
                    status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    reason: format!("more than {MAX_HEADERS} headers"),
                });
            }
            Err(e) => {
                return Err(WsError::Refused {
                    status: StatusCode::BAD_REQUEST,
                    reason: format!("malformed HTTP request: {e}"),
                });
            }
        }
    }
}

fn to_request(parsed: &httparse::Request<'_, '_>) -> Result<Request<()>, WsError> {
    let bad = |reason: String| WsError::Refused {
        status: StatusCode::BAD_REQUEST,
        reason,
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|e| bad(format!("bad method: {e}")))?;
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut builder = Request::builder()
        .method(method)
        .uri(parsed.path.unwrap_or("/"))
        .version(version);
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|e| bad(format!("bad header name: {e}")))?;
        let value =
            HeaderValue::from_bytes(h.value).map_err(|e| bad(format!("bad header value: {e}")))?;
        builder = builder.header(name, value);
    }
    builder
        .body(())
        .map_err(|e| bad(format!("bad request: {e}")))
}

/// True if the request asks for a WebSocket upgrade.
fn is_upgrade(request: &Request<()>) -> bool {
    request
        .headers()
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
}

/// Picks the subprotocol, or explains the refusal.
///
/// Unknown subprotocols are refused during the handshake with `400` and a
/// reason, not accepted and then closed with 1002: a browser fails a
/// connection whose response does not name one of the offered protocols
/// anyway (its close event would only say 1006), while an HTTP status and
/// body reach every other client and the browser's developer tools.
fn negotiate(request: &Request<()>, require: bool) -> Result<Option<&'static str>, String> {
    let offered: Vec<&str> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if offered.is_empty() {
        return if require {
            Err(format!(
                "no subprotocol offered; this server speaks {SUBPROTOCOL}"
            ))
        } else {
            Ok(None)
        };
    }
    if offered.contains(&SUBPROTOCOL) {
        return Ok(Some(SUBPROTOCOL));
    }
    let mut list = offered.join(", ");
    list.truncate(200);
    Err(format!(
        "unsupported subprotocol(s) {list}; this server speaks {SUBPROTOCOL}"
    ))
}

/// A plain-text response.
pub(crate) fn plain(status: StatusCode, body: String) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Writes a refusal and returns the error describing it.
async fn refuse<S>(stream: &mut S, status: StatusCode, reason: String) -> WsError
where
    S: AsyncWrite + Unpin,
{
    let mut body = reason.clone();
    body.push('\n');
    if let Err(e) = write_http(stream, plain(status, body)).await {
        tracing::debug!(error = %e, "could not write the refusal");
    }
    WsError::Refused { status, reason }
}

/// Writes a complete HTTP/1.1 response with `Connection: close` and shuts
/// the write side down.
async fn write_http<S>(stream: &mut S, response: Response<Bytes>) -> Result<(), WsError>
where
    S: AsyncWrite + Unpin,
{
    let (parts, body) = response.into_parts();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in parts.headers.iter() {
        if name == header::CONTENT_LENGTH || name == header::CONNECTION {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    stream.write_all(&head).await?;
    stream.write_all(&body).await?;
    stream.flush().await?;
    stream.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
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
            String::from_utf8_lossy(out.split(|&b| b == b'\r').next().unwrap_or_default())
                .into_owned()
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
}

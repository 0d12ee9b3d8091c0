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
            None => upgrade_required(),
        };
        let status = response.status();
        write_http(stream, response).await?;
        return Ok(Routed::Http { path, status });
    }
    if let Some(want) = &config.path
        && request.uri().path() != want
    {
        return Err(refuse(
            stream,
            StatusCode::NOT_FOUND,
            format!("no WebSocket endpoint here; connect to {want}"),
        )
        .await);
    }
    let (response, subprotocol) = match switching_protocols(&request, config) {
        Ok(r) => r,
        Err((status, reason)) => return Err(refuse(stream, status, reason).await),
    };
    let mut out = Vec::with_capacity(256);
    write_response(&mut out, &response).map_err(|e| WsError::Io(io::Error::other(e)))?;
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(Routed::Upgrade { tail, subprotocol })
}

/// The answer to a request that is not a WebSocket upgrade, when nothing
/// else serves it: `426` naming the subprotocol.
pub(crate) fn upgrade_required() -> Response<Bytes> {
    plain(
        StatusCode::UPGRADE_REQUIRED,
        format!("this endpoint speaks WebSocket (subprotocol {SUBPROTOCOL})\n"),
    )
}

/// A `101` response and the subprotocol it names.
pub(crate) type Switching = (Response<()>, Option<&'static str>);

/// The `101 Switching Protocols` answer to an upgrade request (accept key,
/// subprotocol), or the refusal as a status and a reason. The one check of
/// an upgrade, for the standalone server and the axum endpoint alike.
pub(crate) fn switching_protocols(
    request: &Request<()>,
    config: &WsConfig,
) -> Result<Switching, (StatusCode, String)> {
    let mut response =
        create_response(request).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    let subprotocol = negotiate(request, config.require_subprotocol)
        .map_err(|reason| (StatusCode::BAD_REQUEST, reason))?;
    if subprotocol.is_some() {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    Ok((response, subprotocol))
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
pub(crate) fn is_upgrade(request: &Request<()>) -> bool {
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
mod tests;

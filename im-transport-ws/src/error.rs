//! Errors of the WebSocket transport.

use std::io;

use http::StatusCode;

/// Why a connection did not become a WebSocket session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WsError {
    /// The client did not complete the opening handshake in time.
    #[error("the opening handshake timed out")]
    HandshakeTimeout,
    /// The TLS handshake failed (e.g. a plain-HTTP client on a TLS port).
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    /// The handshake was given up to make room for a newer connection.
    #[error("handshake evicted to make room for another connection")]
    Evicted,
    /// The client closed the connection before completing the handshake.
    #[error("connection closed during the opening handshake")]
    ClosedDuringHandshake,
    /// The request was refused with an HTTP status; the reason was sent to
    /// the client as the response body.
    #[error("refused with {status}: {reason}")]
    Refused {
        /// The HTTP status sent.
        status: StatusCode,
        /// The reason sent.
        reason: String,
    },
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

//! What SDK calls fail with.

use im_core::pb;

use crate::core::{AnswerError, CoreError};

/// An error from the SDK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The protocol core refused the call (duplicate id, too many pending
    /// sends, not connected, stopped).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The server answered the request with an error.
    #[error("server error {code:?}: {reason}", code = pb::ErrorCode::try_from(.0.code).unwrap_or_default(), reason = .0.reason)]
    Server(pb::Error),
    /// The connection was lost before the answer came (the request is not
    /// retried: only sends are).
    #[error("the connection was lost before the answer came")]
    Disconnected,
    /// The client's task has ended ([`crate::Client::close`] or stopped).
    #[error("the client is closed")]
    Closed,
    /// The server answered with a frame of another kind than expected.
    #[error("unexpected answer from the server: {0}")]
    Unexpected(String),
    /// A server address could not be understood.
    #[error("invalid server address {0:?} (use HOST:PORT, tcp://HOST:PORT or ws://HOST:PORT/PATH)")]
    Address(String),
    /// A socket failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A WebSocket failure.
    #[error(transparent)]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    /// The server broke the framing (oversize or undecodable frame).
    #[error("bad frame from the server: {0}")]
    Frame(String),
}

impl From<AnswerError> for ClientError {
    fn from(e: AnswerError) -> Self {
        match e {
            AnswerError::Server(e) => Self::Server(e),
            AnswerError::Disconnected => Self::Disconnected,
        }
    }
}

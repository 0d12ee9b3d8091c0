//! Encoding and decoding of protocol frames.

use bytes::Bytes;
use prost::Message as _;

use crate::pb;

/// A frame that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed frame: {0}")]
pub struct DecodeError(#[from] prost::DecodeError);

/// Decodes one client frame.
pub fn decode_client_frame(bytes: &[u8]) -> Result<pb::ClientFrame, DecodeError> {
    Ok(pb::ClientFrame::decode(bytes)?)
}

/// Decodes one server frame (for clients and tests).
pub fn decode_server_frame(bytes: &[u8]) -> Result<pb::ServerFrame, DecodeError> {
    Ok(pb::ServerFrame::decode(bytes)?)
}

/// Encodes a server frame once into shareable bytes.
pub fn encode_server_frame(frame: &pb::ServerFrame) -> Bytes {
    Bytes::from(frame.encode_to_vec())
}

/// Encodes a client frame (for clients and tests).
pub fn encode_client_frame(frame: &pb::ClientFrame) -> Bytes {
    Bytes::from(frame.encode_to_vec())
}

/// Wraps a body in a server frame with a request id.
pub fn server_frame(request_id: u64, body: pb::server_frame::Body) -> pb::ServerFrame {
    pb::ServerFrame {
        request_id,
        body: Some(body),
    }
}

/// An `Error` server frame.
pub fn error_frame(
    request_id: u64,
    code: pb::ErrorCode,
    reason: impl Into<String>,
    retryable: bool,
) -> pb::ServerFrame {
    server_frame(
        request_id,
        pb::server_frame::Body::Error(pb::Error {
            code: code as i32,
            reason: reason.into(),
            retryable,
        }),
    )
}

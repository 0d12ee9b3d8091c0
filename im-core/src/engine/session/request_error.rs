//! The error a single request fails with: answered with an `Error` frame,
//! while the session goes on.

use crate::error::{EngineError, StoreError};
use crate::pb;

use crate::engine::wire::error_code;

/// A failed request: answered with an `Error` frame, the session goes on.
pub(super) struct RequestError {
    /// The wire error code.
    pub(super) code: pb::ErrorCode,
    /// Human-readable detail for the client.
    pub(super) reason: String,
    /// Whether the client may retry the same request.
    pub(super) retryable: bool,
}

impl RequestError {
    /// A non-retryable error with `code`.
    pub(super) fn new(code: pb::ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            retryable: false,
        }
    }
}

impl From<StoreError> for RequestError {
    fn from(e: StoreError) -> Self {
        EngineError::Store(e).into()
    }
}

impl From<crate::ids::IdError> for RequestError {
    fn from(e: crate::ids::IdError) -> Self {
        EngineError::InvalidId(e).into()
    }
}

impl From<EngineError> for RequestError {
    fn from(e: EngineError) -> Self {
        Self {
            code: error_code(&e),
            retryable: e.is_retryable(),
            reason: e.to_string(),
        }
    }
}

/// The outcome of handling one request.
pub(super) type RequestResult<T = ()> = Result<T, RequestError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_reach_clients_with_their_own_code() {
        // Forbidden and RateLimited once became INTERNAL on this path while
        // the commit path mapped them right.
        let cases = [
            (
                EngineError::Forbidden("x".into()),
                pb::ErrorCode::Forbidden,
                false,
            ),
            (
                EngineError::RateLimited("x".into()),
                pb::ErrorCode::RateLimited,
                true,
            ),
            (
                EngineError::InvalidRequest("x".into()),
                pb::ErrorCode::InvalidArgument,
                false,
            ),
            (
                EngineError::Store(StoreError::NotFound("g".into())),
                pb::ErrorCode::NotFound,
                false,
            ),
            (
                EngineError::Store(StoreError::Timeout),
                pb::ErrorCode::Unavailable,
                true,
            ),
            (
                EngineError::Blocked("x".into()),
                pb::ErrorCode::Blocked,
                false,
            ),
            (
                EngineError::ShuttingDown,
                pb::ErrorCode::ShuttingDown,
                false,
            ),
        ];
        for (err, code, retryable) in cases {
            let e = RequestError::from(err);
            assert_eq!((e.code, e.retryable), (code, retryable), "{}", e.reason);
        }
    }
}

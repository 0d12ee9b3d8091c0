//! Error types shared by the engine and its backends.

use std::sync::Arc;

use crate::ids::{ConversationId, DedupKey, Seq};

/// Boxed error from a backend's own library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a store can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The append was refused as a whole because these idempotency keys are
    /// already committed; nothing was written. The engine answers those sends
    /// with the original message and appends the rest again.
    #[error("{} client message id(s) already committed", .0.len())]
    Duplicate(Vec<DedupKey>),
    /// The append was refused as a whole because `conversation` is not at the
    /// expected head (another writer appended). Nothing was written.
    #[error("{conversation} is at seq {actual}, not {expected}")]
    SeqConflict {
        /// The conversation.
        conversation: ConversationId,
        /// The head the writer expected.
        expected: Seq,
        /// The head the store has.
        actual: Seq,
    },
    /// The group or conversation does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The group already exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The store cannot hold this input (e.g. a character its text type
    /// refuses). Never retryable; the engine finds the one message at fault
    /// and answers only its sender with `INVALID_ARGUMENT`.
    #[error("the store refused the input: {0}")]
    Rejected(String),
    /// The store cannot be reached or is overloaded; retrying may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The operation took longer than the configured timeout.
    #[error("store operation timed out")]
    Timeout,
    /// Any other backend failure.
    #[error("store backend failed: {source}")]
    Backend {
        /// The backend's error.
        #[source]
        source: BoxError,
        /// Whether retrying may succeed.
        retryable: bool,
    },
}

impl StoreError {
    /// True if the same operation may succeed when retried later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable(_) | Self::Timeout | Self::SeqConflict { .. } => true,
            Self::Backend { retryable, .. } => *retryable,
            Self::Duplicate(_) | Self::NotFound(_) | Self::AlreadyExists(_) | Self::Rejected(_) => {
                false
            }
        }
    }

    /// Turns this error into one that can answer many requests, each with a
    /// copy of the same typed error (the backend's source is shared, not
    /// flattened to text).
    pub(crate) fn shared(self) -> SharedStoreError {
        SharedStoreError(Arc::new(self))
    }
}

/// One store error that answers every send of a failed batch. Each
/// [`SharedStoreError::copy`] keeps the variant, the retry flag and the
/// backend's source chain.
#[derive(Debug, Clone)]
pub(crate) struct SharedStoreError(Arc<StoreError>);

impl SharedStoreError {
    /// A copy of the error, as the same variant.
    pub(crate) fn copy(&self) -> StoreError {
        let shared = || -> BoxError { Box::new(SharedSource(self.0.clone())) };
        match &*self.0 {
            StoreError::Duplicate(keys) => StoreError::Duplicate(keys.clone()),
            StoreError::SeqConflict {
                conversation,
                expected,
                actual,
            } => StoreError::SeqConflict {
                conversation: conversation.clone(),
                expected: *expected,
                actual: *actual,
            },
            StoreError::NotFound(what) => StoreError::NotFound(what.clone()),
            StoreError::AlreadyExists(what) => StoreError::AlreadyExists(what.clone()),
            StoreError::Rejected(why) => StoreError::Rejected(why.clone()),
            StoreError::Timeout => StoreError::Timeout,
            StoreError::Unavailable(_) => StoreError::Unavailable(shared()),
            StoreError::Backend { retryable, .. } => StoreError::Backend {
                source: shared(),
                retryable: *retryable,
            },
        }
    }

    /// The error itself.
    pub(crate) fn get(&self) -> &StoreError {
        &self.0
    }
}

/// The source of a copied error: displays as the original backend error and
/// keeps its chain.
#[derive(Debug)]
struct SharedSource(Arc<StoreError>);

impl std::fmt::Display for SharedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            StoreError::Unavailable(source) | StoreError::Backend { source, .. } => {
                std::fmt::Display::fmt(source, f)
            }
            other => std::fmt::Display::fmt(other, f),
        }
    }
}

impl std::error::Error for SharedSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.0 {
            StoreError::Unavailable(source) | StoreError::Backend { source, .. } => source.source(),
            _ => None,
        }
    }
}

/// Why the authenticator refused a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token is not valid.
    #[error("invalid credentials: {0}")]
    InvalidToken(String),
    /// The authenticator could not decide (its backend failed).
    #[error("authenticator unavailable: {0}")]
    Unavailable(#[source] BoxError),
}

/// Errors of the host-facing engine API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An id was invalid.
    #[error(transparent)]
    InvalidId(#[from] crate::ids::IdError),
    /// The request is invalid (e.g. body too large, direct conversations have
    /// no member list).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The sender may not send into this conversation.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Too many requests.
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// A direct send between users where one blocked the other.
    #[error("blocked: {0}")]
    Blocked(String),
    /// The sender is muted in this group (not retryable).
    #[error("muted: {0}")]
    Muted(String),
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    ShuttingDown,
}

impl EngineError {
    /// True if the same request may succeed when retried later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            Self::RateLimited(_) => true,
            _ => false,
        }
    }
}

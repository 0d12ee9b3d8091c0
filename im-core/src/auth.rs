//! Authentication is the host application's: it decides who a connection is.

use std::net::SocketAddr;

use async_trait::async_trait;

use crate::error::AuthError;
use crate::ids::UserId;
use crate::pb::DeviceKind;

/// What a connecting client presented.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthRequest {
    /// The `Connect.token`.
    pub token: String,
    /// The `Connect.device_id`.
    pub device_id: String,
    /// The `Connect.device_kind`.
    pub device_kind: DeviceKind,
    /// Transport name (`"tcp"`, `"ws"`, …).
    pub transport: &'static str,
    /// The peer's address, if known.
    pub peer_addr: Option<SocketAddr>,
}

/// Decides who a connection is.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Returns the user the token belongs to, or why it was refused.
    async fn authenticate(&self, req: &AuthRequest) -> Result<UserId, AuthError>;
}

/// **For development only**: accepts any token of the form `user` or
/// `user:anything` and trusts it. Anyone can be anyone. Never ship it.
#[derive(Debug, Default, Clone, Copy)]
pub struct InsecureDevAuthenticator;

#[async_trait]
impl Authenticator for InsecureDevAuthenticator {
    async fn authenticate(&self, req: &AuthRequest) -> Result<UserId, AuthError> {
        let user = req.token.split(':').next().unwrap_or_default();
        UserId::new(user).map_err(|e| AuthError::InvalidToken(e.to_string()))
    }
}

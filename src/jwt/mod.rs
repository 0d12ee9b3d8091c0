//! Signed-token authentication (feature `jwt`): an [`Authenticator`] that
//! accepts JSON Web Tokens signed by the host's sign-in service.
//!
//! What a token must be to log in, each checked on every connect:
//!
//! - signed with **the one algorithm** configured (`alg` in the token's
//!   header must equal it: `none`, and any other algorithm, is refused, so
//!   a public key can never be used as an HMAC secret);
//! - signed with **the key** configured (an HMAC secret, or the issuer's
//!   public key for RS*/ES*/EdDSA);
//! - **not expired** (`exp` is required), and not used before `nbf` if it
//!   has one, within [`JwtConfig::leeway`] of clock skew;
//! - for **this audience** (`aud` is required and must name
//!   [`JwtConfig::audience`]), and from the configured issuer (`iss`) if
//!   one is set;
//! - naming the user in `sub` (a valid `UserId`).
//!
//! A refused token gets `Error{UNAUTHENTICATED}` with the reason (e.g.
//! "token expired") and the connection is closed.
//!
//! ```
//! use std::sync::Arc;
//! use im_engine::jwt::{Algorithm, DecodingKey, JwtAuthenticator, JwtConfig};
//!
//! // The sign-in service signs with its private Ed25519 key; the chat server
//! // holds only the public key.
//! # let public_pem = b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA2+Jj2UvNCvQiUPNYRgSi0cJSPiJI6Rs6D0UTeEpQVj8=\n-----END PUBLIC KEY-----\n";
//! let key = DecodingKey::from_ed_pem(public_pem).expect("a public key");
//! let auth = JwtAuthenticator::new(JwtConfig::new(key, Algorithm::EdDSA, "chat.example.com")
//!     .issuer("https://login.example.com"));
//! // Engine::builder(store).authenticator(Arc::new(auth))
//! # let _ = Arc::new(auth);
//! ```

use std::time::Duration;

use async_trait::async_trait;
use im_core::{AuthError, AuthRequest, Authenticator, UserId};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode};
use serde::Deserialize;

pub use jsonwebtoken::{Algorithm, DecodingKey};

/// What a [`JwtAuthenticator`] accepts. Build it with [`JwtConfig::new`].
#[derive(Clone)]
#[non_exhaustive]
pub struct JwtConfig {
    /// The key tokens are checked against.
    pub key: DecodingKey,
    /// The one algorithm accepted.
    pub algorithm: Algorithm,
    /// The audience a token must name in `aud` (e.g. the chat service's
    /// name).
    pub audience: String,
    /// The issuer a token must name in `iss`, if set.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`. Default 30 s.
    pub leeway: Duration,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

impl JwtConfig {
    /// Tokens signed with `key` by `algorithm`, for `audience`; no issuer
    /// check, 30 s of leeway.
    pub fn new(key: DecodingKey, algorithm: Algorithm, audience: impl Into<String>) -> Self {
        Self {
            key,
            algorithm,
            audience: audience.into(),
            issuer: None,
            leeway: Duration::from_secs(30),
        }
    }

    /// Also requires `iss` to be `issuer`.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Sets the clock skew allowed on `exp` and `nbf`.
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }
}

/// The claims read from a token (the others are checked by the validation).
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

/// Logs a connection in as the `sub` of a valid signed token.
#[derive(Debug)]
pub struct JwtAuthenticator {
    config: JwtConfig,
    validation: Validation,
}

impl JwtAuthenticator {
    /// An authenticator for `config`.
    pub fn new(config: JwtConfig) -> Self {
        let mut validation = Validation::new(config.algorithm);
        validation.leeway = config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_audience(&[&config.audience]);
        let mut required = vec!["exp", "aud", "sub"];
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Self { config, validation }
    }

    /// The user `token` logs in as, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        let data = decode::<Claims>(token, &self.config.key, &self.validation)
            .map_err(|e| AuthError::InvalidToken(self.reason(e.kind())))?;
        UserId::new(&data.claims.sub)
            .map_err(|e| AuthError::InvalidToken(format!("token subject: {e}")))
    }

    /// A reason a client (and its developer) can act on; never the token.
    fn reason(&self, kind: &ErrorKind) -> String {
        match kind {
            ErrorKind::ExpiredSignature => "token expired: sign in again".into(),
            ErrorKind::ImmatureSignature => "token not valid yet (nbf)".into(),
            ErrorKind::InvalidAudience => {
                format!(
                    "token is not for this service (aud must name {:?})",
                    self.config.audience
                )
            }
            ErrorKind::InvalidIssuer => "token is from another issuer".into(),
            ErrorKind::InvalidSignature => "token signature does not verify".into(),
            // `alg: none` (or any name jsonwebtoken does not know) fails to
            // parse as an `Algorithm`, the one enum of the header.
            ErrorKind::Json(e) if e.to_string().contains("unknown variant") => {
                format!(
                    "token algorithm not accepted (only {:?})",
                    self.config.algorithm
                )
            }
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                format!(
                    "token algorithm not accepted (only {:?})",
                    self.config.algorithm
                )
            }
            ErrorKind::MissingRequiredClaim(claim) => format!("token has no {claim:?} claim"),
            _ => "malformed token".into(),
        }
    }
}

#[async_trait]
impl Authenticator for JwtAuthenticator {
    async fn authenticate(&self, req: &AuthRequest) -> Result<UserId, AuthError> {
        self.verify(&req.token)
    }
}

#[cfg(test)]
mod tests;

//! TLS for the transports (feature `tls`): a rustls server configuration
//! from PEM files, for [`TcpServer::with_tls`](crate::transport_tcp::TcpServer)
//! and `WsServer::with_tls`.
//!
//! ```no_run
//! # async fn run(engine: im_engine::Engine) -> Result<(), Box<dyn std::error::Error>> {
//! use im_engine::transport_tcp::{TcpConfig, TcpServer};
//!
//! let tls = im_engine::tls::server_config_from_pem("cert.pem".as_ref(), "key.pem".as_ref())?;
//! TcpServer::bind("127.0.0.1:7443", TcpConfig::default())
//!     .await?
//!     .with_tls(tls)
//!     .serve(engine);
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The rustls the transports use, to build a [`rustls::ServerConfig`] by hand
/// (client certificates, ALPN, a certificate resolver).
pub use rustls;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS configuration could not be built; each names the file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} from {path}: {reason}")]
    Pem {
        /// `"certificate chain"` or `"private key"`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The certificate file holds no certificate.
    #[error("{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("the certificate {cert} and key {key} do not make a TLS configuration: {source}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
}

/// A server configuration (TLS 1.2 and 1.3, the `ring` provider, no client
/// certificates) from a PEM certificate chain (leaf first) and a PEM private
/// key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config_from_pem(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem {
            what: "certificate chain",
            path: cert.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
        what: "private key",
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    server_config(chain, private).map_err(|source| TlsError::Config {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    })
}

/// A server configuration from a certificate chain and key already in
/// memory (DER).
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

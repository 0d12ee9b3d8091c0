//! `--tls-cert` / `--tls-key` for the starter servers: TLS on their
//! listeners with a PEM certificate chain and key (feature `tls`).

use std::path::PathBuf;

/// The TLS flags.
#[derive(Debug, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain (leaf first): serve TLS with it (needs `--tls-key`).
    #[arg(long, env = "IM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "IM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// The server configuration the flags ask for, if any.
#[cfg(feature = "tls")]
pub type ServerTls = std::sync::Arc<im_engine::tls::rustls::ServerConfig>;
/// Without the `tls` feature there is no configuration to hold.
#[cfg(not(feature = "tls"))]
pub type ServerTls = std::convert::Infallible;

impl TlsArgs {
    /// Loads the certificate and key, or says why not (a missing file, a
    /// key that does not match, a build without TLS).
    pub fn load(&self) -> Result<Option<ServerTls>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        #[cfg(feature = "tls")]
        return im_engine::tls::server_config_from_pem(cert, key)
            .map(Some)
            .map_err(|e| e.to_string());
        #[cfg(not(feature = "tls"))]
        {
            let _ = (cert, key);
            Err(
                "--tls-cert / --tls-key are set, but this server was built without TLS: \
                 run it with `--features tls`"
                    .into(),
            )
        }
    }
}

//! Logging for the starter servers: to stderr (stdout stays for what a
//! script reads), coloured only when stderr is a terminal.

use std::io::IsTerminal;

/// Installs the subscriber; `RUST_LOG` overrides `default_filter`.
pub fn init(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

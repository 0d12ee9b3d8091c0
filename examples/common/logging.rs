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

/// The process's exit status for `result`: a failure is said plainly on
/// stderr after `name` (with what to do next, not as a Debug dump).
#[allow(dead_code)] // not every starter server uses it
pub fn exit_code(
    name: &str,
    result: Result<(), Box<dyn std::error::Error>>,
) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

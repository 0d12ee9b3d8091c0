//! Draining on the signals service managers stop processes with.
//!
//! systemd, Docker and Kubernetes stop a service with SIGTERM (and SIGKILL
//! once their grace period runs out); a terminal sends SIGINT on Ctrl-C. Both
//! kill a process at once unless it listens for them, which drops every
//! in-flight send unanswered. [`ShutdownSignal`] listens for both, and
//! [`shutdown_on_signal`] turns either into [`Engine::shutdown`]: stop
//! accepting, commit and ack what was already read, close every session with
//! `Kicked{SHUTDOWN}`.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use im_core::Engine;

/// Which signal asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// SIGTERM: how systemd, Docker and Kubernetes stop a service.
    Terminate,
    /// SIGINT on unix (Ctrl-C in a terminal); Ctrl-C on Windows.
    Interrupt,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Terminate => "SIGTERM",
            Self::Interrupt if cfg!(unix) => "SIGINT",
            Self::Interrupt => "Ctrl-C",
        })
    }
}

/// A future that completes when the process is asked to stop: SIGTERM or
/// SIGINT on unix, Ctrl-C on Windows.
///
/// The handlers are installed by [`ShutdownSignal::listen`], not when
/// the future is first polled: create it before the server starts accepting,
/// and a SIGTERM from then on drains instead of killing the process. Once
/// installed (even after this is dropped) these signals no longer stop the
/// process by themselves: await it, or the process only stops on SIGKILL.
///
/// ```no_run
/// # async fn host(engine: im_engine::Engine) -> std::io::Result<()> {
/// let stop = im_engine::ShutdownSignal::listen()?; // before accepting
/// // … bind transports and serve `engine` …
/// let signal = stop.await;
/// eprintln!("{signal}: draining");
/// engine.shutdown().await;
/// # Ok(()) }
/// ```
#[must_use = "the signals are caught only while this future is awaited"]
pub struct ShutdownSignal {
    /// SIGTERM.
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    /// SIGINT.
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    /// Ctrl-C, on Windows.
    #[cfg(windows)]
    ctrl_c: tokio::signal::windows::CtrlC,
}

impl ShutdownSignal {
    /// Starts listening for SIGTERM and SIGINT (Ctrl-C on Windows).
    ///
    /// Must be called within a Tokio runtime; fails if the signal handlers
    /// cannot be installed.
    pub fn listen() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(windows)]
        {
            Ok(Self {
                ctrl_c: tokio::signal::windows::ctrl_c()?,
            })
        }
    }
}

impl Future for ShutdownSignal {
    type Output = Signal;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Signal> {
        let this = self.get_mut();
        // `Ready(None)` means the runtime's signal driver is gone: no signal
        // can come any more, so the future just never completes.
        #[cfg(unix)]
        {
            if let Poll::Ready(Some(())) = this.terminate.poll_recv(cx) {
                return Poll::Ready(Signal::Terminate);
            }
            if let Poll::Ready(Some(())) = this.interrupt.poll_recv(cx) {
                return Poll::Ready(Signal::Interrupt);
            }
            Poll::Pending
        }
        #[cfg(windows)]
        {
            match this.ctrl_c.poll_recv(cx) {
                Poll::Ready(Some(())) => Poll::Ready(Signal::Interrupt),
                _ => Poll::Pending,
            }
        }
    }
}

impl fmt::Debug for ShutdownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownSignal").finish_non_exhaustive()
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl-C on Windows), then shuts the engine
/// down with [`Engine::shutdown`], which drains: it stops accepting, lets
/// every send already read commit and be acked, and closes every session
/// with `Kicked{SHUTDOWN}`. Returns the signal once the drain is done.
///
/// The one line a host needs after it starts serving:
///
/// ```no_run
/// # async fn host(engine: im_engine::Engine) -> std::io::Result<()> {
/// im_engine::shutdown_on_signal(&engine).await?;
/// # Ok(()) }
/// ```
///
/// The handlers are installed when this is first awaited; to also drain a
/// SIGTERM that arrives while the server is still starting, create a
/// [`ShutdownSignal`] before it starts accepting.
pub async fn shutdown_on_signal(engine: &Engine) -> io::Result<Signal> {
    let signal = ShutdownSignal::listen()?.await;
    engine.shutdown().await;
    Ok(signal)
}

//! A bounded HTTP endpoint for metrics (`GET /metrics`), for hosts that
//! expose Prometheus text next to the chat ports.
//!
//! A metrics port is reachable by anyone who can reach the server, so it is
//! bounded like the chat ports: at most `max_connections` at once (more are
//! closed at once), an idle timeout for the whole request, a cap on request
//! bytes, one response per connection, and an accept loop that backs off
//! and rate-limits its logs at the descriptor limit. A flood of half-sent
//! requests costs it at most `max_connections` sockets for `idle_timeout`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use im_engine::metrics_http::{MetricsHttp, MetricsLimits};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
//! let stop = tokio_util::sync::CancellationToken::new();
//! MetricsHttp::new(listener, || "im_sessions 0\n".to_owned())
//!     .limits(MetricsLimits::default())
//!     .spawn(stop);
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use im_core::log_limit::LogLimit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Limits of the metrics endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsLimits {
    /// Connections served at once; more are closed as soon as accepted
    /// (default 16: scrapers are few).
    pub max_connections: usize,
    /// Time a connection has to send its whole request (default 5 s).
    pub idle_timeout: Duration,
    /// Largest request accepted, headers included (default 8 KiB).
    pub max_request_bytes: usize,
}

impl Default for MetricsLimits {
    fn default() -> Self {
        Self {
            max_connections: 16,
            idle_timeout: Duration::from_secs(5),
            max_request_bytes: 8 * 1024,
        }
    }
}

/// Renders the metrics text (e.g. a Prometheus handle's `render`).
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The metrics endpoint, before it is started.
pub struct MetricsHttp {
    listener: TcpListener,
    render: Render,
    limits: MetricsLimits,
}

impl std::fmt::Debug for MetricsHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsHttp")
            .field("addr", &self.listener.local_addr().ok())
            .field("limits", &self.limits)
            .finish()
    }
}

impl MetricsHttp {
    /// Serves `render()`'s text at `GET /metrics` on `listener`.
    pub fn new(listener: TcpListener, render: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self {
            listener,
            render: Arc::new(render),
            limits: MetricsLimits::default(),
        }
    }

    /// Sets the limits.
    pub fn limits(mut self, limits: MetricsLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves on a task of its own until `stop` is cancelled.
    pub fn spawn(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.serve(stop))
    }

    /// Serves until `stop` is cancelled.
    pub async fn serve(self, stop: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.limits.max_connections.max(1)));
        let (render, limits) = (self.render, self.limits);
        im_core::transport::accept_until(&self.listener, &stop, |stream, _peer| {
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // Full: drop the socket at once rather than queue it.
                static FULL: LogLimit = LogLimit::per_second(1);
                metrics::counter!("im_metrics_http_refused_total").increment(1);
                if let Some(suppressed) = FULL.allow() {
                    tracing::warn!(suppressed, "metrics endpoint full: connection closed");
                }
                return;
            };
            let render = render.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(limits.idle_timeout, answer(stream, &render, limits))
                    .await;
                drop(slot);
            });
        })
        .await;
    }
}

/// Reads one request and answers it; the connection then closes.
async fn answer(mut stream: TcpStream, render: &Render, limits: MetricsLimits) {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let path = loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                break (req.method == Some("GET")).then(|| req.path.unwrap_or("").to_owned());
            }
            Ok(httparse::Status::Partial) if buf.len() < limits.max_request_bytes => continue,
            _ => {
                let _ = stream.write_all(&response("400 Bad Request", "")).await;
                return;
            }
        }
    };
    let reply = match path.as_deref().map(|p| p.split('?').next().unwrap_or(p)) {
        Some("/metrics") => response("200 OK", &render()),
        Some(_) => response("404 Not Found", ""),
        None => response("405 Method Not Allowed", ""),
    };
    let _ = stream.write_all(&reply).await;
    let _ = stream.shutdown().await;
}

fn response(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer to `request`, read until the server closes (a reset
    /// after a refused request ends it too).
    async fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let _ = s.write_all(request).await;
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = s.read(&mut chunk).await {
            out.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn half_sent_requests_cannot_hold_more_than_the_cap_and_time_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let limits = MetricsLimits {
            max_connections: 4,
            idle_timeout: Duration::from_millis(300),
            ..MetricsLimits::default()
        };
        let http = MetricsHttp::new(listener, || "im_up 1\n".to_owned()).limits(limits);
        let addr = http.local_addr().expect("addr");
        let stop = CancellationToken::new();
        http.spawn(stop.clone());

        assert!(
            get(addr, b"GET /metrics HTTP/1.1\r\n\r\n")
                .await
                .ends_with("im_up 1\n")
        );
        assert!(
            get(addr, b"GET /other HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 404")
        );

        // Slowloris: 20 half-sent requests. Past the cap they are closed at
        // once; the ones holding a slot are closed at the idle timeout.
        let mut slow = Vec::new();
        for _ in 0..20 {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(b"GET /metr").await.expect("write");
            slow.push(s);
        }
        for mut s in slow {
            let mut rest = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
            assert!(
                read.is_ok(),
                "a half-sent request was held past the idle timeout"
            );
        }
        // Slots are free again: an honest scrape is served.
        assert!(
            get(addr, b"GET /metrics HTTP/1.1\r\n\r\n")
                .await
                .ends_with("im_up 1\n")
        );

        let huge = [b"GET /metrics HTTP/1.1\r\nx: ".as_slice(), &[b'a'; 9000]].concat();
        assert!(get(addr, &huge).await.starts_with("HTTP/1.1 400"));
        stop.cancel();
    }
}

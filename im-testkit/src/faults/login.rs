//! Honest logins, timed: the yardstick of the handshake attacks.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use im_core::codec::encode_client_frame;
use im_core::pb::{self, client_frame::Body as In, server_frame::Body as Out};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

use super::{Latency, Tokens, bump, connect_from, counts, frame_name, framed, pick};

/// Honest clients that log in (TCP connect, `Connect`, `Connected`) and
/// hang up, `concurrency` at a time.
///
/// Bounded: `spread_over`, plus at most `logins / concurrency` rounds of
/// `connect_timeout + login_timeout` each; at most `concurrency` sockets at
/// once.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HonestLogins {
    /// Logins in all. Default 64.
    pub logins: usize,
    /// Logins in progress at once (and sockets held). Default 8.
    pub concurrency: usize,
    /// Local addresses the logins are made from, round robin (empty: the
    /// system picks). On Linux every 127.x.y.z reaches a server on
    /// 127.0.0.1, so each honest client can have its own address.
    pub from: Vec<IpAddr>,
    /// Longest a TCP connect may take. Default 5 s.
    pub connect_timeout: Duration,
    /// Longest from the connected socket to `Connected`. Default 10 s.
    pub login_timeout: Duration,
    /// Paces the logins: login `i` starts no earlier than `i / logins` of
    /// this after the first, so they sample the whole attack rather than
    /// its first moments (zero: as fast as `concurrency` allows). Default
    /// zero.
    pub spread_over: Duration,
}

impl Default for HonestLogins {
    fn default() -> Self {
        Self {
            logins: 64,
            concurrency: 8,
            from: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            login_timeout: Duration::from_secs(10),
            spread_over: Duration::ZERO,
        }
    }
}

impl HonestLogins {
    /// Sets [`HonestLogins::logins`].
    #[must_use]
    pub fn with_logins(mut self, n: usize) -> Self {
        self.logins = n;
        self
    }

    /// Sets [`HonestLogins::concurrency`].
    #[must_use]
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets [`HonestLogins::from`].
    #[must_use]
    pub fn with_from(mut self, addrs: Vec<IpAddr>) -> Self {
        self.from = addrs;
        self
    }

    /// Sets [`HonestLogins::spread_over`].
    #[must_use]
    pub fn with_spread_over(mut self, window: Duration) -> Self {
        self.spread_over = window;
        self
    }

    /// Sets [`HonestLogins::connect_timeout`] and
    /// [`HonestLogins::login_timeout`].
    #[must_use]
    pub fn with_timeouts(mut self, connect: Duration, login: Duration) -> Self {
        self.connect_timeout = connect;
        self.login_timeout = login;
        self
    }
}

/// What the honest logins measured.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LoginStats {
    /// Logins tried.
    pub attempted: usize,
    /// Logins answered `Connected` in time.
    pub succeeded: usize,
    /// Why the others failed, counted (`"UNAVAILABLE"`, `"timed out"`, …).
    pub failures: BTreeMap<String, usize>,
    /// Successful logins, from the start of the TCP connect to `Connected`.
    pub latency: Latency,
    /// The TCP connects of successful logins alone (a connect over a second
    /// is a SYN retransmission: the listener's accept queue overflowed,
    /// below the engine).
    pub connect_latency: Latency,
}

impl LoginStats {
    /// `succeeded / attempted` (1 when nothing was attempted).
    pub fn success_ratio(&self) -> f64 {
        if self.attempted == 0 {
            return 1.0;
        }
        self.succeeded as f64 / self.attempted as f64
    }
}

impl fmt::Display for LoginStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} honest logins ({:.1} %); login {}; connect {}; failures: {}",
            self.succeeded,
            self.attempted,
            self.success_ratio() * 100.0,
            self.latency,
            self.connect_latency,
            counts(&self.failures),
        )
    }
}

/// Runs the honest logins as users `{prefix}{i}`.
pub(crate) async fn run_logins(
    addr: SocketAddr,
    tokens: Tokens,
    prefix: &str,
    cfg: &HonestLogins,
) -> LoginStats {
    let next = Arc::new(AtomicUsize::new(0));
    let start = tokio::time::Instant::now();
    let cfg = Arc::new(cfg.clone());
    let mut workers = JoinSet::new();
    for _ in 0..cfg.concurrency.max(1).min(cfg.logins.max(1)) {
        let (next, cfg, tokens, prefix) =
            (next.clone(), cfg.clone(), tokens.clone(), prefix.to_owned());
        workers.spawn(async move {
            let mut results = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cfg.logins {
                    return results;
                }
                // Pacing, not synchronisation: spread the logins out.
                let offset = cfg.spread_over.mul_f64(i as f64 / cfg.logins as f64);
                tokio::time::sleep_until(start + offset).await;
                let user = format!("{prefix}{i}");
                results.push(login(addr, pick(&cfg.from, i), &tokens(&user), &cfg).await);
            }
        });
    }
    let mut stats = LoginStats::default();
    let (mut total, mut connect) = (Vec::new(), Vec::new());
    while let Some(done) = workers.join_next().await {
        for r in done.expect("honest login worker") {
            stats.attempted += 1;
            match r {
                Ok((t, c)) => {
                    stats.succeeded += 1;
                    total.push(t);
                    connect.push(c);
                }
                Err(why) => bump(&mut stats.failures, why),
            }
        }
    }
    stats.latency = Latency::of(total);
    stats.connect_latency = Latency::of(connect);
    stats
}

/// One login: `(whole login, TCP connect)` or why it failed.
async fn login(
    addr: SocketAddr,
    from: Option<IpAddr>,
    token: &str,
    cfg: &HonestLogins,
) -> Result<(Duration, Duration), String> {
    let started = Instant::now();
    let mut s = tokio::time::timeout(cfg.connect_timeout, connect_from(from, addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {:?}", e.kind()))?;
    let connected = started.elapsed();
    let frame = encode_client_frame(&pb::ClientFrame {
        request_id: 1,
        body: Some(In::Connect(pb::Connect {
            token: token.to_owned(),
            device_id: "faults".to_owned(),
            device_kind: pb::DeviceKind::Desktop as i32,
            inbox_version: 0,
            client_info: "im-testkit faults".to_owned(),
            push_acks: false,
        })),
    });
    let answer = tokio::time::timeout(cfg.login_timeout, async {
        s.write_all(&framed(&frame))
            .await
            .map_err(|e| super::io_name("write", &e))?;
        super::read_server_frame(&mut s).await
    })
    .await
    .map_err(|_| "login timed out".to_owned())??;
    match answer.body {
        Some(Out::Connected(_)) => Ok((started.elapsed(), connected)),
        _ => Err(frame_name(&answer)),
    }
}

//! The handshake attacks: slowloris (trickled logins) and connection floods
//! (silent sockets), each measured by honest logins made meanwhile.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use im_core::codec::{decode_server_frame, encode_client_frame};
use im_core::pb::{self, client_frame::Body as In};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::login::{HonestLogins, LoginStats, run_logins};
use super::{
    Latency, Tokens, bump, connect_from, counts, default_prefix, frame_name, framed, pick,
};

// ------------------------------------------------------------ slowloris

/// Settings of [`slowloris`].
///
/// Sockets: `attackers + honest.concurrency` at most (each attacker holds
/// one socket at a time, reconnecting when dropped). Time: at most
/// `setup_timeout` for the attack to get in place, then the honest logins
/// (see [`HonestLogins`]), then the attackers stop at once.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SlowlorisConfig {
    /// Prefix of the honest users' ids.
    pub user_prefix: String,
    /// Attacking sockets. Default 256.
    pub attackers: usize,
    /// Local addresses the attackers connect from, round robin (empty: the
    /// system picks, usually one address: the per-address limit case).
    pub attacker_from: Vec<IpAddr>,
    /// An attacker sends one byte per this. Default 200 ms.
    pub trickle_every: Duration,
    /// Size of the `Connect` frame trickled (padded with `client_info`);
    /// at one byte per `trickle_every` it must outlast the deployment's
    /// handshake timeout. Default 1 KiB (over 3 minutes at 200 ms).
    pub frame_bytes: usize,
    /// Longest wait for every attacker to have connected once. Default 10 s.
    pub setup_timeout: Duration,
    /// The honest logins made under attack.
    pub honest: HonestLogins,
    /// Share of honest logins that must succeed. Default 0.95.
    pub min_success_ratio: f64,
    /// Slowest p99 honest login allowed (`None`: not checked).
    pub max_login_p99: Option<Duration>,
}

impl Default for SlowlorisConfig {
    fn default() -> Self {
        Self {
            user_prefix: default_prefix("slowloris"),
            attackers: 256,
            attacker_from: Vec::new(),
            trickle_every: Duration::from_millis(200),
            frame_bytes: 1024,
            setup_timeout: Duration::from_secs(10),
            honest: HonestLogins::default(),
            min_success_ratio: 0.95,
            max_login_p99: None,
        }
    }
}

impl SlowlorisConfig {
    /// Sets [`SlowlorisConfig::attackers`].
    #[must_use]
    pub fn with_attackers(mut self, n: usize) -> Self {
        self.attackers = n;
        self
    }

    /// Sets [`SlowlorisConfig::attacker_from`].
    #[must_use]
    pub fn with_attacker_from(mut self, addrs: Vec<IpAddr>) -> Self {
        self.attacker_from = addrs;
        self
    }

    /// Sets [`SlowlorisConfig::trickle_every`].
    #[must_use]
    pub fn with_trickle_every(mut self, every: Duration) -> Self {
        self.trickle_every = every;
        self
    }

    /// Sets [`SlowlorisConfig::honest`].
    #[must_use]
    pub fn with_honest(mut self, honest: HonestLogins) -> Self {
        self.honest = honest;
        self
    }

    /// Sets [`SlowlorisConfig::min_success_ratio`].
    #[must_use]
    pub fn with_min_success_ratio(mut self, ratio: f64) -> Self {
        self.min_success_ratio = ratio;
        self
    }

    /// Sets [`SlowlorisConfig::max_login_p99`].
    #[must_use]
    pub fn with_max_login_p99(mut self, max: Option<Duration>) -> Self {
        self.max_login_p99 = max;
        self
    }
}

/// What [`slowloris`] measured.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SlowlorisReport {
    /// Attacking sockets.
    pub attackers: usize,
    /// Attackers that connected at least once before the honest logins
    /// started (all of them unless `setup_timeout` ran out).
    pub attackers_in_place: usize,
    /// Attacker connects, reconnects included.
    pub attacker_connects: usize,
    /// Attacker connects that failed (refused, timed out, no port).
    pub attacker_connect_failures: usize,
    /// Attacker sockets the server dropped (closed, reset, or answered).
    pub attacker_dropped: usize,
    /// What the server said or did when it dropped one, counted
    /// (`"UNAVAILABLE"`, `"NOT_CONNECTED"`, `"closed"`, …).
    pub attacker_drops_by: BTreeMap<String, usize>,
    /// How long an attacker socket lasted before the server dropped it.
    pub attacker_lifetime: Latency,
    /// Attackers that trickled their whole frame without being dropped.
    pub attacker_frames_completed: usize,
    /// The honest logins made under attack.
    pub honest: LoginStats,
    /// The whole run.
    pub elapsed: Duration,
    /// Threshold checked: share of honest logins.
    pub min_success_ratio: f64,
    /// Threshold checked: p99 honest login.
    pub max_login_p99: Option<Duration>,
}

impl SlowlorisReport {
    /// What missed its threshold (empty: passed).
    pub fn failures(&self) -> Vec<String> {
        login_failures(&self.honest, self.min_success_ratio, self.max_login_p99)
    }

    /// Panics with the report and what missed its threshold.
    pub fn check(&self) {
        if !self.failures().is_empty() {
            panic!("slowloris failed: {}\n{self}", self.failures().join("; "));
        }
    }
}

impl fmt::Display for SlowlorisReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "slowloris ({:.1?}):", self.elapsed)?;
        writeln!(f, "  honest: {}", self.honest)?;
        writeln!(
            f,
            "  attackers: {} ({} in place), {} connects ({} failed), {} dropped by the server \
             ({}), lived {}, {} whole frames sent",
            self.attackers,
            self.attackers_in_place,
            self.attacker_connects,
            self.attacker_connect_failures,
            self.attacker_dropped,
            counts(&self.attacker_drops_by),
            self.attacker_lifetime,
            self.attacker_frames_completed,
        )?;
        write!(f, "  verdict: {}", verdict(&self.failures()))
    }
}

/// Slowloris: `attackers` sockets each trickle a `Connect` frame one byte
/// per `trickle_every` and reconnect as soon as the server drops them,
/// while honest clients log in; measures the honest logins (success ratio,
/// latency) and how the server dropped the attackers.
///
/// The attack is in place (every attacker connected once, bounded by
/// `setup_timeout`) before the first honest login. Fds: `attackers +
/// honest.concurrency`.
pub async fn slowloris(
    addr: SocketAddr,
    tokens: impl Fn(&str) -> String + Send + Sync + 'static,
    cfg: SlowlorisConfig,
) -> SlowlorisReport {
    let tokens: Tokens = Arc::new(tokens);
    let started = Instant::now();
    let frame = trickle_frame(&cfg.user_prefix, cfg.frame_bytes, &tokens);
    let counts = Arc::new(AttackCounts::default());
    let (stop, stopped) = watch::channel(false);
    let mut attackers = JoinSet::new();
    let frame = Arc::new(frame);
    for i in 0..cfg.attackers {
        attackers.spawn(attacker(
            pick(&cfg.attacker_from, i),
            addr,
            frame.clone(),
            cfg.trickle_every,
            stopped.clone(),
            counts.clone(),
        ));
    }
    // In place: every attacker connected once (bounded).
    let _ = tokio::time::timeout(cfg.setup_timeout, async {
        loop {
            let changed = counts.changed.notified();
            if counts.started.load(Ordering::SeqCst) >= cfg.attackers {
                return;
            }
            changed.await;
        }
    })
    .await;
    let attackers_in_place = counts.started.load(Ordering::SeqCst);

    let honest = run_logins(
        addr,
        tokens,
        &format!("{}-honest-", cfg.user_prefix),
        &cfg.honest,
    )
    .await;

    stop.send_replace(true);
    let mut lifetimes = Vec::new();
    let mut drops_by = BTreeMap::new();
    while let Some(done) = attackers.join_next().await {
        let log = done.expect("attacker task");
        lifetimes.extend(log.lifetimes);
        for (k, n) in log.drops_by {
            *drops_by.entry(k).or_default() += n;
        }
    }
    SlowlorisReport {
        attackers: cfg.attackers,
        attackers_in_place,
        attacker_connects: counts.connects.load(Ordering::SeqCst),
        attacker_connect_failures: counts.connect_failures.load(Ordering::SeqCst),
        attacker_dropped: lifetimes.len(),
        attacker_drops_by: drops_by,
        attacker_lifetime: Latency::of(lifetimes),
        attacker_frames_completed: counts.completed.load(Ordering::SeqCst),
        honest,
        elapsed: started.elapsed(),
        min_success_ratio: cfg.min_success_ratio,
        max_login_p99: cfg.max_login_p99,
    }
}

/// A length-prefixed `Connect` frame padded to about `bytes` bytes.
fn trickle_frame(prefix: &str, bytes: usize, tokens: &Tokens) -> Vec<u8> {
    let mut connect = pb::Connect {
        token: tokens(&format!("{prefix}-attacker")),
        device_id: "slowloris".to_owned(),
        device_kind: pb::DeviceKind::Desktop as i32,
        inbox_version: 0,
        client_info: String::new(),
        push_acks: false,
        ..Default::default()
    };
    let base = encode_client_frame(&pb::ClientFrame {
        request_id: 1,
        body: Some(In::Connect(connect.clone())),
    })
    .len();
    connect.client_info = "s".repeat(bytes.saturating_sub(base + 4));
    framed(&encode_client_frame(&pb::ClientFrame {
        request_id: 1,
        body: Some(In::Connect(connect)),
    }))
}

#[derive(Default)]
struct AttackCounts {
    /// Attackers that connected at least once.
    started: AtomicUsize,
    connects: AtomicUsize,
    connect_failures: AtomicUsize,
    completed: AtomicUsize,
    changed: Notify,
}

#[derive(Default)]
struct AttackerLog {
    lifetimes: Vec<Duration>,
    drops_by: BTreeMap<String, usize>,
}

/// One attacker: connect, trickle, and reconnect when dropped, until
/// stopped.
async fn attacker(
    from: Option<IpAddr>,
    server: SocketAddr,
    frame: Arc<Vec<u8>>,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
    counts: Arc<AttackCounts>,
) -> AttackerLog {
    let mut log = AttackerLog::default();
    let mut first = true;
    while !*stopped.borrow() {
        let connected = tokio::select! {
            _ = stopped.changed() => return log,
            c = tokio::time::timeout(Duration::from_secs(5), connect_from(from, server)) => c,
        };
        let Ok(Ok(mut s)) = connected else {
            counts.connect_failures.fetch_add(1, Ordering::SeqCst);
            // Paced: no port, or the server is not accepting.
            tokio::select! {
                _ = stopped.changed() => return log,
                _ = tokio::time::sleep(every) => continue,
            }
        };
        let since = Instant::now();
        counts.connects.fetch_add(1, Ordering::SeqCst);
        if first {
            first = false;
            counts.started.fetch_add(1, Ordering::SeqCst);
            counts.changed.notify_waiters();
        }
        let mut dropped_by = None;
        for b in frame.iter() {
            if let Err(e) = s.write_all(&[*b]).await {
                dropped_by = Some(super::io_name("write", &e));
                break;
            }
            // The trickle's pace; anything the server says, or its close,
            // means this socket was dropped.
            tokio::select! {
                _ = stopped.changed() => return log,
                r = tokio::time::timeout(every, first_word(&mut s)) => {
                    if let Ok(why) = r {
                        dropped_by = Some(why);
                        break;
                    }
                }
            }
        }
        match dropped_by {
            Some(why) => {
                log.lifetimes.push(since.elapsed());
                super::bump(&mut log.drops_by, why);
            }
            None => {
                counts.completed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    log
}

/// Waits for the server's first word on a socket that sent it nothing
/// complete: the error it answered with, or how the socket closed.
async fn first_word(s: &mut TcpStream) -> String {
    let mut buf = Vec::with_capacity(512);
    loop {
        let mut chunk = [0u8; 512];
        match s.read(&mut chunk).await {
            Ok(0) if buf.is_empty() => return "closed".to_owned(),
            Ok(0) => return "closed mid-frame".to_owned(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if buf.is_empty() => return super::io_name("read", &e),
            Err(_) => return "reset mid-frame".to_owned(),
        }
        if buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() >= 4 + len {
                return decode_server_frame(&buf[4..4 + len])
                    .map_or_else(|_| "undecodable frame".to_owned(), |f| frame_name(&f));
            }
            if len > 64 * 1024 {
                return "huge frame".to_owned();
            }
        }
    }
}

// ------------------------------------------------------------ flood

/// Settings of [`connection_flood`].
///
/// Sockets: `sockets + honest.concurrency` at most. Time: the flood's
/// connects (`connect_timeout` each, all at once), the honest logins (see
/// [`HonestLogins`]), then at most `hold_for` from each flood socket's
/// connect for the server to close it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionFloodConfig {
    /// Prefix of the honest users' ids.
    pub user_prefix: String,
    /// Flood sockets: each completes the TCP handshake and sends nothing.
    /// Default 256.
    pub sockets: usize,
    /// Local addresses the flood connects from, round robin (empty: the
    /// system picks).
    pub from: Vec<IpAddr>,
    /// Longest a flood socket's TCP connect may take. Default 5 s.
    pub connect_timeout: Duration,
    /// Longest a flood socket waits, from its connect, for the server to
    /// close it; keep it above the deployment's handshake timeout (the
    /// engine's default is 10 s). Default 15 s.
    pub hold_for: Duration,
    /// The honest logins made during the flood.
    pub honest: HonestLogins,
    /// Share of honest logins that must succeed. Default 0.95.
    pub min_success_ratio: f64,
    /// Slowest p99 honest login allowed (`None`: not checked).
    pub max_login_p99: Option<Duration>,
    /// Every connected flood socket must be closed by the server within
    /// this of its connect (`None`: not checked). Set it to the
    /// deployment's handshake timeout plus a margin.
    pub max_close_after: Option<Duration>,
}

impl Default for ConnectionFloodConfig {
    fn default() -> Self {
        Self {
            user_prefix: default_prefix("flood"),
            sockets: 256,
            from: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            hold_for: Duration::from_secs(15),
            honest: HonestLogins::default(),
            min_success_ratio: 0.95,
            max_login_p99: None,
            max_close_after: None,
        }
    }
}

impl ConnectionFloodConfig {
    /// Sets [`ConnectionFloodConfig::sockets`].
    #[must_use]
    pub fn with_sockets(mut self, n: usize) -> Self {
        self.sockets = n;
        self
    }

    /// Sets [`ConnectionFloodConfig::from`].
    #[must_use]
    pub fn with_from(mut self, addrs: Vec<IpAddr>) -> Self {
        self.from = addrs;
        self
    }

    /// Sets [`ConnectionFloodConfig::hold_for`].
    #[must_use]
    pub fn with_hold_for(mut self, hold: Duration) -> Self {
        self.hold_for = hold;
        self
    }

    /// Sets [`ConnectionFloodConfig::honest`].
    #[must_use]
    pub fn with_honest(mut self, honest: HonestLogins) -> Self {
        self.honest = honest;
        self
    }

    /// Sets [`ConnectionFloodConfig::min_success_ratio`].
    #[must_use]
    pub fn with_min_success_ratio(mut self, ratio: f64) -> Self {
        self.min_success_ratio = ratio;
        self
    }

    /// Sets [`ConnectionFloodConfig::max_login_p99`].
    #[must_use]
    pub fn with_max_login_p99(mut self, max: Option<Duration>) -> Self {
        self.max_login_p99 = max;
        self
    }

    /// Sets [`ConnectionFloodConfig::max_close_after`].
    #[must_use]
    pub fn with_max_close_after(mut self, max: Option<Duration>) -> Self {
        self.max_close_after = max;
        self
    }
}

/// What [`connection_flood`] measured.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionFloodReport {
    /// Flood sockets.
    pub sockets: usize,
    /// Flood sockets that connected.
    pub connected: usize,
    /// Flood sockets whose connect failed, counted by why.
    pub connect_failures: BTreeMap<String, usize>,
    /// Flood sockets the server closed (or answered) within `hold_for`.
    pub closed_by_server: usize,
    /// Flood sockets still open after `hold_for` (the test closed them).
    pub still_open: usize,
    /// How the server closed them (`"UNAVAILABLE"`: refused or evicted
    /// with an answer; `"NOT_CONNECTED"`: the handshake timeout; `"closed"`:
    /// no answer), each with when, from the socket's connect.
    pub closed_by: BTreeMap<String, Latency>,
    /// When the server closed them, all together.
    pub close_after: Latency,
    /// The honest logins made during the flood.
    pub honest: LoginStats,
    /// The whole run.
    pub elapsed: Duration,
    /// Threshold checked: share of honest logins.
    pub min_success_ratio: f64,
    /// Threshold checked: p99 honest login.
    pub max_login_p99: Option<Duration>,
    /// Threshold checked: every flood socket closed within this.
    pub max_close_after: Option<Duration>,
}

impl ConnectionFloodReport {
    /// What missed its threshold (empty: passed).
    pub fn failures(&self) -> Vec<String> {
        let mut out = login_failures(&self.honest, self.min_success_ratio, self.max_login_p99);
        if let Some(max) = self.max_close_after {
            if self.still_open > 0 {
                out.push(format!(
                    "{} flood sockets were still open after {max:?} or more",
                    self.still_open
                ));
            }
            if self.close_after.max > max {
                out.push(format!(
                    "a flood socket was closed only after {:?} (max {max:?})",
                    self.close_after.max
                ));
            }
        }
        out
    }

    /// Panics with the report and what missed its threshold.
    pub fn check(&self) {
        if !self.failures().is_empty() {
            panic!(
                "connection flood failed: {}\n{self}",
                self.failures().join("; ")
            );
        }
    }
}

impl fmt::Display for ConnectionFloodReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "connection flood ({:.1?}):", self.elapsed)?;
        writeln!(f, "  honest: {}", self.honest)?;
        writeln!(
            f,
            "  flood: {} sockets, {} connected (failures: {}), {} closed by the server, {} still open",
            self.sockets,
            self.connected,
            counts(&self.connect_failures),
            self.closed_by_server,
            self.still_open,
        )?;
        writeln!(f, "  closed after: {}", self.close_after)?;
        for (how, when) in &self.closed_by {
            writeln!(f, "    {how}: {when}")?;
        }
        write!(f, "  verdict: {}", verdict(&self.failures()))
    }
}

/// Connection flood: `sockets` sockets complete the TCP handshake and send
/// nothing, while honest clients log in; measures the honest logins and
/// when and how the server closed each flood socket (a refusal at once, an
/// eviction, or the handshake timeout).
///
/// Every flood socket has connected (or failed to) before the first
/// honest login. Fds: `sockets + honest.concurrency`.
pub async fn connection_flood(
    addr: SocketAddr,
    tokens: impl Fn(&str) -> String + Send + Sync + 'static,
    cfg: ConnectionFloodConfig,
) -> ConnectionFloodReport {
    let tokens: Tokens = Arc::new(tokens);
    let started = Instant::now();
    let settled = Arc::new((AtomicUsize::new(0), Notify::new()));
    let mut flood = JoinSet::new();
    for i in 0..cfg.sockets {
        let (from, settled) = (pick(&cfg.from, i), settled.clone());
        let (connect_timeout, hold_for) = (cfg.connect_timeout, cfg.hold_for);
        flood.spawn(async move {
            let connected = tokio::time::timeout(connect_timeout, connect_from(from, addr)).await;
            settled.0.fetch_add(1, Ordering::SeqCst);
            settled.1.notify_waiters();
            let mut s = match connected {
                Err(_) => return Flooded::ConnectFailed("timed out".to_owned()),
                Ok(Err(e)) => return Flooded::ConnectFailed(format!("{:?}", e.kind())),
                Ok(Ok(s)) => s,
            };
            let since = Instant::now();
            match tokio::time::timeout(hold_for, first_word(&mut s)).await {
                Ok(how) => Flooded::Closed(how, since.elapsed()),
                Err(_) => Flooded::StillOpen,
            }
        });
    }
    // Every flood socket connected or failed (each bounded by its timeout).
    loop {
        let changed = settled.1.notified();
        if settled.0.load(Ordering::SeqCst) >= cfg.sockets {
            break;
        }
        changed.await;
    }

    let honest = run_logins(
        addr,
        tokens,
        &format!("{}-honest-", cfg.user_prefix),
        &cfg.honest,
    )
    .await;

    let mut report = ConnectionFloodReport {
        sockets: cfg.sockets,
        connected: 0,
        connect_failures: BTreeMap::new(),
        closed_by_server: 0,
        still_open: 0,
        closed_by: BTreeMap::new(),
        close_after: Latency::default(),
        honest,
        elapsed: Duration::ZERO,
        min_success_ratio: cfg.min_success_ratio,
        max_login_p99: cfg.max_login_p99,
        max_close_after: cfg.max_close_after,
    };
    let mut by: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    while let Some(done) = flood.join_next().await {
        match done.expect("flood socket task") {
            Flooded::ConnectFailed(why) => bump(&mut report.connect_failures, why),
            Flooded::Closed(how, after) => {
                report.connected += 1;
                report.closed_by_server += 1;
                by.entry(how).or_default().push(after);
            }
            Flooded::StillOpen => {
                report.connected += 1;
                report.still_open += 1;
            }
        }
    }
    report.close_after = Latency::of(by.values().flatten().copied().collect());
    report.closed_by = by.into_iter().map(|(k, v)| (k, Latency::of(v))).collect();
    report.elapsed = started.elapsed();
    report
}

enum Flooded {
    ConnectFailed(String),
    Closed(String, Duration),
    StillOpen,
}

// ------------------------------------------------------------ shared

fn login_failures(honest: &LoginStats, min_ratio: f64, max_p99: Option<Duration>) -> Vec<String> {
    let mut out = Vec::new();
    if honest.success_ratio() < min_ratio {
        out.push(format!(
            "only {} of {} honest logins succeeded ({:.1} % < {:.1} %)",
            honest.succeeded,
            honest.attempted,
            honest.success_ratio() * 100.0,
            min_ratio * 100.0
        ));
    }
    if let Some(max) = max_p99
        && honest.latency.p99 > max
    {
        out.push(format!(
            "p99 honest login {:?} > {max:?}",
            honest.latency.p99
        ));
    }
    out
}

pub(crate) fn verdict(failures: &[String]) -> String {
    if failures.is_empty() {
        "PASS".to_owned()
    } else {
        format!("FAIL: {}", failures.join("; "))
    }
}

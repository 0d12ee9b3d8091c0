//! A fault suite an integrator points at a running deployment: what the
//! engine does when a client (or anyone who can reach its TCP port)
//! misbehaves, with the numbers it measured.
//!
//! Each function takes the deployment's TCP address (the engine's TCP
//! protocol: a 4-byte big-endian length, then a protobuf `ClientFrame` /
//! `ServerFrame`), a **token maker** (`user id -> token` for your
//! authenticator; `|u| u.to_owned()` for `insecure_dev_auth`) and a config
//! whose defaults are modest, and returns a report. A report prints its
//! numbers (`Display`), lists what missed its thresholds
//! ([`PoisonedBatchReport::failures`], …) and has a `check()` that panics
//! with the report and the failures:
//!
//! | function | what it does | sockets (fds) it holds at most |
//! |---|---|---|
//! | [`poisoned_batch`] | poisoned sends (control characters in `client_msg_id`, oversize ids and bodies, an oversize frame) interleaved with many honest sends into the same direct chats | `honest_users + 2` |
//! | [`slowloris`] | sockets that trickle a `Connect` frame a byte at a time and reconnect when dropped, while honest clients log in | `attackers + honest.concurrency` |
//! | [`connection_flood`] | sockets that connect and send nothing, while honest clients log in; when and how the server closes them | `sockets + honest.concurrency` |
//! | [`memory_bounds`] | `messages` sends of `body_bytes` bytes as one user, then a pull of every conversation from the start and a sync from version 0: whatever the store dropped must be flagged | `1` |
//!
//! Every wait is bounded (each config says by what); nothing sleeps to
//! synchronise. The users each run creates are named after
//! `user_prefix`, unique per config by default, so runs against a
//! long-lived deployment do not mix.
//!
//! ```no_run
//! # async fn demo(addr: std::net::SocketAddr) {
//! use im_testkit::faults::{self, SlowlorisConfig};
//!
//! let tokens = |user: &str| format!("{user}:faults"); // your authenticator's tokens
//! let report = faults::slowloris(addr, tokens, SlowlorisConfig::default()).await;
//! eprintln!("{report}");
//! report.check();
//! # }
//! ```

mod login;
mod memory;
mod poisoned;
mod siege;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use im_core::pb;
use im_transport_tcp::client::ClientError;
use tokio::net::{TcpSocket, TcpStream};

pub use login::{HonestLogins, LoginStats};
pub use memory::{ConversationRetention, MemoryBoundsConfig, MemoryBoundsReport, memory_bounds};
pub use poisoned::{PoisonOutcome, PoisonedBatchConfig, PoisonedBatchReport, poisoned_batch};
pub use siege::{
    ConnectionFloodConfig, ConnectionFloodReport, SlowlorisConfig, SlowlorisReport,
    connection_flood, slowloris,
};

/// Makes the token a user logs in with.
pub(crate) type Tokens = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Largest frame read from the server by the raw sockets of the suite.
const MAX_SERVER_FRAME: usize = 16 * 1024 * 1024;

/// A user prefix unique to this process and moment, so runs against one
/// deployment do not share conversations.
pub(crate) fn default_prefix(what: &str) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("faults-{ms:x}-{}-{what}", std::process::id())
}

/// Percentiles of a set of durations (nearest rank).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    /// How many durations.
    pub samples: usize,
    /// Shortest.
    pub min: Duration,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Longest.
    pub max: Duration,
}

impl Latency {
    /// The percentiles of `samples` (all zero when empty).
    pub fn of(mut samples: Vec<Duration>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let rank = |p: f64| samples[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Self {
            samples: n,
            min: samples[0],
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples[n - 1],
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.samples == 0 {
            return f.write_str("no samples");
        }
        write!(
            f,
            "min {:.1?}, p50 {:.1?}, p99 {:.1?}, max {:.1?} (n={})",
            self.min, self.p50, self.p99, self.max, self.samples
        )
    }
}

/// `"INVALID_ARGUMENT"` for `ERROR_CODE_INVALID_ARGUMENT`.
pub(crate) fn code_name(code: i32) -> String {
    pb::ErrorCode::try_from(code).map_or_else(
        |_| format!("code {code}"),
        |c| c.as_str_name().trim_start_matches("ERROR_CODE_").to_owned(),
    )
}

/// A short name for what a client call failed with, to count by.
pub(crate) fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Server(e) => code_name(e.code),
        ClientError::Io(e) => format!("io: {:?}", e.kind()),
        ClientError::Closed => "connection closed".to_owned(),
        ClientError::Timeout => "timed out".to_owned(),
        ClientError::Unexpected(_) => "unexpected answer".to_owned(),
        _ => "other client error".to_owned(),
    }
}

/// Counts `key` in `map`.
pub(crate) fn bump(map: &mut BTreeMap<String, usize>, key: impl Into<String>) {
    *map.entry(key.into()).or_default() += 1;
}

/// `"A: 3, B: 1"`, or `"none"`.
pub(crate) fn counts(map: &BTreeMap<String, usize>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A socket to `to`, bound to `from` if given (e.g. 127.0.0.2 on Linux
/// loopback, to exercise per-address limits).
pub(crate) async fn connect_from(from: Option<IpAddr>, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = if to.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// `addrs[i % len]`, or `None` (the system picks) when `addrs` is empty.
pub(crate) fn pick(addrs: &[IpAddr], i: usize) -> Option<IpAddr> {
    (!addrs.is_empty()).then(|| addrs[i % addrs.len()])
}

/// `payload` with its 4-byte big-endian length in front.
pub(crate) fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads one length-prefixed server frame.
pub(crate) async fn read_server_frame(s: &mut TcpStream) -> Result<pb::ServerFrame, String> {
    use tokio::io::AsyncReadExt;
    let len = s.read_u32().await.map_err(|e| io_name("no answer", &e))? as usize;
    if len > MAX_SERVER_FRAME {
        return Err(format!("server announced a {len}-byte frame"));
    }
    let mut frame = vec![0; len];
    s.read_exact(&mut frame)
        .await
        .map_err(|e| io_name("cut answer", &e))?;
    im_core::codec::decode_server_frame(&frame).map_err(|_| "undecodable answer".to_owned())
}

/// `"what: closed"` for an EOF, `"what: ConnectionReset"` otherwise.
pub(crate) fn io_name(what: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => format!("{what}: closed"),
        kind => format!("{what}: {kind:?}"),
    }
}

/// What a server frame says, to count by: the error code, or the body kind.
pub(crate) fn frame_name(frame: &pb::ServerFrame) -> String {
    use pb::server_frame::Body as Out;
    match &frame.body {
        Some(Out::Error(e)) => code_name(e.code),
        Some(Out::Kicked(k)) => format!(
            "Kicked {}",
            pb::KickReason::try_from(k.reason).map_or("?", |r| r.as_str_name())
        ),
        Some(Out::Connected(_)) => "Connected".to_owned(),
        Some(_) => "another frame".to_owned(),
        None => "empty frame".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_are_nearest_rank() {
        let ms = |n: u64| Duration::from_millis(n);
        let l = Latency::of((1..=100).rev().map(ms).collect());
        assert_eq!(
            (l.samples, l.min, l.p50, l.p99, l.max),
            (100, ms(1), ms(50), ms(99), ms(100))
        );
        let one = Latency::of(vec![ms(7)]);
        assert_eq!((one.p50, one.p99), (ms(7), ms(7)));
        assert_eq!(Latency::of(Vec::new()), Latency::default());
    }

    #[test]
    fn code_names_drop_the_prefix() {
        assert_eq!(
            code_name(pb::ErrorCode::InvalidArgument as i32),
            "INVALID_ARGUMENT"
        );
        assert_eq!(code_name(999), "code 999");
    }

    #[test]
    fn a_poison_that_was_acked_or_a_lost_send_fails_the_batch() {
        let mut r = PoisonedBatchReport {
            honest_sent: 10,
            honest_acked: 10,
            ..Default::default()
        };
        r.poisoned.insert(
            "nul in id".to_owned(),
            PoisonOutcome {
                sent: 2,
                answers: BTreeMap::from([("INVALID_ARGUMENT".to_owned(), 2)]),
                expected: "INVALID_ARGUMENT".to_owned(),
            },
        );
        assert!(r.failures().is_empty(), "{r}");
        r.poisoned.get_mut("nul in id").expect("poison").answers =
            BTreeMap::from([("INVALID_ARGUMENT".to_owned(), 1), ("ACKED".to_owned(), 1)]);
        r.honest_missing_from_history = 1;
        assert_eq!(r.failures().len(), 2, "{r}");
    }

    #[test]
    fn a_silent_gap_fails_memory_bounds_and_a_flagged_drop_does_not() {
        let mut r = MemoryBoundsReport {
            sent: 4,
            acked: 4,
            ..Default::default()
        };
        r.conversations.push(ConversationRetention {
            acked: 4,
            head_seq: 4,
            first_retained_seq: Some(3),
            retained: 2,
            history_start_seq: 3,
            ..Default::default()
        });
        assert!(r.failures().is_empty(), "{r}");
        assert!(r.oldest_dropped());
        r.silent_gaps.push("x: expected seq 3, got 4".to_owned());
        assert_eq!(r.failures().len(), 1, "{r}");
    }
}

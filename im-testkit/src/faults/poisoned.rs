//! The poisoned batch: invalid sends interleaved with honest ones in the
//! same conversations.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use im_core::codec::encode_client_frame;
use im_core::pb::{self, client_frame::Body as In};
use im_transport_tcp::client::{Client, direct};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::siege::verdict;
use super::{Tokens, bump, connect_from, counts, default_prefix, describe, framed};

/// Settings of [`poisoned_batch`].
///
/// Sockets: `honest_users + 2` (the honest users, the poisoner, and one
/// more for the oversize frame, which the server closes). Time: the honest
/// sends (`request_timeout` each at worst), one pull per honest user, and
/// `request_timeout` for the oversize frame's answer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PoisonedBatchConfig {
    /// Prefix of the users' ids.
    pub user_prefix: String,
    /// Honest users, each in a direct chat with the poisoner. Default 8.
    pub honest_users: usize,
    /// Sends per honest user. Default 50.
    pub sends_per_user: usize,
    /// Sends each honest user keeps in flight (so sends share commit
    /// batches). Default 8.
    pub in_flight_per_user: usize,
    /// Rounds of poison, spread over the honest sends; each round sends
    /// every poison once (see [`PoisonedBatchReport::poisoned`]). Default 4.
    pub poison_rounds: usize,
    /// Body size of the oversize-body poison (`None`: the server's
    /// `max_frame_bytes` less 1 KiB, over the engine's default body limit
    /// of 64 KiB and within a frame).
    pub oversize_body_bytes: Option<usize>,
    /// Also announce a frame over the server's `max_frame_bytes` on a
    /// connection of its own, which the server must close. Default true.
    pub oversize_frame: bool,
    /// Longest any one request may wait for its answer. Default 10 s.
    pub request_timeout: Duration,
}

impl Default for PoisonedBatchConfig {
    fn default() -> Self {
        Self {
            user_prefix: default_prefix("poison"),
            honest_users: 8,
            sends_per_user: 50,
            in_flight_per_user: 8,
            poison_rounds: 4,
            oversize_body_bytes: None,
            oversize_frame: true,
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl PoisonedBatchConfig {
    /// Sets [`PoisonedBatchConfig::honest_users`] and
    /// [`PoisonedBatchConfig::sends_per_user`].
    #[must_use]
    pub fn with_honest(mut self, users: usize, sends_each: usize) -> Self {
        self.honest_users = users.max(1);
        self.sends_per_user = sends_each;
        self
    }

    /// Sets [`PoisonedBatchConfig::poison_rounds`].
    #[must_use]
    pub fn with_poison_rounds(mut self, rounds: usize) -> Self {
        self.poison_rounds = rounds;
        self
    }

    /// Sets [`PoisonedBatchConfig::oversize_body_bytes`].
    #[must_use]
    pub fn with_oversize_body_bytes(mut self, bytes: Option<usize>) -> Self {
        self.oversize_body_bytes = bytes;
        self
    }
}

/// What became of one kind of poison.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoisonOutcome {
    /// Sent.
    pub sent: usize,
    /// Answers counted by error code (`"INVALID_ARGUMENT"`), or
    /// `"ACKED"` when the server committed it.
    pub answers: BTreeMap<String, usize>,
    /// The answer every one of them must get.
    pub expected: String,
}

impl PoisonOutcome {
    /// Every one got the expected answer.
    pub fn as_expected(&self) -> bool {
        self.answers.get(&self.expected).copied().unwrap_or(0) == self.sent
    }
}

/// What [`poisoned_batch`] measured.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PoisonedBatchReport {
    /// Honest users.
    pub honest_users: usize,
    /// Honest sends.
    pub honest_sent: usize,
    /// Honest sends acked.
    pub honest_acked: usize,
    /// Why the other honest sends failed, counted.
    pub honest_failed: BTreeMap<String, usize>,
    /// Honest users whose connection no longer answered a ping at the end.
    pub honest_connections_dropped: usize,
    /// Acked honest sends missing from their conversation's history (or
    /// present under another seq) although the history did not say it
    /// starts after them: lost.
    pub honest_missing_from_history: usize,
    /// Acked honest sends before the history's start
    /// (`history_start_seq`): dropped by the store's retention, and
    /// flagged. Not a failure.
    pub honest_no_longer_retained: usize,
    /// Each kind of poison (`"nul in id"`, `"oversize id"`, `"oversize
    /// frame"`, …) and what the server answered.
    pub poisoned: BTreeMap<String, PoisonOutcome>,
    /// Poisoned sends found in the conversations' history afterwards.
    pub poisoned_in_history: usize,
    /// Valid sends of the poisoner, one after each round.
    pub poisoner_valid_sent: usize,
    /// Of those, acked (a refused send holds nothing back).
    pub poisoner_valid_acked: usize,
    /// The whole run.
    pub elapsed: Duration,
}

impl PoisonedBatchReport {
    /// Poisoned sends in all.
    pub fn poisoned_sent(&self) -> usize {
        self.poisoned.values().map(|p| p.sent).sum()
    }

    /// What missed (empty: passed): every honest send acked and in
    /// history, every honest connection alive, every poison refused with
    /// `INVALID_ARGUMENT` (`FRAME_TOO_LARGE` and a close for the oversize
    /// frame) and none in history.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.honest_acked != self.honest_sent {
            out.push(format!(
                "{} of {} honest sends failed ({})",
                self.honest_sent - self.honest_acked,
                self.honest_sent,
                counts(&self.honest_failed)
            ));
        }
        if self.honest_connections_dropped > 0 {
            out.push(format!(
                "{} honest connections dropped",
                self.honest_connections_dropped
            ));
        }
        if self.honest_missing_from_history > 0 {
            out.push(format!(
                "{} acked honest sends missing from history",
                self.honest_missing_from_history
            ));
        }
        for (kind, p) in &self.poisoned {
            if !p.as_expected() {
                out.push(format!(
                    "poison {kind:?}: expected {} for all {}, got {}",
                    p.expected,
                    p.sent,
                    counts(&p.answers)
                ));
            }
        }
        if self.poisoned_in_history > 0 {
            out.push(format!(
                "{} poisoned sends committed",
                self.poisoned_in_history
            ));
        }
        out
    }

    /// Panics with the report and what missed.
    pub fn check(&self) {
        if !self.failures().is_empty() {
            panic!(
                "poisoned batch failed: {}\n{self}",
                self.failures().join("; ")
            );
        }
    }
}

impl fmt::Display for PoisonedBatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "poisoned batch ({:.1?}):", self.elapsed)?;
        writeln!(
            f,
            "  honest: {} users, {}/{} sends acked (failed: {}), {} connections dropped, \
             {} acked sends missing from history ({} no longer retained, flagged)",
            self.honest_users,
            self.honest_acked,
            self.honest_sent,
            counts(&self.honest_failed),
            self.honest_connections_dropped,
            self.honest_missing_from_history,
            self.honest_no_longer_retained,
        )?;
        writeln!(
            f,
            "  poisoned: {} sent, {} found in history; the poisoner's {}/{} valid sends acked",
            self.poisoned_sent(),
            self.poisoned_in_history,
            self.poisoner_valid_acked,
            self.poisoner_valid_sent,
        )?;
        for (kind, p) in &self.poisoned {
            writeln!(
                f,
                "    {kind}: {} sent, answered {} (expected {})",
                p.sent,
                counts(&p.answers),
                p.expected
            )?;
        }
        write!(f, "  verdict: {}", verdict(&self.failures()))
    }
}

/// The poisons of one round: `(kind, client_msg_id, body bytes)`.
fn poisons(round: usize, oversize_body: usize) -> Vec<(&'static str, String, usize)> {
    vec![
        ("nul in id", format!("poison\0{round}"), 8),
        ("C0 control in id", format!("poison\u{1}\u{1b}{round}"), 8),
        ("newline in id", format!("poison\n{round}"), 8),
        ("DEL in id", format!("poison\u{7f}{round}"), 8),
        ("C1 control in id", format!("poison\u{85}{round}"), 8),
        ("empty id", String::new(), 8),
        (
            "oversize id (129 B)",
            format!("{round}{}", "p".repeat(128)),
            8,
        ),
        (
            "oversize id (multibyte)",
            format!("{round}{}", "é".repeat(64)),
            8,
        ),
        (
            "oversize body",
            format!("poison-body-{round}"),
            oversize_body,
        ),
    ]
}

/// The poisoned batch: `honest_users` users each send `sends_per_user`
/// messages into their direct chat with a poisoner (`in_flight_per_user`
/// at once), while the poisoner sends, spread over the honest sends, rounds
/// of poison into the same chats: a NUL, C0 and C1 control characters and a
/// newline in `client_msg_id`, an empty id, ids over 128 bytes, a body over
/// the limit; then announces a frame over `max_frame_bytes` on a second
/// connection. Afterwards every honest user pings (is its connection
/// alive?) and pulls its chat (is every acked send there, and no poison?).
///
/// Fds: `honest_users + 2`.
///
/// # Panics
///
/// If a user cannot log in within `request_timeout` (the deployment is not
/// there, or refuses the tokens): the run would measure nothing.
pub async fn poisoned_batch(
    addr: SocketAddr,
    tokens: impl Fn(&str) -> String + Send + Sync + 'static,
    cfg: PoisonedBatchConfig,
) -> PoisonedBatchReport {
    let tokens: Tokens = Arc::new(tokens);
    let started = Instant::now();
    let poisoner_id = format!("{}-poisoner", cfg.user_prefix);
    let honest_ids: Vec<String> = (0..cfg.honest_users)
        .map(|i| format!("{}-honest-{i}", cfg.user_prefix))
        .collect();
    let connect = |user: &str| {
        let token = tokens(user);
        let user = user.to_owned();
        let timeout = cfg.request_timeout;
        async move {
            let mut c = tokio::time::timeout(timeout, Client::connect(addr, &token, "faults"))
                .await
                .unwrap_or_else(|_| panic!("{user} could not log in within {timeout:?}"))
                .unwrap_or_else(|e| panic!("{user} could not log in: {e}"));
            c.timeout = timeout;
            Arc::new(c)
        }
    };
    let poisoner = connect(&poisoner_id).await;
    let mut honest = Vec::new();
    for id in &honest_ids {
        honest.push(connect(id).await);
    }
    let max_frame = poisoner.connected.max_frame_bytes as usize;
    let oversize_body = cfg
        .oversize_body_bytes
        .unwrap_or_else(|| max_frame.saturating_sub(1024));

    // The honest sends, counted as they finish.
    let total = cfg.honest_users * cfg.sends_per_user;
    let progress = Arc::new((AtomicUsize::new(0), Notify::new()));
    let mut senders = JoinSet::new();
    for (i, client) in honest.iter().enumerate() {
        let (client, progress, peer) = (client.clone(), progress.clone(), poisoner_id.clone());
        let (n, window) = (cfg.sends_per_user, cfg.in_flight_per_user.max(1));
        senders.spawn(async move {
            let results: Vec<_> = futures::stream::iter(0..n)
                .map(|k| {
                    let (client, progress, peer) = (client.clone(), progress.clone(), peer.clone());
                    async move {
                        let id = format!("h{i}-{k}");
                        let r = client
                            .send(direct(&peer), &id, format!("honest {i}/{k}"))
                            .await;
                        progress.0.fetch_add(1, Ordering::SeqCst);
                        progress.1.notify_waiters();
                        (id, r.map(|a| a.seq).map_err(|e| describe(&e)))
                    }
                })
                .buffer_unordered(window)
                .collect()
                .await;
            (i, results)
        });
    }

    // The poison, spread over the honest sends: round r goes out once r of
    // (rounds + 1) parts of them have finished.
    let mut report = PoisonedBatchReport {
        honest_users: cfg.honest_users,
        honest_sent: total,
        ..Default::default()
    };
    let mut valid_ids = HashSet::new();
    for round in 0..cfg.poison_rounds {
        let due = total * round / (cfg.poison_rounds + 1);
        loop {
            let changed = progress.1.notified();
            if progress.0.load(Ordering::SeqCst) >= due {
                break;
            }
            changed.await;
        }
        let poison = poisons(round, oversize_body);
        let answers =
            futures::future::join_all(poison.iter().enumerate().map(|(k, (_, id, bytes))| {
                let peer = &honest_ids[(round + k) % honest_ids.len()];
                poisoner.send(direct(peer), id, vec![b'x'; *bytes])
            }))
            .await;
        for ((kind, _, _), answer) in poison.iter().zip(answers) {
            let p = report.poisoned.entry((*kind).to_owned()).or_default();
            p.expected = "INVALID_ARGUMENT".to_owned();
            p.sent += 1;
            bump(
                &mut p.answers,
                answer.map_or_else(|e| describe(&e), |_| "ACKED".to_owned()),
            );
        }
        // A valid send right after: not held back by the refused ones.
        let id = format!("p-valid-{round}");
        let peer = &honest_ids[round % honest_ids.len()];
        report.poisoner_valid_sent += 1;
        if poisoner.send(direct(peer), &id, "valid").await.is_ok() {
            report.poisoner_valid_acked += 1;
        }
        valid_ids.insert(id);
    }

    if cfg.oversize_frame {
        let answer =
            oversize_frame(addr, &tokens(&poisoner_id), max_frame, cfg.request_timeout).await;
        report.poisoned.insert(
            "oversize frame".to_owned(),
            PoisonOutcome {
                sent: 1,
                answers: BTreeMap::from([(answer, 1)]),
                expected: "FRAME_TOO_LARGE, closed".to_owned(),
            },
        );
    }

    // Honest results, then each honest user's view of its chat.
    let mut acked: Vec<Vec<(String, u64)>> = vec![Vec::new(); cfg.honest_users];
    while let Some(done) = senders.join_next().await {
        let (i, results) = done.expect("honest sender");
        for (id, r) in results {
            match r {
                Ok(seq) => {
                    report.honest_acked += 1;
                    acked[i].push((id, seq));
                }
                Err(why) => bump(&mut report.honest_failed, why),
            }
        }
    }
    for (i, client) in honest.iter().enumerate() {
        if client.ping().await.is_err() {
            report.honest_connections_dropped += 1;
            continue;
        }
        let history = pull_all(client, &poisoner_id).await;
        let Some((history, start)) = history else {
            report.honest_missing_from_history += acked[i].len();
            continue;
        };
        let by_id: BTreeMap<&str, u64> = history
            .iter()
            .map(|m| (m.client_msg_id.as_str(), m.seq))
            .collect();
        for (id, seq) in &acked[i] {
            if *seq < start {
                report.honest_no_longer_retained += 1;
            } else if by_id.get(id.as_str()) != Some(seq) {
                report.honest_missing_from_history += 1;
            }
        }
        report.poisoned_in_history += history
            .iter()
            .filter(|m| m.sender_user == poisoner_id && !valid_ids.contains(&m.client_msg_id))
            .count();
    }
    report.elapsed = started.elapsed();
    report
}

/// The retained history of the direct chat with `peer` and where it
/// starts (`history_start_seq`, 0 if from the first message; bounded:
/// 10,000 pages), or `None` if a pull failed.
async fn pull_all(client: &Client, peer: &str) -> Option<(Vec<pb::Message>, u64)> {
    let (mut out, mut start): (Vec<pb::Message>, u64) = (Vec::new(), 0);
    for _ in 0..10_000 {
        let after = out.last().map_or(0, |m| m.seq);
        let page = client.pull(direct(peer), after, 0, 0).await.ok()?;
        start = start.max(page.history_start_seq);
        let more = page.has_more && !page.messages.is_empty();
        out.extend(page.messages);
        if !more {
            break;
        }
    }
    Some((out, start))
}

/// Logs in on a raw socket, announces a frame of `max_frame + 1` bytes
/// (sending only its first bytes) and reports what the server did:
/// `"FRAME_TOO_LARGE, closed"` is the expected answer.
async fn oversize_frame(addr: SocketAddr, token: &str, max_frame: usize, wait: Duration) -> String {
    let run = async {
        let mut s = connect_from(None, addr)
            .await
            .map_err(|e| format!("connect: {:?}", e.kind()))?;
        let connect = encode_client_frame(&pb::ClientFrame {
            request_id: 1,
            body: Some(In::Connect(pb::Connect {
                token: token.to_owned(),
                device_id: "faults-frame".to_owned(),
                device_kind: pb::DeviceKind::Desktop as i32,
                inbox_version: 0,
                client_info: "im-testkit faults".to_owned(),
                push_acks: false,
            })),
        });
        s.write_all(&framed(&connect))
            .await
            .map_err(|e| super::io_name("write", &e))?;
        let hello = super::read_server_frame(&mut s).await?;
        if !matches!(hello.body, Some(pb::server_frame::Body::Connected(_))) {
            return Err(format!("login: {}", super::frame_name(&hello)));
        }
        // The prefix alone decides: announce too much, send a little.
        let mut out = ((max_frame + 1) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&[0u8; 64]);
        s.write_all(&out)
            .await
            .map_err(|e| super::io_name("write", &e))?;
        // Frames until the error, then the close.
        let mut said = None;
        loop {
            match super::read_server_frame(&mut s).await {
                Ok(f) => {
                    if let Some(pb::server_frame::Body::Error(_)) = f.body {
                        said = Some(super::frame_name(&f));
                    }
                }
                Err(e) if e.starts_with("no answer") => {
                    return Ok(match said {
                        Some(code) => format!("{code}, closed"),
                        None => "closed without an error".to_owned(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    };
    match tokio::time::timeout(wait, run).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => e,
        Err(_) => "not closed in time".to_owned(),
    }
}

//! A chat-server process gets SIGTERM — how systemd, Docker and Kubernetes
//! stop a service — while clients have pipelined sends in flight. It drains
//! as on Ctrl-C: every send is answered (acked, or refused with a retryable
//! error), never left silent; every client then gets `Kicked{SHUTDOWN}`; and
//! the process exits with status 0.
//!
//! "In flight" means read by the server and not yet answered: each client
//! follows its sends with a `Ping`, whose `Pong` is answered as soon as it is
//! read (a send only once committed), so once every `Pong` is back the server
//! has read every send, and SIGTERM goes out while commits are under way.
//! (Frames a server has not read when it stops reading cannot be answered;
//! `Kicked{SHUTDOWN}` tells the client they were not committed.)
#![cfg(all(unix, feature = "tcp", feature = "memory"))]

#[path = "common/child.rs"]
mod child;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use child::{chat_server_bin, connect, free_port};
use im_engine::core::pb::{self, ErrorCode, client_frame::Body as In, server_frame::Body as Out};
use im_engine::transport_tcp::client::{Client, group};
use tokio::sync::oneshot;

const CLIENTS: usize = 3;
const PER_CLIENT: usize = 100;
/// Group members who never connect: every commit writes their inboxes too,
/// so commits are still under way when SIGTERM lands.
const OFFLINE_MEMBERS: usize = 2_000;
/// Request ids of the sends start here (the handshake used 1).
const FIRST_REQUEST: u64 = 1_000;
/// Request id of the `Ping` that follows the sends.
const PING: u64 = 999;
/// How long to wait for anything that should happen.
const WAIT: Duration = Duration::from_secs(10);
/// Rounds tried for SIGTERM to land before the last commit.
const ROUNDS: usize = 5;

/// What one client saw, in order of arrival.
#[derive(Debug, Default)]
struct Seen {
    /// Request id → the seq it was acked with, or the error it got.
    answers: HashMap<u64, Result<u64, pb::Error>>,
    /// The `Kicked` frame, if one came.
    kicked: Option<pb::Kicked>,
    /// Answers that arrived after `Kicked` (the kick must come last).
    after_kick: usize,
}

/// Reads a client's frames until the server closes the connection; reports
/// the `Pong` to the ping that follows the sends.
async fn watch(client: Arc<Client>, answered: Arc<AtomicUsize>, pong: oneshot::Sender<()>) -> Seen {
    let mut seen = Seen::default();
    let mut pong = Some(pong);
    loop {
        let frame = match client.next_event(WAIT).await {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!("no frame for {WAIT:?} and the connection still open"),
            Err(_) => return seen, // closed by the server
        };
        let answer = match frame.body {
            Some(Out::SendAck(a)) => Ok(a.seq),
            Some(Out::Error(e)) if frame.request_id != 0 => Err(e),
            Some(Out::Kicked(k)) => {
                seen.kicked = Some(k);
                continue;
            }
            Some(Out::Pong(_)) if frame.request_id == PING => {
                if let Some(tx) = pong.take() {
                    let _ = tx.send(());
                }
                continue;
            }
            // Pushes of the group's messages, and anything else unsolicited.
            _ => continue,
        };
        if seen.kicked.is_some() {
            seen.after_kick += 1;
        }
        assert!(
            seen.answers.insert(frame.request_id, answer).is_none(),
            "request {} answered twice",
            frame.request_id
        );
        answered.fetch_add(1, Ordering::Relaxed);
    }
}

/// One chat-server process, streamed to and stopped with SIGTERM; checks
/// the drain and returns how many sends were unanswered when the signal went.
async fn round() -> usize {
    let port = free_port();
    let members = (0..CLIENTS)
        .map(|i| format!("c{i}"))
        .chain((0..OFFLINE_MEMBERS).map(|i| format!("m{i}")))
        .collect::<Vec<_>>()
        .join(",");
    let mut server = tokio::process::Command::new(chat_server_bin())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics", &format!("127.0.0.1:{}", free_port())])
        .args(["--group", &format!("sig={members}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chat-server");
    let pid = server.id().expect("pid").to_string();
    // `kill -TERM`, armed now and fired by a line on its stdin: starting a
    // process takes milliseconds on a busy machine, a shell's builtin
    // `kill` does not, so the signal goes out when the test says.
    let mut trigger = std::process::Command::new("sh")
        .args(["-c", r#"read _ && kill -TERM "$0""#, &pid])
        .stdin(Stdio::piped())
        .spawn()
        .expect("start sh");

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        clients.push(Arc::new(connect(port, &format!("c{c}")).await));
    }
    let answered = Arc::new(AtomicUsize::new(0));
    let mut pongs = Vec::new();
    let mut watchers = Vec::new();
    for c in &clients {
        let (tx, rx) = oneshot::channel();
        pongs.push(rx);
        watchers.push(tokio::spawn(watch(c.clone(), answered.clone(), tx)));
    }

    // Pipeline every send without waiting for any answer, interleaving
    // clients; then a ping each.
    for i in 0..PER_CLIENT {
        for (c, client) in clients.iter().enumerate() {
            let id = format!("c{c}-{i}");
            let frame = pb::ClientFrame {
                request_id: FIRST_REQUEST + i as u64,
                body: Some(In::Send(pb::Send {
                    client_msg_id: id.clone(),
                    conversation: Some(group("sig")),
                    body: id.into_bytes().into(),
                    ..Default::default()
                })),
            };
            client.send_frame(&frame).await.expect("write a send");
        }
    }
    for client in &clients {
        let ping = pb::ClientFrame {
            request_id: PING,
            body: Some(In::Ping(pb::Ping { client_time_ms: 0 })),
        };
        client.send_frame(&ping).await.expect("write a ping");
    }
    // Every send read by the server: ask it to stop while they commit.
    for rx in pongs {
        tokio::time::timeout(WAIT, rx)
            .await
            .expect("a pong")
            .expect("watcher alive");
    }
    let in_flight = CLIENTS * PER_CLIENT - answered.load(Ordering::Relaxed);
    {
        use std::io::Write;
        let mut stdin = trigger.stdin.take().expect("sh stdin");
        stdin.write_all(b"\n").expect("fire kill -TERM");
    }
    let status = trigger.wait().expect("wait for sh");
    assert!(status.success(), "kill -TERM {pid}");

    let exit = tokio::time::timeout(WAIT, server.wait())
        .await
        .expect("the server exits after draining")
        .expect("wait for the server");
    let mut seen = Vec::new();
    for w in watchers {
        seen.push(
            tokio::time::timeout(WAIT, w)
                .await
                .expect("the server closes every connection")
                .expect("watcher"),
        );
    }

    for (c, seen) in seen.iter().enumerate() {
        let kicked = seen.kicked.as_ref().unwrap_or_else(|| {
            panic!("c{c} got no Kicked frame");
        });
        assert_eq!(
            kicked.reason,
            pb::KickReason::Shutdown as i32,
            "c{c} kicked for SHUTDOWN: {kicked:?}"
        );
        assert_eq!(seen.after_kick, 0, "c{c}: answers came after Kicked");
        assert_eq!(clients[c].dropped_events(), 0, "c{c} read every frame");
        let silent: Vec<u64> = (0..PER_CLIENT as u64)
            .map(|i| FIRST_REQUEST + i)
            .filter(|id| !seen.answers.contains_key(id))
            .collect();
        assert!(
            silent.is_empty(),
            "c{c}: {} of {PER_CLIENT} sends never answered (first {:?})",
            silent.len(),
            silent.first()
        );
        for (id, answer) in &seen.answers {
            if let Err(e) = answer {
                let code = ErrorCode::try_from(e.code).unwrap_or_default();
                assert!(
                    e.retryable && matches!(code, ErrorCode::ShuttingDown | ErrorCode::Unavailable),
                    "c{c}: request {id} refused with a final error: {e:?}"
                );
            }
        }
    }
    let mut seqs: Vec<u64> = seen
        .iter()
        .flat_map(|s| s.answers.values())
        .filter_map(|a| a.as_ref().ok().copied())
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "acked seqs are gap-free"
    );
    assert!(exit.success(), "chat-server exits with status 0: {exit}");
    in_flight
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_in_flight_send_and_kicks_with_shutdown() {
    // Every round must drain correctly; SIGTERM must also have caught sends
    // in flight in one of them, or the drain went untested.
    for r in 1..=ROUNDS {
        let in_flight = round().await;
        eprintln!(
            "round {r}: {in_flight} of {} sends in flight at SIGTERM, all answered",
            CLIENTS * PER_CLIENT
        );
        if in_flight > 0 {
            return;
        }
    }
    panic!("in {ROUNDS} rounds every send was answered before SIGTERM went out");
}

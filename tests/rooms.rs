//! End-to-end: live rooms over real TCP on 127.0.0.1 — fanout to every
//! member in order, late joiners, slow consumers, send limits.

mod common;

use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use common::*;
use im_engine::core::EngineConfig;
use im_engine::core::codec::{decode_server_frame, encode_client_frame};
use im_engine::core::pb::{self, ErrorCode, client_frame::Body as In, server_frame::Body as Out};
use im_engine::store_memory::MemoryStore;
use im_engine::transport_tcp::client::{Client, ClientError, room};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn unlimited() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.room_send_rate = 0;
    c.user_room_send_rate = 0;
    c
}

#[tokio::test]
async fn every_member_gets_every_room_message_in_order_and_late_joiners_pull_them() {
    let mut config = unlimited();
    // Several sub-rooms even with a handful of members.
    config.room_sub_room_capacity = 3;
    let s = Server::start_with(config, Arc::new(MemoryStore::new())).await;
    let mut members = Vec::new();
    for i in 0..10 {
        let c = s.connect(&format!("fan{i}"), "d").await;
        c.join_room("live").await.expect("join");
        members.push(c);
    }
    for i in 0..50 {
        members[i % 3]
            .send(room("live"), &format!("m{i}"), format!("msg {i}"))
            .await
            .expect("send");
    }
    for c in &members {
        let got = c.collect_pushed(50, WAIT).await.expect("push");
        let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            (1..=50).collect::<Vec<_>>(),
            "{} sees all, in order",
            c.user_id()
        );
    }
    // A late joiner catches up from the room's hot ring.
    let late = s.connect("late", "d").await;
    let joined = late.join_room("live").await.expect("join");
    assert_eq!(joined.head_seq, 50);
    assert_eq!(joined.online, 11);
    let page = late.pull(room("live"), 40, 0, 100).await.expect("pull");
    assert_eq!(
        bodies(&page.messages),
        (40..50).map(|i| format!("msg {i}")).collect::<Vec<_>>()
    );
    assert_eq!(page.head_seq, 50);
    assert!(!page.has_more);
}

/// A raw TCP client that joins a room and then never reads its socket.
async fn stalled_member(
    addr: std::net::SocketAddr,
    user: &str,
    room_id: &str,
) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stream = sock.connect(addr).await.expect("connect");
    let frames = [
        In::Connect(pb::Connect {
            token: format!("{user}:d"),
            device_id: "d".into(),
            ..Default::default()
        }),
        In::JoinRoom(pb::JoinRoom {
            room_id: room_id.into(),
        }),
    ];
    for (i, body) in frames.into_iter().enumerate() {
        let bytes = encode_client_frame(&pb::ClientFrame {
            request_id: i as u64 + 1,
            body: Some(body),
        });
        let mut buf = BytesMut::with_capacity(bytes.len() + 4);
        buf.put_u32(bytes.len() as u32);
        buf.put_slice(&bytes);
        stream.write_all(&buf).await.expect("write");
    }
    stream
}

/// Reads frames until the server closes; returns the last one.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> Option<pb::ServerFrame> {
    let mut buf = BytesMut::new();
    let mut last = None;
    loop {
        while buf.len() >= 4 {
            let len = (&buf[..4]).get_u32() as usize;
            if buf.len() < 4 + len {
                break;
            }
            buf.advance(4);
            let frame = buf.split_to(len);
            last = decode_server_frame(&frame).ok();
        }
        let read = tokio::time::timeout(WAIT, stream.read_buf(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return last,
            Ok(Ok(_)) => {}
        }
    }
}

/// Follows a room as a client must: takes pushed messages, and on a
/// `Notify` (the room's backlog was collapsed) pulls up to its head. Returns
/// the seqs seen, in order, once `count` arrived or nothing came for `WAIT`.
async fn follow_room(c: &Client, room_id: &str, count: u64) -> Result<Vec<u64>, ClientError> {
    let mut seqs: Vec<u64> = Vec::new();
    while seqs.last().copied().unwrap_or(0) < count {
        let Some(frame) = c.next_event(WAIT).await? else {
            break;
        };
        let last = seqs.last().copied().unwrap_or(0);
        match frame.body {
            Some(Out::Push(p)) => seqs.extend(p.messages.iter().map(|m| m.seq)),
            Some(Out::Notify(n)) if n.head_seq > last => {
                let mut after = last;
                while after < n.head_seq {
                    let page = c.pull(room(room_id), after, n.head_seq, 0).await?;
                    seqs.extend(page.messages.iter().map(|m| m.seq));
                    match page.messages.last() {
                        Some(m) => after = m.seq,
                        None => break,
                    }
                }
            }
            _ => {}
        }
    }
    Ok(seqs)
}

#[tokio::test]
async fn a_slow_room_member_is_disconnected_and_everyone_else_gets_everything() {
    let mut config = unlimited();
    config.outbound_queue_bytes = 512 * 1024;
    let (s, probe) = Server::start_probed(config, Arc::new(MemoryStore::new())).await;
    let mut fast = Vec::new();
    for i in 0..3 {
        let c = s.connect(&format!("fast{i}"), "d").await;
        c.join_room("flood").await.expect("join");
        fast.push(Arc::new(c));
    }
    let mut slow = stalled_member(s.addr, "slow", "flood").await;
    // The stalled member never reads its answers: wait until it is seated.
    probe.wait_for(|st| st.in_room("flood") == 4).await;

    const N: usize = 3000;
    let readers: Vec<_> = fast
        .iter()
        .map(|c| {
            let c = c.clone();
            tokio::spawn(async move { follow_room(&c, "flood", N as u64).await })
        })
        .collect();
    let sender = s.connect("sender", "d").await;
    sender.join_room("flood").await.expect("join");
    let body = vec![b'x'; 4096];
    for i in 0..N {
        sender
            .send(room("flood"), &format!("f{i}"), body.clone())
            .await
            .expect("send");
    }
    for r in readers {
        let seqs = r.await.expect("task").expect("follow");
        assert_eq!(seqs, (1..=N as u64).collect::<Vec<_>>());
    }
    let last = read_until_closed(&mut slow).await.expect("frames");
    match last.body {
        Some(Out::Kicked(k)) => assert_eq!(k.reason, pb::KickReason::SlowConsumer as i32),
        other => panic!("expected Kicked(SLOW_CONSUMER), got {other:?}"),
    }
}

#[tokio::test]
async fn room_send_limits_answer_rate_limited_and_say_retry() {
    let mut config = EngineConfig::default();
    config.room_send_rate = 5;
    config.room_send_burst = 5;
    config.user_room_send_rate = 0;
    let s = Server::start_with(config, Arc::new(MemoryStore::new())).await;
    let a = s.connect("a", "d").await;
    a.join_room("busy").await.expect("join");
    let mut limited = 0;
    for i in 0..20 {
        if let Err(e) = a.send(room("busy"), &format!("r{i}"), "hi").await {
            assert_eq!(e.code(), Some(ErrorCode::RateLimited), "{e}");
            match e {
                im_engine::transport_tcp::client::ClientError::Server(err) => {
                    assert!(err.retryable)
                }
                other => panic!("unexpected {other}"),
            }
            limited += 1;
        }
    }
    assert!(limited >= 10, "only {limited} of 20 limited");

    // Per-user limits hold across rooms.
    let mut config = EngineConfig::default();
    config.room_send_rate = 0;
    config.user_room_send_rate = 2;
    config.user_room_send_burst = 2;
    let s = Server::start_with(config, Arc::new(MemoryStore::new())).await;
    let b = s.connect("b", "d").await;
    b.join_room("r1").await.expect("join");
    b.join_room("r2").await.expect("join");
    b.send(room("r1"), "x1", "1").await.expect("within burst");
    b.send(room("r2"), "x2", "2").await.expect("within burst");
    let e = b
        .send(room("r1"), "x3", "3")
        .await
        .expect_err("over the user limit");
    assert_eq!(e.code(), Some(ErrorCode::RateLimited));
}

#[tokio::test]
async fn a_flooding_user_cannot_spend_the_rooms_budget_for_everyone_else() {
    let mut config = EngineConfig::default();
    config.room_send_rate = 1;
    config.room_send_burst = 20;
    config.user_room_send_rate = 1;
    config.user_room_send_burst = 5;
    let s = Server::start_with(config, Arc::new(MemoryStore::new())).await;
    let flooder = s.connect("flooder", "d").await;
    let polite = s.connect("polite", "d").await;
    flooder.join_room("r").await.expect("join");
    polite.join_room("r").await.expect("join");
    let mut refused = 0;
    for i in 0..200 {
        match flooder.send(room("r"), &format!("f{i}"), "spam").await {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::RateLimited));
                refused += 1;
            }
        }
    }
    assert!(
        refused >= 190,
        "the flooder is held to its own burst ({refused} refused)"
    );
    for i in 0..5 {
        polite
            .send(room("r"), &format!("p{i}"), "hello")
            .await
            .expect("the room still has budget for others");
    }
}

//! The simulated clients: room members on raw sockets (TCP and WebSocket)
//! that count pushes without decoding them, and the 1:1 chat probe.

use super::*;

/// Reads a protobuf varint.
pub(super) fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The length-delimited top-level fields of a message: (field, bytes).
pub(super) fn fields(mut buf: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    std::iter::from_fn(move || {
        loop {
            let key = varint(&mut buf)?;
            match key & 7 {
                0 => {
                    varint(&mut buf)?;
                }
                2 => {
                    let len = usize::try_from(varint(&mut buf)?).ok()?;
                    if len > buf.len() {
                        return None;
                    }
                    let (v, rest) = buf.split_at(len);
                    buf = rest;
                    return Some((key >> 3, v));
                }
                1 => buf = buf.get(8..)?,
                5 => buf = buf.get(4..)?,
                _ => return None,
            }
        }
    })
}

/// Shared measurements.
pub(super) struct Stats {
    pub(super) deliveries: AtomicU64,
    pub(super) joined: AtomicU64,
    pub(super) kicked: AtomicU64,
    pub(super) room_latency: Mutex<(Histogram<u64>, Histogram<u64>)>,
}

impl Stats {
    /// Nothing counted yet.
    pub(super) fn new() -> Self {
        Self {
            deliveries: AtomicU64::new(0),
            joined: AtomicU64::new(0),
            kicked: AtomicU64::new(0),
            room_latency: Mutex::new((histogram(), histogram())),
        }
    }
}

pub(super) fn frame_bytes(body: In, id: u64) -> BytesMut {
    let bytes = encode_client_frame(&pb::ClientFrame {
        request_id: id,
        body: Some(body),
    });
    let mut buf = BytesMut::with_capacity(bytes.len() + 4);
    buf.put_u32(bytes.len() as u32);
    buf.put_slice(&bytes);
    buf
}

/// One room member on a raw socket.
pub(super) async fn member(
    addr: SocketAddr,
    i: usize,
    probe: bool,
    stats: Arc<Stats>,
) -> Result<(), AnyError> {
    let mut s = TcpStream::connect(addr).await?;
    let mut hello = frame_bytes(
        In::Connect(pb::Connect {
            token: format!("m{i}:d"),
            device_id: "d".into(),
            ..Default::default()
        }),
        1,
    );
    hello.extend_from_slice(&frame_bytes(
        In::JoinRoom(pb::JoinRoom {
            room_id: ROOM.into(),
        }),
        2,
    ));
    s.write_all(&hello).await?;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        if s.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        while buf.len() >= 4 {
            let len = (&buf[..4]).get_u32() as usize;
            if buf.len() < 4 + len {
                break;
            }
            buf.advance(4);
            let frame = buf.split_to(len);
            on_frame(&frame, probe, &stats);
        }
    }
}

/// Counts what one member received in one server frame.
pub(super) fn on_frame(frame: &[u8], probe: bool, stats: &Stats) {
    for (field, value) in fields(frame) {
        match field {
            12 if probe => {
                let now = now_us();
                if let Ok(pb::ServerFrame {
                    body: Some(Out::Push(p)),
                    ..
                }) = decode_server_frame(frame)
                {
                    let mut h = stats.room_latency.lock();
                    for m in &p.messages {
                        if let Some(t) = sent_at(&m.body) {
                            let us = now.saturating_sub(t).max(1);
                            let _ = h.0.record(us);
                            let _ = h.1.record(us);
                        }
                    }
                    stats
                        .deliveries
                        .fetch_add(p.messages.len() as u64, Ordering::Relaxed);
                }
            }
            12 => {
                let n = fields(value).filter(|(f, _)| *f == 1).count();
                stats.deliveries.fetch_add(n as u64, Ordering::Relaxed);
            }
            20 => {
                stats.joined.fetch_add(1, Ordering::Relaxed);
            }
            16 => {
                stats.kicked.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// One room member over WebSocket (subprotocol `im.v1.proto`, one binary
/// message per frame).
pub(super) async fn ws_member(
    addr: SocketAddr,
    i: usize,
    probe: bool,
    stats: Arc<Stats>,
) -> Result<(), AnyError> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

    let mut req = format!("ws://{addr}/").into_client_request()?;
    req.headers_mut()
        .insert("sec-websocket-protocol", SUBPROTOCOL.parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    for (id, body) in [
        (
            1,
            In::Connect(pb::Connect {
                token: format!("m{i}:d"),
                device_id: "d".into(),
                ..Default::default()
            }),
        ),
        (
            2,
            In::JoinRoom(pb::JoinRoom {
                room_id: ROOM.into(),
            }),
        ),
    ] {
        let frame = encode_client_frame(&pb::ClientFrame {
            request_id: id,
            body: Some(body),
        });
        ws.send(Message::Binary(frame)).await?;
    }
    while let Some(msg) = ws.next().await {
        match msg? {
            Message::Binary(frame) => on_frame(&frame, probe, &stats),
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok(())
}

/// A 1:1 chat: `a` sends to `b` at `rate`; returns b's latency histogram.
pub(super) async fn chat(
    addr: SocketAddr,
    tag: &str,
    rate: u64,
    secs: u64,
    size: usize,
) -> Result<Histogram<u64>, AnyError> {
    let a = Client::connect(addr, &format!("chat-a-{tag}:d"), "d").await?;
    let b = Client::connect(addr, &format!("chat-b-{tag}:d"), "d").await?;
    let peer = format!("chat-b-{tag}");
    let total = rate * secs;
    let recv = tokio::spawn(async move {
        let mut h = histogram();
        let mut got = 0;
        while got < total {
            match b.next_event(Duration::from_secs(5)).await {
                Ok(Some(pb::ServerFrame {
                    body: Some(Out::Push(p)),
                    ..
                })) => {
                    let now = now_us();
                    for m in p.messages {
                        if let Some(t) = sent_at(&m.body) {
                            let _ = h.record(now.saturating_sub(t).max(1));
                        }
                        got += 1;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        h
    });
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    for i in 0..total {
        tick.tick().await;
        a.send(direct(&peer), &format!("{tag}{i}"), body(size))
            .await?;
    }
    Ok(recv.await?)
}

/// Starts members `range` 500 at a time, each 500 joined before the next
/// (`start(i)` spawns member `i`; `stats.joined` counts from 0 for the
/// range's first); `progress` is told how many joined so far.
pub(super) async fn join_all(
    range: std::ops::Range<usize>,
    stats: &Stats,
    start: impl Fn(usize),
    progress: impl Fn(u64),
) -> Result<(), AnyError> {
    let t = Instant::now();
    let first = range.start;
    for chunk in range.collect::<Vec<_>>().chunks(500) {
        for &i in chunk {
            start(i);
        }
        let want = (chunk[chunk.len() - 1] + 1 - first) as u64;
        while stats.joined.load(Ordering::Relaxed) < want {
            progress(stats.joined.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(20)).await;
            if t.elapsed() > Duration::from_secs(120) {
                return Err("members did not join within 120 s".into());
            }
        }
    }
    progress(stats.joined.load(Ordering::Relaxed));
    Ok(())
}

/// Each of `senders` sends `size`-byte messages to the room at `rate` per
/// second until `deadline`, pipelined (the offered rate does not wait for
/// acks); `sent` counts the acked ones.
pub(super) fn flood(
    senders: Vec<Client>,
    rate: u64,
    size: usize,
    deadline: Instant,
    sent: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (i, c) in senders.into_iter().enumerate() {
        let sent = sent.clone();
        let c = Arc::new(c);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            while Instant::now() < deadline {
                tick.tick().await;
                let (c, sent) = (c.clone(), sent.clone());
                let id = format!("s{i}-{n}");
                tokio::spawn(async move {
                    if c.send(room(ROOM), &id, body(size)).await.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                });
                n += 1;
            }
        }));
    }
    tasks
}

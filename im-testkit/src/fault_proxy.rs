//! A TCP proxy on 127.0.0.1 that breaks connections on purpose, for testing
//! clients against a real server: it cuts a connection after N bytes (in
//! either direction), stalls it, or delays it — but never reorders,
//! duplicates or corrupts the bytes of a connection. What each connection
//! suffers is decided by a [`FaultPlan`]: fixed per connection, or drawn
//! from a seed so a failing run can be replayed.
//!
//! ```no_run
//! # async fn demo(server: std::net::SocketAddr) -> std::io::Result<()> {
//! use im_testkit::fault_proxy::{FaultMix, FaultPlan, FaultProxy};
//! let proxy = FaultProxy::start(server, FaultPlan::random(42, FaultMix::default())).await?;
//! // point clients at proxy.addr(); later:
//! proxy.heal(); // new connections pass through untouched
//! proxy.cut_all(); // and the current ones are cut
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the server.
    ToServer,
    /// From the server to the client.
    ToClient,
}

/// What one connection suffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bytes pass untouched.
    Pass,
    /// After `bytes` bytes in `direction` were forwarded, both sockets are
    /// closed (the rest of that read is dropped, not delivered).
    CutAfter {
        /// Bytes forwarded before the cut.
        bytes: u64,
        /// The direction counted.
        direction: Direction,
    },
    /// After `bytes` bytes in `direction`, that direction pauses for `pause`,
    /// then continues.
    Stall {
        /// Bytes forwarded before the pause.
        bytes: u64,
        /// The direction paused.
        direction: Direction,
        /// How long.
        pause: Duration,
    },
    /// Every chunk read in either direction waits `delay` before it is forwarded.
    Delay {
        /// The wait per chunk.
        delay: Duration,
    },
}

/// The odds and sizes of a random plan.
#[derive(Debug, Clone, Copy)]
pub struct FaultMix {
    /// Percent of connections cut.
    pub cut_percent: u32,
    /// Percent stalled.
    pub stall_percent: u32,
    /// Percent delayed (the rest pass).
    pub delay_percent: u32,
    /// Cuts and stalls happen after `0..max_bytes` bytes.
    pub max_bytes: u64,
    /// Longest stall.
    pub max_stall: Duration,
    /// Longest per-chunk delay.
    pub max_delay: Duration,
}

impl Default for FaultMix {
    fn default() -> Self {
        Self {
            cut_percent: 40,
            stall_percent: 20,
            delay_percent: 20,
            max_bytes: 8 * 1024,
            max_stall: Duration::from_millis(500),
            max_delay: Duration::from_millis(20),
        }
    }
}

/// Decides the fault of each new connection (numbered from 0).
pub struct FaultPlan(Box<dyn FnMut(u64) -> Fault + Send>);

impl std::fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaultPlan")
    }
}

impl FaultPlan {
    /// Any rule of the test's own.
    pub fn from_fn(f: impl FnMut(u64) -> Fault + Send + 'static) -> Self {
        Self(Box::new(f))
    }

    /// The fault of connection `n` (to compose plans).
    pub fn draw(&mut self, n: u64) -> Fault {
        (self.0)(n)
    }

    /// The listed faults for the first connections, then [`Fault::Pass`].
    pub fn fixed(faults: Vec<Fault>) -> Self {
        Self::from_fn(move |n| {
            usize::try_from(n)
                .ok()
                .and_then(|n| faults.get(n).copied())
                .unwrap_or(Fault::Pass)
        })
    }

    /// Faults drawn from `mix` by a generator seeded with `seed`: the same
    /// seed gives the same sequence of faults.
    pub fn random(seed: u64, mix: FaultMix) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        Self::from_fn(move |_| {
            let direction = if rng.bool() {
                Direction::ToServer
            } else {
                Direction::ToClient
            };
            let bytes = rng.u64(0..mix.max_bytes.max(1));
            let roll = rng.u32(0..100);
            if roll < mix.cut_percent {
                Fault::CutAfter { bytes, direction }
            } else if roll < mix.cut_percent + mix.stall_percent {
                let ms = u64::try_from(mix.max_stall.as_millis()).unwrap_or(u64::MAX);
                Fault::Stall {
                    bytes,
                    direction,
                    pause: Duration::from_millis(rng.u64(1..=ms.max(1))),
                }
            } else if roll < mix.cut_percent + mix.stall_percent + mix.delay_percent {
                let ms = u64::try_from(mix.max_delay.as_millis()).unwrap_or(u64::MAX);
                Fault::Delay {
                    delay: Duration::from_millis(rng.u64(1..=ms.max(1))),
                }
            } else {
                Fault::Pass
            }
        })
    }
}

/// State shared between the proxy handle and its tasks.
struct Shared {
    plan: Mutex<FaultPlan>,
    healed: AtomicBool,
    accepted: AtomicU64,
    cuts: AtomicU64,
    /// Bumped by [`FaultProxy::cut_all`]; every live connection watches it.
    generation: watch::Sender<u64>,
}

/// A running fault proxy. Dropping it stops accepting (live connections
/// end when cut or closed).
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("healed", &self.healed)
            .field("accepted", &self.accepted)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr, plan: FaultPlan) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            plan: Mutex::new(plan),
            healed: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            generation: watch::channel(0).0,
        });
        let accept = tokio::spawn(accept_loop(listener, upstream, shared.clone()));
        Ok(Self {
            addr,
            shared,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on new connections pass untouched.
    pub fn heal(&self) {
        self.shared.healed.store(true, Ordering::SeqCst);
    }

    /// Cuts every live connection now.
    pub fn cut_all(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections cut by a [`Fault::CutAfter`] or [`FaultProxy::cut_all`].
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        // Watch for cut_all before anything else, so no connection slips
        // between a cut_all and its own start.
        let mut cut = shared.generation.subscribe();
        let n = shared.accepted.fetch_add(1, Ordering::SeqCst);
        let fault = if shared.healed.load(Ordering::SeqCst) {
            Fault::Pass
        } else {
            shared.plan.lock().draw(n)
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let cut_now = async move {
                let _ = cut.changed().await;
            };
            tokio::select! {
                ended = relay(client, server, fault) => {
                    if ended == Ended::Cut {
                        shared.cuts.fetch_add(1, Ordering::SeqCst);
                    }
                }
                () = cut_now => {
                    shared.cuts.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Closed,
    Cut,
}

/// Copies both ways until either side closes or the fault cuts; dropping
/// the sockets closes both.
async fn relay(client: TcpStream, server: TcpStream, fault: Fault) -> Ended {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::select! {
        e = pump(cr, sw, Direction::ToServer, fault) => e,
        e = pump(sr, cw, Direction::ToClient, fault) => e,
    }
}

/// Copies one direction, applying the fault.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    direction: Direction,
    fault: Fault,
) -> Ended {
    let mut buf = vec![0u8; 16 * 1024];
    let mut sent: u64 = 0;
    let mut stalled = false;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return Ended::Closed,
            Ok(n) => n,
        };
        let mut chunk = &buf[..n];
        match fault {
            Fault::Delay { delay } => tokio::time::sleep(delay).await,
            Fault::CutAfter {
                bytes,
                direction: d,
            } if d == direction => {
                let room = usize::try_from(bytes.saturating_sub(sent)).unwrap_or(usize::MAX);
                if room <= chunk.len() {
                    let _ = to.write_all(&chunk[..room]).await;
                    return Ended::Cut;
                }
            }
            Fault::Stall {
                bytes,
                direction: d,
                pause,
            } if d == direction && !stalled && sent + n as u64 >= bytes => {
                let before = usize::try_from(bytes.saturating_sub(sent)).unwrap_or(0);
                if to.write_all(&chunk[..before]).await.is_err() {
                    return Ended::Closed;
                }
                sent += before as u64;
                chunk = &chunk[before..];
                stalled = true;
                tokio::time::sleep(pause).await;
            }
            _ => {}
        }
        if to.write_all(chunk).await.is_err() {
            return Ended::Closed;
        }
        sent += chunk.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// Reads until EOF (or error): what the client got back.
    async fn round_trip(proxy: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(payload).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < payload.len() {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    }

    #[tokio::test]
    async fn cuts_after_exactly_n_bytes_and_keeps_the_prefix_intact() {
        let upstream = echo_server().await;
        let proxy = FaultProxy::start(
            upstream,
            FaultPlan::fixed(vec![
                Fault::CutAfter {
                    bytes: 1000,
                    direction: Direction::ToClient,
                },
                Fault::Delay {
                    delay: Duration::from_millis(1),
                },
                Fault::Stall {
                    bytes: 10,
                    direction: Direction::ToServer,
                    pause: Duration::from_millis(20),
                },
            ]),
        )
        .await
        .unwrap();
        let payload: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let cut = round_trip(proxy.addr(), &payload).await;
        assert_eq!(cut.len(), 1000, "cut after exactly 1000 bytes");
        assert_eq!(cut, payload[..1000], "the bytes before the cut are intact");
        assert_eq!(round_trip(proxy.addr(), &payload).await, payload, "delayed");
        assert_eq!(round_trip(proxy.addr(), &payload).await, payload, "stalled");
        assert_eq!(proxy.cuts(), 1);
    }

    #[tokio::test]
    async fn cut_all_ends_live_connections_and_heal_passes_new_ones() {
        let upstream = echo_server().await;
        let proxy = FaultProxy::start(
            upstream,
            FaultPlan::from_fn(|_| Fault::CutAfter {
                bytes: 1,
                direction: Direction::ToServer,
            }),
        )
        .await
        .unwrap();
        proxy.heal();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello", "healed: passes untouched");
        proxy.cut_all();
        let mut rest = Vec::new();
        let n = s.read_to_end(&mut rest).await.unwrap_or(0);
        assert_eq!(n, 0, "cut: the connection ends");
    }

    #[test]
    fn a_seed_replays_the_same_faults() {
        let draw = |seed| {
            let mut p = FaultPlan::random(seed, FaultMix::default());
            (0..50).map(|n| p.draw(n)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }
}

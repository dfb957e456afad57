//! A TCP proxy in front of each chaos node, for the link faults the kernel here cannot make
//! (no `netem` qdisc): delay, loss, reordering between connections, and slow links. As in
//! etcd's robustness tests, the members know each other (and the clients know them) by the
//! proxy's address, so every connection to a node — from its peers and from clients — passes
//! through its proxy, both ways.
//!
//! The proxy runs in a thread of this process that moved into the node's network namespace
//! (`setns`), so its sockets live there: it listens on the node's address at [`PROXY_PORT`]
//! and connects to the node at its own port in the same namespace. Blackhole routes between
//! namespaces (partitions, [`super::net`]) still cut the proxied paths.
//!
//! A fault on a node is set on its own proxy (connections to it) and, by source address, on
//! every other node's proxy (connections it opens: a leader's appends, a candidate's votes), so
//! it covers the node's traffic both ways. A heal takes effect at once, also on chunks already
//! queued.
//!
//! TCP delivers a byte stream in order and without gaps, so a fault acts on chunks as they
//! are read and keeps their order within a connection:
//! - **delay**: each chunk is held `ms` plus a random jitter of up to `jitter_ms`;
//! - **reorder**: delay with no base and a wide jitter, so messages on different
//!   connections (peers' appends, votes, clients' calls) overtake each other;
//! - **loss**: a lost segment is what TCP retransmits after its timeout (200 ms at least
//!   on Linux), so a "lost" chunk — with the given probability — arrives 200–400 ms late, and
//!   everything behind it on that connection waits (head-of-line blocking);
//! - **slow**: each direction of each connection carries at most `bytes_per_s` (a snapshot
//!   sent to a node crawls).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::rng::SplitMix64;

/// The port each node's proxy listens on (the node itself listens on
/// [`super::cluster::PORT`]).
pub const PROXY_PORT: u16 = 7380;

/// What a proxy does to the bytes it carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkFault {
    /// Passes bytes on at once.
    #[default]
    None,
    /// Holds each chunk `ms` plus up to `jitter_ms` more.
    Delay {
        /// Fixed delay.
        ms: u64,
        /// Random extra delay, 0 to this.
        jitter_ms: u64,
    },
    /// Delays each chunk by 200–400 ms (a retransmission) with probability `percent`/100.
    Loss {
        /// How many chunks in a hundred.
        percent: u8,
    },
    /// At most this many bytes a second per direction of each connection.
    Slow {
        /// The rate.
        bytes_per_s: u64,
    },
}

/// What a proxy did, for the run's report.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Bytes carried (both ways).
    pub bytes: AtomicU64,
    /// Chunks held by a fault (delayed, "lost", or slowed).
    pub held: AtomicU64,
}

struct Shared {
    /// What this proxy does to every connection, and to connections from given addresses
    /// (a fault on another node that must reach its outgoing connections too).
    faults: Mutex<Faults>,
    /// Bumped by every change of fault: chunks stamped before it are sent at once (a heal
    /// takes effect on what is already queued).
    epoch: watch::Sender<u64>,
    rng: Mutex<SplitMix64>,
    stats: ProxyStats,
}

#[derive(Default)]
struct Faults {
    all: LinkFault,
    from: std::collections::HashMap<IpAddr, LinkFault>,
}

impl Shared {
    fn epoch(&self) -> u64 {
        *self.epoch.borrow()
    }

    /// Changes the faults and starts a new epoch.
    fn change(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.faults.lock().expect("proxy fault lock"));
        self.epoch.send_modify(|e| *e += 1);
    }

    /// When a chunk of `len` bytes read now, on a connection from `peer`, may be written,
    /// given the previous chunk's time on this direction of this connection (`last`) — never
    /// before it: TCP keeps the order.
    fn due(&self, now: Instant, len: usize, last: Instant, peer: IpAddr) -> Instant {
        let fault = {
            let f = self.faults.lock().expect("proxy fault lock");
            match f.from.get(&peer) {
                Some(&by_peer) if by_peer != LinkFault::None => by_peer,
                _ => f.all,
            }
        };
        let mut rng = self.rng.lock().expect("proxy rng lock");
        let at = match fault {
            LinkFault::None => now,
            LinkFault::Delay { ms, jitter_ms } => {
                now + Duration::from_millis(ms + rng.range(0, jitter_ms))
            }
            LinkFault::Loss { percent } if rng.chance(f64::from(percent) / 100.0) => {
                now + Duration::from_millis(rng.range(200, 400))
            }
            LinkFault::Loss { .. } => now,
            LinkFault::Slow { bytes_per_s } => {
                let per = Duration::from_secs_f64(len as f64 / bytes_per_s.max(1) as f64);
                last.max(now) + per
            }
        };
        if at > now {
            self.stats.held.fetch_add(1, Ordering::Relaxed);
        }
        at.max(last)
    }
}

/// One running proxy; stopped (every connection through it closed) when dropped.
pub struct Proxy {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proxy({})", self.addr)
    }
}

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The namespace could not be entered.
    #[error("cannot enter network namespace {ns} (/run/netns/{ns}): {why}")]
    Namespace {
        /// Its name.
        ns: String,
        /// Why.
        why: String,
    },
    /// The listener could not be bound.
    #[error("cannot listen on {addr} for the proxy: {why}")]
    Listen {
        /// Where.
        addr: SocketAddr,
        /// Why.
        why: String,
    },
}

impl Proxy {
    /// Starts a proxy listening on `listen` and forwarding to `upstream`, inside the network
    /// namespace `ns` (`ip netns` name), or in this process's own when `None`. `seed` draws
    /// its jitter and losses.
    pub fn start(
        ns: Option<&str>,
        listen: SocketAddr,
        upstream: SocketAddr,
        seed: u64,
    ) -> Result<Proxy, ProxyError> {
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::default()),
            epoch: watch::channel(0).0,
            rng: Mutex::new(SplitMix64::new(seed)),
            stats: ProxyStats::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ns = ns.map(str::to_string);
        let inner = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("chaos-proxy-{listen}"))
            .spawn(move || {
                // setns applies to this thread only: sockets made here belong to `ns`.
                if let Some(ns) = &ns {
                    if let Err(why) = enter_netns(ns) {
                        let _ = ready_tx.send(Err(ProxyError::Namespace {
                            ns: ns.clone(),
                            why,
                        }));
                        return;
                    }
                }
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(ProxyError::Listen {
                            addr: listen,
                            why: format!("no runtime: {e}"),
                        }));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match TcpListener::bind(listen).await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(ProxyError::Listen {
                                addr: listen,
                                why: e.to_string(),
                            }));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    serve(listener, upstream, inner, stopped).await;
                });
            })
            .map_err(|e| ProxyError::Listen {
                addr: listen,
                why: format!("no thread: {e}"),
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Proxy {
                shared,
                stop,
                thread: Some(thread),
                addr: listen,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ProxyError::Listen {
                addr: listen,
                why: "the proxy's thread ended before it listened".into(),
            }),
        }
    }

    /// From now on, every chunk (on new and open connections) gets `fault`; chunks queued
    /// under an earlier fault go at once.
    pub fn set(&self, fault: LinkFault) {
        self.shared.change(|f| f.all = fault);
    }

    /// From now on, chunks of connections from `peer` get `fault` (over the proxy's own; a
    /// node's fault reaches the connections it opens to others this way).
    pub fn set_from(&self, peer: IpAddr, fault: LinkFault) {
        self.shared.change(|f| {
            f.from.insert(peer, fault);
        });
    }

    /// Every fault removed (its own and per peer); queued chunks go at once.
    pub fn clear(&self) {
        self.shared.change(|f| *f = Faults::default());
    }

    /// What it did so far.
    pub fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn enter_netns(ns: &str) -> Result<(), String> {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).map_err(|e| e.to_string())?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())
}

async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let (down, from) = match accepted {
                    Ok(a) => a,
                    Err(_) => {
                        // Out of descriptors or the like: do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let peer = from.ip();
                shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                let shared = shared.clone();
                conns.spawn(async move {
                    // The node not answering (killed, paused, not yet started) closes the
                    // client's connection, as a refused connect would.
                    let Ok(Ok(up)) =
                        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(upstream)).await
                    else {
                        return;
                    };
                    let _ = down.set_nodelay(true);
                    let _ = up.set_nodelay(true);
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    // When either direction ends, the other goes too (a closed peer).
                    tokio::select! {
                        _ = pump(dr, uw, shared.clone(), peer) => {}
                        _ = pump(ur, dw, shared, peer) => {}
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

/// Carries one direction: a reader that stamps each chunk with its due time, and a writer
/// that writes each at that time, in order. The queue between them is bounded (the reader
/// stops reading when 256 chunks wait, as a full TCP window would).
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    shared: Arc<Shared>,
    peer: IpAddr,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, u64, Vec<u8>)>(256);
    let reader = {
        let shared = shared.clone();
        async move {
            let (mut last, mut epoch) = (Instant::now(), shared.epoch());
            loop {
                let mut buf = vec![0u8; 16 * 1024];
                let n = match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buf.truncate(n);
                shared.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                let now = Instant::now();
                if shared.epoch() != epoch {
                    // The fault changed: nothing waits behind chunks stamped under the old one.
                    (last, epoch) = (now, shared.epoch());
                }
                last = shared.due(now, n, last, peer);
                if tx.send((last, epoch, buf)).await.is_err() {
                    break;
                }
            }
        }
    };
    let writer = async move {
        let mut epochs = shared.epoch.subscribe();
        while let Some((at, epoch, chunk)) = rx.recv().await {
            // Held until its time, unless the fault changed since (a heal frees the queue).
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = epochs.wait_for(|e| *e != epoch) => {}
            }
            if w.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    };
    // The writer drains what the reader queued before the reader's end closes the channel.
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant as StdInstant;

    /// An echo server on loopback and a proxy in front of it (in this namespace).
    async fn echo_behind_proxy() -> (Proxy, tokio::task::JoinHandle<()>) {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let upstream = echo.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            while let Ok((s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        // Find a free port for the proxy.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        let listen = probe.local_addr().expect("addr");
        drop(probe);
        let proxy = Proxy::start(None, listen, upstream, 7).expect("proxy");
        (proxy, server)
    }

    async fn round_trip(s: &mut TcpStream, data: &[u8]) -> (Vec<u8>, Duration) {
        let t0 = StdInstant::now();
        s.write_all(data).await.expect("write");
        let mut back = vec![0u8; data.len()];
        s.read_exact(&mut back).await.expect("read");
        (back, t0.elapsed())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delay_holds_each_direction_and_none_passes_bytes_unchanged() {
        let (proxy, _srv) = echo_behind_proxy().await;
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        let (back, _) = round_trip(&mut s, b"hello").await;
        assert_eq!(back, b"hello");
        assert_eq!(proxy.stats().held.load(Ordering::Relaxed), 0);
        proxy.set(LinkFault::Delay {
            ms: 150,
            jitter_ms: 0,
        });
        let (back, took) = round_trip(&mut s, b"ping").await;
        assert_eq!(back, b"ping");
        // Held on the way there and on the way back.
        assert!(took >= Duration::from_millis(300), "round trip {took:?}");
        assert!(proxy.stats().held.load(Ordering::Relaxed) >= 2);
        assert_eq!(proxy.stats().connections.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jitter_and_losses_keep_a_connections_bytes_in_order() {
        let (proxy, _srv) = echo_behind_proxy().await;
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        let mut rng = SplitMix64::new(3);
        for (k, fault) in [
            LinkFault::Delay {
                ms: 0,
                jitter_ms: 30,
            },
            LinkFault::Loss { percent: 30 },
        ]
        .into_iter()
        .enumerate()
        {
            proxy.set(fault);
            let data: Vec<u8> = (0..64 * 1024).map(|_| rng.next_u64() as u8).collect();
            // Written in many small pieces (many chunks, each with its own draw).
            let (mut r, mut w) = s.split();
            let send = async {
                for piece in data.chunks(997) {
                    w.write_all(piece).await.expect("write");
                    tokio::task::yield_now().await;
                }
            };
            let mut back = vec![0u8; data.len()];
            let recv = r.read_exact(&mut back);
            let (_, got) = tokio::join!(send, recv);
            got.expect("read");
            assert!(back == data, "fault {k}: bytes changed or reordered");
        }
        assert!(proxy.stats().held.load(Ordering::Relaxed) > 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_link_carries_no_more_than_its_rate() {
        let (proxy, _srv) = echo_behind_proxy().await;
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        proxy.set(LinkFault::Slow {
            bytes_per_s: 32 * 1024,
        });
        let data = vec![0x5a; 24 * 1024];
        let (back, took) = round_trip(&mut s, &data).await;
        assert_eq!(back, data);
        // 24 KiB at 32 KiB/s is 0.75 s each way; the two ways overlap chunk by chunk.
        assert!(took >= Duration::from_millis(700), "took {took:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clearing_a_slow_link_frees_what_it_queued_at_once() {
        let (proxy, _srv) = echo_behind_proxy().await;
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        proxy.set(LinkFault::Slow { bytes_per_s: 1024 });
        // 64 KiB at 1 KiB/s would take a minute each way.
        let data = vec![7u8; 64 * 1024];
        let (mut r, mut w) = s.split();
        let send = async {
            w.write_all(&data).await.expect("write");
            tokio::time::sleep(Duration::from_millis(300)).await;
            proxy.clear();
        };
        let mut back = vec![0u8; data.len()];
        let t0 = StdInstant::now();
        let (_, got) = tokio::join!(send, r.read_exact(&mut back));
        got.expect("read");
        assert_eq!(back, data);
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "took {:?}",
            t0.elapsed()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fault_from_one_peer_leaves_the_others_alone() {
        let (proxy, _srv) = echo_behind_proxy().await;
        // Connections come from 127.0.0.1 here: a fault from another address changes nothing.
        proxy.set_from(
            "10.9.9.9".parse().expect("ip"),
            LinkFault::Delay {
                ms: 400,
                jitter_ms: 0,
            },
        );
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        let (_, took) = round_trip(&mut s, b"x").await;
        assert!(took < Duration::from_millis(400), "{took:?}");
        proxy.set_from(
            "127.0.0.1".parse().expect("ip"),
            LinkFault::Delay {
                ms: 200,
                jitter_ms: 0,
            },
        );
        let (_, took) = round_trip(&mut s, b"y").await;
        assert!(took >= Duration::from_millis(400), "{took:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_upstream_closes_the_connection_and_dropping_the_proxy_closes_all() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        let dead = probe.local_addr().expect("addr");
        drop(probe); // nothing listens there now
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        let listen = probe.local_addr().expect("addr");
        drop(probe);
        let proxy = Proxy::start(None, listen, dead, 1).expect("proxy");
        let mut s = TcpStream::connect(listen).await.expect("connect");
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
            .await
            .expect("closed within 10 s");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        drop(proxy);
        assert!(TcpStream::connect(listen).await.is_err(), "still listening");
    }

    #[test]
    fn a_missing_namespace_is_a_clear_error() {
        let e = Proxy::start(
            Some("raftipam-no-such-namespace"),
            "127.0.0.1:1".parse().expect("addr"),
            "127.0.0.1:2".parse().expect("addr"),
            1,
        )
        .expect_err("no such namespace");
        assert!(
            e.to_string()
                .contains("cannot enter network namespace raftipam-no-such-namespace"),
            "{e}"
        );
    }
}

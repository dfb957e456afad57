//! A passive watcher: the (IP, MAC) pairs the ARP and Neighbor Discovery traffic of an
//! interface shows, for as long as the [`Watcher`] lives.
//!
//! Two threads (one ARP socket, one IPv6 socket) read frames, keep what [`observe`] makes of
//! them and hand it over through a bounded channel: when the consumer falls behind, new
//! observations are dropped and counted ([`Watcher::dropped`]), never queued without bound.
//! Dropping the watcher stops and joins its threads within [`WATCH_POLL`].

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use allocator_core::Mac;

use super::packet::{self, ArpOp, ETHERTYPE_ARP, ETHERTYPE_IPV6};
use super::socket::{PacketSocket, WATCH_POLL};
use super::ProbeError;

/// What kind of frame showed a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Seen {
    /// An ARP request from an address (the device holds its sender IP).
    ArpRequest,
    /// An ARP reply.
    ArpReply,
    /// An ARP probe (sender 0.0.0.0): the device is about to take the target IP.
    ArpProbe,
    /// A Neighbor Advertisement for the target.
    NeighborAdvert,
    /// A Neighbor Solicitation from an address (the device holds its source).
    NeighborSolicit,
    /// A duplicate address detection solicitation (from `::`): the device is about to take
    /// the target.
    DadProbe,
}

/// One pair the traffic showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The address.
    pub ip: IpAddr,
    /// The device that holds (or is taking) it.
    pub mac: Mac,
    /// From what.
    pub seen: Seen,
}

/// What a frame shows, if anything: ARP and NDP only, never our own MAC's.
pub fn observe(frame: &[u8], ours: Mac) -> Option<Observation> {
    if let Some(a) = packet::parse_arp(frame) {
        if a.sender_mac == ours || !a.sender_mac.is_unicast() {
            return None;
        }
        let (ip, seen) = match a.op {
            _ if a.is_probe() => (a.target_ip, Seen::ArpProbe),
            ArpOp::Request => (a.sender_ip, Seen::ArpRequest),
            ArpOp::Reply => (a.sender_ip, Seen::ArpReply),
        };
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return None;
        }
        return Some(Observation {
            ip: IpAddr::V4(ip),
            mac: a.sender_mac,
            seen,
        });
    }
    let n = packet::parse_neighbor(frame)?;
    if n.mac == ours || !n.mac.is_unicast() {
        return None;
    }
    let (ip, seen) = if n.advert {
        (n.target, Seen::NeighborAdvert)
    } else if n.source.is_unspecified() {
        (n.target, Seen::DadProbe)
    } else {
        (n.source, Seen::NeighborSolicit)
    };
    if ip.is_unspecified() || ip.is_multicast() {
        return None;
    }
    Some(Observation {
        ip: IpAddr::V6(ip),
        mac: n.mac,
        seen,
    })
}

/// Watches an interface's ARP and NDP traffic until dropped.
pub struct Watcher {
    rx: Receiver<Observation>,
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Watcher {
    /// Starts watching `interface`, keeping at most `capacity` observations the caller has
    /// not taken yet (at least 1). Needs `CAP_NET_RAW`.
    pub fn start(interface: &str, capacity: usize) -> Result<Watcher, ProbeError> {
        let (tx, rx) = sync_channel(capacity.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        // Both sockets are opened here, in the caller's network namespace, before any thread.
        let sockets = [
            PacketSocket::open(interface, ETHERTYPE_ARP)?,
            PacketSocket::open(interface, ETHERTYPE_IPV6)?,
        ];
        let mut threads = Vec::new();
        for sock in sockets {
            let (tx, stop, dropped) = (tx.clone(), stop.clone(), dropped.clone());
            let name = format!("raftipam-watch-{interface}");
            let t = std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    let mut buf = vec![0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        let got = match sock.recv(&mut buf, Instant::now() + WATCH_POLL) {
                            Ok(Some(got)) => got,
                            Ok(None) => continue,
                            Err(e) => {
                                tracing::warn!("watching {}: {e}", sock.interface);
                                return;
                            }
                        };
                        if got.outgoing {
                            continue;
                        }
                        let Some(o) = observe(&buf[..got.len.min(buf.len())], sock.mac) else {
                            continue;
                        };
                        match tx.try_send(o) {
                            Ok(()) => {}
                            Err(TrySendError::Full(_)) => {
                                dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(TrySendError::Disconnected(_)) => return,
                        }
                    }
                })
                .map_err(|e| ProbeError::Io {
                    interface: interface.to_string(),
                    what: "starting a watcher thread",
                    source: e,
                })?;
            threads.push(t);
        }
        Ok(Watcher {
            rx,
            stop,
            dropped,
            threads,
        })
    }

    /// The next observation, waiting up to `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Observation> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The observations waiting now.
    pub fn drain(&self) -> Vec<Observation> {
        self.rx.try_iter().collect()
    }

    /// Observations dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const OURS: Mac = Mac([0x02, 0, 0, 0, 0, 1]);
    const THEIRS: Mac = Mac([0x02, 0, 0, 0, 0, 2]);

    #[test]
    fn a_probe_shows_the_address_being_taken_and_our_own_frames_show_nothing() {
        let target = Ipv4Addr::new(10, 213, 0, 8);
        let theirs = packet::arp_probe(THEIRS, target);
        assert_eq!(
            observe(&theirs, OURS),
            Some(Observation {
                ip: IpAddr::V4(target),
                mac: THEIRS,
                seen: Seen::ArpProbe
            })
        );
        assert_eq!(observe(&packet::arp_probe(OURS, target), OURS), None);
        let v6 = "fd00::8".parse().expect("address");
        let dad = packet::neighbor_solicitation(THEIRS, v6);
        let o = observe(&dad, OURS).expect("a DAD probe");
        assert_eq!((o.ip, o.seen), (IpAddr::V6(v6), Seen::DadProbe));
        assert_eq!(observe(&[0u8; 60], OURS), None);
    }
}

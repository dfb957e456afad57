//! Checks on the LAN: is some device already answering for an address? (issue 26)
//!
//! A Docker host hands addresses of a subnet that other machines share. A printer, a VM or a
//! host configured by hand may hold one raftipam believes free. Before an address is used,
//! the host agent can **probe** it — an ARP probe (RFC 5227) for IPv4, a Neighbor
//! Solicitation for duplicate address detection (RFC 4862) for IPv6 — and a **watcher** can
//! read the ARP and Neighbor Discovery traffic of the interface for addresses in use. What
//! either finds is reported to the cluster as
//! [`Op::ReportConflict`](allocator_core::Op::ReportConflict), which keeps a free address out
//! of allocations for its pool's probation ([`allocator_core::conflict`]).
//!
//! - [`packet`]: the frames, built and read (pure, never panics on any input).
//! - [`probe`]: one check of one address on one interface, waiting up to a timeout
//!   ([`DEFAULT_TIMEOUT`], 100 ms) for an answer, ignoring our own frames and unrelated
//!   traffic.
//! - [`Watcher`]: observations of (IP, MAC) from the interface's ARP and NDP traffic, in a
//!   bounded buffer, until it is dropped.
//! - [`interface_for`]: which interface a subnet is on the link of.
//!
//! Both need `CAP_NET_RAW` (a raw `AF_PACKET` socket); without it they fail with
//! [`ProbeError::NeedsNetRaw`]. The calls block (run them on a blocking thread) and act in
//! the network namespace of the calling thread. Linux only.

pub mod agent;
pub mod check;
pub mod packet;
mod route;
mod socket;
mod watch;

use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use allocator_core::Mac;
use ipnet::IpNet;
use thiserror::Error;

pub use agent::{LanAgent, LanAgentConfig};
pub use check::{Checked, LanChecks};
pub use route::{choose, interface_for, parse_ipv6_route, parse_route, OnLink};
#[doc(hidden)]
pub use watch::observe as watch_observe;
pub use watch::{Observation, Seen, Watcher};

use packet::{ETHERTYPE_ARP, ETHERTYPE_IPV6};
use socket::PacketSocket;

/// How long a probe waits for an answer unless told otherwise: a device on the same link
/// answers within a few milliseconds (Kea's ping check waits as long).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

/// Why a check could not be made.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// Raw sockets are refused to this process.
    #[error("checks need CAP_NET_RAW (run as root, or give the binary the capability: `setcap cap_net_raw+ep`); opening a packet socket on {interface} was refused")]
    NeedsNetRaw {
        /// The interface.
        interface: String,
    },
    /// No interface of that name (in this network namespace).
    #[error("no network interface named {0:?} here (list them with `ip link`)")]
    NoInterface(String),
    /// The interface has no Ethernet address (a tunnel, a loopback).
    #[error(
        "interface {0} has no Ethernet address: ARP and neighbor discovery need an Ethernet link"
    )]
    NoMac(String),
    /// No on-link route covers the subnet.
    #[error("no interface of this host has subnet {0} on its link (no route to it without a gateway): addresses of it cannot be checked here; is the bridge or macvlan parent up and addressed?")]
    NotOnLink(IpNet),
    /// Something else the system refused.
    #[error("{what} on {interface}: {source}")]
    Io {
        /// The interface (empty where none was involved).
        interface: String,
        /// What was being done.
        what: &'static str,
        /// The system's error.
        #[source]
        source: io::Error,
    },
}

/// Checks whether a device on the link of `interface` answers for `addr`: sends an ARP probe
/// (IPv4) or a duplicate address detection solicitation (IPv6) and waits up to `timeout` for
/// an answer for that address. `Some(mac)` is the answering device's MAC; `None`, no answer.
///
/// Our own frames and traffic about other addresses are ignored, and so is another device's
/// probe of the same address (RFC 5227 §2.1.1 counts it as a conflict, but here it is most
/// often another raftipam host's: one handing the address out, or sweeping it — neither owns
/// it on the wire; a device that then takes the address announces it, and the probes and the
/// watch see that). A probe is one frame: a lost frame can miss a device (callers that must
/// be sure probe again).
pub fn probe(interface: &str, addr: IpAddr, timeout: Duration) -> Result<Option<Mac>, ProbeError> {
    let ethertype = match addr {
        IpAddr::V4(_) => ETHERTYPE_ARP,
        IpAddr::V6(_) => ETHERTYPE_IPV6,
    };
    let sock = PacketSocket::open(interface, ethertype)?;
    let ours = sock.mac;
    let deadline = Instant::now() + timeout;
    match addr {
        IpAddr::V4(v4) => sock.send(&packet::arp_probe(ours, v4), Mac::BROADCAST)?,
        IpAddr::V6(v6) => {
            let frame = packet::neighbor_solicitation(ours, v6);
            sock.send(&frame, packet::multicast_mac(packet::solicited_node(v6)))?
        }
    }
    let mut buf = vec![0u8; 2048];
    while let Some(got) = sock.recv(&mut buf, deadline)? {
        let frame = &buf[..got.len.min(buf.len())];
        if got.outgoing || frame.get(6..12) == Some(&ours.0[..]) {
            continue;
        }
        if let Some(mac) = answer(frame, addr, ours) {
            return Ok(Some(mac));
        }
    }
    Ok(None)
}

/// Whether `frame` says a device other than `ours` holds (or is taking) `addr`: its MAC.
fn answer(frame: &[u8], addr: IpAddr, ours: Mac) -> Option<Mac> {
    match addr {
        IpAddr::V4(v4) => {
            let arp = packet::parse_arp(frame)?;
            let holds = arp.sender_ip == v4 && !arp.is_probe();
            (holds && arp.sender_mac != ours).then_some(arp.sender_mac)
        }
        IpAddr::V6(v6) => {
            let nd = packet::parse_neighbor(frame)?;
            let holds = nd.advert && nd.target == v6;
            (holds && nd.mac != ours).then_some(nd.mac)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const OURS: Mac = Mac([0x02, 0, 0, 0, 0, 1]);
    const THEIRS: Mac = Mac([0x02, 0, 0, 0, 0, 2]);

    fn arp(op: u16, sender: Mac, sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&sender.0);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, op as u8]);
        f.extend_from_slice(&sender.0);
        f.extend_from_slice(&sender_ip);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target_ip);
        f
    }

    #[test]
    fn only_a_frame_about_the_address_from_another_device_answers_a_probe() {
        let a = IpAddr::V4(Ipv4Addr::new(10, 213, 0, 5));
        let reply = arp(2, THEIRS, [10, 213, 0, 5], [0; 4]);
        assert_eq!(answer(&reply, a, OURS), Some(THEIRS));
        let gratuitous = arp(1, THEIRS, [10, 213, 0, 5], [10, 213, 0, 5]);
        assert_eq!(answer(&gratuitous, a, OURS), Some(THEIRS));
        // Another host probing it too (handing it out, or sweeping): no answer — it was the
        // lab's false conflict, two raftipam hosts' probes of one address taken for a device.
        let their_probe = arp(1, THEIRS, [0; 4], [10, 213, 0, 5]);
        assert_eq!(
            answer(&their_probe, a, OURS),
            None,
            "a probe is not a claim"
        );
        let our_probe = arp(1, OURS, [0; 4], [10, 213, 0, 5]);
        assert_eq!(answer(&our_probe, a, OURS), None);
        let other = arp(2, THEIRS, [10, 213, 0, 6], [0; 4]);
        assert_eq!(answer(&other, a, OURS), None, "another address");
        let asking = arp(1, THEIRS, [10, 213, 0, 9], [10, 213, 0, 5]);
        assert_eq!(answer(&asking, a, OURS), None, "someone asking for it");
        assert_eq!(answer(&[0u8; 10], a, OURS), None);
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = ProbeError::NeedsNetRaw {
            interface: "br0".into(),
        };
        assert!(e.to_string().starts_with("checks need CAP_NET_RAW"), "{e}");
        let e = ProbeError::NotOnLink("10.9.0.0/24".parse().expect("net"));
        assert!(e.to_string().contains("10.9.0.0/24"), "{e}");
        let e = probe(
            "no-such-if0",
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            DEFAULT_TIMEOUT,
        )
        .expect_err("no interface");
        assert!(
            matches!(
                e,
                ProbeError::NoInterface(_) | ProbeError::NeedsNetRaw { .. }
            ),
            "{e}"
        );
        let e =
            probe("a/b", IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_TIMEOUT).expect_err("not a name");
        assert!(matches!(e, ProbeError::NoInterface(_)), "{e}");
    }
}

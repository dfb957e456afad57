//! A raw packet socket (`AF_PACKET`) bound to one interface and one EtherType: what a check
//! sends its probe on and reads the answers from. Opening one needs `CAP_NET_RAW`.
//!
//! Owns the one `unsafe` call of the crate ([`link_addr`]: nix builds a `sockaddr_ll` only
//! from raw memory). Everything else goes through nix's safe calls. The socket lives in the
//! network namespace of the thread that opens it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use allocator_core::Mac;
use nix::errno::Errno;
use nix::sys::socket::{
    bind, recvfrom, sendto, setsockopt, socket, sockopt, AddressFamily, LinkAddr, MsgFlags,
    SockFlag, SockType, SockaddrLike,
};
use nix::sys::time::TimeVal;

use super::ProbeError;

/// `sll_pkttype` of a frame this host sent (`PACKET_OUTGOING`): our own probe, looped back to
/// the packet sockets of the interface.
const PACKET_OUTGOING: u8 = 4;

/// A packet socket bound to `interface` for one EtherType.
pub(crate) struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
    ethertype: u16,
    /// The interface's MAC.
    pub mac: Mac,
    /// The interface's name.
    pub interface: String,
}

/// A frame received: how long it is and whether this host sent it.
pub(crate) struct Received {
    pub len: usize,
    pub outgoing: bool,
}

/// The link-layer address of `ifindex` for `ethertype`, to `dst` (zeros for a bind).
#[allow(unsafe_code)]
fn link_addr(ifindex: i32, ethertype: u16, dst: Mac) -> Option<LinkAddr> {
    let mut addr = [0u8; 8];
    addr[..6].copy_from_slice(&dst.0);
    let sll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ethertype.to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: addr,
    };
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `sll` is a fully initialised `sockaddr_ll` that outlives the call, and `len` is
    // its size: `from_raw` checks the family and the length and copies exactly those bytes.
    unsafe {
        LinkAddr::from_raw(
            (&sll as *const libc::sockaddr_ll).cast::<libc::sockaddr>(),
            Some(len),
        )
    }
}

/// The index and MAC of `interface`, in the calling thread's network namespace.
pub(crate) fn interface_info(interface: &str) -> Result<(i32, Mac), ProbeError> {
    if interface.is_empty() || interface.len() > 15 || interface.contains(['/', '\0']) {
        return Err(ProbeError::NoInterface(interface.to_string()));
    }
    let ifindex = nix::net::if_::if_nametoindex(interface)
        .map_err(|_| ProbeError::NoInterface(interface.to_string()))?;
    let ifindex =
        i32::try_from(ifindex).map_err(|_| ProbeError::NoInterface(interface.to_string()))?;
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| ProbeError::Io {
        interface: interface.to_string(),
        what: "listing the interfaces' addresses",
        source: io::Error::from(e),
    })?;
    let mac = addrs
        .filter(|a| a.interface_name == interface)
        .find_map(|a| a.address?.as_link_addr()?.addr())
        .map(Mac)
        .filter(Mac::is_unicast)
        .ok_or_else(|| ProbeError::NoMac(interface.to_string()))?;
    Ok((ifindex, mac))
}

impl PacketSocket {
    /// Opens a packet socket on `interface` that reads frames of `ethertype`.
    pub fn open(interface: &str, ethertype: u16) -> Result<PacketSocket, ProbeError> {
        let (ifindex, mac) = interface_info(interface)?;
        let io_err = |what: &'static str, e: Errno| ProbeError::Io {
            interface: interface.to_string(),
            what,
            source: io::Error::from(e),
        };
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| match e {
            Errno::EPERM | Errno::EACCES => ProbeError::NeedsNetRaw {
                interface: interface.to_string(),
            },
            e => io_err("opening a packet socket", e),
        })?;
        let at = link_addr(ifindex, ethertype, Mac::default())
            .ok_or_else(|| io_err("making its link-layer address", Errno::EINVAL))?;
        bind(fd.as_raw_fd(), &at).map_err(|e| io_err("binding a packet socket", e))?;
        Ok(PacketSocket {
            fd,
            ifindex,
            ethertype,
            mac,
            interface: interface.to_string(),
        })
    }

    fn io(&self, what: &'static str, e: Errno) -> ProbeError {
        ProbeError::Io {
            interface: self.interface.clone(),
            what,
            source: io::Error::from(e),
        }
    }

    /// Sends `frame` (a whole Ethernet frame) to `dst`.
    pub fn send(&self, frame: &[u8], dst: Mac) -> Result<(), ProbeError> {
        let to = link_addr(self.ifindex, self.ethertype, dst)
            .ok_or_else(|| self.io("making the destination", Errno::EINVAL))?;
        loop {
            match sendto(self.fd.as_raw_fd(), frame, &to, MsgFlags::empty()) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(self.io("sending a probe", e)),
            }
        }
    }

    /// Reads one frame into `buf`, waiting until `deadline`; `None` once it has passed.
    pub fn recv(&self, buf: &mut [u8], deadline: Instant) -> Result<Option<Received>, ProbeError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // A zero timeout would wait for ever: at least a millisecond.
            let wait = TimeVal::new(
                left.as_secs() as _,
                left.subsec_micros()
                    .max(if left.as_secs() == 0 { 1_000 } else { 0 }) as _,
            );
            setsockopt(&self.fd, sockopt::ReceiveTimeout, &wait)
                .map_err(|e| self.io("setting the read timeout", e))?;
            match recvfrom::<LinkAddr>(self.fd.as_raw_fd(), buf) {
                Ok((len, from)) => {
                    let outgoing = from.is_some_and(|f| f.pkttype() == PACKET_OUTGOING);
                    return Ok(Some(Received { len, outgoing }));
                }
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => return Err(self.io("reading", e)),
            }
        }
    }
}

/// How long a read waits at most before the watcher looks whether it was dropped.
pub(crate) const WATCH_POLL: Duration = Duration::from_millis(100);

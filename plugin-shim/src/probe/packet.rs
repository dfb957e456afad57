//! The frames of a check on the LAN, built and read as bytes: no I/O here.
//!
//! - IPv4 (RFC 5227): an **ARP probe** is a broadcast ARP request whose sender IP is 0.0.0.0
//!   (so no neighbour's cache learns anything from it), sender MAC ours, target IP the address
//!   checked. A device that holds the address answers with an ARP reply; another one checking
//!   the same address sends a probe of its own.
//! - IPv6 (RFC 4861, RFC 4862): duplicate address detection sends a **Neighbor
//!   Solicitation** from `::` to the target's solicited-node multicast group
//!   (`ff02::1:ffXX:XXXX`, Ethernet `33:33:ff:XX:XX:XX`), hop limit 255, without a source
//!   link-layer address option (RFC 4861 §4.3 forbids it from `::`). A device that holds the
//!   address answers with a **Neighbor Advertisement** to all nodes.
//!
//! The parsers take any bytes and never panic: a frame that is not what they read, or is cut
//! short, or whose ICMPv6 checksum is wrong, gives `None`. Owns the layouts and the ICMPv6
//! checksum; never opens a socket (`socket.rs` does).

use std::net::{Ipv4Addr, Ipv6Addr};

use allocator_core::Mac;

/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of an 802.1Q VLAN tag.
const ETHERTYPE_VLAN: u16 = 0x8100;
/// Ethernet header: destination, source, EtherType.
const ETH_LEN: usize = 14;
/// An ARP packet for IPv4 over Ethernet.
const ARP_LEN: usize = 28;
/// Shortest Ethernet frame without its checksum: shorter frames are padded with zeros.
const MIN_FRAME: usize = 60;
const IPV6_LEN: usize = 40;
/// IPv6's next header number of ICMPv6.
const NEXT_ICMPV6: u8 = 58;
const ICMPV6_NS: u8 = 135;
const ICMPV6_NA: u8 = 136;
/// Neighbor Discovery options: source and target link-layer address.
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;

/// ARP's two operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOp {
    /// Who has the target IP?
    Request,
    /// The sender has the sender IP.
    Reply,
}

/// What an ARP packet says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// Request or reply.
    pub op: ArpOp,
    /// The sender's MAC (from the ARP body, not the Ethernet header).
    pub sender_mac: Mac,
    /// The sender's IP: 0.0.0.0 in a probe.
    pub sender_ip: Ipv4Addr,
    /// The target's MAC (zeros in a request).
    pub target_mac: Mac,
    /// The target's IP.
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// Whether it is an RFC 5227 probe: a request from 0.0.0.0.
    pub fn is_probe(&self) -> bool {
        self.op == ArpOp::Request && self.sender_ip.is_unspecified()
    }
}

/// What a Neighbor Solicitation or Advertisement says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbor {
    /// Solicitation (135) or advertisement (136).
    pub advert: bool,
    /// The IPv6 source: `::` in a duplicate address detection probe.
    pub source: Ipv6Addr,
    /// The target address.
    pub target: Ipv6Addr,
    /// The link-layer address option (source's in a solicitation, target's in an
    /// advertisement), else the Ethernet source.
    pub mac: Mac,
}

fn mac_at(b: &[u8], at: usize) -> Option<Mac> {
    let s = b.get(at..at + 6)?;
    let mut m = [0u8; 6];
    m.copy_from_slice(s);
    Some(Mac(m))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The EtherType and where the payload starts, past one VLAN tag if there is one.
fn ethertype(frame: &[u8]) -> Option<(u16, usize)> {
    let t = u16_at(frame, 12)?;
    if t == ETHERTYPE_VLAN {
        return Some((u16_at(frame, 16)?, ETH_LEN + 4));
    }
    Some((t, ETH_LEN))
}

/// An RFC 5227 ARP probe for `target` from the interface with MAC `ours`: broadcast, sender
/// IP 0.0.0.0, padded to the shortest Ethernet frame.
pub fn arp_probe(ours: Mac, target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(MIN_FRAME);
    f.extend_from_slice(&Mac::BROADCAST.0);
    f.extend_from_slice(&ours.0);
    f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
    f.extend_from_slice(&ours.0);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f.resize(MIN_FRAME, 0);
    f
}

/// Reads an ARP request or reply for IPv4 over Ethernet.
pub fn parse_arp(frame: &[u8]) -> Option<Arp> {
    let (t, at) = ethertype(frame)?;
    if t != ETHERTYPE_ARP {
        return None;
    }
    let a = frame.get(at..at + ARP_LEN)?;
    // Ethernet (1), IPv4 (0x0800), 6-byte and 4-byte addresses.
    if a[..6] != [0x00, 0x01, 0x08, 0x00, 6, 4] {
        return None;
    }
    let op = match u16_at(a, 6)? {
        1 => ArpOp::Request,
        2 => ArpOp::Reply,
        _ => return None,
    };
    let ip = |at: usize| Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]);
    Some(Arp {
        op,
        sender_mac: mac_at(a, 8)?,
        sender_ip: ip(14),
        target_mac: mac_at(a, 18)?,
        target_ip: ip(24),
    })
}

/// The solicited-node multicast group of `addr`: `ff02::1:ff` and its last 24 bits.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The Ethernet address of an IPv6 multicast group: `33:33` and its last 32 bits.
pub fn multicast_mac(group: Ipv6Addr) -> Mac {
    let o = group.octets();
    Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The ICMPv6 checksum of `msg` (its checksum field zero or not: it is skipped) between `src`
/// and `dst`: the ones' complement of the ones' complement sum of the pseudo-header (source,
/// destination, upper-layer length, next header 58) and the message.
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |b: &[u8]| {
        for pair in b.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            sum += hi | pair.get(1).map_or(0, |&lo| u64::from(lo));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, NEXT_ICMPV6]);
    add(msg.get(..2).unwrap_or(msg));
    if let Some(rest) = msg.get(4..) {
        add(rest);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A Neighbor Solicitation for duplicate address detection of `target` from the interface
/// with MAC `ours`: from `::` to the target's solicited-node group, hop limit 255, no options.
pub fn neighbor_solicitation(ours: Mac, target: Ipv6Addr) -> Vec<u8> {
    let group = solicited_node(target);
    let src = Ipv6Addr::UNSPECIFIED;
    let mut icmp = vec![ICMPV6_NS, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    let sum = icmpv6_checksum(src, group, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::with_capacity(ETH_LEN + IPV6_LEN + icmp.len());
    f.extend_from_slice(&multicast_mac(group).0);
    f.extend_from_slice(&ours.0);
    f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[NEXT_ICMPV6, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&group.octets());
    f.extend_from_slice(&icmp);
    f
}

/// Reads a Neighbor Solicitation or Advertisement: IPv6 straight to ICMPv6 (no extension
/// headers), hop limit 255, a correct checksum, a well-formed option list. The MAC is the
/// link-layer option's (source's for a solicitation, target's for an advertisement), else the
/// Ethernet source's.
pub fn parse_neighbor(frame: &[u8]) -> Option<Neighbor> {
    let (t, at) = ethertype(frame)?;
    if t != ETHERTYPE_IPV6 {
        return None;
    }
    let ip = frame.get(at..at + IPV6_LEN)?;
    if ip[0] >> 4 != 6 || ip[6] != NEXT_ICMPV6 || ip[7] != 255 {
        return None;
    }
    let len = usize::from(u16_at(ip, 4)?);
    let icmp = frame.get(at + IPV6_LEN..at + IPV6_LEN + len)?;
    if icmp.len() < 24 || icmp[1] != 0 {
        return None;
    }
    let advert = match icmp[0] {
        ICMPV6_NS => false,
        ICMPV6_NA => true,
        _ => return None,
    };
    let addr = |b: &[u8]| -> Option<Ipv6Addr> {
        let o: [u8; 16] = b.try_into().ok()?;
        Some(Ipv6Addr::from(o))
    };
    let source = addr(&ip[8..24])?;
    let dest = addr(&ip[24..40])?;
    if icmpv6_checksum(source, dest, icmp) != u16_at(icmp, 2)? {
        return None;
    }
    let target = addr(&icmp[8..24])?;
    let wanted = if advert { OPT_TARGET_LL } else { OPT_SOURCE_LL };
    let mut mac = None;
    let mut opts = &icmp[24..];
    while !opts.is_empty() {
        let kind = opts[0];
        let units = usize::from(*opts.get(1)?);
        // A zero length is invalid (RFC 4861 §4.6): the packet is dropped.
        if units == 0 {
            return None;
        }
        let opt = opts.get(..units * 8)?;
        if kind == wanted && mac.is_none() {
            mac = mac_at(opt, 2);
        }
        opts = &opts[units * 8..];
    }
    Some(Neighbor {
        advert,
        source,
        target,
        mac: mac.or_else(|| mac_at(frame, 6))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: Mac = Mac([0x02, 0x00, 0x5e, 0x10, 0x20, 0x30]);
    const THEIRS: Mac = Mac([0x0a, 0xbb, 0xcc, 0xdd, 0xee, 0x01]);

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn an_arp_probe_is_a_broadcast_request_from_0_0_0_0() {
        let f = arp_probe(OURS, Ipv4Addr::new(10, 213, 7, 9));
        let want = hex("ffffffffffff 02005e102030 0806
             0001 0800 06 04 0001 02005e102030 00000000 000000000000 0ad50709");
        assert_eq!(&f[..42], want.as_slice());
        assert_eq!(f.len(), 60, "padded to the shortest frame");
        assert!(f[42..].iter().all(|b| *b == 0));
        let arp = parse_arp(&f).expect("our own probe parses");
        assert!(arp.is_probe());
        assert_eq!(arp.sender_mac, OURS);
        assert_eq!(arp.target_ip, Ipv4Addr::new(10, 213, 7, 9));
    }

    /// A reply as Linux sends it to a probe: from the holder to the prober, target IP 0.0.0.0.
    #[test]
    fn an_arp_reply_gives_the_sender_s_ip_and_mac() {
        let f = hex("02005e102030 0abbccddee01 0806
             0001 0800 06 04 0002 0abbccddee01 0ad50709 02005e102030 00000000");
        let arp = parse_arp(&f).expect("a reply");
        assert_eq!(arp.op, ArpOp::Reply);
        assert_eq!(
            (arp.sender_ip, arp.sender_mac),
            (Ipv4Addr::new(10, 213, 7, 9), THEIRS)
        );
        assert!(!arp.is_probe());
        // Behind a VLAN tag, the same.
        let mut tagged = f[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        tagged.extend_from_slice(&f[12..]);
        assert_eq!(parse_arp(&tagged), Some(arp));
        // Not ARP for IPv4 over Ethernet, or cut short: nothing.
        let mut other = f.clone();
        other[16] = 0x86; // protocol type
        assert_eq!(parse_arp(&other), None);
        let mut op3 = f.clone();
        op3[21] = 3;
        assert_eq!(parse_arp(&op3), None);
        assert_eq!(parse_arp(&f[..41]), None);
    }

    // The checksum of the solicitation for fd00::1, by hand. The 16-bit words summed:
    // pseudo-header: source `::` adds 0; destination ff02::1:ff00:1 adds ff02, 0001, ff00 and
    // 0001; length 24 adds 0018; next header adds 003a. The message: 8700 (type 135, code 0),
    // the checksum field skipped, reserved 0, target fd00::1 adds fd00 and 0001.
    //   ff02 + ff00 = 1fe02; three 0001 give 1fe05; with 0018, 1fe1d; with 003a, 1fe57;
    //   with 8700, 28557; with fd00, 38257. Folded: 8257 + 3 = 825a. Complemented: 7da5.
    #[test]
    fn a_neighbor_solicitation_for_dad_goes_from_the_unspecified_address_to_the_solicited_node_group(
    ) {
        let target: Ipv6Addr = "fd00::1".parse().expect("address");
        let f = neighbor_solicitation(OURS, target);
        let want = hex("3333ff000001 02005e102030 86dd
             60000000 0018 3a ff
             00000000000000000000000000000000
             ff0200000000000000000001ff000001
             87 00 7da5 00000000 fd000000000000000000000000000001");
        assert_eq!(f, want);
        assert_eq!(
            solicited_node("2001:db8::12:3456:789a".parse().expect("address")),
            "ff02::1:ff56:789a".parse::<Ipv6Addr>().expect("group")
        );
        let ns = parse_neighbor(&f).expect("our own solicitation parses");
        assert!(!ns.advert);
        assert!(ns.source.is_unspecified());
        assert_eq!((ns.target, ns.mac), (target, OURS));
    }

    /// An advertisement as Linux answers a DAD probe: to ff02::1, with the target link-layer
    /// option. Its checksum is computed here and then checked by the parser.
    fn advert(target: Ipv6Addr, option: Option<Mac>) -> Vec<u8> {
        let opts = option.map_or(vec![], |m| {
            let mut o = vec![OPT_TARGET_LL, 1];
            o.extend_from_slice(&m.0);
            o
        });
        advert_with(target, &opts)
    }

    fn advert_with(target: Ipv6Addr, opts: &[u8]) -> Vec<u8> {
        let src: Ipv6Addr = "fd00::1".parse().expect("address");
        let dst: Ipv6Addr = "ff02::1".parse().expect("address");
        let mut icmp = vec![ICMPV6_NA, 0, 0, 0, 0x20, 0, 0, 0];
        icmp.extend_from_slice(&target.octets());
        icmp.extend_from_slice(opts);
        let sum = icmpv6_checksum(src, dst, &icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut f = multicast_mac(dst).0.to_vec();
        f.extend_from_slice(&Mac([0x0a, 0, 0, 0, 0, 0x77]).0);
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        f.extend_from_slice(&[NEXT_ICMPV6, 255]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&icmp);
        f
    }

    #[test]
    fn a_neighbor_advertisement_gives_the_target_and_its_link_layer_address() {
        let target: Ipv6Addr = "fd00::1".parse().expect("address");
        let na = parse_neighbor(&advert(target, Some(THEIRS))).expect("an advert");
        assert!(na.advert);
        assert_eq!((na.target, na.mac), (target, THEIRS));
        // Without the option: the Ethernet source.
        let bare = parse_neighbor(&advert(target, None)).expect("an advert");
        assert_eq!(bare.mac, Mac([0x0a, 0, 0, 0, 0, 0x77]));
        // A flipped bit fails the checksum; a hop limit below 255 was routed: both dropped.
        let mut damaged = advert(target, Some(THEIRS));
        let n = damaged.len();
        damaged[n - 1] ^= 1;
        assert_eq!(parse_neighbor(&damaged), None);
        let mut routed = advert(target, Some(THEIRS));
        routed[21] = 254;
        assert_eq!(parse_neighbor(&routed), None);
        // An option of length zero is invalid.
        let zero = advert_with(target, &[OPT_TARGET_LL, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_neighbor(&zero), None);
        // One running past the message, likewise; an unknown option is skipped.
        let long = advert_with(target, &[OPT_TARGET_LL, 2, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_neighbor(&long), None);
        let mut opts = vec![14, 1, 0, 0, 0, 0, 0, 0, OPT_TARGET_LL, 1];
        opts.extend_from_slice(&THEIRS.0);
        let skipped = parse_neighbor(&advert_with(target, &opts)).expect("an advert");
        assert_eq!(skipped.mac, THEIRS);
        // Trailing bytes past the IPv6 payload (Ethernet padding) are not read.
        let mut padded = advert(target, Some(THEIRS));
        padded.extend_from_slice(&[0xff; 6]);
        assert_eq!(parse_neighbor(&padded).map(|n| n.mac), Some(THEIRS));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// The ones' complement sum, folded, of the pseudo-header and the whole message
        /// (checksum included), written independently of `icmpv6_checksum`: 0xffff for a
        /// correct checksum (RFC 1071).
        fn verify_sum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&src.octets());
            bytes.extend_from_slice(&dst.octets());
            bytes.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&[0, 0, 0, 58]);
            bytes.extend_from_slice(msg);
            if bytes.len() % 2 == 1 {
                bytes.push(0);
            }
            let mut sum: u32 = 0;
            for w in bytes.chunks(2) {
                sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
                sum = (sum & 0xffff) + (sum >> 16);
            }
            sum as u16
        }

        proptest! {
            #[test]
            fn a_message_with_its_checksum_sums_to_all_ones(src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), body in proptest::collection::vec(any::<u8>(), 4..200)) {
                let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
                let mut msg = body;
                let sum = icmpv6_checksum(src, dst, &msg);
                msg[2..4].copy_from_slice(&sum.to_be_bytes());
                prop_assert_eq!(verify_sum(src, dst, &msg), 0xffff);
            }

            #[test]
            fn any_advertisement_reads_back(target in any::<[u8; 16]>(), mac in any::<[u8; 6]>(), junk in proptest::collection::vec((1u8..=255, 1u8..=3), 0..3)) {
                let target = Ipv6Addr::from(target);
                let mac = Mac(mac);
                // Unknown options of 1 to 3 units first, then the target link-layer address.
                let mut opts = Vec::new();
                for (kind, units) in junk {
                    let kind = if kind == OPT_TARGET_LL { 200 } else { kind };
                    opts.push(kind);
                    opts.push(units);
                    opts.extend(std::iter::repeat_n(0xaa, usize::from(units) * 8 - 2));
                }
                opts.extend_from_slice(&[OPT_TARGET_LL, 1]);
                opts.extend_from_slice(&mac.0);
                let na = parse_neighbor(&advert_with(target, &opts)).expect("an advert");
                prop_assert_eq!((na.advert, na.target, na.mac), (true, target, mac));
            }

            #[test]
            fn any_probe_reads_back(mac in any::<[u8; 6]>(), v4 in any::<[u8; 4]>(), v6 in any::<[u8; 16]>()) {
                let (mac, v4, v6) = (Mac(mac), Ipv4Addr::from(v4), Ipv6Addr::from(v6));
                let arp = parse_arp(&arp_probe(mac, v4)).expect("a probe");
                prop_assert_eq!((arp.sender_mac, arp.target_ip, arp.is_probe()), (mac, v4, true));
                let ns = parse_neighbor(&neighbor_solicitation(mac, v6)).expect("a solicitation");
                prop_assert_eq!((ns.target, ns.mac, ns.source), (v6, mac, Ipv6Addr::UNSPECIFIED));
            }
        }
    }

    #[test]
    fn ipv6_multicast_groups_map_to_33_33_and_their_last_32_bits() {
        let g: Ipv6Addr = "ff02::1:ffab:cdef".parse().expect("group");
        assert_eq!(multicast_mac(g), Mac([0x33, 0x33, 0xff, 0xab, 0xcd, 0xef]));
    }
}

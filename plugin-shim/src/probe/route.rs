//! Which interface a subnet is on the link of: the one whose on-link route (no gateway)
//! covers the whole subnet, read from the kernel's routing tables as `/proc` shows them
//! (`/proc/net/route` for IPv4, `/proc/net/ipv6_route` for IPv6, of the calling thread's
//! network namespace).
//!
//! Owns the parsing of those two files (pure functions, tested on sample text) and the choice:
//! the most specific covering route, then the lowest metric. Never probes anything.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::ProbeError;

/// `rtentry` flags: the route is up, goes through a gateway, rejects, is a host's own
/// address (IPv6: `RTF_LOCAL`) or a cached clone.
const RTF_UP: u32 = 0x0001;
const RTF_GATEWAY: u32 = 0x0002;
const RTF_REJECT: u32 = 0x0200;
const RTF_CACHE: u32 = 0x0100_0000;
const RTF_LOCAL: u32 = 0x8000_0000;

/// One on-link route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnLink {
    /// The interface.
    pub interface: String,
    /// What it reaches without a gateway.
    pub net: IpNet,
    /// Its metric (lower is preferred).
    pub metric: u32,
}

fn on_link(flags: u32, gateway_zero: bool) -> bool {
    flags & RTF_UP != 0
        && flags & (RTF_GATEWAY | RTF_REJECT | RTF_CACHE | RTF_LOCAL) == 0
        && gateway_zero
}

/// The on-link routes of `/proc/net/route`'s text. Addresses there are 32-bit hexadecimal
/// numbers of the address's bytes in the machine's own order.
pub fn parse_route(text: &str) -> Vec<OnLink> {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, gw, flags, metric, mask) = (
                f.first()?,
                hex(f.get(1)?)?,
                hex(f.get(2)?)?,
                f.get(3)?,
                f.get(6)?,
                hex(f.get(7)?)?,
            );
            let flags = u32::from_str_radix(flags, 16).ok()?;
            if !on_link(flags, gw == [0; 4]) {
                return None;
            }
            let len = u32::from_be_bytes(mask).leading_ones() as u8;
            let net = Ipv4Net::new(Ipv4Addr::from(dest), len).ok()?.trunc();
            Some(OnLink {
                interface: (*iface).to_string(),
                net: IpNet::V4(net),
                metric: metric.parse().ok()?,
            })
        })
        .collect()
}

/// The on-link routes of `/proc/net/ipv6_route`'s text: destination (32 hex digits), its
/// prefix length, source and its length, next hop, metric, references, use, flags, interface.
pub fn parse_ipv6_route(text: &str) -> Vec<OnLink> {
    let addr = |s: &str| -> Option<Ipv6Addr> {
        if s.len() != 32 {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(Ipv6Addr::from)
    };
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let dest = addr(f[0])?;
            let len = u8::from_str_radix(f[1], 16).ok()?;
            let next = addr(f[4])?;
            let metric = u32::from_str_radix(f[5], 16).ok()?;
            let flags = u32::from_str_radix(f[8], 16).ok()?;
            if !on_link(flags, next.is_unspecified()) || f[9] == "lo" {
                return None;
            }
            let net = Ipv6Net::new(dest, len).ok()?.trunc();
            // Multicast routes name every interface; they say nothing of a subnet.
            if net.network().is_multicast() {
                return None;
            }
            Some(OnLink {
                interface: f[9].to_string(),
                net: IpNet::V6(net),
                metric,
            })
        })
        .collect()
}

/// The interface whose on-link route covers all of `subnet` among `routes`: the most specific
/// route, then the lowest metric, then the first. A default route (`/0`) does not count: it
/// says nothing of where a subnet is.
pub fn choose(routes: &[OnLink], subnet: &IpNet) -> Option<String> {
    routes
        .iter()
        .filter(|r| r.net.prefix_len() > 0 && r.net.contains(subnet))
        .min_by_key(|r| (std::cmp::Reverse(r.net.prefix_len()), r.metric))
        .map(|r| r.interface.clone())
}

/// The routing table of the calling thread's network namespace (`/proc/thread-self/net`,
/// where it exists).
fn read_table(name: &str) -> Result<String, ProbeError> {
    let own = format!("/proc/thread-self/net/{name}");
    std::fs::read_to_string(&own)
        .or_else(|_| std::fs::read_to_string(format!("/proc/net/{name}")))
        .map_err(|e| ProbeError::Io {
            interface: String::new(),
            what: "reading the routing table",
            source: e,
        })
}

/// The interface `subnet` is on the link of, from this host's routing table; an error naming
/// the subnet when no interface is.
pub fn interface_for(subnet: &IpNet) -> Result<String, ProbeError> {
    let routes = match subnet {
        IpNet::V4(_) => parse_route(&read_table("route")?),
        IpNet::V6(_) => parse_ipv6_route(&read_table("ipv6_route")?),
    };
    choose(&routes, subnet).ok_or(ProbeError::NotOnLink(*subnet))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4hex(a: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(a))
    }

    fn route_text() -> String {
        let row =
            |iface: &str, dest: [u8; 4], gw: [u8; 4], flags: u32, metric: u32, mask: [u8; 4]| {
                format!(
                    "{iface}\t{}\t{}\t{flags:04X}\t0\t0\t{metric}\t{}\t0\t0\t0\n",
                    v4hex(dest),
                    v4hex(gw),
                    v4hex(mask)
                )
            };
        let mut t = String::from(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n",
        );
        t += &row(
            "eth0",
            [0, 0, 0, 0],
            [192, 168, 1, 1],
            0x3,
            100,
            [0, 0, 0, 0],
        );
        t += &row(
            "eth0",
            [192, 168, 1, 0],
            [0; 4],
            0x1,
            100,
            [255, 255, 255, 0],
        );
        t += &row("br0", [10, 213, 0, 0], [0; 4], 0x1, 0, [255, 255, 0, 0]);
        t += &row("br1", [10, 213, 5, 0], [0; 4], 0x1, 0, [255, 255, 255, 0]);
        t += &row(
            "wg0",
            [10, 99, 0, 0],
            [10, 0, 0, 1],
            0x3,
            0,
            [255, 255, 0, 0],
        );
        t += &row("down0", [10, 50, 0, 0], [0; 4], 0x0, 0, [255, 255, 0, 0]);
        t
    }

    #[test]
    fn an_ipv4_subnet_is_on_the_link_of_the_most_specific_route_without_a_gateway() {
        let routes = parse_route(&route_text());
        assert_eq!(routes.len(), 3, "{routes:?}");
        let on = |s: &str| choose(&routes, &s.parse().expect("subnet"));
        assert_eq!(on("192.168.1.0/24").as_deref(), Some("eth0"));
        assert_eq!(on("192.168.1.128/25").as_deref(), Some("eth0"));
        assert_eq!(on("10.213.5.0/24").as_deref(), Some("br1"), "more specific");
        assert_eq!(on("10.213.6.0/24").as_deref(), Some("br0"));
        assert_eq!(on("10.213.0.0/16").as_deref(), Some("br0"));
        assert_eq!(on("10.0.0.0/8"), None, "wider than any route");
        assert_eq!(on("10.99.1.0/24"), None, "behind a gateway");
        assert_eq!(on("10.50.1.0/24"), None, "a route that is not up");
        assert_eq!(on("8.8.8.0/24"), None, "only the default route");
    }

    #[test]
    fn an_ipv6_subnet_is_on_the_link_of_its_route_and_never_of_lo_or_multicast() {
        let text = "\
fd000213000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     br0
fd000213000000000000000000000000 30 00000000000000000000000000000000 00 00000000000000000000000000000000 00000200 00000001 00000000 00000001     eth1
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     br0
20010db8000000000000000000000000 20 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0
fd000213000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000003 00000000 80200001       lo
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     br0
";
        let routes = parse_ipv6_route(text);
        assert_eq!(routes.len(), 3, "{routes:?}");
        let on = |s: &str| choose(&routes, &s.parse().expect("subnet"));
        assert_eq!(on("fd00:213::/64").as_deref(), Some("br0"));
        assert_eq!(on("fd00:213:0:1::/64").as_deref(), Some("eth1"));
        assert_eq!(on("2001:db8::/64"), None, "through a gateway");
        assert_eq!(on("ff00::/8"), None);
        assert_eq!(on("fd00:213::1/128").as_deref(), Some("br0"));
    }

    #[test]
    fn garbage_tables_give_no_route_and_never_panic() {
        for text in ["", "\n\n", "Iface\nx y z", "zz 40 00", &"f".repeat(300)] {
            assert!(parse_route(text).is_empty());
            assert!(parse_ipv6_route(text).is_empty());
        }
    }
}

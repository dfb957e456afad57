//! Names of things in the allocator: pool ids and address owners, and why a text is not one.
//!
//! The bottom of the vocabulary: this file depends on nothing else in the crate.
//!
//! A pool id is what Docker stores and hands back to us, so it must be printable and parseable
//! without any lookup: `space/subnet[/range]`, the same convention as Docker's default IPAM
//! (`global/10.1.0.0/16/10.1.2.0/24`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use thiserror::Error;

/// A text that could not be parsed (a pool id, an owner, an address range).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// A pool id that is not `SPACE/SUBNET[/RANGE]`.
    #[error("invalid pool id {input:?}: {why}")]
    PoolId {
        /// The text given.
        input: String,
        /// What is wrong with it.
        why: String,
    },
    /// An owner that is not `HOST/ENDPOINT`.
    #[error("invalid owner {input:?}: expected HOST/ENDPOINT with a non-empty host")]
    Owner {
        /// The text given.
        input: String,
    },
    /// An address range that is not `IP` or `IP-IP`.
    #[error("invalid address range {input:?}: {why}")]
    Range {
        /// The text given.
        input: String,
        /// What is wrong with it.
        why: String,
    },
}

/// Identity of a pool: an address space, a subnet and an optional sub-range of that subnet.
///
/// The same request from several hosts yields the same id, so every host of a network shares
/// one pool.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PoolId {
    /// Address space, e.g. `local` or `global`. Pools in different spaces never conflict.
    pub space: String,
    /// The subnet, normalised to its network address.
    pub subnet: IpNet,
    /// The sub-range that addresses without a preference are taken from.
    pub range: Option<IpNet>,
}

impl PoolId {
    /// Builds an id, normalising the subnet and range to their network addresses.
    pub fn new(space: impl Into<String>, subnet: IpNet, range: Option<IpNet>) -> Self {
        PoolId {
            space: space.into(),
            subnet: subnet.trunc(),
            range: range.map(|r| r.trunc()),
        }
    }
}

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.space, self.subnet)?;
        if let Some(r) = &self.range {
            write!(f, "/{r}")?;
        }
        Ok(())
    }
}

impl FromStr for PoolId {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| ParseError::PoolId {
            input: s.to_string(),
            why: why.to_string(),
        };
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() != 3 && parts.len() != 5 {
            return Err(bad(
                "expected SPACE/SUBNET or SPACE/SUBNET/RANGE, e.g. global/10.0.0.0/24",
            ));
        }
        if parts[0].is_empty() {
            return Err(bad("the address space is empty"));
        }
        let net = |a: &str, l: &str, what: &str| -> Result<IpNet, ParseError> {
            format!("{a}/{l}")
                .parse::<IpNet>()
                .map_err(|_| bad(&format!("the {what} {a}/{l} is not a CIDR")))
        };
        let subnet = net(parts[1], parts[2], "subnet")?;
        let range = if parts.len() == 5 {
            Some(net(parts[3], parts[4], "range")?)
        } else {
            None
        };
        Ok(PoolId::new(parts[0], subnet, range))
    }
}

/// Who holds an allocated address: the Docker host and the endpoint on it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// Host name, as the shim on that host calls itself.
    pub host: String,
    /// Endpoint (container) name; empty when the caller gave none, in which case repeats are
    /// not recognised as the same request.
    pub endpoint: String,
}

impl Owner {
    /// An owner `{host, endpoint}`.
    pub fn new(host: impl Into<String>, endpoint: impl Into<String>) -> Self {
        Owner {
            host: host.into(),
            endpoint: endpoint.into(),
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.endpoint.is_empty() {
            write!(f, "{}/-", self.host)
        } else {
            write!(f, "{}/{}", self.host, self.endpoint)
        }
    }
}

impl FromStr for Owner {
    type Err = ParseError;

    /// Parses `HOST/ENDPOINT` (or just `HOST`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, ep) = s.split_once('/').unwrap_or((s, ""));
        if host.is_empty() {
            return Err(ParseError::Owner {
                input: s.to_string(),
            });
        }
        let ep = if ep == "-" { "" } else { ep };
        Ok(Owner::new(host, ep))
    }
}

/// An inclusive range of addresses, `a.b.c.d` or `a.b.c.d-a.b.c.z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AddrRange {
    /// First address.
    pub first: IpAddr,
    /// Last address (equal to `first` for a single address).
    pub last: IpAddr,
}

impl AddrRange {
    /// A range of one address.
    pub fn single(a: IpAddr) -> Self {
        AddrRange { first: a, last: a }
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl FromStr for AddrRange {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| ParseError::Range {
            input: s.to_string(),
            why: why.to_string(),
        };
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let first: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| bad(&format!("{a:?} is not an IP address")))?;
        let last: IpAddr = b
            .trim()
            .parse()
            .map_err(|_| bad(&format!("{b:?} is not an IP address")))?;
        if first.is_ipv4() != last.is_ipv4() {
            return Err(bad("both ends must be of the same IP family"));
        }
        if first > last {
            return Err(bad("the first address is after the last"));
        }
        Ok(AddrRange { first, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_id_round_trips_with_and_without_range() {
        for s in [
            "global/10.0.0.0/16",
            "local/10.0.0.0/16/10.0.5.0/24",
            "g/fd00::/64/fd00::/80",
        ] {
            let id: PoolId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
        }
    }

    #[test]
    fn pool_id_normalises_host_bits() {
        let id: PoolId = "g/10.0.0.7/24".parse().unwrap();
        assert_eq!(id.to_string(), "g/10.0.0.0/24");
    }

    #[test]
    fn pool_id_rejects_garbage_with_a_reason() {
        for s in [
            "",
            "g",
            "g/10.0.0.0",
            "/10.0.0.0/8",
            "g/10.0.0.300/24",
            "g/10.0.0.0/24/x/1",
        ] {
            let e = s.parse::<PoolId>().unwrap_err().to_string();
            assert!(e.contains("pool id"), "{e}");
        }
    }
}

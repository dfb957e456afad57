//! What the queries of [`crate::State`] return: a pool's usage and description, an allocation,
//! what holds an address, a host. Plain data, part of the vocabulary: this file depends only on
//! the ids and on the command types it names.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::id::{AddrRange, Owner, PoolId};

/// How much of a pool is used. Counts cover the pool's range, or its subnet without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Addresses in the range (or subnet).
    pub size: u128,
    /// Reserved: network, broadcast, gateways, aux and reserve ranges.
    pub reserved: u128,
    /// Allocated to endpoints.
    pub allocated: u64,
    /// Released, cooling down before reuse.
    pub cooling: u64,
    /// Free to hand out.
    pub free: u128,
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} addresses: {} allocated, {} reserved, {} cooling down, {} free",
            human_count(self.size),
            self.allocated,
            human_count(self.reserved),
            self.cooling,
            human_count(self.free)
        )
    }
}

/// A count of addresses for people: exact below 2^32; above, as a power of two give or take
/// at most 65,536 (a /64's free addresses: `2^64 - 5`), else rounded (`~1.8e19`). JSON
/// output keeps the exact number.
pub fn human_count(n: u128) -> String {
    if n < 1 << 32 {
        return n.to_string();
    }
    let bits = 128 - n.leading_zeros();
    for k in [bits - 1, bits] {
        if k >= 128 {
            continue;
        }
        let pow = 1u128 << k;
        match n.abs_diff(pow) {
            0 => return format!("2^{k}"),
            d if d <= 1 << 16 && n > pow => return format!("2^{k} + {d}"),
            d if d <= 1 << 16 => return format!("2^{k} - {d}"),
            _ => {}
        }
    }
    format!("~{:.1e}", n as f64)
}

#[cfg(test)]
mod tests {
    use super::human_count;

    #[test]
    fn big_counts_are_written_for_people() {
        assert_eq!(human_count(65_534), "65534");
        assert_eq!(human_count((1 << 32) - 1), "4294967295");
        assert_eq!(human_count((1 << 64) - 5), "2^64 - 5");
        assert_eq!(human_count(1 << 64), "2^64");
        assert_eq!(human_count((1 << 40) + 3), "2^40 + 3");
        assert_eq!(human_count(18_000_000_000_000_000_000), "~1.8e19");
        assert_eq!(human_count(u128::MAX), "~3.4e38");
    }
}

/// A pool as the queries show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolInfo {
    /// Its id.
    pub id: PoolId,
    /// Hosts holding it, with their reference counts.
    pub holders: BTreeMap<String, u32>,
    /// Serial order by default.
    pub serial: bool,
    /// Cooldown of released addresses (ms).
    pub cooldown_ms: u64,
    /// Reserve ranges given at creation.
    pub reserve: Vec<AddrRange>,
    /// Shared reservations (gateways, aux addresses) with their holders.
    pub reservations: Vec<(IpAddr, BTreeMap<String, u32>)>,
    /// Usage.
    pub usage: Usage,
}

/// One allocated address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The address.
    pub addr: IpAddr,
    /// Who holds it.
    pub owner: Owner,
    /// Its sequence number (increases with every allocation in the whole state).
    pub seq: u64,
    /// When it was allocated (seconds since the Unix epoch).
    pub at_s: u32,
}

/// What holds an address, as [`crate::State::who_has`] reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Holding {
    /// Allocated to an endpoint.
    Allocated {
        /// A pool over the subnet holding it.
        pool: PoolId,
        /// The allocation.
        allocation: Allocation,
    },
    /// Reserved.
    Reserved {
        /// A pool over the subnet holding it.
        pool: PoolId,
        /// What reserves it.
        why: String,
    },
    /// Released and cooling down.
    Cooling {
        /// A pool over the subnet holding it.
        pool: PoolId,
        /// Free again at (ms since the Unix epoch).
        until_ms: u64,
    },
}

/// A host as [`crate::State::hosts`] reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Host name.
    pub name: String,
    /// Version its shim last reported.
    pub version: Option<String>,
    /// Time of its last heartbeat (ms since the Unix epoch), if it ever sent one.
    pub last_seen_ms: Option<u64>,
    /// Addresses allocated to it.
    pub allocations: u64,
    /// Reservation references it holds.
    pub reservations: u64,
    /// Pools it holds.
    pub pools: u64,
    /// Time of its last report (ms since the Unix epoch), if its shim ever sent one.
    pub report_ms: Option<u64>,
    /// Leaks its last report listed that still stand (same allocation).
    pub leaked: Option<u64>,
}

/// One page of a listing of allocations ([`crate::State::allocations_page`]): in pool, then
/// address order; `next` is what to ask for after, `None` at the end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationsPage {
    /// The allocations, each with the pool it was listed under.
    pub items: Vec<(PoolId, Allocation)>,
    /// The last item's pool and address, when more may follow.
    pub next: Option<(PoolId, IpAddr)>,
}

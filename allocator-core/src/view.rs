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
            self.size, self.allocated, self.reserved, self.cooling, self.free
        )
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

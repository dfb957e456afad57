//! Typed errors. Each message names the thing that went wrong and, where it helps, what to do.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::id::{Owner, PoolId};
use crate::view::Usage;

/// Why a command was refused. Commands that fail change nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum AllocError {
    /// No pool has this id.
    #[error("pool {0} does not exist (list pools with `raftipam pool ls`)")]
    NoSuchPool(PoolId),
    /// The requested subnet overlaps a pool that already exists in the same address space.
    #[error("subnet {requested} overlaps pool {existing} in address space {space:?}; choose a subnet that does not overlap")]
    Overlap {
        /// Address space of both.
        space: String,
        /// The subnet asked for.
        requested: IpNet,
        /// The pool in the way.
        existing: PoolId,
    },
    /// A subnet or range the allocator cannot hold.
    #[error("invalid pool: {0}")]
    InvalidPool(String),
    /// No default pool has a free subnet of the requested size.
    #[error("no free /{prefix_len} subnet left in the default pools for {family}; give a --subnet explicitly")]
    NoDefaultSubnet {
        /// `IPv4` or `IPv6`.
        family: String,
        /// The size asked for.
        prefix_len: u8,
    },
    /// Every address the pool may hand out is taken.
    #[error("pool {pool} is full: {usage}; {leaks}")]
    PoolFull {
        /// The pool.
        pool: PoolId,
        /// Its usage at the time.
        usage: Usage,
        /// Which of its allocations hosts reported leaked at their last check.
        leaks: LeakHint,
    },
    /// The address is not inside the pool's subnet (or is of the other IP family).
    #[error("address {addr} is outside pool {pool}")]
    OutsidePool {
        /// The address asked for.
        addr: IpAddr,
        /// The pool.
        pool: PoolId,
    },
    /// The address is allocated to someone else.
    #[error("address {addr} in pool {pool} is already held by {owner} (since allocation #{seq})")]
    HeldBy {
        /// The address asked for.
        addr: IpAddr,
        /// The pool.
        pool: PoolId,
        /// Who holds it.
        owner: Owner,
        /// Sequence number of that allocation.
        seq: u64,
    },
    /// The address is reserved (network, broadcast, gateway, aux, reserve range).
    #[error("address {addr} in pool {pool} is reserved ({why}) and is never given to an endpoint")]
    Reserved {
        /// The address asked for.
        addr: IpAddr,
        /// The pool.
        pool: PoolId,
        /// What reserves it.
        why: String,
    },
    /// The address was released recently and the pool's cooldown has not passed.
    #[error(
        "address {addr} in pool {pool} was released recently and cools down until t={until_ms} ms"
    )]
    Cooling {
        /// The address asked for.
        addr: IpAddr,
        /// The pool.
        pool: PoolId,
        /// When it becomes free (ms since the Unix epoch).
        until_ms: u64,
    },
    /// The endpoint already holds another address in this pool.
    #[error("{owner} already holds {held} in pool {pool}; release it before asking for {asked}")]
    OwnerHoldsOther {
        /// The owner.
        owner: Owner,
        /// The pool.
        pool: PoolId,
        /// What it holds.
        held: IpAddr,
        /// What it asked for.
        asked: IpAddr,
    },
    /// A host tried to release an address held by another host.
    #[error("address {addr} in pool {pool} is held by {owner}, not by host {host:?}; an operator can force the release")]
    NotOwner {
        /// The address.
        addr: IpAddr,
        /// The pool.
        pool: PoolId,
        /// The real owner.
        owner: Owner,
        /// Who asked.
        host: String,
    },
    /// A request that cannot be carried out as given (an empty or over-long name, a limit).
    #[error("{0}")]
    Invalid(String),
    /// A pool still has allocations and the delete was not forced.
    #[error(
        "pool {pool} still has {allocated} allocated address(es); release them or force the delete"
    )]
    PoolInUse {
        /// The pool.
        pool: PoolId,
        /// How many are allocated.
        allocated: u64,
    },
    /// A restore was asked of a state that already holds something.
    #[error("the cluster is not empty ({0}); restore a backup only into a new, empty cluster")]
    NotEmpty(String),
    /// The operation needs a cluster version the cluster has not reached: a member might not
    /// be able to apply it. Nothing changed.
    #[error("{what} needs cluster version {needs} (raftipam {}); the cluster is at version {current}: run raftipam {} or newer on every member, then `raftipam cluster upgrade`", crate::cluster::release_of(*needs), crate::cluster::release_of(*needs))]
    NeedsClusterVersion {
        /// What was asked.
        what: String,
        /// The cluster version it needs.
        needs: u32,
        /// The cluster version now.
        current: u32,
    },
    /// A host asked for more than its quota allows ([`crate::Quotas`], cluster version 2 on).
    /// Nothing changed.
    #[error("{}", crate::quota::quota_message(quota, host, *used, *limit))]
    QuotaExceeded {
        /// Which quota: `pools`, `addresses`, `max-prefix-v4` or `max-prefix-v6`.
        quota: String,
        /// The host.
        host: String,
        /// What it holds (pools, addresses) or asked for (a prefix length).
        used: u64,
        /// Its limit (for a prefix: the shortest prefix length it may create).
        limit: u64,
    },
    /// The address is free but another device answered for it on the LAN: no allocation
    /// hands it out until its probation has passed ([`crate::conflict`]). Nothing changed.
    #[error("address {addr} in pool {pool} is in quarantine: a device with MAC {mac} answered for it (seen by host {host}); it is not handed out until t={until_ms} ms. Free the address on that device and run `raftipam addr clear {pool} {addr}`, or wait for the probation to pass")]
    Quarantined {
        /// The address asked for.
        addr: IpAddr,
        /// The pool.
        pool: PoolId,
        /// The MAC that answered for it.
        mac: crate::conflict::Mac,
        /// The host that saw it.
        host: String,
        /// When its probation ends (ms since the Unix epoch).
        until_ms: u64,
    },
}

/// Leaks of one pool that hosts reported and that still stand, by host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakHint {
    /// `(host, count)`, by host name.
    pub by_host: Vec<(String, u64)>,
}

impl LeakHint {
    /// Addresses in all.
    pub fn total(&self) -> u64 {
        self.by_host.iter().map(|(_, n)| n).sum()
    }
}

impl std::fmt::Display for LeakHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.by_host.is_empty() {
            return write!(f, "no host reported leaks in it at its last check");
        }
        let hosts: Vec<String> = self
            .by_host
            .iter()
            .map(|(h, n)| format!("{h} ({n})"))
            .collect();
        write!(
            f,
            "{} of its addresses are leaked (allocated, no container) according to the last check of host {}",
            self.total(),
            hosts.join(", ")
        )
    }
}

//! What the typed write methods of [`crate::State`] return (`request_pool`, `allocate`,
//! `restore`, `forget_host`): plain values for embedders.
//!
//! Owns those result types and their conversion into the replicated [`Outcome`], which is
//! what [`crate::State::apply`] returns for the same operation (so both paths answer alike).
//! Never persisted and never sent: the wire form is [`Outcome`], whose encoding is fixed.

use ipnet::IpNet;

use crate::command::Outcome;
use crate::id::PoolId;

/// A pool requested with [`crate::State::request_pool`]: created, or joined if it existed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestedPool {
    /// The pool's id, for every later call about it.
    pub pool: PoolId,
    /// Whether this request created it (false: joined an existing one).
    pub created: bool,
}

/// An address allocated with [`crate::State::allocate`] or [`crate::State::allocate_addr`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Allocated {
    /// The address, with the subnet's prefix length (`10.1.0.1/24`; `.addr()` for the
    /// address alone).
    pub addr: IpNet,
    /// Sequence number of the allocation (unchanged on an idempotent repeat).
    pub seq: u64,
    /// True when this repeated a request already granted to the same owner.
    pub existing: bool,
}

/// What [`crate::State::restore`] brought back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Restored {
    /// Pools restored.
    pub pools: u64,
    /// Allocations restored.
    pub allocations: u64,
}

/// What [`crate::State::forget_host`] dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostForgotten {
    /// Allocations released.
    pub allocations: u64,
    /// Reservation references dropped.
    pub reservations: u64,
    /// Pool holds dropped.
    pub pools: u64,
}

impl From<RequestedPool> for Outcome {
    fn from(r: RequestedPool) -> Outcome {
        Outcome::Pool {
            pool: r.pool,
            created: r.created,
        }
    }
}

impl From<Allocated> for Outcome {
    fn from(a: Allocated) -> Outcome {
        Outcome::Allocated {
            addr: a.addr,
            seq: a.seq,
            existing: a.existing,
        }
    }
}

impl From<Restored> for Outcome {
    fn from(r: Restored) -> Outcome {
        Outcome::Restored {
            pools: r.pools,
            allocations: r.allocations,
        }
    }
}

impl From<HostForgotten> for Outcome {
    fn from(f: HostForgotten) -> Outcome {
        Outcome::HostForgotten {
            allocations: f.allocations,
            reservations: f.reservations,
            pools: f.pools,
        }
    }
}

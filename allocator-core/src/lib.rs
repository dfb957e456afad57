//! # allocator-core
//!
//! raftipam's address allocator as a pure, deterministic state machine: pools of IPv4 and
//! IPv6 addresses, a hierarchical bitmap per subnet, shared reservations (gateways, aux and
//! host addresses) and exclusive allocations with owners.
//!
//! **Invariants this crate keeps:** no I/O, no async, no clock, no randomness that reaches an
//! outcome. [`State::apply`] is a function of the state and the [`Command`]: every replica of a
//! Raft log computes the same result. Time (for cooldowns) travels inside the command. A
//! command that fails changes nothing. An address is never held by two owners.
//!
//! It is also a library to embed on its own:
//!
//! ```
//! use allocator_core::{Command, Op, Order, Outcome, Owner, PoolSpec, State};
//!
//! let mut state = State::default();
//! let spec = PoolSpec { space: "global".into(), subnet: Some("10.1.0.0/24".parse().unwrap()), ..Default::default() };
//! let Outcome::Pool { pool, .. } = state.apply(&Command { at_ms: 0, op: Op::RequestPool { spec, holder: "host-a".into() } }).unwrap() else { unreachable!() };
//! let alloc = Op::Allocate { pool: pool.clone(), addr: None, owner: Owner::new("host-a", "web-1"), order: Order::Lowest };
//! let Outcome::Allocated { addr, .. } = state.apply(&Command { at_ms: 0, op: alloc.clone() }).unwrap() else { unreachable!() };
//! assert_eq!(addr.to_string(), "10.1.0.1/24"); // .0 is the network address
//! // Docker retries: the same owner asking again gets the same address.
//! let Outcome::Allocated { addr: again, existing, .. } = state.apply(&Command { at_ms: 1, op: alloc }).unwrap() else { unreachable!() };
//! assert_eq!((again, existing), (addr, true));
//! // The whole state travels as bytes (a Raft snapshot).
//! let copy = State::from_snapshot(&state.to_snapshot()).unwrap();
//! assert_eq!(copy.allocations(&pool).unwrap().len(), 1);
//! ```

#![deny(missing_docs)]
// Errors carry the pool id and its usage so the message can say what to do; they are the
// cold path, and boxing them would only move the cost to every caller that matches on them.
#![allow(clippy::result_large_err)]

pub mod bitmap;
mod command;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod id;
mod keyed;
mod limits;
mod map;
mod records;
pub mod report;
mod snapshot;
mod state;
mod subnet;
mod view;

pub use command::{Command, Op, Order, Outcome, PoolSpec, Released};
pub use error::{AllocError, LeakHint};
pub use id::{canonical_serial, AddrRange, Owner, ParseError, PoolId};
pub use limits::{
    MAX_NAME_LEN, MAX_RESERVED_PER_POOL, MAX_RESTORE_BYTES, MAX_RESTORE_CHUNK, MAX_REVOKED_SERIALS,
};
pub use map::{CellState, MapCell, MapPage, SparseEntry, SparsePage, MAX_MAP_PAGE};
pub use report::{HostReport, ReportedLeak, ReportedMissing, StoredReport};
pub use snapshot::SnapshotError;
pub use state::{Config, DefaultPool, State};
pub use view::{human_count, Allocation, Holding, HostInfo, PoolInfo, Usage};

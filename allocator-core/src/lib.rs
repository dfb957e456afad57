//! # allocator-core
//!
//! An IP address allocator as a pure, deterministic state machine: pools of IPv4 and IPv6
//! addresses, a hierarchical bitmap per subnet, shared reservations (gateways, aux and host
//! addresses) and exclusive allocations with owners. It is raftipam's allocator, replicated by
//! Raft across a cluster of Docker hosts, and a library to embed on its own.
//!
//! **Invariants this crate keeps:** no I/O, no async, no clock, no randomness that reaches an
//! outcome. Every write is a function of the state and its arguments, time included (the
//! caller's clock, in ms since the Unix epoch, passed in): every replica computes the same
//! result. A write that fails changes nothing. An address is never held by two owners.
//!
//! ## Embedding
//!
//! Write with the typed methods of [`State`], read with its queries:
//!
//! ```
//! use allocator_core::{Order, Owner, PoolSpec, Released, State};
//!
//! let mut state = State::default();
//! let now = 1_700_000_000_000; // the allocator reads no clock: every write is given the time
//! let spec = PoolSpec::new("global").subnet("10.1.0.0/24".parse()?);
//! let pool = state.request_pool(now, &spec, "host-a")?.pool;
//! let web = Owner::new("host-a", "web-1");
//! let got = state.allocate(now, &pool, &web, Order::Lowest)?;
//! assert_eq!(got.addr.to_string(), "10.1.0.1/24"); // .0 is the network address
//! // Docker retries: the same owner asking again gets the same address.
//! let again = state.allocate(now + 1, &pool, &web, Order::Lowest)?;
//! assert_eq!((again.addr, again.existing), (got.addr, true));
//! // The whole state travels as bytes (a Raft snapshot, a backup).
//! let copy = State::from_snapshot(&state.to_snapshot())?;
//! assert_eq!(copy.allocations(&pool)?.len(), 1);
//! assert_eq!(state.release(now + 2, &pool, got.addr.addr(), "host-a")?, Released::Allocation);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - **Pools** ([`State::request_pool`], [`State::release_pool`], [`State::delete_pool`]):
//!   `space/subnet[/range]` ([`PoolId`]); pools on one subnet share its bitmap, so two pools
//!   never hand out one address. Without a subnet, one is carved from the default pools
//!   ([`Config`]).
//! - **Addresses** ([`State::reserve`], [`State::allocate`], [`State::allocate_addr`],
//!   [`State::release`], [`State::release_if_unchanged`]): reserved (shared,
//!   reference-counted), allocated (exclusive, to an [`Owner`] `{host, endpoint}`, with a
//!   sequence number), cooling down after release if the pool says so, or free.
//! - **Hosts** ([`State::heartbeat`], [`State::store_report`], [`State::forget_host`]): what
//!   each host last said, and the leaks it reported ([`report`]), which a "pool full"
//!   [`AllocError`] names.
//! - **Conflicts on the LAN** ([`State::report_conflict`], [`State::clear_conflict`],
//!   [`State::set_probation`], [`State::conflicts`]): a free address some device answers for
//!   is in quarantine for its pool's probation; a held one raises a duplicate alarm
//!   ([`conflict`]).
//! - **Reads**: [`State::pools`], [`State::allocations`], [`State::who_has`],
//!   [`State::hosts`], the subnet map ([`State::map_page`], [`State::map_sparse`]),
//!   [`State::check_invariants`].
//! - **Bytes**: [`State::to_snapshot`] and [`State::from_snapshot`] (versioned, checksummed,
//!   validated: damaged bytes give a [`SnapshotError`], never a panic), [`State::restore`].
//! - **Bounds**: every limit is a constant ([`MAX_NAME_LEN`], [`MAX_RESERVED_PER_POOL`], ...).
//!
//! ## Replicated
//!
//! Every write is also an [`Op`]; a [`Command`] is an op and the time it was proposed at, and
//! [`State::apply`] carries it out — the same function as the typed method — and returns an
//! [`Outcome`]. That is what a replicated log holds (their encodings never change):
//!
//! ```
//! use allocator_core::{Command, Op, Order, Outcome, Owner, PoolId, PoolSpec, State};
//!
//! let pool: PoolId = "global/10.1.0.0/24".parse()?;
//! let spec = PoolSpec::new("global").subnet(pool.subnet);
//! let owner = Owner::new("host-a", "web-1");
//! let log = [
//!     Op::RequestPool { spec, holder: "host-a".into() },
//!     Op::Allocate { pool, addr: None, owner, order: Order::Lowest },
//! ];
//! let mut replica = State::default();
//! let outcomes: Vec<Outcome> = log
//!     .into_iter()
//!     .map(|op| replica.apply(&Command { at_ms: 1_700_000_000_000, op }))
//!     .collect::<Result<_, _>>()?;
//! assert!(matches!(&outcomes[1], Outcome::Allocated { seq: 1, existing: false, .. }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A few operations are raftipam's own bookkeeping (certificate revocations, join tokens),
//! replicated in the same log: see [`cluster`]. Embedders can ignore them.

#![deny(missing_docs)]
// Errors carry the pool id and its usage so the message can say what to do; they are the
// cold path, and boxing them would only move the cost to every caller that matches on them.
#![allow(clippy::result_large_err)]

// Not part of the documented API: public only because the workspace's benchmarks measure the
// bitmap on its own (`benches/`).
#[doc(hidden)]
pub mod bitmap;
pub mod cluster;
mod command;
pub mod conflict;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod id;
mod keyed;
mod limits;
mod map;
mod quota;
mod records;
pub mod report;
mod results;
mod snapshot;
mod state;
mod subnet;
mod view;

pub use command::{Command, Op, Order, Outcome, PoolSpec, Released};
pub use conflict::{
    AddressOnLan, Conflict, ConflictCounts, ConflictRecord, Conflicts, Detection, DuplicateAlarm,
    HostLan, LanCheck, Mac,
};
pub use error::{AllocError, LeakHint};
pub use id::{AddrRange, Owner, ParseError, PoolId};
pub use limits::{
    check_host_name, MAX_ALLOCATIONS_PAGE, MAX_HOST_NAME_LEN, MAX_MAP_PAGE, MAX_NAME_LEN,
    MAX_NEXT_FREE, MAX_REPORTED, MAX_RESERVED_PER_POOL, MAX_RESTORE_BYTES, MAX_RESTORE_CHUNK,
};
pub use map::{CellState, MapCell, MapPage, SparseEntry, SparsePage};
pub use quota::{is_operator_name, HostQuota, QuotaReport, Quotas, OPERATOR_NAMES};
pub use report::{HostReport, ReportedLeak, ReportedMissing, StoredReport};
pub use results::{Allocated, HostForgotten, RequestedPool, Restored};
pub use snapshot::{format_of as snapshot_format, SnapshotError};
pub use state::{Config, ConflictReported, DefaultPool, IssuedCert, State};
pub use view::{human_count, Allocation, AllocationsPage, Holding, HostInfo, PoolInfo, Usage};

// raftipam's own bookkeeping, at the root for the crates that name it there; documented in
// `cluster`.
#[doc(hidden)]
pub use cluster::{canonical_serial, MAX_REVOKED_SERIALS};

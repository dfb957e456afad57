//! Replication: the allocator's commands in one Raft log (openraft), kept in RocksDB and
//! carried by tarpc over TCP, applied on every node in the same order.
//!
//! - [`types`]: the openraft type config — a log entry is an allocator command plus the
//!   request id of the client call that proposed it.
//! - `store/`: the RocksDB log store (vote and entries synced before openraft is told) and
//!   the state machine store (the allocator state, snapshots, the dedupe table).
//! - `network`, `rpc`, [`codec`], `wire`: tarpc services (Raft between nodes, the client API)
//!   on one TCP listener, postcard frames.
//! - [`node`]: a running node — leader forwarding, linearizable reads, membership changes.
//!
//! **What it guarantees:** an acknowledged write is in a quorum's synced logs; every replica
//! applies the same commands in the same order; a retried request id is applied once.
//! **What it must never do:** let an openraft or RocksDB type escape this folder's public
//! surface (the rest of the crate speaks [`crate::api`]); decide an allocation itself (only
//! `allocator_core::State::apply` does, on every replica alike); read a clock anywhere but
//! where a node stamps a command it proposes.

pub mod codec;
mod network;
pub mod node;
mod reads;
pub(crate) mod rpc;
mod snapshots;
pub(crate) mod store;
pub mod types;
mod wire;

pub use store::StoreError;

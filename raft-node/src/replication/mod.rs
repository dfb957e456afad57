//! Replication: the allocator's commands in one Raft log (openraft), kept in RocksDB and
//! carried over the [`crate::transport`] channels, applied on every node in the same order.
//!
//! - `store/`: the RocksDB log store (vote and entries synced before openraft is told) and
//!   the state machine store (the allocator state, snapshots, the dedupe table).
//! - `network`: openraft's network — Raft RPCs to the other nodes over the Raft channel.
//! - `snapshots`: when to build a snapshot (entries and bytes since the last one).
//! - `reads`: ReadIndex rounds shared by the linearizable reads queued meanwhile.
//!
//! **What it guarantees:** an acknowledged write is in a quorum's synced logs; every replica
//! applies the same commands in the same order; a retried request id is applied once.
//! **What it must never do:** let an openraft or RocksDB type escape the crate's public
//! surface (the rest of the crate speaks [`crate::api`]); decide an allocation itself (only
//! `allocator_core::State::apply` does, on every replica alike); read a clock anywhere but
//! where a node stamps a command it proposes.

pub(crate) mod network;
pub(crate) mod reads;
pub(crate) mod snapshots;
pub(crate) mod store;

pub use store::StoreError;

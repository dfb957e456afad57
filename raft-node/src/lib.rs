//! # raft-node
//!
//! raftipam's allocator ([`allocator_core`]) replicated across 3 or 5 nodes with openraft,
//! stored in RocksDB and served with tarpc over TCP; also the `raftipam` binary.
//!
//! **Invariants this crate keeps.** An allocation acknowledged to a client is in a quorum's
//! Raft log on disk (synced) before the answer leaves the leader, so it survives `kill -9`
//! of any or every node. Every replica applies the same commands in the same order, so the
//! allocator states agree. A retried request (same [`RequestId`]) is applied at most once.
//! No openraft type appears in this crate's public API: the rest of the project talks to a
//! cluster through [`Client`] and the types of [`api`].
//!
//! Code map: [`types`] (what a log entry is), `store` (RocksDB log and state machine),
//! `network` and `rpc` (tarpc), [`node`] (a running node, leader forwarding), [`client`]
//! (the typed client), [`metrics`] (Prometheus).

#![deny(missing_docs)]
// allocator-core's `AllocError` is large (it names pools and owners); errors are rare and
// carrying them unboxed keeps the API plain.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod client;
pub mod codec;
pub mod metrics;
mod network;
pub mod node;
mod rpc;
pub mod shim_backend;
mod store;
pub mod types;
mod wire;

pub use api::{
    AdminCommand, ApiError, Consistency, Member, NodeStatus, Query, QueryReply, WriteReply,
};
pub use client::{Client, ClientConfig, ClientError};
pub use node::{Node, NodeConfig, NodeError};
pub use store::StoreError;
pub use types::RequestId;

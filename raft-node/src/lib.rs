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
//! ## A 3-node cluster embedded in one program
//!
//! Each [`Node`] is started from a [`NodeConfig`] (id, listen address, data directory); one
//! is initialised and the others are added as voters; a [`Client`] of any of them then
//! allocates. Real TCP on loopback and real RocksDB directories:
//!
//! ```
//! use allocator_core::{Owner, PoolSpec};
//! use raft_node::{AdminCommand, Client, Node, NodeConfig};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let mut nodes = Vec::new();
//! for id in 1..=3 {
//!     let data = dir.path().join(format!("node-{id}"));
//!     nodes.push(Node::start(NodeConfig::new(id, "127.0.0.1:0".parse()?, data)).await?);
//! }
//! nodes[0].init().await?; // a one-node cluster...
//! let client = Client::connect(nodes.iter().map(|n| n.addr().to_string()))?;
//! for n in &nodes[1..] {
//!     // ...that grows to three voters (each catches up as a learner first).
//!     let addr = n.addr().to_string();
//!     client.admin(AdminCommand::AddNode { id: n.id(), addr }).await?;
//! }
//!
//! let spec = PoolSpec { space: "global".into(), subnet: Some("10.1.0.0/24".parse()?), ..Default::default() };
//! let pool = client.create_pool(spec, "host-a").await?;
//! let addr = client.allocate(&pool, None, Owner::new("host-a", "web-1")).await?;
//! assert_eq!(addr.to_string(), "10.1.0.1/24");
//! // A retry by the same owner gets the same address; reads are linearizable.
//! assert_eq!(client.allocate(&pool, None, Owner::new("host-a", "web-1")).await?, addr);
//! assert_eq!(client.allocations(&pool).await?.len(), 1);
//! assert_eq!(client.status().await?.voters(), vec![1, 2, 3]);
//!
//! for n in nodes {
//!     n.shutdown().await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Code map, one folder per layer, each arrow pointing down only:
//!
//! - [`api`]: the client API's vocabulary (queries, admin commands, replies, request ids);
//!   no openraft type, no I/O.
//! - [`replication`]: openraft, RocksDB and tarpc — the type config, the stores, the network,
//!   the wire codec and [`Node`]. The only folder that names openraft or RocksDB.
//! - [`client`]: the typed client ([`Client`]) and the cluster as the plugin's backend and the
//!   host agent's inventory.
//! - [`metrics`]: Prometheus text for a node (and the server a shim reuses for its own).
//! - `cli/` (in the binary only): one module per command group of `raftipam`.

#![deny(missing_docs)]
// allocator-core's `AllocError` is large (it names pools and owners); errors are rare and
// carrying them unboxed keeps the API plain.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod chaos;
pub mod client;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod replication;
pub mod tls;
pub mod web;

pub use api::{
    AdminCommand, ApiError, Consistency, Member, NodeStatus, Query, QueryReply, RequestId,
    WriteReply,
};
pub use client::{Client, ClientConfig, ClientError};
pub use replication::node::{now_ms, Node, NodeConfig, NodeError};
pub use replication::StoreError;

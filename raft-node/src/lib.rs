//! # raft-node
//!
//! raftipam's allocator ([`allocator_core`]) replicated across 3 or 5 nodes with openraft,
//! stored in RocksDB and served with tarpc over TCP, with mutual TLS; a client; nodes to embed.
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
//! let spec = PoolSpec::new("global").subnet("10.1.0.0/24".parse()?);
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
//! ## Layers
//!
//! Each room imports only from the rooms below it:
//!
//! - [`api`]: the client API's vocabulary (queries, admin commands, replies, request ids);
//!   no openraft type, no I/O.
//! - [`tls`]: certificates, identities, roles and the authorization table; join tokens.
//! - `transport`: the wire — channels, framing, the tarpc services.
//! - `replication`: openraft and RocksDB — the stores, the Raft network, snapshots, reads.
//! - `node`: a running [`Node`] (accepting, serving, routing, membership) and its
//!   [`NodeView`].
//! - [`client`]: the typed [`Client`], the joiner's half of a join, and (feature `docker`)
//!   the cluster as the Docker plugin's backend.
//!
//! No openraft, RocksDB or tarpc type is part of this crate's public API.
//!
//! ## Features
//!
//! - `docker` (off): `client::backend` — the cluster as `plugin_shim`'s backend and
//!   inventory, and the host agent's counters in a node's metrics.
//! - `failpoints` (off): crash points in the stores, for the chaos harness only.

#![deny(missing_docs)]

pub mod api;
pub mod client;
mod clock;
#[cfg(test)]
mod compat;
#[doc(hidden)]
pub mod fuzzing;
mod metrics;
mod node;
mod replication;
#[cfg(feature = "rogue")]
#[doc(hidden)]
pub mod rogue;
pub mod tls;
mod transport;
mod types;

pub use api::{
    AdminCommand, ApiError, Consistency, Member, NodeStatus, Query, QueryReply, RequestId,
    WriteReply,
};
pub use client::{Client, ClientConfig, ClientError};
pub use clock::now_ms;
pub use node::{
    address_group, Leadership, Node, NodeConfig, NodeError, NodeEvent, NodeView, Subscription,
};
pub use replication::store::Change;
pub use replication::StoreError;

/// Whether this build carries the chaos harness's crash points (feature `failpoints`).
#[doc(hidden)]
pub const CRASH_POINTS: bool = cfg!(feature = "failpoints");

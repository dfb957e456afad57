//! The host agent: what runs on every Docker host beside the plugin and keeps this host's
//! dockerd and the cluster in agreement.
//!
//! - [`docker`]: the local dockerd's endpoints of raftipam networks, over its unix socket.
//! - [`compare`]: one comparison of the cluster with dockerd — leaked, missing, held twice.
//! - [`reconcile`]: the background pass that releases leaks (two sightings a grace period
//!   apart, then a release only if the sequence number is unchanged), publishes each pass as
//!   the host's report, and the heartbeat.
//! - [`repair`]: the local part of `check --repair` (what to release, what to claim).
//! - [`assess`]: `check`'s view of the other hosts, from their last reports.
//! - [`metrics`]: the process-wide counters of all of the above.
//!
//! **What this module must never do:** free an address any local endpoint uses (whatever its
//! network's driver); release an allocation whose sequence number changed since it was seen
//! leaked; call dockerd while answering one of dockerd's plugin calls (the plugin router never
//! reaches this module); know anything of Raft. It reaches the allocator only through
//! [`Inventory`](crate::Inventory) (the cluster client in the binary, [`crate::MemoryBackend`]
//! in tests) and dockerd only through [`EndpointSource`].

pub mod assess;
pub mod compare;
pub mod docker;
pub mod metrics;
pub mod reconcile;
pub mod repair;

use std::future::Future;

pub use docker::{Docker, DockerError, Endpoint, DEFAULT_DOCKER_HOST};

/// Where the agent learns which endpoints this host's containers have: the local dockerd
/// ([`Docker`]), or a list in a test.
pub trait EndpointSource: Send + Sync + 'static {
    /// Every endpoint of every network on this host, whatever its IPAM driver.
    fn all_endpoints(&self) -> impl Future<Output = Result<Vec<Endpoint>, DockerError>> + Send;
}

impl EndpointSource for Docker {
    fn all_endpoints(&self) -> impl Future<Output = Result<Vec<Endpoint>, DockerError>> + Send {
        Docker::all_endpoints(self)
    }
}

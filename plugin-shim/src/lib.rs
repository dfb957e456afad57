//! # plugin-shim
//!
//! Docker's remote IPAM plugin protocol (`POST /Plugin.Activate`, `POST /IpamDriver.*`, JSON
//! bodies) served on a unix socket, translated into [`allocator_core::Op`]s against a
//! [`Backend`].
//!
//! This crate exists so that dockerd can use raftipam as its `--ipam-driver` without knowing
//! anything about Raft, and so that Raft knows nothing about Docker: the node process plugs
//! its cluster client in as the [`Backend`]; tests and embedders plug in a [`MemoryBackend`].
//!
//! **Invariants this crate keeps:**
//! - Every reply that is not a success has a non-200 status and a JSON body
//!   `{"Err": "<non-empty message>"}` — the only error form dockerd's plugin client reads
//!   (`pkg/plugins/client.go`). Malformed JSON, oversized bodies, unknown methods, wrong HTTP
//!   methods, backend failures, timeouts and even panics in a handler all take that form.
//! - Every call answers within [`ShimConfig::call_timeout`]: a plugin that accepts a
//!   connection and never answers would block dockerd.
//! - The shim holds no allocation state of its own. Everything it knows is in the request, the
//!   pool id (which names the subnet, `space/subnet[/range]`) or the backend.
//! - The socket is created with mode 0600 (dockerd runs as root) and removed on shutdown.
//!
//! ```no_run
//! use std::sync::Arc;
//! use plugin_shim::{serve, MemoryBackend, ShimConfig};
//!
//! # async fn run() -> Result<(), plugin_shim::ShimError> {
//! let backend = Arc::new(MemoryBackend::default());
//! let config = ShimConfig::new("host-a");
//! let stop = async { let _ = tokio::signal::ctrl_c().await; };
//! serve("/run/docker/plugins/raftipam.sock", backend, config, stop).await
//! # }
//! ```
//!
//! The crate also holds the **host agent** ([`agent`]): what runs on every Docker host beside
//! the plugin — reading the local dockerd's endpoints, releasing leaked addresses, heartbeats,
//! the reports `raftipam check` reads — against the same seam ([`Inventory`], a [`Backend`]
//! that can also list), so it too knows nothing of Raft and runs against a [`MemoryBackend`]
//! in tests. The plugin's request path never reaches the agent: answering dockerd never waits
//! on a call back into dockerd.
//!
//! Code map: [`backend`] (the seam to the allocator), [`wire`] (Docker's request and reply
//! bodies), [`options`] (driver options), [`handshake`], [`pool`] and [`address`] (one file
//! per group of methods), [`error`] (how failures become `{"Err"}` replies), [`mod@router`] (the
//! HTTP surface) and [`socket`] (the socket file's life). [`probe`] checks an address on the
//! LAN (an ARP probe, a duplicate address detection solicitation) and watches the link's ARP
//! and neighbor discovery traffic, for the agent to report conflicts; [`import`] reads what
//! other inventories (`/etc/ethers`, dnsmasq and dhcpd leases, `arp-scan`) say is in use.

#![deny(missing_docs)]

pub mod address;
pub mod agent;
pub mod backend;
pub mod cni;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod import;
pub mod options;
pub mod pool;
pub mod probe;
pub mod router;
pub mod socket;
pub mod wire;

use std::time::Duration;

pub use backend::{Backend, BackendError, Inventory, MemoryBackend};
pub use error::{ApiError, ShimError};
pub use router::router;
pub use socket::{serve, PluginSocket};

/// Default bound on one plugin call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit on a request body. Docker's bodies are a few hundred bytes.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// How a shim behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShimConfig {
    /// This Docker host's name: the holder of the pools and reservations it requests and the
    /// `host` half of the owner of every address it allocates. Must be stable across restarts
    /// and unique in the cluster, or a host could release what another holds.
    pub host: String,
    /// Longest time one call may take before it is answered with an error (default 10 s).
    pub call_timeout: Duration,
    /// Largest request body accepted, in bytes (default 64 KiB).
    pub body_limit: usize,
    /// Probe every container address on the LAN before handing it out (`None`: no checks).
    pub lan_checks: Option<probe::LanChecks>,
}

impl ShimConfig {
    /// A configuration for `host` with the default timeout and body limit.
    pub fn new(host: impl Into<String>) -> Self {
        ShimConfig {
            host: host.into(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            body_limit: DEFAULT_BODY_LIMIT,
            lan_checks: None,
        }
    }

    /// The same configuration probing container addresses on the LAN before hand-out.
    pub fn with_lan_checks(mut self, checks: Option<probe::LanChecks>) -> Self {
        self.lan_checks = checks;
        self
    }

    /// The same configuration with another call timeout.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The same configuration with another body limit.
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }
}

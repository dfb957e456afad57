//! CNI: raftipam as the IPAM plugin of containerd, Podman, Nomad and Kubernetes (Multus)
//! hosts, sharing one address authority with Docker.
//!
//! - [`spec`]: what the CNI spec (0.3.0 to 1.1.0) says a plugin reads and writes, decoded
//!   and encoded without I/O.
//! - [`plugin`]: the short-lived plugin process (`raftipam` run with `CNI_COMMAND` set):
//!   decodes, forwards to the host agent over a local socket, prints the result.
//! - [`agent`]: the host agent's side: the calls carried out against the cluster as this
//!   host, attachment records, and the sweep of attachments whose namespace vanished.
//!
//! The agent serves CNI on its own unix socket (mode 0600, default
//! [`spec::DEFAULT_SOCKET`]), served with [`crate::PluginSocket::serve_router`].

pub mod agent;
pub mod plugin;
pub mod spec;

pub use agent::{AgentRequest, CniAgent, Records};
pub use spec::CniError;

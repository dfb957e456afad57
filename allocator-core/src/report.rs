//! What each Docker host last found when it compared its dockerd with the cluster.
//!
//! A shim's reconciliation pass sees only its own host. To let `raftipam check` on any host
//! speak for every host, and to let a "pool full" error say whether the pool's addresses are
//! really in use, each shim writes the outcome of its pass into the replicated state with
//! [`crate::Op::Report`]: the leaked allocations it saw (allocated to the host, no endpoint in
//! its dockerd) and the endpoints whose address the cluster does not hold for it.
//!
//! A report is a claim by its host at a time, not a fact of the allocator: nothing here frees
//! or changes an allocation. A leak listed in a report counts only while the allocation at
//! that address still has the reported sequence number and host
//! ([`State::current_leaks`](crate::State::current_leaks)): an address released and handed
//! out again since is no longer called leaked.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::AllocError;
use crate::id::PoolId;
use crate::limits::check_name;
pub use crate::limits::MAX_REPORTED;

/// An allocation a host reported leaked: allocated to it, no endpoint in its dockerd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedLeak {
    /// The pool it was found in.
    pub pool: PoolId,
    /// The address.
    pub addr: IpAddr,
    /// Its sequence number when seen.
    pub seq: u64,
    /// Its owner's endpoint name.
    pub endpoint: String,
}

/// An endpoint of the host's dockerd whose address the cluster does not hold for the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedMissing {
    /// The endpoint's address.
    pub addr: IpAddr,
    /// Its Docker network's name.
    pub network: String,
    /// Its container's name.
    pub container: String,
    /// Who the cluster said held the address instead (`host/endpoint`), if anyone.
    pub held_by: Option<String>,
}

/// The outcome of one comparison of a host's dockerd with the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    /// Endpoints of raftipam networks in the host's dockerd.
    pub endpoints: u64,
    /// Allocations the cluster held for the host.
    pub allocations: u64,
    /// Leaks seen, at most [`MAX_REPORTED`].
    pub leaked: Vec<ReportedLeak>,
    /// All leaks seen (may exceed `leaked.len()`).
    pub leaked_total: u64,
    /// Missing endpoints seen, at most [`MAX_REPORTED`].
    pub missing: Vec<ReportedMissing>,
    /// All missing endpoints seen.
    pub missing_total: u64,
    /// Addresses the host saw held twice (must be 0).
    pub held_twice: u64,
}

impl HostReport {
    pub(crate) fn validate(&self) -> Result<(), AllocError> {
        let bad = |m: String| Err(AllocError::Invalid(format!("host report: {m}")));
        if self.leaked.len() > MAX_REPORTED || self.missing.len() > MAX_REPORTED {
            return bad(format!(
                "lists more than {MAX_REPORTED} leaks or missing endpoints"
            ));
        }
        if (self.leaked.len() as u64) > self.leaked_total
            || (self.missing.len() as u64) > self.missing_total
        {
            return bad("lists more entries than its totals".into());
        }
        for l in &self.leaked {
            check_name("endpoint", &l.endpoint, true)?;
        }
        for m in &self.missing {
            check_name("network", &m.network, true)?;
            check_name("container", &m.container, true)?;
            if let Some(h) = &m.held_by {
                check_name("holder", h, true)?;
            }
        }
        Ok(())
    }
}

/// A host's last report and when it was made (ms since the Unix epoch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReport {
    /// The host.
    pub host: String,
    /// When the command carrying it was proposed.
    pub at_ms: u64,
    /// What it said.
    pub report: HostReport,
}

impl StoredReport {
    /// Checks what [`crate::Op::Report`] and a snapshot's decoder both accept: a host name and
    /// a report within bounds.
    pub(crate) fn validate(&self) -> Result<(), AllocError> {
        check_name("host", &self.host, false)?;
        self.report.validate()
    }
}

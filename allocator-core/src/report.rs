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
//! that address still has the reported sequence number and host ([`State::current_leaks`]):
//! an address released and handed out again since is no longer called leaked.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::AllocError;
use crate::id::PoolId;
use crate::state::{check_name, State};
use crate::subnet::Subnet;

/// Most leaks and most missing endpoints one report lists (the totals count them all).
pub const MAX_REPORTED: usize = 1024;

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
    fn validate(&self) -> Result<(), AllocError> {
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

/// Leaks of one pool that hosts reported and that still stand, by host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakHint {
    /// `(host, count)`, by host name.
    pub by_host: Vec<(String, u64)>,
}

impl LeakHint {
    /// Addresses in all.
    pub fn total(&self) -> u64 {
        self.by_host.iter().map(|(_, n)| n).sum()
    }
}

impl std::fmt::Display for LeakHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.by_host.is_empty() {
            return write!(f, "no host reported leaks in it at its last check");
        }
        let hosts: Vec<String> = self
            .by_host
            .iter()
            .map(|(h, n)| format!("{h} ({n})"))
            .collect();
        write!(
            f,
            "{} of its addresses are leaked (allocated, no container) according to the last check of host {}",
            self.total(),
            hosts.join(", ")
        )
    }
}

impl State {
    pub(crate) fn store_report(
        &mut self,
        at_ms: u64,
        host: &str,
        report: &HostReport,
    ) -> Result<(), AllocError> {
        let stored = StoredReport {
            host: host.to_string(),
            at_ms,
            report: report.clone(),
        };
        stored.validate()?;
        self.reports.insert(host.to_string(), stored);
        Ok(())
    }

    /// Every host's last report, by host name.
    pub fn reports(&self) -> Vec<StoredReport> {
        self.reports.values().cloned().collect()
    }

    /// The last report of `host`.
    pub fn report(&self, host: &str) -> Option<&StoredReport> {
        self.reports.get(host)
    }

    /// Whether a leak `host` reported still stands: the allocation at its address still has
    /// the reported host and sequence number.
    pub fn leak_stands(&self, host: &str, l: &ReportedLeak) -> bool {
        self.subnets
            .get(&(l.pool.space.clone(), l.pool.subnet))
            .and_then(|sn| Some((sn, sn.offset(l.addr)?)))
            .is_some_and(|(sn, off)| self.stands_at(sn, off, host, l))
    }

    /// Whether the allocation at offset `off` of `sn` is still the one `host` reported in `l`.
    fn stands_at(&self, sn: &Subnet, off: u128, host: &str, l: &ReportedLeak) -> bool {
        sn.records.get(off).is_some_and(|rec| {
            rec.seq == l.seq && self.hosts.get(rec.host as usize).map(String::as_str) == Some(host)
        })
    }

    /// The reported leaks that still stand in `pool`'s range: the allocation at the address
    /// still has the reported host and sequence number.
    pub fn current_leaks(&self, pool: &PoolId) -> LeakHint {
        let Some(p) = self.pools.get(pool) else {
            return LeakHint::default();
        };
        let Some(sn) = self.subnets.get(&p.key) else {
            return LeakHint::default();
        };
        let mut by_host: BTreeMap<&str, u64> = BTreeMap::new();
        for r in self.reports.values() {
            for l in &r.report.leaked {
                if l.pool.space != pool.space || l.pool.subnet != pool.subnet {
                    continue;
                }
                let stands = sn
                    .offset(l.addr)
                    .is_some_and(|o| o >= p.lo && o <= p.hi && self.stands_at(sn, o, &r.host, l));
                if stands {
                    *by_host.entry(r.host.as_str()).or_default() += 1;
                }
            }
        }
        LeakHint {
            by_host: by_host
                .into_iter()
                .map(|(h, n)| (h.to_string(), n))
                .collect(),
        }
    }
}

//! `check`'s view of the hosts it cannot see: each host's last report, read from the cluster,
//! judged against the allocations the cluster holds now. A report older than the limit is
//! *stale* and accuses nobody; a reported leak counts only while the allocation at its
//! address still has the reported host and sequence number.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use allocator_core::{Allocation, PoolId, ReportedMissing, StoredReport};
use serde::{Deserialize, Serialize};

use super::compare::{Leak, Report, Twice};

/// How much a host's last report can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    /// A report younger than the limit: its findings count.
    Reported,
    /// A report older than the limit: shown, accuses nobody.
    Stale,
    /// No report at all.
    Unreported,
}

/// What `check` can say of a host it cannot see: its shim's last report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherHost {
    /// The host.
    pub host: String,
    /// Whether its report is fresh, stale or missing.
    pub status: ReportStatus,
    /// Seconds since its last report.
    pub report_age_s: Option<u64>,
    /// Endpoints its dockerd had at its last report.
    pub endpoints: Option<u64>,
    /// Allocations the cluster holds for it now.
    pub allocations: u64,
    /// Reported leaks that still stand (same allocation now), with the allocation.
    pub leaked: Vec<Leak>,
    /// Endpoints it reported whose address the cluster did not hold for it.
    pub missing: Vec<ReportedMissing>,
    /// Leaks and missing endpoints beyond those listed (a report lists at most 1024 each).
    pub unlisted: u64,
    /// Addresses it saw held twice.
    pub held_twice: u64,
}

impl OtherHost {
    /// Nothing wrong in its report (a stale or missing report is not called wrong).
    pub fn is_clean(&self) -> bool {
        self.leaked.is_empty()
            && self.missing.is_empty()
            && self.unlisted == 0
            && self.held_twice == 0
    }
}

/// The other hosts as their last reports describe them, and the addresses those reports show
/// used twice: an endpoint on one host whose address the cluster holds for another host that
/// does not report it leaked (so, presumably, uses it too).
///
/// `local` is the host checked live (left out); `cluster` every allocation now; `hosts` the
/// cluster's hosts; a report older than `max_age` is `stale` and accuses nobody.
pub fn assess_others(
    local: &str,
    local_report: Option<&Report>,
    reports: &[StoredReport],
    cluster: &[(PoolId, Allocation)],
    hosts: &[allocator_core::HostInfo],
    now_ms: u64,
    max_age: Duration,
) -> (Vec<OtherHost>, Vec<Twice>) {
    let current: HashMap<(&str, ipnet::IpNet, IpAddr), &Allocation> = cluster
        .iter()
        .map(|(p, a)| ((p.space.as_str(), p.subnet, a.addr), a))
        .collect();
    let by_host: BTreeMap<&str, &StoredReport> =
        reports.iter().map(|r| (r.host.as_str(), r)).collect();
    let fresh = |r: &StoredReport| now_ms.saturating_sub(r.at_ms) <= max_age.as_millis() as u64;
    let mut others = Vec::new();
    for h in hosts {
        if h.name == local {
            continue;
        }
        let r = by_host.get(h.name.as_str()).copied();
        if r.is_none() && h.allocations == 0 {
            continue;
        }
        let mut o = OtherHost {
            host: h.name.clone(),
            status: ReportStatus::Unreported,
            report_age_s: r.map(|r| now_ms.saturating_sub(r.at_ms) / 1000),
            endpoints: r.map(|r| r.report.endpoints),
            allocations: h.allocations,
            leaked: Vec::new(),
            missing: Vec::new(),
            unlisted: 0,
            held_twice: 0,
        };
        if let Some(r) = r {
            o.status = if fresh(r) {
                ReportStatus::Reported
            } else {
                ReportStatus::Stale
            };
        }
        if let Some(r) = r.filter(|r| fresh(r)) {
            o.leaked = r
                .report
                .leaked
                .iter()
                .filter_map(|l| {
                    let a = current.get(&(l.pool.space.as_str(), l.pool.subnet, l.addr))?;
                    (a.seq == l.seq && a.owner.host == h.name).then(|| Leak {
                        pool: l.pool.clone(),
                        allocation: (*a).clone(),
                    })
                })
                .collect();
            o.missing = r.report.missing.clone();
            o.unlisted = (r.report.leaked_total - r.report.leaked.len() as u64)
                + (r.report.missing_total - r.report.missing.len() as u64);
            o.held_twice = r.report.held_twice;
        }
        others.push(o);
    }
    // Endpoints (local or reported) on one host whose address another host holds, when that
    // host reported freshly and does not call it leaked.
    let leaked_at: BTreeMap<&str, Vec<IpAddr>> = others
        .iter()
        .map(|o| {
            (
                o.host.as_str(),
                o.leaked.iter().map(|l| l.allocation.addr).collect(),
            )
        })
        .chain(local_report.map(|r| (local, r.leaked.iter().map(|l| l.allocation.addr).collect())))
        .collect();
    let checked: BTreeMap<&str, bool> = others
        .iter()
        .map(|o| (o.host.as_str(), o.status == ReportStatus::Reported))
        .chain(local_report.map(|_| (local, true)))
        .collect();
    let mut claims: Vec<(String, IpAddr, String)> = Vec::new();
    if let Some(r) = local_report {
        for m in &r.missing {
            if let Some(h) = &m.held_by {
                claims.push((
                    format!(
                        "{local}: container {} in network {}",
                        m.endpoint.container, m.endpoint.network
                    ),
                    m.endpoint.addr,
                    h.clone(),
                ));
            }
        }
    }
    for o in &others {
        for m in &o.missing {
            if let Some(h) = &m.held_by {
                claims.push((
                    format!(
                        "{}: container {} in network {}",
                        o.host, m.container, m.network
                    ),
                    m.addr,
                    h.clone(),
                ));
            }
        }
    }
    let mut twice = Vec::new();
    for (who, addr, held_by) in claims {
        let holder = held_by.split('/').next().unwrap_or_default();
        let holder_checked = checked.get(holder).copied().unwrap_or(false);
        let holder_leaked = leaked_at.get(holder).is_some_and(|l| l.contains(&addr));
        if holder_checked && !holder_leaked {
            twice.push(Twice {
                addr,
                source: "hosts".into(),
                holders: vec![
                    who,
                    format!("{held_by} (the cluster's holder, not reported leaked)"),
                ],
            });
        }
    }
    (others, twice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::compare::compare_lists;
    use crate::agent::compare::tests::{alloc, ep};
    use allocator_core::ReportedLeak;

    fn host(name: &str, allocations: u64) -> allocator_core::HostInfo {
        allocator_core::HostInfo {
            name: name.into(),
            version: None,
            last_seen_ms: None,
            allocations,
            reservations: 0,
            pools: 0,
            report_ms: None,
            leaked: None,
        }
    }

    fn stored(host: &str, at_ms: u64, r: &Report) -> StoredReport {
        StoredReport {
            host: host.into(),
            at_ms,
            report: r.to_host_report(),
        }
    }

    #[test]
    fn other_hosts_are_judged_by_fresh_reports_only() {
        let cluster = vec![
            alloc("a", "web", "10.0.0.2", 1),
            alloc("b", "gone", "10.0.0.3", 2),
            alloc("b", "db", "10.0.0.4", 3),
            alloc("c", "x", "10.0.0.5", 4),
            alloc("d", "y", "10.0.0.6", 5),
        ];
        // b: 10.0.0.3 leaked (still the same allocation), 10.0.0.9 reported leaked with a seq
        // that no longer stands. c: its container uses 10.0.0.4, which the cluster gives b, and
        // b does not call it leaked: held twice. d: its report is an hour old.
        let rb = compare_lists("b", "raftipam", &cluster, &[ep("db", "10.0.0.4")]);
        let mut rb = stored("b", 10_000, &rb);
        rb.report.leaked.push(ReportedLeak {
            pool: cluster[0].0.clone(),
            addr: "10.0.0.9".parse().unwrap(),
            seq: 9,
            endpoint: String::new(),
        });
        rb.report.leaked_total += 1;
        let rc = compare_lists(
            "c",
            "raftipam",
            &cluster,
            &[ep("x", "10.0.0.5"), ep("z", "10.0.0.4")],
        );
        let rc = stored("c", 10_000, &rc);
        let rd = compare_lists("d", "raftipam", &cluster, &[]);
        let rd = stored("d", 0, &rd);
        let local = compare_lists("a", "raftipam", &cluster, &[ep("web", "10.0.0.2")]);
        let hosts = vec![
            host("a", 1),
            host("b", 2),
            host("c", 1),
            host("d", 1),
            host("e", 0),
        ];
        let (others, twice) = assess_others(
            "a",
            Some(&local),
            &[rb, rc, rd.clone()],
            &cluster,
            &hosts,
            3_600_000,
            Duration::from_secs(3_590),
        );
        let names: Vec<&str> = others.iter().map(|o| o.host.as_str()).collect();
        assert_eq!(names, ["b", "c", "d"], "e holds nothing and never reported");
        assert_eq!(others[0].status, ReportStatus::Reported);
        let leaked: Vec<String> = others[0]
            .leaked
            .iter()
            .map(|l| l.allocation.addr.to_string())
            .collect();
        assert_eq!(leaked, ["10.0.0.3"]);
        assert!(!others[0].is_clean());
        assert_eq!(others[1].missing.len(), 1);
        assert_eq!(others[2].status, ReportStatus::Stale);
        assert!(others[2].is_clean(), "a stale report accuses nobody");
        assert_eq!(twice.len(), 1, "{twice:?}");
        assert_eq!(twice[0].addr.to_string(), "10.0.0.4");
        assert_eq!(twice[0].source, "hosts");
        // b leaking 10.0.0.4 instead: c's container took a leaked address, not a double use.
        let rb2 = compare_lists("b", "raftipam", &cluster, &[ep("gone", "10.0.0.3")]);
        let rc = compare_lists(
            "c",
            "raftipam",
            &cluster,
            &[ep("x", "10.0.0.5"), ep("z", "10.0.0.4")],
        );
        let (_, twice) = assess_others(
            "a",
            Some(&local),
            &[stored("b", 10_000, &rb2), stored("c", 10_000, &rc), rd],
            &cluster,
            &hosts,
            3_600_000,
            Duration::from_secs(3_590),
        );
        assert!(twice.is_empty(), "{twice:?}");
    }
}

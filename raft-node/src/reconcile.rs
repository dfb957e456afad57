//! Leaks: comparing what the cluster says a host holds with what its dockerd has, and
//! releasing what nobody uses any more.
//!
//! - [`compare`] makes one [`Report`]: *leaked* (allocated to this host, no endpoint in
//!   dockerd), *missing* (an endpoint whose address the cluster does not hold for this host)
//!   and *held twice* (one address allocated twice, or used by two local endpoints — must never
//!   happen).
//! - [`Reconciler`] runs in every shim: a pass at every interval; an allocation is released
//!   only when it was seen leaked at two passes at least the grace period apart with the same
//!   sequence number, and then with [`Op::ReleaseIfUnchanged`], so an address released and
//!   handed out again in between is never freed by mistake.
//! - [`heartbeat`] reports the host to the cluster ([`Op::Heartbeat`]) at start and then
//!   periodically.
//!
//! Counters are process-wide ([`ops_metrics`]) and appear in the node's `/metrics` and in the
//! shim's own `--metrics`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use allocator_core::report::MAX_REPORTED;
use allocator_core::{
    Allocation, HostReport, Op, Outcome, PoolId, Released, ReportedLeak, ReportedMissing,
    StoredReport,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::api::{Consistency, Query, QueryReply};
use crate::client::{Client, ClientError};
use crate::docker::{Docker, DockerError, Endpoint};

/// The version a shim reports in its heartbeat.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why a comparison could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// dockerd did not answer.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// The cluster did not answer.
    #[error("the cluster did not answer: {0}")]
    Cluster(ClientError),
}

impl From<ClientError> for CompareError {
    fn from(e: ClientError) -> Self {
        CompareError::Cluster(e)
    }
}

/// An allocation of this host with no endpoint in its dockerd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leak {
    /// The pool.
    pub pool: PoolId,
    /// The allocation.
    pub allocation: Allocation,
}

/// An endpoint whose address the cluster does not hold for this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Who the cluster says holds the address instead (`host/endpoint`), if anyone.
    pub held_by: Option<String>,
}

/// One address held by more than one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Twice {
    /// The address.
    pub addr: IpAddr,
    /// Where: `cluster` (two allocations) or `docker` (two local endpoints).
    pub source: String,
    /// The holders, `host/endpoint` or `network/container`.
    pub holders: Vec<String>,
}

/// The outcome of one comparison.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The host compared.
    pub host: String,
    /// Endpoints of raftipam networks in dockerd.
    pub endpoints: usize,
    /// Allocations the cluster holds for the host.
    pub allocations: usize,
    /// Allocated to the host, no endpoint.
    pub leaked: Vec<Leak>,
    /// Endpoint addresses the cluster does not hold for the host.
    pub missing: Vec<Missing>,
    /// Addresses held twice.
    pub held_twice: Vec<Twice>,
}

impl Report {
    /// Nothing wrong.
    pub fn is_clean(&self) -> bool {
        self.leaked.is_empty() && self.missing.is_empty() && self.held_twice.is_empty()
    }
}

fn owner_str(a: &Allocation) -> String {
    format!("{}/{}", a.owner.host, a.owner.endpoint)
}

/// Compares two lists already fetched: the cluster's allocations (all hosts) and the
/// endpoints of this host's dockerd in networks of IPAM driver `driver`. An allocation of
/// this host whose address any local endpoint uses (whatever its network's driver: another
/// shim of the same host name, say) is not called leaked: reconciliation must never free an
/// address in use.
pub fn compare_lists(
    host: &str,
    driver: &str,
    cluster: &[(PoolId, Allocation)],
    all_endpoints: &[Endpoint],
) -> Report {
    let in_use: std::collections::BTreeSet<IpAddr> = all_endpoints.iter().map(|e| e.addr).collect();
    let endpoints: Vec<Endpoint> = all_endpoints
        .iter()
        .filter(|e| e.ipam_driver == driver)
        .cloned()
        .collect();
    let endpoints = &endpoints[..];
    let mut by_addr: BTreeMap<IpAddr, Vec<&(PoolId, Allocation)>> = BTreeMap::new();
    for pa in cluster {
        by_addr.entry(pa.1.addr).or_default().push(pa);
    }
    let mut held_twice = Vec::new();
    for (addr, list) in &by_addr {
        if list.len() > 1 {
            held_twice.push(Twice {
                addr: *addr,
                source: "cluster".into(),
                holders: list
                    .iter()
                    .map(|(p, a)| format!("{} in {p}", owner_str(a)))
                    .collect(),
            });
        }
    }
    let mut local: BTreeMap<IpAddr, Vec<&Endpoint>> = BTreeMap::new();
    for e in endpoints {
        local.entry(e.addr).or_default().push(e);
    }
    for (addr, list) in &local {
        if list.len() > 1 {
            held_twice.push(Twice {
                addr: *addr,
                source: "docker".into(),
                holders: list
                    .iter()
                    .map(|e| format!("{}/{}", e.network, e.container))
                    .collect(),
            });
        }
    }
    let mine: Vec<&(PoolId, Allocation)> = cluster
        .iter()
        .filter(|(_, a)| a.owner.host == host)
        .collect();
    let leaked = mine
        .iter()
        .filter(|(_, a)| !in_use.contains(&a.addr))
        .map(|(p, a)| Leak {
            pool: p.clone(),
            allocation: a.clone(),
        })
        .collect();
    let missing = endpoints
        .iter()
        .filter(|e| !mine.iter().any(|(_, a)| a.addr == e.addr))
        .map(|e| Missing {
            endpoint: e.clone(),
            held_by: by_addr
                .get(&e.addr)
                .and_then(|l| l.first())
                .map(|(_, a)| owner_str(a)),
        })
        .collect();
    Report {
        host: host.to_string(),
        endpoints: endpoints.len(),
        allocations: mine.len(),
        leaked,
        missing,
        held_twice,
    }
}

/// Compares what the cluster says `host` holds with the endpoints of networks whose IPAM
/// driver is `driver` in `docker`. The cluster is read first, so an endpoint created while
/// this runs shows as missing rather than its allocation as leaked.
pub async fn compare(
    client: &Client,
    docker: &Docker,
    host: &str,
    driver: &str,
) -> Result<Report, CompareError> {
    let cluster = client.all_allocations().await?;
    let endpoints = docker.all_endpoints().await?;
    Ok(compare_lists(host, driver, &cluster, &endpoints))
}

/// Like [`compare`], reading only `host`'s allocations from the cluster (what a shim's
/// periodic pass needs, cheap however many hosts the cluster has). `held_twice` and
/// `Missing::held_by` then only see this host's allocations.
pub async fn compare_host(
    client: &Client,
    docker: &Docker,
    host: &str,
    driver: &str,
) -> Result<Report, CompareError> {
    let mine = match client
        .query(
            Query::HostAllocations(host.to_string()),
            Consistency::Linearizable,
        )
        .await?
    {
        QueryReply::HostAllocations(a) => a,
        r => {
            return Err(CompareError::Cluster(ClientError::Protocol(format!(
                "unexpected answer to a host allocations query: {r:?}"
            ))))
        }
    };
    let endpoints = docker.all_endpoints().await?;
    Ok(compare_lists(host, driver, &mine, &endpoints))
}

impl Report {
    /// What the cluster keeps of this report ([`Op::Report`]): the totals, and the first
    /// [`MAX_REPORTED`] leaks and missing endpoints.
    pub fn to_host_report(&self) -> HostReport {
        HostReport {
            endpoints: self.endpoints as u64,
            allocations: self.allocations as u64,
            leaked: self
                .leaked
                .iter()
                .take(MAX_REPORTED)
                .map(|l| ReportedLeak {
                    pool: l.pool.clone(),
                    addr: l.allocation.addr,
                    seq: l.allocation.seq,
                    endpoint: l.allocation.owner.endpoint.clone(),
                })
                .collect(),
            leaked_total: self.leaked.len() as u64,
            missing: self
                .missing
                .iter()
                .take(MAX_REPORTED)
                .map(|m| ReportedMissing {
                    addr: m.endpoint.addr,
                    network: m.endpoint.network.clone(),
                    container: m.endpoint.container.clone(),
                    held_by: m.held_by.clone(),
                })
                .collect(),
            missing_total: self.missing.len() as u64,
            held_twice: self.held_twice.len() as u64,
        }
    }
}

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

/// Writes `report` into the cluster as the last report of its host, so that `raftipam check`
/// on any host and a "pool full" error see it.
pub async fn publish(client: &Client, report: &Report) -> Result<(), ClientError> {
    client
        .apply(Op::Report {
            host: report.host.clone(),
            report: report.to_host_report(),
        })
        .await
        .map(|_| ())
}

/// Releases one leak if it is still the same allocation. True if it was released.
pub async fn release_leak(client: &Client, host: &str, leak: &Leak) -> Result<bool, ClientError> {
    let w = client
        .apply(Op::ReleaseIfUnchanged {
            pool: leak.pool.clone(),
            addr: leak.allocation.addr,
            host: host.to_string(),
            seq: leak.allocation.seq,
        })
        .await?;
    Ok(matches!(
        w.outcome,
        Outcome::Released {
            what: Released::Allocation
        }
    ))
}

/// Process-wide counters of reconciliation and heartbeats.
pub struct OpsMetrics {
    /// Leaked addresses found (counted once per address and sequence number).
    pub leaked_found: Counter,
    /// Leaked addresses released.
    pub repaired: Counter,
    /// Reconciliation passes completed.
    pub passes: Counter,
    /// Reconciliation passes that failed (dockerd or the cluster did not answer).
    pub pass_failures: Counter,
    /// Addresses seen leaked at the last pass.
    pub leaked_now: Gauge,
    /// Heartbeats sent successfully.
    pub heartbeats: Counter,
}

impl OpsMetrics {
    /// Adds these counters to `registry` (the node's, or the shim's own).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "leaked_found",
            "Leaked addresses found by reconciliation (allocated to this host, no endpoint in dockerd)",
            self.leaked_found.clone(),
        );
        registry.register(
            "leaked_repaired",
            "Leaked addresses released by reconciliation or check --repair",
            self.repaired.clone(),
        );
        registry.register(
            "reconcile_passes",
            "Reconciliation passes completed",
            self.passes.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciliation passes that failed (dockerd or the cluster did not answer)",
            self.pass_failures.clone(),
        );
        registry.register(
            "leaked_addresses",
            "Addresses seen leaked at the last reconciliation pass",
            self.leaked_now.clone(),
        );
        registry.register(
            "heartbeats",
            "Heartbeats this process sent to the cluster",
            self.heartbeats.clone(),
        );
    }
}

static OPS: LazyLock<OpsMetrics> = LazyLock::new(|| OpsMetrics {
    leaked_found: Counter::default(),
    repaired: Counter::default(),
    passes: Counter::default(),
    pass_failures: Counter::default(),
    leaked_now: Gauge::default(),
    heartbeats: Counter::default(),
});

/// This process's reconciliation and heartbeat counters.
pub fn ops_metrics() -> &'static OpsMetrics {
    &OPS
}

/// How a shim reconciles.
#[derive(Clone, Debug)]
pub struct ReconcileConfig {
    /// This host's name in the cluster.
    pub host: String,
    /// The IPAM driver name of the shim (networks of other drivers are not looked at).
    pub driver: String,
    /// Time between passes.
    pub interval: Duration,
    /// A leak is released only when seen at two passes at least this far apart.
    pub grace: Duration,
}

/// The state kept between passes: when each leak was first seen, with its sequence number.
pub struct Reconciler {
    client: Client,
    docker: Docker,
    cfg: ReconcileConfig,
    seen: HashMap<(PoolId, IpAddr), (u64, Instant)>,
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassResult {
    /// Leaks seen.
    pub leaked: usize,
    /// Of those, released now.
    pub released: usize,
}

impl Reconciler {
    /// A reconciler for `cfg.host`, comparing `client`'s cluster with `docker`.
    pub fn new(client: Client, docker: Docker, cfg: ReconcileConfig) -> Reconciler {
        Reconciler {
            client,
            docker,
            cfg,
            seen: HashMap::new(),
        }
    }

    /// One pass at time `now`.
    pub async fn pass(&mut self, now: Instant) -> Result<PassResult, CompareError> {
        let m = ops_metrics();
        let report =
            compare_host(&self.client, &self.docker, &self.cfg.host, &self.cfg.driver).await?;
        for t in &report.held_twice {
            tracing::error!(
                addr = %t.addr,
                source = %t.source,
                holders = ?t.holders,
                "address held twice: this must never happen; report it"
            );
        }
        let mut result = PassResult {
            leaked: report.leaked.len(),
            released: 0,
        };
        m.leaked_now.set(report.leaked.len() as i64);
        if let Err(e) = publish(&self.client, &report).await {
            tracing::warn!("could not write this pass's report into the cluster: {e}");
        }
        let mut still = HashMap::new();
        for leak in &report.leaked {
            let key = (leak.pool.clone(), leak.allocation.addr);
            let seq = leak.allocation.seq;
            let first = match self.seen.get(&key) {
                Some((s, at)) if *s == seq => *at,
                _ => {
                    m.leaked_found.inc();
                    tracing::info!(
                        pool = %leak.pool,
                        addr = %leak.allocation.addr,
                        owner = %owner_str(&leak.allocation),
                        seq,
                        grace = %humantime::format_duration(self.cfg.grace),
                        "leaked address seen (allocated to this host, no endpoint in dockerd); released if still leaked after the grace period"
                    );
                    now
                }
            };
            if now.duration_since(first) >= self.cfg.grace {
                match release_leak(&self.client, &self.cfg.host, leak).await {
                    Ok(true) => {
                        m.repaired.inc();
                        result.released += 1;
                        tracing::warn!(
                            pool = %leak.pool,
                            addr = %leak.allocation.addr,
                            owner = %owner_str(&leak.allocation),
                            seq,
                            "released leaked address"
                        );
                    }
                    Ok(false) => tracing::info!(
                        pool = %leak.pool,
                        addr = %leak.allocation.addr,
                        seq,
                        "leaked address changed before its release; left alone"
                    ),
                    Err(e) => {
                        tracing::warn!(pool = %leak.pool, addr = %leak.allocation.addr, "releasing a leaked address failed: {e}");
                        still.insert(key, (seq, first));
                    }
                }
            } else {
                still.insert(key, (seq, first));
            }
        }
        self.seen = still;
        m.passes.inc();
        Ok(result)
    }

    /// Runs passes every interval, forever (abort the task to stop). The first pass runs
    /// one interval after the start, when the shim's own start-up has settled.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.cfg.interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.pass(Instant::now()).await {
                Ok(r) => tracing::debug!(
                    leaked = r.leaked,
                    released = r.released,
                    "reconciliation pass"
                ),
                Err(e) => {
                    ops_metrics().pass_failures.inc();
                    tracing::warn!("reconciliation pass failed: {e}");
                }
            }
        }
    }
}

/// Sends a heartbeat for `host` now and then every `every`, forever (abort the task to stop).
pub async fn heartbeat(client: Client, host: String, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let op = Op::Heartbeat {
            host: host.clone(),
            version: VERSION.to_string(),
        };
        match client.apply(op).await {
            Ok(_) => {
                ops_metrics().heartbeats.inc();
                if failing {
                    tracing::info!("heartbeat for host {host} delivered again");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("heartbeat for host {host} failed: {e}");
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_core::Owner;

    fn alloc(host: &str, ep: &str, addr: &str, seq: u64) -> (PoolId, Allocation) {
        (
            PoolId::new("global", "10.0.0.0/24".parse().unwrap(), None),
            Allocation {
                addr: addr.parse().unwrap(),
                owner: Owner::new(host, ep),
                seq,
                at_s: 0,
            },
        )
    }

    fn ep(container: &str, addr: &str) -> Endpoint {
        Endpoint {
            network: "n".into(),
            network_id: "nid".into(),
            container: container.into(),
            container_id: "cid".into(),
            ipam_driver: "raftipam".into(),
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn leaked_missing_and_twice_are_told_apart() {
        let cluster = vec![
            alloc("a", "web", "10.0.0.2", 1),
            alloc("a", "gone", "10.0.0.3", 2),
            alloc("b", "db", "10.0.0.4", 3),
            alloc("b", "x", "10.0.0.2", 4),
        ];
        let eps = vec![
            ep("web", "10.0.0.2"),
            ep("db", "10.0.0.4"),
            ep("new", "10.0.0.9"),
        ];
        let r = compare_lists("a", "raftipam", &cluster, &eps);
        assert_eq!(r.leaked.len(), 1);
        assert_eq!(r.leaked[0].allocation.addr.to_string(), "10.0.0.3");
        assert_eq!(r.missing.len(), 2);
        assert_eq!(r.missing[0].held_by.as_deref(), Some("b/db"));
        assert_eq!(r.missing[1].held_by, None);
        assert_eq!(r.held_twice.len(), 1);
        assert_eq!(r.held_twice[0].source, "cluster");
        assert!(!r.is_clean());
        let clean = compare_lists("a", "raftipam", &cluster[..1], &eps[..1]);
        assert!(clean.is_clean());
        // In use in a network of another driver: not leaked (and not this driver's missing).
        let mut other = ep("gone", "10.0.0.3");
        other.ipam_driver = "other".into();
        let r = compare_lists("a", "raftipam", &cluster[..2], &[eps[0].clone(), other]);
        assert!(r.is_clean(), "{r:?}");
    }

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

//! Comparing what the cluster says a host holds with what its dockerd has: one [`Report`].
//!
//! *Leaked*: allocated to this host, no endpoint in dockerd. *Missing*: an endpoint whose
//! address the cluster does not hold for this host. *Held twice*: one address allocated twice,
//! or used by two local endpoints — must never happen. An allocation whose address any local
//! endpoint uses, whatever its network's IPAM driver, is never called leaked: reconciliation
//! must never free an address in use.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use allocator_core::report::MAX_REPORTED;
use allocator_core::{Allocation, HostReport, PoolId, ReportedLeak, ReportedMissing};
use serde::{Deserialize, Serialize};

use super::docker::{DockerError, Endpoint};
use super::EndpointSource;
use crate::backend::{BackendError, Inventory};

/// Why a comparison could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// dockerd did not answer.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// The cluster did not answer.
    #[error("the cluster did not answer: {0}")]
    Cluster(#[from] BackendError),
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

pub(crate) fn owner_str(a: &Allocation) -> String {
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
    let in_use: BTreeSet<IpAddr> = all_endpoints.iter().map(|e| e.addr).collect();
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
    // A CNI attachment's address is not a Docker endpoint's: CNI's DEL, GC and the sweep of
    // vanished namespaces release it, never the comparison with dockerd.
    let mine: Vec<&(PoolId, Allocation)> = cluster
        .iter()
        .filter(|(_, a)| {
            a.owner.host == host
                && crate::cni::spec::parse_owner_endpoint(&a.owner.endpoint).is_none()
        })
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
pub async fn compare<B: Inventory, D: EndpointSource>(
    cluster: &B,
    docker: &D,
    host: &str,
    driver: &str,
) -> Result<Report, CompareError> {
    let all = cluster.all_allocations().await?;
    let endpoints = docker.all_endpoints().await?;
    Ok(compare_lists(host, driver, &all, &endpoints))
}

/// Like [`compare`], reading only `host`'s allocations from the cluster (what a shim's
/// periodic pass needs, cheap however many hosts the cluster has). `held_twice` and
/// `Missing::held_by` then only see this host's allocations.
pub async fn compare_host<B: Inventory, D: EndpointSource>(
    cluster: &B,
    docker: &D,
    host: &str,
    driver: &str,
) -> Result<Report, CompareError> {
    let mine = cluster.host_allocations(host).await?;
    let endpoints = docker.all_endpoints().await?;
    Ok(compare_lists(host, driver, &mine, &endpoints))
}

impl Report {
    /// What the cluster keeps of this report ([`allocator_core::Op::Report`]): the totals, and the first
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use allocator_core::Owner;

    pub(crate) fn alloc(host: &str, ep: &str, addr: &str, seq: u64) -> (PoolId, Allocation) {
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

    pub(crate) fn ep(container: &str, addr: &str) -> Endpoint {
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

    #[test]
    fn a_cni_attachments_address_is_never_a_docker_leak() {
        // No Docker endpoint uses it (a Podman container holds it): the Docker comparison
        // must not call it leaked, or reconciliation would free a running container's address.
        let cluster = vec![
            alloc("a", "cni:lan:podman1:eth0", "10.0.0.5", 1),
            alloc("a", "gone", "10.0.0.6", 2),
        ];
        let r = compare_lists("a", "raftipam", &cluster, &[]);
        assert_eq!(r.leaked.len(), 1, "{r:?}");
        assert_eq!(r.leaked[0].allocation.owner.endpoint, "gone");
        assert_eq!(r.allocations, 1);
    }
}

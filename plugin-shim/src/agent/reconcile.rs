//! Releasing what nobody uses any more, and telling the cluster this host is alive.
//!
//! - [`Reconciler`] runs in every shim: a pass at every interval; an allocation is released
//!   only when it was seen leaked at two passes at least the grace period apart with the same
//!   sequence number, and then with [`Op::ReleaseIfUnchanged`], so an address released and
//!   handed out again in between is never freed by mistake. Every pass is published as the
//!   host's report ([`Op::Report`]).
//! - [`heartbeat`] reports the host to the cluster ([`Op::Heartbeat`]) at start and then
//!   periodically.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use allocator_core::{Op, Outcome, PoolId, Released};

use super::compare::{compare_host, owner_str, CompareError, Leak, Report};
use super::metrics::ops_metrics;
use super::EndpointSource;
use crate::backend::{Backend, BackendError, Inventory};

/// The version a shim reports in its heartbeat.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Writes `report` into the cluster as the last report of its host, so that `raftipam check`
/// on any host and a "pool full" error see it.
pub async fn publish<B: Inventory>(cluster: &B, report: &Report) -> Result<(), BackendError> {
    cluster
        .apply(Op::Report {
            host: report.host.clone(),
            report: report.to_host_report(),
        })
        .await
        .map(|_| ())
}

/// Releases one leak if it is still the same allocation. True if it was released.
pub async fn release_leak<B: Inventory>(
    cluster: &B,
    host: &str,
    leak: &Leak,
) -> Result<bool, BackendError> {
    let outcome = cluster
        .apply(Op::ReleaseIfUnchanged {
            pool: leak.pool.clone(),
            addr: leak.allocation.addr,
            host: host.to_string(),
            seq: leak.allocation.seq,
        })
        .await?;
    Ok(matches!(
        outcome,
        Outcome::Released {
            what: Released::Allocation
        }
    ))
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
pub struct Reconciler<B, D> {
    cluster: B,
    docker: D,
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

impl<B: Inventory, D: EndpointSource> Reconciler<B, D> {
    /// A reconciler for `cfg.host`, comparing what `cluster` holds for it with `docker`.
    pub fn new(cluster: B, docker: D, cfg: ReconcileConfig) -> Self {
        Reconciler {
            cluster,
            docker,
            cfg,
            seen: HashMap::new(),
        }
    }

    /// One pass at time `now`.
    pub async fn pass(&mut self, now: Instant) -> Result<PassResult, CompareError> {
        let m = ops_metrics();
        let report = compare_host(
            &self.cluster,
            &self.docker,
            &self.cfg.host,
            &self.cfg.driver,
        )
        .await?;
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
        if let Err(e) = publish(&self.cluster, &report).await {
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
                match release_leak(&self.cluster, &self.cfg.host, leak).await {
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
pub async fn heartbeat<B: Backend>(cluster: B, host: String, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let op = Op::Heartbeat {
            host: host.clone(),
            version: VERSION.to_string(),
        };
        match cluster.apply(op).await {
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
    use std::sync::{Arc, Mutex};

    use allocator_core::{Order, Owner, PoolSpec};

    use super::*;
    use crate::agent::{DockerError, Endpoint};
    use crate::MemoryBackend;

    /// dockerd as a list the test edits.
    #[derive(Clone, Default)]
    struct Endpoints(Arc<Mutex<Vec<Endpoint>>>);

    impl Endpoints {
        fn set(&self, addrs: &[(&str, &str)]) {
            let list = addrs
                .iter()
                .map(|(c, a)| Endpoint {
                    network: "lan".into(),
                    network_id: "n1".into(),
                    container: (*c).into(),
                    container_id: format!("id-{c}"),
                    ipam_driver: "raftipam".into(),
                    addr: a.parse().expect("address"),
                })
                .collect();
            *self.0.lock().expect("lock") = list;
        }
    }

    impl EndpointSource for Endpoints {
        async fn all_endpoints(&self) -> Result<Vec<Endpoint>, DockerError> {
            Ok(self.0.lock().expect("lock").clone())
        }
    }

    async fn allocate(b: &MemoryBackend, pool: &PoolId, ep: &str) -> IpAddr {
        let op = Op::Allocate {
            pool: pool.clone(),
            addr: None,
            owner: Owner::new("h1", ep),
            order: Order::Lowest,
        };
        match b.apply(op).await {
            Ok(Outcome::Allocated { addr, .. }) => addr.addr(),
            o => panic!("allocate {ep}: {o:?}"),
        }
    }

    #[tokio::test]
    async fn a_leak_is_released_after_the_grace_and_only_if_unchanged() {
        let backend = Arc::new(MemoryBackend::default());
        let spec = {
            let mut spec = PoolSpec::default();
            spec.space = "global".into();
            spec.subnet = "10.7.0.0/24".parse().ok();
            spec
        };
        let pool = match backend
            .apply(Op::RequestPool {
                spec,
                holder: "h1".into(),
            })
            .await
        {
            Ok(Outcome::Pool { pool, .. }) => pool,
            o => panic!("pool: {o:?}"),
        };
        let web = allocate(&backend, &pool, "web").await;
        let gone = allocate(&backend, &pool, "gone").await;
        let docker = Endpoints::default();
        docker.set(&[("web", &web.to_string())]);
        let grace = Duration::from_secs(600);
        let cfg = ReconcileConfig {
            host: "h1".into(),
            driver: "raftipam".into(),
            interval: Duration::from_secs(60),
            grace,
        };
        let mut r = Reconciler::new(backend.clone(), docker.clone(), cfg);
        let t0 = Instant::now();

        // First sighting: reported, not released.
        let first = r.pass(t0).await.expect("pass");
        assert_eq!(
            first,
            PassResult {
                leaked: 1,
                released: 0
            }
        );
        let reported = backend.with_state(|s| s.report("h1").map(|r| r.report.leaked.clone()));
        let reported = reported.expect("the pass published a report");
        assert_eq!(reported.len(), 1);
        assert_eq!(reported[0].addr, gone);

        // Released by its owner and handed out again before the grace passed: a new
        // allocation at the same address, which the reconciler must not free.
        let release = Op::Release {
            pool: pool.clone(),
            addr: gone,
            host: "h1".into(),
            force: false,
        };
        backend.apply(release).await.expect("release");
        let again = allocate(&backend, &pool, "gone-again").await;
        assert_eq!(again, gone, "lowest free address is the one just released");
        let later = r.pass(t0 + grace).await.expect("pass");
        assert_eq!(
            later,
            PassResult {
                leaked: 1,
                released: 0
            }
        );
        let held = backend.with_state(|s| s.host_allocations("h1").len());
        assert_eq!(held, 2, "the re-allocated address is still held");

        // Seen with the same sequence number a whole grace later: released.
        let done = r.pass(t0 + grace * 2).await.expect("pass");
        assert_eq!(
            done,
            PassResult {
                leaked: 1,
                released: 1
            }
        );
        let left: Vec<IpAddr> = backend.with_state(|s| {
            s.host_allocations("h1")
                .iter()
                .map(|(_, a)| a.addr)
                .collect()
        });
        assert_eq!(left, vec![web], "only the address in use is left");
        let clean = r.pass(t0 + grace * 3).await.expect("pass");
        assert_eq!(clean, PassResult::default());
    }
}

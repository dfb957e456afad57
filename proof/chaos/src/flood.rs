//! The flooding host: what one host's credentials can throw at the nodes while the workload
//! runs and the other faults come and go — many connections of full-map reads, the largest
//! junk reports the nodes take, and heartbeats whose version is too long to be taken. The
//! nodes must refuse what they refuse, bound the rest, and keep every acknowledged
//! allocation: the history is checked as in every run.
//!
//! Every loop stops at the fault's end (a flag) and after a bounded number of rounds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use allocator_core::{HostReport, Op, PoolId, ReportedLeak};
use raft_node::{Client, ClientConfig};
use tokio::task::JoinSet;

/// Connections the flood opens to each target.
const CONNECTIONS: usize = 4;
/// Reads each connection keeps in flight at once.
const READS_IN_FLIGHT: usize = 16;
/// The most rounds of one connection (a round: the reads, one report, one heartbeat).
const MAX_ROUNDS: u64 = 10_000;
/// The host name the flood writes as.
pub const HOST: &str = "flood";

/// A flood under way.
pub struct Flood {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<()>,
    /// Calls answered, and calls refused or failed.
    pub answered: Arc<AtomicU64>,
    pub refused: Arc<AtomicU64>,
}

/// A report of some 900 KiB: 900 leaks with 1 KiB endpoint names each.
fn junk(pool: &PoolId) -> HostReport {
    HostReport {
        leaked: (0..900)
            .map(|i| ReportedLeak {
                pool: pool.clone(),
                addr: std::net::IpAddr::from([10, 255, (i >> 8) as u8, i as u8]),
                seq: i,
                endpoint: "j".repeat(1000),
            })
            .collect(),
        leaked_total: 900,
        ..Default::default()
    }
}

/// Starts flooding the nodes at `addrs` (writes about `pool`), with host certificate `tls`
/// (of host [`HOST`]) when the run has TLS.
pub fn start(addrs: &[String], pool: &PoolId, tls: Option<raft_node::tls::Tls>) -> Flood {
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = JoinSet::new();
    let report = Arc::new(junk(pool));
    for addr in addrs {
        for _ in 0..CONNECTIONS {
            let cfg = ClientConfig {
                timeout: Duration::from_secs(2),
                tls: tls.clone(),
                ..Default::default()
            };
            let Ok(client) = Client::with_config([addr.as_str()], cfg) else {
                continue;
            };
            let (stop, answered, refused, report) = (
                stop.clone(),
                answered.clone(),
                refused.clone(),
                report.clone(),
            );
            tasks.spawn(async move {
                let count = |ok: bool| {
                    if ok { &answered } else { &refused }.fetch_add(1, Ordering::Relaxed);
                };
                for _ in 0..MAX_ROUNDS {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let reads = (0..READS_IN_FLIGHT).map(|_| client.all_allocations());
                    for r in futures::future::join_all(reads).await {
                        count(r.is_ok());
                    }
                    let r = client
                        .apply(Op::Report {
                            host: HOST.into(),
                            report: (*report).clone(),
                        })
                        .await;
                    count(r.is_ok());
                    let r = client
                        .apply(Op::Heartbeat {
                            host: HOST.into(),
                            version: "9".repeat(4096),
                        })
                        .await;
                    count(r.is_ok());
                }
            });
        }
    }
    Flood {
        stop,
        tasks,
        answered,
        refused,
    }
}

impl Flood {
    /// Stops the flood and waits for its calls to end (each bounded by its timeout).
    pub async fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let bound = tokio::time::sleep(Duration::from_secs(30));
        tokio::pin!(bound);
        loop {
            tokio::select! {
                r = self.tasks.join_next() => if r.is_none() { break },
                _ = &mut bound => { self.tasks.abort_all(); break }
            }
        }
        (
            self.answered.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

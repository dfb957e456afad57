//! Check before hand-out: an address the allocator gives a container is probed on the LAN
//! first; if a device answers, the address is given back, reported as a conflict (so that no
//! host hands it out during its pool's probation) and the next one is tried.
//!
//! Shared by Docker's `RequestAddress` and CNI's `ADD`. **Never blocks allocation**: a host
//! that cannot check (no `CAP_NET_RAW`, no interface on the subnet's link, an interface down)
//! warns once per reason, says so in [`LanChecks::off_reasons`], and allocates as without
//! checks.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allocator_core::{Detection, Mac, Op, Order, Outcome, Owner, PoolId};
use ipnet::IpNet;
use tracing::{info, warn};

use super::{interface_for, probe, ProbeError, DEFAULT_TIMEOUT};
use crate::backend::{Backend, BackendError, Inventory};

/// Most addresses one hand-out tries before it gives up (each answered by a device).
pub const MAX_ATTEMPTS: usize = 4;

/// An address a probe found free this recently is handed out without a second probe (Kea's
/// ping check skips addresses whose client it heard from within 60 s).
pub const FRESH_FOR: Duration = Duration::from_secs(30);
/// Pools a hand-out of this host used within this long are swept ahead.
pub const ACTIVE_FOR: Duration = Duration::from_secs(600);

/// How this host checks addresses before handing them out. Clones share everything: one
/// per host, used by the Docker plugin, the CNI agent and the sweep.
#[derive(Clone, Debug)]
pub struct LanChecks {
    /// How long a probe waits for an answer.
    pub timeout: Duration,
    /// Why checks are off, per subnet, as last found.
    off: Arc<Mutex<BTreeMap<IpNet, String>>>,
    /// Addresses a sweep found free, and when.
    fresh: Arc<Mutex<HashMap<IpAddr, Instant>>>,
    /// Pools hand-outs used, and when last.
    active: Arc<Mutex<HashMap<PoolId, Instant>>>,
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Addresses probed.
    pub probed: usize,
    /// Of those, answered by a device (reported: quarantined).
    pub answered: usize,
}

impl PartialEq for LanChecks {
    fn eq(&self, other: &Self) -> bool {
        self.timeout == other.timeout && Arc::ptr_eq(&self.fresh, &other.fresh)
    }
}

impl Eq for LanChecks {}

impl Default for LanChecks {
    fn default() -> Self {
        LanChecks::new(DEFAULT_TIMEOUT)
    }
}

/// What one hand-out found.
#[derive(Debug)]
pub enum Checked {
    /// The address, free on the wire (or not checkable here).
    Granted {
        /// The address, with the subnet's prefix length.
        addr: IpNet,
        /// Its allocation's sequence number.
        seq: u64,
        /// A repeat of a request already granted (not probed again).
        existing: bool,
    },
    /// The address asked for is in use on the wire: nothing allocated.
    InUse {
        /// The address.
        addr: IpAddr,
        /// The device that answered.
        mac: Mac,
    },
    /// Every address tried was answered by a device (each now quarantined).
    AllAnswered {
        /// The addresses and the MACs that answered.
        found: Vec<(IpAddr, Mac)>,
    },
}

impl LanChecks {
    /// Checks waiting `timeout` for an answer.
    pub fn new(timeout: Duration) -> LanChecks {
        LanChecks {
            timeout,
            off: Arc::default(),
            fresh: Arc::default(),
            active: Arc::default(),
        }
    }

    /// Subnets whose addresses this host could not check, and why.
    pub fn off_reasons(&self) -> BTreeMap<IpNet, String> {
        self.off.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Probes `addr` of `subnet`: the answering MAC, or `None` (no answer, or no check
    /// possible here — warned once per subnet and reason).
    pub async fn probe(&self, subnet: IpNet, addr: IpAddr) -> Option<Mac> {
        let timeout = self.timeout;
        let found = tokio::task::spawn_blocking(move || -> Result<Option<Mac>, ProbeError> {
            let iface = interface_for(&subnet)?;
            probe(&iface, addr, timeout)
        })
        .await;
        let why = match found {
            Ok(Ok(mac)) => {
                if let Ok(mut off) = self.off.lock() {
                    if off.remove(&subnet).is_some() {
                        info!(%subnet, "LAN checks of {subnet} work again");
                    }
                }
                return mac;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the probe task failed: {e}"),
        };
        if let Ok(mut off) = self.off.lock() {
            if off.get(&subnet) != Some(&why) {
                warn!(%subnet, "LAN checks off for {subnet}, handing out addresses without them: {why}");
                off.insert(subnet, why);
            }
        }
        None
    }

    /// Allocates an address of `pool` for `owner` (`requested`, or the next free one) and
    /// probes it; a device answering gets the address given back and reported as a conflict
    /// seen by `host`, and the next address is tried, up to [`MAX_ATTEMPTS`]. A requested
    /// address in use is refused ([`Checked::InUse`]) after being reported.
    pub async fn allocate<B: Backend>(
        &self,
        backend: &B,
        host: &str,
        pool: &PoolId,
        requested: Option<IpAddr>,
        owner: &Owner,
        order: Order,
    ) -> Result<Checked, BackendError> {
        let mut found = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            let (addr, seq, existing) = match backend
                .apply(Op::Allocate {
                    pool: pool.clone(),
                    addr: requested,
                    owner: owner.clone(),
                    order,
                })
                .await?
            {
                Outcome::Allocated {
                    addr,
                    seq,
                    existing,
                } => (addr, seq, existing),
                other => {
                    return Err(BackendError::Unavailable(format!(
                        "the cluster answered {other:?} to an allocation"
                    )))
                }
            };
            if existing {
                return Ok(Checked::Granted {
                    addr,
                    seq,
                    existing,
                });
            }
            if let Ok(mut active) = self.active.lock() {
                active.insert(pool.clone(), Instant::now());
            }
            if self.is_fresh(addr.addr()) {
                return Ok(Checked::Granted {
                    addr,
                    seq,
                    existing,
                });
            }
            let Some(mac) = self.probe(pool.subnet, addr.addr()).await else {
                self.mark_fresh(addr.addr());
                return Ok(Checked::Granted {
                    addr,
                    seq,
                    existing,
                });
            };
            warn!(pool = %pool, addr = %addr.addr(), %mac, "a device on the LAN answers for {}: not handing it out; reported as a conflict", addr.addr());
            // Given back first, then reported: reported while held, it would read as a
            // duplicate alarm against our own allocation.
            backend
                .apply(Op::ReleaseIfUnchanged {
                    pool: pool.clone(),
                    addr: addr.addr(),
                    host: host.to_string(),
                    seq,
                })
                .await?;
            backend
                .apply(Op::ReportConflict {
                    pool: pool.clone(),
                    addr: addr.addr(),
                    mac,
                    host: host.to_string(),
                    how: Detection::Probe,
                })
                .await?;
            if requested.is_some() {
                return Ok(Checked::InUse {
                    addr: addr.addr(),
                    mac,
                });
            }
            found.push((addr.addr(), mac));
        }
        Ok(Checked::AllAnswered { found })
    }
}

impl LanChecks {
    /// Whether a probe (a sweep's or a hand-out's) found `addr` free within [`FRESH_FOR`]:
    /// an address released and handed out again within that time is not probed again (as
    /// Kea skips its check for a lease whose client it heard from within 60 s).
    fn is_fresh(&self, addr: IpAddr) -> bool {
        self.fresh
            .lock()
            .map(|f| f.get(&addr).is_some_and(|at| at.elapsed() < FRESH_FOR))
            .unwrap_or(false)
    }

    fn mark_fresh(&self, addr: IpAddr) {
        if let Ok(mut fresh) = self.fresh.lock() {
            fresh.insert(addr, Instant::now());
        }
    }

    /// One sweep: for every pool a hand-out used lately, the next `ahead` addresses the
    /// cluster would hand out are probed (one every `gap`, so a host never floods the LAN),
    /// unless a recent sweep found them free. Free ones are remembered for [`FRESH_FOR`], so
    /// that their hand-out does not wait for a probe; answered ones are reported as
    /// conflicts (a sweep's), which quarantines them before anyone gets them.
    pub async fn sweep<B: Inventory>(
        &self,
        cluster: &B,
        host: &str,
        ahead: usize,
        gap: Duration,
    ) -> Result<Swept, BackendError> {
        let pools: Vec<PoolId> = match self.active.lock() {
            Ok(mut active) => {
                active.retain(|_, at| at.elapsed() < ACTIVE_FOR);
                active.keys().cloned().collect()
            }
            Err(_) => Vec::new(),
        };
        if let Ok(mut fresh) = self.fresh.lock() {
            fresh.retain(|_, at| at.elapsed() < FRESH_FOR);
        }
        let mut done = Swept::default();
        for pool in pools {
            let next = match cluster.next_free(&pool, ahead).await {
                Ok(n) => n,
                // The pool went away: nothing to sweep there.
                Err(BackendError::Alloc(_)) => continue,
                Err(e) => return Err(e),
            };
            for addr in next {
                let recent = self
                    .fresh
                    .lock()
                    .map(|f| f.get(&addr).is_some_and(|at| at.elapsed() < FRESH_FOR / 2))
                    .unwrap_or(false);
                if recent {
                    continue;
                }
                done.probed += 1;
                match self.probe(pool.subnet, addr).await {
                    None => self.mark_fresh(addr),
                    Some(mac) => {
                        if !still_free_or_duplicate(cluster, addr, mac).await? {
                            continue;
                        }
                        done.answered += 1;
                        warn!(pool = %pool, %addr, %mac, "sweep: a device on the LAN answers for {addr}, which is free: reported as a conflict");
                        backend_report(cluster, &pool, addr, mac, host).await?;
                    }
                }
                tokio::time::sleep(gap).await;
            }
        }
        Ok(done)
    }
}

/// After a sweep's probe of an address it read as free was answered by `mac`: whether that
/// is still worth a report, read again now (linearizable) — free (a conflict), or held by a
/// container whose recorded MAC is another (a duplicate). An address handed out meanwhile
/// (its container answering), a held one without a recorded MAC and a reserved one are not:
/// the read that said "free" came before the answer, and an allocation always comes before
/// its container answers.
pub async fn still_free_or_duplicate<B: Inventory>(
    cluster: &B,
    addr: IpAddr,
    mac: Mac,
) -> Result<bool, BackendError> {
    let known = cluster.on_lan(addr).await?;
    if known.is_empty() {
        // A backend that cannot say (or a pool gone): as read before.
        return Ok(true);
    }
    Ok(known.iter().all(|k| worth_reporting(k, mac)))
}

/// Whether a device with `mac` answering for an address the cluster knows as `known` is worth
/// a report: the address is free (a conflict), or a container holds it whose recorded MAC is
/// another (a duplicate). Not a reserved address (it answers by design), nor a held one
/// without a recorded MAC or with this one (its own container). The one rule of the watch
/// and the sweeps.
pub fn worth_reporting(known: &allocator_core::AddressOnLan, mac: Mac) -> bool {
    !known.reserved
        && match (&known.holder, known.mac) {
            (None, _) => true,
            (Some(_), Some(theirs)) => theirs != mac,
            (Some(_), None) => false,
        }
}

async fn backend_report<B: Backend>(
    cluster: &B,
    pool: &PoolId,
    addr: IpAddr,
    mac: Mac,
    host: &str,
) -> Result<(), BackendError> {
    cluster
        .apply(Op::ReportConflict {
            pool: pool.clone(),
            addr,
            mac,
            host: host.to_string(),
            how: Detection::Sweep,
        })
        .await
        .map(|_| ())
}

/// `a.b.c.d (MAC), ...` for messages.
pub fn list_found(found: &[(IpAddr, Mac)]) -> String {
    found
        .iter()
        .map(|(a, m)| format!("{a} ({m})"))
        .collect::<Vec<_>>()
        .join(", ")
}

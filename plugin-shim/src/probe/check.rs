//! Check before hand-out: an address the allocator gives a container is probed on the LAN
//! first; if a device answers, the address is given back, reported as a conflict (so that no
//! host hands it out during its pool's probation) and the next one is tried.
//!
//! Shared by Docker's `RequestAddress` and CNI's `ADD`. **Never blocks allocation**: a host
//! that cannot check (no `CAP_NET_RAW`, no interface on the subnet's link, an interface down)
//! warns once per reason, says so in [`LanChecks::off_reasons`], and allocates as without
//! checks.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use allocator_core::{Detection, Mac, Op, Order, Outcome, Owner, PoolId};
use ipnet::IpNet;
use tracing::{info, warn};

use super::{interface_for, probe, ProbeError, DEFAULT_TIMEOUT};
use crate::backend::{Backend, BackendError};

/// Most addresses one hand-out tries before it gives up (each answered by a device).
pub const MAX_ATTEMPTS: usize = 4;

/// How this host checks addresses before handing them out.
#[derive(Clone, Debug)]
pub struct LanChecks {
    /// How long a probe waits for an answer.
    pub timeout: Duration,
    /// Why checks are off, per subnet, as last found (shared by every clone).
    off: Arc<Mutex<BTreeMap<IpNet, String>>>,
}

impl PartialEq for LanChecks {
    fn eq(&self, other: &Self) -> bool {
        self.timeout == other.timeout && Arc::ptr_eq(&self.off, &other.off)
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
            let Some(mac) = self.probe(pool.subnet, addr.addr()).await else {
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

/// `a.b.c.d (MAC), ...` for messages.
pub fn list_found(found: &[(IpAddr, Mac)]) -> String {
    found
        .iter()
        .map(|(a, m)| format!("{a} ({m})"))
        .collect::<Vec<_>>()
        .join(", ")
}

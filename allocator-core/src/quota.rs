//! Per-host quotas: how much of the address space one Docker host may hold, so that one host
//! certificate (or a leaked key) cannot drain every other host's pools.
//!
//! Owns [`Quotas`] (what an operator sets with [`crate::Op::SetQuotas`]), [`HostQuota`] and
//! [`QuotaReport`] (what `raftipam host ls` shows), and the names quotas never bind
//! ([`OPERATOR_NAMES`]). Never counts or refuses anything itself: the state does
//! (`state/quotas.rs`), from cluster version 2 on.

use serde::{Deserialize, Serialize};

/// Holder and owner names an operator's tools use (`raftipam pool create` and `addr alloc`
/// default to `cli`, `raftipam bench` uses `bench`): quotas never bind them, and no host
/// certificate may carry them (`cert create-host` and joins refuse them).
pub const OPERATOR_NAMES: &[&str] = &["cli", "bench"];

/// Whether quotas pass over `name` (one of [`OPERATOR_NAMES`]).
pub fn is_operator_name(name: &str) -> bool {
    OPERATOR_NAMES.contains(&name)
}

/// What one host may hold. `None` is no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Quotas {
    /// Most pools the host holds at once (a pool it holds several references to counts once).
    pub pools: Option<u32>,
    /// Most addresses the host holds at once: its allocations plus the addresses it reserves.
    pub addresses: Option<u64>,
    /// Shortest IPv4 prefix length of a pool the host creates (16: no pool larger than a /16).
    pub max_prefix_v4: Option<u8>,
    /// Shortest IPv6 prefix length of a pool the host creates (48: no pool larger than a /48).
    pub max_prefix_v6: Option<u8>,
}

impl Quotas {
    /// What binds a host until an operator sets quotas: 64 pools, 65,536 addresses, no IPv4
    /// pool larger than a /16 and no IPv6 pool larger than a /48 (Docker's default pools hand
    /// out /16s, /20s and /64s).
    pub const BUILT_IN: Quotas = Quotas {
        pools: Some(64),
        addresses: Some(65_536),
        max_prefix_v4: Some(16),
        max_prefix_v6: Some(48),
    };

    /// No limit at all.
    pub const NONE: Quotas = Quotas {
        pools: None,
        addresses: None,
        max_prefix_v4: None,
        max_prefix_v6: None,
    };

    /// Quotas with these limits (`None`: no limit).
    pub fn new(
        pools: Option<u32>,
        addresses: Option<u64>,
        max_prefix_v4: Option<u8>,
        max_prefix_v6: Option<u8>,
    ) -> Quotas {
        Quotas {
            pools,
            addresses,
            max_prefix_v4,
            max_prefix_v6,
        }
    }

    /// Refuses prefix lengths no address family has (what [`crate::Op::SetQuotas`] checks).
    pub fn check(&self) -> Result<(), String> {
        if self.max_prefix_v4.is_some_and(|l| l > 32) {
            return Err(format!(
                "an IPv4 prefix length is at most 32 (asked: {})",
                self.max_prefix_v4.unwrap_or_default()
            ));
        }
        if self.max_prefix_v6.is_some_and(|l| l > 128) {
            return Err(format!(
                "an IPv6 prefix length is at most 128 (asked: {})",
                self.max_prefix_v6.unwrap_or_default()
            ));
        }
        Ok(())
    }
}

impl Default for Quotas {
    /// [`Quotas::BUILT_IN`].
    fn default() -> Self {
        Quotas::BUILT_IN
    }
}

/// `none` or the number.
fn show<T: std::fmt::Display>(v: Option<T>, prefix: &str) -> String {
    v.map_or_else(|| "none".to_string(), |v| format!("{prefix}{v}"))
}

impl std::fmt::Display for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pools {}, addresses {}, IPv4 prefix {}, IPv6 prefix {}",
            show(self.pools, ""),
            show(self.addresses, ""),
            show(self.max_prefix_v4, "/"),
            show(self.max_prefix_v6, "/")
        )
    }
}

/// One host's use of its quotas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HostQuota {
    /// Host name.
    pub host: String,
    /// Pools it holds.
    pub pools: u64,
    /// Addresses it holds (allocations plus reserved addresses).
    pub addresses: u64,
    /// The quotas that bind it.
    pub quotas: Quotas,
    /// Whether they are its own (`host quota set --host`) rather than the cluster's.
    pub own: bool,
}

/// Every host's quotas and use, and the cluster's quotas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QuotaReport {
    /// Whether quotas are enforced (cluster version 2 on).
    pub enforced: bool,
    /// The quotas of hosts without their own.
    pub cluster: Quotas,
    /// Whether an operator set them (else [`Quotas::BUILT_IN`]).
    pub cluster_set: bool,
    /// Every host that holds something, sent a heartbeat or has its own quotas, by name.
    pub hosts: Vec<HostQuota>,
}

/// The message of [`crate::AllocError::QuotaExceeded`].
pub(crate) fn quota_message(quota: &str, host: &str, used: u64, limit: u64) -> String {
    let what = match quota {
        "pools" => format!("it holds {used} pool(s) and may hold {limit}"),
        "addresses" => format!("it holds {used} address(es) and may hold {limit}"),
        _ => format!("it asked for a /{used} pool and may create none larger than a /{limit}"),
    };
    let flag = match quota {
        "pools" => "--pools N",
        "addresses" => "--addresses N",
        "max-prefix-v4" => "--max-prefix-v4 LEN",
        _ => "--max-prefix-v6 LEN",
    };
    format!(
        "host {host:?} is over its {quota} quota: {what}; release what it no longer needs, or an operator raises the quota (`raftipam host quota set --host {host} {flag}`)"
    )
}

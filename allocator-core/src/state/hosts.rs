//! Hosts: the table of host names that allocation records point into, heartbeats, and
//! forgetting a host that is gone for good.
//!
//! Owns [`Seen`] and the host-name table (`State::hosts`, `State::host_ids`: a record names
//! its host in 16 bits). Never refuses or grants an address on a host's behalf (that is
//! `addresses.rs`); what a host reported is `reports.rs`'s.

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use super::State;
use crate::error::AllocError;
use crate::id::PoolId;
use crate::limits::{check_name, MAX_HOSTS};
use crate::results::HostForgotten;

// A record names its host in 16 bits.
const _: () = assert!(MAX_HOSTS <= 1 << 16);

/// What the last heartbeat of a host said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Seen {
    pub version: String,
    pub last_seen_ms: u64,
}

impl State {
    /// The id of `host` in the host-name table, added if new (at most [`MAX_HOSTS`] names).
    pub(super) fn host_id(
        hosts: &mut Vec<String>,
        host_ids: &mut HashMap<String, u16>,
        host: &str,
    ) -> Result<u16, AllocError> {
        if let Some(&h) = host_ids.get(host) {
            return Ok(h);
        }
        if hosts.len() >= MAX_HOSTS {
            return Err(AllocError::Invalid(format!(
                "more than {} distinct host names; forget hosts that are gone",
                MAX_HOSTS - 1
            )));
        }
        // Every id below MAX_HOSTS fits in 16 bits.
        let h = hosts.len() as u16;
        hosts.push(host.to_string());
        host_ids.insert(host.to_string(), h);
        Ok(h)
    }

    /// A host's heartbeat ([`Op::Heartbeat`](crate::Op::Heartbeat)): `host` is alive at `now_ms`,
    /// running `version`. Returns true the first time this host beats (or the first time after it
    /// was forgotten). Changes no allocation.
    ///
    /// ```
    /// use allocator_core::State;
    ///
    /// let mut state = State::default();
    /// assert!(state.heartbeat(1_000, "host-a", "0.1.0").unwrap());
    /// assert!(!state.heartbeat(2_000, "host-a", "0.1.0").unwrap());
    /// assert_eq!(state.hosts()[0].last_seen_ms, Some(2_000));
    /// ```
    pub fn heartbeat(
        &mut self,
        now_ms: u64,
        host: &str,
        version: &str,
    ) -> Result<bool, AllocError> {
        check_name("host", host, false)?;
        let seen = Seen {
            version: version.to_string(),
            last_seen_ms: now_ms,
        };
        Ok(self.seen.insert(host.to_string(), seen).is_none())
    }

    /// Operator: host `host` is gone for good ([`Op::ForgetHost`](crate::Op::ForgetHost)). Releases
    /// every allocation it holds (they cool down as long as the longest cooldown of their subnet's
    /// pools), its shares of reservations and its holds on pools (pools left with no holder and no
    /// allocation go), forgets its heartbeat and report — and, raftipam's own bookkeeping, revokes
    /// its certificate name as of `now_ms` ([`crate::cluster`]): in every role at cluster
    /// version 1, its host certificates only from version 2 on
    /// ([`State::is_revoked_as`](crate::State::is_revoked_as)).
    ///
    /// ```
    /// use allocator_core::{Order, Owner, PoolSpec, State};
    ///
    /// let mut state = State::default();
    /// let spec = PoolSpec::new("global").subnet("10.1.0.0/24".parse().unwrap());
    /// let pool = state.request_pool(0, &spec, "host-a").unwrap().pool;
    /// state.allocate(0, &pool, &Owner::new("host-a", "web"), Order::Lowest).unwrap();
    /// let gone = state.forget_host(5, "host-a").unwrap();
    /// assert_eq!((gone.allocations, gone.pools), (1, 1));
    /// assert!(state.pools().is_empty(), "nobody holds the pool any more");
    /// ```
    pub fn forget_host(&mut self, now_ms: u64, host: &str) -> Result<HostForgotten, AllocError> {
        check_name("host", host, false)?;
        if self.cluster_version() >= 2 {
            // The host's certificates only: a node certificate of the same name stays good.
            self.credentials
                .revoke(&super::credentials::role_key("host", host), now_ms);
        } else {
            self.credentials.revoke(host, now_ms);
        }
        self.seen.remove(host);
        self.reports.remove(host);
        self.lan.hosts.remove(host);
        let (mut allocations, mut reservations, mut pools_dropped) = (0, 0, 0);
        // Pool holds first, so pools left without holders can go once their subnet is empty.
        for pool in self.pools.values_mut() {
            if let Some(c) = pool.holders.remove(host) {
                pools_dropped += u64::from(c);
            }
        }
        let hid = self.host_ids.get(host).copied();
        for (key, sn) in self.subnets.iter_mut() {
            // Released addresses cool down as long as the longest cooldown of the subnet's pools.
            let cooldown = self
                .pools
                .values()
                .filter(|p| &p.key == key)
                .map(|p| p.cooldown_ms)
                .max()
                .unwrap_or(0);
            sn.expire_cooling(now_ms);
            if let Some(hid) = hid {
                let mine: Vec<u128> = sn
                    .records
                    .iter_sorted()
                    .into_iter()
                    .filter(|(_, r)| r.host == hid)
                    .map(|(off, _)| off)
                    .collect();
                for off in mine {
                    if let Ok(Some(_)) = sn.records.remove_if(off, |_| Ok::<(), ()>(())) {
                        sn.macs.remove(&off);
                        sn.free_or_cool(off, now_ms, cooldown);
                        allocations += 1;
                    }
                }
            }
            let held: Vec<u128> = sn
                .reservations
                .iter()
                .filter(|(_, h)| h.contains_key(host))
                .map(|(off, _)| *off)
                .collect();
            for off in held {
                if let Some(h) = sn.reservations.get_mut(&off) {
                    reservations += u64::from(h.remove(host).unwrap_or(0));
                    if h.is_empty() {
                        sn.reservations.remove(&off);
                        sn.bitmap.clear(off);
                    }
                }
            }
        }
        let orphans: Vec<PoolId> = self
            .pools
            .iter()
            .filter(|(_, p)| p.holders.is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        for id in orphans {
            self.maybe_remove_pool(&id);
        }
        self.recount_usage();
        Ok(HostForgotten {
            allocations,
            reservations,
            pools: pools_dropped,
        })
    }

    // ---- queries ----
}

//! Pools: creating one (or joining it), releasing a holder's reference, deleting it, and
//! picking a free subnet from the default pools for a pool requested without one.
//!
//! Owns [`Pool`] (a view over a shared subnet: same subnet, other sub-range, one bitmap) and
//! the overlap rules between the subnets of an address space. Never allocates, reserves or
//! releases an address (`addresses.rs`); the subnet's structures are `crate::subnet`'s.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::State;
use crate::command::PoolSpec;
use crate::error::AllocError;
use crate::id::{AddrRange, Owner, PoolId};
use crate::limits::{check_name, MAX_BITS, MAX_RESERVED_PER_POOL, MIN_V4_PREFIX};
use crate::results::RequestedPool;
use crate::subnet::{addr_to_u128, Subnet, Subnets};

/// A pool: a view over one subnet of `State::subnets` (several pools may share a subnet, each
/// with its own range), with its holders and settings.
#[derive(Clone)]
pub(crate) struct Pool {
    /// Key of its subnet in `State::subnets`.
    pub key: (String, IpNet),
    /// Slot of its subnet in `State::subnets`.
    pub sid: usize,
    pub serial: bool,
    pub cooldown_ms: u64,
    pub holders: BTreeMap<String, u32>,
    pub cursor: Option<u128>,
    pub reserve: Vec<AddrRange>,
    /// The range as offsets in the subnet.
    pub lo: u128,
    pub hi: u128,
}

fn invalid(msg: impl Into<String>) -> AllocError {
    AllocError::InvalidPool(msg.into())
}

/// Checks that the allocator can hold this subnet.
fn check_subnet(net: &IpNet) -> Result<(), AllocError> {
    let bits = u32::from(net.max_prefix_len() - net.prefix_len());
    match net {
        IpNet::V4(_) if net.prefix_len() < MIN_V4_PREFIX => Err(invalid(format!(
            "{net} is larger than /8, the largest IPv4 pool raftipam holds"
        ))),
        IpNet::V6(_) if bits > MAX_BITS => Err(invalid(format!(
            "{net} is larger than /8, the largest IPv6 pool raftipam holds"
        ))),
        _ => Ok(()),
    }
}

/// Whether two subnets overlap.
pub(super) fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A subnet of `space` that overlaps `net` (`net` itself if it is there), if any — in
/// O(log n).
///
/// The subnets of one space never overlap each other (an invariant), and the subnets are
/// ordered by space, then network address: so only `net`'s two neighbours in that order can
/// overlap it — the one before may contain its network address (or be `net`), the one after
/// may start inside it. If `net` itself is there, nothing else overlaps it.
fn overlapping(subnets: &Subnets, space: &str, net: &IpNet) -> Option<IpNet> {
    let (before, after) = subnets.neighbours(&(space.to_string(), *net));
    [before, after]
        .into_iter()
        .flatten()
        .find(|(s, e)| s == space && overlaps(e, net))
        .map(|(_, e)| *e)
}

/// The subnet of prefix length `prefix` whose network address is `v`.
fn net_at(v: u128, prefix: u8, v6: bool) -> IpNet {
    let addr = if v6 {
        IpAddr::V6(v.into())
    } else {
        IpAddr::V4((v as u32).into())
    };
    IpNet::new(addr, prefix)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(addr))
}

impl State {
    /// The first free subnet of the default pools for a pool requested without one.
    fn pick_subnet(&self, spec: &PoolSpec) -> Result<IpNet, AllocError> {
        let fam = if spec.v6 { "IPv6" } else { "IPv4" };
        let mut wanted = None;
        for dp in &self.config.default_pools {
            if matches!(dp.base, IpNet::V4(_)) == spec.v6 {
                continue;
            }
            let size = spec.prefix_len.unwrap_or(dp.size);
            wanted.get_or_insert(size);
            if size < dp.base.prefix_len() || size > dp.base.max_prefix_len() {
                continue;
            }
            let host_bits = u32::from(dp.base.max_prefix_len() - size);
            let step = 1u128 << host_bits;
            let start = addr_to_u128(dp.base.network());
            let end = start + ((1u128 << (dp.base.max_prefix_len() - dp.base.prefix_len())) - 1);
            let mut cand = start;
            // Each turn either returns or jumps past one existing subnet: bounded by their count.
            'next: while cand <= end && cand.checked_add(step - 1).is_some_and(|e| e <= end) {
                let net = net_at(cand, size, spec.v6);
                if let Some(existing) = overlapping(&self.subnets, &spec.space, &net) {
                    let past = addr_to_u128(existing.broadcast()) + 1;
                    cand = past.div_ceil(step).saturating_mul(step).max(cand + step);
                    continue 'next;
                }
                if check_subnet(&net).is_ok() {
                    return Ok(net);
                }
                cand += step;
            }
        }
        Err(AllocError::NoDefaultSubnet {
            family: fam.to_string(),
            prefix_len: wanted.unwrap_or(0),
        })
    }

    /// Creates the pool `spec` describes, or joins it if it exists
    /// ([`Op::RequestPool`](crate::Op::RequestPool)): `holder` (a host name) gains one reference
    /// either way. Without a subnet, the first free one of the default pools ([`crate::Config`]) of
    /// the size asked for.
    ///
    /// Refused, changing nothing: an empty or `/`-holding space, a subnet the allocator cannot
    /// hold (larger than a /8) or overlapping another pool's subnet of the same space, a range
    /// outside the subnet, reserve ranges outside it, over
    /// [`crate::MAX_RESERVED_PER_POOL`] addresses or over an allocation.
    ///
    /// ```
    /// use allocator_core::{PoolSpec, State};
    ///
    /// let mut state = State::default();
    /// let spec = PoolSpec::new("global").subnet("10.1.0.0/24".parse().unwrap());
    /// let first = state.request_pool(0, &spec, "host-a").unwrap();
    /// assert!(first.created);
    /// // Another host of the same Docker network: the same pool, joined.
    /// let second = state.request_pool(0, &spec, "host-b").unwrap();
    /// assert_eq!((second.pool, second.created), (first.pool, false));
    /// // Docker's local networks: a subnet chosen from the default pools.
    /// let local = state.request_pool(0, &PoolSpec::new("local"), "host-a").unwrap();
    /// assert_eq!(local.pool.to_string(), "local/172.16.0.0/16");
    /// ```
    pub fn request_pool(
        &mut self,
        now_ms: u64,
        spec: &PoolSpec,
        holder: &str,
    ) -> Result<RequestedPool, AllocError> {
        let _ = now_ms; // no time enters a pool's creation
        check_name("holder", holder, false)?;
        if spec.space.is_empty() || spec.space.contains('/') {
            return Err(AllocError::Invalid(format!(
                "address space {:?} must be non-empty and contain no '/'",
                spec.space
            )));
        }
        let subnet = match spec.subnet {
            Some(s) => s.trunc(),
            None => {
                if spec.range.is_some() {
                    return Err(invalid("a range was given without a subnet"));
                }
                self.pick_subnet(spec)?
            }
        };
        check_subnet(&subnet)?;
        if let Some(r) = spec.range {
            if matches!(r, IpNet::V4(_)) != matches!(subnet, IpNet::V4(_)) || !subnet.contains(&r) {
                return Err(invalid(format!("range {r} is not inside subnet {subnet}")));
            }
        }
        let id = PoolId::new(spec.space.clone(), subnet, spec.range);
        let holds = self.pools.get(&id).map(|p| p.holders.contains_key(holder));
        self.check_pool_quota(holder, &subnet, holds.is_none(), holds != Some(true))?;
        if let Some(pool) = self.pools.get_mut(&id) {
            *pool.holders.entry(holder.to_string()).or_insert(0) += 1;
            return Ok(RequestedPool {
                pool: id,
                created: false,
            });
        }
        // The same subnet is no overlap: pools on one subnet share it.
        if let Some(existing) =
            overlapping(&self.subnets, &id.space, &subnet).filter(|e| *e != subnet)
        {
            let existing_id = self
                .pools
                .keys()
                .filter(|p| p.space == id.space && p.subnet == existing)
                .min()
                .cloned()
                .unwrap_or_else(|| PoolId::new(id.space.clone(), existing, None));
            return Err(AllocError::Overlap {
                space: id.space.clone(),
                requested: subnet,
                existing: existing_id,
            });
        }
        let key = Self::subnet_key(&id);
        let fresh;
        let sn = match self.subnets.get(&key) {
            Some(s) => s,
            None => {
                fresh = Subnet::new(subnet);
                &fresh
            }
        };
        let (lo, hi) = match id.range {
            Some(r) => (
                sn.offset(r.network()).unwrap_or(0),
                sn.offset(r.broadcast()).unwrap_or(0),
            ),
            None => (0, sn.size() - 1),
        };
        // Validate the reserve ranges before changing anything.
        let mut offsets = Vec::new();
        let mut total: u128 = 0;
        for r in &spec.reserve {
            let (Some(a), Some(b)) = (sn.offset(r.first), sn.offset(r.last)) else {
                return Err(invalid(format!(
                    "reserve range {r} is not inside subnet {subnet}"
                )));
            };
            if a > b {
                return Err(invalid(format!("reserve range {r} ends before it starts")));
            }
            total += b - a + 1;
            if total > MAX_RESERVED_PER_POOL {
                return Err(invalid(format!(
                    "the reserve ranges cover more than {MAX_RESERVED_PER_POOL} addresses"
                )));
            }
            for off in a..=b {
                if let Some(rec) = sn.records.get(off) {
                    let owner = Owner::new(
                        self.hosts[rec.host as usize].clone(),
                        String::from_utf8_lossy(rec.name),
                    );
                    return Err(AllocError::HeldBy {
                        addr: sn.addr(off),
                        pool: id.clone(),
                        owner,
                        seq: rec.seq,
                    });
                }
                if sn.fixed_reason(off).is_none() {
                    offsets.push(off);
                }
            }
        }
        let (sid, sn) = self.subnets.get_or_insert_with(key, || Subnet::new(subnet));
        sn.pools += 1;
        let tag = format!("@{id}");
        for &off in &offsets {
            // Reserved now, for good: a conflict record on it has nothing left to hold back.
            self.lan.remove(&id.space, sn.addr(off));
        }
        for off in offsets {
            sn.stop_cooling(off);
            sn.bitmap.set(off);
            *sn.reservations
                .entry(off)
                .or_default()
                .entry(tag.clone())
                .or_insert(0) += 1;
        }
        let mut holders = BTreeMap::new();
        holders.insert(holder.to_string(), 1);
        let pool = Pool {
            key: (id.space.clone(), id.subnet),
            sid,
            serial: spec.serial,
            cooldown_ms: spec.cooldown_ms,
            holders,
            cursor: None,
            reserve: spec.reserve.clone(),
            lo,
            hi,
        };
        self.pools.insert_new(id.clone(), pool);
        Ok(RequestedPool {
            pool: id,
            created: true,
        })
    }

    /// Drops one of `holder`'s references to the pool
    /// ([`Op::ReleasePool`](crate::Op::ReleasePool)); returns whether the pool is gone now: it goes
    /// when nobody holds it and nothing in its subnet is allocated (else with the subnet's last
    /// allocation). A holder without a reference changes nothing.
    ///
    /// ```
    /// use allocator_core::{Order, Owner, PoolSpec, State};
    ///
    /// let mut state = State::default();
    /// let spec = PoolSpec::new("global").subnet("10.1.0.0/24".parse().unwrap());
    /// let pool = state.request_pool(0, &spec, "host-a").unwrap().pool;
    /// state.request_pool(0, &spec, "host-b").unwrap();
    /// assert!(!state.release_pool(1, &pool, "host-a").unwrap(), "host-b still holds it");
    /// let db = state.allocate(1, &pool, &Owner::new("host-b", "db"), Order::Lowest).unwrap();
    /// assert!(!state.release_pool(2, &pool, "host-b").unwrap(), "an address is allocated");
    /// state.release(3, &pool, db.addr.addr(), "host-b").unwrap();
    /// assert!(state.pools().is_empty(), "gone with its last allocation");
    /// ```
    pub fn release_pool(
        &mut self,
        now_ms: u64,
        id: &PoolId,
        holder: &str,
    ) -> Result<bool, AllocError> {
        let _ = now_ms; // no time enters a pool's release
        let pool = self
            .pools
            .get_mut(id)
            .ok_or_else(|| AllocError::NoSuchPool(id.clone()))?;
        if let Some(c) = pool.holders.get_mut(holder) {
            *c -= 1;
            if *c == 0 {
                pool.holders.remove(holder);
            }
        }
        Ok(self.maybe_remove_pool(id))
    }

    /// Removes a pool nobody holds once nothing is allocated in its subnet.
    pub(super) fn maybe_remove_pool(&mut self, id: &PoolId) -> bool {
        let Some(pool) = self.pools.get(id) else {
            return true;
        };
        if !pool.holders.is_empty() {
            return false;
        }
        let Some(sn) = self.subnets.get(&Self::subnet_key(id)) else {
            return false;
        };
        if sn.records.len() > 0 {
            return false;
        }
        self.remove_pool(id);
        true
    }

    /// After the last allocation of a subnet is gone, removes its pools that nobody holds.
    pub(super) fn sweep_subnet(&mut self, id: &PoolId) {
        let orphans: Vec<PoolId> = self
            .pools
            .iter()
            .filter(|(p, pool)| {
                p.space == id.space && p.subnet == id.subnet && pool.holders.is_empty()
            })
            .map(|(p, _)| p.clone())
            .collect();
        for p in orphans {
            self.maybe_remove_pool(&p);
        }
    }

    fn remove_pool(&mut self, id: &PoolId) {
        self.pools.remove(id);
        self.lan.probation.remove(id);
        let key = Self::subnet_key(id);
        let Some(sn) = self.subnets.get_mut(&key) else {
            return;
        };
        sn.pools -= 1;
        if sn.pools == 0 {
            let dropped = sn.records.len() > 0 || !sn.reservations.is_empty();
            self.subnets.remove(&key);
            self.lan.drop_subnet(&key.0, &key.1);
            if dropped {
                self.recount_usage();
            }
            return;
        }
        let tag = format!("@{id}");
        let mine: Vec<u128> = sn
            .reservations
            .iter()
            .filter(|(_, h)| h.contains_key(&tag))
            .map(|(o, _)| *o)
            .collect();
        for off in mine {
            if let Some(h) = sn.reservations.get_mut(&off) {
                h.remove(&tag);
                if h.is_empty() {
                    sn.reservations.remove(&off);
                    sn.bitmap.clear(off);
                }
            }
        }
    }

    /// Operator: deletes the pool whoever holds it ([`Op::DeletePool`](crate::Op::DeletePool)
    /// without `force`). Refused with [`AllocError::PoolInUse`] while addresses of its subnet are
    /// allocated.
    ///
    /// ```
    /// use allocator_core::{AllocError, Order, Owner, PoolSpec, State};
    ///
    /// let mut state = State::default();
    /// let spec = PoolSpec::new("global").subnet("10.1.0.0/24".parse().unwrap());
    /// let pool = state.request_pool(0, &spec, "host-a").unwrap().pool;
    /// state.allocate(0, &pool, &Owner::new("host-a", "web"), Order::Lowest).unwrap();
    /// let refused = state.delete_pool(1, &pool);
    /// assert!(matches!(refused, Err(AllocError::PoolInUse { allocated: 1, .. })));
    /// state.force_delete_pool(1, &pool).unwrap();
    /// assert!(state.pools().is_empty() && state.all_allocations().is_empty());
    /// ```
    pub fn delete_pool(&mut self, now_ms: u64, id: &PoolId) -> Result<(), AllocError> {
        let _ = now_ms; // no time enters a pool's deletion
        self.delete_pool_as(id, false)
    }

    /// Operator: deletes the pool whoever holds it and whatever is allocated in it
    /// ([`Op::DeletePool`](crate::Op::DeletePool) with `force`).
    pub fn force_delete_pool(&mut self, now_ms: u64, id: &PoolId) -> Result<(), AllocError> {
        let _ = now_ms; // no time enters a pool's deletion
        self.delete_pool_as(id, true)
    }

    /// [`Op::DeletePool`](crate::Op::DeletePool).
    pub(super) fn delete_pool_as(&mut self, id: &PoolId, force: bool) -> Result<(), AllocError> {
        if !self.pools.contains_key(id) {
            return Err(AllocError::NoSuchPool(id.clone()));
        }
        if let Some(sn) = self.subnets.get(&Self::subnet_key(id)) {
            if sn.records.len() > 0 && !force {
                return Err(AllocError::PoolInUse {
                    pool: id.clone(),
                    allocated: sn.records.len(),
                });
            }
        }
        self.remove_pool(id);
        Ok(())
    }
}

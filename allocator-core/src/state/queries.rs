//! What the state is asked: pools and their usage, allocations, hosts, who holds an
//! address, memory held.
//!
//! Owns the query methods and how internal records become the views of `crate::view`. Never
//! changes the state (every method takes `&self`). The subnet map's pages are `crate::map`'s;
//! the hosts' reports and leaks are `reports.rs`'s.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{Pool, State};
use crate::error::AllocError;
use crate::id::{Owner, PoolId};
use crate::limits::MAX_NEXT_FREE;
use crate::view::{Allocation, Holding, HostInfo, PoolInfo, Usage};

impl State {
    /// Every host that holds something or has sent a heartbeat, by name.
    pub fn hosts(&self) -> Vec<HostInfo> {
        let blank = |name: &str| HostInfo {
            name: name.to_string(),
            version: None,
            last_seen_ms: None,
            allocations: 0,
            reservations: 0,
            pools: 0,
            report_ms: None,
            leaked: None,
        };
        let mut out: BTreeMap<&str, HostInfo> = BTreeMap::new();
        for (name, seen) in &self.seen {
            let info = out.entry(name).or_insert_with(|| blank(name));
            info.version = Some(seen.version.clone());
            info.last_seen_ms = Some(seen.last_seen_ms);
        }
        for (name, r) in &self.reports {
            let info = out.entry(name).or_insert_with(|| blank(name));
            info.report_ms = Some(r.at_ms);
            info.leaked = Some(
                r.report
                    .leaked
                    .iter()
                    .filter(|l| self.leak_stands(name, l))
                    .count() as u64,
            );
        }
        for sn in self.subnets.values() {
            for (_, r) in sn.records.iter_sorted() {
                let name = self.hosts[r.host as usize].as_str();
                out.entry(name).or_insert_with(|| blank(name)).allocations += 1;
            }
            for h in sn.reservations.values() {
                for (name, c) in h {
                    if !name.starts_with('@') {
                        out.entry(name).or_insert_with(|| blank(name)).reservations +=
                            u64::from(*c);
                    }
                }
            }
        }
        for p in self.pools.values() {
            for name in p.holders.keys() {
                out.entry(name).or_insert_with(|| blank(name)).pools += 1;
            }
        }
        out.into_values().collect()
    }

    /// Whether the allocator knows host `name`: a heartbeat, a report, a pool or reservation it
    /// holds, or an address it owns.
    pub fn knows_host(&self, name: &str) -> bool {
        self.seen.contains_key(name)
            || self.reports.contains_key(name)
            || self.pools.values().any(|p| p.holders.contains_key(name))
            || !self.host_allocations(name).is_empty()
            || self
                .subnets
                .values()
                .any(|sn| sn.reservations.values().any(|h| h.contains_key(name)))
    }

    /// Every allocation held by `host`, as `(pool, allocation)`.
    pub fn host_allocations(&self, host: &str) -> Vec<(PoolId, Allocation)> {
        self.all_allocations()
            .into_iter()
            .filter(|(_, a)| a.owner.host == host)
            .collect()
    }

    fn info(&self, id: &PoolId, pool: &Pool) -> PoolInfo {
        let sn = self.subnets.get(&(id.space.clone(), id.subnet));
        let usage = sn.map_or(
            Usage {
                size: 0,
                reserved: 0,
                allocated: 0,
                cooling: 0,
                free: 0,
            },
            |sn| sn.usage_in(pool.lo, pool.hi),
        );
        let reservations = sn.map_or_else(Vec::new, |sn| {
            sn.reservations
                .iter()
                .map(|(o, h)| (sn.addr(*o), h.clone()))
                .collect()
        });
        PoolInfo {
            id: id.clone(),
            holders: pool.holders.clone(),
            serial: pool.serial,
            cooldown_ms: pool.cooldown_ms,
            reserve: pool.reserve.clone(),
            reservations,
            usage,
        }
    }

    /// Every pool, ordered by id.
    pub fn pools(&self) -> Vec<PoolInfo> {
        self.pools.iter().map(|(id, p)| self.info(id, p)).collect()
    }

    /// One pool.
    pub fn pool(&self, id: &PoolId) -> Result<PoolInfo, AllocError> {
        let p = self
            .pools
            .get(id)
            .ok_or_else(|| AllocError::NoSuchPool(id.clone()))?;
        Ok(self.info(id, p))
    }

    /// The next `n` (at most [`MAX_NEXT_FREE`]) addresses an allocation without a preference
    /// would hand out in pool `id` at time `now`, in that order, without taking them: what a
    /// host probes on the LAN ahead of time so that a hand-out rarely waits for a probe.
    /// Quarantined addresses are skipped, as allocation skips them; fewer come back when the
    /// pool has fewer free.
    pub fn next_free(&self, id: &PoolId, n: usize, now: u64) -> Result<Vec<IpAddr>, AllocError> {
        let (p, sn) = self.map_target(id)?;
        let n = n.min(MAX_NEXT_FREE);
        let guarded = self.lan.any_in(&id.space, &sn.net);
        let (lo, hi) = (p.lo, p.hi);
        let mut out = Vec::new();
        let scan = |mut from: u128, until: u128, out: &mut Vec<IpAddr>| {
            while out.len() < n && from <= until {
                let Some(off) = sn.bitmap.first_clear_in(from, until) else {
                    return;
                };
                let addr = sn.addr(off);
                if !guarded || self.lan.quarantine(&id.space, addr, now).is_none() {
                    out.push(addr);
                }
                if off >= until {
                    return;
                }
                from = off + 1;
            }
        };
        if p.serial {
            let start = p
                .cursor
                .map_or(lo, |c| c.saturating_add(1))
                .clamp(lo, hi.saturating_add(1));
            scan(start, hi, &mut out);
            if start > lo {
                scan(lo, start - 1, &mut out);
            }
        } else {
            scan(lo, hi, &mut out);
        }
        Ok(out)
    }

    /// Usage of one pool.
    pub fn usage(&self, id: &PoolId) -> Result<Usage, AllocError> {
        self.pool(id).map(|p| p.usage)
    }

    /// Every allocation in the pool's subnet, in address order.
    pub fn allocations(&self, id: &PoolId) -> Result<Vec<Allocation>, AllocError> {
        if !self.pools.contains_key(id) {
            return Err(AllocError::NoSuchPool(id.clone()));
        }
        let Some(sn) = self.subnets.get(&(id.space.clone(), id.subnet)) else {
            return Ok(Vec::new());
        };
        Ok(sn
            .records
            .iter_sorted()
            .into_iter()
            .map(|(off, r)| Allocation {
                addr: sn.addr(off),
                owner: Owner::new(
                    self.hosts[r.host as usize].clone(),
                    String::from_utf8_lossy(r.name),
                ),
                seq: r.seq,
                at_s: r.at_s,
            })
            .collect())
    }

    /// Every allocation of every pool, as `(pool, allocation)`.
    pub fn all_allocations(&self) -> Vec<(PoolId, Allocation)> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for id in self.pools.keys() {
            if seen.insert((id.space.clone(), id.subnet)) {
                if let Ok(list) = self.allocations(id) {
                    out.extend(list.into_iter().map(|a| (id.clone(), a)));
                }
            }
        }
        out
    }

    /// What holds `addr`, in every address space.
    pub fn who_has(&self, addr: IpAddr) -> Vec<Holding> {
        let mut out = Vec::new();
        for ((space, net), sn) in &self.subnets {
            let Some(off) = sn.offset(addr) else { continue };
            let Some(pool) = self
                .pools
                .keys()
                .filter(|p| &p.space == space && p.subnet == *net)
                .min()
                .cloned()
            else {
                continue;
            };
            if let Some(r) = sn.records.get(off) {
                let allocation = Allocation {
                    addr,
                    owner: Owner::new(
                        self.hosts[r.host as usize].clone(),
                        String::from_utf8_lossy(r.name),
                    ),
                    seq: r.seq,
                    at_s: r.at_s,
                };
                out.push(Holding::Allocated { pool, allocation });
            } else if let Some(why) = sn.fixed_reason(off) {
                out.push(Holding::Reserved {
                    pool,
                    why: why.to_string(),
                });
            } else if let Some(h) = sn.reservations.get(&off) {
                let who: Vec<&str> = h.keys().map(String::as_str).collect();
                out.push(Holding::Reserved {
                    pool,
                    why: format!("reserved by {}", who.join(", ")),
                });
            } else if let Some(&until_ms) = sn.cooling.get(&off) {
                out.push(Holding::Cooling { pool, until_ms });
            }
        }
        out
    }

    /// Bytes of heap memory held by the subnets' structures (bitmaps, records, names).
    pub fn heap_bytes(&self) -> usize {
        self.subnets
            .values()
            .map(|s| s.bitmap.heap_bytes() + s.records.heap_bytes())
            .sum()
    }
}

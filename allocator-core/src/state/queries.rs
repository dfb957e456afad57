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
use crate::limits::{MAX_ALLOCATIONS_PAGE, MAX_NEXT_FREE};
use crate::view::{Allocation, AllocationsPage, Holding, HostInfo, PoolInfo, Usage};

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

    /// A page of the allocations of one pool (`Some`) or of every pool (`None`, each subnet
    /// listed once, under its lowest pool, in pool order): at most `limit` (at most
    /// [`MAX_ALLOCATIONS_PAGE`]) after `after` — the `next` of the page before, `None` for the
    /// first. The cost is one page's, whatever the number of allocations, so a listing of a
    /// million never holds a million in one answer.
    ///
    /// ```
    /// use allocator_core::{Order, Owner, PoolSpec, State};
    ///
    /// let mut state = State::default();
    /// let spec = PoolSpec::new("global").subnet("10.1.0.0/24".parse().unwrap());
    /// let pool = state.request_pool(0, &spec, "h").unwrap().pool;
    /// for i in 0..5 {
    ///     state.allocate(0, &pool, &Owner::new("h", format!("e{i}")), Order::Lowest).unwrap();
    /// }
    /// let first = state.allocations_page(None, None, 3).unwrap();
    /// assert_eq!(first.items.len(), 3);
    /// let rest = state.allocations_page(None, first.next.as_ref(), 3).unwrap();
    /// assert_eq!(rest.items.len(), 2);
    /// assert_eq!(rest.next, None);
    /// ```
    pub fn allocations_page(
        &self,
        pool: Option<&PoolId>,
        after: Option<&(PoolId, IpAddr)>,
        limit: usize,
    ) -> Result<AllocationsPage, AllocError> {
        let limit = limit.clamp(1, MAX_ALLOCATIONS_PAGE);
        let listed: Vec<&PoolId> = match pool {
            Some(id) => {
                if !self.pools.contains_key(id) {
                    return Err(AllocError::NoSuchPool(id.clone()));
                }
                vec![id]
            }
            None => {
                let mut seen = std::collections::BTreeSet::new();
                self.pools
                    .keys()
                    .filter(|id| seen.insert((id.space.clone(), id.subnet)))
                    .collect()
            }
        };
        let mut page = AllocationsPage::default();
        for id in listed {
            let Some(sn) = self.subnets.get(&(id.space.clone(), id.subnet)) else {
                continue;
            };
            // Pools come in key order: those before `after`'s are done, `after`'s goes on
            // past its address, later ones start at their start (a pool removed between two
            // pages is skipped, not an error).
            let from = match after {
                Some((p, _)) if id < p => continue,
                Some((p, addr)) if id == p => match sn.offset(*addr) {
                    Some(off) => off.saturating_add(1),
                    None => {
                        return Err(AllocError::OutsidePool {
                            addr: *addr,
                            pool: id.clone(),
                        })
                    }
                },
                _ => 0,
            };
            let want = limit - page.items.len();
            // One more than wanted says whether more follow in this subnet.
            let recs = sn.records.iter_from(from, want + 1);
            let more = recs.len() > want;
            for (off, r) in recs.into_iter().take(want) {
                page.items.push((
                    id.clone(),
                    Allocation {
                        addr: sn.addr(off),
                        owner: Owner::new(
                            self.hosts[r.host as usize].clone(),
                            String::from_utf8_lossy(r.name),
                        ),
                        seq: r.seq,
                        at_s: r.at_s,
                    },
                ));
            }
            if page.items.len() >= limit {
                if more || pool.is_none() {
                    page.next = page.items.last().map(|(p, a)| (p.clone(), a.addr));
                }
                return Ok(page);
            }
        }
        Ok(page)
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

    /// The pool a subnet's addresses are listed under: the lowest of the pools on it.
    pub(super) fn listed_pool(&self, space: &str, net: &ipnet::IpNet) -> Option<PoolId> {
        self.pools
            .keys()
            .filter(|p| p.space == space && p.subnet == *net)
            .min()
            .cloned()
    }

    /// What holds `addr`, in every address space.
    pub fn who_has(&self, addr: IpAddr) -> Vec<Holding> {
        let mut out = Vec::new();
        for ((space, net), sn) in &self.subnets {
            let Some(off) = sn.offset(addr) else { continue };
            let Some(pool) = self.listed_pool(space, net) else {
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

#[cfg(test)]
mod tests {
    use crate::{Order, Owner, PoolSpec, State};

    /// Paging through every pool, and through each pool, gives exactly the full listing, in
    /// its order, whatever the page size — across word boundaries, subnets and spaces.
    #[test]
    fn pages_add_up_to_the_full_listing() {
        let mut st = State::default();
        let mut pools = Vec::new();
        for (space, net, n) in [
            ("global", "10.1.0.0/22", 700usize),
            ("global", "10.2.0.0/24", 0),
            ("local", "10.1.0.0/24", 65),
            ("local", "fd00:5::/64", 130),
        ] {
            let spec = PoolSpec::new(space).subnet(net.parse().expect("net"));
            let pool = st.request_pool(0, &spec, "h").expect("pool").pool;
            for i in 0..n {
                st.allocate(0, &pool, &Owner::new("h", format!("e{i}")), Order::Lowest)
                    .expect("alloc");
            }
            pools.push(pool);
        }
        // Holes: every third of the first pool released.
        let first: Vec<_> = st.allocations(&pools[0]).expect("list");
        for a in first.iter().step_by(3) {
            st.release(1, &pools[0], a.addr, "h").expect("release");
        }
        let all = st.all_allocations();
        for size in [1usize, 7, 64, 65, 1000, 5000] {
            let mut got = Vec::new();
            let mut after = None;
            for _ in 0..10_000 {
                let page = st
                    .allocations_page(None, after.as_ref(), size)
                    .expect("page");
                assert!(page.items.len() <= size.min(crate::MAX_ALLOCATIONS_PAGE));
                got.extend(page.items);
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            assert_eq!(got, all, "page size {size}");
            for p in &pools {
                let mut got = Vec::new();
                let mut after = None;
                loop {
                    let page = st
                        .allocations_page(Some(p), after.as_ref(), size)
                        .expect("page");
                    got.extend(page.items.into_iter().map(|(_, a)| a));
                    match page.next {
                        Some(n) => after = Some(n),
                        None => break,
                    }
                }
                assert_eq!(got, st.allocations(p).expect("list"), "{p} by {size}");
            }
        }
        // A pool removed between two pages is skipped; an address outside the pool refused.
        let page = st.allocations_page(None, None, 10).expect("page");
        let next = page.next.expect("more");
        assert!(st
            .allocations_page(
                None,
                Some(&(next.0.clone(), "192.0.2.1".parse().expect("ip"))),
                10
            )
            .is_err());
        assert!(st
            .allocations_page(Some(&"global/10.9.0.0/24".parse().expect("id")), None, 10)
            .is_err());
    }
}

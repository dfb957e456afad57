//! One address at a time: shared reservations, exclusive allocations (a given address or the
//! next free one, idempotent for the same owner) and releases (by the holder, forced, or only
//! if unchanged since it was seen).
//!
//! Owns the rules of who may take and free an address. Never creates or removes a pool
//! itself (a release that empties a subnet asks `pools.rs` to sweep the pools nobody holds),
//! and never reads the hosts' reports but for the "pool full" error's hint.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{Pool, State};
use crate::command::{Order, Released};
use crate::error::AllocError;
use crate::id::{Owner, PoolId};
use crate::keyed::Keyed;
use crate::limits::{check_name, MAX_HOSTS, MAX_SEQ};
use crate::records::RecView;
use crate::results::Allocated;
use crate::subnet::{Subnet, Subnets};

impl State {
    /// The pool, its subnet and the offset of `addr` in it, borrowed from the state's fields
    /// (no key is cloned: this is the hot path).
    pub(super) fn locate<'a>(
        pools: &'a mut Keyed<PoolId, Pool>,
        subnets: &'a mut Subnets,
        id: &PoolId,
        addr: Option<IpAddr>,
    ) -> Result<(&'a mut Pool, &'a mut Subnet, Option<u128>), AllocError> {
        let pool = pools
            .get_mut(id)
            .ok_or_else(|| AllocError::NoSuchPool(id.clone()))?;
        let sn = subnets
            .by_id_mut(pool.sid)
            .ok_or_else(|| AllocError::NoSuchPool(id.clone()))?;
        let off = match addr {
            Some(a) => Some(sn.offset(a).ok_or_else(|| AllocError::OutsidePool {
                addr: a,
                pool: id.clone(),
            })?),
            None => None,
        };
        Ok((pool, sn, off))
    }

    /// Refuses an address that is allocated, or reserved by the subnet itself.
    fn refuse_held_or_fixed(
        hosts: &[String],
        sn: &Subnet,
        id: &PoolId,
        off: u128,
    ) -> Result<(), AllocError> {
        let addr = sn.addr(off);
        if let Some((owner, seq)) = Self::owner_of(hosts, sn, off) {
            return Err(AllocError::HeldBy {
                addr,
                pool: id.clone(),
                owner,
                seq,
            });
        }
        Self::refuse_fixed(sn, id, off)
    }

    /// Refuses an address the subnet itself keeps (network, broadcast, a reserve range).
    pub(super) fn refuse_fixed(sn: &Subnet, id: &PoolId, off: u128) -> Result<(), AllocError> {
        match sn.fixed_reason(off) {
            Some(why) => Err(AllocError::Reserved {
                addr: sn.addr(off),
                pool: id.clone(),
                why: why.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Refuses an address a holder reserved (a gateway, an aux address).
    pub(super) fn refuse_shared(sn: &Subnet, id: &PoolId, off: u128) -> Result<(), AllocError> {
        match sn.reservations.get(&off) {
            Some(h) => {
                let who: Vec<&str> = h.keys().map(String::as_str).collect();
                Err(AllocError::Reserved {
                    addr: sn.addr(off),
                    pool: id.clone(),
                    why: format!("reserved by {}", who.join(", ")),
                })
            }
            None => Ok(()),
        }
    }

    pub(super) fn owner_of(hosts: &[String], sn: &Subnet, off: u128) -> Option<(Owner, u64)> {
        let rec = sn.records.get(off)?;
        Some((
            Owner::new(
                hosts[rec.host as usize].clone(),
                String::from_utf8_lossy(rec.name),
            ),
            rec.seq,
        ))
    }

    /// Takes a shared reservation on `addr` for `holder` ([`Op::Reserve`](crate::Op::Reserve)): a
    /// gateway, an aux address, a host's own address. Several holders may reserve one address; it
    /// is free again when all have released it ([`State::release`] by each). Returns the address
    /// with the subnet's prefix length.
    ///
    /// Refused, changing nothing: an unknown pool, an address outside its subnet, an address
    /// allocated or reserved by the subnet itself (network, broadcast).
    ///
    /// ```
    /// use allocator_core::{Order, Owner, PoolSpec, State};
    ///
    /// let mut state = State::default();
    /// let spec = PoolSpec::new("global").subnet("10.1.0.0/24".parse().unwrap());
    /// let pool = state.request_pool(0, &spec, "host-a").unwrap().pool;
    /// let gateway = "10.1.0.1".parse().unwrap();
    /// assert_eq!(state.reserve(0, &pool, gateway, "host-a").unwrap().to_string(), "10.1.0.1/24");
    /// // Allocations skip it.
    /// let web = state.allocate(0, &pool, &Owner::new("host-a", "web"), Order::Lowest).unwrap();
    /// assert_eq!(web.addr.to_string(), "10.1.0.2/24");
    /// ```
    pub fn reserve(
        &mut self,
        now_ms: u64,
        id: &PoolId,
        addr: IpAddr,
        holder: &str,
    ) -> Result<IpNet, AllocError> {
        check_name("holder", holder, false)?;
        if !self.pools.contains_key(id) {
            return Err(AllocError::NoSuchPool(id.clone()));
        }
        let hosts = &self.hosts;
        let sn = self
            .subnets
            .get_mut(&(id.space.clone(), id.subnet))
            .ok_or_else(|| AllocError::NoSuchPool(id.clone()))?;
        let off = sn.offset(addr).ok_or_else(|| AllocError::OutsidePool {
            addr,
            pool: id.clone(),
        })?;
        sn.expire_cooling(now_ms);
        Self::refuse_held_or_fixed(hosts, sn, id, off)?;
        let new_holder = sn
            .reservations
            .get(&off)
            .is_none_or(|h| !h.contains_key(holder));
        if new_holder {
            self.check_address_quota(holder)?;
        }
        let sn = self
            .subnets
            .get_mut(&(id.space.clone(), id.subnet))
            .ok_or_else(|| AllocError::NoSuchPool(id.clone()))?;
        sn.stop_cooling(off);
        sn.bitmap.set(off);
        *sn.reservations
            .entry(off)
            .or_default()
            .entry(holder.to_string())
            .or_insert(0) += 1;
        if new_holder {
            Self::count_address(&mut self.usage, holder, true);
        }
        // Reserved for good: whatever answers for it on the LAN now holds it by our leave.
        self.lan.remove(&id.space, addr);
        Ok(sn.addr_net(off))
    }

    /// Allocates a free address of the pool's range to `owner`
    /// ([`Op::Allocate`](crate::Op::Allocate) without an address), in `order`
    /// ([`Order::PoolDefault`]: the pool's own). The same owner asking again (a retry) gets the
    /// address it holds, with `existing` set.
    ///
    /// Refused, changing nothing: an unknown pool, an empty host or over-long name,
    /// [`AllocError::PoolFull`] (which says which of its addresses hosts reported leaked).
    ///
    /// ```
    /// use allocator_core::{Order, Owner, PoolSpec, State};
    ///
    /// let mut state = State::default();
    /// let spec = PoolSpec::new("global").subnet("10.1.0.0/30".parse().unwrap());
    /// let pool = state.request_pool(0, &spec, "host-a").unwrap().pool;
    /// let web = Owner::new("host-a", "web-1");
    /// let got = state.allocate(0, &pool, &web, Order::PoolDefault).unwrap();
    /// assert_eq!((got.addr.to_string().as_str(), got.existing), ("10.1.0.1/30", false));
    /// assert!(state.allocate(1, &pool, &web, Order::PoolDefault).unwrap().existing);
    /// // A /30 has two usable addresses.
    /// state.allocate(2, &pool, &Owner::new("host-b", "db"), Order::Lowest).unwrap();
    /// let full = state.allocate(3, &pool, &Owner::new("host-b", "x"), Order::Lowest);
    /// assert!(matches!(full, Err(allocator_core::AllocError::PoolFull { .. })));
    /// ```
    pub fn allocate(
        &mut self,
        now_ms: u64,
        id: &PoolId,
        owner: &Owner,
        order: Order,
    ) -> Result<Allocated, AllocError> {
        self.allocate_as(now_ms, id, None, owner, order)
    }

    /// Allocates `addr` (anywhere in the pool's subnet, inside its range or not) to `owner`
    /// ([`Op::Allocate`](crate::Op::Allocate) with an address). The same owner asking again for the
    /// same address gets it, with `existing` set.
    ///
    /// Refused, changing nothing: an unknown pool, an address outside its subnet, held by
    /// someone else ([`AllocError::HeldBy`]), reserved, cooling down, or an owner that holds
    /// another address of the subnet ([`AllocError::OwnerHoldsOther`]).
    ///
    /// ```
    /// use allocator_core::{AllocError, Owner, PoolSpec, State};
    ///
    /// let mut state = State::default();
    /// let spec = PoolSpec::new("global").subnet("10.1.0.0/24".parse().unwrap());
    /// let pool = state.request_pool(0, &spec, "host-a").unwrap().pool;
    /// let addr = "10.1.0.42".parse().unwrap();
    /// let got = state.allocate_addr(0, &pool, &Owner::new("host-a", "web"), addr).unwrap();
    /// assert_eq!(got.addr.addr(), addr);
    /// let taken = state.allocate_addr(0, &pool, &Owner::new("host-b", "db"), addr);
    /// assert!(matches!(taken, Err(AllocError::HeldBy { .. })));
    /// ```
    pub fn allocate_addr(
        &mut self,
        now_ms: u64,
        id: &PoolId,
        owner: &Owner,
        addr: IpAddr,
    ) -> Result<Allocated, AllocError> {
        self.allocate_as(now_ms, id, Some(addr), owner, Order::PoolDefault)
    }

    /// [`Op::Allocate`](crate::Op::Allocate): `want` an address, or any in `order`.
    pub(super) fn allocate_as(
        &mut self,
        now: u64,
        id: &PoolId,
        want: Option<IpAddr>,
        owner: &Owner,
        order: Order,
    ) -> Result<Allocated, AllocError> {
        check_name("host", &owner.host, false)?;
        check_name("endpoint", &owner.endpoint, true)?;
        // Checked before anything is taken; a repeat of a granted request passes below.
        let over_quota = self.check_address_quota(&owner.host).err();
        let State {
            pools,
            subnets,
            hosts,
            host_ids,
            seq,
            usage,
            lan,
            ..
        } = self;
        let (pool, sn, want_off) = Self::locate(pools, subnets, id, want)?;
        sn.expire_cooling(now);
        let known_host = host_ids.get(&owner.host).copied();
        let name = owner.endpoint.as_bytes();
        // Hashed once: for the idempotency lookup and for the insert below.
        let known_key = known_host.map(|h| sn.records.owner_key(h, name));
        if let Some(key) = &known_key {
            if let Some(held) = sn.records.find_owner(key) {
                if want_off.is_none_or(|w| w == held) {
                    let seq = sn.records.get(held).map_or(0, |r| r.seq);
                    return Ok(Allocated {
                        addr: sn.addr_net(held),
                        seq,
                        existing: true,
                    });
                }
                return Err(AllocError::OwnerHoldsOther {
                    owner: owner.clone(),
                    pool: id.clone(),
                    held: sn.addr(held),
                    asked: sn.addr(want_off.unwrap_or(0)),
                });
            }
        }
        if !sn.records.has_room() {
            return Err(AllocError::Invalid(format!(
                "subnet {} holds the most allocations raftipam supports",
                sn.net
            )));
        }
        if *seq >= MAX_SEQ {
            return Err(AllocError::Invalid(
                "the allocation sequence number is exhausted".into(),
            ));
        }
        if let Some(e) = over_quota {
            return Err(e);
        }
        if known_host.is_none() && hosts.len() >= MAX_HOSTS {
            return Err(AllocError::Invalid(format!(
                "more than {} distinct host names; forget hosts that are gone",
                MAX_HOSTS - 1
            )));
        }
        let mut taken = false;
        let off = match want_off {
            Some(off) => {
                let addr = sn.addr(off);
                Self::refuse_held_or_fixed(hosts, sn, id, off)?;
                Self::refuse_shared(sn, id, off)?;
                if let Some(&until_ms) = sn.cooling.get(&off) {
                    return Err(AllocError::Cooling {
                        addr,
                        pool: id.clone(),
                        until_ms,
                    });
                }
                if let Some((rec, until_ms)) = lan.quarantine(&id.space, addr, now) {
                    return Err(AllocError::Quarantined {
                        addr,
                        pool: id.clone(),
                        mac: rec.mac,
                        host: rec.host.clone(),
                        until_ms,
                    });
                }
                off
            }
            None => {
                let serial = match order {
                    Order::Serial => true,
                    Order::Lowest => false,
                    Order::PoolDefault => pool.serial,
                };
                let (lo, hi) = (pool.lo, pool.hi);
                // Free addresses a device on the LAN answered for are skipped while in
                // quarantine; without any in the subnet, one descent of the bitmap suffices.
                let guarded = lan.any_in(&id.space, &sn.net);
                let first_free = |from: u128| {
                    let mut from = from;
                    loop {
                        let off = sn.bitmap.first_clear_in(from, hi)?;
                        if !guarded || lan.quarantine(&id.space, sn.addr(off), now).is_none() {
                            return Some(off);
                        }
                        if off >= hi {
                            return None;
                        }
                        from = off + 1;
                    }
                };
                let found = if serial {
                    let start = pool
                        .cursor
                        .map_or(lo, |c| c.saturating_add(1))
                        .clamp(lo, hi.saturating_add(1));
                    first_free(start).or_else(|| first_free(lo))
                } else if guarded {
                    first_free(lo)
                } else {
                    taken = true;
                    sn.bitmap.take_first_in(lo, hi)
                };
                match found {
                    Some(off) => off,
                    None => {
                        let usage = sn.usage_in(lo, hi);
                        let leaks = self.current_leaks(id);
                        return Err(AllocError::PoolFull {
                            pool: id.clone(),
                            usage,
                            leaks,
                        });
                    }
                }
            }
        };
        let key = match known_key {
            Some(key) => key,
            None => sn
                .records
                .owner_key(State::host_id(hosts, host_ids, &owner.host)?, name),
        };
        pool.cursor = Some(off);
        if !taken {
            sn.bitmap.set(off);
        }
        *seq += 1;
        let at_s = u32::try_from(now / 1000).unwrap_or(u32::MAX);
        sn.records.insert(off, *seq, at_s, &key);
        // Handed out after its probation (the host checks it on the LAN before use): the
        // record has served its purpose.
        lan.remove(&id.space, sn.addr(off));
        Self::count_address(usage, &owner.host, true);
        Ok(Allocated {
            addr: sn.addr_net(off),
            seq: *seq,
            existing: false,
        })
    }

    /// Removes the allocation at `addr` if `check` passes on its holder and record: the
    /// address is freed (or cools down) and pools left without holders or allocations go.
    /// `check` refuses with `Err(Some(e))` (the command fails) or `Err(None)` (nothing happens).
    /// Returns whether an allocation was removed, and the address's offset.
    fn remove_allocation(
        &mut self,
        now: u64,
        id: &PoolId,
        addr: IpAddr,
        check: impl FnOnce(&str, RecView<'_>) -> Result<(), Option<AllocError>>,
    ) -> Result<(bool, u128), AllocError> {
        let State {
            pools,
            subnets,
            hosts,
            usage,
            ..
        } = self;
        let (pool, sn, off) = Self::locate(pools, subnets, id, Some(addr))?;
        let off = off.unwrap_or_default();
        sn.expire_cooling(now);
        let mut owner = None;
        match sn.records.remove_if(off, |rec| {
            let holder = &hosts[rec.host as usize];
            owner = Some(holder.as_str());
            check(holder, rec)
        }) {
            Ok(Some(_)) => Self::count_address(usage, owner.unwrap_or_default(), false),
            Ok(None) | Err(None) => return Ok((false, off)),
            Err(Some(e)) => return Err(e),
        }
        sn.macs.remove(&off);
        sn.free_or_cool(off, now, pool.cooldown_ms);
        if sn.records.len() == 0 {
            self.sweep_subnet(id);
        }
        Ok((true, off))
    }

    /// Releases `addr` for `host` ([`Op::Release`](crate::Op::Release) without `force`): its
    /// allocation, which must be `host`'s ([`AllocError::NotOwner`] otherwise), is freed (or cools
    /// down for the pool's cooldown); or else one reference of `host`'s reservation of it is
    /// dropped. Releasing a free address does nothing ([`Released::Nothing`]). Pools nobody holds
    /// go with their subnet's last allocation.
    ///
    /// ```
    /// use allocator_core::{Order, Owner, PoolSpec, Released, State};
    ///
    /// let mut state = State::default();
    /// let spec = PoolSpec::new("global").subnet("10.1.0.0/24".parse().unwrap());
    /// let pool = state.request_pool(0, &spec, "host-a").unwrap().pool;
    /// let got = state.allocate(0, &pool, &Owner::new("host-a", "web"), Order::Lowest).unwrap();
    /// let addr = got.addr.addr();
    /// assert!(state.release(1, &pool, addr, "host-b").is_err(), "not host-b's");
    /// assert_eq!(state.release(1, &pool, addr, "host-a").unwrap(), Released::Allocation);
    /// assert_eq!(state.release(2, &pool, addr, "host-a").unwrap(), Released::Nothing);
    /// ```
    pub fn release(
        &mut self,
        now_ms: u64,
        id: &PoolId,
        addr: IpAddr,
        host: &str,
    ) -> Result<Released, AllocError> {
        self.release_as(now_ms, id, addr, host, false)
    }

    /// Operator: releases `addr` whoever holds it ([`Op::Release`](crate::Op::Release) with
    /// `force`): its allocation, whoever owns it; or else `host`'s reference to its reservation if
    /// it has one, every host's references if not (a pool's reserve range stays).
    ///
    /// ```
    /// use allocator_core::{Order, Owner, PoolSpec, Released, State};
    ///
    /// let mut state = State::default();
    /// let spec = PoolSpec::new("global").subnet("10.1.0.0/24".parse().unwrap());
    /// let pool = state.request_pool(0, &spec, "host-a").unwrap().pool;
    /// let web = state.allocate(0, &pool, &Owner::new("host-a", "web"), Order::Lowest).unwrap();
    /// let freed = state.force_release(1, &pool, web.addr.addr(), "operator").unwrap();
    /// assert_eq!(freed, Released::Allocation);
    /// ```
    pub fn force_release(
        &mut self,
        now_ms: u64,
        id: &PoolId,
        addr: IpAddr,
        host: &str,
    ) -> Result<Released, AllocError> {
        self.release_as(now_ms, id, addr, host, true)
    }

    /// [`Op::Release`](crate::Op::Release).
    pub(super) fn release_as(
        &mut self,
        now: u64,
        id: &PoolId,
        addr: IpAddr,
        host: &str,
        force: bool,
    ) -> Result<Released, AllocError> {
        let (removed, off) = self.remove_allocation(now, id, addr, |holder, rec| {
            if holder != host && !force {
                return Err(Some(AllocError::NotOwner {
                    addr,
                    pool: id.clone(),
                    owner: Owner::new(holder, String::from_utf8_lossy(rec.name)),
                    host: host.to_string(),
                }));
            }
            Ok(())
        })?;
        if removed {
            return Ok(Released::Allocation);
        }
        let mut what = Released::Nothing;
        // `remove_allocation` found the pool and its subnet.
        let sn = match self.pools.get(id) {
            Some(p) => self.subnets.by_id_mut(p.sid),
            None => None,
        };
        if let Some(sn) = sn {
            if let Some(h) = sn.reservations.get_mut(&off) {
                if let Some(c) = h.get_mut(host) {
                    *c -= 1;
                    if *c == 0 {
                        h.remove(host);
                        Self::count_address(&mut self.usage, host, false);
                    }
                    what = Released::Reservation;
                } else if force {
                    for k in h.keys().filter(|k| !k.starts_with('@')) {
                        Self::count_address(&mut self.usage, k, false);
                    }
                    h.retain(|k, _| k.starts_with('@'));
                    what = Released::Reservation;
                }
                if h.is_empty() {
                    sn.reservations.remove(&off);
                    sn.bitmap.clear(off);
                }
            }
        }
        Ok(what)
    }

    /// Releases `addr` only if its allocation is still the same one: owned by `host` with sequence
    /// number `seq` ([`Op::ReleaseIfUnchanged`](crate::Op::ReleaseIfUnchanged)); anything else does
    /// nothing ([`Released::Nothing`]). For reconciliation: an address released and handed out
    /// again since it was seen leaked is never freed by mistake.
    ///
    /// ```
    /// use allocator_core::{Order, Owner, PoolSpec, Released, State};
    ///
    /// let mut state = State::default();
    /// let spec = PoolSpec::new("global").subnet("10.1.0.0/24".parse().unwrap());
    /// let pool = state.request_pool(0, &spec, "host-a").unwrap().pool;
    /// let seen = state.allocate(0, &pool, &Owner::new("host-a", "old"), Order::Lowest).unwrap();
    /// let addr = seen.addr.addr();
    /// // Released and handed out again since it was seen: left alone.
    /// state.release(1, &pool, addr, "host-a").unwrap();
    /// state.allocate(2, &pool, &Owner::new("host-a", "new"), Order::Lowest).unwrap();
    /// let r = state.release_if_unchanged(3, &pool, addr, "host-a", seen.seq).unwrap();
    /// assert_eq!(r, Released::Nothing);
    /// assert_eq!(state.allocations(&pool).unwrap()[0].owner.endpoint, "new");
    /// ```
    pub fn release_if_unchanged(
        &mut self,
        now_ms: u64,
        id: &PoolId,
        addr: IpAddr,
        host: &str,
        seq: u64,
    ) -> Result<Released, AllocError> {
        let (removed, _) = self.remove_allocation(now_ms, id, addr, |holder, rec| {
            if holder == host && rec.seq == seq {
                Ok(())
            } else {
                Err(None)
            }
        })?;
        Ok(if removed {
            Released::Allocation
        } else {
            Released::Nothing
        })
    }
}

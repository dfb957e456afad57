//! Model-based property test: random command sequences applied to the real `State` and to a
//! plain reference model (B-tree maps and linear scans). After every step the outcomes must
//! agree and `check_invariants()` must hold.
//!
//! The programs run at cluster version 1 or 2. At 2 they also report conflicts on the LAN,
//! clear them and set short probations: no allocation may hand out an address in quarantine,
//! and once its probation is over the address is handed out again like any free one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use allocator_core::conflict::{DEFAULT_PROBATION_MS, MAX_CONFLICTS_PER_HOST};
use allocator_core::{
    AddrRange, AllocError, Command, ConflictRecord, Detection, HostReport, Mac, Op, Order, Outcome,
    Owner, PoolId, PoolSpec, Released, ReportedLeak, State,
};
use ipnet::IpNet;
use proptest::prelude::*;

/// The pools the test may create: small IPv4 and IPv6 subnets (including /30, /31, /32),
/// ranges, a reserve range, serial order, a cooldown and subnets overlapping others.
fn specs() -> Vec<PoolSpec> {
    let s = |space: &str,
             net: &str,
             range: Option<&str>,
             reserve: &[&str],
             serial: bool,
             cooldown_ms: u64| {
        let spec = PoolSpec::new(space)
            .subnet(net.parse().unwrap())
            .reserve(reserve.iter().map(|r| r.parse::<AddrRange>().unwrap()))
            .serial(serial)
            .cooldown_ms(cooldown_ms);
        match range {
            Some(r) => spec.range(r.parse().unwrap()),
            None => spec,
        }
    };
    vec![
        s("g", "10.0.0.0/28", None, &[], false, 0),
        s("g", "10.0.0.0/28", Some("10.0.0.8/29"), &[], true, 0),
        s("g", "10.0.0.0/27", None, &[], false, 0), // overlaps the /28
        s("g", "10.0.1.0/30", None, &[], false, 2000),
        s("g", "10.0.2.0/31", None, &[], true, 0),
        s("g", "10.0.3.7/32", None, &[], false, 0),
        s("l", "10.0.0.0/28", None, &["10.0.0.2-10.0.0.4"], false, 0), // another space: no overlap
        s("g", "fd00::/64", None, &[], false, 1000),
        s("g", "fd01::/126", Some("fd01::/127"), &[], false, 0),
        s("g", "fd02::1/128", None, &[], false, 0),
        // More overlaps, for the ordered overlap query: beside the /28 but inside the /27; a
        // /22 over most of the above; a /24 around the /32; a /48 around the /64.
        s("g", "10.0.0.16/28", None, &[], false, 0),
        s("g", "10.0.0.0/22", None, &[], false, 0),
        s("g", "10.0.3.0/24", None, &[], false, 0),
        s("g", "fd00::/48", None, &[], false, 0),
    ]
}

const HOSTS: [&str; 3] = ["a", "b", "c"];
const ENDPOINTS: [&str; 4] = ["", "e1", "e2", "e3"];

#[derive(Clone, Debug)]
enum Step {
    RequestPool(usize, usize),
    ReleasePool(usize, usize),
    DeletePool(usize, bool),
    Reserve(usize, u8, usize),
    Allocate(usize, Option<u8>, usize, usize, u8),
    Release(usize, u8, usize, bool),
    Wait(u16),
    ReleaseIfUnchanged(usize, u8, usize, u8),
    Heartbeat(usize),
    ForgetHost(usize),
    /// An operator revokes the certificates of a host.
    Revoke(usize),
    /// A host reports leaks: (host, [(pool, address, sequence-number offset)]).
    Report(usize, Vec<(usize, u8, u8)>),
    /// A host saw a device answer for an address: (pool, address, MAC, host, how).
    ReportConflict(usize, u8, usize, usize, usize),
    /// An operator clears a conflict: (pool, address).
    ClearConflict(usize, u8),
    /// An operator sets a pool's probation: (pool, which of `PROBATIONS`).
    SetProbation(usize, usize),
}

/// MACs a report may carry: two devices, and one that cannot answer (all zeros).
const MACS: [Mac; 3] = [
    Mac([0x02, 0, 0, 0, 0, 1]),
    Mac([0x02, 0, 0, 0, 0, 2]),
    Mac([0; 6]),
];
const HOWS: [Detection; 4] = [
    Detection::Probe,
    Detection::Watch,
    Detection::Sweep,
    Detection::Import,
];
/// Probations short enough to pass within a program (and the default, which never does).
const PROBATIONS: [u64; 4] = [0, 1_000, 4_000, DEFAULT_PROBATION_MS];

fn step() -> impl Strategy<Value = Step> {
    let n = specs().len();
    prop_oneof![
        2 => (0..n, 0..3usize).prop_map(|(p, h)| Step::RequestPool(p, h)),
        1 => (0..n, 0..3usize).prop_map(|(p, h)| Step::ReleasePool(p, h)),
        1 => (0..n, any::<bool>()).prop_map(|(p, f)| Step::DeletePool(p, f)),
        2 => (0..n, any::<u8>(), 0..3usize).prop_map(|(p, a, h)| Step::Reserve(p, a, h)),
        8 => (0..n, proptest::option::weighted(0.3, any::<u8>()), 0..3usize, 0..4usize, 0..3u8)
            .prop_map(|(p, a, h, e, o)| Step::Allocate(p, a, h, e, o)),
        4 => (0..n, any::<u8>(), 0..3usize, proptest::bool::weighted(0.1)).prop_map(|(p, a, h, f)| Step::Release(p, a, h, f)),
        1 => (0..2500u16).prop_map(Step::Wait),
        2 => (0..n, any::<u8>(), 0..3usize, 0..2u8).prop_map(|(p, a, h, d)| Step::ReleaseIfUnchanged(p, a, h, d)),
        1 => (0..3usize).prop_map(Step::Heartbeat),
        1 => (0..3usize).prop_map(Step::ForgetHost),
        1 => (0..3usize).prop_map(Step::Revoke),
        2 => (0..3usize, proptest::collection::vec((0..n, any::<u8>(), 0..2u8), 0..4))
            .prop_map(|(h, l)| Step::Report(h, l)),
        3 => (0..n, any::<u8>(), 0..3usize, 0..3usize, 0..4usize)
            .prop_map(|(p, a, m, h, w)| Step::ReportConflict(p, a, m, h, w)),
        1 => (0..n, any::<u8>()).prop_map(|(p, a)| Step::ClearConflict(p, a)),
        1 => (0..n, 0..4usize).prop_map(|(p, i)| Step::SetProbation(p, i)),
    ]
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u32::from(v).into(),
        IpAddr::V6(v) => v.into(),
    }
}

fn size(net: &IpNet) -> u128 {
    1u128 << (net.max_prefix_len() - net.prefix_len())
}

/// An address of the pool's subnet picked by `x`: mostly inside, sometimes just outside.
fn pick_addr(spec: &PoolSpec, x: u8) -> IpAddr {
    let net = spec.subnet.unwrap();
    let base = to_u128(net.network());
    let off = u128::from(x) % (size(&net) + 2);
    let v = base.wrapping_add(off);
    match net {
        IpNet::V4(_) => IpAddr::V4((v as u32).into()),
        IpNet::V6(_) => IpAddr::V6(v.into()),
    }
}

#[derive(Default, Debug)]
struct MSub {
    fixed: BTreeSet<u128>,
    reserved: BTreeMap<u128, BTreeMap<String, u32>>,
    allocated: BTreeMap<u128, (Owner, u64)>,
    cooling: BTreeMap<u128, u64>,
    pools: u32,
}

#[derive(Debug)]
struct MPool {
    holders: BTreeMap<String, u32>,
    lo: u128,
    hi: u128,
    serial: bool,
    cooldown: u64,
    cursor: Option<u128>,
}

#[derive(Default, Debug)]
struct Model {
    subs: BTreeMap<(String, IpNet), MSub>,
    pools: BTreeMap<PoolId, MPool>,
    seq: u64,
    seen: BTreeSet<String>,
    /// Revoked names: certificates issued before the time are revoked.
    revoked: BTreeMap<String, u64>,
    /// Each host's last reported leaks: (pool, address, sequence number).
    reports: BTreeMap<String, Vec<(PoolId, IpAddr, u64)>>,
    /// The cluster version the program runs at.
    cluster_version: u32,
    /// Conflict records by (space, address).
    conflicts: BTreeMap<(String, IpAddr), ConflictRecord>,
    /// Probations pools set.
    probation: BTreeMap<PoolId, u64>,
}

fn id_of(spec: &PoolSpec) -> PoolId {
    PoolId::new(spec.space.clone(), spec.subnet.unwrap(), spec.range)
}

fn key(id: &PoolId) -> (String, IpNet) {
    (id.space.clone(), id.subnet)
}

impl MSub {
    fn used(&self, off: u128) -> bool {
        self.fixed.contains(&off)
            || self.reserved.contains_key(&off)
            || self.allocated.contains_key(&off)
            || self.cooling.contains_key(&off)
    }
    fn expire(&mut self, now: u64) {
        self.cooling.retain(|_, until| *until > now);
    }
}

/// Error kinds are compared by variant; their texts are the real code's business.
fn kind(e: &AllocError) -> String {
    format!("{e:?}")
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A duplicate alarm as the model lists it: the record, the holder and its sequence number.
type Alarm = (ConflictRecord, Owner, u64);

/// The end of the address's quarantine, if it is in one at `now`.
fn quarantine_of(
    conflicts: &BTreeMap<(String, IpAddr), ConflictRecord>,
    probation: &BTreeMap<PoolId, u64>,
    space: &str,
    a: IpAddr,
    now: u64,
) -> Option<u64> {
    let rec = conflicts.get(&(space.to_string(), a))?;
    let p = probation
        .get(&rec.pool)
        .copied()
        .unwrap_or(DEFAULT_PROBATION_MS);
    let until = rec.last_seen_ms + p;
    (now < until).then_some(until)
}

impl Model {
    fn probation_of(&self, pool: &PoolId) -> u64 {
        self.probation
            .get(pool)
            .copied()
            .unwrap_or(DEFAULT_PROBATION_MS)
    }

    /// What `State::conflicts` should list: (quarantined with their end, alarms with holder).
    fn listing(&self) -> (Vec<(ConflictRecord, u64)>, Vec<Alarm>) {
        let (mut q, mut a) = (vec![], vec![]);
        for ((space, addr), rec) in &self.conflicts {
            let held = self
                .subs
                .get(&(space.clone(), rec.pool.subnet))
                .and_then(|s| s.allocated.get(&Self::offset(&rec.pool.subnet, *addr)?));
            match held {
                Some((o, seq)) => a.push((rec.clone(), o.clone(), *seq)),
                None => q.push((rec.clone(), rec.last_seen_ms + self.probation_of(&rec.pool))),
            }
        }
        (q, a)
    }

    fn addr_net(net: &IpNet, off: u128) -> IpNet {
        let v = to_u128(net.network()) + off;
        let a = match net {
            IpNet::V4(_) => IpAddr::V4((v as u32).into()),
            IpNet::V6(_) => IpAddr::V6(v.into()),
        };
        IpNet::new(a, net.prefix_len()).unwrap()
    }

    fn offset(net: &IpNet, a: IpAddr) -> Option<u128> {
        net.contains(&a)
            .then(|| to_u128(a) - to_u128(net.network()))
    }

    fn request_pool(&mut self, spec: &PoolSpec, holder: &str) -> Result<Outcome, String> {
        let id = id_of(spec);
        let net = id.subnet;
        if let Some(p) = self.pools.get_mut(&id) {
            *p.holders.entry(holder.into()).or_default() += 1;
            return Ok(Outcome::Pool {
                pool: id,
                created: false,
            });
        }
        for (space, other) in self.subs.keys() {
            if *space == id.space
                && *other != net
                && (other.contains(&net.network()) || net.contains(&other.network()))
            {
                return Err("Overlap".into());
            }
        }
        let mut fixed = BTreeSet::new();
        let bits = net.max_prefix_len() - net.prefix_len();
        if bits >= 2 {
            fixed.insert(0);
            if matches!(net, IpNet::V4(_)) {
                fixed.insert(size(&net) - 1);
            }
        }
        let mut offsets = vec![];
        for r in &spec.reserve {
            let (a, b) = (
                Self::offset(&net, r.first).unwrap(),
                Self::offset(&net, r.last).unwrap(),
            );
            for o in a..=b {
                if self
                    .subs
                    .get(&key(&id))
                    .is_some_and(|s| s.allocated.contains_key(&o))
                {
                    return Err("HeldBy".into());
                }
                if !fixed.contains(&o) {
                    offsets.push(o);
                }
            }
        }
        let sub = self.subs.entry(key(&id)).or_insert_with(|| MSub {
            fixed,
            ..Default::default()
        });
        sub.pools += 1;
        for &o in &offsets {
            let a = Self::addr_net(&net, o).addr();
            self.conflicts.remove(&(id.space.clone(), a));
        }
        let sub = self.subs.get_mut(&key(&id)).unwrap();
        for o in offsets {
            sub.cooling.remove(&o);
            *sub.reserved
                .entry(o)
                .or_default()
                .entry(format!("@{id}"))
                .or_default() += 1;
        }
        let (lo, hi) = match spec.range {
            Some(r) => (
                Self::offset(&net, r.network()).unwrap(),
                Self::offset(&net, r.broadcast()).unwrap(),
            ),
            None => (0, size(&net) - 1),
        };
        let holders = BTreeMap::from([(holder.to_string(), 1)]);
        self.pools.insert(
            id.clone(),
            MPool {
                holders,
                lo,
                hi,
                serial: spec.serial,
                cooldown: spec.cooldown_ms,
                cursor: None,
            },
        );
        Ok(Outcome::Pool {
            pool: id,
            created: true,
        })
    }

    /// Frees (or cools) an allocation, then drops the subnet's pools nobody holds if it is empty.
    fn free_allocation(&mut self, now: u64, pool: &PoolId, off: u128, cooldown: u64) {
        let sub = self.subs.get_mut(&key(pool)).unwrap();
        sub.allocated.remove(&off);
        if cooldown > 0 {
            sub.cooling.insert(off, now + cooldown);
        }
        if sub.allocated.is_empty() {
            let orphans: Vec<PoolId> = self
                .pools
                .keys()
                .filter(|p| key(p) == key(pool))
                .cloned()
                .collect();
            for p in orphans {
                self.maybe_remove(&p);
            }
        }
    }

    fn maybe_remove(&mut self, id: &PoolId) -> bool {
        let Some(p) = self.pools.get(id) else {
            return true;
        };
        let sub = &self.subs[&key(id)];
        if !p.holders.is_empty() || !sub.allocated.is_empty() {
            return false;
        }
        self.remove(id);
        true
    }

    fn remove(&mut self, id: &PoolId) {
        self.pools.remove(id);
        self.probation.remove(id);
        let sub = self.subs.get_mut(&key(id)).unwrap();
        sub.pools -= 1;
        if sub.pools == 0 {
            self.subs.remove(&key(id));
            self.conflicts
                .retain(|(space, a), _| !(*space == id.space && id.subnet.contains(a)));
            return;
        }
        let tag = format!("@{id}");
        for h in sub.reserved.values_mut() {
            h.remove(&tag);
        }
        sub.reserved.retain(|_, h| !h.is_empty());
    }

    fn apply(&mut self, now: u64, op: &Op) -> Result<Outcome, String> {
        match op {
            Op::RequestPool { spec, holder } => self.request_pool(spec, holder),
            Op::ReleasePool { pool, holder } => {
                let p = self.pools.get_mut(pool).ok_or("NoSuchPool")?;
                if let Some(c) = p.holders.get_mut(holder) {
                    *c -= 1;
                    if *c == 0 {
                        p.holders.remove(holder);
                    }
                }
                Ok(Outcome::PoolReleased {
                    removed: self.maybe_remove(pool),
                })
            }
            Op::DeletePool { pool, force } => {
                self.pools.get(pool).ok_or("NoSuchPool")?;
                let sub = &self.subs[&key(pool)];
                if !sub.allocated.is_empty() && !force {
                    return Err("PoolInUse".into());
                }
                self.remove(pool);
                Ok(Outcome::PoolReleased { removed: true })
            }
            Op::Reserve { pool, addr, holder } => {
                self.pools.get(pool).ok_or("NoSuchPool")?;
                let sub = self.subs.get_mut(&key(pool)).unwrap();
                let off = Self::offset(&pool.subnet, *addr).ok_or("OutsidePool")?;
                sub.expire(now);
                if sub.allocated.contains_key(&off) {
                    return Err("HeldBy".into());
                }
                if sub.fixed.contains(&off) {
                    return Err("Reserved".into());
                }
                sub.cooling.remove(&off);
                *sub.reserved
                    .entry(off)
                    .or_default()
                    .entry(holder.clone())
                    .or_default() += 1;
                self.conflicts.remove(&(pool.space.clone(), *addr));
                Ok(Outcome::Reserved {
                    addr: Self::addr_net(&pool.subnet, off),
                })
            }
            Op::Allocate {
                pool,
                addr,
                owner,
                order,
            } => {
                let p = self.pools.get_mut(pool).ok_or("NoSuchPool")?;
                let sub = self.subs.get_mut(&key(pool)).unwrap();
                // A refused address changes nothing, not even expired cooldowns.
                let want = match addr {
                    Some(a) => Some(Self::offset(&pool.subnet, *a).ok_or("OutsidePool")?),
                    None => None,
                };
                sub.expire(now);
                if !owner.endpoint.is_empty() {
                    if let Some((&held, (_, seq))) =
                        sub.allocated.iter().find(|(_, (o, _))| o == owner)
                    {
                        if want.is_none() || want == Some(held) {
                            return Ok(Outcome::Allocated {
                                addr: Self::addr_net(&pool.subnet, held),
                                seq: *seq,
                                existing: true,
                            });
                        }
                        return Err("OwnerHoldsOther".into());
                    }
                }
                let off = match want {
                    Some(o) => {
                        if sub.allocated.contains_key(&o) {
                            return Err("HeldBy".into());
                        }
                        if sub.fixed.contains(&o) || sub.reserved.contains_key(&o) {
                            return Err("Reserved".into());
                        }
                        if sub.cooling.contains_key(&o) {
                            return Err("Cooling".into());
                        }
                        let a = Self::addr_net(&pool.subnet, o).addr();
                        if quarantine_of(&self.conflicts, &self.probation, &pool.space, a, now)
                            .is_some()
                        {
                            return Err("Quarantined".into());
                        }
                        o
                    }
                    None => {
                        let serial = match order {
                            Order::Serial => true,
                            Order::Lowest => false,
                            Order::PoolDefault => p.serial,
                            other => panic!("the model knows no order {other:?}"),
                        };
                        let (conflicts, probation) = (&self.conflicts, &self.probation);
                        let free = |o: u128| {
                            let a = Self::addr_net(&pool.subnet, o).addr();
                            !sub.used(o)
                                && quarantine_of(conflicts, probation, &pool.space, a, now)
                                    .is_none()
                        };
                        let lowest = |from: u128| (from..=p.hi).find(|o| free(*o));
                        let found = if serial {
                            let start = p.cursor.map_or(p.lo, |c| c + 1).clamp(p.lo, p.hi + 1);
                            lowest(start).or_else(|| lowest(p.lo))
                        } else {
                            lowest(p.lo)
                        };
                        found.ok_or("PoolFull")?
                    }
                };
                p.cursor = Some(off);
                self.seq += 1;
                sub.allocated.insert(off, (owner.clone(), self.seq));
                let a = Self::addr_net(&pool.subnet, off).addr();
                self.conflicts.remove(&(pool.space.clone(), a));
                Ok(Outcome::Allocated {
                    addr: Self::addr_net(&pool.subnet, off),
                    seq: self.seq,
                    existing: false,
                })
            }
            Op::Heartbeat { host, .. } => Ok(Outcome::HostSeen {
                first: self.seen.insert(host.clone()),
            }),
            Op::Restore { .. } | Op::RestoreChunk { .. } => {
                unreachable!("the steps make no restore")
            }
            Op::Report { host, report } => {
                let leaks = report
                    .leaked
                    .iter()
                    .map(|l| (l.pool.clone(), l.addr, l.seq))
                    .collect();
                self.reports.insert(host.clone(), leaks);
                Ok(Outcome::Reported)
            }
            Op::AddJoinToken { .. } | Op::RevokeJoinToken { .. } | Op::RevokeSerial { .. } => {
                unreachable!("the steps make no join tokens or serial revocations (unit-tested in allocator-core)")
            }
            Op::Revoke { name } => {
                let t = self.revoked.entry(name.clone()).or_insert(now);
                *t = (*t).max(now);
                Ok(Outcome::Revoked { before_ms: *t })
            }
            Op::ForgetHost { host } => {
                // From cluster version 2, a host's certificates only (a role-scoped key).
                let name = if self.cluster_version >= 2 {
                    format!("host\u{1f}{host}")
                } else {
                    host.clone()
                };
                let t = self.revoked.entry(name).or_insert(now);
                *t = (*t).max(now);
                self.seen.remove(host);
                self.reports.remove(host);
                let (mut allocations, mut reservations, mut pools) = (0, 0, 0);
                for p in self.pools.values_mut() {
                    pools += u64::from(p.holders.remove(host).unwrap_or(0));
                }
                for (k, sub) in self.subs.iter_mut() {
                    let cooldown = self
                        .pools
                        .iter()
                        .filter(|(id, _)| &key(id) == k)
                        .map(|(_, p)| p.cooldown)
                        .max()
                        .unwrap_or(0);
                    sub.expire(now);
                    let mine: Vec<u128> = sub
                        .allocated
                        .iter()
                        .filter(|(_, (o, _))| &o.host == host)
                        .map(|(off, _)| *off)
                        .collect();
                    for off in mine {
                        sub.allocated.remove(&off);
                        allocations += 1;
                        if cooldown > 0 {
                            sub.cooling.insert(off, now + cooldown);
                        }
                    }
                    for h in sub.reserved.values_mut() {
                        reservations += u64::from(h.remove(host).unwrap_or(0));
                    }
                    sub.reserved.retain(|_, h| !h.is_empty());
                }
                let orphans: Vec<PoolId> = self
                    .pools
                    .iter()
                    .filter(|(_, p)| p.holders.is_empty())
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in orphans {
                    self.maybe_remove(&id);
                }
                Ok(Outcome::HostForgotten {
                    allocations,
                    reservations,
                    pools,
                })
            }
            Op::ReleaseIfUnchanged {
                pool,
                addr,
                host,
                seq,
            } => {
                let p = self.pools.get(pool).ok_or("NoSuchPool")?;
                let cooldown = p.cooldown;
                let sub = self.subs.get_mut(&key(pool)).unwrap();
                let off = Self::offset(&pool.subnet, *addr).ok_or("OutsidePool")?;
                sub.expire(now);
                match sub.allocated.get(&off) {
                    Some((o, s)) if &o.host == host && s == seq => {
                        self.free_allocation(now, pool, off, cooldown);
                        Ok(Outcome::Released {
                            what: Released::Allocation,
                        })
                    }
                    _ => Ok(Outcome::Released {
                        what: Released::Nothing,
                    }),
                }
            }
            Op::Release {
                pool,
                addr,
                host,
                force,
            } => {
                let p = self.pools.get(pool).ok_or("NoSuchPool")?;
                let cooldown = p.cooldown;
                let sub = self.subs.get_mut(&key(pool)).unwrap();
                let off = Self::offset(&pool.subnet, *addr).ok_or("OutsidePool")?;
                sub.expire(now);
                if let Some((o, _)) = sub.allocated.get(&off) {
                    if &o.host != host && !force {
                        return Err("NotOwner".into());
                    }
                    self.free_allocation(now, pool, off, cooldown);
                    return Ok(Outcome::Released {
                        what: Released::Allocation,
                    });
                }
                if let Some(h) = sub.reserved.get_mut(&off) {
                    let mut what = Released::Nothing;
                    if let Some(c) = h.get_mut(host) {
                        *c -= 1;
                        if *c == 0 {
                            h.remove(host);
                        }
                        what = Released::Reservation;
                    } else if *force {
                        h.retain(|k, _| k.starts_with('@'));
                        what = Released::Reservation;
                    }
                    if h.is_empty() {
                        sub.reserved.remove(&off);
                    }
                    return Ok(Outcome::Released { what });
                }
                Ok(Outcome::Released {
                    what: Released::Nothing,
                })
            }
            Op::ReportConflict { .. } | Op::ClearConflict { .. } | Op::SetProbation { .. }
                if self.cluster_version < 2 =>
            {
                Err("NeedsClusterVersion".into())
            }
            Op::ReportConflict {
                pool,
                addr,
                mac,
                host,
                how,
            } => {
                if !mac.is_unicast() {
                    return Err("Invalid".into());
                }
                self.pools.get(pool).ok_or("NoSuchPool")?;
                let sub = &self.subs[&key(pool)];
                let off = Self::offset(&pool.subnet, *addr).ok_or("OutsidePool")?;
                if sub.fixed.contains(&off) || sub.reserved.contains_key(&off) {
                    return Err("Reserved".into());
                }
                let holder = sub.allocated.get(&off).map(|(o, _)| o.clone());
                let k = (pool.space.clone(), *addr);
                let mine = self.conflicts.values().filter(|r| r.host == *host).count();
                if self.conflicts.get(&k).is_none_or(|r| r.host != *host)
                    && mine >= MAX_CONFLICTS_PER_HOST
                {
                    return Err("Invalid".into());
                }
                let (first, last, count) = match self.conflicts.get(&k) {
                    Some(r) => (r.first_seen_ms, r.last_seen_ms.max(now), r.count + 1),
                    None => (now, now, 1),
                };
                let rec = ConflictRecord {
                    pool: pool.clone(),
                    addr: *addr,
                    mac: *mac,
                    host: host.clone(),
                    first_seen_ms: first,
                    last_seen_ms: last,
                    how: *how,
                    count,
                };
                self.conflicts.insert(k, rec);
                let until = last + self.probation_of(pool);
                Ok(Outcome::ConflictReported {
                    until_ms: holder.is_none().then_some(until),
                    holder,
                    count,
                })
            }
            Op::ClearConflict { pool, addr } => {
                self.pools.get(pool).ok_or("NoSuchPool")?;
                Self::offset(&pool.subnet, *addr).ok_or("OutsidePool")?;
                Ok(Outcome::ConflictCleared {
                    existed: self
                        .conflicts
                        .remove(&(pool.space.clone(), *addr))
                        .is_some(),
                })
            }
            Op::SetProbation { pool, probation_ms } => {
                self.pools.get(pool).ok_or("NoSuchPool")?;
                self.probation.insert(pool.clone(), *probation_ms);
                Ok(Outcome::ProbationSet {
                    probation_ms: *probation_ms,
                })
            }
            other => Err(format!("the model knows no operation {other:?}")),
        }
    }
}

/// `op` carried out through the typed method of `State` it maps to (those with none, raftipam's
/// own bookkeeping, through `apply`), its result turned into the `Outcome` `apply` gives.
#[allow(clippy::result_large_err)] // the crate's own error type, as `apply` returns it
fn through_typed_methods(st: &mut State, now: u64, op: &Op) -> Result<Outcome, AllocError> {
    let released = |what| Outcome::Released { what };
    match op {
        Op::RequestPool { spec, holder } => st.request_pool(now, spec, holder).map(Outcome::from),
        Op::ReleasePool { pool, holder } => st
            .release_pool(now, pool, holder)
            .map(|removed| Outcome::PoolReleased { removed }),
        Op::DeletePool { pool, force: false } => st
            .delete_pool(now, pool)
            .map(|()| Outcome::PoolReleased { removed: true }),
        Op::DeletePool { pool, force: true } => st
            .force_delete_pool(now, pool)
            .map(|()| Outcome::PoolReleased { removed: true }),
        Op::Reserve { pool, addr, holder } => st
            .reserve(now, pool, *addr, holder)
            .map(|addr| Outcome::Reserved { addr }),
        Op::Allocate {
            pool,
            addr: None,
            owner,
            order,
        } => st.allocate(now, pool, owner, *order).map(Outcome::from),
        // With an address, the order is not used.
        Op::Allocate {
            pool,
            addr: Some(addr),
            owner,
            ..
        } => st.allocate_addr(now, pool, owner, *addr).map(Outcome::from),
        Op::Release {
            pool,
            addr,
            host,
            force: false,
        } => st.release(now, pool, *addr, host).map(released),
        Op::Release {
            pool,
            addr,
            host,
            force: true,
        } => st.force_release(now, pool, *addr, host).map(released),
        Op::ReleaseIfUnchanged {
            pool,
            addr,
            host,
            seq,
        } => st
            .release_if_unchanged(now, pool, *addr, host, *seq)
            .map(released),
        Op::Heartbeat { host, version } => st
            .heartbeat(now, host, version)
            .map(|first| Outcome::HostSeen { first }),
        Op::Report { host, report } => st
            .store_report(now, host, report)
            .map(|()| Outcome::Reported),
        Op::Restore { snapshot } => st.restore(now, snapshot).map(Outcome::from),
        Op::ForgetHost { host } => st.forget_host(now, host).map(Outcome::from),
        // The typed methods are the allocator's, free of the cluster version's gate.
        Op::ReportConflict {
            pool,
            addr,
            mac,
            host,
            how,
        } if st.cluster_version() >= 2 => st
            .report_conflict(now, pool, *addr, *mac, host, *how)
            .map(Outcome::from),
        Op::ClearConflict { pool, addr } if st.cluster_version() >= 2 => st
            .clear_conflict(now, pool, *addr)
            .map(|existed| Outcome::ConflictCleared { existed }),
        Op::SetProbation { pool, probation_ms } if st.cluster_version() >= 2 => st
            .set_probation(now, pool, *probation_ms)
            .map(|probation_ms| Outcome::ProbationSet { probation_ms }),
        _ => st.apply(&Command {
            at_ms: now,
            op: op.clone(),
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn state_agrees_with_the_reference_model(steps in proptest::collection::vec(step(), 1..120), cluster_version in 1..=2u32) {
        let specs = specs();
        let raised = || {
            let mut st = State::default();
            st.apply(&Command { at_ms: 0, op: Op::SetClusterVersion { version: cluster_version } }).unwrap();
            st
        };
        let mut state = raised();
        // The same steps through the typed methods: the same results and the same state.
        let mut typed = raised();
        let mut model = Model { cluster_version, ..Model::default() };
        let mut now = 1_000_000u64;
        for s in steps {
            let op = match s {
                Step::RequestPool(p, h) => Op::RequestPool { spec: specs[p].clone(), holder: HOSTS[h].into() },
                Step::ReleasePool(p, h) => Op::ReleasePool { pool: id_of(&specs[p]), holder: HOSTS[h].into() },
                Step::DeletePool(p, force) => Op::DeletePool { pool: id_of(&specs[p]), force },
                Step::Reserve(p, a, h) => Op::Reserve { pool: id_of(&specs[p]), addr: pick_addr(&specs[p], a), holder: HOSTS[h].into() },
                Step::Allocate(p, a, h, e, o) => Op::Allocate {
                    pool: id_of(&specs[p]),
                    addr: a.map(|a| pick_addr(&specs[p], a)),
                    owner: Owner::new(HOSTS[h], ENDPOINTS[e]),
                    order: [Order::PoolDefault, Order::Lowest, Order::Serial][o as usize],
                },
                Step::Release(p, a, h, force) => Op::Release { pool: id_of(&specs[p]), addr: pick_addr(&specs[p], a), host: HOSTS[h].into(), force },
                Step::Heartbeat(h) => Op::Heartbeat { host: HOSTS[h].into(), version: "test".into() },
                Step::ForgetHost(h) => Op::ForgetHost { host: HOSTS[h].into() },
                Step::Revoke(h) => Op::Revoke { name: HOSTS[h].into() },
                Step::ReleaseIfUnchanged(p, a, h, d) => {
                    let addr = pick_addr(&specs[p], a);
                    let id = id_of(&specs[p]);
                    let seen = model.subs.get(&key(&id)).and_then(|s| Model::offset(&id.subnet, addr).and_then(|o| s.allocated.get(&o))).map_or(model.seq, |(_, s)| *s);
                    Op::ReleaseIfUnchanged { pool: id, addr, host: HOSTS[h].into(), seq: seen + u64::from(d) }
                }
                Step::Report(h, leaks) => {
                    let leaked: Vec<ReportedLeak> = leaks
                        .iter()
                        .map(|&(p, a, d)| {
                            let id = id_of(&specs[p]);
                            let addr = pick_addr(&specs[p], a);
                            let seq = model
                                .subs
                                .get(&key(&id))
                                .and_then(|s| Model::offset(&id.subnet, addr).and_then(|o| s.allocated.get(&o)))
                                .map_or(model.seq, |(_, s)| *s);
                            ReportedLeak { pool: id, addr, seq: seq + u64::from(d), endpoint: String::new() }
                        })
                        .collect();
                    let report = HostReport { leaked_total: leaked.len() as u64, leaked, ..Default::default() };
                    Op::Report { host: HOSTS[h].into(), report }
                }
                Step::ReportConflict(p, a, m, h, w) => Op::ReportConflict {
                    pool: id_of(&specs[p]),
                    addr: pick_addr(&specs[p], a),
                    mac: MACS[m],
                    host: HOSTS[h].into(),
                    how: HOWS[w],
                },
                Step::ClearConflict(p, a) => Op::ClearConflict { pool: id_of(&specs[p]), addr: pick_addr(&specs[p], a) },
                Step::SetProbation(p, i) => Op::SetProbation { pool: id_of(&specs[p]), probation_ms: PROBATIONS[i] },
                Step::Wait(ms) => {
                    now += u64::from(ms);
                    continue;
                }
            };
            // What is in quarantine now, as the state lists it: no allocation may hand it out.
            let quarantined: BTreeSet<(String, IpAddr)> = state
                .conflicts()
                .quarantined
                .iter()
                .filter(|c| c.quarantined_at(now))
                .map(|c| (c.record.pool.space.clone(), c.record.addr))
                .collect();
            let got = state.apply(&Command { at_ms: now, op: op.clone() });
            prop_assert_eq!(&through_typed_methods(&mut typed, now, &op), &got, "typed {:?}", op);
            prop_assert_eq!(typed.to_snapshot(), state.to_snapshot(), "typed {:?}", op);
            let want = model.apply(now, &op);
            match (&got, &want) {
                (Ok(g), Ok(w)) => prop_assert_eq!(g, w, "op {:?}", op),
                (Err(g), Err(w)) => prop_assert_eq!(&kind(g), w, "op {:?}: {}", op, g),
                _ => prop_assert!(false, "op {:?}: state {:?} but model {:?}", op, got, want),
            }
            if let Err(e) = state.check_invariants() {
                prop_assert!(false, "after {:?}: {}", op, e);
            }
            if let (Op::Allocate { pool, .. }, Ok(Outcome::Allocated { addr, existing: false, .. })) = (&op, &got) {
                prop_assert!(!quarantined.contains(&(pool.space.clone(), addr.addr())), "{} was handed out in quarantine", addr);
            }
            // The conflicts listed are the model's: quarantines with their end, alarms with
            // their holder.
            let listed = state.conflicts();
            let (q, a) = model.listing();
            let got_q: Vec<(ConflictRecord, u64)> = listed.quarantined.iter().map(|c| (c.record.clone(), c.until_ms)).collect();
            let got_a: Vec<Alarm> = listed.alarms.iter().map(|d| (d.record.clone(), d.holder.clone(), d.seq)).collect();
            prop_assert_eq!(got_q, q, "quarantines after {:?}", op);
            prop_assert_eq!(got_a, a, "alarms after {:?}", op);
            // Usage counts agree with the model for every live pool.
            for (id, p) in &model.pools {
                let sub = &model.subs[&key(id)];
                let inr = |o: &u128| (p.lo..=p.hi).contains(o);
                let u = state.usage(id).unwrap();
                prop_assert_eq!(u.allocated, sub.allocated.keys().filter(|o| inr(o)).count() as u64);
                prop_assert_eq!(u.cooling, sub.cooling.keys().filter(|o| inr(o)).count() as u64);
                let reserved = sub.fixed.iter().chain(sub.reserved.keys()).filter(|o| inr(o)).count() as u128;
                prop_assert_eq!(u.reserved, reserved);
                // Reported leaks count while the allocation is unchanged (same host and seq).
                let mut want: BTreeMap<String, u64> = BTreeMap::new();
                for (host, leaks) in &model.reports {
                    for (lp, addr, seq) in leaks {
                        if key(lp) != key(id) {
                            continue;
                        }
                        let Some(o) = Model::offset(&id.subnet, *addr) else { continue };
                        if inr(&o) && sub.allocated.get(&o).is_some_and(|(ow, s)| ow.host == *host && s == seq) {
                            *want.entry(host.clone()).or_default() += 1;
                        }
                    }
                }
                let want: Vec<(String, u64)> = want.into_iter().collect();
                prop_assert_eq!(state.current_leaks(id).by_host, want, "leaks of {}", id);
            }
        }
        // Per-host counts agree with the model.
        for info in state.hosts() {
            let allocs = model.subs.values().flat_map(|s| s.allocated.values()).filter(|(o, _)| o.host == info.name).count() as u64;
            let res: u64 = model.subs.values().flat_map(|s| s.reserved.values()).map(|h| u64::from(h.get(&info.name).copied().unwrap_or(0))).sum();
            let pools = model.pools.values().filter(|p| p.holders.contains_key(&info.name)).count() as u64;
            prop_assert_eq!((info.allocations, info.reservations, info.pools), (allocs, res, pools), "host {}", info.name);
            prop_assert_eq!(info.last_seen_ms.is_some(), model.seen.contains(&info.name));
            let leaked = model.reports.get(&info.name).map(|leaks| {
                leaks
                    .iter()
                    .filter(|(lp, addr, seq)| {
                        let Some(sub) = model.subs.get(&key(lp)) else { return false };
                        let Some(o) = Model::offset(&lp.subnet, *addr) else { return false };
                        sub.allocated.get(&o).is_some_and(|(ow, s)| ow.host == info.name && s == seq)
                    })
                    .count() as u64
            });
            prop_assert_eq!(info.leaked, leaked, "leaks of host {}", info.name);
        }
        // And the state survives a snapshot round trip unchanged.
        let copy = State::from_snapshot(&state.to_snapshot()).unwrap();
        prop_assert_eq!(copy.pools(), state.pools());
        prop_assert_eq!(copy.all_allocations(), state.all_allocations());
        prop_assert_eq!(copy.hosts(), state.hosts());
        let revoked: Vec<(String, u64)> = model.revoked.iter().map(|(n, t)| (n.clone(), *t)).collect();
        prop_assert_eq!(state.revocations(), revoked.clone());
        prop_assert_eq!(copy.revocations(), revoked);
        prop_assert_eq!(copy.reports(), state.reports());
        prop_assert_eq!(copy.conflicts(), state.conflicts());
        for id in model.pools.keys() {
            prop_assert_eq!(copy.probation(id), Ok(model.probation_of(id)));
        }
        // A restore into an empty state gives the same bytes back; into this one it is refused.
        let snap = state.to_snapshot();
        let mut fresh = raised();
        fresh.apply(&Command { at_ms: now, op: Op::Restore { snapshot: snap.clone() } }).unwrap();
        prop_assert_eq!(fresh.to_snapshot(), snap.clone());
        let again = state.apply(&Command { at_ms: now, op: Op::Restore { snapshot: snap } });
        prop_assert_eq!(again.is_err(), !State::from_snapshot(&state.to_snapshot()).unwrap().is_empty());
    }
}

//! The allocation state machine: pools, subnets, and `apply`.
//!
//! The only file that changes allocator state. The vocabulary it speaks (ids, commands,
//! errors, reports, query views) depends on nothing here.

mod reports;

use std::collections::BTreeMap;

use hashbrown::HashMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::bitmap::MAX_BITS;
use crate::command::{Command, Op, Order, Outcome, PoolSpec, Released};
use crate::error::AllocError;
use crate::id::{AddrRange, Owner, PoolId};
use crate::keyed::Keyed;
use crate::limits::{check_name, MAX_RESERVED_PER_POOL, MAX_RESTORE_BYTES, MAX_RESTORE_CHUNK};
use crate::records::RecView;
use crate::report::StoredReport;
use crate::subnet::{addr_to_u128, Subnet, Subnets};
use crate::view::{Allocation, Holding, HostInfo, PoolInfo, Usage};

/// A block that subnets are carved from when a pool is requested without one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultPool {
    /// The block, e.g. `172.16.0.0/12`.
    pub base: IpNet,
    /// Prefix length of the subnets carved from it, e.g. 16.
    pub size: u8,
}

/// Settings that are part of the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Blocks for pools requested without a subnet, tried in order.
    pub default_pools: Vec<DefaultPool>,
}

impl Default for Config {
    /// Docker's convention: /16s of 172.16.0.0/12, then /20s of 192.168.0.0/16; IPv6 /64s of
    /// fd00::/8.
    fn default() -> Self {
        let dp = |base: &str, size| DefaultPool {
            base: base.parse().unwrap_or(IpNet::V4(Default::default())),
            size,
        };
        Config {
            default_pools: vec![
                dp("172.16.0.0/12", 16),
                dp("192.168.0.0/16", 20),
                dp("fd00::/8", 64),
            ],
        }
    }
}

/// What the last heartbeat of a host said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Seen {
    pub version: String,
    pub last_seen_ms: u64,
}

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

/// The whole allocator: every pool of every address space.
///
/// Apply [`Command`]s with [`State::apply`]; read with the query methods. Deterministic: the
/// same sequence of commands gives the same state and outcomes on every replica.
#[derive(Clone)]
pub struct State {
    pub(crate) config: Config,
    pub(crate) seq: u64,
    pub(crate) hosts: Vec<String>,
    pub(crate) host_ids: HashMap<String, u16>,
    pub(crate) subnets: Subnets,
    pub(crate) pools: Keyed<PoolId, Pool>,
    pub(crate) seen: BTreeMap<String, Seen>,
    pub(crate) reports: BTreeMap<String, StoredReport>,
    /// Revoked certificate names: certificates of the name issued before the time (ms).
    pub(crate) revoked: BTreeMap<String, u64>,
    /// Join tokens: SHA-256 of the secret (hex) and expiry (ms).
    pub(crate) join_tokens: BTreeMap<String, u64>,
    /// Revoked certificate serials ([`crate::canonical_serial`]) and when they were revoked.
    pub(crate) revoked_serials: BTreeMap<String, u64>,
    /// A backup being restored in pieces ([`Op::RestoreChunk`]).
    pub(crate) staged: Option<StagedRestore>,
}

/// The pieces of a backup received so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StagedRestore {
    /// The client's id for this restore.
    pub(crate) restore: u64,
    /// Length of the whole backup.
    pub(crate) total: u64,
    /// The bytes received so far, in order.
    pub(crate) bytes: Vec<u8>,
}

impl Default for State {
    fn default() -> Self {
        State::new(Config::default())
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("pools", &self.pools.len())
            .field("seq", &self.seq)
            .finish()
    }
}

fn invalid(msg: impl Into<String>) -> AllocError {
    AllocError::InvalidPool(msg.into())
}

/// Checks that the allocator can hold this subnet.
fn check_subnet(net: &IpNet) -> Result<(), AllocError> {
    let bits = u32::from(net.max_prefix_len() - net.prefix_len());
    match net {
        IpNet::V4(_) if net.prefix_len() < 8 => Err(invalid(format!(
            "{net} is larger than /8, the largest IPv4 pool raftipam holds"
        ))),
        IpNet::V6(_) if bits > MAX_BITS => Err(invalid(format!(
            "{net} is larger than /8, the largest IPv6 pool raftipam holds"
        ))),
        _ => Ok(()),
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
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

impl State {
    /// An empty state.
    pub fn new(config: Config) -> State {
        State {
            config,
            seq: 0,
            hosts: Vec::new(),
            host_ids: HashMap::new(),
            subnets: Subnets::default(),
            pools: Keyed::default(),
            seen: BTreeMap::new(),
            reports: BTreeMap::new(),
            revoked: BTreeMap::new(),
            join_tokens: BTreeMap::new(),
            revoked_serials: BTreeMap::new(),
            staged: None,
        }
    }

    /// The replicated settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Sequence number of the last allocation.
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    /// Applies one command. A command that fails changes nothing.
    pub fn apply(&mut self, cmd: &Command) -> Result<Outcome, AllocError> {
        match &cmd.op {
            Op::RequestPool { spec, holder } => self.request_pool(spec, holder),
            Op::ReleasePool { pool, holder } => self.release_pool(pool, holder),
            Op::DeletePool { pool, force } => self.delete_pool(pool, *force),
            Op::Reserve { pool, addr, holder } => self.reserve(cmd.at_ms, pool, *addr, holder),
            Op::Allocate {
                pool,
                addr,
                owner,
                order,
            } => self.allocate(cmd.at_ms, pool, *addr, owner, *order),
            Op::Release {
                pool,
                addr,
                host,
                force,
            } => self.release(cmd.at_ms, pool, *addr, host, *force),
            Op::ReleaseIfUnchanged {
                pool,
                addr,
                host,
                seq,
            } => self.release_if_unchanged(cmd.at_ms, pool, *addr, host, *seq),
            Op::Heartbeat { host, version } => {
                check_name("host", host, false)?;
                let seen = Seen {
                    version: version.clone(),
                    last_seen_ms: cmd.at_ms,
                };
                let first = self.seen.insert(host.clone(), seen).is_none();
                Ok(Outcome::HostSeen { first })
            }
            Op::Report { host, report } => {
                self.store_report(cmd.at_ms, host, report)?;
                Ok(Outcome::Reported)
            }
            Op::Restore { snapshot } => self.restore(snapshot),
            Op::ForgetHost { host } => {
                check_name("host", host, false)?;
                self.revoke(host, cmd.at_ms);
                Ok(self.forget_host(cmd.at_ms, host))
            }
            Op::AddJoinToken { hash, expires_ms } => {
                self.add_join_token(cmd.at_ms, hash, *expires_ms)
            }
            Op::RevokeJoinToken { hash } => Ok(Outcome::JoinTokenRevoked {
                existed: self.join_tokens.remove(hash).is_some(),
            }),
            Op::Revoke { name } => {
                check_name("certificate", name, false)?;
                Ok(Outcome::Revoked {
                    before_ms: self.revoke(name, cmd.at_ms),
                })
            }
            Op::RevokeSerial { serial } => self.revoke_serial(cmd.at_ms, serial),
            Op::RestoreChunk {
                restore,
                offset,
                total,
                bytes,
            } => self.restore_chunk(*restore, *offset, *total, bytes),
        }
    }

    fn subnet_key(id: &PoolId) -> (String, IpNet) {
        (id.space.clone(), id.subnet)
    }

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

    fn request_pool(&mut self, spec: &PoolSpec, holder: &str) -> Result<Outcome, AllocError> {
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
        if let Some(pool) = self.pools.get_mut(&id) {
            *pool.holders.entry(holder.to_string()).or_insert(0) += 1;
            return Ok(Outcome::Pool {
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
        Ok(Outcome::Pool {
            pool: id,
            created: true,
        })
    }

    fn release_pool(&mut self, id: &PoolId, holder: &str) -> Result<Outcome, AllocError> {
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
        Ok(Outcome::PoolReleased {
            removed: self.maybe_remove_pool(id),
        })
    }

    /// Removes a pool nobody holds once nothing is allocated in its subnet.
    fn maybe_remove_pool(&mut self, id: &PoolId) -> bool {
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
    fn sweep_subnet(&mut self, id: &PoolId) {
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
        let key = Self::subnet_key(id);
        let Some(sn) = self.subnets.get_mut(&key) else {
            return;
        };
        sn.pools -= 1;
        if sn.pools == 0 {
            self.subnets.remove(&key);
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

    fn delete_pool(&mut self, id: &PoolId, force: bool) -> Result<Outcome, AllocError> {
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
        Ok(Outcome::PoolReleased { removed: true })
    }

    /// The pool, its subnet and the offset of `addr` in it, borrowed from the state's fields
    /// (no key is cloned: this is the hot path).
    fn locate<'a>(
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
        if let Some(why) = sn.fixed_reason(off) {
            return Err(AllocError::Reserved {
                addr,
                pool: id.clone(),
                why: why.to_string(),
            });
        }
        Ok(())
    }

    fn owner_of(hosts: &[String], sn: &Subnet, off: u128) -> Option<(Owner, u64)> {
        let rec = sn.records.get(off)?;
        Some((
            Owner::new(
                hosts[rec.host as usize].clone(),
                String::from_utf8_lossy(rec.name),
            ),
            rec.seq,
        ))
    }

    fn reserve(
        &mut self,
        now: u64,
        id: &PoolId,
        addr: IpAddr,
        holder: &str,
    ) -> Result<Outcome, AllocError> {
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
        sn.expire_cooling(now);
        Self::refuse_held_or_fixed(hosts, sn, id, off)?;
        sn.stop_cooling(off);
        sn.bitmap.set(off);
        *sn.reservations
            .entry(off)
            .or_default()
            .entry(holder.to_string())
            .or_insert(0) += 1;
        Ok(Outcome::Reserved {
            addr: sn.addr_net(off),
        })
    }

    fn host_id(
        hosts: &mut Vec<String>,
        host_ids: &mut HashMap<String, u16>,
        host: &str,
    ) -> Result<u16, AllocError> {
        if let Some(&h) = host_ids.get(host) {
            return Ok(h);
        }
        let h = u16::try_from(hosts.len()).map_err(|_| {
            AllocError::Invalid(format!(
                "more than {} distinct host names; forget hosts that are gone",
                u16::MAX
            ))
        })?;
        hosts.push(host.to_string());
        host_ids.insert(host.to_string(), h);
        Ok(h)
    }

    fn allocate(
        &mut self,
        now: u64,
        id: &PoolId,
        want: Option<IpAddr>,
        owner: &Owner,
        order: Order,
    ) -> Result<Outcome, AllocError> {
        check_name("host", &owner.host, false)?;
        check_name("endpoint", &owner.endpoint, true)?;
        let State {
            pools,
            subnets,
            hosts,
            host_ids,
            seq,
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
                    return Ok(Outcome::Allocated {
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
        if *seq >= crate::records::MAX_SEQ {
            return Err(AllocError::Invalid(
                "the allocation sequence number is exhausted".into(),
            ));
        }
        if known_host.is_none() && hosts.len() > usize::from(u16::MAX) {
            return Err(AllocError::Invalid(format!(
                "more than {} distinct host names; forget hosts that are gone",
                u16::MAX
            )));
        }
        let mut taken = false;
        let off = match want_off {
            Some(off) => {
                let addr = sn.addr(off);
                Self::refuse_held_or_fixed(hosts, sn, id, off)?;
                if let Some(h) = sn.reservations.get(&off) {
                    let who: Vec<&str> = h.keys().map(String::as_str).collect();
                    return Err(AllocError::Reserved {
                        addr,
                        pool: id.clone(),
                        why: format!("reserved by {}", who.join(", ")),
                    });
                }
                if let Some(&until_ms) = sn.cooling.get(&off) {
                    return Err(AllocError::Cooling {
                        addr,
                        pool: id.clone(),
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
                let found = if serial {
                    let start = pool
                        .cursor
                        .map_or(lo, |c| c.saturating_add(1))
                        .clamp(lo, hi.saturating_add(1));
                    sn.bitmap
                        .first_clear_in(start, hi)
                        .or_else(|| sn.bitmap.first_clear_in(lo, hi))
                } else {
                    taken = true;
                    sn.bitmap.take_first_in(lo, hi)
                };
                match found {
                    Some(off) => off,
                    None => {
                        let usage = usage_of(sn, lo, hi);
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
                .owner_key(Self::host_id(hosts, host_ids, &owner.host)?, name),
        };
        pool.cursor = Some(off);
        if !taken {
            sn.bitmap.set(off);
        }
        *seq += 1;
        let at_s = u32::try_from(now / 1000).unwrap_or(u32::MAX);
        sn.records.insert(off, *seq, at_s, &key);
        Ok(Outcome::Allocated {
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
            ..
        } = self;
        let (pool, sn, off) = Self::locate(pools, subnets, id, Some(addr))?;
        let off = off.unwrap_or_default();
        sn.expire_cooling(now);
        match sn
            .records
            .remove_if(off, |rec| check(&hosts[rec.host as usize], rec))
        {
            Ok(Some(_)) => {}
            Ok(None) | Err(None) => return Ok((false, off)),
            Err(Some(e)) => return Err(e),
        }
        sn.free_or_cool(off, now, pool.cooldown_ms);
        if sn.records.len() == 0 {
            self.sweep_subnet(id);
        }
        Ok((true, off))
    }

    fn release(
        &mut self,
        now: u64,
        id: &PoolId,
        addr: IpAddr,
        host: &str,
        force: bool,
    ) -> Result<Outcome, AllocError> {
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
            return Ok(Outcome::Released {
                what: Released::Allocation,
            });
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
                    }
                    what = Released::Reservation;
                } else if force {
                    h.retain(|k, _| k.starts_with('@'));
                    what = Released::Reservation;
                }
                if h.is_empty() {
                    sn.reservations.remove(&off);
                    sn.bitmap.clear(off);
                }
            }
        }
        Ok(Outcome::Released { what })
    }

    fn release_if_unchanged(
        &mut self,
        now: u64,
        id: &PoolId,
        addr: IpAddr,
        host: &str,
        seq: u64,
    ) -> Result<Outcome, AllocError> {
        let (removed, _) = self.remove_allocation(now, id, addr, |holder, rec| {
            if holder == host && rec.seq == seq {
                Ok(())
            } else {
                Err(None)
            }
        })?;
        let what = if removed {
            Released::Allocation
        } else {
            Released::Nothing
        };
        Ok(Outcome::Released { what })
    }

    /// True when the state holds no pool, subnet or allocation and never allocated (hosts'
    /// heartbeats and reports aside): what [`Op::Restore`] accepts.
    pub fn is_empty(&self) -> bool {
        self.pools.is_empty() && self.subnets.is_empty() && self.hosts.is_empty() && self.seq == 0
    }

    /// [`AllocError::NotEmpty`] unless [`State::is_empty`]: what a restore requires.
    fn refuse_unless_empty(&self) -> Result<(), AllocError> {
        if self.is_empty() {
            return Ok(());
        }
        Err(AllocError::NotEmpty(format!(
            "{} pools, last sequence number {}",
            self.pools.len(),
            self.seq
        )))
    }

    /// One piece of a backup restored in pieces: kept until the last one, then restored.
    /// Every refusal leaves the state as it was, so a retried piece is harmless.
    fn restore_chunk(
        &mut self,
        restore: u64,
        offset: u64,
        total: u64,
        bytes: &[u8],
    ) -> Result<Outcome, AllocError> {
        self.refuse_unless_empty()?;
        if bytes.len() > MAX_RESTORE_CHUNK {
            return Err(AllocError::Invalid(format!(
                "a piece of a backup is {} bytes; at most {MAX_RESTORE_CHUNK} are allowed",
                bytes.len()
            )));
        }
        if total > MAX_RESTORE_BYTES {
            return Err(AllocError::Invalid(format!(
                "the backup is {total} bytes; at most {MAX_RESTORE_BYTES} can be restored"
            )));
        }
        let len = bytes.len() as u64;
        if offset == 0 {
            self.staged = Some(StagedRestore {
                restore,
                total,
                bytes: Vec::new(),
            });
        }
        let staged = match self.staged.as_mut() {
            Some(s) if s.restore == restore && s.total == total => s,
            _ => {
                return Err(AllocError::Invalid(format!(
                    "no restore {restore:#x} of {total} bytes is under way (another restore started, or its first piece never arrived): start again with `raftipam restore`"
                )))
            }
        };
        let have = staged.bytes.len() as u64;
        if offset != have || offset + len > total {
            return Err(AllocError::Invalid(format!(
                "a piece at bytes {offset}..{} does not follow the {have} bytes received of {total}: start again with `raftipam restore`",
                offset + len
            )));
        }
        staged.bytes.extend_from_slice(bytes);
        if offset + len < total {
            return Ok(Outcome::RestoreStaged { have: offset + len });
        }
        let Some(whole) = self.staged.take() else {
            return Err(AllocError::Invalid("no restore under way".into()));
        };
        let out = self.restore(&whole.bytes);
        if out.is_err() {
            // A damaged backup: nothing was restored and the pieces are of no more use.
            self.staged = None;
        }
        out
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<Outcome, AllocError> {
        self.refuse_unless_empty()?;
        let mut restored = State::from_snapshot(snapshot)
            .map_err(|e| AllocError::Invalid(format!("the backup does not load: {e}")))?;
        let pools = restored.pools.len() as u64;
        let allocations = restored.subnets.values().map(|sn| sn.records.len()).sum();
        // Shims running while the backup is restored keep their newer heartbeats and reports.
        for (host, seen) in std::mem::take(&mut self.seen) {
            if restored
                .seen
                .get(&host)
                .is_none_or(|r| r.last_seen_ms < seen.last_seen_ms)
            {
                restored.seen.insert(host, seen);
            }
        }
        // Join tokens added while empty stay (the later expiry).
        for (hash, until) in std::mem::take(&mut self.join_tokens) {
            let t = restored.join_tokens.entry(hash).or_insert(until);
            *t = (*t).max(until);
        }
        // Revocations made while empty stand (the later of the two times).
        for (name, before) in std::mem::take(&mut self.revoked) {
            restored.revoke(&name, before);
        }
        for (serial, at) in std::mem::take(&mut self.revoked_serials) {
            restored.revoked_serials.entry(serial).or_insert(at);
        }
        for (host, report) in std::mem::take(&mut self.reports) {
            if restored
                .reports
                .get(&host)
                .is_none_or(|r| r.at_ms < report.at_ms)
            {
                restored.reports.insert(host, report);
            }
        }
        *self = restored;
        Ok(Outcome::Restored { pools, allocations })
    }

    fn forget_host(&mut self, now: u64, host: &str) -> Outcome {
        self.seen.remove(host);
        self.reports.remove(host);
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
            sn.expire_cooling(now);
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
                        sn.free_or_cool(off, now, cooldown);
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
        Outcome::HostForgotten {
            allocations,
            reservations,
            pools: pools_dropped,
        }
    }

    // ---- queries ----

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
            |sn| usage_of(sn, pool.lo, pool.hi),
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

    /// Verifies every internal invariant; the tests call this after every step.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.hosts.len() != self.host_ids.len() {
            return Err("host table and its index differ in length".into());
        }
        for (i, h) in self.hosts.iter().enumerate() {
            if self.host_ids.get(h) != Some(&(i as u16)) {
                return Err(format!("host {h:?} is not indexed at {i}"));
            }
        }
        let mut per_subnet: BTreeMap<(String, IpNet), u32> = BTreeMap::new();
        for (id, p) in &self.pools {
            *per_subnet.entry(Self::subnet_key(id)).or_default() += 1;
            if p.holders.values().any(|&c| c == 0) {
                return Err(format!("pool {id} has a holder with no reference"));
            }
            let sn = self
                .subnets
                .get(&Self::subnet_key(id))
                .ok_or_else(|| format!("pool {id} has no subnet"))?;
            if self.subnets.id_of(&p.key) != Some(p.sid) || p.key != Self::subnet_key(id) {
                return Err(format!("pool {id} points at the wrong subnet slot"));
            }
            if p.lo > p.hi || p.hi >= sn.size() {
                return Err(format!("pool {id} has a range outside its subnet"));
            }
            if p.holders.is_empty() && sn.records.len() == 0 {
                return Err(format!("pool {id} is held by nobody yet still exists"));
            }
        }
        // Subnets are ordered by space, then network address: if any two of a space overlap,
        // two neighbours in that order do.
        for (a, b) in self.subnets.keys().zip(self.subnets.keys().skip(1)) {
            if a.0 == b.0 && overlaps(&a.1, &b.1) {
                return Err(format!(
                    "subnets {} and {} overlap in space {}",
                    a.1, b.1, a.0
                ));
            }
        }
        let mut max_seq = 0;
        for (key, sn) in &self.subnets {
            if per_subnet.get(key) != Some(&sn.pools) {
                return Err(format!(
                    "subnet {} counts {} pools, but {:?} refer to it",
                    key.1,
                    sn.pools,
                    per_subnet.get(key)
                ));
            }
            sn.check()?;
            for (_, r) in sn.records.iter_sorted() {
                if r.host as usize >= self.hosts.len() {
                    return Err(format!(
                        "a record in {} names unknown host {}",
                        sn.net, r.host
                    ));
                }
                max_seq = max_seq.max(r.seq);
            }
        }
        if max_seq > self.seq {
            return Err(format!(
                "a record has sequence {max_seq} past the last {}",
                self.seq
            ));
        }
        Ok(())
    }
}

fn usage_of(sn: &Subnet, lo: u128, hi: u128) -> Usage {
    let (reserved, allocated, cooling) = sn.counts_in(lo, hi);
    let size = hi - lo + 1;
    let free = size.saturating_sub(reserved + u128::from(allocated) + u128::from(cooling));
    Usage {
        size,
        reserved,
        allocated,
        cooling,
        free,
    }
}

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

//! One subnet of one address space: its bitmap and who holds what in it.
//!
//! Several pools may share a subnet (the same subnet with different sub-ranges): they share
//! this one bitmap, so an address can never be handed out by two pools at once.
//!
//! Owns [`Subnet`] (bitmap, shared reservations, records, cooling addresses) and its own
//! consistency check. Never decides who may take an address (that is `crate::state`) and
//! never imports it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::bitmap::Bitmap;
use crate::keyed::Keyed;
use crate::records::Records;
use crate::view::Usage;

/// Integer value of an address (IPv4 in the low 32 bits).
pub(crate) fn addr_to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

#[derive(Clone)]
pub(crate) struct Subnet {
    pub net: IpNet,
    pub base: u128,
    pub bits: u32,
    pub bitmap: Bitmap,
    /// Shared reservations: offset → holder → count. Holders starting with `@` are pools
    /// (their reserve ranges).
    pub reservations: BTreeMap<u128, BTreeMap<String, u32>>,
    pub records: Records,
    /// Released addresses held back: offset → until (ms), and the same ordered by time.
    pub cooling: BTreeMap<u128, u64>,
    pub cooling_q: BTreeSet<(u64, u128)>,
    /// How many pools use this subnet.
    pub pools: u32,
    /// The containers' MACs recorded for allocations: offset → (sequence number, MAC).
    /// An entry stands only beside a record with that sequence number.
    pub macs: BTreeMap<u128, (u64, crate::conflict::Mac)>,
}

impl Subnet {
    pub fn new(net: IpNet) -> Subnet {
        let bits = u32::from(net.max_prefix_len() - net.prefix_len());
        let mut s = Subnet {
            net,
            base: addr_to_u128(net.network()),
            bits,
            bitmap: Bitmap::new(bits),
            reservations: BTreeMap::new(),
            records: Records::default(),
            cooling: BTreeMap::new(),
            cooling_q: BTreeSet::new(),
            pools: 0,
            macs: BTreeMap::new(),
        };
        for off in s.fixed_offsets() {
            s.bitmap.set(off);
        }
        s
    }

    pub fn size(&self) -> u128 {
        1u128 << self.bits
    }

    /// Offsets never handed out: the network and broadcast addresses of an IPv4 subnet larger
    /// than /31, and the subnet-router anycast address (offset 0) of an IPv6 subnet larger
    /// than /127.
    pub fn fixed_offsets(&self) -> Vec<u128> {
        match self.net {
            IpNet::V4(_) if self.bits >= 2 => vec![0, self.size() - 1],
            IpNet::V6(_) if self.bits >= 2 => vec![0],
            _ => vec![],
        }
    }

    pub fn fixed_reason(&self, off: u128) -> Option<&'static str> {
        if !self.fixed_offsets().contains(&off) {
            return None;
        }
        Some(match (self.net, off) {
            (IpNet::V4(_), 0) => "the network address",
            (IpNet::V4(_), _) => "the broadcast address",
            _ => "the subnet-router anycast address",
        })
    }

    /// The container MAC recorded for the allocation at `off`, if it has sequence `seq`.
    pub fn mac_of(&self, off: u128, seq: u64) -> Option<crate::conflict::Mac> {
        self.macs
            .get(&off)
            .filter(|(s, _)| *s == seq)
            .map(|(_, m)| *m)
    }

    pub fn offset(&self, a: IpAddr) -> Option<u128> {
        if a.is_ipv4() != matches!(self.net, IpNet::V4(_)) {
            return None;
        }
        let off = addr_to_u128(a).checked_sub(self.base)?;
        (off >> self.bits == 0).then_some(off)
    }

    pub fn addr(&self, off: u128) -> IpAddr {
        let v = self.base + off;
        match self.net {
            IpNet::V4(_) => IpAddr::V4((v as u32).into()),
            IpNet::V6(_) => IpAddr::V6(v.into()),
        }
    }

    /// The address with the subnet's prefix length, as Docker wants it back.
    pub fn addr_net(&self, off: u128) -> IpNet {
        // The prefix length comes from a valid IpNet, so this cannot fail.
        IpNet::new(self.addr(off), self.net.prefix_len()).unwrap_or(self.net)
    }

    /// Frees cooled-down addresses whose time has come.
    pub fn expire_cooling(&mut self, now_ms: u64) {
        while let Some(&(until, off)) = self.cooling_q.first() {
            if until > now_ms {
                break;
            }
            self.cooling_q.pop_first();
            self.cooling.remove(&off);
            self.bitmap.clear(off);
        }
    }

    /// After an allocation at `off` is released: free it, or hold it back for `cooldown_ms`.
    pub fn free_or_cool(&mut self, off: u128, now_ms: u64, cooldown_ms: u64) {
        if cooldown_ms > 0 {
            self.start_cooling(off, now_ms.saturating_add(cooldown_ms));
        } else {
            self.bitmap.clear(off);
        }
    }

    pub fn start_cooling(&mut self, off: u128, until: u64) {
        self.cooling.insert(off, until);
        self.cooling_q.insert((until, off));
    }

    pub fn stop_cooling(&mut self, off: u128) -> bool {
        match self.cooling.remove(&off) {
            Some(until) => {
                self.cooling_q.remove(&(until, off));
                true
            }
            None => false,
        }
    }

    /// Counts (reserved, allocated, cooling) inside `lo..=hi`.
    pub fn counts_in(&self, lo: u128, hi: u128) -> (u128, u64, u64) {
        let whole = lo == 0 && hi == self.size() - 1;
        let fixed = self
            .fixed_offsets()
            .into_iter()
            .filter(|o| (lo..=hi).contains(o))
            .count() as u128;
        let reserved = fixed + self.reservations.range(lo..=hi).count() as u128;
        let cooling = self.cooling.range(lo..=hi).count() as u64;
        let allocated = if whole {
            self.records.len()
        } else {
            self.records
                .iter_sorted()
                .iter()
                .filter(|(o, _)| (lo..=hi).contains(o))
                .count() as u64
        };
        (reserved, allocated, cooling)
    }

    /// Usage of the offsets `lo..=hi` (a pool's range).
    pub fn usage_in(&self, lo: u128, hi: u128) -> Usage {
        let (reserved, allocated, cooling) = self.counts_in(lo, hi);
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

    /// Checks that every set bit is exactly one of fixed, reserved, allocated or cooling.
    pub fn check(&self) -> Result<(), String> {
        self.bitmap.check()?;
        self.records.check()?;
        let fixed = self.fixed_offsets();
        let mut expect = fixed.len() as u128;
        for &off in &fixed {
            if !self.bitmap.get(off) {
                return Err(format!("{}: fixed offset {off} is not marked", self.net));
            }
        }
        for (&off, holders) in &self.reservations {
            if holders.is_empty() || holders.values().any(|&c| c == 0) {
                return Err(format!(
                    "{}: reservation at {off} has an empty holder",
                    self.net
                ));
            }
            if fixed.contains(&off)
                || self.records.get(off).is_some()
                || self.cooling.contains_key(&off)
            {
                return Err(format!(
                    "{}: offset {off} is reserved and something else",
                    self.net
                ));
            }
            if !self.bitmap.get(off) {
                return Err(format!("{}: reserved offset {off} is not marked", self.net));
            }
        }
        expect += self.reservations.len() as u128;
        for (off, _) in self.records.iter_sorted() {
            if off >= self.size()
                || !self.bitmap.get(off)
                || fixed.contains(&off)
                || self.cooling.contains_key(&off)
            {
                return Err(format!(
                    "{}: allocated offset {off} is unmarked, out of range or doubly used",
                    self.net
                ));
            }
        }
        expect += u128::from(self.records.len());
        if self.cooling.len() != self.cooling_q.len() {
            return Err(format!("{}: cooling queue out of step", self.net));
        }
        for (&off, &until) in &self.cooling {
            if !self.cooling_q.contains(&(until, off))
                || !self.bitmap.get(off)
                || fixed.contains(&off)
            {
                return Err(format!("{}: cooling offset {off} inconsistent", self.net));
            }
        }
        expect += self.cooling.len() as u128;
        if expect != self.bitmap.count() {
            return Err(format!(
                "{}: bitmap holds {} but states account for {expect}",
                self.net,
                self.bitmap.count()
            ));
        }
        Ok(())
    }
}

/// Every subnet of the state, by `(space, subnet)`; a pool reaches its subnet by slot.
pub(crate) type Subnets = Keyed<(String, IpNet), Subnet>;

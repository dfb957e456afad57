//! [`State::check_invariants`]: every promise the state keeps about itself, checked from
//! scratch (the tests and the fuzzers call it after every step; a decoded snapshot must pass
//! it before use).
//!
//! Owns the cross-structure checks (host table and index, pools and their subnets, subnets
//! that must not overlap, sequence numbers); each subnet checks its own bitmap, records and
//! cooling (`crate::subnet`). Never changes anything and never repairs: it reports the first
//! broken promise.

use std::collections::BTreeMap;

use ipnet::IpNet;

use super::pools::overlaps;
use super::State;

impl State {
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
        if self.usage != self.count_usage() {
            return Err("the addresses counted per host differ from those held".into());
        }
        self.check_lan()?;
        self.check_macs()
    }
}

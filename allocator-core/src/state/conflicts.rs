//! Conflicts on the LAN ([`crate::conflict`]): the records of addresses some device answered
//! for, the pools' probations, and the quarantine rule the allocations ask about.
//!
//! Owns [`Lan`] and the operations on it ([`State::report_conflict`],
//! [`State::clear_conflict`], [`State::set_probation`], [`State::conflicts`]). Never
//! allocates or frees an address: `addresses.rs` asks [`Lan::quarantine`] before it hands one
//! out and drops a record when it hands the address out after its probation or reserves it;
//! `pools.rs` drops what a removed pool or subnet leaves behind.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::State;
use crate::conflict::{
    Conflict, ConflictRecord, Conflicts, Detection, DuplicateAlarm, Mac, DEFAULT_PROBATION_MS,
    MAX_CONFLICTS, MAX_CONFLICTS_PER_HOST, MAX_PROBATION_MS,
};
use crate::error::AllocError;
use crate::id::{Owner, PoolId};
use crate::limits::check_name;

/// The conflict records (by address space, then address) and the probations pools set.
#[derive(Clone, Default)]
pub(crate) struct Lan {
    pub records: BTreeMap<String, BTreeMap<IpAddr, ConflictRecord>>,
    pub probation: BTreeMap<PoolId, u64>,
    /// Records in all.
    pub count: usize,
    /// Each host's last report of how it checks the LAN.
    pub hosts: BTreeMap<String, crate::conflict::HostLan>,
}

/// What [`State::report_conflict`] did ([`crate::Outcome::ConflictReported`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictReported {
    /// A free address: the end of its quarantine; `None` for a held one (a duplicate alarm).
    pub until_ms: Option<u64>,
    /// Who holds the address, for a duplicate alarm.
    pub holder: Option<Owner>,
    /// Reports of this conflict so far.
    pub count: u64,
}

impl From<ConflictReported> for crate::Outcome {
    fn from(r: ConflictReported) -> Self {
        crate::Outcome::ConflictReported {
            until_ms: r.until_ms,
            holder: r.holder,
            count: r.count,
        }
    }
}

impl Lan {
    /// Whether nothing of format 6 is kept (no record, no probation).
    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.probation.is_empty()
    }

    pub fn probation_of(&self, pool: &PoolId) -> u64 {
        self.probation
            .get(pool)
            .copied()
            .unwrap_or(DEFAULT_PROBATION_MS)
    }

    /// End of a record's probation: its last sighting plus its pool's probation.
    pub fn until(&self, rec: &ConflictRecord) -> u64 {
        rec.last_seen_ms
            .saturating_add(self.probation_of(&rec.pool))
    }

    pub fn get(&self, space: &str, addr: IpAddr) -> Option<&ConflictRecord> {
        self.records.get(space)?.get(&addr)
    }

    /// The record that holds `addr` of `space` in quarantine at `now`, and when it ends.
    pub fn quarantine(
        &self,
        space: &str,
        addr: IpAddr,
        now: u64,
    ) -> Option<(&ConflictRecord, u64)> {
        if self.count == 0 {
            return None;
        }
        let rec = self.get(space, addr)?;
        let until = self.until(rec);
        (now < until).then_some((rec, until))
    }

    /// Whether any record lies in `net` of `space` (the allocations' fast path skips the
    /// checks when none does).
    pub fn any_in(&self, space: &str, net: &IpNet) -> bool {
        self.count > 0
            && self
                .records
                .get(space)
                .is_some_and(|m| m.range(net.network()..=net.broadcast()).next().is_some())
    }

    pub fn remove(&mut self, space: &str, addr: IpAddr) -> bool {
        let Some(m) = self.records.get_mut(space) else {
            return false;
        };
        let gone = m.remove(&addr).is_some();
        if m.is_empty() {
            self.records.remove(space);
        }
        if gone {
            self.count -= 1;
        }
        gone
    }

    pub fn insert(&mut self, space: &str, rec: ConflictRecord) {
        if self
            .records
            .entry(space.to_string())
            .or_default()
            .insert(rec.addr, rec)
            .is_none()
        {
            self.count += 1;
        }
    }

    /// Drops the records of a subnet that is gone.
    pub fn drop_subnet(&mut self, space: &str, net: &IpNet) {
        let Some(m) = self.records.get_mut(space) else {
            return;
        };
        let gone: Vec<IpAddr> = m
            .range(net.network()..=net.broadcast())
            .map(|(a, _)| *a)
            .collect();
        for a in gone {
            m.remove(&a);
            self.count -= 1;
        }
        if m.is_empty() {
            self.records.remove(space);
        }
    }

    /// Every record, by space and address.
    pub fn iter(&self) -> impl Iterator<Item = &ConflictRecord> {
        self.records.values().flat_map(|m| m.values())
    }

    /// Records `host` is the latest reporter of.
    pub fn reported_by(&self, host: &str) -> usize {
        self.iter().filter(|r| r.host == host).count()
    }
}

impl State {
    /// A host saw a device with `mac` answer for `addr` of pool `id`
    /// ([`Op::ReportConflict`](crate::Op::ReportConflict)): a free (or cooling) address goes
    /// into quarantine until its pool's probation has passed since this report; an address a
    /// container holds gets a duplicate alarm. A repeated report updates the record (MAC, host,
    /// how, last seen) and counts it.
    ///
    /// Refused, changing nothing: an unknown pool, an address outside its subnet, a reserved
    /// address ([`AllocError::Reserved`]: gateways and hosts answer by design), a MAC that
    /// cannot be a device's own (all zeros, multicast, broadcast), a bad host name, a new
    /// record past [`MAX_CONFLICTS`], or one that would make `host` the reporter of more than
    /// [`MAX_CONFLICTS_PER_HOST`].
    ///
    /// ```
    /// use allocator_core::{AllocError, Detection, Mac, Order, Owner, PoolSpec, State};
    ///
    /// let mut state = State::default();
    /// let spec = PoolSpec::new("global").subnet("10.1.0.0/29".parse().unwrap());
    /// let pool = state.request_pool(0, &spec, "host-a").unwrap().pool;
    /// let printer = Mac([0x02, 0, 0, 0, 0, 0x99]);
    /// let addr = "10.1.0.1".parse().unwrap();
    /// let r = state.report_conflict(1_000, &pool, addr, printer, "host-a", Detection::Watch).unwrap();
    /// assert_eq!(r.until_ms, Some(1_000 + 24 * 3600 * 1000));
    /// // The next free address is handed out instead; asking for it is refused.
    /// let web = state.allocate(2_000, &pool, &Owner::new("host-a", "web"), Order::Lowest).unwrap();
    /// assert_eq!(web.addr.to_string(), "10.1.0.2/29");
    /// let asked = state.allocate_addr(2_000, &pool, &Owner::new("host-a", "db"), addr);
    /// assert!(matches!(asked, Err(AllocError::Quarantined { .. })));
    /// ```
    pub fn report_conflict(
        &mut self,
        now_ms: u64,
        id: &PoolId,
        addr: IpAddr,
        mac: Mac,
        host: &str,
        how: Detection,
    ) -> Result<ConflictReported, AllocError> {
        check_name("host", host, false)?;
        if !mac.is_unicast() {
            return Err(AllocError::Invalid(format!(
                "MAC {mac} cannot be the address of the device that answered (all zeros, multicast or broadcast)"
            )));
        }
        let sn = self.subnet_of(id)?;
        let off = sn.offset(addr).ok_or_else(|| AllocError::OutsidePool {
            addr,
            pool: id.clone(),
        })?;
        Self::refuse_fixed(sn, id, off)?;
        Self::refuse_shared(sn, id, off)?;
        let holder = Self::owner_of(&self.hosts, sn, off);
        let own = holder.as_ref().and_then(|(_, seq)| sn.mac_of(off, *seq));
        if own == Some(mac) {
            return Err(AllocError::Invalid(format!(
                "{mac} is the container's own MAC for {addr} (recorded with its allocation): that is no conflict"
            )));
        }
        let known = self.lan.get(&id.space, addr);
        if known.is_none_or(|r| r.host != host)
            && self.lan.reported_by(host) >= MAX_CONFLICTS_PER_HOST
        {
            return Err(AllocError::Invalid(format!(
                "host {host} already reported {MAX_CONFLICTS_PER_HOST} conflicts that stand, the most one host may; list them with `raftipam addr conflicts` and clear those that are resolved with `raftipam addr clear`"
            )));
        }
        let rec = match known {
            Some(old) => ConflictRecord {
                pool: id.clone(),
                addr,
                mac,
                host: host.to_string(),
                first_seen_ms: old.first_seen_ms,
                last_seen_ms: old.last_seen_ms.max(now_ms),
                how,
                count: old.count.saturating_add(1),
            },
            None => {
                if self.lan.count >= MAX_CONFLICTS {
                    return Err(AllocError::Invalid(format!(
                        "the cluster keeps at most {MAX_CONFLICTS} conflict records; list them with `raftipam addr conflicts` and clear those that are resolved with `raftipam addr clear`"
                    )));
                }
                ConflictRecord {
                    pool: id.clone(),
                    addr,
                    mac,
                    host: host.to_string(),
                    first_seen_ms: now_ms,
                    last_seen_ms: now_ms,
                    how,
                    count: 1,
                }
            }
        };
        let until = self.lan.until(&rec);
        let count = rec.count;
        self.lan.insert(&id.space, rec);
        Ok(match holder {
            Some((owner, _)) => ConflictReported {
                until_ms: None,
                holder: Some(owner),
                count,
            },
            None => ConflictReported {
                until_ms: Some(until),
                holder: None,
                count,
            },
        })
    }

    /// Operator: forgets the conflict record of `addr` ([`Op::ClearConflict`](crate::Op::ClearConflict)),
    /// a quarantine or a duplicate alarm; returns whether there was one. Refused for an
    /// unknown pool or an address outside its subnet.
    pub fn clear_conflict(
        &mut self,
        now_ms: u64,
        id: &PoolId,
        addr: IpAddr,
    ) -> Result<bool, AllocError> {
        let _ = now_ms; // no time enters clearing
        let sn = self.subnet_of(id)?;
        if sn.offset(addr).is_none() {
            return Err(AllocError::OutsidePool {
                addr,
                pool: id.clone(),
            });
        }
        Ok(self.lan.remove(&id.space, addr))
    }

    /// Operator: the pool's probation ([`Op::SetProbation`](crate::Op::SetProbation)): how long
    /// a free address stays in quarantine after a device was last seen answering for it (at
    /// most [`MAX_PROBATION_MS`]; 0: alarms only, no quarantine). Applies to records reported
    /// in this pool, at once. Returns the probation now.
    pub fn set_probation(
        &mut self,
        now_ms: u64,
        id: &PoolId,
        probation_ms: u64,
    ) -> Result<u64, AllocError> {
        let _ = now_ms; // no time enters the setting
        if !self.pools.contains_key(id) {
            return Err(AllocError::NoSuchPool(id.clone()));
        }
        if probation_ms > MAX_PROBATION_MS {
            return Err(AllocError::Invalid(format!(
                "a probation of {probation_ms} ms is longer than the {MAX_PROBATION_MS} ms (30 days) allowed"
            )));
        }
        self.lan.probation.insert(id.clone(), probation_ms);
        Ok(probation_ms)
    }

    /// The pool's probation (ms): what it set, or [`DEFAULT_PROBATION_MS`].
    pub fn probation(&self, id: &PoolId) -> Result<u64, AllocError> {
        if !self.pools.contains_key(id) {
            return Err(AllocError::NoSuchPool(id.clone()));
        }
        Ok(self.lan.probation_of(id))
    }

    /// Every conflict record: free addresses in (or past) quarantine, with the end of their
    /// probation, and held addresses a foreign device answers for (duplicate alarms), with
    /// their holder. [`Conflicts::counts`] counts them at a time.
    pub fn conflicts(&self) -> Conflicts {
        let mut out = Conflicts::default();
        for (space, m) in &self.lan.records {
            for rec in m.values() {
                let held = self
                    .subnets
                    .get(&(space.clone(), rec.pool.subnet))
                    .and_then(|sn| Self::owner_of(&self.hosts, sn, sn.offset(rec.addr)?));
                match held {
                    Some((holder, seq)) => out.alarms.push(DuplicateAlarm {
                        record: rec.clone(),
                        holder,
                        seq,
                    }),
                    None => out.quarantined.push(Conflict {
                        until_ms: self.lan.until(rec),
                        record: rec.clone(),
                    }),
                }
            }
        }
        out
    }

    fn subnet_of(&self, id: &PoolId) -> Result<&crate::subnet::Subnet, AllocError> {
        let pool = self
            .pools
            .get(id)
            .ok_or_else(|| AllocError::NoSuchPool(id.clone()))?;
        self.subnets
            .by_id(pool.sid)
            .ok_or_else(|| AllocError::NoSuchPool(id.clone()))
    }

    /// The conflict records' own invariants: each in an existing subnet of its space, on an
    /// address neither fixed nor reserved, counted, within bounds; probations of existing
    /// pools, within bounds.
    pub(super) fn check_lan(&self) -> Result<(), String> {
        let mut n = 0;
        for (space, m) in &self.lan.records {
            if m.is_empty() {
                return Err(format!("space {space:?} keeps an empty conflict table"));
            }
            for (addr, rec) in m {
                n += 1;
                let bad = |why: &str| format!("conflict record of {addr} in {space}: {why}");
                if rec.addr != *addr || rec.pool.space != *space {
                    return Err(bad("filed under another key"));
                }
                let sn = self
                    .subnets
                    .get(&(space.clone(), rec.pool.subnet))
                    .ok_or_else(|| bad("its subnet is gone"))?;
                let off = sn.offset(*addr).ok_or_else(|| bad("outside its subnet"))?;
                if sn.fixed_reason(off).is_some() || sn.reservations.contains_key(&off) {
                    return Err(bad("the address is reserved"));
                }
                if !rec.mac.is_unicast()
                    || rec.host.is_empty()
                    || rec.host.len() > crate::MAX_NAME_LEN
                    || rec.count == 0
                    || rec.first_seen_ms > rec.last_seen_ms
                {
                    return Err(bad("a field is not valid"));
                }
            }
        }
        if n != self.lan.count || n > MAX_CONFLICTS {
            return Err(format!(
                "{n} conflict records, counted {} (at most {MAX_CONFLICTS})",
                self.lan.count
            ));
        }
        let mut per_host: BTreeMap<&str, usize> = BTreeMap::new();
        for rec in self.lan.iter() {
            let c = per_host.entry(rec.host.as_str()).or_default();
            *c += 1;
            if *c > MAX_CONFLICTS_PER_HOST {
                return Err(format!(
                    "host {} reported more than {MAX_CONFLICTS_PER_HOST} conflict records",
                    rec.host
                ));
            }
        }
        for (id, ms) in &self.lan.probation {
            if !self.pools.contains_key(id) || *ms > MAX_PROBATION_MS {
                return Err(format!("the probation of pool {id} is not valid"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, Op, Order, Outcome, PoolSpec};

    const DAY: u64 = DEFAULT_PROBATION_MS;
    const M: Mac = Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);

    fn setup(net: &str) -> (State, PoolId) {
        let mut st = State::default();
        st.apply(&Command {
            at_ms: 0,
            op: Op::SetClusterVersion { version: 2 },
        })
        .expect("cluster version 2");
        let spec = PoolSpec::new("g").subnet(net.parse().expect("net"));
        let pool = st.request_pool(0, &spec, "h1").expect("pool").pool;
        (st, pool)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn owner(e: &str) -> Owner {
        Owner::new("h1", e)
    }

    #[test]
    fn next_free_lists_what_allocation_would_hand_out_without_taking_it() {
        let (mut st, pool) = setup("10.30.0.0/29");
        st.allocate(1, &pool, &owner("a"), Order::Lowest)
            .expect("first");
        st.report_conflict(1, &pool, ip("10.30.0.3"), M, "h2", Detection::Probe)
            .expect("report");
        let next = st.next_free(&pool, 3, 2).expect("next");
        assert_eq!(
            next,
            vec![ip("10.30.0.2"), ip("10.30.0.4"), ip("10.30.0.5")]
        );
        // Nothing was taken: allocation hands out what next_free said, in that order.
        for want in &next {
            let got = st
                .allocate(2, &pool, &owner(&want.to_string()), Order::PoolDefault)
                .expect("allocate");
            assert_eq!(got.addr.addr(), *want);
        }
        assert_eq!(
            st.next_free(&pool, 10, 2).expect("rest"),
            vec![ip("10.30.0.6")]
        );
    }

    #[test]
    fn a_quarantined_address_is_skipped_refused_and_handed_out_after_its_probation() {
        let (mut st, pool) = setup("10.0.0.0/29");
        let a1 = ip("10.0.0.1");
        let r = st
            .report_conflict(1_000, &pool, a1, M, "h1", Detection::Probe)
            .expect("reported");
        assert_eq!(
            (r.until_ms, r.holder, r.count),
            (Some(1_000 + DAY), None, 1)
        );
        let got = st
            .allocate(2_000, &pool, &owner("a"), Order::Lowest)
            .expect("allocated");
        assert_eq!(
            got.addr.addr(),
            ip("10.0.0.2"),
            "the quarantined .1 is skipped"
        );
        let e = st
            .allocate_addr(2_000, &pool, &owner("b"), a1)
            .expect_err("quarantined");
        assert_eq!(
            e,
            AllocError::Quarantined {
                addr: a1,
                pool: pool.clone(),
                mac: M,
                host: "h1".into(),
                until_ms: 1_000 + DAY
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("02:11:22:33:44:55") && msg.contains("raftipam addr clear"),
            "{msg}"
        );
        // A new report restarts the probation.
        let r = st
            .report_conflict(DAY, &pool, a1, M, "h2", Detection::Watch)
            .expect("again");
        assert_eq!((r.until_ms, r.count), (Some(2 * DAY), 2));
        assert!(st
            .allocate_addr(DAY + 1_000 + 1, &pool, &owner("b"), a1)
            .is_err());
        let c = st.conflicts();
        assert_eq!(c.quarantined.len(), 1);
        assert_eq!(c.quarantined[0].record.first_seen_ms, 1_000);
        assert_eq!(c.quarantined[0].record.host, "h2");
        assert_eq!(c.counts(2 * DAY - 1).quarantined, 1);
        assert_eq!(c.counts(2 * DAY).past_probation, 1);
        // After the probation: handed out again (lowest first), and the record goes.
        let got = st
            .allocate(2 * DAY, &pool, &owner("b"), Order::Lowest)
            .expect("allocated");
        assert_eq!(got.addr.addr(), a1);
        assert_eq!(st.conflicts(), Conflicts::default());
        st.check_invariants().expect("invariants");
    }

    #[test]
    fn a_report_on_a_held_address_is_a_duplicate_alarm_and_quarantines_it_once_released() {
        let (mut st, pool) = setup("10.0.0.0/29");
        let got = st
            .allocate(0, &pool, &owner("web"), Order::Lowest)
            .expect("allocated");
        let a = got.addr.addr();
        let r = st
            .report_conflict(5_000, &pool, a, M, "h2", Detection::Watch)
            .expect("reported");
        assert_eq!((r.until_ms, r.holder.clone()), (None, Some(owner("web"))));
        let c = st.conflicts();
        assert!(c.quarantined.is_empty());
        assert_eq!(c.alarms.len(), 1);
        assert_eq!(
            (c.alarms[0].holder.clone(), c.alarms[0].seq),
            (owner("web"), got.seq)
        );
        assert_eq!(c.alarms[0].record.mac, M);
        assert_eq!(c.counts(0).alarms, 1);
        // Released: the foreign device is still there, so the address is in quarantine.
        st.release(6_000, &pool, a, "h1").expect("released");
        let c = st.conflicts();
        assert_eq!(c.alarms.len(), 0);
        assert_eq!(c.quarantined[0].until_ms, 5_000 + DAY);
        let next = st
            .allocate(7_000, &pool, &owner("db"), Order::Lowest)
            .expect("allocated");
        assert_ne!(next.addr.addr(), a);
        st.check_invariants().expect("invariants");
    }

    #[test]
    fn reserving_clearing_and_removing_the_pool_drop_the_record() {
        let (mut st, pool) = setup("10.0.0.0/29");
        let (a, b) = (ip("10.0.0.3"), ip("10.0.0.4"));
        st.report_conflict(0, &pool, a, M, "h1", Detection::Sweep)
            .expect("a");
        st.report_conflict(0, &pool, b, M, "h1", Detection::Import)
            .expect("b");
        st.reserve(1, &pool, a, "ops").expect("reserved");
        assert_eq!(st.conflicts().quarantined.len(), 1, "a is permanent now");
        let e = st
            .report_conflict(2, &pool, a, M, "h1", Detection::Watch)
            .expect_err("reserved addresses answer by design");
        assert!(matches!(e, AllocError::Reserved { .. }), "{e}");
        assert_eq!(st.clear_conflict(3, &pool, b), Ok(true));
        assert_eq!(st.clear_conflict(3, &pool, b), Ok(false));
        assert!(
            st.allocate_addr(4, &pool, &owner("x"), b).is_ok(),
            "cleared"
        );
        st.release(5, &pool, b, "h1").expect("released");
        st.report_conflict(6, &pool, b, M, "h1", Detection::Watch)
            .expect("b again");
        st.set_probation(6, &pool, 5).expect("probation");
        st.force_delete_pool(7, &pool).expect("deleted");
        assert_eq!(st.lan.count, 0);
        assert!(
            st.lan.is_empty(),
            "records and the probation go with the pool"
        );
        st.check_invariants().expect("invariants");
    }

    #[test]
    fn bad_reports_are_refused_and_change_nothing() {
        let (mut st, pool) = setup("10.0.0.0/29");
        let before = st.to_snapshot();
        let cases: Vec<(IpAddr, Mac, &str)> = vec![
            (ip("10.0.0.0"), M, "h1"),              // the network address
            (ip("10.0.0.7"), M, "h1"),              // broadcast
            (ip("10.0.1.1"), M, "h1"),              // outside
            (ip("fd00::1"), M, "h1"),               // other family
            (ip("10.0.0.1"), Mac([0; 6]), "h1"),    // no MAC
            (ip("10.0.0.1"), Mac::BROADCAST, "h1"), // group MAC
            (ip("10.0.0.1"), M, ""),                // no host
        ];
        for (addr, mac, host) in cases {
            let r = st.report_conflict(1, &pool, addr, mac, host, Detection::Probe);
            assert!(r.is_err(), "{addr} {mac} {host:?}: {r:?}");
        }
        let other: PoolId = "g/10.9.0.0/24".parse().expect("id");
        assert!(matches!(
            st.report_conflict(1, &other, ip("10.9.0.1"), M, "h1", Detection::Probe),
            Err(AllocError::NoSuchPool(_))
        ));
        assert!(st.set_probation(1, &pool, MAX_PROBATION_MS + 1).is_err());
        assert!(st.set_probation(1, &other, 1).is_err());
        assert_eq!(st.to_snapshot(), before, "refusals change nothing");
    }

    #[test]
    fn the_quarantine_follows_the_pool_s_probation_and_holds_in_every_pool_of_the_subnet() {
        let (mut st, pool) = setup("10.0.0.0/29");
        let ranged = PoolSpec::new("g")
            .subnet("10.0.0.0/29".parse().expect("net"))
            .range("10.0.0.0/30".parse().expect("range"));
        let sub = st.request_pool(0, &ranged, "h1").expect("ranged").pool;
        assert_eq!(st.probation(&pool), Ok(DAY));
        assert_eq!(st.set_probation(0, &pool, 60_000), Ok(60_000));
        st.report_conflict(1_000, &pool, ip("10.0.0.1"), M, "h1", Detection::Probe)
            .expect("reported");
        // The ranged pool shares the subnet: it skips .1 too.
        let got = st
            .allocate(2_000, &sub, &owner("a"), Order::Lowest)
            .expect("allocated");
        assert_eq!(got.addr.addr(), ip("10.0.0.2"));
        let got = st
            .allocate(2_000, &sub, &owner("b"), Order::Lowest)
            .expect("allocated");
        assert_eq!(got.addr.addr(), ip("10.0.0.3"));
        let full = st.allocate(2_000, &sub, &owner("c"), Order::Lowest);
        assert!(matches!(full, Err(AllocError::PoolFull { .. })), "{full:?}");
        assert!(st
            .allocate(60_999, &sub, &owner("c"), Order::Lowest)
            .is_err());
        // The reporting pool's probation, 60 s: over at 61 s.
        let got = st
            .allocate(61_000, &sub, &owner("c"), Order::Lowest)
            .expect("after probation");
        assert_eq!(got.addr.addr(), ip("10.0.0.1"));
    }

    #[test]
    fn serial_order_skips_a_quarantined_address_and_wraps() {
        let (mut st, pool) = setup("10.0.0.0/29");
        for e in ["a", "b", "c", "d", "e"] {
            st.allocate(0, &pool, &owner(e), Order::Serial)
                .expect("allocated");
        }
        for a in ["10.0.0.1", "10.0.0.2"] {
            st.release(0, &pool, ip(a), "h1").expect("released");
        }
        st.report_conflict(0, &pool, ip("10.0.0.1"), M, "h1", Detection::Probe)
            .expect("reported");
        let got = st
            .allocate(1, &pool, &owner("f"), Order::Serial)
            .expect("allocated");
        assert_eq!(got.addr.addr(), ip("10.0.0.6"));
        let got = st
            .allocate(1, &pool, &owner("g"), Order::Serial)
            .expect("wrapped");
        assert_eq!(
            got.addr.addr(),
            ip("10.0.0.2"),
            "wraps past the quarantined .1"
        );
    }

    #[test]
    fn conflict_operations_wait_for_cluster_version_2() {
        let mut st = State::default();
        let spec = PoolSpec::new("g").subnet("10.0.0.0/29".parse().expect("net"));
        let pool = st.request_pool(0, &spec, "h1").expect("pool").pool;
        for op in [
            Op::ReportConflict {
                pool: pool.clone(),
                addr: ip("10.0.0.1"),
                mac: M,
                host: "h1".into(),
                how: Detection::Probe,
            },
            Op::ClearConflict {
                pool: pool.clone(),
                addr: ip("10.0.0.1"),
            },
            Op::SetProbation {
                pool: pool.clone(),
                probation_ms: 1,
            },
        ] {
            let r = st.apply(&Command { at_ms: 1, op });
            assert!(
                matches!(
                    r,
                    Err(AllocError::NeedsClusterVersion {
                        needs: 2,
                        current: 1,
                        ..
                    })
                ),
                "{r:?}"
            );
        }
        st.apply(&Command {
            at_ms: 1,
            op: Op::SetClusterVersion { version: 2 },
        })
        .expect("raised");
        let r = st.apply(&Command {
            at_ms: 1,
            op: Op::ReportConflict {
                pool,
                addr: ip("10.0.0.1"),
                mac: M,
                host: "h1".into(),
                how: Detection::Probe,
            },
        });
        assert_eq!(
            r,
            Ok(Outcome::ConflictReported {
                until_ms: Some(1 + DAY),
                holder: None,
                count: 1
            })
        );
    }

    #[test]
    fn conflicts_survive_a_snapshot_in_format_6_and_older_formats_stay_when_there_are_none() {
        let (mut st, pool) = setup("10.0.0.0/29");
        assert_eq!(crate::snapshot_format(&st.to_snapshot()), Some(5));
        st.allocate(0, &pool, &owner("web"), Order::Lowest)
            .expect("allocated");
        st.report_conflict(9, &pool, ip("10.0.0.1"), M, "h2", Detection::Watch)
            .expect("alarm");
        st.report_conflict(9, &pool, ip("10.0.0.5"), M, "h2", Detection::Probe)
            .expect("q");
        st.set_probation(9, &pool, 1_234).expect("probation");
        let bytes = st.to_snapshot();
        assert_eq!(crate::snapshot_format(&bytes), Some(6));
        let back = State::from_snapshot(&bytes).expect("loads");
        assert_eq!(back.conflicts(), st.conflicts());
        assert_eq!(back.probation(&pool), Ok(1_234));
        assert_eq!(back.to_snapshot(), bytes);
        st.clear_conflict(10, &pool, ip("10.0.0.1"))
            .expect("cleared");
        st.clear_conflict(10, &pool, ip("10.0.0.5"))
            .expect("cleared");
        assert_eq!(
            crate::snapshot_format(&st.to_snapshot()),
            Some(6),
            "the probation stays"
        );
    }

    #[test]
    fn one_host_reports_at_most_a_quarter_of_the_records() {
        let (mut st, pool) = setup("10.0.0.0/16");
        let a = |i: usize| IpAddr::V4((0x0a00_0001 + i as u32).into());
        let cap = MAX_CONFLICTS_PER_HOST;
        for i in 0..cap {
            st.report_conflict(0, &pool, a(i), M, "h1", Detection::Watch)
                .expect("fits");
        }
        let e = st
            .report_conflict(0, &pool, a(cap), M, "h1", Detection::Watch)
            .expect_err("h1 is at its bound");
        assert!(
            e.to_string().contains("host h1 already reported 4096"),
            "{e}"
        );
        // h1 still updates its own; h2 reports a new one, and takes over one of h1's.
        assert!(st
            .report_conflict(1, &pool, a(0), M, "h1", Detection::Probe)
            .is_ok());
        assert!(st
            .report_conflict(1, &pool, a(cap), M, "h2", Detection::Probe)
            .is_ok());
        assert!(st
            .report_conflict(1, &pool, a(1), M, "h2", Detection::Probe)
            .is_ok());
        // Now h1 reports one less: a new one fits again.
        assert!(st
            .report_conflict(2, &pool, a(cap + 1), M, "h1", Detection::Watch)
            .is_ok());
        st.check_invariants().expect("invariants");
    }

    #[test]
    fn the_number_of_records_is_bounded() {
        let (mut st, pool) = setup("10.0.0.0/16");
        let hosts = ["h1", "h2", "h3", "h4"];
        for i in 0..MAX_CONFLICTS as u32 {
            let a = IpAddr::V4((0x0a00_0001 + i).into());
            let host = hosts[i as usize % hosts.len()];
            st.report_conflict(0, &pool, a, M, host, Detection::Sweep)
                .expect("fits");
        }
        let a = IpAddr::V4((0x0a00_0001 + MAX_CONFLICTS as u32).into());
        let e = st
            .report_conflict(0, &pool, a, M, "h5", Detection::Sweep)
            .expect_err("full");
        let msg = e.to_string();
        assert!(msg.contains("at most 16384 conflict records"), "{msg}");
        assert!(msg.contains("raftipam addr clear"), "{msg}");
        // A known one still updates.
        let known = ip("10.0.0.1");
        assert_eq!(
            st.report_conflict(1, &pool, known, M, "h1", Detection::Sweep)
                .map(|r| r.count),
            Ok(2)
        );
        st.check_invariants().expect("invariants");
    }
}

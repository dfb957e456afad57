//! The hosts' reports kept in the state ([`crate::Op::Report`]) and the questions asked of
//! them: which reported leaks still stand (same host, same sequence number at the address).
//!
//! Owns `State::reports` and the leak questions the "pool full" error, the host list and the
//! subnet map ask. Never frees or changes an allocation: a report is a host's claim, and a
//! leak in it counts only while the allocation it names is unchanged.

use std::collections::BTreeMap;

use super::State;
use crate::error::{AllocError, LeakHint};
use crate::id::PoolId;
use crate::report::{HostReport, ReportedLeak, StoredReport};
use crate::subnet::Subnet;

impl State {
    /// Keeps `host`'s report of its last reconciliation pass, made at `now_ms`
    /// ([`crate::Op::Report`]), in place of its previous one. Changes no allocation. Refused
    /// (changing nothing) when it is out of bounds ([`crate::report::MAX_REPORTED`] entries,
    /// lists longer than their totals, over-long names).
    ///
    /// ```
    /// use allocator_core::{HostReport, State};
    ///
    /// let mut state = State::default();
    /// let mut report = HostReport::default();
    /// report.endpoints = 3;
    /// state.store_report(5_000, "host-a", &report).unwrap();
    /// assert_eq!(state.report("host-a").map(|r| r.at_ms), Some(5_000));
    /// ```
    pub fn store_report(
        &mut self,
        now_ms: u64,
        host: &str,
        report: &HostReport,
    ) -> Result<(), AllocError> {
        let stored = StoredReport {
            host: host.to_string(),
            at_ms: now_ms,
            report: report.clone(),
        };
        stored.validate()?;
        self.reports.insert(host.to_string(), stored);
        Ok(())
    }

    /// Every host's last report, by host name.
    pub fn reports(&self) -> Vec<StoredReport> {
        self.reports.values().cloned().collect()
    }

    /// The last report of `host`.
    pub fn report(&self, host: &str) -> Option<&StoredReport> {
        self.reports.get(host)
    }

    /// Whether a leak `host` reported still stands: the allocation at its address still has
    /// the reported host and sequence number.
    pub fn leak_stands(&self, host: &str, l: &ReportedLeak) -> bool {
        self.subnets
            .get(&(l.pool.space.clone(), l.pool.subnet))
            .and_then(|sn| Some((sn, sn.offset(l.addr)?)))
            .is_some_and(|(sn, off)| self.stands_at(sn, off, host, l))
    }

    /// Whether the allocation at offset `off` of `sn` is still the one `host` reported in `l`.
    pub(crate) fn stands_at(&self, sn: &Subnet, off: u128, host: &str, l: &ReportedLeak) -> bool {
        sn.records.get(off).is_some_and(|rec| {
            rec.seq == l.seq && self.hosts.get(rec.host as usize).map(String::as_str) == Some(host)
        })
    }

    /// The reported leaks that still stand in subnet `sn` of `pool`, between offsets `lo` and
    /// `hi`: `(offset, reporting host, report time)`, as many as the reports list.
    pub(crate) fn standing_leaks_in<'a: 'b, 'b>(
        &'a self,
        pool: &'b PoolId,
        sn: &'b Subnet,
        lo: u128,
        hi: u128,
    ) -> impl Iterator<Item = (u128, &'a str, u64)> + 'b {
        self.reports.values().flat_map(move |r| {
            r.report
                .leaked
                .iter()
                .filter(move |l| l.pool.space == pool.space && l.pool.subnet == pool.subnet)
                .filter_map(move |l| {
                    let off = sn.offset(l.addr)?;
                    ((lo..=hi).contains(&off) && self.stands_at(sn, off, &r.host, l)).then_some((
                        off,
                        r.host.as_str(),
                        r.at_ms,
                    ))
                })
        })
    }

    /// The reported leaks that still stand in `pool`'s range: the allocation at the address
    /// still has the reported host and sequence number.
    pub fn current_leaks(&self, pool: &PoolId) -> LeakHint {
        let Some(p) = self.pools.get(pool) else {
            return LeakHint::default();
        };
        let Some(sn) = self.subnets.get(&p.key) else {
            return LeakHint::default();
        };
        let mut by_host: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, host, _) in self.standing_leaks_in(pool, sn, p.lo, p.hi) {
            *by_host.entry(host).or_default() += 1;
        }
        LeakHint {
            by_host: by_host
                .into_iter()
                .map(|(h, n)| (h.to_string(), n))
                .collect(),
        }
    }
}

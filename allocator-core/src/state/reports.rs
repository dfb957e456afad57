//! The hosts' reports kept in the state ([`crate::Op::Report`]) and the questions asked of
//! them (which reported leaks still stand: same host, same sequence number at the address);
//! and the certificate revocations (by name and issue time, by serial) and join tokens.

use std::collections::BTreeMap;

use super::State;
use crate::command::Outcome;
use crate::error::{AllocError, LeakHint};
use crate::id::{canonical_serial, PoolId};
use crate::limits::MAX_REVOKED_SERIALS;
use crate::report::{HostReport, ReportedLeak, StoredReport};
use crate::subnet::Subnet;

impl State {
    pub(crate) fn store_report(
        &mut self,
        at_ms: u64,
        host: &str,
        report: &HostReport,
    ) -> Result<(), AllocError> {
        let stored = StoredReport {
            host: host.to_string(),
            at_ms,
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

    /// Revokes the certificates of `name` issued before `at_ms` (never moving an earlier
    /// revocation back); returns the time in force.
    pub(crate) fn revoke(&mut self, name: &str, at_ms: u64) -> u64 {
        let t = self.revoked.entry(name.to_string()).or_insert(at_ms);
        *t = (*t).max(at_ms);
        *t
    }

    /// Whether a certificate of `name` issued at `issued_ms` is revoked.
    pub fn is_revoked(&self, name: &str, issued_ms: u64) -> bool {
        self.revoked
            .get(name)
            .is_some_and(|before| issued_ms < *before)
    }

    pub(crate) fn revoke_serial(&mut self, now: u64, serial: &str) -> Result<Outcome, AllocError> {
        if canonical_serial(serial).as_deref() != Some(serial) {
            return Err(AllocError::Invalid(format!(
                "{serial:?} is not a serial number in its one spelling (lowercase hex, no separators or leading zeros)"
            )));
        }
        if self.revoked_serials.contains_key(serial) {
            return Ok(Outcome::SerialRevoked { new: false });
        }
        if self.revoked_serials.len() >= MAX_REVOKED_SERIALS {
            return Err(AllocError::Invalid(format!(
                "{MAX_REVOKED_SERIALS} certificate serials are revoked already: revoke by name (`raftipam cert revoke NAME`) or start a new CA"
            )));
        }
        self.revoked_serials.insert(serial.to_string(), now);
        Ok(Outcome::SerialRevoked { new: true })
    }

    /// Whether the certificate with this serial ([`canonical_serial`] form) was revoked.
    pub fn is_serial_revoked(&self, serial: &str) -> bool {
        self.revoked_serials.contains_key(serial)
    }

    /// Every revoked serial, with when it was revoked.
    pub fn revoked_serials(&self) -> Vec<(String, u64)> {
        self.revoked_serials
            .iter()
            .map(|(s, t)| (s.clone(), *t))
            .collect()
    }

    /// Every revoked name, with the time before which its certificates are revoked.
    pub fn revocations(&self) -> Vec<(String, u64)> {
        self.revoked.iter().map(|(n, t)| (n.clone(), *t)).collect()
    }

    pub(crate) fn add_join_token(
        &mut self,
        now: u64,
        hash: &str,
        expires_ms: u64,
    ) -> Result<Outcome, AllocError> {
        if hash.len() != 64
            || !hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(AllocError::Invalid(
                "a join token's hash is 64 lowercase hex digits (SHA-256)".into(),
            ));
        }
        self.join_tokens.retain(|_, until| *until > now);
        if self.join_tokens.len() >= MAX_JOIN_TOKENS && !self.join_tokens.contains_key(hash) {
            return Err(AllocError::Invalid(format!(
                "{MAX_JOIN_TOKENS} join tokens are valid already: revoke some first"
            )));
        }
        self.join_tokens.insert(hash.to_string(), expires_ms);
        Ok(Outcome::JoinTokenAdded {
            tokens: self.join_tokens.len() as u64,
        })
    }

    /// Whether a join token whose secret hashes to `hash` is accepted at `now_ms`.
    pub fn join_token_valid(&self, hash: &str, now_ms: u64) -> bool {
        self.join_tokens
            .get(hash)
            .is_some_and(|until| now_ms < *until)
    }

    /// Every join token kept (hash, expiry in ms), expired ones included until the next add.
    pub fn join_tokens(&self) -> Vec<(String, u64)> {
        self.join_tokens
            .iter()
            .map(|(h, t)| (h.clone(), *t))
            .collect()
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
}

/// Most join tokens valid at once.
pub const MAX_JOIN_TOKENS: usize = 1024;

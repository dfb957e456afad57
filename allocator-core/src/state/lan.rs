//! What the host agents tell the cluster about the LAN besides conflicts: the containers'
//! MACs ([`State::record_mac`]) and how each host can check each subnet
//! ([`State::report_lan_checks`]), and the reads a watching or sweeping agent makes
//! ([`State::on_lan`], [`State::lan_checks`], [`State::free_after`]).
//!
//! Owns the MAC entries of the subnets (`Subnet::macs`) and `Lan::hosts`. Never frees or
//! takes an address: a MAC entry goes with its allocation (`addresses.rs` and `hosts.rs`
//! drop it there), and stands only beside a record with its sequence number.

use std::net::IpAddr;

use super::State;
use crate::conflict::{AddressOnLan, HostLan, LanCheck, Mac, MAX_LAN_CHECKS};
use crate::error::AllocError;
use crate::id::PoolId;
use crate::limits::{check_name, MAX_NEXT_FREE};

impl State {
    /// Records `mac` as the MAC of the container that allocation `seq` of `host` at `addr`
    /// serves ([`Op::RecordMac`](crate::Op::RecordMac)). Returns whether it was recorded:
    /// `false` (nothing changes) when the address holds no allocation of `host` with that
    /// sequence number any more — released, or handed out again, before the record arrived.
    /// Refused: an unknown pool, an address outside its subnet, a MAC that cannot be a
    /// device's own, a bad host name.
    ///
    /// ```
    /// use allocator_core::{Mac, Order, Owner, PoolSpec, State};
    ///
    /// let mut state = State::default();
    /// let spec = PoolSpec::new("global").subnet("10.1.0.0/29".parse().unwrap());
    /// let pool = state.request_pool(0, &spec, "host-a").unwrap().pool;
    /// let web = state.allocate(1, &pool, &Owner::new("host-a", "web"), Order::Lowest).unwrap();
    /// let mac = Mac([0x02, 0x42, 0x0a, 0x01, 0, 2]);
    /// let addr = web.addr.addr();
    /// assert!(state.record_mac(2, &pool, addr, "host-a", web.seq, mac).unwrap());
    /// assert_eq!(state.on_lan(addr)[0].mac, Some(mac));
    /// assert!(!state.record_mac(2, &pool, addr, "host-b", web.seq, mac).unwrap(), "not b's");
    /// state.release(3, &pool, addr, "host-a").unwrap();
    /// assert_eq!(state.on_lan(addr)[0].mac, None, "gone with the allocation");
    /// ```
    pub fn record_mac(
        &mut self,
        now_ms: u64,
        id: &PoolId,
        addr: IpAddr,
        host: &str,
        seq: u64,
        mac: Mac,
    ) -> Result<bool, AllocError> {
        let _ = now_ms; // no time enters the record
        check_name("host", host, false)?;
        if !mac.is_unicast() {
            return Err(AllocError::Invalid(format!(
                "MAC {mac} cannot be a container's own (all zeros, multicast or broadcast)"
            )));
        }
        let hid = self.host_ids.get(host).copied();
        let (_, sn, off) = Self::locate(&mut self.pools, &mut self.subnets, id, Some(addr))?;
        let off = off.unwrap_or_default();
        let holds = sn
            .records
            .get(off)
            .is_some_and(|r| Some(r.host) == hid && r.seq == seq);
        if holds {
            sn.macs.insert(off, (seq, mac));
        }
        Ok(holds)
    }

    /// `host`'s report of how it checks each subnet on the LAN
    /// ([`Op::ReportLanChecks`](crate::Op::ReportLanChecks)); replaces its previous one.
    /// Refused: a bad host name, more than [`MAX_LAN_CHECKS`] entries, an entry out of
    /// bounds ([`LanCheck::validate`]), a subnet listed twice.
    pub fn report_lan_checks(
        &mut self,
        now_ms: u64,
        host: &str,
        checks: &[LanCheck],
    ) -> Result<(), AllocError> {
        check_name("host", host, false)?;
        validate_checks(checks).map_err(|e| AllocError::Invalid(format!("LAN checks: {e}")))?;
        let mut checks = checks.to_vec();
        checks.sort_by_key(|c| c.subnet);
        self.lan.hosts.insert(
            host.to_string(),
            HostLan {
                host: host.to_string(),
                at_ms: now_ms,
                checks,
            },
        );
        Ok(())
    }

    /// Every host's last report of how it checks the LAN, by host name.
    pub fn lan_checks(&self) -> Vec<HostLan> {
        self.lan.hosts.values().cloned().collect()
    }

    /// What the cluster knows of `addr`, one entry per subnet of any address space that
    /// holds it: who holds it and the MAC recorded for them, whether it answers by design
    /// (reserved), its conflict record. What a watching host needs to tell a container from
    /// a foreign device.
    pub fn on_lan(&self, addr: IpAddr) -> Vec<AddressOnLan> {
        let mut out = Vec::new();
        for ((space, net), sn) in &self.subnets {
            let Some(off) = sn.offset(addr) else { continue };
            let Some(pool) = self.listed_pool(space, net) else {
                continue;
            };
            let holder = Self::owner_of(&self.hosts, sn, off);
            let mac = holder.as_ref().and_then(|(_, seq)| sn.mac_of(off, *seq));
            out.push(AddressOnLan {
                pool,
                holder,
                mac,
                reserved: sn.fixed_reason(off).is_some() || sn.reservations.contains_key(&off),
                conflict: self.lan.get(space, addr).cloned(),
            });
        }
        out
    }

    /// Up to `n` (at most [`MAX_NEXT_FREE`]) free addresses of pool `id`'s range after
    /// `after` (from the range's start without one), in address order, quarantined ones
    /// included: what a background sweep probes next, one page at a time. Fewer come back at
    /// the range's end (the sweep then starts again from the start).
    pub fn free_after(
        &self,
        id: &PoolId,
        after: Option<IpAddr>,
        n: usize,
    ) -> Result<Vec<IpAddr>, AllocError> {
        let (p, sn) = self.map_target(id)?;
        let n = n.min(MAX_NEXT_FREE);
        let mut from = match after {
            None => p.lo,
            Some(a) => match sn.offset(a) {
                Some(off) => off.saturating_add(1).max(p.lo),
                None => {
                    return Err(AllocError::OutsidePool {
                        addr: a,
                        pool: id.clone(),
                    })
                }
            },
        };
        let mut out = Vec::new();
        while out.len() < n && from <= p.hi {
            let Some(off) = sn.bitmap.first_clear_in(from, p.hi) else {
                break;
            };
            out.push(sn.addr(off));
            if off >= p.hi {
                break;
            }
            from = off + 1;
        }
        Ok(out)
    }

    /// The MAC entries' invariants: each beside a record with its sequence number.
    pub(super) fn check_macs(&self) -> Result<(), String> {
        for ((space, net), sn) in &self.subnets {
            for (off, (seq, mac)) in &sn.macs {
                let ok = sn.records.get(*off).is_some_and(|r| r.seq == *seq);
                if !ok || !mac.is_unicast() {
                    return Err(format!(
                        "the MAC recorded for offset {off} of {net} in {space} has no allocation with its sequence number"
                    ));
                }
            }
        }
        for (host, h) in &self.lan.hosts {
            if &h.host != host {
                return Err(format!(
                    "the LAN checks of {host} are filed under another key"
                ));
            }
            validate_checks(&h.checks).map_err(|e| format!("LAN checks of {host}: {e}"))?;
        }
        Ok(())
    }
}

/// The bounds of one host's LAN-check report.
pub(crate) fn validate_checks(checks: &[LanCheck]) -> Result<(), String> {
    if checks.len() > MAX_LAN_CHECKS {
        return Err(format!(
            "{} subnets listed, at most {MAX_LAN_CHECKS} are kept",
            checks.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in checks {
        c.validate()?;
        if !seen.insert(c.subnet) {
            return Err(format!("subnet {} is listed twice", c.subnet));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conflict::Detection;
    use crate::{Command, Op, Order, Outcome, Owner, PoolSpec};

    const C: Mac = Mac([0x02, 0x42, 0, 0, 0, 7]);
    const PRINTER: Mac = Mac([0x02, 0x99, 0, 0, 0, 1]);

    fn setup() -> (State, PoolId) {
        let mut st = State::default();
        st.apply(&Command {
            at_ms: 0,
            op: Op::SetClusterVersion { version: 2 },
        })
        .expect("version 2");
        let spec = PoolSpec::new("local").subnet("10.7.0.0/28".parse().expect("net"));
        let pool = st.request_pool(0, &spec, "a").expect("pool").pool;
        (st, pool)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_mac_stands_only_beside_its_own_allocation_and_survives_a_snapshot() {
        let (mut st, pool) = setup();
        let web = st
            .allocate(1, &pool, &Owner::new("a", "web"), Order::Lowest)
            .expect("web");
        let addr = web.addr.addr();
        assert!(!st
            .record_mac(2, &pool, addr, "a", web.seq + 1, C)
            .expect("stale seq"));
        assert_eq!(st.on_lan(addr)[0].mac, None);
        let out = st
            .apply(&Command {
                at_ms: 2,
                op: Op::RecordMac {
                    pool: pool.clone(),
                    addr,
                    host: "a".into(),
                    seq: web.seq,
                    mac: C,
                },
            })
            .expect("recorded");
        assert_eq!(out, Outcome::MacRecorded { recorded: true });
        assert!(st
            .record_mac(2, &pool, addr, "a", web.seq, Mac::BROADCAST)
            .is_err());
        let back = State::from_snapshot(&st.to_snapshot()).expect("snapshot");
        assert_eq!(back.on_lan(addr), st.on_lan(addr));
        assert_eq!(back.on_lan(addr)[0].mac, Some(C));
        back.check_invariants().expect("invariants");
        // Forgetting the host drops the MAC with the allocation; a new holder has none.
        st.request_pool(3, &PoolSpec::new("local").subnet(pool.subnet), "b")
            .expect("b holds the pool too");
        st.forget_host(3, "a").expect("forget");
        let db = st
            .allocate(4, &pool, &Owner::new("b", "db"), Order::Lowest)
            .expect("db");
        assert_eq!(db.addr.addr(), addr);
        assert_eq!(st.on_lan(addr)[0].mac, None);
        st.check_invariants().expect("invariants");
    }

    #[test]
    fn the_container_s_own_mac_is_no_conflict_and_another_is_a_duplicate_alarm() {
        let (mut st, pool) = setup();
        let web = st
            .allocate(1, &pool, &Owner::new("a", "web"), Order::Lowest)
            .expect("web");
        let addr = web.addr.addr();
        st.record_mac(2, &pool, addr, "a", web.seq, C).expect("mac");
        let own = st.report_conflict(3, &pool, addr, C, "b", Detection::Watch);
        assert!(
            matches!(&own, Err(AllocError::Invalid(m)) if m.contains("the container's own")),
            "{own:?}"
        );
        let r = st
            .report_conflict(3, &pool, addr, PRINTER, "b", Detection::Watch)
            .expect("alarm");
        assert_eq!(r.holder, Some(Owner::new("a", "web")));
        let on = &st.on_lan(addr)[0];
        assert_eq!(
            (on.mac, on.conflict.as_ref().map(|c| c.mac)),
            (Some(C), Some(PRINTER))
        );
        assert!(!on.reserved);
        assert!(st.on_lan(ip("10.7.0.0"))[0].reserved, "the network address");
        assert!(st.on_lan(ip("10.8.0.1")).is_empty());
    }

    #[test]
    fn lan_check_reports_replace_the_last_are_bounded_and_go_with_the_host() {
        let (mut st, _) = setup();
        let on = LanCheck {
            subnet: "10.7.0.0/28".parse().expect("net"),
            interface: "br0".into(),
            off: None,
        };
        st.report_lan_checks(5, "a", std::slice::from_ref(&on))
            .expect("report");
        let off = LanCheck {
            off: Some("checks need CAP_NET_RAW".into()),
            ..on.clone()
        };
        st.report_lan_checks(6, "a", std::slice::from_ref(&off))
            .expect("again");
        assert_eq!(
            st.lan_checks(),
            vec![HostLan {
                host: "a".into(),
                at_ms: 6,
                checks: vec![off.clone()]
            }]
        );
        for bad in [
            vec![on.clone(), on.clone()],
            vec![LanCheck {
                interface: "br0\u{1b}[2J".into(),
                ..on.clone()
            }],
            vec![LanCheck {
                subnet: "10.7.0.1/28".parse().expect("net"),
                ..on.clone()
            }],
            vec![LanCheck {
                off: Some("x".repeat(600)),
                ..on.clone()
            }],
        ] {
            assert!(st.report_lan_checks(7, "a", &bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            st.lan_checks()[0].at_ms,
            6,
            "a refused report changes nothing"
        );
        let back = State::from_snapshot(&st.to_snapshot()).expect("snapshot");
        assert_eq!(back.lan_checks(), st.lan_checks());
        st.forget_host(8, "a").expect("forget");
        assert!(st.lan_checks().is_empty());
    }

    #[test]
    fn free_after_pages_through_the_range_in_address_order() {
        let (mut st, pool) = setup();
        for e in ["x", "y"] {
            st.allocate(1, &pool, &Owner::new("a", e), Order::Lowest)
                .expect("alloc");
        }
        // .1 and .2 are taken, .0 and .15 (network, broadcast) fixed.
        let first = st.free_after(&pool, None, 3).expect("page");
        assert_eq!(first, vec![ip("10.7.0.3"), ip("10.7.0.4"), ip("10.7.0.5")]);
        let next = st
            .free_after(&pool, first.last().copied(), 64)
            .expect("page");
        assert_eq!(next.first(), Some(&ip("10.7.0.6")));
        assert_eq!(next.last(), Some(&ip("10.7.0.14")));
        assert!(st
            .free_after(&pool, Some(ip("10.7.0.14")), 4)
            .expect("end")
            .is_empty());
        assert!(st.free_after(&pool, Some(ip("10.9.0.1")), 4).is_err());
    }
}

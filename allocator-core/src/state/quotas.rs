//! Per-host quotas ([`crate::Quotas`]): the cluster's and hosts' own, what each host holds,
//! and the refusals ([`AllocError::QuotaExceeded`]) of requests beyond them.
//!
//! Owns [`QuotaTable`] and the count of addresses each host holds (`State::usage`, derived:
//! never persisted, recounted after a decode and after any change that drops many at once).
//! Quotas bind from cluster version 2 on (every member then applies them alike) and never
//! bind an operator's names ([`crate::OPERATOR_NAMES`]). Never grants or frees an address.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use ipnet::IpNet;

use super::State;
use crate::command::Outcome;
use crate::error::AllocError;
use crate::limits::{check_name, MAX_HOSTS};
use crate::quota::{is_operator_name, HostQuota, QuotaReport, Quotas};

/// The quotas an operator set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct QuotaTable {
    /// The cluster's (`None`: [`Quotas::BUILT_IN`]).
    pub(crate) cluster: Option<Quotas>,
    /// Hosts' own.
    pub(crate) hosts: BTreeMap<String, Quotas>,
}

impl State {
    /// The quotas that bind `host` (whether or not they are enforced yet).
    pub fn quotas_of(&self, host: &str) -> Quotas {
        self.quotas
            .hosts
            .get(host)
            .or(self.quotas.cluster.as_ref())
            .copied()
            .unwrap_or(Quotas::BUILT_IN)
    }

    /// The quotas binding `host` now: `None` before cluster version 2 and for operators.
    fn binding(&self, host: &str) -> Option<Quotas> {
        (self.cluster_version >= 2 && !is_operator_name(host)).then(|| self.quotas_of(host))
    }

    /// Pools `host` holds.
    fn pools_held(&self, host: &str) -> u64 {
        self.pools
            .values()
            .filter(|p| p.holders.contains_key(host))
            .count() as u64
    }

    /// Addresses `host` holds (allocations and reserved addresses).
    pub(super) fn addresses_held(&self, host: &str) -> u64 {
        self.usage.get(host).copied().unwrap_or(0)
    }

    /// Refuses `host` creating a pool of `subnet` beyond its prefix quota, or holding one
    /// pool more than its pool quota (`joins_new`: it holds no reference to the pool yet).
    pub(super) fn check_pool_quota(
        &self,
        host: &str,
        subnet: &IpNet,
        creates: bool,
        joins_new: bool,
    ) -> Result<(), AllocError> {
        let Some(q) = self.binding(host) else {
            return Ok(());
        };
        if creates {
            let (quota, limit) = match subnet {
                IpNet::V4(_) => ("max-prefix-v4", q.max_prefix_v4),
                IpNet::V6(_) => ("max-prefix-v6", q.max_prefix_v6),
            };
            if let Some(limit) = limit.filter(|l| subnet.prefix_len() < *l) {
                return Err(AllocError::QuotaExceeded {
                    quota: quota.into(),
                    host: host.into(),
                    used: subnet.prefix_len().into(),
                    limit: limit.into(),
                });
            }
        }
        if joins_new {
            if let Some(limit) = q.pools {
                let used = self.pools_held(host);
                if used >= u64::from(limit) {
                    return Err(AllocError::QuotaExceeded {
                        quota: "pools".into(),
                        host: host.into(),
                        used,
                        limit: limit.into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Refuses `host` taking one address more than its address quota.
    pub(super) fn check_address_quota(&self, host: &str) -> Result<(), AllocError> {
        let Some(limit) = self.binding(host).and_then(|q| q.addresses) else {
            return Ok(());
        };
        let used = self.addresses_held(host);
        if used >= limit {
            return Err(AllocError::QuotaExceeded {
                quota: "addresses".into(),
                host: host.into(),
                used,
                limit,
            });
        }
        Ok(())
    }

    /// Counts `host` holding one address more (`up`) or fewer.
    pub(super) fn count_address(usage: &mut HashMap<String, u64>, host: &str, up: bool) {
        // A pool's own reserve ranges are held by `@POOL`, never a host.
        if host.starts_with('@') {
            return;
        }
        if up {
            *usage.entry_ref(host).or_insert(0) += 1;
        } else if let Some(n) = usage.get_mut(host) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                usage.remove(host);
            }
        }
    }

    /// The addresses each host holds, counted from scratch.
    pub(super) fn count_usage(&self) -> HashMap<String, u64> {
        let mut usage: HashMap<String, u64> = HashMap::new();
        for sn in self.subnets.values() {
            for (_, rec) in sn.records.iter_sorted() {
                if let Some(h) = self.hosts.get(rec.host as usize) {
                    Self::count_address(&mut usage, h, true);
                }
            }
            for holders in sn.reservations.values() {
                for h in holders.keys() {
                    Self::count_address(&mut usage, h, true);
                }
            }
        }
        usage
    }

    /// Recounts the addresses each host holds (after a change that drops many at once).
    pub(crate) fn recount_usage(&mut self) {
        self.usage = self.count_usage();
    }

    /// [`crate::Op::SetQuotas`].
    pub(super) fn set_quotas(
        &mut self,
        host: Option<&str>,
        quotas: Option<Quotas>,
    ) -> Result<Outcome, AllocError> {
        if let Some(q) = &quotas {
            q.check().map_err(AllocError::Invalid)?;
        }
        match host {
            None => self.quotas.cluster = quotas,
            Some(h) => {
                check_name("host", h, false)?;
                match quotas {
                    None => {
                        self.quotas.hosts.remove(h);
                    }
                    Some(q) => {
                        if self.quotas.hosts.len() >= MAX_HOSTS
                            && !self.quotas.hosts.contains_key(h)
                        {
                            return Err(AllocError::Invalid(format!(
                                "{MAX_HOSTS} hosts have their own quotas already: drop some (`raftipam host quota reset --host NAME`)"
                            )));
                        }
                        self.quotas.hosts.insert(h.to_string(), q);
                    }
                }
            }
        }
        Ok(Outcome::QuotasSet {
            quotas: match host {
                Some(h) => self.quotas_of(h),
                None => self.quotas.cluster.unwrap_or(Quotas::BUILT_IN),
            },
        })
    }

    /// Every host's quotas and use ([`QuotaReport`]).
    pub fn quota_report(&self) -> QuotaReport {
        let mut names: Vec<String> = self.hosts().into_iter().map(|h| h.name).collect();
        names.extend(self.quotas.hosts.keys().cloned());
        names.sort();
        names.dedup();
        let hosts = names
            .into_iter()
            .filter(|h| !h.starts_with('@') && !is_operator_name(h))
            .map(|host| HostQuota {
                pools: self.pools_held(&host),
                addresses: self.addresses_held(&host),
                quotas: self.quotas_of(&host),
                own: self.quotas.hosts.contains_key(&host),
                host,
            })
            .collect();
        QuotaReport {
            enforced: self.cluster_version >= 2,
            cluster: self.quotas.cluster.unwrap_or(Quotas::BUILT_IN),
            cluster_set: self.quotas.cluster.is_some(),
            hosts,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{AllocError, Command, Op, Order, Owner, PoolSpec, Quotas, State};

    const T: u64 = 1_700_000_000_000;

    fn v2() -> State {
        let mut st = State::default();
        run(&mut st, Op::SetClusterVersion { version: 2 }).expect("v2");
        st
    }

    fn run(st: &mut State, op: Op) -> Result<crate::Outcome, AllocError> {
        let out = st.apply(&Command { at_ms: T, op });
        st.check_invariants().expect("invariants");
        out
    }

    fn request(st: &mut State, subnet: &str, holder: &str) -> Result<crate::Outcome, AllocError> {
        let spec = PoolSpec::new("global").subnet(subnet.parse().expect("net"));
        run(
            st,
            Op::RequestPool {
                spec,
                holder: holder.into(),
            },
        )
    }

    fn quota(e: Result<crate::Outcome, AllocError>) -> (String, String, u64, u64) {
        match e {
            Err(AllocError::QuotaExceeded {
                quota,
                host,
                used,
                limit,
            }) => (quota, host, used, limit),
            other => panic!("expected a quota refusal, got {other:?}"),
        }
    }

    /// The attack of a stolen host key: a /8 of IPv4 or IPv6, or every default subnet.
    /// Fails on commit 4b9aa6a (release 0.1.0), which has no quota.
    #[test]
    fn a_host_cannot_create_a_pool_larger_than_its_prefix_quota() {
        let mut st = v2();
        for (net, q, used) in [
            ("172.0.0.0/8", "max-prefix-v4", 8),
            ("192.0.0.0/8", "max-prefix-v4", 8),
            ("10.0.0.0/15", "max-prefix-v4", 15),
            ("fd00::/8", "max-prefix-v6", 8),
            ("fd00::/47", "max-prefix-v6", 47),
        ] {
            let got = quota(request(&mut st, net, "h1"));
            assert_eq!(
                got,
                (
                    q.to_string(),
                    "h1".to_string(),
                    used,
                    if q == "max-prefix-v4" { 16 } else { 48 }
                )
            );
        }
        assert!(st.pools().is_empty(), "a refused request changes nothing");
        // At the limit: granted; an operator (`cli`): anything.
        request(&mut st, "10.0.0.0/16", "h1").expect("a /16");
        request(&mut st, "fd00::/48", "h1").expect("a /48");
        request(&mut st, "172.0.0.0/8", "cli").expect("an operator's /8");
        // Joining a pool an operator made is no creation: no prefix quota.
        request(&mut st, "172.0.0.0/8", "h2").expect("h2 joins the operator's /8");
        // A default subnet larger than the quota is refused too.
        let spec = PoolSpec::new("local").prefix_len(12);
        let e = run(
            &mut st,
            Op::RequestPool {
                spec,
                holder: "h1".into(),
            },
        );
        assert_eq!(quota(e).0, "max-prefix-v4");
        let msg = AllocError::QuotaExceeded {
            quota: "max-prefix-v4".into(),
            host: "h1".into(),
            used: 8,
            limit: 16,
        }
        .to_string();
        assert!(
            msg.contains("h1") && msg.contains("/8") && msg.contains("/16"),
            "{msg}"
        );
        assert!(
            msg.contains("raftipam host quota set --host h1 --max-prefix-v4"),
            "{msg}"
        );
    }

    /// A host that takes every default subnet: stopped at its pool quota. Fails on commit
    /// 4b9aa6a (release 0.1.0).
    #[test]
    fn a_host_cannot_hold_more_pools_than_its_quota() {
        let mut st = v2();
        run(
            &mut st,
            Op::SetQuotas {
                host: None,
                quotas: Some(Quotas::new(Some(3), None, Some(16), Some(48))),
            },
        )
        .expect("set");
        for i in 0..3 {
            request(&mut st, &format!("10.{i}.0.0/24"), "h1").expect("within quota");
        }
        // Requesting one it holds again is no new pool.
        request(&mut st, "10.0.0.0/24", "h1").expect("again");
        let e = quota(request(&mut st, "10.9.0.0/24", "h1"));
        assert_eq!(e, ("pools".into(), "h1".into(), 3, 3));
        let e = run(
            &mut st,
            Op::RequestPool {
                spec: PoolSpec::new("local"),
                holder: "h1".into(),
            },
        );
        assert_eq!(quota(e).0, "pools");
        // Other hosts are not bound by h1's use; joining an existing pool counts too.
        request(&mut st, "10.9.0.0/24", "h2").expect("h2 has its own quota");
        assert_eq!(quota(request(&mut st, "10.9.0.0/24", "h1")).0, "pools");
        // A host's own quota replaces the cluster's.
        run(
            &mut st,
            Op::SetQuotas {
                host: Some("h1".into()),
                quotas: Some(Quotas::new(Some(4), None, None, None)),
            },
        )
        .expect("own");
        request(&mut st, "10.9.0.0/24", "h1").expect("raised");
        assert_eq!(st.quotas_of("h2").pools, Some(3));
        // Releasing a pool frees room.
        run(
            &mut st,
            Op::SetQuotas {
                host: Some("h1".into()),
                quotas: None,
            },
        )
        .expect("back to the cluster's");
        let pool = "global/10.1.0.0/24".parse().expect("id");
        run(
            &mut st,
            Op::ReleasePool {
                pool,
                holder: "h1".into(),
            },
        )
        .expect("release");
        assert_eq!(quota(request(&mut st, "10.7.0.0/24", "h1")).0, "pools");
        let report = st.quota_report();
        let h1 = report.hosts.iter().find(|h| h.host == "h1").expect("h1");
        assert_eq!((h1.pools, h1.own), (3, false));
    }

    /// A host that drains a pool others use, by allocations or reservations: stopped at its
    /// address quota. Fails on commit 4b9aa6a (release 0.1.0).
    #[test]
    fn a_host_cannot_hold_more_addresses_than_its_quota() {
        let mut st = v2();
        run(
            &mut st,
            Op::SetQuotas {
                host: None,
                quotas: Some(Quotas::new(None, Some(5), None, None)),
            },
        )
        .expect("set");
        let pool = match request(&mut st, "10.1.0.0/24", "h1").expect("pool") {
            crate::Outcome::Pool { pool, .. } => pool,
            o => panic!("{o:?}"),
        };
        request(&mut st, "10.1.0.0/24", "h2").expect("h2 joins");
        let alloc = |st: &mut State, host: &str, ep: &str| {
            run(
                st,
                Op::Allocate {
                    pool: pool.clone(),
                    addr: None,
                    owner: Owner::new(host, ep),
                    order: Order::Lowest,
                },
            )
        };
        let reserve = |st: &mut State, host: &str, last: u8| {
            run(
                st,
                Op::Reserve {
                    pool: pool.clone(),
                    addr: format!("10.1.0.{last}").parse().expect("addr"),
                    holder: host.into(),
                },
            )
        };
        for i in 0..3 {
            alloc(&mut st, "h1", &format!("e{i}")).expect("within quota");
        }
        reserve(&mut st, "h1", 200).expect("reserve");
        reserve(&mut st, "h1", 200).expect("again: the same address");
        reserve(&mut st, "h2", 201).expect("h2's");
        reserve(&mut st, "h1", 201).expect("a share of h2's");
        assert_eq!(st.addresses_held("h1"), 5);
        assert_eq!(
            quota(alloc(&mut st, "h1", "e9")),
            ("addresses".into(), "h1".into(), 5, 5)
        );
        assert_eq!(quota(reserve(&mut st, "h1", 202)).0, "addresses");
        // A repeat of a granted allocation is no new address.
        alloc(&mut st, "h1", "e0").expect("idempotent repeat");
        // h2 is not drained by h1, and an operator is not bound.
        alloc(&mut st, "h2", "db").expect("h2");
        for i in 0..10 {
            alloc(&mut st, "cli", &format!("op{i}")).expect("operator");
        }
        // Releasing frees room.
        let first = "10.1.0.1".parse().expect("addr");
        run(
            &mut st,
            Op::Release {
                pool: pool.clone(),
                addr: first,
                host: "h1".into(),
                force: false,
            },
        )
        .expect("release");
        alloc(&mut st, "h1", "e9").expect("room again");
        // The count survives a snapshot, a forced delete and a forgotten host.
        let back = State::from_snapshot(&st.to_snapshot()).expect("decode");
        back.check_invariants().expect("invariants");
        assert_eq!(back.addresses_held("h1"), 5);
        assert_eq!(back.quotas_of("h1").addresses, Some(5));
        run(&mut st, Op::ForgetHost { host: "h1".into() }).expect("forget");
        assert_eq!(st.addresses_held("h1"), 0);
        run(
            &mut st,
            Op::DeletePool {
                pool: pool.clone(),
                force: true,
            },
        )
        .expect("delete");
        assert_eq!(st.addresses_held("h2"), 0);
    }

    /// Before cluster version 2, members of 0.1 apply without quotas: so does this build.
    #[test]
    fn quotas_bind_from_cluster_version_2_and_are_set_only_then() {
        let mut st = State::default();
        request(&mut st, "10.0.0.0/8", "h1").expect("version 1: no quota");
        let e = run(
            &mut st,
            Op::SetQuotas {
                host: None,
                quotas: Some(Quotas::NONE),
            },
        );
        assert!(
            matches!(e, Err(AllocError::NeedsClusterVersion { .. })),
            "{e:?}"
        );
        let mut st = v2();
        let e = run(
            &mut st,
            Op::SetQuotas {
                host: None,
                quotas: Some(Quotas::new(None, None, Some(33), None)),
            },
        );
        assert!(
            matches!(e, Err(AllocError::Invalid(ref m)) if m.contains("at most 32")),
            "{e:?}"
        );
        run(
            &mut st,
            Op::SetQuotas {
                host: None,
                quotas: Some(Quotas::NONE),
            },
        )
        .expect("no limit");
        request(&mut st, "10.0.0.0/8", "h1").expect("no limit");
        let r = st.quota_report();
        assert!(r.enforced && r.cluster_set && r.cluster == Quotas::NONE);
    }

    /// Random programs of requests, reservations, allocations, releases, deletes, forgotten
    /// hosts and snapshot round trips under tight quotas: no host ever holds more than its
    /// quotas allow or has a pool larger than its prefix quota created for it, the count of
    /// addresses per host always equals a count from scratch, and a refusal changes nothing.
    mod model {
        use super::*;
        use proptest::prelude::*;

        const NETS: &[&str] = &[
            "10.0.0.0/8",
            "10.64.0.0/24",
            "10.65.0.0/24",
            "10.66.0.0/29",
            "10.67.0.0/23",
            "fd00::/32",
            "fd01::/120",
        ];
        const HOSTS: &[&str] = &["h1", "h2", "cli"];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn no_host_ever_exceeds_its_quotas(
                steps in proptest::collection::vec((0u8..8, any::<u8>(), any::<u8>(), any::<u8>()), 1..160)
            ) {
                let mut st = v2();
                let limits = Quotas::new(Some(3), Some(6), Some(23), Some(64));
                run(&mut st, Op::SetQuotas { host: None, quotas: Some(limits) }).expect("set");
                let mut created_by: Vec<(crate::PoolId, String)> = Vec::new();
                for (op, a, b, c) in steps {
                    let host = HOSTS[b as usize % HOSTS.len()];
                    let net: ipnet::IpNet = NETS[a as usize % NETS.len()].parse().expect("net");
                    let pool = crate::PoolId::new("global", net, None);
                    let addr = |k: u8| -> std::net::IpAddr {
                        match net.network() {
                            std::net::IpAddr::V4(x) => std::net::IpAddr::V4((u32::from(x) + u32::from(k % 16)).into()),
                            std::net::IpAddr::V6(x) => std::net::IpAddr::V6((u128::from(x) + u128::from(k % 16)).into()),
                        }
                    };
                    let op = match op {
                        0 | 1 => Op::RequestPool { spec: PoolSpec::new("global").subnet(net), holder: host.into() },
                        2 => Op::ReleasePool { pool, holder: host.into() },
                        3 => Op::Reserve { pool, addr: addr(c), holder: host.into() },
                        4 => Op::Allocate {
                            pool,
                            addr: (c % 2 == 0).then(|| addr(c)),
                            owner: Owner::new(host, format!("e{}", c % 8)),
                            order: Order::Lowest,
                        },
                        5 => Op::Release { pool, addr: addr(c), host: host.into(), force: c % 5 == 0 },
                        6 => if c % 4 == 0 {
                            Op::ForgetHost { host: host.into() }
                        } else {
                            Op::DeletePool { pool, force: c % 2 == 0 }
                        },
                        _ => {
                            st = State::from_snapshot(&st.to_snapshot()).expect("round trip");
                            continue;
                        }
                    };
                    let before = st.to_snapshot();
                    let r = st.apply(&Command { at_ms: T, op: op.clone() });
                    st.check_invariants().map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                    match &r {
                        Err(_) => prop_assert_eq!(st.to_snapshot(), before, "a refusal changed the state"),
                        Ok(crate::Outcome::Pool { pool, created: true }) => {
                            if let Op::RequestPool { holder, .. } = &op {
                                created_by.push((pool.clone(), holder.clone()));
                            }
                        }
                        Ok(_) => {}
                    }
                    for h in ["h1", "h2"] {
                        prop_assert!(st.pools_held(h) <= 3, "{} holds {} pools", h, st.pools_held(h));
                        prop_assert!(st.addresses_held(h) <= 6, "{} holds {} addresses", h, st.addresses_held(h));
                    }
                }
                for (pool, holder) in created_by {
                    if holder != "cli" {
                        let min = if pool.subnet.addr().is_ipv4() { 23 } else { 64 };
                        prop_assert!(pool.subnet.prefix_len() >= min, "{} created {}", holder, pool);
                    }
                }
            }
        }
    }
}

//! The local part of `raftipam check --repair`: from one comparison of this host, what to
//! release and what to claim, and the claims themselves (releases go through
//! [`release_leak`](super::reconcile::release_leak), the same path as the background pass).
//!
//! A repair acts on this host only, and never on an address in use: it releases a leak only if
//! the allocation is old enough (an endpoint being created has its address a moment before
//! dockerd lists it) and still has the sequence number that was seen, and claims for this host
//! only addresses the cluster holds for nobody.

use std::time::Duration;

use allocator_core::{Op, Order, Outcome, Owner, PoolInfo};

use super::compare::{Leak, Missing, Report};
use crate::backend::Inventory;

/// What a repair of one host will do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan<'a> {
    /// Leaks allocated at least the minimum age ago: released if unchanged.
    pub release: Vec<&'a Leak>,
    /// Leaks allocated less than the minimum age ago: left alone.
    pub too_young: Vec<&'a Leak>,
    /// Endpoints whose address the cluster holds for nobody: claimed for this host.
    pub claim: Vec<&'a Missing>,
}

/// The repair of `report` at `now_s` (seconds since the Unix epoch), leaving leaks younger
/// than `min_age` alone. Endpoints whose address another owner holds are not claimed: that is
/// a conflict for an operator, not something to overwrite.
pub fn plan(report: &Report, now_s: u64, min_age: Duration) -> Plan<'_> {
    let old_enough =
        |l: &Leak| now_s.saturating_sub(u64::from(l.allocation.at_s)) >= min_age.as_secs();
    let (release, too_young) = report.leaked.iter().partition(|l| old_enough(l));
    Plan {
        release,
        too_young,
        claim: report
            .missing
            .iter()
            .filter(|m| m.held_by.is_none())
            .collect(),
    }
}

/// Claims `m`'s address for `host` in the pool of `pools` whose subnet holds it (the endpoint's
/// container as the owner's endpoint). The error says why not, in words for the operator.
pub async fn claim<B: Inventory>(
    cluster: &B,
    pools: &[PoolInfo],
    host: &str,
    m: &Missing,
) -> Result<(), String> {
    let e = &m.endpoint;
    let Some(p) = pools.iter().find(|p| p.id.subnet.contains(&e.addr)) else {
        return Err(format!(
            "no pool holds {} (network {}): create the network again or release it in dockerd",
            e.addr, e.network
        ));
    };
    let op = Op::Allocate {
        pool: p.id.clone(),
        addr: Some(e.addr),
        owner: Owner::new(host, e.container.clone()),
        order: Order::PoolDefault,
    };
    match cluster.apply(op).await {
        Ok(Outcome::Allocated { .. }) => Ok(()),
        Ok(o) => Err(format!("claiming {}: {o:?}", e.addr)),
        Err(err) => Err(format!("claiming {}: {err}", e.addr)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::compare::compare_lists;
    use crate::agent::compare::tests::{alloc, ep};
    use crate::{Backend, MemoryBackend};
    use allocator_core::PoolSpec;

    #[test]
    fn young_leaks_wait_and_only_unheld_addresses_are_claimed() {
        let mut young = alloc("a", "new", "10.0.0.4", 3);
        young.1.at_s = 1_000;
        let cluster = vec![
            alloc("a", "old", "10.0.0.3", 2),
            young,
            alloc("b", "db", "10.0.0.5", 4),
        ];
        let eps = vec![ep("c1", "10.0.0.5"), ep("c2", "10.0.0.9")];
        let report = compare_lists("a", "raftipam", &cluster, &eps);
        let p = plan(&report, 1_030, Duration::from_secs(60));
        let addrs = |v: &[&Leak]| {
            v.iter()
                .map(|l| l.allocation.addr.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(addrs(&p.release), ["10.0.0.3"]);
        assert_eq!(addrs(&p.too_young), ["10.0.0.4"]);
        let claims: Vec<String> = p
            .claim
            .iter()
            .map(|m| m.endpoint.addr.to_string())
            .collect();
        assert_eq!(claims, ["10.0.0.9"], "10.0.0.5 is b's: not claimed");
    }

    #[tokio::test]
    async fn a_claim_takes_the_address_in_its_pool_or_says_why_not() {
        let b = MemoryBackend::default();
        let spec = {
            let mut spec = PoolSpec::default();
            spec.space = "global".into();
            spec.subnet = "10.0.0.0/24".parse().ok();
            spec
        };
        b.apply(Op::RequestPool {
            spec,
            holder: "a".into(),
        })
        .await
        .expect("pool");
        let pools = Inventory::pools(&b).await.expect("pools");
        let report = compare_lists(
            "a",
            "raftipam",
            &[],
            &[ep("c2", "10.0.0.9"), ep("x", "10.1.0.1")],
        );
        claim(&b, &pools, "a", &report.missing[0])
            .await
            .expect("claimed");
        let held = Inventory::host_allocations(&b, "a").await.expect("read");
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].1.addr.to_string(), "10.0.0.9");
        assert_eq!(held[0].1.owner, Owner::new("a", "c2"));
        let err = claim(&b, &pools, "a", &report.missing[1])
            .await
            .expect_err("no pool");
        assert!(err.contains("no pool holds 10.1.0.1"), "{err}");
    }
}

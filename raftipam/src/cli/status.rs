//! `raftipam status`: the whole picture on one screen — is the cluster healthy (a leader,
//! every member answering and caught up), how full every pool is, and how every Docker host
//! is doing (heartbeat age, addresses, leaks from its last report).

use std::time::Duration;

use allocator_core::{human_count, HostInfo, PoolInfo};
use raft_node::{now_ms, Client, Consistency, NodeStatus, Query, QueryReply};
use serde::Serialize;

use super::host::{fmt_age, hosts};
use super::{term_safe, Ctx};

/// A heartbeat older than this is stale (3 of the shim's 30 s intervals).
const STALE: Duration = Duration::from_secs(90);
/// How long a member may take to say how it is.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(2);

/// One member of the cluster as seen from here.
#[derive(Serialize)]
struct MemberRow {
    id: u64,
    addr: String,
    voter: bool,
    /// Its own status, if it answered.
    status: Option<NodeStatus>,
    /// Its release, if it answered (`0.1.x` for a release that does not say).
    version: Option<String>,
    /// Why it did not answer.
    error: Option<String>,
}

#[derive(Serialize)]
struct PoolRow {
    #[serde(flatten)]
    info: PoolInfo,
    /// Share of the addresses that are not free (allocated, reserved, cooling), in percent.
    used_percent: f64,
}

#[derive(Serialize)]
struct HostRow {
    #[serde(flatten)]
    info: HostInfo,
    last_seen_age_s: Option<u64>,
    /// Its shim sent heartbeats, but none for longer than 90 s. (A host that never sent one
    /// holds addresses given through the CLI or API, without a shim.)
    stale: bool,
}

#[derive(Serialize)]
struct Status {
    /// "healthy", "degraded" (a member down or behind) or "unavailable" (no leader).
    health: &'static str,
    leader: Option<u64>,
    term: u64,
    members: Vec<MemberRow>,
    pools: Vec<PoolRow>,
    hosts: Vec<HostRow>,
    /// The cluster version (what every member can apply), as the first answer says.
    cluster_version: Option<u32>,
    /// Addresses a device on the LAN raftipam does not know answers for.
    conflicts: ConflictRow,
    /// Hosts that cannot check some subnet's addresses on the LAN, and why (their agents'
    /// last reports).
    lan_checks_off: Vec<LanOffRow>,
    /// Problems found, one sentence each, with what to do.
    problems: Vec<String>,
}

#[derive(Serialize)]
struct LanOffRow {
    host: String,
    subnet: ipnet::IpNet,
    why: String,
}

#[derive(Serialize, Default)]
struct ConflictRow {
    /// Free addresses no host hands out now.
    quarantined: u64,
    /// Free addresses whose probation is over.
    past_probation: u64,
    /// Addresses a container holds that another device answers for too.
    alarms: u64,
}

/// The first endpoint's answer to "how are you", or why none answered.
async fn any_status(client: &Client) -> anyhow::Result<NodeStatus> {
    let mut last = None;
    for i in 0..client.endpoints().len() {
        match client.node_status(i).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(format!("{}: {e}", client.endpoints()[i])),
        }
    }
    anyhow::bail!(
        "no node answered ({}): is `raftipam node` (or `raftipam up`) running there?",
        last.unwrap_or_default()
    )
}

fn percent_used(p: &PoolInfo) -> f64 {
    if p.usage.size == 0 {
        return 0.0;
    }
    100.0 * (p.usage.size - p.usage.free) as f64 / p.usage.size as f64
}

/// A 20-character bar for a share in percent.
fn bar(pct: f64) -> String {
    let full = ((pct / 5.0).round() as usize).min(20);
    format!("[{}{}]", "#".repeat(full), ".".repeat(20 - full))
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let first = any_status(&client).await?;
    let mut problems = Vec::new();
    let cfg = ctx.client_config(MEMBER_TIMEOUT)?;
    let mut members = Vec::new();
    let mut cluster_version = None;
    for m in &first.members {
        let answer = match Client::with_config([m.addr.as_str()], cfg.clone()) {
            Ok(c) => c.node_info(0).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let (status, version, error) = match answer {
            Ok(i) => {
                cluster_version = cluster_version.max(Some(i.cluster_version));
                (Some(i.status), Some(i.binary), None)
            }
            Err(e) => (None, None, Some(e)),
        };
        members.push(MemberRow {
            id: m.id,
            addr: m.addr.clone(),
            voter: m.voter,
            status,
            version,
            error,
        });
    }
    let leader = members
        .iter()
        .filter_map(|m| m.status.as_ref())
        .find_map(|s| s.leader)
        .or(first.leader);
    let term = members
        .iter()
        .filter_map(|m| m.status.as_ref().map(|s| s.term))
        .max()
        .unwrap_or(first.term);
    if first.members.is_empty() {
        problems.push(format!(
            "node {} at {} is in no cluster yet: run `raftipam cluster init --endpoints {}`",
            first.id, first.addr, first.addr
        ));
    } else if leader.is_none() {
        problems.push(
            "no leader: fewer than a majority of the voters answer each other; start the nodes that are down".into(),
        );
    }
    let newest = members
        .iter()
        .filter_map(|m| m.status.as_ref().and_then(|s| s.applied))
        .max();
    for m in &members {
        match (&m.status, &m.error) {
            (_, Some(e)) => problems.push(format!(
                "member {} at {} does not answer ({e}); is its `raftipam node` running?",
                m.id, m.addr
            )),
            (Some(s), None)
                if newest.unwrap_or(0).saturating_sub(s.applied.unwrap_or(0)) > 1000 =>
            {
                problems.push(format!(
                    "member {} at {} is {} entries behind; it catches up by itself",
                    m.id,
                    m.addr,
                    newest.unwrap_or(0) - s.applied.unwrap_or(0)
                ))
            }
            _ => {}
        }
    }
    let mut versions: Vec<&str> = members
        .iter()
        .filter_map(|m| m.version.as_deref())
        .collect();
    versions.sort_unstable();
    versions.dedup();
    if versions.len() > 1 {
        problems.push(format!(
            "the members run different releases ({}): finish the rolling upgrade, then run `raftipam cluster upgrade` (or roll the upgraded ones back before that)",
            versions.iter().map(|v| term_safe(v)).collect::<Vec<_>>().join(", ")
        ));
    }
    if versions.len() == 1
        && members.iter().all(|m| m.version.is_some())
        && cluster_version.is_some_and(|v| v < allocator_core::cluster::CLUSTER_VERSION)
        && versions[0] == env!("CARGO_PKG_VERSION")
    {
        problems.push(format!(
            "every member runs raftipam {} but the cluster version is still {}: what this release brought is refused until `raftipam cluster upgrade` (after which the members can no longer be rolled back)",
            versions[0],
            cluster_version.unwrap_or(1)
        ));
    }
    // Pools and hosts need a leader (linearizable reads); without one, say so and go on.
    let mut conflicts = ConflictRow::default();
    let mut lan_checks_off = Vec::new();
    let (pools, host_list) = if leader.is_some() {
        for h in super::host::lan_checks(&client).await {
            for c in h.checks {
                if let Some(why) = c.off {
                    lan_checks_off.push(LanOffRow {
                        host: h.host.clone(),
                        subnet: c.subnet,
                        why,
                    });
                }
            }
        }
        let pools = client.pools().await;
        let host_list = hosts(&client).await;
        // A cluster of an older release has no such query: nothing to count then.
        if let Ok(QueryReply::Conflicts(c)) = client
            .query(Query::Conflicts, Consistency::Linearizable)
            .await
        {
            let n = c.counts(now_ms());
            conflicts = ConflictRow {
                quarantined: n.quarantined,
                past_probation: n.past_probation,
                alarms: n.alarms,
            };
            for a in &c.alarms {
                problems.push(format!(
                    "{} in {} is held by {} and answered on the LAN by {} too (seen by {}): find that device by its MAC and give it another address, or move the container",
                    a.record.addr, a.record.pool, a.holder, a.record.mac, a.record.host
                ));
            }
        }
        if let Err(e) = &pools {
            problems.push(format!("the pools could not be read: {e}"));
        }
        if let Err(e) = &host_list {
            problems.push(format!("the hosts could not be read: {e}"));
        }
        (pools.unwrap_or_default(), host_list.unwrap_or_default())
    } else {
        (Vec::new(), Vec::new())
    };
    let now = now_ms();
    let pools: Vec<PoolRow> = pools
        .into_iter()
        .map(|info| PoolRow {
            used_percent: percent_used(&info),
            info,
        })
        .collect();
    for p in &pools {
        if p.used_percent >= 90.0 {
            problems.push(format!(
                "pool {} is {:.0}% used; free addresses: {}",
                p.info.id,
                p.used_percent,
                human_count(p.info.usage.free)
            ));
        }
    }
    let hosts: Vec<HostRow> = host_list
        .into_iter()
        .map(|info| {
            let age = info.last_seen_ms.map(|t| now.saturating_sub(t) / 1000);
            HostRow {
                stale: age.is_some_and(|a| a > STALE.as_secs()),
                last_seen_age_s: age,
                info,
            }
        })
        .collect();
    for h in &hosts {
        if h.info.leaked.is_some_and(|n| n > 0) {
            problems.push(format!(
                "host {} reports {} leaked addresses: `raftipam check --repair` on that host",
                h.info.name,
                h.info.leaked.unwrap_or(0)
            ));
        }
    }
    let health = if leader.is_none() {
        "unavailable"
    } else if members.iter().any(|m| m.error.is_some()) {
        "degraded"
    } else {
        "healthy"
    };
    let st = Status {
        health,
        leader,
        term,
        members,
        cluster_version,
        pools,
        hosts,
        conflicts,
        lan_checks_off,
        problems,
    };
    ctx.print(&st, print_status)?;
    if st.health == "unavailable" {
        anyhow::bail!("the cluster has no leader");
    }
    Ok(())
}

fn print_status(s: &Status) {
    let o = |v: Option<u64>| v.map_or("-".to_string(), |x| x.to_string());
    outln!(
        "cluster: {} — leader {}, term {}, {} voters, {} learners, cluster version {}",
        s.health.to_uppercase(),
        o(s.leader),
        s.term,
        s.members.iter().filter(|m| m.voter).count(),
        s.members.iter().filter(|m| !m.voter).count(),
        s.cluster_version.map_or("-".to_string(), |v| v.to_string())
    );
    for m in &s.members {
        let role = if m.voter { "voter" } else { "learner" };
        match &m.status {
            Some(st) => outln!(
                "  {:>3} {:<22} {:<7} {:<9} applied {:>8}  raftipam {}",
                m.id,
                m.addr,
                role,
                st.state,
                o(st.applied),
                term_safe(m.version.as_deref().unwrap_or("?"))
            ),
            None => outln!("  {:>3} {:<22} {:<7} DOWN", m.id, m.addr, role),
        }
    }
    outln!();
    if s.pools.is_empty() {
        outln!("pools: none");
    } else {
        outln!("pools:");
        for p in &s.pools {
            let holders: Vec<String> = p.info.holders.keys().map(|h| term_safe(h)).collect();
            outln!(
                "  {:<36} {} {:>5.1}%  {:>7} allocated  {:>12} free  {}",
                p.info.id.to_string(),
                bar(p.used_percent),
                p.used_percent,
                p.info.usage.allocated,
                human_count(p.info.usage.free),
                holders.join(",")
            );
        }
    }
    outln!();
    if s.hosts.is_empty() {
        outln!("hosts: none");
    } else {
        outln!("hosts:");
        for h in &s.hosts {
            outln!(
                "  {:<24} {:<10} seen {:<18}{} {:>6} addresses  leaked {}",
                term_safe(&h.info.name),
                term_safe(h.info.version.as_deref().unwrap_or("-")),
                fmt_age(h.last_seen_age_s.map(Duration::from_secs)),
                if h.stale { " STALE" } else { "      " },
                h.info.allocations,
                h.info.leaked.map_or("-".to_string(), |n| n.to_string())
            );
        }
    }
    let c = &s.conflicts;
    if c.quarantined + c.past_probation + c.alarms > 0 {
        outln!();
        outln!(
            "LAN conflicts: {} quarantined, {} past probation, {} duplicate alarms (`raftipam addr conflicts`)",
            c.quarantined,
            c.past_probation,
            c.alarms
        );
    }
    if !s.lan_checks_off.is_empty() {
        outln!();
        outln!("LAN checks off (addresses handed out there unchecked):");
        for o in &s.lan_checks_off {
            outln!(
                "  - host {} for {}: {}",
                term_safe(&o.host),
                o.subnet,
                term_safe(&o.why)
            );
        }
    }
    if !s.problems.is_empty() {
        outln!();
        outln!("problems:");
        for p in &s.problems {
            outln!("  - {}", term_safe(p));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bar;

    #[test]
    fn the_bar_fills_with_the_share() {
        assert_eq!(bar(0.0), format!("[{}]", ".".repeat(20)));
        assert_eq!(bar(50.0), format!("[{}{}]", "#".repeat(10), ".".repeat(10)));
        assert_eq!(bar(100.0), format!("[{}]", "#".repeat(20)));
        assert_eq!(bar(250.0), format!("[{}]", "#".repeat(20)));
    }
}

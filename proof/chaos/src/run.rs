//! One chaos run from start to verdict: the network and the nodes up, a cluster formed, the
//! workload and the fault schedule at once, then everything healed, the cluster given a bound
//! to converge, the final state read from every replica, and the history checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocator_core::{Op, PoolId, PoolSpec};
use serde::Serialize;

use super::cluster::{client_config, ChaosNode, ChaosTls, NodeSettings};
use super::net::Net;
use super::schedule::{Fault, FaultKind, Plan, Target};
use super::workload::{self, Recorder, Workload};
use raft_node::api::{AdminCommand, Query, QueryReply};
use raft_node::Client;
use raftipam_history::{self as check, FinalState};

/// Settings of one run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The seed: schedule and workload follow from it.
    pub seed: u64,
    /// 3 or 5.
    pub nodes: usize,
    /// Length of the workload.
    pub duration: Duration,
    /// Concurrent client processes.
    pub clients: usize,
    /// Where the history, schedule, logs and data go.
    pub dir: PathBuf,
    /// How the nodes run.
    pub node: NodeSettings,
    /// Fault kinds to draw from.
    pub kinds: Vec<FaultKind>,
    /// Kill every node at once, once.
    pub kill_all: bool,
    /// A schedule to replay instead of drawing one.
    pub schedule: Option<Vec<Fault>>,
    /// Successful operations required before the first fault.
    pub min_ok_before_fault: usize,
}

/// The verdict of a run.
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// Its seed.
    pub seed: u64,
    /// Where its files are.
    pub dir: PathBuf,
    /// Faults applied, by kind.
    pub faults: BTreeMap<String, usize>,
    /// Operations completed: ok, fail, info.
    pub ok: usize,
    /// Refused operations.
    pub fail: usize,
    /// Unknown outcomes.
    pub info: usize,
    /// What the checker and the run's own checks found (empty: the run passed).
    pub anomalies: Vec<String>,
    /// The checker's summary, for people.
    pub checked: String,
    /// Seconds the cluster took to converge after the last heal.
    pub converged_s: Option<f64>,
    /// Chunks the proxies held back (delayed, "lost", slowed) during link faults.
    pub held_chunks: u64,
    /// Conflict reports acknowledged, and how many of them put a free address in quarantine.
    pub conflict_reports: usize,
    /// Acknowledged conflict reports that put an address in quarantine.
    pub quarantines: usize,
    /// What rogue node certificates sent, and what became of it.
    pub rogue: crate::rogue::Tally,
}

impl RunReport {
    /// True when nothing was found.
    pub fn passed(&self) -> bool {
        self.anomalies.is_empty()
    }
}

const ELECTION_MS: u64 = 2_000;

/// Spare nodes a run keeps for `Grow` faults (beyond `RunConfig::nodes`).
pub const SPARES: usize = 2;

fn client(
    endpoints: &[String],
    timeout: Duration,
    tls: Option<&ChaosTls>,
) -> anyhow::Result<Client> {
    Ok(Client::with_config(
        endpoints.iter(),
        client_config(tls, timeout, Duration::from_secs(1)),
    )?)
}

/// `call`, given up after `limit`: a setup step whose node a crash point took down fails
/// fast, so the node is restarted and the step tried again (the client itself would wait up
/// to 70 s for an admin call, longer than the bound on forming the cluster).
async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, raft_node::ClientError>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(limit)
        )),
    }
}

/// The leader as the running nodes see it (the highest term's claim).
async fn leader(nodes: &[ChaosNode]) -> Option<u64> {
    let mut best: Option<(u64, u64)> = None;
    for n in nodes.iter().filter(|n| n.running()) {
        if let Some(s) = n.status(Duration::from_millis(500)).await {
            if let Some(l) = s.leader {
                if best.is_none_or(|(t, _)| s.term > t) {
                    best = Some((s.term, l));
                }
            }
        }
    }
    best.map(|(_, l)| l)
}

/// The 1-based places (in `nodes`) of the cluster's members.
fn members(nodes: &[ChaosNode]) -> Vec<usize> {
    (1..=nodes.len()).filter(|i| nodes[i - 1].member).collect()
}

/// The 1-based node indices a fault's target names now (members only).
async fn resolve(t: Target, nodes: &[ChaosNode], seed: u64) -> Vec<usize> {
    let all = members(nodes);
    let lead = leader(nodes)
        .await
        .and_then(|l| nodes.iter().position(|x| x.id == l && x.member))
        .map_or(all[0], |p| p + 1);
    let others: Vec<usize> = all.iter().copied().filter(|i| *i != lead).collect();
    let pick = (seed as usize) % others.len().max(1);
    let minority = all.len().div_ceil(2) - 1; // 1 of 3, 2 of 5
    match t {
        Target::Leader => vec![lead],
        Target::Follower => vec![others[pick]],
        Target::All => all,
        Target::MinorityWithLeader => {
            let mut v = vec![lead];
            v.extend(others.iter().cycle().skip(pick).take(minority - 1));
            v
        }
        Target::MinorityWithoutLeader => others
            .iter()
            .cycle()
            .skip(pick)
            .take(minority)
            .copied()
            .collect(),
    }
}

/// Applies one fault (undone by [`heal`]); a rejoin returns the nodes to add back.
async fn apply_fault(
    f: &Fault,
    targets: &[usize],
    nodes: &mut [ChaosNode],
    net: &mut Net,
    admin: &Client,
    next_id: &mut u64,
    s: &NodeSettings,
) -> anyhow::Result<Vec<usize>> {
    let all = members(nodes);
    let mut rejoin = Vec::new();
    match f.fault {
        FaultKind::Delay | FaultKind::Loss | FaultKind::Reorder | FaultKind::Slow => {
            let link = f.link.ok_or_else(|| {
                anyhow::anyhow!("the schedule's {:?} fault at {} ms says nothing of what the link does (\"link\")", f.fault, f.t_ms)
            })?;
            for &i in targets {
                net.set_link(i, link)?;
            }
        }
        FaultKind::Rejoin => {
            for &i in targets {
                let old = nodes[i - 1].id;
                // Removing the leader: it commits its own removal and steps down.
                if let Err(e) = admin.admin(AdminCommand::RemoveNode { id: old }).await {
                    tracing::warn!("removing node {old} failed (tried again at the heal): {e}");
                }
                *next_id += 1;
                nodes[i - 1].wipe_as(*next_id)?;
                rejoin.push(i);
            }
        }
        FaultKind::Grow => {
            // The spares join as voters (each add waits for the newcomer to catch up).
            let spares: Vec<usize> = (1..=nodes.len()).filter(|i| !nodes[i - 1].member).collect();
            for i in spares {
                let n = &mut nodes[i - 1];
                n.start(s)?;
                n.member = true;
                let (id, addr) = (n.id, n.addr.clone());
                if let Err(e) = admin.admin(AdminCommand::AddNode { id, addr }).await {
                    tracing::warn!("adding spare node {id} failed (the heal removes it): {e}");
                }
            }
        }
        // Started and stopped by the run itself (it keeps the flood's and the rogue's tasks).
        FaultKind::Flood | FaultKind::RogueNode => {}
        FaultKind::Kill => targets.iter().for_each(|i| nodes[i - 1].kill9()),
        FaultKind::Pause => targets.iter().for_each(|i| nodes[i - 1].pause()),
        FaultKind::Partition | FaultKind::PartitionOneWay => {
            for &i in targets {
                for &j in all.iter().filter(|j| !targets.contains(j)) {
                    net.block(i, j)?;
                    if f.fault == FaultKind::Partition {
                        net.block(j, i)?;
                    }
                }
            }
        }
        FaultKind::Bridge => {
            // The first member talks to everyone; the rest split into two halves that do not.
            let rest: Vec<usize> = all[1..].to_vec();
            let (a, b) = rest.split_at(rest.len() / 2);
            for &i in a {
                for &j in b {
                    net.block(i, j)?;
                    net.block(j, i)?;
                }
            }
        }
    }
    Ok(rejoin)
}

/// Adds back the nodes a rejoin wiped (started by [`heal`] under their new ids), and
/// removes whatever old ids are still members. Bounded by the admin client's timeout.
async fn rejoin(nodes: &[ChaosNode], which: &[usize], admin: &Client) -> Vec<String> {
    let mut problems = remove_strays(nodes, admin, "a rejoin").await;
    for &i in which {
        let n = &nodes[i - 1];
        if let Err(e) = admin
            .admin(AdminCommand::AddNode {
                id: n.id,
                addr: n.addr.clone(),
            })
            .await
        {
            problems.push(format!("adding node {} back at {}: {e}", n.id, n.addr));
        }
    }
    problems
}

/// The end of a `Grow` fault: two voters — the leader first, then another chosen by `seed` —
/// are removed from the cluster one after the other, stopped and wiped under new ids (spares
/// for the next growth); then any member id not among the running members is removed too.
async fn shrink(
    nodes: &mut [ChaosNode],
    admin: &Client,
    next_id: &mut u64,
    seed: u64,
) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    for k in 0..2 {
        let all = members(nodes);
        if all.len() <= 3 {
            break;
        }
        let victim = if k == 0 {
            resolve(Target::Leader, nodes, seed).await[0]
        } else {
            resolve(Target::Follower, nodes, seed).await[0]
        };
        let id = nodes[victim - 1].id;
        if let Err(e) = admin.admin(AdminCommand::RemoveNode { id }).await {
            problems.push(format!("removing node {id} while shrinking: {e}"));
        }
        *next_id += 1;
        let n = &mut nodes[victim - 1];
        n.wipe_as(*next_id)?;
        n.member = false;
    }
    problems.extend(remove_strays(nodes, admin, "shrinking").await);
    Ok(problems)
}

/// Removes from the cluster every member id that none of our member nodes has (left over by
/// a rejoin or a shrink whose removal did not complete); returns what failed.
async fn remove_strays(nodes: &[ChaosNode], admin: &Client, after: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let current: std::collections::BTreeSet<u64> =
        nodes.iter().filter(|n| n.member).map(|n| n.id).collect();
    if let Ok(st) = admin.status().await {
        for m in st.members.iter().filter(|m| !current.contains(&m.id)) {
            if let Err(e) = admin.admin(AdminCommand::RemoveNode { id: m.id }).await {
                problems.push(format!("removing old node {} after {after}: {e}", m.id));
            }
        }
    }
    problems
}

/// Sleeps until `until`, restarting any node that exited by itself meanwhile (see
/// [`revive`]).
async fn watch(
    until: Instant,
    nodes: &mut [ChaosNode],
    s: &NodeSettings,
    faults: &mut BTreeMap<String, usize>,
    anomalies: &mut Vec<String>,
) -> anyhow::Result<()> {
    loop {
        revive(nodes, s, faults, anomalies)?;
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        tokio::time::sleep((until - now).min(Duration::from_millis(250))).await;
    }
}

/// Restarts the nodes whose process exited by itself: an injected crash (a crash point's
/// last words in its log) is counted in `faults`; any other exit is an anomaly.
fn revive(
    nodes: &mut [ChaosNode],
    s: &NodeSettings,
    faults: &mut BTreeMap<String, usize>,
    anomalies: &mut Vec<String>,
) -> anyhow::Result<()> {
    for n in nodes.iter_mut().filter(|n| n.member) {
        if let Some(st) = n.exited() {
            if n.crashed_at_failpoint() {
                *faults.entry("failpoint_crash".into()).or_insert(0) += 1;
            } else {
                anomalies.push(format!(
                    "node {} exited by itself ({st}): see {}",
                    n.id,
                    n.log().display()
                ));
            }
            n.start(s)?;
        }
    }
    Ok(())
}

/// Undoes every fault: the paused resumed, the killed restarted, the routes removed, the
/// proxies passing bytes at once again.
fn heal(nodes: &mut [ChaosNode], net: &mut Net, s: &NodeSettings) -> anyhow::Result<()> {
    for n in nodes.iter_mut().filter(|n| n.member) {
        n.resume();
        if !n.running() {
            n.start(s)?;
        }
    }
    net.heal()?;
    Ok(())
}

/// Waits until one leader, one membership, every node applied the same index and holds the
/// same state (snapshot bytes): the per-replica digests, or what differs at the deadline.
/// Crash points stay armed after the heal: a node that crashes at one meanwhile is restarted
/// (see [`revive`]), as during the run.
async fn converge(
    all: &mut [ChaosNode],
    s: &NodeSettings,
    faults: &mut BTreeMap<String, usize>,
    anomalies: &mut Vec<String>,
    within: Duration,
) -> Result<BTreeMap<u64, Vec<u8>>, String> {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        revive(all, s, faults, anomalies).map_err(|e| format!("restarting a node: {e:#}"))?;
        let nodes: Vec<&ChaosNode> = all.iter().filter(|n| n.member).collect();
        let mut statuses = Vec::new();
        for n in &nodes {
            statuses.push(n.status(Duration::from_secs(1)).await);
        }
        let ok = statuses.iter().all(|s| s.is_some());
        let leaders: std::collections::BTreeSet<Option<u64>> =
            statuses.iter().flatten().map(|s| s.leader).collect();
        let applied: std::collections::BTreeSet<Option<u64>> =
            statuses.iter().flatten().map(|s| s.applied).collect();
        let members: std::collections::BTreeSet<Vec<u64>> =
            statuses.iter().flatten().map(|s| s.voters()).collect();
        if ok
            && leaders.len() == 1
            && !leaders.contains(&None)
            && applied.len() == 1
            && members.len() == 1
        {
            let mut snaps = BTreeMap::new();
            for n in &nodes {
                let c = client(
                    std::slice::from_ref(&n.addr),
                    Duration::from_secs(5),
                    s.tls.as_ref(),
                )
                .map_err(|e| e.to_string())?;
                if let Ok(QueryReply::Snapshot(b)) = c.query_node(0, Query::Snapshot).await {
                    snaps.insert(n.id, b);
                }
            }
            let distinct: std::collections::BTreeSet<&Vec<u8>> = snaps.values().collect();
            if snaps.len() == nodes.len() && distinct.len() == 1 {
                return Ok(snaps);
            }
            last = format!(
                "{} nodes answered with {} distinct states",
                snaps.len(),
                distinct.len()
            );
        } else {
            last = format!(
                "leaders {leaders:?}, applied {applied:?}, voters {members:?}, all answering: {ok}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last)
}

/// A `10.232.X` /24 no interface of this machine uses (runs at the same time pick different
/// ones), starting from one derived from the process id.
fn free_prefix() -> anyhow::Result<String> {
    let start = std::process::id() % 200;
    for k in 0..200 {
        let prefix = format!("10.232.{}", 20 + (start + k) % 200);
        let used = std::process::Command::new("ip")
            .args(["-o", "addr", "show", "to", &format!("{prefix}.0/24")])
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run `ip` (install iproute2): {e}"))?;
        if used.stdout.is_empty() {
            return Ok(prefix);
        }
    }
    anyhow::bail!("every 10.232.20.0/24 to 10.232.219.0/24 is in use here: remove stale chaos bridges (ip link show type bridge | grep rc)")
}

fn fault_name(f: &Fault) -> String {
    // The schedule's own spelling (snake_case), e.g. `partition_one_way`.
    serde_json::to_value(f.fault)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", f.fault))
}

/// Runs one seed; the report says what passed and what did not. The files stay in `cfg.dir`.
pub async fn run(mut cfg: RunConfig) -> anyhow::Result<RunReport> {
    std::fs::create_dir_all(&cfg.dir)?;
    let plan = Plan {
        nodes: cfg.nodes,
        duration_ms: cfg.duration.as_millis() as u64,
        warmup_ms: 5_000,
        election_ms: ELECTION_MS,
        kinds: cfg.kinds.clone(),
        kill_all: cfg.kill_all,
    };
    let schedule = cfg
        .schedule
        .clone()
        .unwrap_or_else(|| super::schedule::draw(cfg.seed, &plan));
    std::fs::write(
        cfg.dir.join("schedule.json"),
        serde_json::to_vec_pretty(&schedule)?,
    )?;

    let tag = format!("{}", std::process::id() % 100_000);
    let prefix = free_prefix()?;
    // Two spare nodes (namespaces, not started) when the cluster may grow.
    let grows =
        cfg.kinds.contains(&FaultKind::Grow) || schedule.iter().any(|f| f.fault == FaultKind::Grow);
    let spares = if grows { SPARES } else { 0 };
    let mut net = Net::create(&tag, &prefix, cfg.nodes + spares)?;
    // A proxy in front of every node when the run has link faults.
    let links = cfg.kinds.iter().any(|k| k.is_link()) || schedule.iter().any(|f| f.fault.is_link());
    if links {
        net.add_proxies(super::cluster::PORT, cfg.seed)?;
    }
    // Mutual TLS when a rogue node certificate is among the faults (without TLS there is no
    // certificate to steal: every caller may do everything).
    let rogues = cfg.kinds.contains(&FaultKind::RogueNode)
        || schedule.iter().any(|f| f.fault == FaultKind::RogueNode);
    if rogues {
        cfg.node.tls = Some(ChaosTls::create(&cfg.dir.join("tls"))?);
    }
    let mut nodes: Vec<ChaosNode> = (1..=cfg.nodes + spares)
        .map(|i| {
            let mut n = ChaosNode::new(i as u64, net.ns(i), &net.addr(i), &cfg.dir, links);
            n.tls = cfg.node.tls.clone();
            n
        })
        .collect();
    for n in nodes.iter_mut().skip(cfg.nodes) {
        n.member = false;
    }
    for n in nodes.iter_mut().filter(|n| n.member) {
        n.start(&cfg.node)?;
    }
    let endpoints: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let admin = client(&endpoints, Duration::from_secs(30), cfg.node.tls.as_ref())?;
    // Form the cluster: node 1 alone, then the others as voters. Every step is bounded (see
    // `bounded`): a crash point may take a node down while the cluster forms.
    let first = client(
        std::slice::from_ref(&endpoints[0]),
        Duration::from_secs(30),
        cfg.node.tls.as_ref(),
    )?;
    let mut anomalies = Vec::new();
    let mut faults = BTreeMap::new();
    // Crash points may fire while the cluster forms: crashed nodes are restarted and each
    // step is tried again (bounded).
    let t0 = Instant::now();
    let formed = |what: String, nodes: &[ChaosNode]| {
        anyhow::anyhow!(
            "{what} within 120 s: see the logs in {}",
            nodes[0]
                .log()
                .parent()
                .map_or("?".into(), |d| d.display().to_string())
        )
    };
    loop {
        match bounded(Duration::from_secs(8), first.admin(AdminCommand::Init)).await {
            Ok(_) => break,
            // Initialised by an earlier try whose answer a crash lost.
            Err(e)
                if e.to_string()
                    .contains("already part of an initialised cluster") =>
            {
                break
            }
            Err(_) if t0.elapsed() < Duration::from_secs(120) => {}
            Err(e) => return Err(formed(format!("node 1 did not initialise ({e})"), &nodes)),
        }
        revive(&mut nodes, &cfg.node, &mut faults, &mut anomalies)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for k in 1..cfg.nodes {
        let (id, addr) = (nodes[k].id, nodes[k].addr.clone());
        loop {
            let add = admin.admin(AdminCommand::AddNode {
                id,
                addr: addr.clone(),
            });
            match bounded(Duration::from_secs(30), add).await {
                Ok(_) => break,
                Err(_) if t0.elapsed() < Duration::from_secs(120) => {}
                Err(e) => return Err(formed(format!("node {id} was not added ({e})"), &nodes)),
            }
            revive(&mut nodes, &cfg.node, &mut faults, &mut anomalies)?;
        }
    }
    let pool: PoolId = "global/10.240.0.0/20".parse()?;
    let spec = {
        let mut spec = PoolSpec::default();
        spec.space = "global".into();
        spec.subnet = Some("10.240.0.0/20".parse()?);
        spec
    };
    loop {
        // Creating the same pool again joins it: retrying is safe.
        match bounded(
            Duration::from_secs(10),
            admin.create_pool(spec.clone(), "chaos"),
        )
        .await
        {
            Ok(_) => break,
            Err(_) if t0.elapsed() < Duration::from_secs(120) => {
                revive(&mut nodes, &cfg.node, &mut faults, &mut anomalies)?
            }
            Err(e) => return Err(formed(format!("the pool was not created ({e})"), &nodes)),
        }
    }
    // Conflict reports (the workload's quarantines) need cluster version 2, which a new
    // cluster takes at its initialisation; a crash point may have cut that short, so it is
    // raised here if need be (`cluster upgrade`), within the same bound.
    loop {
        let version = bounded(Duration::from_secs(10), admin.node_info(0))
            .await
            .map(|i| i.cluster_version);
        match version {
            Ok(v) if v >= allocator_core::cluster::CLUSTER_VERSION => break,
            Ok(_) | Err(_) if t0.elapsed() < Duration::from_secs(120) => {
                let _ = bounded(
                    Duration::from_secs(10),
                    admin.admin(AdminCommand::UpgradeCluster),
                )
                .await;
                revive(&mut nodes, &cfg.node, &mut faults, &mut anomalies)?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => {
                return Err(formed(
                    format!("the cluster did not reach the newest cluster version ({other:?})"),
                    &nodes,
                ))
            }
        }
    }
    let hot: Vec<std::net::IpAddr> = (2..34)
        .map(|i| format!("10.240.0.{i}").parse().expect("ip"))
        .collect();

    let start = Instant::now();
    let rec = Arc::new(Recorder::new(
        std::fs::File::create(cfg.dir.join("history.jsonl"))?,
        start,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let work = tokio::spawn(workload::run(
        Workload {
            endpoints: endpoints.clone(),
            pool: pool.clone(),
            hot,
            clients: cfg.clients,
            call_timeout: Duration::from_secs(4),
            seed: cfg.seed,
            tls: cfg.node.tls.clone(),
            conflicts: true,
        },
        rec.clone(),
        stop.clone(),
    ));

    let mut first_fault_ns = None;
    let mut rogue_tally = crate::rogue::Tally::default();
    // The highest term a rogue sent (0: none); no member may ever reach it.
    let mut rogue_term = 0u64;
    let mut next_id = (cfg.nodes + spares) as u64;
    for (k, f) in schedule.iter().enumerate() {
        let at = start + Duration::from_millis(f.t_ms);
        watch(at, &mut nodes, &cfg.node, &mut faults, &mut anomalies).await?;
        let targets = resolve(f.targets, &nodes, cfg.seed.wrapping_add(k as u64)).await;
        first_fault_ns.get_or_insert(start.elapsed().as_nanos() as u64);
        tracing::info!(?f, ?targets, "fault");
        let wiped = apply_fault(
            f,
            &targets,
            &mut nodes,
            &mut net,
            &admin,
            &mut next_id,
            &cfg.node,
        )
        .await?;
        let flood = match f.fault {
            FaultKind::Flood => {
                let addrs: Vec<String> =
                    targets.iter().map(|i| nodes[i - 1].addr.clone()).collect();
                let tls = match &cfg.node.tls {
                    Some(t) => Some(raft_node::tls::Tls::load(&t.leaf(
                        raft_node::api::Role::Host,
                        crate::flood::HOST,
                        None,
                        None,
                    )?)?),
                    None => None,
                };
                Some(crate::flood::start(&addrs, &pool, tls))
            }
            _ => None,
        };
        let rogue = match (f.fault, &cfg.node.tls) {
            (FaultKind::RogueNode, Some(tls)) => {
                Some(start_rogue(k as u64, &targets, &nodes, &admin, tls, &pool).await?)
            }
            _ => None,
        };
        *faults.entry(fault_name(f)).or_insert(0) += 1;
        let until = Instant::now() + Duration::from_millis(f.duration_ms);
        watch(until, &mut nodes, &cfg.node, &mut faults, &mut anomalies).await?;
        if let Some(flood) = flood {
            let (answered, refused) = flood.stop().await;
            tracing::info!(answered, refused, "flood over");
        }
        if let Some(r) = rogue {
            let term = r.term;
            let t = r.stop().await;
            tracing::info!(
                sent = t.sent,
                refused = t.refused,
                unanswered = t.unanswered,
                accepted = t.accepted.len(),
                "rogue node over"
            );
            for a in &t.accepted {
                anomalies.push(format!("rogue node: {a}"));
            }
            rogue_tally.add(&t);
            rogue_term = rogue_term.max(term);
            anomalies.extend(term_reached(&nodes, rogue_term, "at the end of its fault").await);
        }
        heal(&mut nodes, &mut net, &cfg.node)?;
        if f.fault == FaultKind::Rejoin {
            for p in rejoin(&nodes, &wiped, &admin).await {
                anomalies.push(format!("membership: {p}"));
            }
        }
        if f.fault == FaultKind::Grow {
            let seed = cfg.seed.wrapping_add(k as u64);
            for p in shrink(&mut nodes, &admin, &mut next_id, seed).await? {
                anomalies.push(format!("membership: {p}"));
            }
        }
        watch(
            Instant::now(),
            &mut nodes,
            &cfg.node,
            &mut faults,
            &mut anomalies,
        )
        .await?;
    }
    watch(
        start + cfg.duration,
        &mut nodes,
        &cfg.node,
        &mut faults,
        &mut anomalies,
    )
    .await?;
    stop.store(true, Ordering::Relaxed);
    let _ = work.await;
    heal(&mut nodes, &mut net, &cfg.node)?;

    // Convergence and liveness after the heal.
    let healed = Instant::now();
    let snaps = match converge(
        &mut nodes,
        &cfg.node,
        &mut faults,
        &mut anomalies,
        Duration::from_secs(60),
    )
    .await
    {
        Ok(s) => Some(s),
        Err(why) => {
            anomalies.push(format!(
                "the cluster did not converge within 60 s of the heal: {why}"
            ));
            None
        }
    };
    let converged_s = snaps.as_ref().map(|_| healed.elapsed().as_secs_f64());
    if rogue_term > 0 {
        anomalies.extend(term_reached(&nodes, rogue_term, "after the heal").await);
    }
    let live = client(&endpoints, Duration::from_secs(30), cfg.node.tls.as_ref())?;
    let probe = live
        .apply(Op::Heartbeat {
            host: "liveness".into(),
            version: cfg.seed.to_string(),
        })
        .await;
    if let Err(e) = probe {
        anomalies.push(format!("no write succeeded within 30 s of the heal: {e}"));
    }

    // The final state of every replica (read locally from each), for the checker. Crash
    // points stay armed: a node that crashes while the states are read is restarted, the
    // cluster is let converge again (a restarted node reads locally what it has applied), and
    // every state is read again — at most three rounds.
    let mut replicas = BTreeMap::new();
    let mut unread = Vec::new();
    for round in 0..3 {
        let crashes = faults.get("failpoint_crash").copied().unwrap_or(0);
        if round > 0 {
            if let Err(why) = converge(
                &mut nodes,
                &cfg.node,
                &mut faults,
                &mut anomalies,
                Duration::from_secs(60),
            )
            .await
            {
                unread.push(format!(
                    "after a crash point fired while the final states were read, the cluster did not converge again within 60 s: {why}"
                ));
                break;
            }
        }
        replicas.clear();
        unread.clear();
        for n in nodes.iter().filter(|n| n.member) {
            let c = client(
                std::slice::from_ref(&n.addr),
                Duration::from_secs(10),
                cfg.node.tls.as_ref(),
            )?;
            match c.query_node(0, Query::AllAllocations).await {
                Ok(QueryReply::AllAllocations(all)) => {
                    let v: Vec<(std::net::IpAddr, String)> = all
                        .into_iter()
                        .filter(|(p, _)| *p == pool)
                        .map(|(_, a)| (a.addr, a.owner.to_string()))
                        .collect();
                    replicas.insert(n.id, v);
                }
                other => unread.push(format!(
                    "node {} did not give its final state: {other:?}",
                    n.id
                )),
            }
        }
        if !unread.is_empty() {
            // A node that just crashed may still be on its way out: let it go before looking.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        revive(&mut nodes, &cfg.node, &mut faults, &mut anomalies)?;
        if faults.get("failpoint_crash").copied().unwrap_or(0) == crashes {
            break;
        }
    }
    anomalies.append(&mut unread);

    // No panic in any node's log.
    for n in &nodes {
        let log = std::fs::read_to_string(n.log()).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains("panicked")) {
            anomalies.push(format!(
                "node {} panicked: {line} (see {})",
                n.id,
                n.log().display()
            ));
        }
    }

    rec.flush();
    let text = std::fs::read_to_string(cfg.dir.join("history.jsonl"))?;
    let history =
        check::parse_history(&text).map_err(|e| anyhow::anyhow!("reading the history: {e}"))?;
    if let Some(t) = &history.truncated_last_line {
        tracing::warn!("the history's last line was cut off: {t:?}");
    }
    let digests = snaps
        .as_ref()
        .map(|s| {
            s.iter()
                .map(|(id, b)| (*id, format!("{:08x}:{}", crc32fast::hash(b), b.len())))
                .collect()
        })
        .unwrap_or_default();
    let report = check::check(&history, &FinalState { replicas, digests });
    let conflict_reports = report
        .summary
        .by_operation
        .get(check::REPORT_CONFLICT)
        .map_or(0, |c| c.ok);
    let quarantines = history
        .events
        .iter()
        .filter(|e| {
            e.kind == check::EventKind::Ok
                && e.operation.as_str() == check::REPORT_CONFLICT
                && e.value.get("quarantined") == Some(&serde_json::Value::Bool(true))
        })
        .count();
    for v in &report.violations {
        anomalies.push(v.to_string());
    }
    for a in &report.undecided {
        anomalies.push(format!(
            "the linearizability search for {a} hit its step limit: undecided (a run must decide every address)"
        ));
    }
    if let Some(t) = first_fault_ns {
        let ok = report.summary.ok_before(t);
        if ok < cfg.min_ok_before_fault {
            anomalies.push(format!(
                "only {ok} operations succeeded before the first fault (at least {} needed: an idle run proves nothing)",
                cfg.min_ok_before_fault
            ));
        }
    }
    let held_chunks = net.held_chunks();
    drop(nodes);
    drop(net);
    Ok(RunReport {
        seed: cfg.seed,
        dir: cfg.dir.clone(),
        faults,
        ok: rec.oks.load(Ordering::Relaxed),
        fail: rec.fails.load(Ordering::Relaxed),
        info: rec.infos.load(Ordering::Relaxed),
        anomalies,
        checked: report.to_string(),
        converged_s,
        held_chunks,
        conflict_reports,
        quarantines,
        rogue: rogue_tally,
    })
}

/// Starts a rogue node against `targets` (1-based places in `nodes`): a never-added id
/// (1000 + the fault's index) and, if the run removed one, the last removed id that is no
/// member now, each with a node certificate of the run's CA; Raft messages 1,000 terms above
/// the highest term a member reports.
async fn start_rogue(
    k: u64,
    targets: &[usize],
    nodes: &[ChaosNode],
    admin: &Client,
    tls: &ChaosTls,
    pool: &PoolId,
) -> anyhow::Result<crate::rogue::Rogue> {
    let members: std::collections::BTreeSet<u64> = match admin.status().await {
        Ok(st) => st.members.iter().map(|m| m.id).collect(),
        Err(_) => nodes.iter().filter(|n| n.member).map(|n| n.id).collect(),
    };
    let mut ids = vec![1000 + k];
    let removed = nodes
        .iter()
        .flat_map(|n| n.retired.iter().copied())
        .filter(|id| !members.contains(id) && !nodes.iter().any(|n| n.id == *id))
        .max();
    ids.extend(removed);
    let mut identities = Vec::new();
    for id in ids {
        let dir = tls.leaf(
            raft_node::api::Role::Node,
            &format!("rogue-{id}"),
            None,
            Some(id),
        )?;
        identities.push((id, raft_node::tls::Tls::load(&dir)?));
    }
    let mut term = 0;
    for n in nodes.iter().filter(|n| n.member) {
        if let Some(s) = n.status(Duration::from_secs(1)).await {
            term = term.max(s.term);
        }
    }
    let addrs: Vec<String> = targets.iter().map(|i| nodes[i - 1].addr.clone()).collect();
    let member = &nodes[targets[0] - 1];
    let victims = crate::rogue::Victims {
        pool: pool.clone(),
        host: "c1".into(),
        member: (member.id, super::cluster::node_cert_name(member.id)),
    };
    tracing::info!(
        ?targets,
        ids = ?identities.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        term = term + 1000,
        "rogue node starts"
    );
    Ok(crate::rogue::start(
        &addrs,
        &identities,
        term + 1000,
        &victims,
    ))
}

/// Anomalies if a member reports a term at or above `rogue_term` (only a rogue's message could
/// have taken it there).
async fn term_reached(nodes: &[ChaosNode], rogue_term: u64, when: &str) -> Vec<String> {
    let mut out = Vec::new();
    for n in nodes.iter().filter(|n| n.member) {
        if let Some(s) = n.status(Duration::from_secs(2)).await {
            if s.term >= rogue_term {
                out.push(format!(
                    "rogue node: node {} is in term {} {when}, at or above the rogue's {rogue_term}",
                    n.id, s.term
                ));
            }
        }
    }
    out
}

/// Removes the data directories of a passed run of `nodes` nodes and its spares (history,
/// schedule and logs stay).
pub fn tidy(dir: &Path, nodes: usize) {
    for i in 1..=nodes + SPARES {
        let _ = std::fs::remove_dir_all(dir.join(format!("n{i}")));
    }
}

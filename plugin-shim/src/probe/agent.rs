//! The LAN side of a host agent, in the background: **watching** the ARP and Neighbor
//! Discovery traffic of the interfaces the cluster's subnets are on, **sweeping** the pools'
//! free addresses (each pool by one host at a time), and **telling** the cluster how this
//! host can check each subnet (so that `host ls` and `status` say "checks off: why").
//!
//! What the watcher makes of a device it sees claim an address of a pool (an ARP request or
//! reply from it, a Neighbor Advertisement or Solicitation from it; never a probe — the
//! hosts' own sweeps send probes for free addresses):
//!
//! - a **free** address: a conflict, reported ([`Detection::Watch`]): quarantined;
//! - an address a container holds whose MAC the cluster recorded
//!   ([`Op::RecordMac`]), from another MAC: a **duplicate
//!   alarm**, reported and logged naming the container, its host and the other MAC;
//! - a held address with no recorded MAC (a CNI attachment, a container of a release before
//!   the MACs), a reserved one (gateways and hosts answer by design): nothing.
//!
//! Each (address, MAC) is judged at most once per [`JUDGE_EVERY`], and at most
//! [`LOOKUPS_PER_TICK`] lookups are made per tick: a chatty LAN costs the cluster a bounded
//! number of reads.
//!
//! **Sweeps** walk every free address of a pool's range, one probe at a time at the
//! configured rate. Which host sweeps a pool is decided without talking: among the hosts
//! whose last LAN-check report says checks of the pool's subnet are on (and this host, if
//! its own are), the one with the highest hash of (host, pool, turn) — a turn is
//! [`SWEEP_TURN`] — so a pool is swept by one host at a time and the work moves around. After
//! [`BACKOFF_AFTER`] conflicts found in a subnet within [`BACKOFF_WINDOW`], its sweep slows to
//! one probe per [`BACKOFF_GAP`] (RFC 5227's rate limit after ten conflicts).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocator_core::{Detection, HostLan, LanCheck, Mac, Op, PoolId};
use ipnet::IpNet;
use tracing::{debug, info, warn};

use super::check::worth_reporting;
use super::{interface_for, LanChecks, Seen, Watcher};
use crate::backend::{now_ms, BackendError, Inventory};

/// One (address, MAC) pair is judged at most this often.
pub const JUDGE_EVERY: Duration = Duration::from_secs(30);
/// A conflict record seen again within this long is not reported again (its quarantine runs
/// from its last sighting; reporting every frame would only fill the log).
pub const REPORT_AGAIN_AFTER: Duration = Duration::from_secs(60);
/// Most cluster lookups per tick of the watcher.
pub const LOOKUPS_PER_TICK: usize = 16;
/// How long one host sweeps a pool before the turn may pass to another.
pub const SWEEP_TURN: Duration = Duration::from_secs(600);
/// Conflicts found in one subnet within [`BACKOFF_WINDOW`] past which its sweep slows.
pub const BACKOFF_AFTER: usize = 10;
/// See [`BACKOFF_AFTER`].
pub const BACKOFF_WINDOW: Duration = Duration::from_secs(600);
/// A backed-off subnet's sweep probes once per this long.
pub const BACKOFF_GAP: Duration = Duration::from_secs(60);
/// The agent's tick.
pub const TICK: Duration = Duration::from_millis(200);

/// How the LAN agent runs.
#[derive(Clone, Debug)]
pub struct LanAgentConfig {
    /// Probes a second of the background sweep of the pools this host sweeps (0: no sweep).
    pub sweep_rate: f64,
    /// How often pools, interfaces and the other hosts' reports are read again.
    pub refresh: Duration,
    /// This host's LAN-check report is sent again this often even when unchanged.
    pub report_every: Duration,
    /// Watch the interfaces (passive).
    pub watch: bool,
}

impl Default for LanAgentConfig {
    fn default() -> Self {
        LanAgentConfig {
            sweep_rate: 1.0,
            refresh: Duration::from_secs(30),
            report_every: Duration::from_secs(600),
            watch: true,
        }
    }
}

/// The background LAN agent of one host.
pub struct LanAgent<B> {
    checks: LanChecks,
    cluster: Arc<B>,
    host: String,
    cfg: LanAgentConfig,
    /// The pools of each subnet.
    subnets: BTreeMap<IpNet, Vec<PoolId>>,
    watchers: HashMap<String, Watcher>,
    mine: Vec<LanCheck>,
    reported: Option<(Vec<LanCheck>, Instant)>,
    peers: Vec<HostLan>,
    judged: HashMap<(IpAddr, Mac), Instant>,
    found: VecDeque<(IpNet, Instant)>,
    cursors: HashMap<PoolId, Option<IpAddr>>,
    last_probe: HashMap<IpNet, Instant>,
    next_pool: usize,
}

/// What one [`LanAgent::refresh`] saw and did, for tests and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// The subnets checked, with the interface and whether checks are on.
    pub checks: Vec<LanCheck>,
    /// Whether a report was sent to the cluster.
    pub reported: bool,
}

/// FNV-1a: the same on every host and release (the sweeper of a pool must be agreed on
/// without talking).
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(std::iter::once(&0xffu8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The host that sweeps `pool` in the turn of `now_ms`, among `candidates` (none: no one).
pub fn sweeper<'a>(candidates: &[&'a str], pool: &PoolId, now_ms: u64) -> Option<&'a str> {
    let turn = (now_ms / SWEEP_TURN.as_millis() as u64).to_le_bytes();
    let pool = pool.to_string();
    candidates
        .iter()
        .copied()
        .max_by_key(|h| (fnv(&[h.as_bytes(), pool.as_bytes(), &turn]), *h))
}

impl<B: Inventory> LanAgent<B> {
    /// An agent of `host` speaking to `cluster`, probing with `checks`.
    pub fn new(checks: LanChecks, cluster: Arc<B>, host: &str, cfg: LanAgentConfig) -> Self {
        LanAgent {
            checks,
            cluster,
            host: host.to_string(),
            cfg,
            subnets: BTreeMap::new(),
            watchers: HashMap::new(),
            mine: Vec::new(),
            reported: None,
            peers: Vec::new(),
            judged: HashMap::new(),
            found: VecDeque::new(),
            cursors: HashMap::new(),
            last_probe: HashMap::new(),
            next_pool: 0,
        }
    }

    /// Runs until the task is aborted: refreshes, watches and sweeps, each bounded per tick.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refreshed: Option<Instant> = None;
        let mut swept = Instant::now();
        loop {
            tick.tick().await;
            if refreshed.is_none_or(|at| at.elapsed() >= self.cfg.refresh) {
                refreshed = Some(Instant::now());
                if let Err(e) = self.refresh().await {
                    debug!("LAN agent: refreshing: {e}");
                }
            }
            if let Err(e) = self.watch_once().await {
                debug!("LAN agent: watching: {e}");
            }
            if self.cfg.sweep_rate > 0.0
                && swept.elapsed().as_secs_f64() >= 1.0 / self.cfg.sweep_rate
            {
                swept = Instant::now();
                if let Err(e) = self.sweep_once().await {
                    debug!("LAN agent: sweeping: {e}");
                }
            }
        }
    }

    /// Reads the pools and the other hosts' reports again, finds each subnet's interface,
    /// starts and stops watchers to match, and reports this host's checks when they changed
    /// (or every [`LanAgentConfig::report_every`]).
    pub async fn refresh(&mut self) -> Result<Refreshed, BackendError> {
        let pools = self.cluster.pools().await?;
        let mut subnets: BTreeMap<IpNet, Vec<PoolId>> = BTreeMap::new();
        for p in pools {
            subnets.entry(p.id.subnet).or_default().push(p.id);
        }
        let nets: Vec<IpNet> = subnets
            .keys()
            .copied()
            .take(allocator_core::conflict::MAX_LAN_CHECKS)
            .collect();
        let found = tokio::task::spawn_blocking(move || {
            nets.into_iter()
                .map(|n| (n, interface_for(&n).map_err(|e| e.to_string())))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| BackendError::Unavailable(format!("the route lookup failed: {e}")))?;
        let off_probing = self.checks.off_reasons();
        let mut checks = Vec::new();
        let mut wanted: Vec<String> = Vec::new();
        for (subnet, iface) in found {
            let check = match iface {
                Err(why) => LanCheck {
                    subnet,
                    interface: String::new(),
                    off: Some(why),
                },
                Ok(iface) => {
                    let mut off = off_probing.get(&subnet).cloned();
                    if self.cfg.watch && off.is_none() {
                        if !self.watchers.contains_key(&iface) {
                            match Watcher::start(&iface, 1024) {
                                Ok(w) => {
                                    info!(interface = %iface, "watching ARP and neighbor discovery on {iface} for devices claiming addresses of {subnet}");
                                    self.watchers.insert(iface.clone(), w);
                                }
                                Err(e) => {
                                    if self
                                        .mine
                                        .iter()
                                        .all(|c| c.off.as_deref() != Some(&e.to_string()))
                                    {
                                        warn!(%subnet, "LAN checks off for {subnet}: {e}");
                                    }
                                    off = Some(e.to_string());
                                }
                            }
                        }
                        wanted.push(iface.clone());
                    }
                    LanCheck {
                        subnet,
                        interface: iface,
                        off,
                    }
                }
            };
            checks.push(check);
        }
        self.watchers.retain(|iface, _| wanted.contains(iface));
        self.subnets = subnets;
        self.cursors
            .retain(|p, _| self.subnets.values().any(|v| v.contains(p)));
        self.judged.retain(|_, at| at.elapsed() < JUDGE_EVERY);
        self.found.retain(|(_, at)| at.elapsed() < BACKOFF_WINDOW);
        self.peers = self.cluster.lan_checks().await.unwrap_or_default();
        let due = match &self.reported {
            None => true,
            Some((last, at)) => last != &checks || at.elapsed() >= self.cfg.report_every,
        };
        let mut reported = false;
        if due {
            let op = Op::ReportLanChecks {
                host: self.host.clone(),
                checks: checks.clone(),
            };
            match self.cluster.apply(op).await {
                Ok(_) => {
                    reported = true;
                    self.reported = Some((checks.clone(), Instant::now()));
                }
                Err(e) => debug!("LAN checks not reported: {e}"),
            }
        }
        self.mine = checks.clone();
        Ok(Refreshed { checks, reported })
    }

    /// Judges what the watchers saw since the last call (at most [`LOOKUPS_PER_TICK`]
    /// lookups); returns the conflicts it reported.
    pub async fn watch_once(&mut self) -> Result<usize, BackendError> {
        let mut seen = Vec::new();
        for w in self.watchers.values() {
            seen.extend(w.drain());
        }
        let mut lookups = 0;
        let mut reported = 0;
        for o in seen {
            if matches!(o.seen, Seen::ArpProbe | Seen::DadProbe) {
                continue;
            }
            let Some(subnet) = self.subnets.keys().find(|n| n.contains(&o.ip)).copied() else {
                continue;
            };
            if self
                .judged
                .get(&(o.ip, o.mac))
                .is_some_and(|at| at.elapsed() < JUDGE_EVERY)
            {
                continue;
            }
            if lookups >= LOOKUPS_PER_TICK {
                break;
            }
            lookups += 1;
            self.judged.insert((o.ip, o.mac), Instant::now());
            for known in self.cluster.on_lan(o.ip).await? {
                if !worth_reporting(&known, o.mac) {
                    continue;
                }
                let recent = known.conflict.as_ref().is_some_and(|c| {
                    c.mac == o.mac
                        && now_ms().saturating_sub(c.last_seen_ms)
                            < REPORT_AGAIN_AFTER.as_millis() as u64
                });
                match (&known.holder, known.mac) {
                    (Some((owner, _)), Some(theirs)) => {
                        if !recent {
                            warn!(addr = %o.ip, container = %owner, host = %owner.host, container_mac = %theirs, other_mac = %o.mac,
                                "DUPLICATE ADDRESS: {} belongs to container {} on host {} (MAC {theirs}), and the device {} answers for it too",
                                o.ip, owner.endpoint, owner.host, o.mac);
                        }
                    }
                    _ => {
                        if !recent {
                            warn!(addr = %o.ip, mac = %o.mac, "a device ({}) answers for {} of {subnet}, which no container holds: reported as a conflict (quarantined)", o.mac, o.ip);
                        }
                    }
                }
                if recent {
                    continue;
                }
                let op = Op::ReportConflict {
                    pool: known.pool.clone(),
                    addr: o.ip,
                    mac: o.mac,
                    host: self.host.clone(),
                    how: Detection::Watch,
                };
                match self.cluster.apply(op).await {
                    Ok(_) => {
                        reported += 1;
                        self.found.push_back((subnet, Instant::now()));
                    }
                    Err(BackendError::Alloc(e)) => debug!(addr = %o.ip, "conflict not taken: {e}"),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(reported)
    }

    /// The pools this host sweeps now: those whose sweeper, among the hosts whose checks of
    /// the subnet are on, is this host.
    pub fn my_sweeps(&self, now_ms: u64) -> Vec<PoolId> {
        let fresh = now_ms.saturating_sub(3 * self.cfg.report_every.as_millis() as u64);
        let mut out = Vec::new();
        for (subnet, pools) in &self.subnets {
            let on_here = self
                .mine
                .iter()
                .any(|c| c.subnet == *subnet && c.off.is_none());
            if !on_here {
                continue;
            }
            let mut candidates: Vec<&str> = self
                .peers
                .iter()
                .filter(|h| h.host != self.host && h.at_ms >= fresh)
                .filter(|h| {
                    h.checks
                        .iter()
                        .any(|c| c.subnet == *subnet && c.off.is_none())
                })
                .map(|h| h.host.as_str())
                .collect();
            candidates.push(self.host.as_str());
            for p in pools {
                if sweeper(&candidates, p, now_ms) == Some(self.host.as_str()) {
                    out.push(p.clone());
                }
            }
        }
        out
    }

    /// One probe of the background sweep, if one is due: the next free address of the next
    /// pool this host sweeps (a subnet past [`BACKOFF_AFTER`] conflicts waits
    /// [`BACKOFF_GAP`] between its probes). Returns the address probed and what answered.
    pub async fn sweep_once(&mut self) -> Result<Option<(IpAddr, Option<Mac>)>, BackendError> {
        let pools = self.my_sweeps(now_ms());
        if pools.is_empty() {
            return Ok(None);
        }
        while self
            .found
            .front()
            .is_some_and(|(_, at)| at.elapsed() >= BACKOFF_WINDOW)
        {
            self.found.pop_front();
        }
        for _ in 0..pools.len() {
            let pool = pools[self.next_pool % pools.len()].clone();
            self.next_pool = self.next_pool.wrapping_add(1);
            let subnet = pool.subnet;
            let backed_off =
                self.found.iter().filter(|(n, _)| *n == subnet).count() >= BACKOFF_AFTER;
            if backed_off
                && self
                    .last_probe
                    .get(&subnet)
                    .is_some_and(|at| at.elapsed() < BACKOFF_GAP)
            {
                continue;
            }
            let after = self.cursors.get(&pool).copied().flatten();
            let next = match self.cluster.free_after(&pool, after, 1).await {
                Ok(n) => n,
                Err(BackendError::Alloc(_)) => continue,
                Err(e) => return Err(e),
            };
            let Some(addr) = next.first().copied() else {
                // The range's end: start again from its start next time.
                self.cursors.insert(pool, None);
                continue;
            };
            self.cursors.insert(pool.clone(), Some(addr));
            self.last_probe.insert(subnet, Instant::now());
            let mut answered = self.checks.probe(subnet, addr).await;
            if let Some(mac) = answered {
                if !super::check::still_free_or_duplicate(self.cluster.as_ref(), addr, mac).await? {
                    answered = None;
                }
            }
            if let Some(mac) = answered {
                warn!(pool = %pool, %addr, %mac, "sweep: a device ({mac}) answers for {addr}, which is free: reported as a conflict (quarantined)");
                let op = Op::ReportConflict {
                    pool: pool.clone(),
                    addr,
                    mac,
                    host: self.host.clone(),
                    how: Detection::Sweep,
                };
                match self.cluster.apply(op).await {
                    Ok(_) => self.found.push_back((subnet, Instant::now())),
                    Err(BackendError::Alloc(e)) => debug!(%addr, "conflict not taken: {e}"),
                    Err(e) => return Err(e),
                }
            }
            return Ok(Some((addr, answered)));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sweeper_per_pool_and_turn_and_the_work_spreads() {
        let hosts = ["h1", "h2", "h3", "h4"];
        let pools: Vec<PoolId> = (0..40)
            .map(|i| format!("local/10.{i}.0.0/24").parse().expect("pool"))
            .collect();
        let mut per_host: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &pools {
            let a = sweeper(&hosts, p, 1_000).expect("someone");
            // Every host computes the same answer whatever the order it lists them in.
            let mut rev = hosts;
            rev.reverse();
            assert_eq!(sweeper(&rev, p, 1_000), Some(a));
            // Within one turn the sweeper stays.
            assert_eq!(sweeper(&hosts, p, 1_000 + 60_000), Some(a));
            *per_host.entry(a).or_default() += 1;
        }
        assert_eq!(
            per_host.len(),
            4,
            "every host sweeps some pools: {per_host:?}"
        );
        assert!(per_host.values().all(|n| *n >= 4), "{per_host:?}");
        // Across turns a pool's sweeper changes at some point.
        let p = &pools[0];
        let turn = SWEEP_TURN.as_millis() as u64;
        let first = sweeper(&hosts, p, 0);
        assert!((1..50).any(|t| sweeper(&hosts, p, t * turn) != first));
        assert_eq!(sweeper(&[], p, 0), None);
    }
}

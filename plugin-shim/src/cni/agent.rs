//! The host agent's side of CNI: the calls the short-lived plugin process forwards over the
//! host's local socket, carried out against the cluster as this host.
//!
//! One agent per host holds the host certificate and the cluster connection; the plugin
//! process (one per runtime call) only decodes, forwards and encodes, so a call costs no TLS
//! handshake and no Raft client of its own.
//!
//! **Owners.** An attachment's address is owned by `{host, cni:NETWORK:CONTAINERID:IFNAME}`
//! ([`Attachment::owner_endpoint`]): the host says which agent may release it, the network
//! which runtime network it belongs to, the rest which attachment. A Docker container's
//! endpoint never has that form, so the Docker reconciliation leaves CNI addresses alone and
//! CNI's `GC` and `DEL` never touch Docker's.
//!
//! **What this module must never do:** release an address of another host or another network
//! (`GC` is scoped to this host and the configuration's network name); release an allocation
//! whose sequence number changed since it was read (every release is
//! [`Op::ReleaseIfUnchanged`]); answer `GC` without a list of valid attachments (that would
//! release everything).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocator_core::{
    AddrRange, AllocError, Allocation, Op, Order, Outcome, Owner, PoolId, PoolSpec,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use super::spec::{code, parse_owner_endpoint, Attachment, CniError, Command, Granted, RangePlan};
use crate::backend::{BackendError, Inventory};
use crate::probe::check::list_found;
use crate::probe::{Checked, LanChecks};

/// Most addresses a configuration's exclusions may add, as shared reservations, to a pool that
/// existed without them.
pub const MAX_LATE_EXCLUSIONS: u128 = 256;

/// What the plugin process asks the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRequest {
    /// The command (never `VERSION`: the plugin answers that itself).
    pub command: Command,
    /// The runtime's network name.
    pub network: String,
    /// The attachment (`ADD`, `DEL`, `CHECK`).
    pub attachment: Option<Attachment>,
    /// `CNI_NETNS` (kept so that an attachment whose namespace vanished without `DEL` is
    /// released after the grace).
    pub netns: String,
    /// The subnets, one address from each.
    pub ranges: Vec<RangePlan>,
    /// Addresses the runtime asked for.
    pub requested: Vec<IpAddr>,
    /// `CHECK`: the addresses `ADD` gave.
    pub prev_ips: Vec<IpAddr>,
    /// `GC`: the attachments still valid.
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// What the agent answers when it succeeds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentOk {
    /// `ADD`: the addresses.
    Granted(Vec<Granted>),
    /// `DEL`, `GC`: how many addresses were released.
    Released(usize),
    /// `CHECK`, `STATUS`: all well.
    Fine,
}

/// The agent's answer on the wire.
pub type AgentReply = Result<AgentOk, CniError>;

/// What the agent remembers of one attachment on this host (a file in its records
/// directory): enough to tell that its network namespace is gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The runtime's network.
    pub network: String,
    /// The attachment.
    pub attachment: Attachment,
    /// Its network namespace as the runtime gave it.
    pub netns: String,
}

/// The records directory: one JSON file per attachment, `NETWORK:ID:IFNAME.json`.
#[derive(Clone, Debug)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// Records kept in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Records {
        Records { dir: dir.into() }
    }

    fn file(&self, network: &str, a: &Attachment) -> PathBuf {
        self.dir
            .join(format!("{network}:{}:{}.json", a.container_id, a.ifname))
    }

    /// Writes (or replaces) one record, atomically.
    pub fn put(&self, r: &Record) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.file(&r.network, &r.attachment);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(r).unwrap_or_default())?;
        std::fs::rename(&tmp, &path)
    }

    /// Removes one record (absent is fine).
    pub fn remove(&self, network: &str, a: &Attachment) {
        let _ = std::fs::remove_file(self.file(network, a));
    }

    /// Every readable record; unreadable files are logged and skipped.
    pub fn list(&self) -> Vec<Record> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in dir.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => out.push(r),
                Err(why) => {
                    warn!(file = %p.display(), "skipping an unreadable CNI attachment record: {why}")
                }
            }
        }
        out
    }
}

/// The CNI side of one host's agent.
pub struct CniAgent<B> {
    cluster: B,
    host: String,
    records: Records,
    /// Pools this agent has made sure this host holds (with their gateway and exclusions).
    ensured: Mutex<HashSet<RangePlan>>,
    /// Probe addresses on the LAN before handing them out.
    lan_checks: Option<LanChecks>,
}

/// How an allocator refusal reads to a runtime.
pub fn cni_error(e: BackendError) -> CniError {
    match e {
        BackendError::Unavailable(why) => CniError::new(
            code::TRY_AGAIN,
            format!(
                "the raftipam cluster cannot decide now ({why}); the runtime may try again later"
            ),
        ),
        BackendError::Alloc(a) => {
            let c = match &a {
                AllocError::PoolFull { .. } => code::POOL_FULL,
                AllocError::QuotaExceeded { .. } => code::QUOTA,
                AllocError::HeldBy { .. }
                | AllocError::Reserved { .. }
                | AllocError::Cooling { .. }
                | AllocError::OutsidePool { .. }
                | AllocError::OwnerHoldsOther { .. }
                | AllocError::Quarantined { .. } => code::ADDRESS_TAKEN,
                _ => code::REFUSED,
            };
            CniError::new(c, a.to_string())
        }
    }
}

fn as_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

/// Whether every address of `r` lies in one of `cover` (sorted or not).
fn covered(r: &AddrRange, cover: &[AddrRange]) -> bool {
    let mut spans: Vec<(u128, u128)> = cover
        .iter()
        .filter(|c| c.first.is_ipv4() == r.first.is_ipv4())
        .map(|c| (as_u128(c.first), as_u128(c.last)))
        .collect();
    spans.sort();
    let (mut at, end) = (as_u128(r.first), as_u128(r.last));
    for (a, b) in spans {
        if a > at {
            break;
        }
        if b >= at {
            if b >= end {
                return true;
            }
            at = b + 1;
        }
    }
    false
}

impl<B: Inventory> CniAgent<B> {
    /// The agent of `host`, keeping attachment records in `records`.
    pub fn new(cluster: B, host: impl Into<String>, records: Records) -> CniAgent<B> {
        CniAgent {
            cluster,
            host: host.into(),
            records,
            ensured: Mutex::new(HashSet::new()),
            lan_checks: None,
        }
    }

    /// The same agent probing every address on the LAN before handing it out.
    pub fn with_lan_checks(mut self, checks: Option<LanChecks>) -> CniAgent<B> {
        self.lan_checks = checks;
        self
    }

    /// This agent's host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Carries out one call.
    pub async fn handle(&self, req: AgentRequest) -> AgentReply {
        super::spec::check_network_name(&req.network)?;
        let attachment = || {
            req.attachment.clone().ok_or_else(|| {
                CniError::new(
                    code::ENVIRONMENT,
                    format!("{:?} needs an attachment", req.command),
                )
            })
        };
        match req.command {
            Command::Add => self.add(&req, attachment()?).await,
            Command::Del => self.del(&req.network, &attachment()?).await,
            Command::Check => self.check(&req, &attachment()?).await,
            Command::Gc => self.gc(&req).await,
            Command::Status => self.status(&req).await,
            Command::Version => Err(CniError::new(
                code::REFUSED,
                "VERSION is answered by the plugin, not the agent",
            )),
        }
    }

    /// Makes sure this host holds `r`'s pool, its gateway and its exclusions; once per agent.
    async fn ensure_pool(&self, r: &RangePlan) -> Result<(), CniError> {
        let mut ensured = self.ensured.lock().await;
        if ensured.contains(r) {
            return Ok(());
        }
        let info = match self.cluster.pool(&r.pool).await {
            Ok(i) => Some(i),
            Err(BackendError::Alloc(AllocError::NoSuchPool(_))) => None,
            Err(e) => return Err(cni_error(e)),
        };
        let holds = info
            .as_ref()
            .is_some_and(|i| i.holders.contains_key(&self.host));
        if !holds {
            let mut spec = PoolSpec::new(r.pool.space.clone()).subnet(r.pool.subnet);
            if let Some(range) = r.pool.range {
                spec = spec.range(range);
            }
            spec = spec.reserve(r.exclude.iter().copied());
            match self
                .cluster
                .apply(Op::RequestPool {
                    spec,
                    holder: self.host.clone(),
                })
                .await
                .map_err(cni_error)?
            {
                Outcome::Pool { created: true, .. } => {
                    info!(pool = %r.pool, host = %self.host, "CNI: pool created")
                }
                _ => debug!(pool = %r.pool, host = %self.host, "CNI: pool joined"),
            }
        }
        let info = match info {
            Some(i) if holds => i,
            _ => self.cluster.pool(&r.pool).await.map_err(cni_error)?,
        };
        // Exclusions the pool was created without: held back as this host's shared
        // reservations (as Docker's --aux-address), never silently ignored.
        let late: Vec<&AddrRange> = r
            .exclude
            .iter()
            .filter(|x| !covered(x, &info.reserve))
            .collect();
        let mut addrs: Vec<IpAddr> = Vec::new();
        for x in &late {
            let n = as_u128(x.last) - as_u128(x.first) + 1;
            if addrs.len() as u128 + n > MAX_LATE_EXCLUSIONS {
                return Err(CniError::new(
                    code::CONFIG,
                    format!(
                        "the pool {} exists without the exclusion {x}, and more than {MAX_LATE_EXCLUSIONS} addresses would have to be reserved one by one: create the pool with that exclusion (`raftipam pool create ... --reserve`) or narrow ipam.exclude",
                        r.pool
                    ),
                ));
            }
            let mut a = as_u128(x.first);
            while a <= as_u128(x.last) {
                addrs.push(match x.first {
                    IpAddr::V4(_) => IpAddr::V4((a as u32).into()),
                    IpAddr::V6(_) => IpAddr::V6(a.into()),
                });
                a += 1;
            }
        }
        addrs.extend(r.gateway);
        for addr in addrs {
            let held = info
                .reservations
                .iter()
                .any(|(a, holders)| *a == addr && holders.contains_key(&self.host));
            if held || (addr == r.pool.subnet.network() || addr == r.pool.subnet.broadcast()) {
                continue;
            }
            self.cluster
                .apply(Op::Reserve {
                    pool: r.pool.clone(),
                    addr,
                    holder: self.host.clone(),
                })
                .await
                .map_err(|e| {
                    let mut c = cni_error(e);
                    c.msg = format!("reserving {addr} in {} for this host: {}", r.pool, c.msg);
                    c
                })?;
        }
        ensured.insert(r.clone());
        Ok(())
    }

    async fn add(&self, req: &AgentRequest, a: Attachment) -> AgentReply {
        if req.ranges.is_empty() {
            return Err(CniError::new(
                code::CONFIG,
                "ADD without a subnet to allocate from",
            ));
        }
        for ip in &req.requested {
            if !req.ranges.iter().any(|r| r.pool.subnet.contains(ip)) {
                return Err(CniError::new(
                    code::CONFIG,
                    format!(
                        "the requested address {ip} is in none of the configured subnets ({})",
                        req.ranges
                            .iter()
                            .map(|r| r.pool.subnet.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        let owner = Owner::new(self.host.clone(), a.owner_endpoint(&req.network));
        // The record first: if this process dies after the allocation, the attachment is
        // still known to be this namespace's.
        if let Err(e) = self.records.put(&Record {
            network: req.network.clone(),
            attachment: a.clone(),
            netns: req.netns.clone(),
        }) {
            warn!("cannot write the CNI attachment record: {e}");
        }
        let mut granted: Vec<(PoolId, Granted, u64)> = Vec::new();
        for r in &req.ranges {
            let step = async {
                self.ensure_pool(r).await?;
                let addr = req
                    .requested
                    .iter()
                    .copied()
                    .find(|ip| r.pool.subnet.contains(ip));
                if let Some(checks) = &self.lan_checks {
                    return match checks
                        .allocate(&self.cluster, &self.host, &r.pool, addr, &owner, Order::PoolDefault)
                        .await
                        .map_err(cni_error)?
                    {
                        Checked::Granted { addr, seq, .. } => Ok((addr, seq)),
                        Checked::InUse { addr, mac } => Err(CniError::new(
                            code::ADDRESS_TAKEN,
                            format!("{addr} is in use on the LAN: the device {mac} answers for it (now quarantined, see `raftipam addr conflicts`); ask for another address, or if that device is gone for good, `raftipam addr clear {} {addr}`", r.pool),
                        )),
                        Checked::AllAnswered { found } => Err(CniError::new(
                            code::ADDRESS_TAKEN,
                            format!("every address tried in pool {} is in use on the LAN by a device raftipam does not know: {} (now quarantined); declare those devices (`raftipam pool reserve`), or try again", r.pool, list_found(&found)),
                        )),
                    };
                }
                match self
                    .cluster
                    .apply(Op::Allocate {
                        pool: r.pool.clone(),
                        addr,
                        owner: owner.clone(),
                        order: Order::PoolDefault,
                    })
                    .await
                    .map_err(cni_error)?
                {
                    Outcome::Allocated { addr, seq, .. } => Ok((addr, seq)),
                    other => Err(CniError::new(
                        code::REFUSED,
                        format!("the cluster answered {other:?} to an allocation"),
                    )),
                }
            };
            match step.await {
                Ok((addr, seq)) => granted.push((
                    r.pool.clone(),
                    Granted {
                        address: addr,
                        gateway: r.gateway,
                    },
                    seq,
                )),
                Err(e) => {
                    // Nothing half-given: what this call took in the other subnets goes back.
                    for (pool, g, seq) in &granted {
                        let _ = self
                            .cluster
                            .apply(Op::ReleaseIfUnchanged {
                                pool: pool.clone(),
                                addr: g.address.addr(),
                                host: self.host.clone(),
                                seq: *seq,
                            })
                            .await;
                    }
                    return Err(e.details(format!("pool {}", r.pool)));
                }
            }
        }
        info!(
            network = %req.network,
            container = %a.container_id,
            ifname = %a.ifname,
            addrs = ?granted.iter().map(|g| g.1.address.to_string()).collect::<Vec<_>>(),
            "CNI ADD"
        );
        Ok(AgentOk::Granted(granted.into_iter().map(|g| g.1).collect()))
    }

    /// This host's allocations of `network`, by attachment.
    async fn attachments(
        &self,
        network: &str,
    ) -> Result<BTreeMap<Attachment, Vec<(PoolId, Allocation)>>, CniError> {
        let mine = self
            .cluster
            .host_allocations(&self.host)
            .await
            .map_err(cni_error)?;
        let mut out: BTreeMap<Attachment, Vec<(PoolId, Allocation)>> = BTreeMap::new();
        for (pool, a) in mine {
            if a.owner.host != self.host {
                continue;
            }
            if let Some((net, att)) = parse_owner_endpoint(&a.owner.endpoint) {
                if net == network {
                    out.entry(att).or_default().push((pool, a));
                }
            }
        }
        Ok(out)
    }

    async fn release_all(&self, list: &[(PoolId, Allocation)]) -> Result<usize, CniError> {
        let mut n = 0;
        for (pool, a) in list {
            let out = self
                .cluster
                .apply(Op::ReleaseIfUnchanged {
                    pool: pool.clone(),
                    addr: a.addr,
                    host: self.host.clone(),
                    seq: a.seq,
                })
                .await
                .map_err(cni_error)?;
            if matches!(out, Outcome::Released { .. }) {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn del(&self, network: &str, a: &Attachment) -> AgentReply {
        let all = self.attachments(network).await?;
        let n = match all.get(a) {
            Some(list) => self.release_all(list).await?,
            None => 0,
        };
        self.records.remove(network, a);
        info!(network, container = %a.container_id, ifname = %a.ifname, released = n, "CNI DEL");
        Ok(AgentOk::Released(n))
    }

    async fn check(&self, req: &AgentRequest, a: &Attachment) -> AgentReply {
        let all = self.attachments(&req.network).await?;
        let held: BTreeSet<IpAddr> = all
            .get(a)
            .map(|l| l.iter().map(|(_, x)| x.addr).collect())
            .unwrap_or_default();
        if held.is_empty() {
            return Err(CniError::new(
                code::NOT_HELD,
                format!(
                    "container {} interface {} holds no address of network {} on host {}: ADD it again",
                    a.container_id, a.ifname, req.network, self.host
                ),
            ));
        }
        for ip in &req.prev_ips {
            if !held.contains(ip) {
                return Err(CniError::new(
                    code::NOT_HELD,
                    format!(
                        "{ip} (from prevResult) is not held by container {} interface {} on host {}; it holds {}",
                        a.container_id,
                        a.ifname,
                        self.host,
                        held.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        Ok(AgentOk::Fine)
    }

    async fn gc(&self, req: &AgentRequest) -> AgentReply {
        let Some(valid) = &req.valid_attachments else {
            return Err(CniError::new(
                code::CONFIG,
                "GC without cni.dev/valid-attachments: nothing released (an empty list must be given explicitly)",
            ));
        };
        let valid: HashSet<&Attachment> = valid.iter().collect();
        let all = self.attachments(&req.network).await?;
        let mut n = 0;
        for (a, list) in &all {
            if valid.contains(a) {
                continue;
            }
            n += self.release_all(list).await?;
            self.records.remove(&req.network, a);
        }
        for r in self.records.list() {
            if r.network == req.network && !valid.contains(&r.attachment) {
                self.records.remove(&r.network, &r.attachment);
            }
        }
        info!(network = %req.network, host = %self.host, released = n, valid = valid.len(), "CNI GC");
        Ok(AgentOk::Released(n))
    }

    async fn status(&self, req: &AgentRequest) -> AgentReply {
        let not_available = |msg: String| CniError::new(code::NOT_AVAILABLE, msg);
        let pools = self.cluster.pools().await.map_err(|e| {
            not_available(format!("the raftipam cluster cannot serve an ADD now: {e}"))
        })?;
        for r in &req.ranges {
            if let Some(p) = pools.iter().find(|p| p.id == r.pool) {
                if p.usage.free == 0 && p.usage.cooling == 0 {
                    return Err(not_available(format!(
                        "the pool {} has no free address ({})",
                        p.id, p.usage
                    )));
                }
            }
        }
        Ok(AgentOk::Fine)
    }

    /// Releases the addresses of attachments whose network namespace has been gone at two
    /// passes at least `grace` apart (a runtime that crashed before its `DEL`), and drops
    /// the records of attachments that hold nothing any more. Runs in the agent's background
    /// loop; `seen` keeps the first sighting between passes.
    pub async fn sweep_vanished(
        &self,
        seen: &mut HashMap<(String, Attachment), Instant>,
        now: Instant,
        grace: Duration,
    ) -> Result<usize, CniError> {
        let records = self.records.list();
        let mut gone = Vec::new();
        let mut still: HashSet<(String, Attachment)> = HashSet::new();
        for r in records {
            if r.netns.is_empty() || Path::new(&r.netns).exists() {
                continue;
            }
            let key = (r.network.clone(), r.attachment.clone());
            still.insert(key.clone());
            let first = *seen.entry(key).or_insert(now);
            if now.duration_since(first) >= grace {
                gone.push(r);
            }
        }
        seen.retain(|k, _| still.contains(k));
        let mut n = 0;
        let mut by_net: BTreeMap<String, Vec<Record>> = BTreeMap::new();
        for r in gone {
            by_net.entry(r.network.clone()).or_default().push(r);
        }
        for (net, list) in by_net {
            let all = self.attachments(&net).await?;
            for r in list {
                if let Some(held) = all.get(&r.attachment) {
                    let k = self.release_all(held).await?;
                    warn!(
                        network = %net,
                        container = %r.attachment.container_id,
                        ifname = %r.attachment.ifname,
                        netns = %r.netns,
                        released = k,
                        "CNI: the attachment's network namespace is gone and no DEL came; released its addresses"
                    );
                    n += k;
                }
                self.records.remove(&net, &r.attachment);
                seen.remove(&(net.clone(), r.attachment.clone()));
            }
        }
        Ok(n)
    }
}

/// The local socket's HTTP surface: `POST /cni/v1` with an [`AgentRequest`], answered with
/// an [`AgentReply`] (status 200 either way; the body says which).
pub fn router<B: Inventory>(agent: Arc<CniAgent<B>>, call_timeout: Duration) -> axum::Router {
    use axum::routing::post;
    axum::Router::new()
        .route(
            "/cni/v1",
            post(move |body: axum::body::Bytes| {
                let agent = Arc::clone(&agent);
                async move {
                    let reply: AgentReply = match serde_json::from_slice::<AgentRequest>(&body) {
                        Err(e) => Err(CniError::new(
                            code::DECODE,
                            format!("the agent could not read the plugin's request: {e}; are the plugin and the agent the same raftipam version?"),
                        )),
                        Ok(req) => match tokio::time::timeout(call_timeout, agent.handle(req)).await {
                            Ok(r) => r,
                            Err(_) => Err(CniError::new(
                                code::TRY_AGAIN,
                                format!(
                                    "the cluster did not answer within {}; the runtime may try again later",
                                    humantime::format_duration(call_timeout)
                                ),
                            )),
                        },
                    };
                    axum::Json(reply)
                }
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(super::spec::MAX_STDIN + 64 * 1024))
}

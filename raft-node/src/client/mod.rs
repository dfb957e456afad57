//! The typed async client of a raftipam cluster; the joiner's half of a join ([`join`]); and,
//! with the feature `docker`, the cluster as the Docker plugin's backend and the host agent's
//! inventory (`backend`).
//!
//! **What it must never do:** name an openraft type (it speaks [`crate::api`] over the API
//! channel of the transport layer); give up on a write without saying the outcome is
//! unknown; change a request id between retries of one call.
//!
//! A [`Client`] knows the cluster's endpoints, talks to one at a time, and moves on to the
//! next when one fails; the node it talks to forwards to the leader. Every write carries a
//! [`RequestId`] that stays the same across retries, so a retried call is applied at most
//! once (the state machine answers a repeat with the first outcome).

#[cfg(feature = "docker")]
pub mod backend;
pub mod join;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allocator_core::{
    AllocError, Allocation, Holding, Op, Order, Outcome, Owner, PoolId, PoolInfo, PoolSpec,
    Released,
};
use ipnet::IpNet;
use tarpc::client::RpcError;
use tarpc::context::Context;
use thiserror::Error;

use crate::api::RequestId;
use crate::api::{
    AdminCommand, ApiError, Consistency, NodeInfo, NodeStatus, Query, QueryReply, WriteReply,
    WriteRequest,
};
use crate::transport::codec::{connect_versioned, CHANNEL_API};
use crate::transport::hello::{PeerVersion, PROTOCOL};
use crate::transport::rpc::{ApiRpcClient, Via};

/// Why a client call failed.
#[derive(Debug, Clone, Error)]
pub enum ClientError {
    /// The cluster answered with an error (the allocator refused, no quorum, ...).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// No endpoint could be reached in time.
    #[error("could not reach the cluster ({endpoints}) within {}: {last}", humantime::format_duration(*.timeout))]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// The time allowed.
        timeout: Duration,
        /// The last error seen.
        last: String,
    },
    /// No endpoints were given.
    #[error(
        "no endpoints given: name the cluster with --endpoints HOST:PORT,... or RAFTIPAM_ENDPOINTS"
    )]
    NoEndpoints,
    /// The node answered something this client does not expect.
    #[error("unexpected reply from the cluster: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The allocator's refusal, if that is what this is.
    pub fn alloc(&self) -> Option<&AllocError> {
        match self {
            ClientError::Api(ApiError::Alloc(e)) => Some(e),
            _ => None,
        }
    }
}

/// How a client behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long one call may take, retries included (default 15 s: a bit more than a node's
    /// write timeout, so that the node's "no quorum" answer arrives).
    pub timeout: Duration,
    /// How long to wait for a TCP connection (default 2 s; a TLS handshake may take up to
    /// [`crate::tls::HANDSHAKE_TIMEOUT`] more).
    pub connect_timeout: Duration,
    /// Mutual TLS with this certificate (`None`: plain TCP).
    pub tls: Option<crate::tls::Tls>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(2),
            tls: None,
        }
    }
}

/// Opens a connection to a node of this process, in memory (see `Node::client`).
pub(crate) type LocalDial =
    Arc<dyn Fn() -> Result<ApiRpcClient, std::io::Error> + Send + Sync + 'static>;

struct Inner {
    endpoints: Vec<String>,
    /// In-process: connections are made in memory to the node, not dialled over TCP.
    local: Option<LocalDial>,
    /// Open connections, with the protocol each speaks (from its version handshake).
    conns: Mutex<Vec<Option<(ApiRpcClient, u32)>>>,
    /// One dial at a time per endpoint: concurrent first calls share one new connection
    /// instead of each opening its own (a thousand calls at once had opened hundreds, which
    /// a node's admission limits then held back past the calls' deadlines).
    dialing: Vec<tokio::sync::Mutex<()>>,
    preferred: AtomicUsize,
    /// The preferred endpoint may not be the leader: look the leader up before the next call.
    stale_leader: AtomicBool,
    refreshing: AtomicBool,
    client_id: u64,
    next_serial: AtomicU64,
    inflight: Mutex<BTreeSet<u64>>,
    cfg: ClientConfig,
}

/// A client of a raftipam cluster. Cheap to clone; clones share connections and the request
/// id sequence, and may be used concurrently.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Removes a serial from the in-flight set when its call ends (however it ends).
struct InFlight<'a> {
    set: &'a Mutex<BTreeSet<u64>>,
    serial: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.serial);
    }
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

impl Client {
    /// A client of the cluster reachable at `endpoints` (`HOST:PORT` each). Connections are
    /// opened on first use.
    pub fn connect<S: AsRef<str>>(
        endpoints: impl IntoIterator<Item = S>,
    ) -> Result<Client, ClientError> {
        Self::with_config(endpoints, ClientConfig::default())
    }

    /// Like [`Client::connect`], with settings.
    pub fn with_config<S: AsRef<str>>(
        endpoints: impl IntoIterator<Item = S>,
        cfg: ClientConfig,
    ) -> Result<Client, ClientError> {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|s| s.as_ref().trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let n = endpoints.len();
        Ok(Client {
            inner: Arc::new(Inner {
                conns: Mutex::new(vec![None; n]),
                dialing: (0..n).map(|_| tokio::sync::Mutex::new(())).collect(),
                endpoints,
                local: None,
                preferred: AtomicUsize::new(0),
                stale_leader: AtomicBool::new(true),
                refreshing: AtomicBool::new(false),
                client_id: random_u64(),
                next_serial: AtomicU64::new(1),
                inflight: Mutex::new(BTreeSet::new()),
                cfg,
            }),
        })
    }

    /// A client of the node at `addr` in this process, whose connections `dial` makes in
    /// memory (`Node::client`).
    pub(crate) fn in_process(addr: String, dial: LocalDial, cfg: ClientConfig) -> Client {
        Client {
            inner: Arc::new(Inner {
                conns: Mutex::new(vec![None]),
                dialing: vec![tokio::sync::Mutex::new(())],
                endpoints: vec![addr],
                local: Some(dial),
                preferred: AtomicUsize::new(0),
                stale_leader: AtomicBool::new(false),
                refreshing: AtomicBool::new(false),
                client_id: random_u64(),
                next_serial: AtomicU64::new(1),
                inflight: Mutex::new(BTreeSet::new()),
                cfg,
            }),
        }
    }

    /// The endpoints this client knows.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    async fn conn(&self, i: usize) -> Result<ApiRpcClient, std::io::Error> {
        self.conn_versioned(i).await.map(|(c, _)| c)
    }

    /// The connection to endpoint `i` (opened if needed) and the protocol it speaks.
    async fn conn_versioned(&self, i: usize) -> Result<(ApiRpcClient, u32), std::io::Error> {
        if let Some(c) = &self.inner.conns.lock().unwrap_or_else(|e| e.into_inner())[i] {
            return Ok(c.clone());
        }
        let _dialing = self.inner.dialing[i].lock().await;
        // Another caller may have dialled while this one waited.
        if let Some(c) = &self.inner.conns.lock().unwrap_or_else(|e| e.into_inner())[i] {
            return Ok(c.clone());
        }
        let c = match &self.inner.local {
            Some(dial) => (dial()?, PROTOCOL),
            None => {
                let (t, version) = connect_versioned(
                    &self.inner.endpoints[i],
                    CHANNEL_API,
                    self.inner.cfg.connect_timeout,
                    self.inner.cfg.tls.as_ref(),
                )
                .await?;
                (
                    ApiRpcClient::new(tarpc::client::Config::default(), t).spawn(),
                    version.protocol,
                )
            }
        };
        self.inner.conns.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(c.clone());
        Ok(c)
    }

    fn drop_conn(&self, i: usize) {
        self.inner.conns.lock().unwrap_or_else(|e| e.into_inner())[i] = None;
    }

    /// Calls `f` on the preferred endpoint, moving on to the next one on transport failures,
    /// until the client's timeout.
    async fn call<T, F, Fut>(&self, only: Option<usize>, f: F) -> Result<T, ClientError>
    where
        F: Fn(ApiRpcClient, Context) -> Fut,
        Fut: Future<Output = Result<Result<T, ApiError>, RpcError>>,
    {
        self.call_within(only, self.inner.cfg.timeout, f).await
    }

    async fn call_within<T, F, Fut>(
        &self,
        only: Option<usize>,
        timeout: Duration,
        f: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(ApiRpcClient, Context) -> Fut,
        Fut: Future<Output = Result<Result<T, ApiError>, RpcError>>,
    {
        let deadline = Instant::now() + timeout;
        let n = self.inner.endpoints.len();
        if only.is_none() && self.inner.stale_leader.load(Ordering::Relaxed) {
            self.refresh_leader(deadline).await;
        }
        let mut i = only.unwrap_or_else(|| self.inner.preferred.load(Ordering::Relaxed) % n);
        let mut backoff = Duration::from_millis(20);
        let mut last = String::from("no attempt finished");
        // Endpoints that said they are in no cluster: when all have, that is the answer.
        let mut uninitialised = vec![false; n];
        loop {
            if Instant::now() >= deadline {
                return Err(ClientError::Unreachable {
                    endpoints: self.inner.endpoints.join(","),
                    timeout,
                    last,
                });
            }
            let retry = match self.conn(i).await {
                Err(e) => {
                    last = format!("{}: {e}", self.inner.endpoints[i]);
                    true
                }
                Ok(c) => {
                    let mut ctx = tarpc::context::current();
                    ctx.deadline = deadline;
                    match f(c, ctx).await {
                        Ok(Ok(v)) => {
                            self.inner.preferred.store(i, Ordering::Relaxed);
                            return Ok(v);
                        }
                        Ok(Err(e @ ApiError::Unavailable(_))) => return Err(e.into()),
                        Ok(Err(e @ ApiError::NotInitialised(_))) => {
                            uninitialised[i] = true;
                            if only.is_some() || uninitialised.iter().all(|u| *u) {
                                return Err(e.into());
                            }
                            last = format!("{}: {e}", self.inner.endpoints[i]);
                            true
                        }
                        Ok(Err(e @ (ApiError::NotLeader { .. } | ApiError::Internal(_)))) => {
                            last = format!("{}: {e}", self.inner.endpoints[i]);
                            true
                        }
                        Ok(Err(e)) => return Err(e.into()),
                        Err(e) => {
                            last = format!("{}: {e}", self.inner.endpoints[i]);
                            self.drop_conn(i);
                            true
                        }
                    }
                }
            };
            if retry {
                if only.is_none() {
                    i = (i + 1) % n;
                    self.inner.stale_leader.store(true, Ordering::Relaxed);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(backoff.min(left)).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }

    /// Makes the leader the preferred endpoint, if it is one of the endpoints, so that writes
    /// skip the forwarding hop. One caller looks it up; concurrent callers go on meanwhile.
    async fn refresh_leader(&self, deadline: Instant) {
        if self.inner.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let n = self.inner.endpoints.len();
        let start = self.inner.preferred.load(Ordering::Relaxed) % n;
        for k in 0..n {
            let i = (start + k) % n;
            let Ok(c) = self.conn(i).await else { continue };
            let mut ctx = tarpc::context::current();
            ctx.deadline = deadline.min(Instant::now() + self.inner.cfg.connect_timeout);
            let Ok(s) = c.status(ctx).await else {
                self.drop_conn(i);
                continue;
            };
            let Some(leader) = s.leader else { break };
            let addr = s.members.iter().find(|m| m.id == leader).map(|m| &m.addr);
            if let Some(j) = addr.and_then(|a| self.inner.endpoints.iter().position(|e| e == a)) {
                self.inner.preferred.store(j, Ordering::Relaxed);
            }
            self.inner.stale_leader.store(false, Ordering::Relaxed);
            break;
        }
        self.inner.refreshing.store(false, Ordering::Release);
    }

    /// Applies one operation to the cluster (retried safely: same request id).
    pub async fn apply(&self, op: Op) -> Result<WriteReply, ClientError> {
        let serial = self.inner.next_serial.fetch_add(1, Ordering::Relaxed);
        self.inner
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(serial);
        let _guard = InFlight {
            set: &self.inner.inflight,
            serial,
        };
        let id = RequestId {
            client: self.inner.client_id,
            serial,
        };
        self.call(None, |c, ctx| {
            let acked_below = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .first()
                .copied()
                .unwrap_or(serial);
            let req = WriteRequest {
                id,
                acked_below,
                op: op.clone(),
            };
            async move { c.write(ctx, req, Via::Direct).await }
        })
        .await
    }

    /// Creates the pool described by `spec`, or joins it if it exists; `holder` (a host name)
    /// gains a reference. Returns the pool's id.
    pub async fn create_pool(&self, spec: PoolSpec, holder: &str) -> Result<PoolId, ClientError> {
        match self
            .apply(Op::RequestPool {
                spec,
                holder: holder.to_string(),
            })
            .await?
            .outcome
        {
            Outcome::Pool { pool, .. } => Ok(pool),
            o => Err(ClientError::Protocol(format!("{o:?}"))),
        }
    }

    /// Deletes a pool (with `force`, even if addresses are allocated). True if it is gone.
    pub async fn delete_pool(&self, pool: &PoolId, force: bool) -> Result<bool, ClientError> {
        match self
            .apply(Op::DeletePool {
                pool: pool.clone(),
                force,
            })
            .await?
            .outcome
        {
            Outcome::PoolReleased { removed } => Ok(removed),
            o => Err(ClientError::Protocol(format!("{o:?}"))),
        }
    }

    /// Allocates an address to `owner`: `addr` if given, else the pool's next free one.
    pub async fn allocate(
        &self,
        pool: &PoolId,
        addr: Option<IpAddr>,
        owner: Owner,
    ) -> Result<IpNet, ClientError> {
        match self
            .apply(Op::Allocate {
                pool: pool.clone(),
                addr,
                owner,
                order: Order::PoolDefault,
            })
            .await?
            .outcome
        {
            Outcome::Allocated { addr, .. } => Ok(addr),
            o => Err(ClientError::Protocol(format!("{o:?}"))),
        }
    }

    /// Releases `addr` held by `host` (or, with `force`, whoever holds it).
    pub async fn release(
        &self,
        pool: &PoolId,
        addr: IpAddr,
        host: &str,
        force: bool,
    ) -> Result<Released, ClientError> {
        match self
            .apply(Op::Release {
                pool: pool.clone(),
                addr,
                host: host.to_string(),
                force,
            })
            .await?
            .outcome
        {
            Outcome::Released { what } => Ok(what),
            o => Err(ClientError::Protocol(format!("{o:?}"))),
        }
    }

    /// Runs a query with the given consistency.
    pub async fn query(
        &self,
        q: Query,
        consistency: Consistency,
    ) -> Result<QueryReply, ClientError> {
        self.call(None, |c, ctx| {
            let q = q.clone();
            async move { c.read(ctx, q, consistency, Via::Direct).await }
        })
        .await
    }

    /// Runs a local (non-linearizable) query on the node at endpoint `index` only.
    pub async fn query_node(&self, index: usize, q: Query) -> Result<QueryReply, ClientError> {
        self.call(Some(index), |c, ctx| {
            let q = q.clone();
            async move { c.read(ctx, q, Consistency::Local, Via::Direct).await }
        })
        .await
    }

    /// Every pool (linearizable).
    pub async fn pools(&self) -> Result<Vec<PoolInfo>, ClientError> {
        match self.query(Query::Pools, Consistency::Linearizable).await? {
            QueryReply::Pools(p) => Ok(p),
            r => Err(ClientError::Protocol(format!("{r:?}"))),
        }
    }

    /// One pool (linearizable).
    pub async fn pool(&self, id: &PoolId) -> Result<PoolInfo, ClientError> {
        match self
            .query(Query::Pool(id.clone()), Consistency::Linearizable)
            .await?
        {
            QueryReply::Pool(p) => Ok(p),
            r => Err(ClientError::Protocol(format!("{r:?}"))),
        }
    }

    /// The allocations of one pool (linearizable reads, a page at a time).
    pub async fn allocations(&self, id: &PoolId) -> Result<Vec<Allocation>, ClientError> {
        match self.pages(Some(id)).await {
            Ok(Some(all)) => return Ok(all.into_iter().map(|(_, a)| a).collect()),
            Ok(None) => {}
            Err(e) => return Err(e),
        }
        match self
            .query(Query::Allocations(id.clone()), Consistency::Linearizable)
            .await?
        {
            QueryReply::Allocations(a) => Ok(a),
            r => Err(ClientError::Protocol(format!("{r:?}"))),
        }
    }

    /// Every allocation of every pool (linearizable reads, a page at a time).
    pub async fn all_allocations(&self) -> Result<Vec<(PoolId, Allocation)>, ClientError> {
        if let Some(all) = self.pages(None).await? {
            return Ok(all);
        }
        match self
            .query(Query::AllAllocations, Consistency::Linearizable)
            .await?
        {
            QueryReply::AllAllocations(a) => Ok(a),
            r => Err(ClientError::Protocol(format!("{r:?}"))),
        }
    }

    /// Pages through a listing of allocations ([`Query::AllocationsPage`], 4,096 a page),
    /// each page a linearizable read of its own (the listing as a whole is not one
    /// snapshot). `None`: the node answered the first page with something else than a page or
    /// an allocator's error (a release before 0.2, which does not know the query): the caller
    /// asks the whole list at once then. At most a million pages.
    async fn pages(
        &self,
        pool: Option<&PoolId>,
    ) -> Result<Option<Vec<(PoolId, Allocation)>>, ClientError> {
        let mut out = Vec::new();
        let mut after = None;
        for n in 0..1_000_000u32 {
            let q = Query::AllocationsPage {
                pool: pool.cloned(),
                after: after.clone(),
                limit: allocator_core::MAX_ALLOCATIONS_PAGE as u32,
            };
            let page = match self.query(q, Consistency::Linearizable).await {
                Ok(QueryReply::AllocationsPage(p)) => p,
                Err(e @ ClientError::Api(ApiError::Alloc(_))) => return Err(e),
                Ok(_) | Err(_) if n == 0 => return Ok(None),
                Ok(r) => return Err(ClientError::Protocol(format!("{r:?}"))),
                Err(e) => return Err(e),
            };
            out.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(Some(out)),
            }
        }
        Err(ClientError::Protocol(
            "a listing of allocations did not end after a million pages".into(),
        ))
    }

    /// What holds `addr` (linearizable).
    pub async fn who_has(&self, addr: IpAddr) -> Result<Vec<Holding>, ClientError> {
        match self
            .query(Query::WhoHas(addr), Consistency::Linearizable)
            .await?
        {
            QueryReply::WhoHas(h) => Ok(h),
            r => Err(ClientError::Protocol(format!("{r:?}"))),
        }
    }

    /// The status of the first node that answers.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        self.call(None, |c, ctx| async move { c.status(ctx).await.map(Ok) })
            .await
    }

    /// The status of the node at endpoint `index`.
    pub async fn node_status(&self, index: usize) -> Result<NodeStatus, ClientError> {
        self.call(
            Some(index),
            |c, ctx| async move { c.status(ctx).await.map(Ok) },
        )
        .await
    }

    /// The release, protocol range and view of the node at endpoint `index`. A node of
    /// raftipam 0.1.x, which knew no `info` call, is described from its status, with
    /// release `0.1.x`.
    pub async fn node_info(&self, index: usize) -> Result<NodeInfo, ClientError> {
        let status = self.node_status(index).await?;
        let protocol = self
            .conn_versioned(index)
            .await
            .map(|(_, p)| p)
            .unwrap_or(1);
        if protocol < 2 {
            let legacy = PeerVersion::legacy().binary;
            return Ok(NodeInfo {
                members: vec![(status.id, legacy.clone())],
                status,
                binary: legacy,
                protocol_min: 1,
                protocol_max: 1,
                cluster_version: 1,
            });
        }
        self.call(
            Some(index),
            |c, ctx| async move { c.info(ctx).await.map(Ok) },
        )
        .await
    }

    /// Sends an administration command (to the first endpoint for `Init`, else to any node,
    /// which forwards it to the leader). Adding a node waits until it has caught up (up to
    /// about a minute).
    pub async fn admin(&self, cmd: AdminCommand) -> Result<NodeStatus, ClientError> {
        let only = (cmd == AdminCommand::Init).then_some(0);
        let timeout = self.inner.cfg.timeout.max(Duration::from_secs(70));
        self.call_within(only, timeout, |c, ctx| {
            let cmd = cmd.clone();
            async move { c.admin(ctx, cmd, Via::Direct).await }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Node, NodeConfig};

    /// A write retried with the same request id (as after a lost answer) is applied once:
    /// even an allocation for an owner without an endpoint name, which the allocator itself
    /// would happily grant twice, gets the first answer back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retried_write_with_the_same_request_id_is_applied_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = NodeConfig::new(
            1,
            "127.0.0.1:0".parse().expect("addr"),
            dir.path().join("n1"),
        );
        let node = Node::start(cfg).await.expect("start");
        node.init().await.expect("init");
        let client = Client::connect([node.addr().to_string()]).expect("client");
        let spec = {
            let mut spec = PoolSpec::default();
            spec.space = "g".into();
            spec.subnet = Some("10.9.0.0/24".parse().expect("cidr"));
            spec
        };
        let pool = client.create_pool(spec, "h").await.expect("pool");
        let conn = client.conn(0).await.expect("connect");
        let req = WriteRequest {
            id: RequestId {
                client: 42,
                serial: 7,
            },
            acked_below: 7,
            op: Op::Allocate {
                pool: pool.clone(),
                addr: None,
                owner: Owner::new("h", ""),
                order: Order::Lowest,
            },
        };
        let first = conn
            .write(
                tarpc::context::current(),
                req.clone(),
                crate::transport::rpc::Via::Direct,
            )
            .await
            .expect("rpc")
            .expect("write");
        let again = conn
            .write(
                tarpc::context::current(),
                req,
                crate::transport::rpc::Via::Direct,
            )
            .await
            .expect("rpc")
            .expect("write");
        assert_eq!(first.outcome, again.outcome);
        assert_eq!(client.allocations(&pool).await.expect("list").len(), 1);
        node.shutdown().await.expect("shutdown");
    }

    /// Listings page through the node (`Query::AllocationsPage`): small pages add up to
    /// the whole list, the client's listings (which page by themselves) give the same, and a
    /// page is never larger than the node allows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listings_page_through_the_allocations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = NodeConfig::new(
            1,
            "127.0.0.1:0".parse().expect("addr"),
            dir.path().join("n1"),
        );
        let node = Node::start(cfg).await.expect("start");
        node.init().await.expect("init");
        let client = Client::connect([node.addr().to_string()]).expect("client");
        let mut pools = Vec::new();
        for net in ["10.9.0.0/24", "10.10.0.0/24"] {
            let spec = PoolSpec::new("g").subnet(net.parse().expect("cidr"));
            let pool = client.create_pool(spec, "h").await.expect("pool");
            for i in 0..7 {
                client
                    .allocate(&pool, None, Owner::new("h", format!("e{i}")))
                    .await
                    .expect("allocate");
            }
            pools.push(pool);
        }
        let mut paged = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let q = Query::AllocationsPage {
                pool: None,
                after: after.clone(),
                limit: 3,
            };
            let QueryReply::AllocationsPage(page) = client
                .query(q, Consistency::Linearizable)
                .await
                .expect("page")
            else {
                panic!("not a page");
            };
            assert!(page.items.len() <= 3);
            pages += 1;
            paged.extend(page.items);
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(pages, 5, "14 allocations by 3 (the last page empty)");
        let whole = node.with_state(|s| s.all_allocations());
        assert_eq!(paged, whole);
        assert_eq!(client.all_allocations().await.expect("all"), whole);
        assert_eq!(
            client.allocations(&pools[1]).await.expect("one pool").len(),
            7
        );
        let huge = Query::AllocationsPage {
            pool: None,
            after: None,
            limit: u32::MAX,
        };
        let QueryReply::AllocationsPage(page) = client
            .query(huge, Consistency::Linearizable)
            .await
            .expect("page")
        else {
            panic!("not a page");
        };
        assert_eq!(
            page.items.len(),
            14,
            "capped at the node's page, not refused"
        );
        node.shutdown().await.expect("shutdown");
    }
}

//! A running node: its Raft instance, its stores, and the TCP port serving both tarpc
//! services.
//!
//! Any node accepts every call. Writes and membership changes run on the leader; a follower
//! forwards them (one hop: a forwarded call is never forwarded again) and retries while
//! leadership moves, until the call's deadline. A follower answers linearizable reads
//! itself: it asks the leader for a read index (one call per batch of reads, see
//! [`super::reads`]), waits until it has applied that index, and reads its own state; if the
//! leader cannot be asked (an older version, say), the read is forwarded whole. A call that finds no leader
//! with a quorum within the write timeout fails with [`ApiError::Unavailable`].
//!
//! With TLS ([`NodeConfig::tls`]) every connection is a mutual TLS handshake first; the
//! caller's certificate names who it is, and every call is checked against
//! [`crate::tls::authz`] on the node that receives it — a forwarded call on behalf of the
//! caller the forwarding node names, accepted only from a node certificate. Raft RPCs are
//! accepted only from node certificates. Connections are bounded in total and per address.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use allocator_core::Command;
use futures::StreamExt;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ChangeMembershipError, ClientWriteError, Fatal, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteResponse, SnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotMetaOf, VoteOf};
use openraft::{BasicNode, ChangeMembers, ServerState, SnapshotPolicy};
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_util::either::Either;
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsStream;

use super::codec::{
    connect, framing, server_transport, Conn, CHANNEL_API, CHANNEL_JOIN, CHANNEL_RAFT,
    MAX_API_REQUEST, MAX_FRAME, MAX_JOIN_FRAME,
};
use super::network::{Cut, NetworkFactory};
use super::rpc::{ApiRpc, ApiRpcClient, RaftRpc, Via};
use super::store::{open_db, LogStore, StateMachineStore, StoreError};
use super::types::{Raft, Request, Response, TypeConfig};
use crate::api::{
    AdminCommand, ApiError, Consistency, Identity, Member, NodeStatus, Query, QueryReply, Role,
    WriteReply, WriteRequest,
};
use crate::metrics::Metrics;
use crate::tls::{authz, PeerCert, Tls};

type C = TypeConfig;

/// How a node is run.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (unique in the cluster, never reused).
    pub id: u64,
    /// Address to listen on, `HOST:PORT` (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Address the other nodes and clients reach this node at; default: the bound address.
    pub advertise: Option<String>,
    /// Data directory (created if missing; must belong to this node id).
    pub data_dir: PathBuf,
    /// Serve Prometheus metrics on this address.
    pub metrics: Option<SocketAddr>,
    /// Serve the web view (a live subnet map, read-only) on this address: plain HTTP on a
    /// loopback address, HTTPS with client certificates elsewhere (needs `tls`).
    pub http: Option<SocketAddr>,
    /// With `http`: if the address is taken, log a warning and go on without the web view
    /// (for a default address) instead of failing to start.
    pub http_optional: bool,
    /// How long a write (or linearizable read) may wait for a leader with a quorum.
    pub write_timeout: Duration,
    /// Raft heartbeat interval.
    pub heartbeat: Duration,
    /// Raft election timeout, lower bound (the upper bound is twice this).
    pub election_timeout: Duration,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot (for followers slightly behind).
    pub keep_logs: u64,
    /// Mutual TLS with this node certificate (`None`: plain TCP, anyone may call).
    pub tls: Option<Tls>,
    /// Most connections served at once (default 4,096); more wait in the kernel's backlog.
    pub max_connections: usize,
    /// A connection with no call in flight and none arriving for this long is closed (default
    /// 10 minutes); clients reconnect on their next call.
    pub idle_timeout: Duration,
    /// Most connections from one IP address still in their handshake (default 64; a
    /// connection counts until it has proved who it is and named its channel); more are
    /// closed at once, so one address cannot hold the others' slots with idle connections.
    pub max_connections_per_ip: usize,
}

impl NodeConfig {
    /// A configuration with the defaults: 10 s write timeout, 100 ms heartbeats, 1 s election
    /// timeout, a snapshot every 10,000 entries keeping 1,000 behind it.
    pub fn new(id: u64, listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            id,
            listen,
            advertise: None,
            data_dir: data_dir.into(),
            metrics: None,
            http: None,
            http_optional: false,
            write_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_every: 10_000,
            keep_logs: 1_000,
            tls: None,
            max_connections: 4096,
            idle_timeout: Duration::from_secs(600),
            max_connections_per_ip: 64,
        }
    }
}

/// Why a node could not start or stop.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The data directory.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Binding or serving a port.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The configuration is not usable.
    #[error("invalid node configuration: {0}")]
    Config(String),
    /// Raft failed.
    #[error("raft: {0}")]
    Raft(String),
    /// Local I/O.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// State shared by the servers of one node.
pub(crate) struct NodeInner {
    pub(crate) id: u64,
    pub(crate) addr: String,
    pub(crate) raft: Raft,
    pub(crate) sm: StateMachineStore,
    pub(crate) metrics: Metrics,
    write_timeout: Duration,
    peers: Mutex<HashMap<String, ApiRpcClient>>,
    cut: Arc<Cut>,
    pub(crate) tls: Option<Tls>,
    conns: Arc<Semaphore>,
    idle_timeout: Duration,
    per_ip: Mutex<HashMap<std::net::IpAddr, usize>>,
    max_per_ip: usize,
    /// Set once this node is seen in a membership (it never goes back).
    initialised: std::sync::atomic::AtomicBool,
    /// Linearizable reads share ReadIndex rounds.
    reads: super::reads::ReadBatcher,
    /// A follower's linearizable reads share read-index calls to the leader.
    follower_reads: super::reads::ReadBatcher,
}

/// A running node. Dropping it does not stop it; call [`Node::shutdown`].
pub struct Node {
    inner: Arc<NodeInner>,
    tasks: Vec<JoinHandle<()>>,
    db: Weak<rocksdb::DB>,
    /// The web view's URL, if it is served.
    web: Option<String>,
}

impl Node {
    /// Opens the data directory, starts Raft and serves the port. Returns once the port
    /// accepts connections. A node whose data directory is new waits to be initialised
    /// (`cluster init`) or added to a cluster (`cluster add`).
    pub async fn start(cfg: NodeConfig) -> Result<Node, NodeError> {
        let et = cfg.election_timeout.as_millis() as u64;
        let raft_cfg = openraft::Config {
            cluster_name: "raftipam".into(),
            heartbeat_interval: cfg.heartbeat.as_millis() as u64,
            election_timeout_min: et,
            election_timeout_max: et * 2,
            install_snapshot_timeout: 120_000,
            // Snapshots are asked for by `snapshots::run`, which weighs their size too.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: cfg.keep_logs,
            purge_batch_size: cfg.snapshot_every.clamp(1, 256),
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::Config(e.to_string()))?;

        if let Some(tls) = &cfg.tls {
            if tls.identity().role != Role::Node {
                return Err(NodeError::Config(format!(
                    "the certificate in {} is a {} certificate ({}); a node needs a node certificate (`raftipam cert create-node`)",
                    tls.dir().display(),
                    tls.identity().role.as_str(),
                    tls.identity().name
                )));
            }
        }
        if cfg.advertise.is_none() && cfg.listen.ip().is_unspecified() {
            return Err(NodeError::Config(format!(
                "listening on {} needs an advertise address (--advertise HOST:PORT) that the other nodes and clients can reach",
                cfg.listen
            )));
        }
        // The port first: a node that cannot serve writes nothing to its data directory.
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| NodeError::Listen {
                addr: cfg.listen,
                source,
            })?;
        let bound = listener.local_addr()?;
        let addr = cfg.advertise.clone().unwrap_or_else(|| bound.to_string());
        let web_listener = match cfg.http {
            None => None,
            Some(h) => {
                if crate::web::needs_tls(&h) && cfg.tls.is_none() {
                    return Err(NodeError::Config(format!(
                        "the web view on {h} would show the cluster's addresses to anyone who can reach it: bind it to a loopback address (--http 127.0.0.1:7380) or give the node TLS (--tls DIR), which makes it HTTPS asking for an admin or host certificate"
                    )));
                }
                match TcpListener::bind(h).await {
                    Ok(l) => Some(l),
                    Err(e) if cfg.http_optional => {
                        tracing::warn!("not serving the web view on {h}: {e} (give --http HOST:PORT for another address)");
                        None
                    }
                    Err(source) => return Err(NodeError::Listen { addr: h, source }),
                }
            }
        };

        let db = open_db(&cfg.data_dir, cfg.id)?;
        let weak_db = Arc::downgrade(&db);
        let log = LogStore::new(db.clone())?;
        let sm = StateMachineStore::open(db).map_err(|e| StoreError::Damaged {
            path: cfg.data_dir.clone(),
            why: format!("the stored snapshot does not load: {e}"),
        })?;

        let cut = Arc::new(Cut::default());
        let raft = Raft::new(
            cfg.id,
            Arc::new(raft_cfg),
            NetworkFactory {
                id: cfg.id,
                cut: cut.clone(),
                tls: cfg.tls.clone(),
            },
            log,
            sm.clone(),
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;

        let inner = Arc::new(NodeInner {
            id: cfg.id,
            addr,
            raft,
            sm,
            metrics: Metrics::new(),
            write_timeout: cfg.write_timeout,
            peers: Mutex::new(HashMap::new()),
            cut,
            tls: cfg.tls.clone(),
            conns: Arc::new(Semaphore::new(cfg.max_connections.max(1))),
            idle_timeout: cfg.idle_timeout.max(Duration::from_millis(100)),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip: cfg.max_connections_per_ip.max(1),
            initialised: std::sync::atomic::AtomicBool::new(false),
            reads: Default::default(),
            follower_reads: Default::default(),
        });
        let mut tasks = vec![
            tokio::spawn(accept_loop(listener, inner.clone())),
            tokio::spawn(super::snapshots::run(
                inner.raft.clone(),
                inner.sm.clone(),
                cfg.snapshot_every,
            )),
        ];
        if let Some(m) = cfg.metrics {
            let node = inner.clone();
            let t = crate::metrics::serve(m, Arc::new(move || node.metrics_text()))
                .await
                .map_err(|source| NodeError::Listen { addr: m, source })?;
            tasks.push(t);
        }
        let mut web = None;
        if let Some(l) = web_listener {
            let at = l.local_addr()?;
            // Loopback is plain HTTP; anywhere else HTTPS with client certificates.
            let tls = cfg.tls.clone().filter(|_| crate::web::needs_tls(&at));
            let scheme = if tls.is_some() { "https" } else { "http" };
            tasks.push(crate::web::serve(l, inner.clone(), tls));
            let url = format!("{scheme}://{at}/");
            tracing::info!("web view (subnet map) on {url}");
            web = Some(url);
        }
        tracing::info!(id = cfg.id, addr = %inner.addr, "node started");
        Ok(Node {
            inner,
            tasks,
            db: weak_db,
            web,
        })
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The address this node is reached at.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The web view's URL, if it is served (`http://` on loopback, else `https://`).
    pub fn web_url(&self) -> Option<&str> {
        self.web.as_deref()
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> NodeStatus {
        self.inner.status()
    }

    /// Makes this node a one-node cluster (see [`AdminCommand::Init`]).
    pub async fn init(&self) -> Result<NodeStatus, ApiError> {
        self.inner.admin_local(&AdminCommand::Init).await
    }

    /// Runs `f` on this node's allocator state as applied so far (a local, possibly stale
    /// read; for tests and embedding).
    pub fn with_state<T>(&self, f: impl FnOnce(&allocator_core::State) -> T) -> T {
        f(&self.inner.sm.read().state)
    }

    /// Fault injection for tests: this node stops sending Raft messages to, and forwarding
    /// calls to, the nodes in `peers` (an empty list heals). Cut both sides for a partition.
    #[doc(hidden)]
    pub fn cut_off(&self, peers: &[u64]) {
        self.inner.cut.set(peers.iter().copied());
    }

    /// Prometheus text of this node's metrics.
    pub fn metrics_text(&self) -> String {
        self.inner.metrics_text()
    }

    /// Stops serving and stops Raft, then waits (up to 10 s) until the database is closed, so
    /// that the data directory can be opened again.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        drop(self.inner);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.db.strong_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.db.strong_count() > 0 {
            return Err(NodeError::Raft(
                "the database was still open 10 s after shutdown".into(),
            ));
        }
        Ok(())
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<NodeInner>) {
    let mut conns = JoinSet::new();
    loop {
        // A connection slot first: past the limit, new connections wait in the backlog.
        let permit = tokio::select! {
            p = inner.conns.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        tokio::select! {
            r = listener.accept() => match r {
                Ok((s, peer)) => match PerIp::take(&inner, peer.ip()) {
                    Some(slot) => { conns.spawn(serve_conn(s, inner.clone(), permit, slot)); }
                    None => tracing::warn!(
                        peer = %peer.ip(),
                        "closing a connection: {} connections from that address already",
                        inner.max_per_ip
                    ),
                },
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// One connection's share of its address's limit, given back when the connection ends.
struct PerIp {
    inner: Arc<NodeInner>,
    ip: std::net::IpAddr,
}

impl PerIp {
    fn take(inner: &Arc<NodeInner>, ip: std::net::IpAddr) -> Option<PerIp> {
        let mut m = inner.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= inner.max_per_ip {
            return None;
        }
        *n += 1;
        Some(PerIp {
            inner: inner.clone(),
            ip,
        })
    }
}

impl Drop for PerIp {
    fn drop(&mut self) {
        let mut m = self.inner.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Runs every request of one connection in `reqs` until the client goes, or until nothing is
/// in flight and no request came for `idle`.
async fn serve_requests<S, F>(
    mut stream: std::pin::Pin<&mut S>,
    reqs: &mut JoinSet<()>,
    idle: Duration,
) where
    S: futures::Stream<Item = F>,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(f)) => {
                reqs.spawn(f);
                while reqs.try_join_next().is_some() {}
            }
            Ok(None) => return,
            Err(_) => {
                while reqs.try_join_next().is_some() {}
                if reqs.is_empty() {
                    tracing::debug!("closing a connection idle for {idle:?}");
                    return;
                }
            }
        }
    }
}

/// Answers one join request (see [`crate::tls::join`]) on a connection without a certificate.
async fn serve_join(s: tokio_rustls::server::TlsStream<TcpStream>, inner: &NodeInner, tls: &Tls) {
    use crate::tls::join::{JoinReply, JoinRequest};
    use futures::SinkExt;
    let mut t = framing::<_, JoinRequest, JoinReply>(s, MAX_JOIN_FRAME, MAX_JOIN_FRAME);
    let Ok(Some(Ok(req))) = tokio::time::timeout(CHANNEL_BYTE_TIMEOUT, t.next()).await else {
        return;
    };
    let reply = match join_reply(inner, tls, &req) {
        Ok((name, cert, ca)) => {
            tracing::info!(host = %name, "issued a host certificate to a join request");
            JoinReply::Issued { cert, ca }
        }
        Err(why) => {
            tracing::warn!("refused a join request: {why}");
            JoinReply::Refused(why)
        }
    };
    let _ = tokio::time::timeout(CHANNEL_BYTE_TIMEOUT, t.send(reply)).await;
}

/// The host certificate a join request earns, or why not.
fn join_reply(
    inner: &NodeInner,
    tls: &Tls,
    req: &crate::tls::join::JoinRequest,
) -> Result<(String, String, String), String> {
    let hash = crate::tls::join::secret_hash(&req.secret);
    if !inner.sm.read().state.join_token_valid(&hash, now_ms()) {
        return Err("the join token is unknown, expired or revoked: ask an operator for a new one (`raftipam cert token`)".into());
    }
    let (ca_pem, ca_key) = tls.ca();
    let ca_key = ca_key.ok_or_else(|| {
        format!(
            "node {} holds no CA key (ca-key.pem in its --tls-dir) and cannot sign: join through a node that does",
            inner.id
        )
    })?;
    let (name, cert) =
        crate::tls::join::sign(&ca_pem, &ca_key, &req.csr, crate::tls::certs::CERT_LIFETIME)?;
    if inner.sm.read().state.knows_host(&name) {
        return Err(format!(
            "the cluster already has a host named {name:?}: a join token gives certificates to new hosts only (an operator can `raftipam cert create-host {name}`, or `host forget` the old one)"
        ));
    }
    Ok((name, cert, ca_pem))
}

/// Longest time a new connection may take to say which channel it wants.
const CHANNEL_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_conn(
    s: TcpStream,
    inner: Arc<NodeInner>,
    _permit: OwnedSemaphorePermit,
    slot: PerIp,
) {
    if s.set_nodelay(true).is_err() {
        return;
    }
    let peer_addr = s.peer_addr().ok();
    let (mut conn, peer): (Conn, Option<PeerCert>) = match &inner.tls {
        Some(tls) => match tls.accept(s).await {
            Ok((_, Some(p))) if inner.is_revoked(&p) => {
                tracing::warn!(peer = ?peer_addr, serial = %p.serial, "refused {}: its certificate was revoked (`raftipam cert revoke` or `host forget`)", p.id);
                return;
            }
            Ok((t, Some(peer))) => (Either::Right(TlsStream::Server(t)), Some(peer)),
            Ok((mut t, None)) => {
                // No certificate: a host asking to join, and nothing else.
                let mut b = [0u8; 1];
                let asked = tokio::time::timeout(CHANNEL_BYTE_TIMEOUT, t.read_exact(&mut b)).await;
                if matches!(asked, Ok(Ok(_))) && b[0] == CHANNEL_JOIN {
                    serve_join(t, &inner, tls).await;
                } else {
                    tracing::info!(peer = ?peer_addr, "closed a connection without a certificate that did not ask to join");
                }
                return;
            }
            Err(e) => {
                tracing::info!(peer = ?peer_addr, "TLS handshake refused: {e}");
                return;
            }
        },
        None => (Either::Left(s), None),
    };
    let mut b = [0u8; 1];
    match tokio::time::timeout(CHANNEL_BYTE_TIMEOUT, conn.read_exact(&mut b)).await {
        Ok(Ok(_)) => {}
        _ => return,
    }
    // Past the handshake and the channel byte: no longer counted against its address.
    drop(slot);
    // Requests of one connection run concurrently, in tasks of this connection's set, so
    // that stopping the node stops them too.
    let mut reqs = JoinSet::new();
    match b[0] {
        CHANNEL_RAFT => {
            if let Some(p) = peer.as_ref().filter(|p| p.id.role != Role::Node) {
                tracing::warn!(peer = ?peer_addr, "refused Raft traffic from {}: only node certificates may send it", p.id);
                return;
            }
            let srv = RaftServer {
                raft: inner.raft.clone(),
            };
            let t = server_transport(conn, MAX_FRAME);
            let stream = std::pin::pin!(BaseChannel::with_defaults(t).execute(srv.serve()));
            serve_requests(stream, &mut reqs, inner.idle_timeout).await;
        }
        CHANNEL_API => {
            // Requests are small, whoever sends them (a backup is restored in pieces);
            // only Raft traffic between nodes carries large frames (a snapshot).
            let idle = inner.idle_timeout;
            let srv = ApiServer { inner, peer };
            let t = server_transport(conn, MAX_API_REQUEST);
            let stream = std::pin::pin!(BaseChannel::with_defaults(t).execute(srv.serve()));
            serve_requests(stream, &mut reqs, idle).await;
        }
        _ => {}
    }
    while reqs.join_next().await.is_some() {}
}

#[derive(Clone)]
struct RaftServer {
    raft: Raft,
}

impl RaftRpc for RaftServer {
    async fn append(
        self,
        _: Context,
        req: AppendEntriesRequest<C>,
    ) -> Result<AppendEntriesResponse<C>, RaftError<C>> {
        // Boxed, as `NodeInner::route`: a small request future moves cheaply.
        Box::pin(self.raft.append_entries(req)).await
    }

    async fn vote(self, _: Context, req: VoteRequest<C>) -> Result<VoteResponse<C>, RaftError<C>> {
        Box::pin(self.raft.vote(req)).await
    }

    async fn snapshot(
        self,
        _: Context,
        vote: VoteOf<C>,
        meta: SnapshotMetaOf<C>,
        data: Vec<u8>,
    ) -> Result<SnapshotResponse<C>, Fatal<C>> {
        Box::pin(self.raft.install_full_snapshot(
            vote,
            openraft::Snapshot {
                meta,
                snapshot: data,
            },
        ))
        .await
    }
}

#[derive(Clone)]
struct ApiServer {
    inner: Arc<NodeInner>,
    /// Who is at the other end of the connection, and when its certificate was issued
    /// (`None` without TLS).
    peer: Option<PeerCert>,
}

impl ApiServer {
    /// The caller of this call (see [`caller`]), refused if the connection's certificate was
    /// revoked since the connection was opened.
    fn caller(&self, via: Via) -> Result<(Option<Identity>, bool), ApiError> {
        if let Some(p) = &self.peer {
            if self.inner.is_revoked(p) {
                return Err(ApiError::Forbidden(format!(
                    "the certificate of {} (serial {}) was revoked (`raftipam cert revoke` or `host forget`): issue a new one",
                    p.id, p.serial
                )));
            }
        }
        caller(self.peer.as_ref().map(|p| &p.id), via)
    }
}

/// Who a call is for, and whether another node passed it on, given who is at the other end
/// of the connection (`peer`). Without TLS nobody is named and everything is allowed; with
/// TLS a caller named by a forwarding node counts only if that node presented a node
/// certificate.
fn caller(peer: Option<&Identity>, via: Via) -> Result<(Option<Identity>, bool), ApiError> {
    let forwarded = via.forwarded();
    let Some(peer) = peer else {
        return Ok((None, forwarded));
    };
    match via {
        Via::Direct => Ok((Some(peer.clone()), false)),
        Via::Forwarded(Some(origin)) if peer.role == Role::Node => Ok((Some(origin), true)),
        Via::Forwarded(None) if peer.role == Role::Node => Err(ApiError::Forbidden(format!(
            "{peer} forwarded a call without naming its caller"
        ))),
        Via::Forwarded(_) => Err(ApiError::Forbidden(format!(
            "{peer} may not forward calls: only node certificates may"
        ))),
    }
}

#[cfg(test)]
mod caller_tests {
    use super::*;

    fn id(role: Role, name: &str) -> Identity {
        Identity {
            role,
            name: name.into(),
        }
    }

    #[test]
    fn only_a_node_may_name_the_caller_it_forwards_for() {
        let admin = id(Role::Admin, "ops");
        let h1 = id(Role::Host, "h1");
        let n2 = id(Role::Node, "n2");
        // A host claiming to forward for an admin: refused, whatever it names.
        let e = caller(Some(&h1), Via::Forwarded(Some(admin.clone()))).expect_err("refused");
        assert!(e.to_string().contains("host h1 may not forward"), "{e}");
        assert!(caller(Some(&admin), Via::Forwarded(Some(admin.clone()))).is_err());
        // A node forwarding for a host: the host is the caller.
        assert_eq!(
            caller(Some(&n2), Via::Forwarded(Some(h1.clone()))),
            Ok((Some(h1.clone()), true))
        );
        assert!(caller(Some(&n2), Via::Forwarded(None)).is_err());
        // Directly: the certificate is the caller; without TLS nobody is named.
        assert_eq!(caller(Some(&h1), Via::Direct), Ok((Some(h1), false)));
        assert_eq!(caller(None, Via::Forwarded(None)), Ok((None, true)));
        assert_eq!(caller(None, Via::Direct), Ok((None, false)));
    }
}

impl ApiRpc for ApiServer {
    async fn write(
        self,
        ctx: Context,
        req: WriteRequest,
        via: Via,
    ) -> Result<WriteReply, ApiError> {
        let (caller, forwarded) = self.caller(via)?;
        if let Some(id) = &caller {
            authz::may_write(id, &req.op)?;
        }
        let deadline = self.inner.deadline(&ctx);
        match self
            .inner
            .route(Call::Write(req), forwarded, caller, deadline)
            .await?
        {
            Reply::Write(w) => Ok(w),
            _ => Err(ApiError::Internal("mismatched reply".into())),
        }
    }

    async fn read(
        self,
        ctx: Context,
        query: Query,
        consistency: Consistency,
        via: Via,
    ) -> Result<QueryReply, ApiError> {
        let (caller, forwarded) = self.caller(via)?;
        if let Some(id) = &caller {
            authz::may_read(id, &query)?;
        }
        if consistency == Consistency::Local {
            return self.inner.query_local(&query);
        }
        let deadline = self.inner.deadline(&ctx);
        match self
            .inner
            .route(Call::Read(query), forwarded, caller, deadline)
            .await?
        {
            Reply::Read(r) => Ok(r),
            _ => Err(ApiError::Internal("mismatched reply".into())),
        }
    }

    async fn status(self, _: Context) -> NodeStatus {
        self.inner.status()
    }

    async fn admin(
        self,
        ctx: Context,
        cmd: AdminCommand,
        via: Via,
    ) -> Result<NodeStatus, ApiError> {
        let (caller, forwarded) = self.caller(via)?;
        if let Some(id) = &caller {
            authz::may_admin(id, &cmd)?;
        }
        if cmd == AdminCommand::Init {
            return Box::pin(self.inner.admin_local(&cmd)).await;
        }
        // Adding a node waits for it to catch up: allow more than a write.
        let deadline = Instant::now() + self.inner.write_timeout.max(Duration::from_secs(60));
        let deadline = deadline.min(ctx.deadline);
        match self
            .inner
            .route(Call::Admin(cmd), forwarded, caller, deadline)
            .await?
        {
            Reply::Admin(s) => Ok(s),
            _ => Err(ApiError::Internal("mismatched reply".into())),
        }
    }

    async fn read_index(self, ctx: Context) -> Result<u64, ApiError> {
        let (caller, _) = self.caller(Via::Direct)?;
        if let Some(id) = caller.filter(|id| id.role != Role::Node) {
            return Err(ApiError::Forbidden(format!(
                "{id} may not ask for a read index: only nodes do"
            )));
        }
        let inner = &self.inner;
        let not_leader = || ApiError::NotLeader {
            node: inner.id,
            leader: inner.leader().map(|l| l.0),
        };
        if inner.leader().map(|l| l.0) != Some(inner.id) {
            return Err(not_leader());
        }
        let remaining = inner
            .deadline(&ctx)
            .saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, inner.leader_linearize()).await {
            Err(_) => Err(unavailable("read", inner.write_timeout)),
            Ok(Ok(index)) => {
                inner.metrics.read_index_served.inc();
                Ok(index)
            }
            Ok(Err(super::reads::RoundError::Fatal(f))) => Err(ApiError::Internal(f)),
            Ok(Err(_)) => Err(not_leader()),
        }
    }
}

/// What became of a read a follower tried to answer itself.
// Returned once per read and matched at once: boxing the answer would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum FollowerRead {
    /// Answered (or failed for good).
    Done(Result<Reply, ApiError>),
    /// The leader moved or was not reached: look for it again.
    Retry,
    /// The leader does not give read indexes (an older version): forward the read whole.
    Forward,
}

/// A call that must run on the leader.
#[derive(Clone)]
enum Call {
    Write(WriteRequest),
    Read(Query),
    Admin(AdminCommand),
}

enum Reply {
    Write(WriteReply),
    Read(QueryReply),
    Admin(NodeStatus),
}

/// What running a call locally gave.
#[allow(clippy::large_enum_variant)]
enum Local {
    Done(Result<Reply, ApiError>),
    /// Not (or no longer) the leader: find the leader and try again.
    NotLeader,
}

/// The wall clock in ms since the Unix epoch: what a proposing node stamps into a command,
/// and what heartbeat and report ages are measured against.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn unavailable(what: &str, timeout: Duration) -> ApiError {
    ApiError::Unavailable(format!(
        "no quorum / no leader within {}: the {what} was not confirmed (a write may still be applied; retrying it with the same request id is safe)",
        humantime::format_duration(timeout)
    ))
}

impl NodeInner {
    /// The deadline of a call: the write timeout, or the caller's deadline if sooner.
    fn deadline(&self, ctx: &Context) -> Instant {
        let own = Instant::now() + self.write_timeout;
        own.min(
            ctx.deadline
                .checked_sub(Duration::from_millis(50))
                .unwrap_or(ctx.deadline),
        )
    }

    /// Whether certificates of `name` issued at `issued_ms` are revoked, by the state applied
    /// here so far.
    pub(crate) fn is_revoked(&self, p: &PeerCert) -> bool {
        let sm = self.sm.read();
        sm.state.is_revoked(&p.id.name, p.issued_ms) || sm.state.is_serial_revoked(&p.serial)
    }

    /// Prometheus text of this node's metrics, every gauge refreshed from the state now.
    fn metrics_text(&self) -> String {
        let status = self.status();
        let (pools, hosts) = {
            let sm = self.sm.read();
            (sm.state.pools(), sm.state.hosts())
        };
        self.metrics.set_hosts(&hosts, now_ms());
        self.metrics.render(&status, &pools)
    }

    pub(crate) fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, n)| Member {
                id: *id,
                addr: n.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        let state = match m.state {
            ServerState::Leader => "Leader",
            ServerState::Follower => "Follower",
            ServerState::Candidate => "Candidate",
            ServerState::Learner => "Learner",
            ServerState::Shutdown => "Shutdown",
        };
        NodeStatus {
            id: self.id,
            addr: self.addr.clone(),
            state: state.to_string(),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            committed: m.local_committed.as_ref().map(|l| l.index),
            applied: m.last_applied.as_ref().map(|l| l.index),
            snapshot: m.snapshot.as_ref().map(|l| l.index),
            purged: m.purged.as_ref().map(|l| l.index),
            members,
        }
    }

    /// True while this node knows no membership at all: never initialised, never added.
    fn never_initialised(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.initialised.load(Ordering::Relaxed) {
            return false;
        }
        let rx = self.raft.metrics();
        let m = rx.borrow_watched();
        let never =
            m.membership_config.membership().nodes().next().is_none() && m.last_log_index.is_none();
        if !never {
            self.initialised.store(true, Ordering::Relaxed);
        }
        never
    }

    fn leader(&self) -> Option<(u64, Option<String>)> {
        let m = self.raft.metrics().borrow_watched().clone();
        let l = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&l)
            .map(|n| n.addr.clone());
        Some((l, addr))
    }

    async fn peer(&self, addr: &str) -> Result<ApiRpcClient, std::io::Error> {
        if let Some(c) = self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(addr)
        {
            return Ok(c.clone());
        }
        let t = connect(addr, CHANNEL_API, Duration::from_secs(2), self.tls.as_ref()).await?;
        let c = ApiRpcClient::new(tarpc::client::Config::default(), t).spawn();
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn drop_peer(&self, addr: &str) {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(addr);
    }

    /// Runs `call` on the leader: here, or forwarded; retries while leadership moves.
    /// [`NodeInner::route_call`], boxed: its future (forwarding, the Raft write, the reads)
    /// is kilobytes, and every request's future is moved several times on its way into a task
    /// and out (stream, spawn, the task's cell, its output); boxed, each move copies a pointer.
    /// Measured with callgrind on a leader: these copies were over half its instructions.
    fn route(
        &self,
        call: Call,
        forwarded: bool,
        caller: Option<Identity>,
        deadline: Instant,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, ApiError>> + Send + '_>>
    {
        Box::pin(self.route_call(call, forwarded, caller, deadline))
    }

    async fn route_call(
        &self,
        call: Call,
        forwarded: bool,
        caller: Option<Identity>,
        deadline: Instant,
    ) -> Result<Reply, ApiError> {
        let what = match &call {
            Call::Write(_) => "write",
            Call::Read(_) => "read",
            Call::Admin(_) => "membership change",
        };
        let mut metrics_rx = self.raft.metrics();
        if self.never_initialised() {
            return Err(ApiError::NotInitialised(format!(
                "node {} at {} is in no cluster yet: run `raftipam cluster init --endpoints {}` once to make it a one-node cluster (then `raftipam cluster add` for the others), or name a node of an existing cluster with --endpoints",
                self.id, self.addr, self.addr
            )));
        }
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(unavailable(what, self.write_timeout));
            }
            let remaining = deadline - now;
            match self.leader() {
                Some((l, _)) if l == self.id => match self.run_local(&call, remaining).await {
                    Local::Done(r) => return r,
                    Local::NotLeader => {}
                },
                Some((l, addr)) if !forwarded && !self.cut.blocks(l) => {
                    let Some(addr) = addr else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    if let Call::Read(q) = &call {
                        match self.follower_read(&addr, q, deadline).await {
                            FollowerRead::Done(r) => return r,
                            FollowerRead::Retry => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                continue;
                            }
                            FollowerRead::Forward => {
                                self.metrics.reads_forwarded.inc();
                            }
                        }
                    }
                    match self.forward(&addr, &call, caller.clone(), deadline).await {
                        Ok(Err(ApiError::NotLeader { .. })) => {}
                        Ok(r) => return r,
                        Err(e) => {
                            tracing::debug!(leader = l, "forwarding to {addr} failed: {e}");
                            self.drop_peer(&addr);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                leader => {
                    if forwarded {
                        return Err(ApiError::NotLeader {
                            node: self.id,
                            leader: leader.map(|l| l.0),
                        });
                    }
                }
            }
            // Wait for something to change (a leader elected), briefly.
            let wait = remaining.min(Duration::from_millis(100));
            let _ = tokio::time::timeout(wait, metrics_rx.changed()).await;
        }
    }

    /// As leader: waits for a ReadIndex round (batched with the other reads here) that began
    /// after this call; its read index.
    async fn leader_linearize(&self) -> super::reads::RoundResult {
        let raft = self.raft.clone();
        self.reads
            .linearize(move || super::reads::leader_round(raft.clone()))
            .await
    }

    /// A linearizable read answered here on a follower: a read index from the leader at
    /// `addr` (shared with the reads queued meanwhile), then this node's state once it has
    /// applied that index.
    async fn follower_read(&self, addr: &str, q: &Query, deadline: Instant) -> FollowerRead {
        use super::reads::RoundError;
        let client = match self.peer(addr).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("cannot reach the leader at {addr} for a read index: {e}");
                self.drop_peer(addr);
                return FollowerRead::Retry;
            }
        };
        let call_timeout = self.write_timeout;
        let round = move || {
            let client = client.clone();
            async move {
                let mut ctx = tarpc::context::current();
                ctx.deadline = Instant::now() + call_timeout;
                match client.read_index(ctx).await {
                    Ok(Ok(index)) => Ok(index),
                    Ok(Err(ApiError::NotLeader { .. })) => Err(RoundError::NotLeader),
                    Ok(Err(e)) => Err(RoundError::Unreachable(e.to_string())),
                    Err(e) => Err(RoundError::Unreachable(e.to_string())),
                }
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let index = match tokio::time::timeout(remaining, self.follower_reads.linearize(round))
            .await
        {
            Err(_) => return FollowerRead::Done(Err(unavailable("read", self.write_timeout))),
            Ok(Ok(index)) => index,
            Ok(Err(RoundError::NotLeader)) => return FollowerRead::Retry,
            Ok(Err(RoundError::Fatal(f))) => return FollowerRead::Done(Err(ApiError::Internal(f))),
            Ok(Err(RoundError::Unreachable(e))) => {
                tracing::debug!(
                    "no read index from the leader at {addr} ({e}): forwarding the read"
                );
                return FollowerRead::Forward;
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let applied = self
            .raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "a linearizable read")
            .await;
        match applied {
            Ok(_) => {
                self.metrics.reads_local.inc();
                FollowerRead::Done(self.query_local(q).map(Reply::Read))
            }
            Err(_) => FollowerRead::Done(Err(unavailable("read", self.write_timeout))),
        }
    }

    async fn forward(
        &self,
        addr: &str,
        call: &Call,
        caller: Option<Identity>,
        deadline: Instant,
    ) -> Result<Result<Reply, ApiError>, tarpc::client::RpcError> {
        let client = self
            .peer(addr)
            .await
            .map_err(|e| tarpc::client::RpcError::Send(Box::new(e)))?;
        let mut ctx = tarpc::context::current();
        ctx.deadline = deadline;
        Ok(match call {
            Call::Write(w) => client
                .write(ctx, w.clone(), Via::Forwarded(caller))
                .await?
                .map(Reply::Write),
            Call::Read(q) => client
                .read(
                    ctx,
                    q.clone(),
                    Consistency::Linearizable,
                    Via::Forwarded(caller),
                )
                .await?
                .map(Reply::Read),
            Call::Admin(a) => client
                .admin(ctx, a.clone(), Via::Forwarded(caller))
                .await?
                .map(Reply::Admin),
        })
    }

    async fn run_local(&self, call: &Call, remaining: Duration) -> Local {
        match call {
            Call::Write(w) => self.write_local(w, remaining).await,
            Call::Read(q) => {
                use super::reads::RoundError;
                match tokio::time::timeout(remaining, self.leader_linearize()).await {
                    Err(_) => Local::Done(Err(unavailable("read", self.write_timeout))),
                    Ok(Ok(_)) => {
                        self.metrics.reads_local.inc();
                        Local::Done(self.query_local(q).map(Reply::Read))
                    }
                    Ok(Err(RoundError::Fatal(f))) => Local::Done(Err(ApiError::Internal(f))),
                    Ok(Err(_)) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Local::NotLeader
                    }
                }
            }
            Call::Admin(a) => match tokio::time::timeout(remaining, self.admin_local(a)).await {
                Err(_) => Local::Done(Err(match a {
                    AdminCommand::AddNode { id, addr } => ApiError::Cluster(format!(
                        "node {id} at {addr} did not catch up within {}: is it running and reachable from the leader? It stays a learner until `cluster add` is run again (or `cluster remove --id {id}`)",
                        humantime::format_duration(Duration::from_secs(remaining.as_secs_f64().round() as u64))
                    )),
                    _ => unavailable("membership change", self.write_timeout),
                })),
                Ok(Err(ApiError::NotLeader { .. })) => Local::NotLeader,
                Ok(r) => Local::Done(r.map(Reply::Admin)),
            },
        }
    }

    async fn write_local(&self, w: &WriteRequest, remaining: Duration) -> Local {
        let req = Request {
            id: w.id,
            acked_below: w.acked_below,
            cmd: Command {
                at_ms: now_ms(),
                op: w.op.clone(),
            },
        };
        self.metrics.proposals.inc();
        let start = Instant::now();
        let r = tokio::time::timeout(remaining, self.raft.client_write(req)).await;
        let r = match r {
            Err(_) => {
                self.metrics.proposal_failures.inc();
                return Local::Done(Err(unavailable("write", self.write_timeout)));
            }
            Ok(r) => r,
        };
        match r {
            Ok(resp) => {
                self.metrics
                    .apply_latency
                    .observe(start.elapsed().as_secs_f64());
                let index = resp.log_id.index;
                Local::Done(match resp.data {
                    Response::Done(Ok(outcome)) => Ok(Reply::Write(WriteReply { outcome, index })),
                    Response::Done(Err(e)) => Err(ApiError::Alloc(e.0)),
                    Response::Stale => Err(ApiError::Stale(w.id)),
                    Response::None => Err(ApiError::Internal("empty response".into())),
                })
            }
            Err(e) => {
                self.metrics.proposal_failures.inc();
                if e.forward_to_leader().is_some() {
                    Local::NotLeader
                } else {
                    Local::Done(Err(ApiError::Internal(e.to_string())))
                }
            }
        }
    }

    pub(crate) fn query_local(&self, q: &Query) -> Result<QueryReply, ApiError> {
        let d = self.sm.read();
        let st = &d.state;
        Ok(match q {
            Query::Pools => QueryReply::Pools(st.pools()),
            Query::Pool(id) => QueryReply::Pool(st.pool(id).map_err(ApiError::Alloc)?),
            Query::Allocations(id) => {
                QueryReply::Allocations(st.allocations(id).map_err(ApiError::Alloc)?)
            }
            Query::AllAllocations => QueryReply::AllAllocations(st.all_allocations()),
            Query::WhoHas(ip) => QueryReply::WhoHas(st.who_has(*ip)),
            Query::Hosts => QueryReply::Hosts(st.hosts()),
            Query::Snapshot => QueryReply::Snapshot(st.to_snapshot()),
            Query::HostAllocations(h) => QueryReply::HostAllocations(st.host_allocations(h)),
            Query::Reports => QueryReply::Reports(st.reports()),
        })
    }

    async fn admin_local(&self, cmd: &AdminCommand) -> Result<NodeStatus, ApiError> {
        let cluster = |e: &dyn std::fmt::Display| ApiError::Cluster(e.to_string());
        match cmd {
            AdminCommand::Init => {
                let done = self
                    .raft
                    .is_initialized()
                    .await
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                if done {
                    return Err(ApiError::Cluster(format!(
                        "node {} is already part of an initialised cluster",
                        self.id
                    )));
                }
                let members = BTreeMap::from([(self.id, BasicNode::new(self.addr.clone()))]);
                self.raft
                    .initialize(members)
                    .await
                    .map_err(|e| cluster(&e))?;
                // Wait (briefly) until this node leads its one-node cluster and has committed
                // the initial membership, so that nodes can be added right away.
                let _ = self
                    .raft
                    .wait(Some(Duration::from_secs(10)))
                    .metrics(
                        |m| {
                            m.state == ServerState::Leader
                                && m.last_applied.as_ref().map(|l| l.index) == m.last_log_index
                        },
                        "init",
                    )
                    .await;
            }
            AdminCommand::AddNode { id, addr } => {
                let status = self.status();
                if let Some(m) = status.members.iter().find(|m| m.id == *id) {
                    if m.addr != *addr {
                        return Err(ApiError::Cluster(format!(
                            "node {id} is already a member at {}; remove it first",
                            m.addr
                        )));
                    }
                    if m.voter {
                        return Ok(status);
                    }
                } else {
                    self.retry_membership(|| {
                        self.raft
                            .add_learner(*id, BasicNode::new(addr.clone()), true)
                    })
                    .await?;
                }
                self.retry_membership(|| {
                    self.raft
                        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), false)
                })
                .await?;
            }
            AdminCommand::RemoveNode { id } => {
                let status = self.status();
                let Some(m) = status.members.iter().find(|m| m.id == *id) else {
                    return Ok(status);
                };
                let ids = BTreeSet::from([*id]);
                if m.voter {
                    self.retry_membership(|| {
                        self.raft
                            .change_membership(ChangeMembers::RemoveVoters(ids.clone()), false)
                    })
                    .await?;
                } else {
                    self.retry_membership(|| {
                        self.raft
                            .change_membership(ChangeMembers::RemoveNodes(ids.clone()), false)
                    })
                    .await?;
                }
            }
        }
        Ok(self.status())
    }

    /// Runs a membership change, retrying while another one is still in progress.
    async fn retry_membership<F, Fut>(&self, f: F) -> Result<(), ApiError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<
            Output = Result<ClientWriteResponse<C>, RaftError<C, ClientWriteError<C>>>,
        >,
    {
        loop {
            match f().await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_)
                    | ChangeMembershipError::UncommittedLeaderLog(_),
                ))) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => return Err(self.membership_err(e)),
            }
        }
    }

    fn membership_err(&self, e: RaftError<C, ClientWriteError<C>>) -> ApiError {
        if let Some(f) = e.forward_to_leader() {
            return ApiError::NotLeader {
                node: self.id,
                leader: f.leader_id,
            };
        }
        ApiError::Cluster(e.to_string())
    }
}

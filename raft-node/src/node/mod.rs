//! A running node: its Raft instance, its stores, and the TCP port serving both tarpc
//! services.
//!
//! Any node accepts every call. Writes and membership changes run on the leader; a follower
//! forwards them (one hop: a forwarded call is never forwarded again) and retries while
//! leadership moves, until the call's deadline. A follower answers linearizable reads
//! itself: it asks the leader for a read index (one call per batch of reads, see
//! `replication::reads`), waits until it has applied that index, and reads its own state; if the
//! leader cannot be asked (an older version, say), the read is forwarded whole. A call that finds no leader
//! with a quorum within the write timeout fails with [`ApiError::Unavailable`].
//!
//! With TLS ([`NodeConfig::tls`]) every connection is a mutual TLS handshake first; the
//! caller's certificate names who it is, and every call is checked against
//! [`crate::tls::authz`] on the node that receives it — a forwarded call on behalf of the
//! caller the forwarding node names, accepted only from a node certificate. Raft RPCs are
//! accepted only from node certificates. Connections are bounded in total and per address.

//!
//! Rooms: `accept` (the port, limits, handshake, channels), `conn` (serving one
//! connection's requests), `raft_server` (Raft RPCs in),
//! `api_server` (client calls, authorization), `routing` (where a call runs: leader,
//! forwarding, follower reads), `membership` (init, add, remove), `join` (certificates for
//! joining hosts), `view` (what observers may read: status, state, the change feed).

mod accept;
mod api_server;
#[cfg(test)]
mod attacks;
mod conn;
mod join;
mod membership;
mod raft_server;
mod routing;
mod validate;
mod view;

pub use accept::address_group;

pub use crate::clock::now_ms;
pub use view::{Leadership, NodeEvent, NodeView, Subscription};

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::{ServerState, SnapshotPolicy};
use tarpc::context::Context;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::api::{AdminCommand, ApiError, Member, NodeInfo, NodeStatus, Role};
use crate::client::{Client, ClientConfig};
use crate::metrics::Metrics;
use crate::replication::network::{Cut, NetworkFactory, PeerVersions};
use crate::replication::store::{open_db, LogStore, StateMachineStore, StoreError};
use crate::tls::{PeerCert, Tls};
use crate::transport::codec::{connect, CHANNEL_API};
use crate::transport::hello::{binary_version, PROTOCOL, PROTOCOL_MIN};
use crate::transport::rpc::ApiRpcClient;
use crate::types::Raft;

/// How a node is run. Made with [`NodeConfig::new`] (the defaults), then adjusted field by
/// field; new fields may come in any release.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NodeConfig {
    /// This node's id (unique in the cluster, never reused).
    pub id: u64,
    /// Address to listen on, `HOST:PORT` (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Address the other nodes and clients reach this node at; default: the bound address.
    pub advertise: Option<String>,
    /// Data directory (created if missing; must belong to this node id).
    pub data_dir: PathBuf,
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
    /// Most connections served at once (default 4,096), but for the members' own (64 more);
    /// a connection past it is closed once it proved who it is.
    pub max_connections: usize,
    /// A connection with no call in flight and none arriving for this long is closed (default
    /// 10 minutes); clients reconnect on their next call.
    pub idle_timeout: Duration,
    /// Most connections from one IP address still in their handshake (default 64; a
    /// connection counts until it has proved who it is and named its channel); more are
    /// closed at once, so one address cannot hold the others' slots with idle connections.
    pub max_connections_per_ip: usize,
    /// Most connections one certificate identity (role and name) holds open at once
    /// (default 64): one stolen key cannot hold every slot.
    pub max_connections_per_identity: usize,
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
            write_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_every: 10_000,
            keep_logs: 1_000,
            tls: None,
            max_connections: 4096,
            idle_timeout: Duration::from_secs(600),
            max_connections_per_ip: 64,
            max_connections_per_identity: 64,
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
    /// Connections still in their handshake ([`accept::MAX_PENDING`]).
    pending: Arc<Semaphore>,
    /// Connections of members' node certificates ([`accept::MEMBER_SLOTS`]).
    member_slots: Arc<Semaphore>,
    idle_timeout: Duration,
    /// Connections in their handshake per address group (IPv4 address, IPv6 /64).
    per_ip: Arc<Mutex<HashMap<std::net::IpAddr, usize>>>,
    max_per_ip: usize,
    /// Connections open per certificate identity.
    per_identity: Arc<Mutex<HashMap<crate::api::Identity, usize>>>,
    max_per_identity: usize,
    /// Set once this node is seen in a membership (it never goes back).
    initialised: std::sync::atomic::AtomicBool,
    /// Linearizable reads share ReadIndex rounds.
    reads: crate::replication::reads::ReadBatcher,
    /// A follower's linearizable reads share read-index calls to the leader.
    follower_reads: crate::replication::reads::ReadBatcher,
    /// The in-memory connections of [`Node::client`], stopped at shutdown.
    local_conns: Mutex<JoinSet<()>>,
    /// The release each peer named in its handshake on this node's Raft connections.
    peer_versions: PeerVersions,
    /// The last serial of a request this node proposed as itself (`propose_own`).
    own_serial: std::sync::atomic::AtomicU64,
    /// Why the node cannot go on (a message from a newer release it cannot read, Raft
    /// stopped): set once; [`Node::failed`] waits for it.
    fatal: tokio::sync::watch::Sender<Option<String>>,
    /// API requests served at once, over every connection.
    budget: conn::Budget,
}

/// A running node. Dropping it does not stop it; call [`Node::shutdown`].
pub struct Node {
    inner: Arc<NodeInner>,
    tasks: Vec<JoinHandle<()>>,
    db: Weak<rocksdb::DB>,
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
            max_payload_entries: validate::MAX_PAYLOAD_ENTRIES,
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
        let db = open_db(&cfg.data_dir, cfg.id)?;
        let weak_db = Arc::downgrade(&db);
        let mut log = LogStore::new(db.clone())?;
        let appended = log.appended();
        let sm = StateMachineStore::open(db).map_err(|e| StoreError::Damaged {
            path: cfg.data_dir.clone(),
            why: format!("the stored snapshot does not load: {e}"),
        })?;
        // Whether this data directory has been part of a cluster, read from the store itself:
        // Raft publishes what it loaded only once its task runs, and a call that arrives first
        // (the one that socket activation started this process for) must not be told that the
        // node is in no cluster.
        let has_history = {
            use openraft::storage::RaftLogStorage;
            log.get_log_state().await?.last_log_id.is_some() || sm.read().last_applied.is_some()
        };

        // The nodes this one dials (for Raft, to forward a call) are checked as the nodes it
        // serves are: a revoked certificate, or one bound to no member, is refused.
        let myself: Arc<std::sync::OnceLock<Weak<NodeInner>>> = Default::default();
        let tls = cfg.tls.as_ref().map(|t| {
            let myself = myself.clone();
            t.checking_servers(Arc::new(move |peer: &PeerCert| {
                let Some(inner) = myself.get().and_then(Weak::upgrade) else {
                    return Ok(());
                };
                inner.refuse_as_a_member(peer).map_or(Ok(()), Err)
            }))
        });
        let cut = Arc::new(Cut::default());
        let peer_versions = PeerVersions::default();
        let raft = Raft::new(
            cfg.id,
            Arc::new(raft_cfg),
            NetworkFactory {
                id: cfg.id,
                cut: cut.clone(),
                tls: tls.clone(),
                versions: peer_versions.clone(),
            },
            log,
            sm.clone(),
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
        if has_history {
            // What this node's status, web view and routing read is what Raft publishes:
            // wait (briefly) until that is what it loaded, not the blank it starts from.
            let loaded = raft
                .wait(Some(Duration::from_secs(10)))
                .metrics(
                    |m| {
                        m.last_log_index.is_some()
                            || m.membership_config.membership().nodes().next().is_some()
                    },
                    "the stored log loaded",
                )
                .await;
            if let Err(e) = loaded {
                tracing::warn!("Raft has not published the stored state yet: {e}");
            }
        }

        let metrics = Metrics::new();
        let budget = conn::Budget::new(&metrics);
        let inner = Arc::new(NodeInner {
            budget,
            id: cfg.id,
            addr,
            raft,
            sm,
            metrics,
            write_timeout: cfg.write_timeout,
            peers: Mutex::new(HashMap::new()),
            cut,
            tls,
            conns: Arc::new(Semaphore::new(cfg.max_connections.max(1))),
            idle_timeout: cfg.idle_timeout.max(Duration::from_millis(100)),
            pending: Arc::new(Semaphore::new(accept::MAX_PENDING)),
            member_slots: Arc::new(Semaphore::new(accept::MEMBER_SLOTS)),
            per_ip: Default::default(),
            max_per_ip: cfg.max_connections_per_ip.max(1),
            per_identity: Default::default(),
            max_per_identity: cfg.max_connections_per_identity.max(1),
            initialised: std::sync::atomic::AtomicBool::new(has_history),
            reads: Default::default(),
            follower_reads: Default::default(),
            local_conns: Mutex::new(JoinSet::new()),
            peer_versions,
            own_serial: std::sync::atomic::AtomicU64::new(0),
            fatal: tokio::sync::watch::channel(None).0,
        });
        let _ = myself.set(Arc::downgrade(&inner));
        let mut tasks = vec![
            tokio::spawn(accept::accept_loop(listener, inner.clone())),
            tokio::spawn(crate::replication::snapshots::run(
                inner.raft.clone(),
                inner.sm.clone(),
                cfg.snapshot_every,
                appended,
            )),
        ];
        tasks.push(tokio::spawn(record_cluster_version(
            inner.clone(),
            cfg.data_dir.clone(),
        )));
        tracing::info!(id = cfg.id, addr = %inner.addr, "node started");
        Ok(Node {
            inner,
            tasks,
            db: weak_db,
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

    /// A handle for observing this node (status, state, the change feed) that outlives
    /// borrows of the node: what a web view or a metrics server holds.
    pub fn view(&self) -> NodeView {
        NodeView {
            inner: self.inner.clone(),
        }
    }

    /// A client of this node that calls it in memory: no TCP, no TLS, no serialisation
    /// beyond tarpc's in-process channel. Writes and linearizable reads go to the leader as
    /// any call does (forwarded over the network if this node is a follower). It acts with
    /// the node's own authority (no certificate is checked: the caller is this process).
    /// Its calls fail once the node has shut down.
    pub fn client(&self) -> Client {
        let weak = Arc::downgrade(&self.inner);
        let dial = Arc::new(move || {
            let inner = weak.upgrade().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotConnected, "the node has shut down")
            })?;
            Ok(api_server::in_memory(inner))
        });
        Client::in_process(self.inner.addr.clone(), dial, ClientConfig::default())
    }

    /// The change feed: every change applied here from now on, and every change of leader or
    /// term (see [`NodeEvent`]).
    pub fn subscribe(&self) -> Subscription {
        self.view().subscribe()
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

    /// Resolves when the node cannot go on by itself: Raft stopped (a storage failure, a
    /// snapshot it cannot install), or a newer release sent it what it cannot read. The
    /// reason says what to do; a program that runs a node should exit non-zero then, so that
    /// its supervisor restarts it and its operator sees why.
    pub async fn failed(&self) -> String {
        let mut fatal = self.inner.fatal.subscribe();
        let mut metrics = self.inner.raft.metrics();
        loop {
            if let Some(why) = fatal.borrow_and_update().clone() {
                return why;
            }
            if metrics.borrow_watched().state == ServerState::Shutdown {
                return "Raft stopped (see the error logged before this): the node cannot serve; it is restarted with its data intact".to_string();
            }
            tokio::select! {
                r = fatal.changed() => if r.is_err() { return "the node stopped".into() },
                r = metrics.changed() => if r.is_err() {
                    return "Raft stopped (see the error logged before this)".into();
                },
            }
        }
    }

    /// Stops serving and stops Raft, then waits (up to 10 s) until the database is closed, so
    /// that the data directory can be opened again.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        for t in &self.tasks {
            t.abort();
        }
        self.inner
            .local_conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort_all();
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

impl NodeInner {
    /// The deadline of a call: the write timeout, or the caller's deadline if sooner.
    pub(super) fn deadline(&self, ctx: &Context) -> Instant {
        let own = Instant::now() + self.write_timeout;
        own.min(
            ctx.deadline
                .checked_sub(Duration::from_millis(50))
                .unwrap_or(ctx.deadline),
        )
    }

    /// Whether certificates of `name` issued at `issued_ms` are revoked, by the state applied
    /// here so far.
    pub(super) fn is_revoked(&self, p: &PeerCert) -> bool {
        let sm = self.sm.read();
        sm.state
            .is_revoked_as(p.id.role.as_str(), &p.id.name, p.issued_ms)
            || sm.state.is_serial_revoked(&p.serial)
    }

    /// The members this node knows (its effective membership: voters and learners), with
    /// their addresses.
    pub(super) fn member_addrs(&self) -> Vec<(u64, String)> {
        let rx = self.raft.metrics();
        let m = rx.borrow_watched();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    /// Why `peer` may not act as node `id` (send Raft traffic as it, or forward calls as
    /// it); `None` if it may. Without TLS nobody is named and every peer may. With TLS the
    /// certificate must be a node certificate that is not revoked and is bound to `id`
    /// ([`PeerCert::raft_id`]); `id` must be a member this node knows and not a removed one
    /// — unless this node is in no cluster yet (it has nothing to protect and waits for the
    /// leader to reach it). A follower that missed the entries adding a member refuses that
    /// member until it hears of it from another: if the new member is elected meanwhile, the
    /// follower stays behind (it says so in its log) until it is removed and added again.
    pub(super) fn refuse_as_member(&self, peer: Option<&PeerCert>, id: u64) -> Option<String> {
        self.refuse_among(peer?, Some(id), &self.member_addrs())
    }

    /// Why `peer` is not the node certificate of a current member — the member it is bound
    /// to, as [`NodeInner::refuse_as_member`] checks it; `None` if it is one (or this node is
    /// in no cluster yet). Who may forward calls, who gets a member's connection slot and
    /// budget, which nodes this one dials.
    pub(super) fn refuse_as_a_member(&self, peer: &PeerCert) -> Option<String> {
        self.refuse_among(peer, None, &self.member_addrs())
    }

    /// [`NodeInner::refuse_as_member`] as `claimed` (`None`: whichever member `p` is bound
    /// to), among `members`.
    fn refuse_among(
        &self,
        p: &PeerCert,
        claimed: Option<u64>,
        members: &[(u64, String)],
    ) -> Option<String> {
        if p.id.role != Role::Node {
            return Some(format!("{} is not a node certificate", p.id));
        }
        let bound = p.raft_id(members.iter().map(|(m, a)| (*m, a.as_str())));
        let id = claimed.or(bound);
        {
            let sm = self.sm.read();
            if sm
                .state
                .is_revoked_as(p.id.role.as_str(), &p.id.name, p.issued_ms)
                || sm.state.is_serial_revoked(&p.serial)
            {
                return Some(format!(
                    "the certificate of {} (serial {}) was revoked",
                    p.id, p.serial
                ));
            }
            if let Some(id) = id.filter(|id| {
                sm.state
                    .is_revoked(&allocator_core::cluster::removed_node_revocation(*id), 0)
            }) {
                return Some(format!("node {id} was removed from the cluster"));
            }
        }
        if members.is_empty() {
            return None;
        }
        match (bound, id) {
            (Some(b), Some(id)) if b == id && members.iter().any(|(m, _)| *m == id) => None,
            (Some(b), Some(id)) if b != id => Some(format!(
                "the certificate of {} is node {b}'s, not node {id}'s",
                p.id
            )),
            (Some(_), Some(id)) => Some(format!("node {id} is not a member of this cluster")),
            _ => Some(format!(
                "the certificate of {} is bound to no member (it carries no node id and names no member's address): issue it again with `raftipam cert create-node --id ID`",
                p.id
            )),
        }
    }

    /// Prometheus text of this node's metrics, every gauge refreshed from the state now.
    pub(super) fn metrics_text(&self) -> String {
        let status = self.status();
        let (pools, hosts, conflicts) = {
            let sm = self.sm.read();
            (sm.state.pools(), sm.state.hosts(), sm.state.conflicts())
        };
        self.metrics.set_hosts(&hosts, now_ms());
        self.metrics.set_conflicts(conflicts.counts(now_ms()));
        let info = self.info();
        self.metrics.set_versions(
            &info.binary,
            &info.members,
            info.cluster_version,
            self.tls.as_ref().map(|t| {
                (
                    t.identity().role.as_str(),
                    t.identity().name.as_str(),
                    t.expires_at(),
                )
            }),
        );
        self.metrics.render(&status, &pools)
    }

    /// A Raft message from `peer` did not decode. From a newer release, that is what an
    /// upgraded leader sends a node it left behind: this node cannot follow it, says what
    /// to do, and stops (see [`Node::failed`]). From the same or an older release it is a
    /// damaged or hostile frame: the connection is gone and nothing else happens.
    pub(super) fn undecodable_raft(
        &self,
        peer: Option<SocketAddr>,
        version: &crate::transport::hello::PeerVersion,
        e: &str,
    ) {
        let ours = binary_version();
        let newer = crate::replication::store::release_of(&version.binary)
            > crate::replication::store::release_of(ours);
        if !newer {
            tracing::warn!(?peer, binary = %version.binary, "a Raft message did not decode: {e}");
            return;
        }
        self.metrics.undecodable_from_newer.inc();
        let why = format!(
            "node at {} runs raftipam {} and sent a Raft message this binary (raftipam {ours}) cannot read ({e}): upgrade this node to {} or newer",
            peer.map_or("?".to_string(), |p| p.to_string()),
            version.binary,
            version.binary
        );
        tracing::error!("{why}");
        self.fatal.send_replace(Some(why));
    }

    pub(super) fn info(&self) -> NodeInfo {
        let mut members: std::collections::BTreeMap<u64, String> = self
            .peer_versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, v)| (*id, v.binary.clone()))
            .collect();
        members.insert(self.id, binary_version().to_string());
        NodeInfo {
            status: self.status(),
            binary: binary_version().to_string(),
            protocol_min: PROTOCOL_MIN,
            protocol_max: PROTOCOL,
            members: members.into_iter().collect(),
            cluster_version: self.sm.read().state.cluster_version(),
        }
    }

    pub(super) fn status(&self) -> NodeStatus {
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
    pub(super) fn never_initialised(&self) -> bool {
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

    pub(super) fn leader(&self) -> Option<(u64, Option<String>)> {
        let m = self.raft.metrics().borrow_watched().clone();
        let l = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&l)
            .map(|n| n.addr.clone());
        Some((l, addr))
    }

    pub(super) async fn peer(&self, addr: &str) -> Result<ApiRpcClient, std::io::Error> {
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

    pub(super) fn drop_peer(&self, addr: &str) {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(addr);
    }
}

/// Keeps the data directory's record in step with the cluster version applied here (from
/// version 2 on, the directory needs a release that can read it; see `store::open_db`).
async fn record_cluster_version(inner: Arc<NodeInner>, dir: PathBuf) {
    let mut recorded = 1;
    loop {
        let version = inner.sm.read().state.cluster_version();
        if version > recorded {
            match crate::replication::store::record_cluster_version(&dir, inner.id, version) {
                Ok(()) => recorded = version,
                Err(e) => tracing::warn!(
                    "cannot record cluster version {version} in {}: {e} (retrying)",
                    dir.display()
                ),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

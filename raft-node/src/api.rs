//! The client API's vocabulary: what a client asks a node and what it gets back.
//!
//! These types travel over the wire (postcard) and are what [`crate::Client`] returns. None
//! of them names an openraft type, so the rest of the project never depends on openraft.

use std::net::IpAddr;

use allocator_core::{
    AllocError, Allocation, Holding, HostInfo, Op, Outcome, PoolId, PoolInfo, StoredReport,
};
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum ApiError {
    /// The allocator refused the command (pool full, address held, ...). Nothing changed.
    #[error("{0}")]
    Alloc(AllocError),
    /// No leader could commit the write (or serve the read) in time: no quorum, or an
    /// election that did not finish. The write may still be applied later; retrying with the
    /// same request id is safe.
    #[error("{0}")]
    Unavailable(String),
    /// This node is not the leader (answer to a forwarded call).
    #[error("node {node} is not the leader (leader: {})", leader.map(|l| l.to_string()).unwrap_or_else(|| "unknown".into()))]
    NotLeader {
        /// The node that answered.
        node: u64,
        /// The leader it knows of.
        leader: Option<u64>,
    },
    /// A very late duplicate of a request its client had already seen answered.
    #[error("request {0} is older than what its client has already acknowledged; it was not applied again")]
    Stale(RequestId),
    /// A membership change or initialisation was refused.
    #[error("cluster change refused: {0}")]
    Cluster(String),
    /// The node failed internally (storage error, shutting down).
    #[error("node error: {0}")]
    Internal(String),
    /// The caller's certificate does not allow this call. The message names the identity,
    /// what it asked and what it may do.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The node was never made part of a cluster (`raftipam cluster init` on one node, then
    /// `cluster add` for the others): it answers at once instead of waiting for a leader.
    #[error("not initialised: {0}")]
    NotInitialised(String),
}

/// A write as sent to a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WriteRequest {
    /// The call's identity (the same on every retry).
    pub id: RequestId,
    /// The client has seen the answers of all its serials below this.
    pub acked_below: u64,
    /// The operation.
    pub op: Op,
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// Linearizable: reflects every write acknowledged before the read started (the leader
    /// confirms its leadership with a quorum, and the read waits for the apply).
    #[default]
    Linearizable,
    /// Whatever the answering node has applied (may lag behind).
    Local,
}

/// A read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// Every pool.
    Pools,
    /// One pool.
    Pool(PoolId),
    /// Allocations of one pool.
    Allocations(PoolId),
    /// Every allocation of every pool.
    AllAllocations,
    /// What holds an address.
    WhoHas(IpAddr),
    /// Every host that holds something or sent a heartbeat.
    Hosts,
    /// The allocator state as snapshot bytes (`State::to_snapshot`): a backup.
    Snapshot,
    /// Every allocation held by one host (what its reconciliation compares).
    HostAllocations(String),
    /// Every host's last reconciliation report.
    Reports,
    /// Every host's quotas and use (raftipam 0.2 on).
    Quotas,
    /// The certificates given to joins (raftipam 0.2 on).
    IssuedCerts,
    /// Conflicts on the LAN: free addresses in (or past) quarantine and duplicate alarms
    /// (raftipam 0.2 on).
    Conflicts,
    /// The next addresses an allocation would hand out in a pool, not taken (at most
    /// [`allocator_core::MAX_NEXT_FREE`]): what a host probes ahead of time (raftipam 0.2 on).
    NextFree {
        /// The pool.
        pool: PoolId,
        /// How many.
        count: u32,
    },
    /// What the cluster knows of one address for a host that saw a device answer for it on
    /// the LAN: holder, the holder's recorded MAC, reserved or not, conflict record (raftipam
    /// 0.2 on).
    OnLan(IpAddr),
    /// Every host's last report of how it checks the LAN (raftipam 0.2 on).
    LanChecks,
    /// Free addresses of a pool's range after an address, in address order (at most
    /// [`allocator_core::MAX_NEXT_FREE`]): a background sweep's next page (raftipam 0.2 on).
    FreeAfter {
        /// The pool.
        pool: PoolId,
        /// Start after this address (`None`: at the range's start).
        after: Option<IpAddr>,
        /// How many.
        count: u32,
    },
    /// A page of the allocations of one pool or of every pool, after the last one of the
    /// page before (at most [`allocator_core::MAX_ALLOCATIONS_PAGE`]): what listings page
    /// through, so no answer holds every allocation (raftipam 0.2 on).
    AllocationsPage {
        /// One pool, or every pool (`None`).
        pool: Option<PoolId>,
        /// The `next` of the page before (`None`: the first page).
        after: Option<(PoolId, IpAddr)>,
        /// How many at most.
        limit: u32,
    },
}

/// The answer to a [`Query`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryReply {
    /// Every pool.
    Pools(Vec<PoolInfo>),
    /// One pool.
    Pool(PoolInfo),
    /// Allocations of one pool.
    Allocations(Vec<Allocation>),
    /// Every allocation of every pool.
    AllAllocations(Vec<(PoolId, Allocation)>),
    /// What holds an address.
    WhoHas(Vec<Holding>),
    /// Every host that holds something or sent a heartbeat.
    Hosts(Vec<HostInfo>),
    /// The allocator state as snapshot bytes.
    Snapshot(Vec<u8>),
    /// Every allocation held by one host.
    HostAllocations(Vec<(PoolId, Allocation)>),
    /// Every host's last reconciliation report.
    Reports(Vec<StoredReport>),
    /// Every host's quotas and use.
    Quotas(allocator_core::QuotaReport),
    /// The certificates given to joins.
    IssuedCerts(Vec<allocator_core::IssuedCert>),
    /// Conflicts on the LAN.
    Conflicts(allocator_core::Conflicts),
    /// The next addresses an allocation would hand out, in order.
    NextFree(Vec<std::net::IpAddr>),
    /// What the cluster knows of one address, one entry per subnet holding it.
    OnLan(Vec<allocator_core::AddressOnLan>),
    /// Every host's last report of how it checks the LAN.
    LanChecks(Vec<allocator_core::HostLan>),
    /// Free addresses after the one asked for, in address order.
    FreeAfter(Vec<IpAddr>),
    /// A page of allocations.
    AllocationsPage(allocator_core::AllocationsPage),
}

/// A cluster administration command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminCommand {
    /// Make the receiving node a one-node cluster (only on a node never initialised).
    Init,
    /// Add a node: as a learner first, then, once it has caught up, as a voter.
    AddNode {
        /// Its id.
        id: u64,
        /// Its address `HOST:PORT`.
        addr: String,
    },
    /// Remove a node from the voters and from the cluster.
    RemoveNode {
        /// Its id.
        id: u64,
    },
    /// Raise the cluster version to the newest every member can follow (raftipam 0.2 on):
    /// refused, naming them, while a member runs an older release.
    UpgradeCluster,
}

/// A member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node id.
    pub id: u64,
    /// Address.
    pub addr: String,
    /// Voter (or learner).
    pub voter: bool,
}

/// One node's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// This node's id.
    pub id: u64,
    /// This node's address.
    pub addr: String,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub state: String,
    /// Current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<u64>,
    /// Index of the last log entry.
    pub last_log_index: Option<u64>,
    /// Index of the last entry known committed.
    pub committed: Option<u64>,
    /// Index of the last entry applied to the allocator.
    pub applied: Option<u64>,
    /// Index covered by the latest snapshot.
    pub snapshot: Option<u64>,
    /// Log entries up to this index have been purged.
    pub purged: Option<u64>,
    /// The members, voters and learners.
    pub members: Vec<Member>,
}

impl NodeStatus {
    /// Ids of the voters.
    pub fn voters(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.id)
            .collect()
    }
}

/// A node's release and what it knows of the others' (the `info` call, protocol 2 on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its view of the cluster.
    pub status: NodeStatus,
    /// Its release, e.g. `0.2.0`.
    pub binary: String,
    /// The oldest protocol it speaks.
    pub protocol_min: u32,
    /// The newest protocol it speaks.
    pub protocol_max: u32,
    /// The members' releases as this node last heard them in a handshake (its own
    /// connections to them), by member id.
    pub members: Vec<(u64, String)>,
    /// The cluster version this node has applied.
    pub cluster_version: u32,
}

/// Answer of a write: the allocator's outcome and the log index it was committed at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReply {
    /// What the command did.
    pub outcome: Outcome,
    /// Log index of the entry.
    pub index: u64,
}

/// Identity of one client call: the client's random id and a per-client serial number.
///
/// A client that retries a call (after a timeout or a leader change) sends the same id, so
/// the state machine applies the command at most once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// Random id chosen by the client when it starts.
    pub client: u64,
    /// Serial number of the call within that client (starts at 1).
    pub serial: u64,
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}#{}", self.client, self.serial)
    }
}

/// What a certificate allows (its subject's OU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// A Raft node.
    Node,
    /// A Docker host's shim.
    Host,
    /// An operator.
    Admin,
}

impl Role {
    /// The OU value naming this role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Host => "host",
            Role::Admin => "admin",
        }
    }

    /// The role an OU value names.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "node" => Some(Role::Node),
            "host" => Some(Role::Host),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who is calling: a role and a name, as the caller's certificate says.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// The role.
    pub role: Role,
    /// The name: a node's or host's host name, an operator's name.
    pub name: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role.as_str(), self.name)
    }
}

/// Parses a pool id: `SPACE/SUBNET[/RANGE]`, or a bare `SUBNET[/RANGE]` in the `global`
/// space.
pub fn parse_pool(s: &str) -> Result<allocator_core::PoolId, String> {
    let e = match s.parse::<allocator_core::PoolId>() {
        Ok(p) => return Ok(p),
        Err(e) => e,
    };
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Ok(allocator_core::PoolId::new("global", net, None));
    }
    // SUBNET/RANGE: the second '/' splits the two CIDRs.
    let split = s.match_indices('/').nth(1).map(|(i, _)| i);
    if let Some((net, range)) = split.map(|i| (&s[..i], &s[i + 1..])) {
        if let (Ok(net), Ok(range)) = (net.parse::<ipnet::IpNet>(), range.parse::<ipnet::IpNet>()) {
            return Ok(allocator_core::PoolId::new("global", net, Some(range)));
        }
    }
    Err(format!(
        "{e}; a bare SUBNET or SUBNET/RANGE (global space) is accepted too"
    ))
}

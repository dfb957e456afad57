//! The two tarpc services a node serves: Raft traffic between nodes, and the client API.

use openraft::errors::{Fatal, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotMetaOf, VoteOf};

use serde::{Deserialize, Serialize};

use crate::api::{
    AdminCommand, ApiError, Consistency, Identity, NodeInfo, NodeStatus, Query, QueryReply,
    WriteReply, WriteRequest,
};
use crate::types::TypeConfig;

/// How a call reached the node that serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Via {
    /// From its caller.
    Direct,
    /// Passed on by another node (never passed on again), on behalf of the caller it names
    /// (`None` in a cluster without TLS). A node accepts a named caller only from a
    /// connection that presented a node certificate.
    Forwarded(Option<Identity>),
}

impl Via {
    /// Whether another node passed the call on.
    pub fn forwarded(&self) -> bool {
        matches!(self, Via::Forwarded(_))
    }
}

type C = TypeConfig;

/// Raft messages between nodes.
#[tarpc::service]
pub trait RaftRpc {
    /// AppendEntries (and heartbeats).
    async fn append(req: AppendEntriesRequest<C>)
        -> Result<AppendEntriesResponse<C>, RaftError<C>>;
    /// RequestVote.
    async fn vote(req: VoteRequest<C>) -> Result<VoteResponse<C>, RaftError<C>>;
    /// A whole snapshot in one message.
    async fn snapshot(
        vote: VoteOf<C>,
        meta: SnapshotMetaOf<C>,
        data: Vec<u8>,
    ) -> Result<SnapshotResponse<C>, Fatal<C>>;
}

/// The client API. `via` says whether another node passed the call on to the leader (such a
/// call is never forwarded again), and for whom.
#[tarpc::service]
pub trait ApiRpc {
    /// Apply an operation.
    async fn write(req: WriteRequest, via: Via) -> Result<WriteReply, ApiError>;
    /// Read.
    async fn read(query: Query, consistency: Consistency, via: Via)
        -> Result<QueryReply, ApiError>;
    /// This node's view of the cluster.
    async fn status() -> NodeStatus;
    /// Initialise, add or remove nodes.
    async fn admin(cmd: AdminCommand, via: Via) -> Result<NodeStatus, ApiError>;
    /// The leader's read index after a ReadIndex round that began after this call arrived: a
    /// follower that has applied it answers linearizable reads itself (nodes only).
    async fn read_index() -> Result<u64, ApiError>;
    /// This node's release, protocol range and view (protocol 2 on; a protocol-1 node does
    /// not know this call, so a client asks only a node whose handshake said 2 or more).
    async fn info() -> NodeInfo;
}

//! The two tarpc services a node serves: Raft traffic between nodes, and the client API.

use openraft::errors::{Fatal, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotMetaOf, VoteOf};

use super::types::TypeConfig;
use crate::api::{
    AdminCommand, ApiError, Consistency, NodeStatus, Query, QueryReply, WriteReply, WriteRequest,
};

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

/// The client API. `forwarded` marks a call one node passed on to the leader; such a call is
/// never forwarded again.
#[tarpc::service]
pub trait ApiRpc {
    /// Apply an operation.
    async fn write(req: WriteRequest, forwarded: bool) -> Result<WriteReply, ApiError>;
    /// Read.
    async fn read(
        query: Query,
        consistency: Consistency,
        forwarded: bool,
    ) -> Result<QueryReply, ApiError>;
    /// This node's view of the cluster.
    async fn status() -> NodeStatus;
    /// Initialise, add or remove nodes.
    async fn admin(cmd: AdminCommand, forwarded: bool) -> Result<NodeStatus, ApiError>;
}

//! The Raft channel: openraft's append, vote and snapshot RPCs from the other nodes, handed
//! to this node's Raft instance as they come.

use openraft::errors::{Fatal, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotMetaOf, VoteOf};
use tarpc::context::Context;

use crate::transport::rpc::RaftRpc;
use crate::types::{Raft, TypeConfig};

type C = TypeConfig;

#[derive(Clone)]
pub(super) struct RaftServer {
    pub(super) raft: Raft,
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

//! The Raft channel: openraft's append, vote and snapshot RPCs from the other nodes, handed
//! to this node's Raft instance as they come.

use std::sync::Arc;

use openraft::errors::{Fatal, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotMetaOf, VoteOf};
use openraft::vote::RaftLeaderId;
use tarpc::context::Context;

use super::NodeInner;
use crate::tls::PeerCert;
use crate::transport::rpc::RaftRpc;
use crate::types::TypeConfig;

type C = TypeConfig;

#[derive(Clone)]
pub(super) struct RaftServer {
    pub(super) inner: Arc<NodeInner>,
    /// The certificate at the other end (`None` without TLS).
    pub(super) peer: Option<PeerCert>,
}

impl RaftServer {
    /// Refuses a message sent as node `from` unless the connection's certificate is that
    /// member's and is not revoked — checked on every message, not once per connection, so
    /// that a revocation or a removal cuts a connection that is already open.
    fn check(&self, from: u64, what: &str) -> Result<(), Fatal<C>> {
        match self.inner.refuse_as_member(self.peer.as_ref(), from) {
            None => Ok(()),
            Some(why) => {
                self.inner.metrics.refuse("raft");
                tracing::warn!("refused a Raft {what} sent as node {from}: {why}");
                Err(Fatal::Stopped)
            }
        }
    }
}

impl RaftRpc for RaftServer {
    async fn append(
        self,
        _: Context,
        req: AppendEntriesRequest<C>,
    ) -> Result<AppendEntriesResponse<C>, RaftError<C>> {
        self.check(*req.vote.leader_id().node_id(), "append")?;
        // Boxed, as `NodeInner::route`: a small request future moves cheaply.
        Box::pin(self.inner.raft.append_entries(req)).await
    }

    async fn vote(self, _: Context, req: VoteRequest<C>) -> Result<VoteResponse<C>, RaftError<C>> {
        self.check(*req.vote.leader_id().node_id(), "vote request")?;
        Box::pin(self.inner.raft.vote(req)).await
    }

    async fn snapshot(
        self,
        _: Context,
        vote: VoteOf<C>,
        meta: SnapshotMetaOf<C>,
        data: Vec<u8>,
    ) -> Result<SnapshotResponse<C>, Fatal<C>> {
        self.check(*vote.leader_id().node_id(), "snapshot")?;
        Box::pin(self.inner.raft.install_full_snapshot(
            vote,
            openraft::Snapshot {
                meta,
                snapshot: data,
            },
        ))
        .await
    }
}

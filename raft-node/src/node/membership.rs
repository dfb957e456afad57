//! Membership changes on the leader: init, add a node (a learner that catches up, then a
//! voter), remove a node; retried while another change is in progress.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::errors::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::{BasicNode, ChangeMembers, ServerState};

use super::NodeInner;
use crate::api::{AdminCommand, ApiError, NodeStatus};
use crate::types::TypeConfig;

type C = TypeConfig;

impl NodeInner {
    pub(super) async fn admin_local(&self, cmd: &AdminCommand) -> Result<NodeStatus, ApiError> {
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
    pub(super) async fn retry_membership<F, Fut>(&self, f: F) -> Result<(), ApiError>
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

    pub(super) fn membership_err(&self, e: RaftError<C, ClientWriteError<C>>) -> ApiError {
        if let Some(f) = e.forward_to_leader() {
            return ApiError::NotLeader {
                node: self.id,
                leader: f.leader_id,
            };
        }
        ApiError::Cluster(e.to_string())
    }
}

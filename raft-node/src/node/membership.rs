//! Membership changes on the leader: init, add a node (a learner that catches up, then a
//! voter), remove a node; retried while another change is in progress.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::errors::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::{BasicNode, ChangeMembers, ServerState};

use super::NodeInner;
use allocator_core::Op;

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
                // A new cluster starts at the newest cluster version: every member it will
                // have must run this release or a newer one (`AddNode` checks).
                let newest = allocator_core::cluster::CLUSTER_VERSION;
                if let Err(e) = self
                    .propose_own(Op::SetClusterVersion { version: newest })
                    .await
                {
                    tracing::warn!(
                        "the new cluster stays at cluster version 1 ({e}): run `raftipam cluster upgrade`"
                    );
                }
            }
            AdminCommand::UpgradeCluster => {
                let newest = allocator_core::cluster::CLUSTER_VERSION;
                let current = self.sm.read().state.cluster_version();
                if current < newest {
                    if self.leader().map(|l| l.0) != Some(self.id) {
                        return Err(ApiError::NotLeader {
                            node: self.id,
                            leader: self.leader().map(|l| l.0),
                        });
                    }
                    self.members_can_follow(newest)?;
                    self.propose_own(Op::SetClusterVersion { version: newest })
                        .await?;
                    tracing::info!("cluster version raised from {current} to {newest}");
                }
            }
            AdminCommand::AddNode { id, addr } => {
                self.can_follow(*id, addr).await?;
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
            AdminCommand::RemoveNode { id } if *id == self.id => {
                // The leader removing itself: its id revoked first would cut its own Raft
                // traffic off from the followers (who check it), and the change could never
                // commit. Leadership goes to another voter first; the command then runs
                // there (`NotLeader` makes the router forward it), which revokes this id
                // and removes this node like any other.
                self.hand_over_leadership().await?;
                return Err(ApiError::NotLeader {
                    node: self.id,
                    leader: self.leader().map(|l| l.0),
                });
            }
            AdminCommand::RemoveNode { id } => {
                // Its id first: from now on no certificate may act as that member (send Raft
                // traffic, forward calls), even before the membership change commits and
                // even if it was issued with the id written into it. Again on a retry.
                self.propose_own(Op::Revoke {
                    name: allocator_core::cluster::removed_node_revocation(*id),
                })
                .await?;
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

    /// Hands the leadership to another voter and waits (up to 10 s) until one leads. Fails if
    /// this node is the only voter (a cluster cannot remove its last voter).
    async fn hand_over_leadership(&self) -> Result<(), ApiError> {
        let status = self.status();
        let Some(to) = status
            .members
            .iter()
            .filter(|m| m.voter && m.id != self.id)
            .map(|m| m.id)
            .min()
        else {
            return Err(ApiError::Cluster(format!(
                "node {} is the only voter: a cluster cannot remove its last voter",
                self.id
            )));
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut asked = None::<Instant>;
        loop {
            match self.leader().map(|l| l.0) {
                Some(l) if l != self.id => {
                    tracing::info!("leadership handed over to node {l} before removing this node");
                    return Ok(());
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(ApiError::Cluster(format!(
                    "node {} could not hand its leadership to node {to} within 10 s; try again",
                    self.id
                )));
            }
            // Asked again every 2 s: a transfer the target missed is not repeated by Raft.
            if asked.is_none_or(|at| at.elapsed() >= Duration::from_secs(2)) {
                asked = Some(Instant::now());
                self.raft
                    .trigger()
                    .transfer_leader(to)
                    .await
                    .map_err(|e| ApiError::Internal(format!("handing over leadership: {e}")))?;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Refuses unless every other member is known (from this leader's Raft connections) to
    /// speak the protocol of cluster version `version`, naming those that do not.
    fn members_can_follow(&self, version: u32) -> Result<(), ApiError> {
        let status = self.status();
        let known = self
            .peer_versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut old = Vec::new();
        for m in status.members.iter().filter(|m| m.id != self.id) {
            match known.get(&m.id) {
                None => {
                    return Err(ApiError::Cluster(format!(
                        "cannot tell which release node {} ({}) runs: the leader has not reached it since it started; is it up? Try again once it answers",
                        m.id, m.addr
                    )))
                }
                Some(v) if v.protocol < version => old.push(format!("{} ({})", m.id, v.binary)),
                Some(_) => {}
            }
        }
        if old.is_empty() {
            return Ok(());
        }
        Err(ApiError::Cluster(format!(
            "cluster version {version} needs raftipam {} or newer on every member; node(s) {} run an older release: upgrade them (one at a time, the leader last), then run `raftipam cluster upgrade` again",
            allocator_core::cluster::release_of(version),
            old.join(", ")
        )))
    }

    /// Refuses to add node `id` at `addr` if the cluster's version is past what it speaks.
    async fn can_follow(&self, id: u64, addr: &str) -> Result<(), ApiError> {
        let current = self.sm.read().state.cluster_version();
        if current < 2 {
            return Ok(());
        }
        let dialled = crate::transport::codec::connect_versioned::<
            tarpc::Response<crate::transport::rpc::ApiRpcResponse>,
            tarpc::ClientMessage<crate::transport::rpc::ApiRpcRequest>,
        >(
            addr,
            crate::transport::codec::CHANNEL_API,
            Duration::from_secs(2),
            self.tls.as_ref(),
        )
        .await;
        match dialled {
            Ok((_, v)) if v.protocol < current => Err(ApiError::Cluster(format!(
                "node {id} at {addr} runs raftipam {}, which cannot follow this cluster (cluster version {current}): run raftipam {} or newer on it",
                v.binary,
                allocator_core::cluster::release_of(current)
            ))),
            // Reachable and new enough, or not reachable yet (adding waits for it anyway).
            _ => Ok(()),
        }
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

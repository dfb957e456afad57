//! Where a call runs: on the leader (here, or forwarded one hop), a linearizable read on a
//! follower with a read index from the leader, retried while leadership moves, until the
//! call's deadline. Also running a write or read locally on the leader.

use std::time::{Duration, Instant};

use allocator_core::{AllocError, Command, Op, Outcome};
use openraft::async_runtime::WatchReceiver;

use super::NodeInner;
use crate::api::{
    AdminCommand, ApiError, Consistency, Identity, NodeStatus, Query, QueryReply, RequestId,
    WriteReply, WriteRequest,
};
use crate::clock::now_ms;
use crate::transport::rpc::Via;
use crate::types::{Request, Response};

/// What became of a read a follower tried to answer itself.
// Returned once per read and matched at once: boxing the answer would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(super) enum FollowerRead {
    /// Answered (or failed for good).
    Done(Result<Reply, ApiError>),
    /// The leader moved or was not reached: look for it again.
    Retry,
    /// The leader does not give read indexes (an older version): forward the read whole.
    Forward,
}

/// A call that must run on the leader.
#[derive(Clone)]
pub(super) enum Call {
    Write(WriteRequest),
    Read(Query),
    Admin(AdminCommand),
}

pub(super) enum Reply {
    Write(WriteReply),
    Read(QueryReply),
    Admin(NodeStatus),
}

/// What running a call locally gave.
#[allow(clippy::large_enum_variant)]
pub(super) enum Local {
    Done(Result<Reply, ApiError>),
    /// Not (or no longer) the leader: find the leader and try again.
    NotLeader,
}

pub(super) fn unavailable(what: &str, timeout: Duration) -> ApiError {
    ApiError::Unavailable(format!(
        "no quorum / no leader within {}: the {what} was not confirmed (a write may still be applied; retrying it with the same request id is safe)",
        humantime::format_duration(timeout)
    ))
}

impl NodeInner {
    /// Runs `call` on the leader: here, or forwarded; retries while leadership moves.
    /// [`NodeInner::route_call`], boxed: its future (forwarding, the Raft write, the reads)
    /// is kilobytes, and every request's future is moved several times on its way into a task
    /// and out (stream, spawn, the task's cell, its output); boxed, each move copies a pointer.
    /// Measured with callgrind on a leader: these copies were over half its instructions.
    pub(super) fn route(
        &self,
        call: Call,
        forwarded: bool,
        caller: Option<Identity>,
        deadline: Instant,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, ApiError>> + Send + '_>>
    {
        Box::pin(self.route_call(call, forwarded, caller, deadline))
    }

    pub(super) async fn route_call(
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
    pub(super) async fn leader_linearize(&self) -> crate::replication::reads::RoundResult {
        let raft = self.raft.clone();
        self.reads
            .linearize(move || crate::replication::reads::leader_round(raft.clone()))
            .await
    }

    /// A linearizable read answered here on a follower: a read index from the leader at
    /// `addr` (shared with the reads queued meanwhile), then this node's state once it has
    /// applied that index.
    pub(super) async fn follower_read(
        &self,
        addr: &str,
        q: &Query,
        deadline: Instant,
    ) -> FollowerRead {
        use crate::replication::reads::RoundError;
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

    pub(super) async fn forward(
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

    pub(super) async fn run_local(&self, call: &Call, remaining: Duration) -> Local {
        match call {
            Call::Write(w) => self.write_local(w, remaining).await,
            Call::Read(q) => {
                use crate::replication::reads::RoundError;
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

    /// `op` as a request of this node's own: its client id is the node's (the top bit set,
    /// which no client's random id is taken to have), its serial the larger of the clock
    /// and the last one plus one, so serials only grow, across restarts too, and no retry
    /// table mistakes one proposal for another.
    fn own_request(&self, op: Op) -> WriteRequest {
        use std::sync::atomic::Ordering;
        let now = now_ms();
        let prev = self
            .own_serial
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(s.saturating_add(1).max(now))
            })
            .unwrap_or(now);
        WriteRequest {
            id: RequestId {
                client: (1 << 63) | self.id,
                serial: prev.saturating_add(1).max(now),
            },
            acked_below: 0,
            op,
        }
    }

    /// Proposes `op` as this node (the leader), under a request id of its own; the outcome.
    pub(super) async fn propose_own(&self, op: Op) -> Result<Outcome, ApiError> {
        let w = self.own_request(op);
        match self.write_local(&w, self.write_timeout).await {
            Local::Done(Ok(Reply::Write(r))) => Ok(r.outcome),
            Local::Done(Ok(_)) => Err(ApiError::Internal("mismatched reply".into())),
            Local::Done(Err(e)) => Err(e),
            Local::NotLeader => Err(ApiError::NotLeader {
                node: self.id,
                leader: self.leader().map(|l| l.0),
            }),
        }
    }

    /// Proposes `op` as this node, through the leader wherever it is (forwarded if this node
    /// follows); the outcome.
    pub(super) async fn propose_anywhere(&self, op: Op) -> Result<Outcome, ApiError> {
        let w = self.own_request(op);
        let deadline = Instant::now() + self.write_timeout;
        match self.route(Call::Write(w), false, None, deadline).await? {
            Reply::Write(r) => Ok(r.outcome),
            _ => Err(ApiError::Internal("mismatched reply".into())),
        }
    }

    /// What a client may not propose itself: the cluster version (only `cluster upgrade`
    /// raises it, once every member is known to follow), and a backup in a snapshot format
    /// some member may not read.
    pub(super) fn gate_from_clients(&self, op: &Op) -> Result<(), ApiError> {
        let current = self.sm.read().state.cluster_version();
        match op {
            Op::SetClusterVersion { .. } => Err(ApiError::Forbidden(
                "the cluster version is raised with `raftipam cluster upgrade`, which first checks that every member runs a release that can follow it".into(),
            )),
            Op::Restore { snapshot: b }
            | Op::RestoreChunk {
                offset: 0, bytes: b, ..
            } if current < 2 && allocator_core::snapshot_format(b).is_some_and(|f| f > 4) => {
                Err(ApiError::Alloc(AllocError::NeedsClusterVersion {
                    what: "restoring a backup of snapshot format 5".into(),
                    needs: 2,
                    current,
                }))
            }
            _ => Ok(()),
        }
    }

    /// Refuses an operation the cluster's version does not allow yet, before it is proposed,
    /// naming the members whose release holds it back.
    pub(super) fn gate(&self, op: &Op) -> Result<(), ApiError> {
        let needs = op.needs_cluster_version();
        let current = self.sm.read().state.cluster_version();
        if needs <= current {
            return Ok(());
        }
        let old: Vec<String> = self
            .peer_versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, v)| v.protocol < needs)
            .map(|(id, v)| format!("node {id} runs {}", v.binary))
            .collect();
        let name = op.name();
        let what = if old.is_empty() {
            name
        } else {
            format!("{name} ({})", old.join(", "))
        };
        Err(ApiError::Alloc(AllocError::NeedsClusterVersion {
            what,
            needs,
            current,
        }))
    }

    pub(super) async fn write_local(&self, w: &WriteRequest, remaining: Duration) -> Local {
        if let Err(e) = self.gate(&w.op) {
            return Local::Done(Err(e));
        }
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
            Query::Quotas => QueryReply::Quotas(st.quota_report()),
            Query::IssuedCerts => QueryReply::IssuedCerts(st.issued_certs()),
            Query::Conflicts => QueryReply::Conflicts(st.conflicts()),
            Query::NextFree { pool, count } => QueryReply::NextFree(
                st.next_free(pool, *count as usize, crate::clock::now_ms())
                    .map_err(ApiError::Alloc)?,
            ),
            Query::OnLan(ip) => QueryReply::OnLan(st.on_lan(*ip)),
            Query::LanChecks => QueryReply::LanChecks(st.lan_checks()),
            Query::AllocationsPage { pool, after, limit } => QueryReply::AllocationsPage(
                st.allocations_page(pool.as_ref(), after.as_ref(), *limit as usize)
                    .map_err(ApiError::Alloc)?,
            ),
            Query::FreeAfter { pool, after, count } => QueryReply::FreeAfter(
                st.free_after(pool, *after, *count as usize)
                    .map_err(ApiError::Alloc)?,
            ),
        })
    }
}

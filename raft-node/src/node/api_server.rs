//! The API channel: every client call (writes, reads, admin commands, read indexes), checked
//! against the caller's certificate ([`crate::tls::authz`]) and handed to [`super::routing`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel};
use tokio::task::JoinSet;

use super::routing::{unavailable, Call, Reply};
use super::NodeInner;
use crate::api::{
    AdminCommand, ApiError, Consistency, Identity, NodeInfo, NodeStatus, Query, QueryReply, Role,
    WriteReply, WriteRequest,
};
use crate::tls::{authz, PeerCert};
use crate::transport::rpc::{ApiRpc, ApiRpcClient, Via};

#[derive(Clone)]
pub(super) struct ApiServer {
    pub(super) inner: Arc<NodeInner>,
    /// Who is at the other end of the connection, and when its certificate was issued
    /// (`None` without TLS).
    pub(super) peer: Option<PeerCert>,
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
        if let (Some(p), true) = (&self.peer, via.forwarded()) {
            // Only a current member forwards, with its own certificate: one of a member
            // removed long ago, or of a node that never was one, is refused.
            // (Other roles are refused by `caller`, with their own message.)
            let why = (p.id.role == Role::Node)
                .then(|| self.inner.refuse_as_a_member(p))
                .flatten();
            if let Some(why) = why {
                self.inner.metrics.refuse("forward");
                return Err(ApiError::Forbidden(format!(
                    "{} may not forward calls: {why}",
                    p.id
                )));
            }
        }
        caller(self.peer.as_ref().map(|p| &p.id), via)
    }
}

/// The session key of client `client` of caller `id`: FNV-1a over the role, the name and the
/// client id — the same on every node and every release.
fn session_of(id: &Identity, client: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(id.role.as_str().as_bytes());
    eat(&[0]);
    eat(id.name.as_bytes());
    eat(&[0]);
    eat(&client.to_le_bytes());
    h
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
        if let Err(e) = super::validate::check_write(&req, caller.as_ref().map(|c| c.role)) {
            self.inner.metrics.refuse("request");
            return Err(e);
        }
        // The session a write is deduplicated in is its caller's: two identities that send the
        // same client id (by chance, or one replaying the other's) never see each other's
        // answers. Mixed once, by the node the caller reached (a forwarded write arrives
        // mixed), and only once every member mixes (cluster version 2).
        let mut req = req;
        if let (Some(id), false) = (&caller, forwarded) {
            if self.inner.sm.read().state.cluster_version() >= 2 {
                req.id.client = session_of(id, req.id.client);
            }
        }
        // Refused here, before it travels: a leader of an older release could not even read it.
        self.inner.gate(&req.op)?;
        self.inner.gate_from_clients(&req.op)?;
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

    async fn info(self, _: Context) -> NodeInfo {
        self.inner.info()
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
            Ok(Err(crate::replication::reads::RoundError::Fatal(f))) => Err(ApiError::Internal(f)),
            Ok(Err(_)) => Err(not_leader()),
        }
    }
}

/// A connection to `inner`'s API server in memory, for [`super::Node::client`]: its requests
/// are served in a task of the node's (stopped at shutdown), as a TCP connection's would be,
/// with nobody named as the caller (this process).
pub(super) fn in_memory(inner: Arc<NodeInner>) -> ApiRpcClient {
    let (client_side, server_side) = tarpc::transport::channel::unbounded();
    let idle = inner.idle_timeout;
    let budget = inner.budget.clone();
    let srv = ApiServer {
        inner: inner.clone(),
        peer: None,
    };
    inner
        .local_conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .spawn(async move {
            let mut reqs = JoinSet::new();
            let stream =
                std::pin::pin!(BaseChannel::with_defaults(server_side).execute(srv.serve()));
            super::conn::serve_requests(
                stream,
                &mut reqs,
                idle,
                super::conn::MAX_IN_FLIGHT,
                Some(&budget),
            )
            .await;
            while reqs.join_next().await.is_some() {}
        });
    ApiRpcClient::new(tarpc::client::Config::default(), client_side).spawn()
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

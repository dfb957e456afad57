//! openraft's network over tarpc: one lazily connected [`RaftRpcClient`] per peer.
//!
//! A failed call drops the connection so that the next call reconnects; a peer that cannot
//! be reached is reported as `Unreachable`, which makes openraft back off.

use std::future::Future;
use std::time::{Duration, Instant};

use openraft::errors::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{BasicNode, OptionalSend, RaftNetworkFactory, RaftNetworkV2};

use crate::transport::codec::{connect_versioned, CHANNEL_RAFT};
use crate::transport::rpc::RaftRpcClient;
use crate::types::TypeConfig;

type C = TypeConfig;

/// Shortest deadline given to an AppendEntries call: openraft passes the heartbeat interval,
/// which is too short for a large batch that the follower must sync to disk.
const MIN_APPEND_DEADLINE: Duration = Duration::from_secs(3);

/// Peers this node pretends it cannot reach (fault injection for tests: a partition is
/// both sides cutting each other).
#[derive(Default, Debug)]
pub struct Cut {
    peers: std::sync::RwLock<std::collections::BTreeSet<u64>>,
}

impl Cut {
    /// Whether traffic to `peer` is cut.
    pub fn blocks(&self, peer: u64) -> bool {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&peer)
    }

    /// Cuts traffic to exactly `peers` (empty: heal).
    pub fn set(&self, peers: impl IntoIterator<Item = u64>) {
        *self.peers.write().unwrap_or_else(|e| e.into_inner()) = peers.into_iter().collect();
    }
}

/// Creates peer clients.
#[derive(Clone)]
pub struct NetworkFactory {
    /// This node's id (for error reports).
    pub id: u64,
    /// Injected faults.
    pub cut: std::sync::Arc<Cut>,
    /// This node's TLS (its node certificate is its client certificate), if any.
    pub tls: Option<crate::tls::Tls>,
    /// The release each peer named in its handshake, by node id (shown by `info`, metrics).
    pub versions: PeerVersions,
}

/// The release each peer last named in a handshake on this node's Raft connections to it.
pub type PeerVersions = std::sync::Arc<
    std::sync::Mutex<std::collections::BTreeMap<u64, crate::transport::hello::PeerVersion>>,
>;

impl RaftNetworkFactory<C> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            id: self.id,
            target,
            addr: node.addr.clone(),
            client: None,
            cut: self.cut.clone(),
            tls: self.tls.clone(),
            versions: self.versions.clone(),
        }
    }
}

/// A connection to one peer, opened on first use.
pub struct PeerClient {
    id: u64,
    target: u64,
    addr: String,
    client: Option<RaftRpcClient>,
    cut: std::sync::Arc<Cut>,
    tls: Option<crate::tls::Tls>,
    versions: PeerVersions,
}

impl PeerClient {
    async fn client(&mut self, timeout: Duration) -> Result<RaftRpcClient, Unreachable<C>> {
        if self.cut.blocks(self.target) {
            return Err(Unreachable::from_string(format!(
                "traffic to node {} is cut (fault injection)",
                self.target
            )));
        }
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let (t, version) = connect_versioned(&self.addr, CHANNEL_RAFT, timeout, self.tls.as_ref())
            .await
            .map_err(|e| Unreachable::new(&e))?;
        self.versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.target, version);
        let c = RaftRpcClient::new(tarpc::client::Config::default(), t).spawn();
        self.client = Some(c.clone());
        Ok(c)
    }

    fn rpc_error<E: std::error::Error>(
        &mut self,
        e: tarpc::client::RpcError,
        action: RPCTypes,
        ttl: Duration,
    ) -> RPCError<C, E> {
        match e {
            tarpc::client::RpcError::DeadlineExceeded => RPCError::Timeout(Timeout {
                action,
                id: self.id,
                target: self.target,
                timeout: ttl,
            }),
            other => {
                self.client = None;
                RPCError::Unreachable(Unreachable::new(&other))
            }
        }
    }
}

fn ctx(ttl: Duration) -> tarpc::context::Context {
    let mut c = tarpc::context::current();
    c.deadline = Instant::now() + ttl;
    c
}

impl RaftNetworkV2<C> for PeerClient {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        let ttl = option.hard_ttl().max(MIN_APPEND_DEADLINE);
        let client = self.client(ttl).await.map_err(RPCError::Unreachable)?;
        match client.append(ctx(ttl), rpc).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(self.rpc_error(e, RPCTypes::AppendEntries, ttl)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        let ttl = option.hard_ttl();
        let client = self.client(ttl).await.map_err(RPCError::Unreachable)?;
        match client.vote(ctx(ttl), rpc).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(self.rpc_error(e, RPCTypes::Vote, ttl)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let ttl = option.hard_ttl();
        let client = self
            .client(ttl)
            .await
            .map_err(StreamingError::Unreachable)?;
        let call = client.snapshot(ctx(ttl), vote, snapshot.meta, snapshot.snapshot);
        tokio::pin!(cancel);
        tokio::select! {
            closed = &mut cancel => Err(StreamingError::Closed(closed)),
            r = call => match r {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e)) => Err(StreamingError::Network(NetworkError::new(&e))),
                Err(e) => Err(self.rpc_error::<openraft::errors::Infallible>(e, RPCTypes::InstallSnapshot, ttl).into()),
            }
        }
    }
}

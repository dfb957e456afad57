//! What an observer of a running node may see — its status, its allocator state as applied
//! so far, its metrics, and a feed of changes — without reaching into the node's Raft
//! instance or stores. The `raftipam` binary's web view and metrics server hold a
//! [`NodeView`]; an embedder can do the same.

use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use super::NodeInner;
use crate::api::NodeStatus;
use crate::replication::store::Change;
use crate::tls::{PeerCert, Tls};
use crate::types::TypeConfig;

/// A cheap, cloneable handle on a running node, for reading only.
#[derive(Clone)]
pub struct NodeView {
    pub(super) inner: Arc<NodeInner>,
}

impl NodeView {
    /// The node's id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The node's view of the cluster (leader, term, members, log positions).
    pub fn status(&self) -> NodeStatus {
        self.inner.status()
    }

    /// The node's release, protocol range, cluster version and what it knows of the
    /// members' releases.
    pub fn info(&self) -> crate::api::NodeInfo {
        self.inner.info()
    }

    /// Runs `f` on the allocator state applied here so far (a local, possibly stale read).
    pub fn with_state<T>(&self, f: impl FnOnce(&allocator_core::State) -> T) -> T {
        f(&self.inner.sm.read().state)
    }

    /// OpenMetrics text of the node's metrics, every gauge refreshed from the state now.
    pub fn metrics_text(&self) -> String {
        self.inner.metrics_text()
    }

    /// The node's TLS identity and trust, if it serves TLS.
    pub fn tls(&self) -> Option<&Tls> {
        self.inner.tls.as_ref()
    }

    /// Whether the certificate of a peer is revoked, by the state applied here so far.
    pub fn is_revoked(&self, cert: &PeerCert) -> bool {
        self.inner.is_revoked(cert)
    }

    /// The change feed from now on (see [`NodeEvent`]).
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            changes: self.inner.sm.watch(),
            metrics: self.inner.raft.metrics(),
            last: None,
        }
    }
}

/// Leader, term and applied index, as the change feed reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Leadership {
    /// The current term.
    pub term: u64,
    /// The leader, if one is known.
    pub leader: Option<u64>,
    /// The last log index applied here.
    pub applied: Option<u64>,
}

/// One item of the change feed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// An applied entry changed the state (kind `snapshot`: the whole state was replaced;
    /// read it again).
    Changed(Change),
    /// The leader or the term changed (the first event of every subscription says where
    /// they stand).
    Leadership(Leadership),
    /// This subscriber fell behind by `missed` changes: read the state again.
    Lagged {
        /// How many changes it missed.
        missed: u64,
    },
}

/// A subscription to a node's change feed ([`NodeView::subscribe`]).
pub struct Subscription {
    changes: tokio::sync::broadcast::Receiver<Change>,
    metrics: openraft::type_config::alias::WatchReceiverOf<
        TypeConfig,
        openraft::RaftMetrics<TypeConfig>,
    >,
    last: Option<(u64, Option<u64>)>,
}

impl Subscription {
    fn leadership(&mut self) -> Leadership {
        let m = self.metrics.borrow_watched().clone();
        Leadership {
            term: m.current_term,
            leader: m.current_leader,
            applied: m.last_applied.as_ref().map(|l| l.index),
        }
    }

    /// The next event; `None` once the node has stopped.
    pub async fn next(&mut self) -> Option<NodeEvent> {
        if self.last.is_none() {
            let l = self.leadership();
            self.last = Some((l.term, l.leader));
            return Some(NodeEvent::Leadership(l));
        }
        loop {
            tokio::select! {
                r = self.changes.recv() => {
                    return match r {
                        Ok(c) => Some(NodeEvent::Changed(c)),
                        Err(RecvError::Lagged(missed)) => Some(NodeEvent::Lagged { missed }),
                        Err(RecvError::Closed) => None,
                    };
                }
                r = self.metrics.changed() => {
                    if r.is_err() {
                        return None;
                    }
                    let l = self.leadership();
                    if self.last != Some((l.term, l.leader)) {
                        self.last = Some((l.term, l.leader));
                        return Some(NodeEvent::Leadership(l));
                    }
                }
            }
        }
    }
}

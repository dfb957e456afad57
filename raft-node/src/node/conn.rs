//! What every channel of a connection shares: how long a new connection may take to say what
//! it wants, and how the requests of one connection are served (concurrently, until the
//! client goes or the connection is idle). It imports nothing of the node.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// Longest time a new connection may take to say which channel it wants.
pub(super) const CHANNEL_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests of one connection served at once; the connection's next requests wait (in its
/// socket, then in the client) until one is answered. A client that pipelines requests and
/// never reads the answers holds at most this many.
pub(crate) const MAX_IN_FLIGHT_PER_CONN: usize = 32;

/// API requests served at once over all of a node's connections.
pub(crate) const MAX_IN_FLIGHT: usize = 1024;

/// The node-wide budget of API requests served at once, and its gauges.
#[derive(Clone)]
pub(super) struct Budget {
    pub(super) permits: Arc<Semaphore>,
    pub(super) now: Gauge,
    pub(super) peak: Gauge,
}

impl Budget {
    pub(super) fn new(metrics: &crate::metrics::Metrics) -> Budget {
        Budget {
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            now: metrics.api_in_flight.clone(),
            peak: metrics.api_in_flight_peak.clone(),
        }
    }
}

/// One request's share of the [`Budget`], given back when it is answered.
struct Share {
    _permit: OwnedSemaphorePermit,
    now: Gauge,
}

impl Drop for Share {
    fn drop(&mut self) {
        self.now.dec();
    }
}

/// Runs the requests of one connection in `reqs` — at most `per_conn` at once
/// ([`MAX_IN_FLIGHT_PER_CONN`] for a client, more for a member forwarding its clients' calls
/// over one connection), and each within the node's `budget` if given — until the client
/// goes, or until nothing is in flight and no request came for `idle`.
pub(super) async fn serve_requests<S, F>(
    mut stream: std::pin::Pin<&mut S>,
    reqs: &mut JoinSet<()>,
    idle: Duration,
    per_conn: usize,
    budget: Option<&Budget>,
) where
    S: futures::Stream<Item = F>,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        while reqs.try_join_next().is_some() {}
        if reqs.len() >= per_conn {
            // Read no further request of this connection until one is answered.
            reqs.join_next().await;
            continue;
        }
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(f)) => match budget {
                None => {
                    reqs.spawn(f);
                }
                Some(b) => {
                    let Ok(permit) = b.permits.clone().acquire_owned().await else {
                        return;
                    };
                    let n = b.now.inc() + 1;
                    if n > b.peak.get() {
                        b.peak.set(n);
                    }
                    let share = Share {
                        _permit: permit,
                        now: b.now.clone(),
                    };
                    reqs.spawn(async move {
                        let _share = share;
                        f.await
                    });
                }
            },
            Ok(None) => return,
            Err(_) => {
                while reqs.try_join_next().is_some() {}
                if reqs.is_empty() {
                    tracing::debug!("closing a connection idle for {idle:?}");
                    return;
                }
            }
        }
    }
}

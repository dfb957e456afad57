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

/// Requests of one connection read but not yet run (past [`MAX_IN_FLIGHT_PER_CONN`]): they
/// wait here, unexecuted (a request holds no answer yet), while the connection keeps being
/// polled — tarpc writes a connection's answers only while its requests are read, so a
/// server that stopped reading would also stop answering what it already ran. Past this many
/// the connection is not read until one is answered.
pub(crate) const MAX_PARKED_PER_CONN: usize = 1024;

/// Runs the requests of one connection in `reqs` — at most `per_conn` at once
/// ([`MAX_IN_FLIGHT_PER_CONN`] for a client, more for a member forwarding its clients' calls
/// over one connection; the next ones wait, unexecuted, up to [`MAX_PARKED_PER_CONN`]), and
/// each within the node's `budget` if given — until the client goes, or until nothing is in
/// flight and no request came for `idle`.
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
    let mut parked: std::collections::VecDeque<F> = std::collections::VecDeque::new();
    loop {
        while reqs.try_join_next().is_some() {}
        while reqs.len() < per_conn {
            let Some(f) = parked.pop_front() else {
                break;
            };
            if !run(f, reqs, budget).await {
                return;
            }
        }
        if parked.len() >= MAX_PARKED_PER_CONN {
            // The client has this many waiting: read nothing more until one is answered.
            reqs.join_next().await;
            continue;
        }
        let quiet = reqs.is_empty() && parked.is_empty();
        let waiting = !parked.is_empty();
        let next = async {
            if quiet {
                tokio::time::timeout(idle, stream.next()).await
            } else {
                Ok(stream.next().await)
            }
        };
        tokio::select! {
            r = next => match r {
                Ok(Some(f)) => parked.push_back(f),
                Ok(None) => return,
                Err(_) => {
                    tracing::debug!("closing a connection idle for {idle:?}");
                    return;
                }
            },
            // A slot freed: run what waits (at the top of the loop).
            Some(_) = reqs.join_next(), if waiting => {}
        }
    }
}

/// Runs one request in `reqs`, within `budget` if given; false if the budget is gone (the
/// node is stopping).
async fn run<F>(f: F, reqs: &mut JoinSet<()>, budget: Option<&Budget>) -> bool
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    match budget {
        None => {
            reqs.spawn(f);
        }
        Some(b) => {
            let Ok(permit) = b.permits.clone().acquire_owned().await else {
                return false;
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
    }
    true
}

//! What every channel of a connection shares: how long a new connection may take to say what
//! it wants, and how the requests of one connection are served (concurrently, until the
//! client goes or the connection is idle). It imports nothing of the node.

use std::time::Duration;

use futures::StreamExt;
use tokio::task::JoinSet;

/// Longest time a new connection may take to say which channel it wants.
pub(super) const CHANNEL_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs every request of one connection in `reqs` until the client goes, or until nothing is
/// in flight and no request came for `idle`.
pub(super) async fn serve_requests<S, F>(
    mut stream: std::pin::Pin<&mut S>,
    reqs: &mut JoinSet<()>,
    idle: Duration,
) where
    S: futures::Stream<Item = F>,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(f)) => {
                reqs.spawn(f);
                while reqs.try_join_next().is_some() {}
            }
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

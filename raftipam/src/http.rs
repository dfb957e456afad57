//! The HTTP servers beside a node (the web view, the metrics): a bounded number of
//! connections, each with a deadline for its request head, all owned by the server's task, so
//! that stopping the server ends every connection too (they hold the node's view, and the
//! node's database closes only once nothing holds it).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Connections served at once by one server; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 256;

/// How long a client may take to send a request's head (a slow sender holds a connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until the returned future is dropped (or its task aborted).
///
/// `admit` runs first on each accepted connection (a TLS handshake, a check of the peer) and
/// gives the stream to serve, or `None` to close it.
pub async fn serve<S, F, Fut>(listener: TcpListener, app: Router, what: &'static str, admit: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Option<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, mostly: wait rather than spin.
                tracing::warn!("{what}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (admit, app) = (admit.clone(), app.clone());
        conns.spawn(async move {
            let _slot = slot;
            let Some(stream) = admit(tcp, peer).await else {
                return;
            };
            let r = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
                .await;
            if let Err(e) = r {
                tracing::debug!(%peer, "{what}: connection ended: {e}");
            }
        });
    }
}

/// [`serve`] without a handshake: every connection is served as it comes.
pub async fn serve_plain(listener: TcpListener, app: Router, what: &'static str) {
    serve(listener, app, what, |tcp, _| async move { Some(tcp) }).await
}

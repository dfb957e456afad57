//! The HTTP servers beside a node (the web view, the metrics): a bounded number of
//! connections, each with a deadline for its request head, all owned by the server's task, so
//! that stopping the server ends every connection too (they hold the node's view, and the
//! node's database closes only once nothing holds it).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
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

/// Connections served at once from one source: an IPv4 address, or an IPv6 /64 (what one
/// machine usually has). More from there are closed at once, so one client cannot take every
/// slot of [`MAX_CONNECTIONS`] from the others.
pub const MAX_PER_SOURCE: usize = 32;

/// Whether an admitted client is still allowed (its certificate not revoked since).
pub type StillAllowed = Box<dyn Fn() -> bool + Send + Sync>;

/// How often an open connection's client is checked again ([`StillAllowed`]).
pub const RECHECK: Duration = Duration::from_secs(2);

/// How long a client may take to send a request's head (a slow sender holds a connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until the returned future is dropped (or its task aborted).
///
/// `admit` runs first on each accepted connection (a TLS handshake, a check of the peer) and
/// gives the stream to serve, or `None` to close it — and, for a client with a certificate,
/// a check that it is still allowed (not revoked since): asked every [`RECHECK`], the
/// connection is closed, a live stream (the web view's change feed) included, once it says no.
pub async fn serve<S, F, Fut>(listener: TcpListener, app: Router, what: &'static str, admit: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Option<(S, Option<StillAllowed>)>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_source: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
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
        let Some(source) = SourceSlot::take(&per_source, peer.ip()) else {
            tracing::debug!(%peer, "{what}: more than {MAX_PER_SOURCE} connections from one source; closed");
            continue;
        };
        let (admit, app) = (admit.clone(), app.clone());
        conns.spawn(async move {
            let _slot = (slot, source);
            let Some((stream, still)) = admit(tcp, peer).await else {
                return;
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            let revoked = async {
                let Some(still) = still else {
                    return std::future::pending().await;
                };
                loop {
                    tokio::time::sleep(RECHECK).await;
                    if !still() {
                        return;
                    }
                }
            };
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%peer, "{what}: connection ended: {e}");
                },
                () = revoked => {
                    tracing::info!(%peer, "{what}: closed the connection of a client whose certificate was revoked");
                }
            }
        });
    }
}

/// One connection counted against its source, until dropped.
struct SourceSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    source: IpAddr,
}

impl SourceSlot {
    /// Counts a connection from `ip`, or `None` if its source has [`MAX_PER_SOURCE`] already.
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<SourceSlot> {
        let source = raft_node::address_group(ip);
        let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = c.entry(source).or_insert(0);
        if *n >= MAX_PER_SOURCE {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            counts: counts.clone(),
            source,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = c.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.source);
            }
        }
    }
}

/// [`serve`] over HTTPS with client certificates of the cluster's CA: the handshake, then
/// only an admin's or a host's certificate, and on a node (`node`) one that is not revoked —
/// at the handshake and every [`RECHECK`] after it.
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    what: &'static str,
    tls: raft_node::tls::Tls,
    node: Option<raft_node::NodeView>,
) {
    use raft_node::api::Role;
    let admit = move |tcp, peer: SocketAddr| {
        let (tls, node) = (tls.clone(), node.clone());
        async move {
            let (stream, cert) = match tls.accept(tcp).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(%peer, "{what}: TLS handshake failed: {e}");
                    return None;
                }
            };
            let Some(cert) = cert else {
                tracing::info!(%peer, "{what}: refused a client without a certificate");
                return None;
            };
            let revoked = node.as_ref().is_some_and(|n| n.is_revoked(&cert));
            if !matches!(cert.id.role, Role::Admin | Role::Host) || revoked {
                tracing::info!(%peer, who = %cert.id, "{what}: refused a certificate that may not read it (admin or host, not revoked)");
                return None;
            }
            let still = node.map(|n| Box::new(move || !n.is_revoked(&cert)) as StillAllowed);
            Some((stream, still))
        }
    };
    serve(listener, app, what, admit).await
}

/// [`serve`] without a handshake: every connection is served as it comes.
pub async fn serve_plain(listener: TcpListener, app: Router, what: &'static str) {
    serve(
        listener,
        app,
        what,
        |tcp, _| async move { Some((tcp, None)) },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn ipv6_sources_are_grouped_by_64() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(raft_node::address_group(ip("10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(
            raft_node::address_group(ip("::ffff:10.0.0.1")),
            ip("10.0.0.1")
        );
        assert_eq!(
            raft_node::address_group(ip("2001:db8:1:2:aaaa::1")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            raft_node::address_group(ip("2001:db8:1:2:ffff::9")),
            raft_node::address_group(ip("2001:db8:1:2::1"))
        );
        assert_ne!(
            raft_node::address_group(ip("2001:db8:1:3::1")),
            raft_node::address_group(ip("2001:db8:1:2::1"))
        );
    }

    /// One client opens [`MAX_PER_SOURCE`] connections that each hold a request open, then one
    /// more: that one is closed at once, unanswered, while a connection from another loopback
    /// address is still served, and the first ones get their answers when they are let go. On
    /// commit 4b9aa6a (release 0.1.0) there was no limit per source: one client could take
    /// every connection the web view serves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_source_cannot_take_every_connection() {
        let (release, released) = tokio::sync::watch::channel(false);
        let app = Router::new()
            .route(
                "/hold",
                axum::routing::get(move || {
                    let mut released = released.clone();
                    async move {
                        let _ = released.wait_for(|r| *r).await;
                        "held"
                    }
                }),
            )
            .route("/", axum::routing::get(|| async { "ok" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let at = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve_plain(listener, app, "test"));
        let get = |path: &str| {
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        };
        let bounded = std::time::Duration::from_secs(60);

        let mut held = Vec::new();
        for _ in 0..MAX_PER_SOURCE {
            let mut c = TcpStream::connect(at).await.expect("connect");
            c.write_all(get("/hold").as_bytes()).await.expect("send");
            held.push(c);
        }
        // One more from the same address: closed without an answer.
        let mut extra = TcpStream::connect(at).await.expect("connect");
        let _ = extra.write_all(get("/").as_bytes()).await;
        let mut answer = Vec::new();
        let r = tokio::time::timeout(bounded, extra.read_to_end(&mut answer))
            .await
            .expect("the extra connection is closed, not left waiting");
        assert!(
            r.is_err() || answer.is_empty(),
            "the connection over the limit was served: {:?}",
            String::from_utf8_lossy(&answer)
        );

        // Another source is served meanwhile.
        let other = tokio::net::TcpSocket::new_v4().expect("socket");
        other
            .bind("127.0.0.2:0".parse().expect("addr"))
            .expect("bind 127.0.0.2");
        let mut other = other.connect(at).await.expect("connect from 127.0.0.2");
        other.write_all(get("/").as_bytes()).await.expect("send");
        let mut answer = String::new();
        tokio::time::timeout(bounded, other.read_to_string(&mut answer))
            .await
            .expect("answered")
            .expect("read");
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
            "{answer}"
        );

        // The first connections were served all along.
        release.send(true).expect("release");
        for mut c in held {
            let mut answer = String::new();
            tokio::time::timeout(bounded, c.read_to_string(&mut answer))
                .await
                .expect("answered")
                .expect("read");
            assert!(answer.ends_with("held"), "{answer}");
        }
        server.abort();
    }
}

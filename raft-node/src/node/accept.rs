//! The node's one TCP port: accepting connections within the limits (in total, per
//! address), the TLS handshake and the revocation check, the channel byte, then handing the
//! connection to the Raft server, the API server or the join exchange. Serves requests of a
//! connection concurrently until the client goes or the connection is idle.

use std::sync::Arc;
use std::time::Duration;

use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_util::either::Either;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tokio_rustls::TlsStream;

use super::api_server::ApiServer;
use super::conn::{serve_requests, CHANNEL_BYTE_TIMEOUT};
use super::join::serve_join;
use super::raft_server::RaftServer;
use super::NodeInner;
use crate::api::Role;
use crate::tls::PeerCert;
use crate::transport::codec::{
    server_transport, Conn, Watched, CHANNEL_API, CHANNEL_JOIN, CHANNEL_RAFT, MAX_API_REQUEST,
    MAX_FRAME,
};
use crate::transport::hello::{
    self, Hello, HelloReply, PeerVersion, PROTOCOL, PROTOCOL_MIN, VERSIONED,
};
use crate::transport::rpc::{ApiRpc, RaftRpc};

pub(super) async fn accept_loop(listener: TcpListener, inner: Arc<NodeInner>) {
    let mut conns = JoinSet::new();
    loop {
        // A connection slot first: past the limit, new connections wait in the backlog.
        let permit = tokio::select! {
            p = inner.conns.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        tokio::select! {
            r = listener.accept() => match r {
                Ok((s, peer)) => match PerIp::take(&inner, peer.ip()) {
                    Some(slot) => { conns.spawn(serve_conn(s, inner.clone(), permit, slot)); }
                    None => tracing::warn!(
                        peer = %peer.ip(),
                        "closing a connection: {} connections from that address already",
                        inner.max_per_ip
                    ),
                },
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// One connection's share of its address's limit, given back when the connection ends.
struct PerIp {
    inner: Arc<NodeInner>,
    ip: std::net::IpAddr,
}

impl PerIp {
    fn take(inner: &Arc<NodeInner>, ip: std::net::IpAddr) -> Option<PerIp> {
        let mut m = inner.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= inner.max_per_ip {
            return None;
        }
        *n += 1;
        Some(PerIp {
            inner: inner.clone(),
            ip,
        })
    }
}

impl Drop for PerIp {
    fn drop(&mut self) {
        let mut m = self.inner.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// The channel a connection asks for, and who asks: the channel byte, then (if the byte
/// says so) the version handshake, answered here. `None`: the connection went away, or its
/// peer shares no protocol with this node (it was told so, with both versions).
async fn channel_of<S>(conn: &mut S) -> Option<(u8, PeerVersion)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut b = [0u8; 1];
    conn.read_exact(&mut b).await.ok()?;
    if b[0] & VERSIONED == 0 {
        // No handshake: a protocol-1 peer (raftipam 0.1.x), as long as this node speaks it.
        return (PROTOCOL_MIN <= 1).then(|| (b[0], PeerVersion::legacy()));
    }
    let hello: Hello = hello::recv(conn).await.ok()?;
    let reply = hello::answer(&hello, PROTOCOL_MIN, PROTOCOL);
    hello::send(conn, &reply).await.ok()?;
    match reply {
        HelloReply::Accepted { protocol, .. } => Some((
            b[0] & !VERSIONED,
            PeerVersion {
                binary: hello.binary,
                protocol,
            },
        )),
        HelloReply::Refused { why, .. } => {
            tracing::warn!("refused a connection: {why}");
            None
        }
    }
}

async fn serve_conn(
    s: TcpStream,
    inner: Arc<NodeInner>,
    _permit: OwnedSemaphorePermit,
    slot: PerIp,
) {
    if s.set_nodelay(true).is_err() {
        return;
    }
    let peer_addr = s.peer_addr().ok();
    let (mut conn, peer): (Conn, Option<PeerCert>) = match &inner.tls {
        Some(tls) => match tls.accept(s).await {
            Ok((_, Some(p))) if inner.is_revoked(&p) => {
                tracing::warn!(peer = ?peer_addr, serial = %p.serial, "refused {}: its certificate was revoked (`raftipam cert revoke` or `host forget`)", p.id);
                return;
            }
            Ok((t, Some(peer))) => (Either::Right(TlsStream::Server(t)), Some(peer)),
            Ok((mut t, None)) => {
                // No certificate: a host asking to join, and nothing else.
                let asked = tokio::time::timeout(CHANNEL_BYTE_TIMEOUT, channel_of(&mut t)).await;
                if let Ok(Some((CHANNEL_JOIN, _))) = asked {
                    serve_join(t, &inner, tls).await;
                } else {
                    tracing::info!(peer = ?peer_addr, "closed a connection without a certificate that did not ask to join");
                }
                return;
            }
            Err(e) => {
                tracing::info!(peer = ?peer_addr, "TLS handshake refused: {e}");
                return;
            }
        },
        None => (Either::Left(s), None),
    };
    let Ok(Some((channel, version))) =
        tokio::time::timeout(CHANNEL_BYTE_TIMEOUT, channel_of(&mut conn)).await
    else {
        return;
    };
    tracing::trace!(peer = ?peer_addr, binary = %version.binary, protocol = version.protocol, "channel {channel}");
    // Past the handshake and the channel byte: no longer counted against its address.
    drop(slot);
    // Requests of one connection run concurrently, in tasks of this connection's set, so
    // that stopping the node stops them too.
    let mut reqs = JoinSet::new();
    match channel {
        CHANNEL_RAFT => {
            if let Some(p) = peer.as_ref().filter(|p| p.id.role != Role::Node) {
                tracing::warn!(peer = ?peer_addr, "refused Raft traffic from {}: only node certificates may send it", p.id);
                return;
            }
            let srv = RaftServer {
                raft: inner.raft.clone(),
            };
            let t = Watched::new(server_transport(conn, MAX_FRAME));
            let undecodable = t.undecodable.clone();
            let stream = std::pin::pin!(BaseChannel::with_defaults(t).execute(srv.serve()));
            serve_requests(stream, &mut reqs, inner.idle_timeout).await;
            let seen = undecodable.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(e) = seen {
                inner.undecodable_raft(peer_addr, &version, &e);
            }
        }
        CHANNEL_API => {
            // Requests are small, whoever sends them (a backup is restored in pieces);
            // only Raft traffic between nodes carries large frames (a snapshot).
            let idle = inner.idle_timeout;
            let srv = ApiServer { inner, peer };
            let t = server_transport(conn, MAX_API_REQUEST);
            let stream = std::pin::pin!(BaseChannel::with_defaults(t).execute(srv.serve()));
            serve_requests(stream, &mut reqs, idle).await;
        }
        _ => {}
    }
    while reqs.join_next().await.is_some() {}
}

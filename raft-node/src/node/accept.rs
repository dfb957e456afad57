//! The node's one TCP port: accepting connections within the limits (in total, per
//! address), the TLS handshake and the revocation check, the channel byte, then handing the
//! connection to the Raft server, the API server or the join exchange. Serves requests of a
//! connection concurrently until the client goes or the connection is idle.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_util::either::Either;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tokio_rustls::TlsStream;

use super::api_server::ApiServer;
use super::conn::{serve_requests, MAX_IN_FLIGHT, MAX_IN_FLIGHT_PER_CONN};
use super::join::serve_join;
use super::raft_server::RaftServer;
use super::NodeInner;
use crate::api::{Identity, Role};
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
        tokio::select! {
            r = listener.accept() => match r {
                Ok((s, peer)) => match admit(&inner, peer.ip()) {
                    Ok(pending) => { conns.spawn(serve_conn(s, inner.clone(), pending)); }
                    Err(why) => {
                        inner.metrics.refuse("connection");
                        tracing::debug!(peer = %peer.ip(), "closing a new connection: {why}");
                    }
                },
                Err(e) => {
                    // Out of file descriptors, mostly: wait rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Connections still proving who they are (TLS handshake, channel byte, version handshake),
/// from every address together; more are closed at once.
pub(crate) const MAX_PENDING: usize = 256;

/// How long a new connection has to prove who it is and name its channel, all steps
/// together; it is closed then.
pub(crate) const PRE_AUTH_DEADLINE: Duration = Duration::from_secs(10);

/// How long a host without a certificate has for the whole join exchange.
const JOIN_DEADLINE: Duration = Duration::from_secs(60);

/// Connections kept for the members' node certificates, beyond everyone else's limit: a
/// flood of host or operator connections cannot keep the voters apart.
pub(crate) const MEMBER_SLOTS: usize = 64;

/// The address group a per-address limit counts: an IPv4 address (an IPv4-mapped IPv6 one
/// included), or an IPv6 /64 (one host's share of a LAN: a host picks any address of its
/// /64 at will). The node's port and the binary's HTTP servers count by it.
pub fn address_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
        v4 => v4,
    }
}

/// A new connection's pre-authentication shares: one of [`MAX_PENDING`], one of its address
/// group's `max_connections_per_ip`. Given back once it proved who it is.
struct Pending {
    _permit: OwnedSemaphorePermit,
    _group: Counted<IpAddr>,
}

fn admit(inner: &Arc<NodeInner>, ip: IpAddr) -> Result<Pending, String> {
    let group = address_group(ip);
    let g = Counted::take(&inner.per_ip, group, inner.max_per_ip).ok_or_else(|| {
        format!(
            "{} connections from {group} are still in their handshake",
            inner.max_per_ip
        )
    })?;
    let permit = inner
        .pending
        .clone()
        .try_acquire_owned()
        .map_err(|_| format!("{MAX_PENDING} connections are still in their handshake"))?;
    Ok(Pending {
        _permit: permit,
        _group: g,
    })
}

/// An established connection's share: a member slot, or one of the node's
/// `max_connections` and of its identity's `max_connections_per_identity`.
#[allow(dead_code)] // held for its Drop
enum Slot {
    Member(OwnedSemaphorePermit),
    Other(OwnedSemaphorePermit, Option<Counted<Identity>>),
}

/// Whether `peer` is the node certificate of a current member (bound to it, not revoked).
fn is_member(inner: &Arc<NodeInner>, peer: Option<&PeerCert>) -> bool {
    peer.is_some_and(|p| inner.refuse_as_a_member(p).is_none())
}

/// The slot of a connection that proved who it is (`peer`, `None` without TLS).
fn slot_for(inner: &Arc<NodeInner>, peer: Option<&PeerCert>) -> Result<Slot, String> {
    if is_member(inner, peer) {
        if let Ok(permit) = inner.member_slots.clone().try_acquire_owned() {
            return Ok(Slot::Member(permit));
        }
    }
    // An operator is not held to a per-identity limit: its key can do anything anyway, and
    // `raftipam bench` opens a connection per client.
    let counted = match peer.filter(|p| p.id.role != Role::Admin) {
        Some(p) => Some(
            Counted::take(&inner.per_identity, p.id.clone(), inner.max_per_identity).ok_or_else(
                || {
                    format!(
                        "{} already has {} connections open",
                        p.id, inner.max_per_identity
                    )
                },
            )?,
        ),
        None => None,
    };
    let permit = inner
        .conns
        .clone()
        .try_acquire_owned()
        .map_err(|_| "the node serves as many connections as it may".to_string())?;
    Ok(Slot::Other(permit, counted))
}

/// One connection counted against a limit per key (an address group, an identity), given
/// back when dropped.
pub(super) struct Counted<K: std::hash::Hash + Eq + Clone> {
    map: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Clone> Counted<K> {
    fn take(map: &Arc<Mutex<HashMap<K, usize>>>, key: K, max: usize) -> Option<Counted<K>> {
        let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(key.clone()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Counted {
            map: map.clone(),
            key,
        })
    }
}

impl<K: std::hash::Hash + Eq + Clone> Drop for Counted<K> {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key);
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

enum Proved {
    /// A connection that proved who it is and named its channel.
    Serve(Conn, Option<PeerCert>, u8, PeerVersion),
    /// A host without a certificate asking to join.
    Join(tokio_rustls::server::TlsStream<TcpStream>),
    No,
}

/// The TLS handshake (with the revocation check), the channel byte and the version
/// handshake of a new connection.
async fn prove(
    s: TcpStream,
    inner: &Arc<NodeInner>,
    peer_addr: Option<std::net::SocketAddr>,
) -> Proved {
    let (mut conn, peer): (Conn, Option<PeerCert>) = match &inner.tls {
        Some(tls) => match tls.accept(s).await {
            Ok((_, Some(p))) if inner.is_revoked(&p) => {
                tracing::warn!(peer = ?peer_addr, serial = %p.serial, "refused {}: its certificate was revoked (`raftipam cert revoke` or `host forget`)", p.id);
                return Proved::No;
            }
            Ok((t, Some(peer))) => (Either::Right(TlsStream::Server(t)), Some(peer)),
            Ok((mut t, None)) => {
                // No certificate: a host asking to join, and nothing else.
                if let Some((CHANNEL_JOIN, _)) = channel_of(&mut t).await {
                    return Proved::Join(t);
                }
                tracing::info!(peer = ?peer_addr, "closed a connection without a certificate that did not ask to join");
                return Proved::No;
            }
            Err(e) => {
                tracing::info!(peer = ?peer_addr, "TLS handshake refused: {e}");
                return Proved::No;
            }
        },
        None => (Either::Left(s), None),
    };
    match channel_of(&mut conn).await {
        Some((channel, version)) => Proved::Serve(conn, peer, channel, version),
        None => Proved::No,
    }
}

async fn serve_conn(s: TcpStream, inner: Arc<NodeInner>, pending: Pending) {
    if s.set_nodelay(true).is_err() {
        return;
    }
    let peer_addr = s.peer_addr().ok();
    let proved = tokio::time::timeout(PRE_AUTH_DEADLINE, prove(s, &inner, peer_addr)).await;
    let (conn, peer, channel, version) = match proved {
        Ok(Proved::Serve(c, p, ch, v)) => (c, p, ch, v),
        Ok(Proved::Join(t)) => {
            if let Some(tls) = &inner.tls {
                let _ = tokio::time::timeout(JOIN_DEADLINE, serve_join(t, &inner, tls)).await;
            }
            return;
        }
        Ok(Proved::No) => return,
        Err(_) => {
            tracing::debug!(peer = ?peer_addr, "closed a connection that did not prove who it is within {PRE_AUTH_DEADLINE:?}");
            return;
        }
    };
    tracing::trace!(peer = ?peer_addr, binary = %version.binary, protocol = version.protocol, "channel {channel}");
    // Past the handshake and the channel byte: no longer pending, and no longer counted
    // against its address; counted as the member or the identity it is.
    drop(pending);
    let _slot = match slot_for(&inner, peer.as_ref()) {
        Ok(s) => s,
        Err(why) => {
            inner.metrics.refuse("connection");
            tracing::warn!(peer = ?peer_addr, "closing a connection: {why}");
            return;
        }
    };
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
                inner: inner.clone(),
                peer,
            };
            let t = Watched::new(server_transport(conn, MAX_FRAME));
            let undecodable = t.undecodable.clone();
            let stream = std::pin::pin!(BaseChannel::with_defaults(t).execute(srv.serve()));
            // openraft pipelines its messages to a follower: the members' own cap.
            serve_requests(stream, &mut reqs, inner.idle_timeout, MAX_IN_FLIGHT, None).await;
            let seen = undecodable.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(e) = seen {
                inner.undecodable_raft(peer_addr, &version, &e);
            }
        }
        CHANNEL_API => {
            // Requests are small, whoever sends them (a backup is restored in pieces);
            // only Raft traffic between nodes carries large frames (a snapshot).
            let idle = inner.idle_timeout;
            let budget = inner.budget.clone();
            // A member forwards all of its clients' calls over one connection.
            let per_conn = if is_member(&inner, peer.as_ref()) {
                MAX_IN_FLIGHT
            } else {
                MAX_IN_FLIGHT_PER_CONN
            };
            let srv = ApiServer { inner, peer };
            let t = server_transport(conn, MAX_API_REQUEST);
            let stream = std::pin::pin!(BaseChannel::with_defaults(t).execute(srv.serve()));
            serve_requests(stream, &mut reqs, idle, per_conn, Some(&budget)).await;
        }
        _ => {}
    }
    while reqs.join_next().await.is_some() {}
}

//! A rogue node, for the chaos harness only (feature `rogue`; the release binary has none of
//! it): what the holder of a node certificate of the cluster's CA that is no member's — made
//! for a node never added, or kept from one removed — can send to a node through its own
//! port, with this crate's own transport: Raft messages with a higher term (a vote request,
//! an append, a snapshot install) and calls forwarded on behalf of an admin it names. Every
//! one must be refused (the node module checks the certificate against the current members
//! on every message); each function says what the node answered ([`Answer`]).
//!
//! The same attacks, against a one-node cluster, are the unit tests of `node/attacks.rs`;
//! this module makes them available to a process outside the crate.

use std::time::{Duration, Instant};

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use serde::Serialize;
use tarpc::context::Context;

use crate::api::{AdminCommand, Identity, Query, RequestId, WriteRequest};
use crate::tls::Tls;
use crate::transport::codec::{connect, CHANNEL_API, CHANNEL_RAFT};
use crate::transport::rpc::{ApiRpcClient, RaftRpcClient, Via};
use crate::types::TypeConfig;

type C = TypeConfig;

/// What a node did with a rogue message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Answer {
    /// Refused, with the node's answer.
    Refused(String),
    /// Served: the node did what the rogue asked (a bug), with its answer.
    Accepted(String),
    /// No answer: the connection could not be made or broke, or the deadline passed.
    Unanswered(String),
}

fn ctx(timeout: Duration) -> Context {
    let mut c = tarpc::context::current();
    c.deadline = Instant::now() + timeout;
    c
}

/// `Ok(Ok(_))` is an acceptance, `Ok(Err(_))` a refusal, `Err(_)` no answer.
fn judge<T: std::fmt::Debug, E: std::fmt::Display, R: std::fmt::Display>(
    r: Result<Result<Result<T, E>, R>, tokio::time::error::Elapsed>,
) -> Answer {
    match r {
        Ok(Ok(Ok(t))) => Answer::Accepted(format!("{t:?}")),
        Ok(Ok(Err(e))) => Answer::Refused(e.to_string()),
        Ok(Err(e)) => Answer::Unanswered(e.to_string()),
        Err(_) => Answer::Unanswered("no answer before the deadline".into()),
    }
}

async fn raft(addr: &str, tls: &Tls, timeout: Duration) -> Result<RaftRpcClient, Answer> {
    match tokio::time::timeout(timeout, connect(addr, CHANNEL_RAFT, timeout, Some(tls))).await {
        Ok(Ok(t)) => Ok(RaftRpcClient::new(tarpc::client::Config::default(), t).spawn()),
        Ok(Err(e)) => Err(Answer::Unanswered(format!("connecting: {e}"))),
        Err(_) => Err(Answer::Unanswered("connecting: timed out".into())),
    }
}

async fn api(addr: &str, tls: &Tls, timeout: Duration) -> Result<ApiRpcClient, Answer> {
    match tokio::time::timeout(timeout, connect(addr, CHANNEL_API, timeout, Some(tls))).await {
        Ok(Ok(t)) => Ok(ApiRpcClient::new(tarpc::client::Config::default(), t).spawn()),
        Ok(Err(e)) => Err(Answer::Unanswered(format!("connecting: {e}"))),
        Err(_) => Err(Answer::Unanswered("connecting: timed out".into())),
    }
}

/// A vote request as candidate `from` in `term`, on a new connection to `addr`.
pub async fn vote(addr: &str, tls: &Tls, from: u64, term: u64, timeout: Duration) -> Answer {
    let c = match raft(addr, tls, timeout).await {
        Ok(c) => c,
        Err(a) => return a,
    };
    let req = VoteRequest::<C>::new(openraft::Vote::new(term, from), None);
    judge(tokio::time::timeout(timeout, c.vote(ctx(timeout), req)).await)
}

/// An (empty) append as leader `from` of `term`, on a new connection to `addr`.
pub async fn append(addr: &str, tls: &Tls, from: u64, term: u64, timeout: Duration) -> Answer {
    let c = match raft(addr, tls, timeout).await {
        Ok(c) => c,
        Err(a) => return a,
    };
    let req = AppendEntriesRequest::<C> {
        vote: openraft::Vote::new_committed(term, from),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    judge(tokio::time::timeout(timeout, c.append(ctx(timeout), req)).await)
}

/// A snapshot install (an empty state) as leader `from` of `term`, on a new connection.
pub async fn snapshot(addr: &str, tls: &Tls, from: u64, term: u64, timeout: Duration) -> Answer {
    let c = match raft(addr, tls, timeout).await {
        Ok(c) => c,
        Err(a) => return a,
    };
    let meta = openraft::SnapshotMeta {
        last_log_id: None,
        last_membership: openraft::StoredMembership::default(),
    };
    let vote = openraft::Vote::new_committed(term, from);
    let sent = c.snapshot(ctx(timeout), vote, meta, b"rogue".to_vec());
    judge(tokio::time::timeout(timeout, sent).await)
}

/// A write forwarded on behalf of `caller` (say, an admin), on a new connection to `addr`.
pub async fn forwarded_write(
    addr: &str,
    tls: &Tls,
    op: allocator_core::Op,
    caller: Identity,
    client: u64,
    timeout: Duration,
) -> Answer {
    let c = match api(addr, tls, timeout).await {
        Ok(c) => c,
        Err(a) => return a,
    };
    let req = WriteRequest {
        id: RequestId { client, serial: 1 },
        acked_below: 1,
        op,
    };
    let sent = c.write(ctx(timeout), req, Via::Forwarded(Some(caller)));
    judge(tokio::time::timeout(timeout, sent).await)
}

/// A membership change forwarded on behalf of `caller`, on a new connection to `addr`.
pub async fn forwarded_admin(
    addr: &str,
    tls: &Tls,
    cmd: AdminCommand,
    caller: Identity,
    timeout: Duration,
) -> Answer {
    let c = match api(addr, tls, timeout).await {
        Ok(c) => c,
        Err(a) => return a,
    };
    let sent = c.admin(ctx(timeout), cmd, Via::Forwarded(Some(caller)));
    judge(tokio::time::timeout(timeout, sent).await)
}

/// A read forwarded on behalf of `caller` (a whole-state backup, which only an admin may
/// take), on a new connection to `addr`.
pub async fn forwarded_read(
    addr: &str,
    tls: &Tls,
    query: Query,
    caller: Identity,
    timeout: Duration,
) -> Answer {
    let c = match api(addr, tls, timeout).await {
        Ok(c) => c,
        Err(a) => return a,
    };
    let sent = c.read(
        ctx(timeout),
        query,
        crate::api::Consistency::Local,
        Via::Forwarded(Some(caller)),
    );
    judge(tokio::time::timeout(timeout, sent).await)
}

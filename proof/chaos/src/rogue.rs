//! The rogue node: the holder of a node certificate signed by the cluster's CA but bound to
//! a Raft id that is no member's — one never added, and one of a node removed earlier in the
//! run — attacks the targets while the workload runs: Raft messages with a far higher term
//! (a vote request, an append, a snapshot install) on the Raft channel, and calls forwarded on
//! behalf of an admin it names (forget a workload host, delete the workload's pool with its
//! addresses, revoke a member's certificate, remove a member, take a backup). Every one must
//! be refused; the run counts them ([`Tally`]) and fails if one was served, or if a member's
//! term reached the rogue's.
//!
//! Every loop stops at the fault's end (a flag) and after a bounded number of rounds; every
//! message has a deadline.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use allocator_core::{Op, PoolId};
use raft_node::api::{AdminCommand, Identity, Query, Role};
use raft_node::rogue::{self, Answer};
use raft_node::tls::Tls;
use serde::Serialize;
use tokio::task::JoinSet;

/// The most rounds one (identity, target) pair sends (a round: every message once).
const MAX_ROUNDS: u64 = 400;
/// The pause between two rounds.
const PAUSE: Duration = Duration::from_millis(300);
/// A message's deadline.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What the rogue sent and what became of it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tally {
    /// Messages sent.
    pub sent: u64,
    /// Refused by the node (the answer every one must get).
    pub refused: u64,
    /// No answer (the connection failed or the deadline passed): neither refused nor served.
    pub unanswered: u64,
    /// Served: what was asked and the node's answer (each one is an anomaly).
    pub accepted: Vec<String>,
}

impl Tally {
    fn count(&mut self, what: &str, target: &str, id: u64, a: Answer) {
        self.sent += 1;
        match a {
            Answer::Refused(_) => self.refused += 1,
            Answer::Unanswered(_) => self.unanswered += 1,
            Answer::Accepted(r) => self.accepted.push(format!(
                "{what} from rogue node {id} to {target} was served: {r}"
            )),
        }
    }

    /// Adds another tally.
    pub fn add(&mut self, o: &Tally) {
        self.sent += o.sent;
        self.refused += o.refused;
        self.unanswered += o.unanswered;
        self.accepted.extend(o.accepted.iter().cloned());
    }
}

/// What the rogue aims at, besides the targets' Raft.
#[derive(Clone, Debug)]
pub struct Victims {
    /// The workload's pool (a forced delete would drop every allocation in it).
    pub pool: PoolId,
    /// A workload host (forgetting it releases its addresses).
    pub host: String,
    /// A member's id (removed from the membership) and its certificate's name (revoked).
    pub member: (u64, String),
}

/// A rogue under way.
pub struct Rogue {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: JoinSet<()>,
    tally: Arc<Mutex<Tally>>,
    /// The term its Raft messages carry.
    pub term: u64,
}

/// Starts the rogue: each of `identities` (a Raft id that is no member's, and its node
/// certificate) against each of `targets` (`HOST:PORT`), Raft messages in `term`.
pub fn start(targets: &[String], identities: &[(u64, Tls)], term: u64, v: &Victims) -> Rogue {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = JoinSet::new();
    let admin = Identity {
        role: Role::Admin,
        name: "admin".into(),
    };
    for addr in targets {
        for (id, tls) in identities {
            let (stop, tally, addr, tls, id, v, admin) = (
                stop.clone(),
                tally.clone(),
                addr.clone(),
                tls.clone(),
                *id,
                v.clone(),
                admin.clone(),
            );
            tasks.spawn(async move {
                for round in 0..MAX_ROUNDS {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let mut t = Tally::default();
                    let a = rogue::vote(&addr, &tls, id, term, TIMEOUT).await;
                    t.count("a vote request", &addr, id, a);
                    let a = rogue::append(&addr, &tls, id, term, TIMEOUT).await;
                    t.count("an append", &addr, id, a);
                    let a = rogue::snapshot(&addr, &tls, id, term, TIMEOUT).await;
                    t.count("a snapshot install", &addr, id, a);
                    let client = 0x7000_0000_0000 + id * 1_000_000 + round;
                    for (what, op) in [
                        (
                            "a forwarded ForgetHost as admin",
                            Op::ForgetHost {
                                host: v.host.clone(),
                            },
                        ),
                        (
                            "a forwarded forced DeletePool as admin",
                            Op::DeletePool {
                                pool: v.pool.clone(),
                                force: true,
                            },
                        ),
                        (
                            "a forwarded Revoke as admin",
                            Op::Revoke {
                                name: v.member.1.clone(),
                            },
                        ),
                    ] {
                        let a =
                            rogue::forwarded_write(&addr, &tls, op, admin.clone(), client, TIMEOUT)
                                .await;
                        t.count(what, &addr, id, a);
                    }
                    let a = rogue::forwarded_admin(
                        &addr,
                        &tls,
                        AdminCommand::RemoveNode { id: v.member.0 },
                        admin.clone(),
                        TIMEOUT,
                    )
                    .await;
                    t.count("a forwarded RemoveNode as admin", &addr, id, a);
                    let a =
                        rogue::forwarded_read(&addr, &tls, Query::Snapshot, admin.clone(), TIMEOUT)
                            .await;
                    t.count("a forwarded backup read as admin", &addr, id, a);
                    tally.lock().unwrap_or_else(|e| e.into_inner()).add(&t);
                    tokio::time::sleep(PAUSE).await;
                }
            });
        }
    }
    Rogue {
        stop,
        tasks,
        tally,
        term,
    }
}

impl Rogue {
    /// Stops the rogue and waits for its messages to end (each bounded by its deadline).
    pub async fn stop(mut self) -> Tally {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let bound = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(bound);
        loop {
            tokio::select! {
                r = self.tasks.join_next() => if r.is_none() { break },
                _ = &mut bound => { self.tasks.abort_all(); break }
            }
        }
        let t = self.tally.lock().unwrap_or_else(|e| e.into_inner()).clone();
        t
    }
}

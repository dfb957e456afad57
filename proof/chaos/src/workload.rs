//! The chaos run's clients: concurrent processes that allocate (a unique owner each time),
//! allocate a given address (a small range contended on purpose), release what they hold,
//! ask who has an address, send heartbeats and reconciliation reports, report address
//! conflicts (a foreign device answering for an address: the address goes into quarantine)
//! and clear them, and now and then create or delete a small pool of their own — through the
//! real client, which retries a
//! call with the same request id. Every operation is recorded as an invoke and a completion
//! ([`Recorder`], JSON lines): `ok`, `fail` (the allocator refused: nothing happened) or
//! `info` (a timeout or a lost connection: the outcome is unknown). A process that sees `info`
//! retires and a new one, with a new client, takes its place.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allocator_core::{AllocError, Op, Order, Outcome, Owner, PoolId};
use serde_json::{json, Value};

use super::schedule::SplitMix64;
use raft_node::api::{ApiError, Consistency, Query, QueryReply};
use raft_node::{Client, ClientError};

/// Writes the history, one JSON object per line, and counts what it wrote.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    out: Mutex<BufWriter<File>>,
    /// Completions by kind: ok, fail, info.
    pub oks: AtomicUsize,
    /// Refusals.
    pub fails: AtomicUsize,
    /// Unknown outcomes.
    pub infos: AtomicUsize,
}

impl Recorder {
    /// Writes to `file`; times are ns since `start`.
    pub fn new(file: File, start: Instant) -> Recorder {
        Recorder {
            start,
            out: Mutex::new(BufWriter::new(file)),
            oks: AtomicUsize::new(0),
            fails: AtomicUsize::new(0),
            infos: AtomicUsize::new(0),
        }
    }

    fn write(&self, process: u64, kind: &str, op: &str, value: Value) {
        let t_ns = self.start.elapsed().as_nanos() as u64;
        let line = json!({
            "process": process, "type": kind, "op": op, "value": value, "node": null, "t_ns": t_ns,
        });
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "{line}");
        match kind {
            "ok" => self.oks.fetch_add(1, Ordering::Relaxed),
            "fail" => self.fails.fetch_add(1, Ordering::Relaxed),
            "info" => self.infos.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// Flushes the file.
    pub fn flush(&self) {
        let _ = self.out.lock().unwrap_or_else(|e| e.into_inner()).flush();
    }
}

/// What the clients work on.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The nodes, `HOST:PORT`.
    pub endpoints: Vec<String>,
    /// The pool they allocate in.
    pub pool: PoolId,
    /// The contended addresses (asked for by address, and read).
    pub hot: Vec<IpAddr>,
    /// Concurrent processes.
    pub clients: usize,
    /// A call's time limit, retries included: past it the outcome is unknown.
    pub call_timeout: Duration,
    /// The seed of the clients' choices.
    pub seed: u64,
    /// The run's certificates, when it has TLS (the clients present the admin one).
    pub tls: Option<super::cluster::ChaosTls>,
    /// Report and clear address conflicts (cluster version 2 on; off against a cluster of
    /// an older release, which does not know the operations).
    pub conflicts: bool,
}

/// How the outcome of a call is recorded.
enum Done {
    Ok(Value),
    Fail(Value),
    Info(String),
}

fn classify(e: &ClientError, mut value: Value) -> Done {
    match e {
        ClientError::Api(ApiError::Alloc(a)) => {
            if let AllocError::HeldBy { owner, .. } = a {
                value["held_by"] = json!(owner.to_string());
            }
            value["error"] = json!(a.to_string());
            Done::Fail(value)
        }
        // Anything else may or may not have been applied.
        e => Done::Info(e.to_string()),
    }
}

/// Runs the clients until `stop` is set; returns when all have finished their last call.
pub async fn run(w: Workload, rec: Arc<Recorder>, stop: Arc<std::sync::atomic::AtomicBool>) {
    let next_process = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..w.clients {
        let (w, rec, stop, next_process) =
            (w.clone(), rec.clone(), stop.clone(), next_process.clone());
        tasks.spawn(async move {
            let mut rng = SplitMix64::new(w.seed.wrapping_mul(1_000_003).wrapping_add(lane as u64));
            while !stop.load(Ordering::Relaxed) {
                let process = next_process.fetch_add(1, Ordering::Relaxed);
                let cfg = || {
                    super::cluster::client_config(
                        w.tls.as_ref(),
                        w.call_timeout,
                        Duration::from_secs(1),
                    )
                };
                // Writes go to whichever node leads; reads to one node picked per process,
                // most often a follower, which answers them itself (a read index from the
                // leader, then its own state) — the path the checker must find linearizable.
                let reads_at = rng.pick(&w.endpoints).clone();
                let (client, reader) = match (
                    Client::with_config(w.endpoints.iter(), cfg()),
                    Client::with_config([reads_at], cfg()),
                ) {
                    (Ok(c), Ok(r)) => (c, r),
                    _ => return,
                };
                one_process(&w, &rec, &stop, &client, &reader, process, &mut rng).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    rec.flush();
}

/// One process: calls until an unknown outcome (then it retires) or the stop.
async fn one_process(
    w: &Workload,
    rec: &Recorder,
    stop: &std::sync::atomic::AtomicBool,
    client: &Client,
    reader: &Client,
    process: u64,
    rng: &mut SplitMix64,
) {
    let host = format!("c{process}");
    let mut held: Vec<(IpAddr, Owner)> = Vec::new();
    // A small pool of this process's own, created and deleted now and then (its /28 of
    // 10.250.0.0/16 overlaps no other process's).
    let side_net = format!("10.250.{}.{}/28", (process / 16) % 256, (process % 16) * 16);
    let mut side: Option<PoolId> = None;
    // The address this process released last (likely free: a conflict report on it puts it in
    // quarantine), and the contended addresses it reported conflicts on (cleared again now and
    // then, so that the contended range is not used up).
    let mut last_released: Option<IpAddr> = None;
    let mut reported_hot: Vec<IpAddr> = Vec::new();
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // A little think time between calls keeps the history checkable (a few thousand
        // operations a second in all), while calls still overlap on every address.
        tokio::time::sleep(Duration::from_millis(rng.range(0, 4))).await;
        let mut roll = rng.range(0, 99);
        if held.len() >= 3 && roll < 35 {
            roll += 20; // hold a few addresses at most: release instead
        }
        let (op, value, done) = if roll < 35 || (roll < 55 && held.is_empty()) {
            // Allocate any free address, or (a third of the time) a contended one.
            k += 1;
            let owner = Owner::new(&host, k.to_string());
            let addr = rng.chance(0.33).then(|| *rng.pick(&w.hot));
            let value =
                json!({"pool": w.pool.to_string(), "addr": addr, "owner": owner.to_string()});
            rec.write(process, "invoke", "allocate", value.clone());
            let r = client
                .apply(Op::Allocate {
                    pool: w.pool.clone(),
                    addr,
                    owner: owner.clone(),
                    order: Order::PoolDefault,
                })
                .await;
            let done = match r {
                Ok(reply) => match reply.outcome {
                    Outcome::Allocated { addr, .. } => {
                        held.push((addr.addr(), owner.clone()));
                        let mut v = value.clone();
                        v["addr"] = json!(addr.addr());
                        Done::Ok(v)
                    }
                    o => Done::Info(format!("unexpected outcome {o:?}")),
                },
                Err(e) => classify(&e, value.clone()),
            };
            ("allocate", value, done)
        } else if roll < 55 {
            let i = rng.range(0, held.len() as u64 - 1) as usize;
            let (addr, owner) = held.swap_remove(i);
            last_released = Some(addr);
            let value =
                json!({"pool": w.pool.to_string(), "addr": addr, "owner": owner.to_string()});
            rec.write(process, "invoke", "release", value.clone());
            let done = match client.release(&w.pool, addr, &host, false).await {
                Ok(_) => Done::Ok(value.clone()),
                Err(e) => classify(&e, value.clone()),
            };
            ("release", value, done)
        } else if roll < 95 {
            let addr = if !held.is_empty() && rng.chance(0.3) {
                held[rng.range(0, held.len() as u64 - 1) as usize].0
            } else {
                *rng.pick(&w.hot)
            };
            let value = json!({"addr": addr});
            rec.write(process, "invoke", "who_has", value.clone());
            let done = match reader
                .query(Query::WhoHas(addr), Consistency::Linearizable)
                .await
            {
                Ok(QueryReply::WhoHas(h)) => {
                    let owner = h.iter().find_map(|x| match x {
                        allocator_core::Holding::Allocated { allocation, .. } => {
                            Some(allocation.owner.to_string())
                        }
                        _ => None,
                    });
                    Done::Ok(json!({"addr": addr, "owner": owner}))
                }
                Ok(r) => Done::Info(format!("unexpected reply {r:?}")),
                Err(e) => classify(&e, value.clone()),
            };
            ("who_has", value, done)
        } else if roll == 96 && w.conflicts {
            // An address conflict (1 call in 100): a report on the address this process
            // released last or on a contended one (quarantine, or a duplicate alarm if it is
            // held), or an operator's clear of one this process reported.
            if rng.chance(0.5) {
                let addr = match last_released.take() {
                    Some(a) if rng.chance(0.75) => a,
                    _ => *rng.pick(&w.hot),
                };
                if w.hot.contains(&addr) {
                    reported_hot.push(addr);
                }
                let mac = allocator_core::Mac([
                    2,
                    0xc4,
                    0,
                    (process >> 16) as u8,
                    (process >> 8) as u8,
                    process as u8,
                ]);
                let value =
                    json!({"pool": w.pool.to_string(), "addr": addr, "mac": mac.to_string()});
                rec.write(
                    process,
                    "invoke",
                    raftipam_history::REPORT_CONFLICT,
                    value.clone(),
                );
                let done = match client
                    .apply(Op::ReportConflict {
                        pool: w.pool.clone(),
                        addr,
                        mac,
                        host: host.clone(),
                        how: allocator_core::Detection::Probe,
                    })
                    .await
                {
                    Ok(reply) => match reply.outcome {
                        Outcome::ConflictReported {
                            until_ms,
                            holder,
                            count,
                        } => Done::Ok(json!({
                            "pool": w.pool.to_string(), "addr": addr,
                            "quarantined": until_ms.is_some(), "until_ms": until_ms,
                            "holder": holder.map(|h| h.to_string()), "count": count,
                        })),
                        o => Done::Info(format!("unexpected outcome {o:?}")),
                    },
                    Err(e) => classify(&e, value.clone()),
                };
                (raftipam_history::REPORT_CONFLICT, value, done)
            } else {
                let addr = match reported_hot.pop() {
                    Some(a) => a,
                    None => *rng.pick(&w.hot),
                };
                let value = json!({"pool": w.pool.to_string(), "addr": addr});
                rec.write(
                    process,
                    "invoke",
                    raftipam_history::CLEAR_CONFLICT,
                    value.clone(),
                );
                let done = match client
                    .apply(Op::ClearConflict {
                        pool: w.pool.clone(),
                        addr,
                    })
                    .await
                {
                    Ok(reply) => match reply.outcome {
                        Outcome::ConflictCleared { existed } => {
                            let mut v = value.clone();
                            v["existed"] = json!(existed);
                            Done::Ok(v)
                        }
                        o => Done::Info(format!("unexpected outcome {o:?}")),
                    },
                    Err(e) => classify(&e, value.clone()),
                };
                (raftipam_history::CLEAR_CONFLICT, value, done)
            }
        } else if roll == 97 {
            // A reconciliation report: changes no allocation.
            let value = json!({"host": host, "allocations": held.len()});
            rec.write(process, "invoke", "report", value.clone());
            let done = match client
                .apply(Op::Report {
                    host: host.clone(),
                    report: allocator_core::HostReport {
                        endpoints: held.len() as u64,
                        allocations: held.len() as u64,
                        ..Default::default()
                    },
                })
                .await
            {
                Ok(_) => Done::Ok(value.clone()),
                Err(e) => classify(&e, value.clone()),
            };
            ("report", value, done)
        } else if roll >= 98 {
            // The odd pool created, or deleted (with whatever it holds).
            match side.take() {
                None => {
                    let value = json!({"subnet": side_net});
                    rec.write(process, "invoke", "pool_create", value.clone());
                    let spec = {
                        let mut spec = allocator_core::PoolSpec::default();
                        spec.space = "global".into();
                        spec.subnet = side_net.parse().ok();
                        spec
                    };
                    let done = match client.create_pool(spec, &host).await {
                        Ok(id) => {
                            side = Some(id.clone());
                            Done::Ok(json!({"subnet": side_net, "pool": id.to_string()}))
                        }
                        Err(e) => classify(&e, value.clone()),
                    };
                    ("pool_create", value, done)
                }
                Some(id) => {
                    let value = json!({"pool": id.to_string()});
                    rec.write(process, "invoke", "pool_delete", value.clone());
                    let done = match client.delete_pool(&id, true).await {
                        Ok(_) => Done::Ok(value.clone()),
                        Err(e) => {
                            side = Some(id);
                            classify(&e, value.clone())
                        }
                    };
                    ("pool_delete", value, done)
                }
            }
        } else {
            let value = json!({"host": host});
            rec.write(process, "invoke", "heartbeat", value.clone());
            let done = match client
                .apply(Op::Heartbeat {
                    host: host.clone(),
                    version: "chaos".into(),
                })
                .await
            {
                Ok(_) => Done::Ok(value.clone()),
                Err(e) => classify(&e, value.clone()),
            };
            ("heartbeat", value, done)
        };
        match done {
            Done::Ok(v) => rec.write(process, "ok", op, v),
            Done::Fail(v) => rec.write(process, "fail", op, v),
            Done::Info(why) => {
                let mut v = value;
                v["error"] = json!(why);
                rec.write(process, "info", op, v);
                return;
            }
        }
    }
}

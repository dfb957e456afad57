//! `etcd-load`: what `raftipam bench` does, against etcd, so the two can be compared on the
//! same machine (`scripts/bench-vs-etcd.sh`).
//!
//! The workload of an etcd-backed IPAM (go-ipam's etcd backend, Calico's per-address handles):
//! one key per address, `/ipam/10.x.y.z`. An allocation is a transaction "if the key was never
//! created, put it with the owner" (`create_revision == 0`); a release deletes the key. Clients
//! draw candidate addresses from one shared counter, so no two clients ever race for the same
//! key — the most favourable case for etcd (a real IPAM also has to find a free address). Every
//! client has its own connection. Prints one JSON line per phase, the same fields as
//! `raftipam bench --json`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// etcd client URLs, comma-separated.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 16)]
    clients: u64,
    /// Addresses to allocate (then release).
    #[arg(long, default_value_t = 10_000)]
    count: u64,
}

#[derive(Serialize)]
struct Phase {
    phase: &'static str,
    ops: u64,
    errors: u64,
    seconds: f64,
    ops_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

fn key(i: u64) -> String {
    // 10.0.0.1 upwards, as raftipam's bench fills its /8.
    let v = 0x0a00_0001u32 + i as u32;
    format!("/ipam/{}.{}.{}.{}", v >> 24, (v >> 16) & 255, (v >> 8) & 255, v & 255)
}

async fn phase(
    name: &'static str,
    clients: &[Client],
    count: u64,
    allocate: bool,
) -> anyhow::Result<Phase> {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in clients {
        let (mut c, next, errors) = (c.clone(), next.clone(), errors.clone());
        tasks.spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let k = key(i);
                let t = Instant::now();
                let ok = if allocate {
                    let txn = Txn::new()
                        .when([Compare::create_revision(k.as_str(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(k.as_str(), format!("bench/e{i}"), None)]);
                    c.txn(txn).await.map(|r| r.succeeded())
                } else {
                    c.delete(k.as_str(), None).await.map(|r| r.deleted() == 1)
                };
                match ok {
                    Ok(true) => h.saturating_record(t.elapsed().as_micros() as u64),
                    Ok(false) | Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok::<_, anyhow::Error>(h)
        });
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    while let Some(r) = tasks.join_next().await {
        all.add(&r.context("a worker panicked")??)?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Phase {
        phase: name,
        ops: all.len(),
        errors: errors.load(Ordering::Relaxed),
        seconds: secs,
        ops_per_sec: all.len() as f64 / secs.max(1e-9),
        p50_us: all.value_at_quantile(0.5),
        p99_us: all.value_at_quantile(0.99),
        max_us: all.max(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    anyhow::ensure!(!a.endpoints.is_empty(), "--endpoints is empty");
    let mut clients = Vec::new();
    for _ in 0..a.clients.max(1) {
        let mut c = Client::connect(&a.endpoints, None)
            .await
            .with_context(|| format!("connecting to etcd at {:?}", a.endpoints))?;
        c.status().await.context("etcd status")?; // connected before measuring
        clients.push(c);
    }
    // A clean slate: nothing left from an earlier run.
    clients[0]
        .delete("/ipam/", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await?;
    for (name, allocate) in [("allocate", true), ("release", false)] {
        let p = phase(name, &clients, a.count, allocate).await?;
        println!("{}", serde_json::to_string(&p)?);
    }
    Ok(())
}

//! `raftipam bench`: the load generator users run against their own cluster.
//!
//! Creates a scratch pool (a /8 in an address space of its own, so it overlaps nothing) — or
//! `--pools` /24 pools in that space, the allocations spread over them —
//! allocates `--count` addresses with `--clients` concurrent clients, optionally times
//! `--reads` linearizable who-has reads of them, optionally the heartbeats and reports of
//! `--hosts` simulated Docker hosts, releases the addresses the same way (unless `--keep`),
//! deletes the pool, and prints operations/s with p50/p99/max latency per phase.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use allocator_core::{HostReport, Op, Owner, PoolId, PoolSpec};
use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use ipnet::{IpNet, Ipv4Net};
use raft_node::Client;
use serde::Serialize;

use super::Ctx;

/// Measure allocations/s and latency.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Concurrent clients (each with its own connection).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    clients: u64,
    /// Addresses to allocate (and then release).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    count: u64,
    /// Linearizable who-has reads of the allocated addresses to time between the two phases,
    /// spread over the endpoints (followers answer them too) (0: none).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    reads: u64,
    /// Also time the background work of this many simulated Docker hosts: each sends 10
    /// heartbeats and one reconciliation report (the ratio of the shim's defaults, 30 s and
    /// 5 min), all hosts concurrently through `--clients` (0: none).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    hosts: u64,
    /// Keep the scratch pool and its allocations (no release phase): for measuring snapshots,
    /// backups and catch-up of a full cluster. Delete it afterwards with `raftipam pool delete
    /// --force POOL`.
    #[arg(long)]
    keep: bool,
    /// Spread the allocations over this many scratch pools, each a /24 (created concurrently
    /// and timed as the `pools` phase), instead of one /8 — a site with many networks.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pools: u64,
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

#[derive(Serialize)]
struct Report {
    clients: u64,
    count: u64,
    pools: u64,
    /// The scratch pools kept (`--keep`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kept_pools: Vec<String>,
    phases: Vec<Phase>,
}

fn progress(ctx: &Ctx, len: u64, what: &'static str) -> ProgressBar {
    if ctx.json {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>9} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what);
    pb
}

/// Runs `count` operations with `clients` workers; `op(client, i)` performs operation `i`.
async fn phase<F, Fut>(
    name: &'static str,
    clients: &[Client],
    count: u64,
    pb: ProgressBar,
    op: F,
) -> anyhow::Result<Phase>
where
    F: Fn(Client, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), raft_node::ClientError>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let op = Arc::new(op);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in clients {
        let (c, next, errors, op, pb) = (
            c.clone(),
            next.clone(),
            errors.clone(),
            op.clone(),
            pb.clone(),
        );
        tasks.spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let t = Instant::now();
                match op(c.clone(), i).await {
                    Ok(()) => h.saturating_record(t.elapsed().as_micros() as u64),
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            pb.println(format!("{name} {i} failed: {e}"));
                        }
                    }
                }
                pb.inc(1);
            }
            Ok::<_, anyhow::Error>(h)
        });
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    while let Some(r) = tasks.join_next().await {
        let h = r.context("a bench worker panicked")??;
        all.add(&h).context("merging latencies")?;
    }
    let secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let ops = all.len();
    Ok(Phase {
        phase: name,
        ops,
        errors: errors.load(Ordering::Relaxed),
        seconds: secs,
        ops_per_sec: ops as f64 / secs.max(1e-9),
        p50_us: all.value_at_quantile(0.5),
        p99_us: all.value_at_quantile(0.99),
        max_us: all.max(),
    })
}

/// Addresses a /24 scratch pool hands out (network and broadcast excluded).
const PER_SLASH24: u64 = 254;

pub async fn run(ctx: &Ctx, a: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.pools == 1 || a.count.div_ceil(a.pools) <= PER_SLASH24,
        "--count {} over --pools {} puts {} addresses in a /24 pool, which holds {PER_SLASH24}: \
         use more pools or fewer addresses",
        a.count,
        a.pools,
        a.count.div_ceil(a.pools)
    );
    let admin = ctx.client()?;
    let tag = format!(
        "{:08x}",
        std::process::id() ^ (Instant::now().elapsed().subsec_nanos())
    );
    let space = format!("bench-{tag}");
    let clients: Vec<Client> = (0..a.clients)
        .map(|_| ctx.client())
        .collect::<Result<_, _>>()?;
    // Warm the connections up so that connecting is not measured.
    for c in &clients {
        c.status().await?;
    }
    let mut phases = Vec::new();
    let pools: Vec<PoolId> = if a.pools == 1 {
        let spec = {
            let mut spec = PoolSpec::default();
            spec.space = space.clone();
            spec.subnet = Some("10.0.0.0/8".parse().context("bench subnet")?);
            spec
        };
        vec![admin
            .create_pool(spec, "bench")
            .await
            .context("creating the scratch pool")?]
    } else {
        // Pool k is 10.(k / 256).(k % 256).0/24.
        let made: Arc<Vec<OnceLock<PoolId>>> =
            Arc::new((0..a.pools).map(|_| OnceLock::new()).collect());
        let (m, sp) = (made.clone(), space.clone());
        let created = phase(
            "pools",
            &clients,
            a.pools,
            progress(ctx, a.pools, "pools"),
            move |c, k| {
                let (m, sp) = (m.clone(), sp.clone());
                async move {
                    let spec = {
                        let mut spec = PoolSpec::default();
                        spec.space = sp;
                        spec.subnet = Some(IpNet::V4(
                            Ipv4Net::new(
                                Ipv4Addr::new(10, (k / 256) as u8, (k % 256) as u8, 0),
                                24,
                            )
                            .expect("a /24 is a valid prefix"),
                        ));
                        spec
                    };
                    let id = c.create_pool(spec, "bench").await?;
                    let _ = m[k as usize].set(id);
                    Ok(())
                }
            },
        )
        .await?;
        let made: Vec<PoolId> = made.iter().filter_map(|p| p.get().cloned()).collect();
        if created.errors > 0 {
            // Leave nothing behind: the pools that were created go again (best effort).
            for p in &made {
                let _ = admin.delete_pool(p, true).await;
            }
            anyhow::bail!(
                "{} of {} scratch pools could not be created (the {} created were deleted again)",
                created.errors,
                a.pools,
                made.len()
            );
        }
        phases.push(created);
        made
    };
    let pools = Arc::new(pools);
    // Allocation i goes to pool i mod --pools; its address is kept for the reads and releases.
    let got: Arc<Vec<OnceLock<(u32, IpAddr)>>> =
        Arc::new((0..a.count).map(|_| OnceLock::new()).collect());
    let (p, g) = (pools.clone(), got.clone());
    let alloc = phase(
        "allocate",
        &clients,
        a.count,
        progress(ctx, a.count, "allocate"),
        move |c, i| {
            let k = (i % p.len() as u64) as usize;
            let (pool, g) = (p[k].clone(), g.clone());
            async move {
                let net = c
                    .allocate(&pool, None, Owner::new("bench", format!("e{i}")))
                    .await?;
                let _ = g[i as usize].set((k as u32, net.addr()));
                Ok(())
            }
        },
    )
    .await?;
    phases.push(alloc);
    let held: Vec<(u32, IpAddr)> = got.iter().filter_map(|x| x.get().copied()).collect();
    let held = Arc::new(held);
    let reads = if a.reads > 0 && !held.is_empty() {
        let h = held.clone();
        // Reads spread over the endpoints (client i through endpoint i mod n): followers
        // answer linearizable reads themselves, so every node serves its share.
        let readers: Vec<Client> = (0..a.clients)
            .map(|i| {
                let e = &ctx.endpoints[i as usize % ctx.endpoints.len()];
                Ok(Client::with_config([e], ctx.client_config(ctx.timeout)?)?)
            })
            .collect::<anyhow::Result<_>>()?;
        for c in &readers {
            c.status().await?;
        }
        Some(
            phase(
                "who-has",
                &readers,
                a.reads,
                progress(ctx, a.reads, "who-has"),
                move |c, i| {
                    let addr = h[(i % h.len() as u64) as usize].1;
                    async move {
                        match c.who_has(addr).await {
                            Ok(found) if !found.is_empty() => Ok(()),
                            Ok(_) => Err(raft_node::ClientError::Protocol(format!(
                                "{addr} is allocated but who-has found nothing"
                            ))),
                            Err(e) => Err(e),
                        }
                    }
                },
            )
            .await?,
        )
    } else {
        None
    };
    let host_work = if a.hosts > 0 {
        let hosts = a.hosts;
        Some(
            phase(
                "hosts",
                &clients,
                hosts * 11,
                progress(ctx, hosts * 11, "hosts"),
                move |c, i| {
                    let host = format!("bench-host-{}", i % hosts);
                    // Rounds 0-9 are heartbeats, round 10 the report.
                    let op = if i / hosts < 10 {
                        Op::Heartbeat {
                            host,
                            version: env!("CARGO_PKG_VERSION").into(),
                        }
                    } else {
                        Op::Report {
                            host,
                            report: HostReport {
                                endpoints: 40,
                                allocations: 40,
                                ..Default::default()
                            },
                        }
                    };
                    async move { c.apply(op).await.map(|_| ()) }
                },
            )
            .await?,
        )
    } else {
        None
    };
    phases.extend([reads, host_work].into_iter().flatten());
    let kept_pools = if a.keep {
        pools.iter().map(|p| p.to_string()).collect()
    } else {
        let p = pools.clone();
        let h = held.clone();
        phases.push(
            phase(
                "release",
                &clients,
                held.len() as u64,
                progress(ctx, held.len() as u64, "release"),
                move |c, i| {
                    let (k, addr) = h[i as usize];
                    let pool = p[k as usize].clone();
                    async move { c.release(&pool, addr, "bench", false).await.map(|_| ()) }
                },
            )
            .await?,
        );
        let p = pools.clone();
        let removed = phase(
            "pool-rm",
            &clients,
            pools.len() as u64,
            progress(ctx, pools.len() as u64, "pool-rm"),
            move |c, k| {
                let pool = p[k as usize].clone();
                async move { c.delete_pool(&pool, true).await.map(|_| ()) }
            },
        )
        .await?;
        // The simulated hosts' heartbeats and reports go too (as `host forget` would).
        for i in 0..a.hosts {
            let host = format!("bench-host-{i}");
            admin
                .apply(Op::ForgetHost { host })
                .await
                .context("forgetting the simulated hosts")?;
        }
        anyhow::ensure!(
            removed.errors == 0,
            "{} of {} scratch pools could not be deleted: `raftipam pool ls` lists them (address \
             space {space}); remove each with `raftipam pool delete --force POOL`",
            removed.errors,
            pools.len()
        );
        Vec::new()
    };
    print_report(
        ctx,
        &Report {
            clients: a.clients,
            count: a.count,
            pools: a.pools,
            kept_pools,
            phases,
        },
    )
}

fn print_report(ctx: &Ctx, report: &Report) -> anyhow::Result<()> {
    ctx.print(report, |r| {
        outln!("{} clients, {} addresses in {} pools", r.clients, r.count, r.pools);
        match r.kept_pools.as_slice() {
            [] => {}
            [p] => outln!("kept pool {p} with its allocations (raftipam pool delete --force {p})"),
            many => outln!(
                "kept {} pools with their allocations ({} ... {}; raftipam pool delete --force POOL)",
                many.len(),
                many[0],
                many[many.len() - 1]
            ),
        }
        for p in &r.phases {
            outln!(
                "{:<9} {:>10.0} ops/s  p50 {:>8}  p99 {:>8}  max {:>8}  ({} ops in {:.2}s, {} errors)",
                p.phase,
                p.ops_per_sec,
                fmt_us(p.p50_us),
                fmt_us(p.p99_us),
                fmt_us(p.max_us),
                p.ops,
                p.seconds,
                p.errors
            );
        }
    })
}

fn fmt_us(us: u64) -> String {
    if us < 1000 {
        format!("{us}µs")
    } else {
        format!("{:.2}ms", Duration::from_micros(us).as_secs_f64() * 1000.0)
    }
}

//! `raftipam check [--repair]`: compare what the cluster says this host holds with what its
//! dockerd has.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use allocator_core::{Op, Order, Outcome, Owner};
use clap::Args;
use raft_node::docker::{Docker, DEFAULT_DOCKER_HOST};
use raft_node::reconcile::{compare, ops_metrics, release_leak, Leak, Missing, Report};
use serde::Serialize;

use super::Ctx;

/// Compare the cluster with this host's dockerd.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Release leaked addresses (allocated to this host, no endpoint), and claim for this host
    /// endpoint addresses the cluster holds for nobody, after printing what will be done.
    #[arg(long)]
    repair: bool,
    /// This Docker host's name in the cluster (default: the machine's hostname).
    #[arg(long)]
    host: Option<String>,
    /// dockerd's API socket.
    #[arg(long, default_value = DEFAULT_DOCKER_HOST)]
    docker_host: String,
    /// The shim's IPAM driver name (the plugin socket's base name).
    #[arg(long, default_value = "raftipam")]
    driver: String,
    /// With --repair: leave leaks younger than this alone (an endpoint being created has its
    /// address a moment before dockerd lists it).
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    min_age: Duration,
}

/// What `check --json` prints.
#[derive(Serialize)]
struct CheckOutput<'a> {
    #[serde(flatten)]
    report: &'a Report,
    /// Leaks released by --repair.
    released: Vec<&'a Leak>,
    /// Missing addresses claimed for this host by --repair.
    claimed: Vec<&'a Missing>,
    /// Whether anything is still wrong.
    ok: bool,
}

fn print_report(r: &Report) {
    println!(
        "host {}: {} allocations in the cluster, {} endpoints in dockerd",
        r.host, r.allocations, r.endpoints
    );
    for l in &r.leaked {
        println!(
            "leaked   {} in {} (owner {}/{}, seq {}): allocated, no endpoint in dockerd",
            l.allocation.addr,
            l.pool,
            l.allocation.owner.host,
            l.allocation.owner.endpoint,
            l.allocation.seq
        );
    }
    for m in &r.missing {
        let held = match &m.held_by {
            Some(h) => format!("the cluster says {h} holds it"),
            None => "the cluster holds it for nobody".to_string(),
        };
        println!(
            "missing  {} of container {} in network {}: {held}",
            m.endpoint.addr, m.endpoint.container, m.endpoint.network
        );
    }
    for t in &r.held_twice {
        println!(
            "TWICE    {} ({}): {}",
            t.addr,
            t.source,
            t.holders.join(", ")
        );
    }
    if r.is_clean() {
        println!("ok: nothing leaked, nothing missing, nothing held twice");
    }
}

pub async fn run(ctx: &Ctx, a: CheckArgs) -> anyhow::Result<()> {
    let host = super::shim::host_name(a.host)?;
    let client = ctx.client()?;
    let docker = Docker::new(&a.docker_host);
    let report = compare(&client, &docker, &host, &a.driver).await?;
    if !a.repair {
        let ok = report.is_clean();
        ctx.print(
            &CheckOutput {
                report: &report,
                released: vec![],
                claimed: vec![],
                ok,
            },
            |o| print_report(o.report),
        )?;
        anyhow::ensure!(
            ok,
            "host {host}: {} leaked, {} missing, {} held twice (raftipam check --repair releases the leaked ones)",
            report.leaked.len(),
            report.missing.len(),
            report.held_twice.len()
        );
        return Ok(());
    }

    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let old_enough =
        |l: &Leak| now_s.saturating_sub(u64::from(l.allocation.at_s)) >= a.min_age.as_secs();
    let to_release: Vec<&Leak> = report.leaked.iter().filter(|l| old_enough(l)).collect();
    let to_claim: Vec<&Missing> = report
        .missing
        .iter()
        .filter(|m| m.held_by.is_none())
        .collect();
    let say = |s: String| {
        if ctx.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };
    if !ctx.json {
        print_report(&report);
    }
    for l in &report.leaked {
        if !old_enough(l) {
            say(format!(
                "will leave {} alone: allocated less than {} ago",
                l.allocation.addr,
                humantime::format_duration(a.min_age)
            ));
        }
    }
    for l in &to_release {
        say(format!(
            "will release {} in {} (seq {}) unless it changed meanwhile",
            l.allocation.addr, l.pool, l.allocation.seq
        ));
    }
    for m in &to_claim {
        say(format!(
            "will claim {} for {host}/{} (container in network {})",
            m.endpoint.addr, m.endpoint.container, m.endpoint.network
        ));
    }
    let mut released = Vec::new();
    let mut failures = Vec::new();
    for l in to_release {
        match release_leak(&client, &host, l).await {
            Ok(true) => {
                ops_metrics().repaired.inc();
                say(format!("released {} in {}", l.allocation.addr, l.pool));
                released.push(l);
            }
            Ok(false) => say(format!(
                "left {} alone: it changed since it was seen",
                l.allocation.addr
            )),
            Err(e) => failures.push(format!("releasing {}: {e}", l.allocation.addr)),
        }
    }
    let mut claimed = Vec::new();
    if !to_claim.is_empty() {
        let pools = client.pools().await?;
        for m in to_claim {
            let Some(p) = pools
                .iter()
                .find(|p| p.id.subnet.contains(&m.endpoint.addr))
            else {
                failures.push(format!(
                    "no pool holds {} (network {}): create the network again or release it in dockerd",
                    m.endpoint.addr, m.endpoint.network
                ));
                continue;
            };
            let op = Op::Allocate {
                pool: p.id.clone(),
                addr: Some(m.endpoint.addr),
                owner: Owner::new(host.clone(), m.endpoint.container.clone()),
                order: Order::PoolDefault,
            };
            match client.apply(op).await.map(|w| w.outcome) {
                Ok(Outcome::Allocated { .. }) => {
                    say(format!(
                        "claimed {} for {host}/{}",
                        m.endpoint.addr, m.endpoint.container
                    ));
                    claimed.push(m);
                }
                Ok(o) => failures.push(format!("claiming {}: {o:?}", m.endpoint.addr)),
                Err(e) => failures.push(format!("claiming {}: {e}", m.endpoint.addr)),
            }
        }
    }
    let remaining = report.leaked.len() - released.len() + report.missing.len() - claimed.len()
        + report.held_twice.len();
    let ok = remaining == 0 && failures.is_empty();
    if ctx.json {
        ctx.print(
            &CheckOutput {
                report: &report,
                released,
                claimed,
                ok,
            },
            |_| {},
        )?;
    }
    for f in &failures {
        eprintln!("failed: {f}");
    }
    anyhow::ensure!(
        ok,
        "host {host}: {remaining} problem(s) remain after the repair{}",
        if failures.is_empty() {
            String::new()
        } else {
            format!(", {} failure(s)", failures.len())
        }
    );
    Ok(())
}

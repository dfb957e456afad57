//! `raftipam check [--repair]`: compare what the cluster says each host holds with what its
//! dockerd has — this host live, the others from their shims' last reports.
//!
//! This host's dockerd is asked now. Another host's dockerd is not reachable from here, so its
//! part comes from the report its shim writes into the cluster at every reconciliation pass
//! (`Op::Report`): its leaks that still stand, its missing endpoints, and what they imply
//! across hosts (an endpoint on one host whose address another host holds and does not call
//! leaked: held twice). `--from-reports` asks no dockerd (every host from its report).
//! `--repair` acts on this host only; run it on each host, or let each
//! shim release its leaks after the grace period.

use std::time::Duration;

use clap::Args;
use plugin_shim::agent::assess::{assess_others, OtherHost, ReportStatus};
use plugin_shim::agent::compare::{compare, compare_lists, Leak, Missing, Report, Twice};
use plugin_shim::agent::metrics::ops_metrics;
use plugin_shim::agent::reconcile::{publish, release_leak};
use plugin_shim::agent::repair;
use plugin_shim::agent::{Docker, DEFAULT_DOCKER_HOST};
use plugin_shim::Inventory;
use serde::Serialize;

use super::{term_safe, Ctx};

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
    /// dockerd's API socket (a path, or unix://PATH as in DOCKER_HOST).
    #[arg(long, env = "DOCKER_HOST", default_value = DEFAULT_DOCKER_HOST)]
    docker_host: String,
    /// The shim's IPAM driver name (the plugin socket's base name).
    #[arg(long, default_value = "raftipam")]
    driver: String,
    /// With --repair: leave leaks younger than this alone (an endpoint being created has its
    /// address a moment before dockerd lists it).
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    min_age: Duration,
    /// Another host's report older than this is stale: shown, but it accuses nobody (3 of the
    /// default reconciliation intervals).
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    max_report_age: Duration,
    /// Check this host only.
    #[arg(long)]
    local: bool,
    /// Ask no local dockerd: every host, this one too, from its shim's last report (to check
    /// from a machine without Docker, e.g. a node that serves no containers).
    #[arg(long, conflicts_with_all = ["repair", "local"])]
    from_reports: bool,
}

/// What `check --json` prints.
#[derive(Serialize)]
struct CheckOutput<'a> {
    /// This host, compared live (absent with --from-reports).
    #[serde(flatten)]
    report: Option<&'a Report>,
    /// Leaks released by --repair.
    released: Vec<&'a Leak>,
    /// Missing addresses claimed for this host by --repair.
    claimed: Vec<&'a Missing>,
    /// The other hosts, from their last reports.
    others: &'a [OtherHost],
    /// Addresses the hosts' reports show used on two hosts.
    across_hosts: &'a [Twice],
    /// Hosts whose report is stale or missing: not verified.
    unverified: Vec<&'a str>,
    /// Whether nothing is wrong (unverified hosts aside).
    ok: bool,
}

fn fmt_age(s: Option<u64>) -> String {
    super::host::fmt_age(s.map(Duration::from_secs))
}

fn print_leak(l: &Leak) {
    outln!(
        "leaked   {} in {} (owner {}/{}, seq {}): allocated, no endpoint in dockerd",
        l.allocation.addr,
        l.pool,
        term_safe(&l.allocation.owner.host),
        term_safe(&l.allocation.owner.endpoint.to_string()),
        l.allocation.seq
    );
}

fn print_twice(t: &Twice) {
    outln!(
        "TWICE    {} ({}): {}",
        t.addr,
        term_safe(&t.source.to_string()),
        term_safe(&t.holders.join(", "))
    );
}

fn print_others(others: &[OtherHost], across: &[Twice]) {
    for o in others {
        match o.status {
            ReportStatus::Reported => outln!(
                "host {} (its shim's report, {}): {} allocations in the cluster, {} endpoints in dockerd",
                term_safe(&o.host),
                fmt_age(o.report_age_s),
                o.allocations,
                o.endpoints.unwrap_or(0)
            ),
            ReportStatus::Stale => outln!(
                "host {}: not verified — its shim's last report is {} (is its shim running?); {} allocations in the cluster",
                term_safe(&o.host),
                fmt_age(o.report_age_s),
                o.allocations
            ),
            ReportStatus::Unreported => outln!(
                "host {}: not verified — its shim never reported (reconciliation off, or not a raftipam host); {} allocations in the cluster",
                term_safe(&o.host),
                o.allocations
            ),
        }
        for l in &o.leaked {
            print_leak(l);
        }
        for m in &o.missing {
            let held = match &m.held_by {
                Some(h) => format!("the cluster says {} holds it", term_safe(&h.to_string())),
                None => "the cluster holds it for nobody".to_string(),
            };
            outln!(
                "missing  {} of container {} in network {}: {held}",
                m.addr,
                term_safe(&m.container.to_string()),
                term_safe(&m.network.to_string())
            );
        }
        if o.unlisted > 0 {
            outln!("         and {} more not listed in the report", o.unlisted);
        }
        if o.held_twice > 0 {
            outln!(
                "TWICE    {} address(es) held twice on that host: run `raftipam check` there",
                o.held_twice
            );
        }
        if o.status == ReportStatus::Reported && o.is_clean() {
            outln!("ok");
        }
    }
    for t in across {
        print_twice(t);
    }
}

fn print_report(r: &Report) {
    outln!(
        "host {}: {} allocations in the cluster, {} endpoints in dockerd",
        r.host,
        r.allocations,
        r.endpoints
    );
    for l in &r.leaked {
        print_leak(l);
    }
    for m in &r.missing {
        let held = match &m.held_by {
            Some(h) => format!("the cluster says {} holds it", term_safe(&h.to_string())),
            None => "the cluster holds it for nobody".to_string(),
        };
        outln!(
            "missing  {} of container {} in network {}: {held}",
            m.endpoint.addr,
            m.endpoint.container,
            m.endpoint.network
        );
    }
    for t in &r.held_twice {
        print_twice(t);
    }
    if r.is_clean() {
        outln!("ok: nothing leaked, nothing missing, nothing held twice");
    }
}

pub async fn run(ctx: &Ctx, a: CheckArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let docker = Docker::new(&a.docker_host);
    // The cluster first: an endpoint created meanwhile shows as missing, not as a leak.
    let cluster = Inventory::all_allocations(&client).await?;
    let (host, local) = if a.from_reports {
        (String::new(), None)
    } else {
        let host = super::shim::host_name(a.host.clone())?;
        let endpoints = docker.all_endpoints().await.map_err(|e| {
            anyhow::anyhow!("{e}; to check from reports only (no dockerd here), use --from-reports")
        })?;
        let report = compare_lists(&host, &a.driver, &cluster, &endpoints);
        if !a.repair {
            // What this host's shim would have written at its next pass, fresher.
            if let Err(e) = publish(&client, &report).await {
                eprintln!("warning: could not write this check's report into the cluster: {e}");
            }
        }
        (host, Some(report))
    };
    let (others, across) = if a.local {
        (Vec::new(), Vec::new())
    } else {
        let reports = Inventory::reports(&client).await?;
        let hosts = Inventory::hosts(&client).await?;
        assess_others(
            &host,
            local.as_ref(),
            &reports,
            &cluster,
            &hosts,
            raft_node::now_ms(),
            a.max_report_age,
        )
    };
    let unverified: Vec<&str> = others
        .iter()
        .filter(|o| o.status != ReportStatus::Reported)
        .map(|o| o.host.as_str())
        .collect();
    let others_bad = others.iter().filter(|o| !o.is_clean()).count();
    let say_unverified = |ctx: &Ctx| {
        if !unverified.is_empty() && !ctx.json {
            outln!(
                "not verified: {} (no fresh report from their shims; run `raftipam check` on them)",
                unverified.join(", ")
            );
        }
    };
    let local_clean = local.as_ref().is_none_or(Report::is_clean);
    let Some(report) = local.as_ref().filter(|_| a.repair) else {
        let ok = local_clean && others_bad == 0 && across.is_empty();
        ctx.print(
            &CheckOutput {
                report: local.as_ref(),
                released: vec![],
                claimed: vec![],
                others: &others,
                across_hosts: &across,
                unverified: unverified.clone(),
                ok,
            },
            |o| {
                if let Some(r) = o.report {
                    print_report(r);
                }
                print_others(o.others, o.across_hosts);
            },
        )?;
        say_unverified(ctx);
        let here = match &local {
            Some(r) => format!(
                "host {host}: {} leaked, {} missing, {} held twice; ",
                r.leaked.len(),
                r.missing.len(),
                r.held_twice.len()
            ),
            None => String::new(),
        };
        anyhow::ensure!(
            ok,
            "{here}other hosts: {others_bad} with problems; {} address(es) used on two hosts \
             (`raftipam check --repair` on a host releases its leaks)",
            across.len()
        );
        return Ok(());
    };

    let now_s = raft_node::now_ms() / 1000;
    let plan = repair::plan(report, now_s, a.min_age);
    let say = |s: String| {
        if ctx.json {
            eprintln!("{s}");
        } else {
            outln!("{s}");
        }
    };
    if !ctx.json {
        print_report(report);
        print_others(&others, &across);
        say_unverified(ctx);
    }
    for l in &plan.too_young {
        say(format!(
            "will leave {} alone: allocated less than {} ago",
            l.allocation.addr,
            humantime::format_duration(a.min_age)
        ));
    }
    for l in &plan.release {
        say(format!(
            "will release {} in {} (seq {}) unless it changed meanwhile",
            l.allocation.addr, l.pool, l.allocation.seq
        ));
    }
    for m in &plan.claim {
        say(format!(
            "will claim {} for {host}/{} (container in network {})",
            m.endpoint.addr, m.endpoint.container, m.endpoint.network
        ));
    }
    let mut released = Vec::new();
    let mut failures = Vec::new();
    for &l in &plan.release {
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
    if !plan.claim.is_empty() {
        let pools = client.pools().await?;
        for &m in &plan.claim {
            match repair::claim(&client, &pools, &host, m).await {
                Ok(()) => {
                    say(format!(
                        "claimed {} for {host}/{}",
                        m.endpoint.addr, m.endpoint.container
                    ));
                    claimed.push(m);
                }
                Err(e) => failures.push(e),
            }
        }
    }
    let remaining = report.leaked.len() - released.len() + report.missing.len() - claimed.len()
        + report.held_twice.len();
    let ok = remaining == 0 && failures.is_empty() && others_bad == 0 && across.is_empty();
    // The cluster's view of this host after the repair.
    match compare(&client, &docker, &host, &a.driver).await {
        Ok(after) => {
            if let Err(e) = publish(&client, &after).await {
                eprintln!(
                    "warning: could not write the report after the repair into the cluster: {e}"
                );
            }
        }
        Err(e) => eprintln!("warning: could not compare again after the repair: {e}"),
    }
    if ctx.json {
        ctx.print(
            &CheckOutput {
                report: Some(report),
                released,
                claimed,
                others: &others,
                across_hosts: &across,
                unverified: unverified.clone(),
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
        "host {host}: {remaining} problem(s) remain after the repair{}{}",
        if failures.is_empty() {
            String::new()
        } else {
            format!(", {} failure(s)", failures.len())
        },
        if others_bad + across.len() > 0 {
            format!(
                "; other hosts: {others_bad} with problems, {} address(es) used on two hosts \
                 (repair them on those hosts)",
                across.len()
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

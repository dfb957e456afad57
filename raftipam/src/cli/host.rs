//! `raftipam host`: the Docker hosts the cluster knows (heartbeats and holdings), and
//! forgetting one that is gone for good.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use allocator_core::{HostInfo, HostQuota, Op, Outcome, QuotaReport, Quotas};
use anyhow::Context;
use clap::Subcommand;
use raft_node::api::{Consistency, Query, QueryReply};
use raft_node::now_ms;
use raft_node::Client;
use serde::Serialize;

use super::Ctx;

#[derive(Subcommand, Debug)]
pub enum HostCmd {
    /// List hosts: version, last heartbeat, addresses, reservations and pools each holds.
    Ls,
    /// Release everything a host that is gone for good holds: its addresses, its shares of
    /// reservations and its holds on pools; and forget its heartbeat.
    Forget {
        /// The host's name (as `raftipam host ls` shows it).
        host: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Forget it even though its heartbeat is fresh (its shim may still be running).
        #[arg(long)]
        force: bool,
        /// A heartbeat younger than this is fresh (3 heartbeat intervals by default).
        #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
        fresh: Duration,
    },
    /// Per-host quotas (admin; cluster version 2 on): what one host certificate may take.
    #[command(subcommand)]
    Quota(QuotaCmd),
}

#[derive(Subcommand, Debug)]
pub enum QuotaCmd {
    /// Set the quotas of every host (or of one, `--host`); limits not given stay as they are.
    /// `none` is no limit.
    Set {
        /// One host's own quotas instead of the cluster's.
        #[arg(long)]
        host: Option<String>,
        /// Most pools a host holds.
        #[arg(long, value_parser = limit::<u32>)]
        pools: Option<Limit<u32>>,
        /// Most addresses a host holds (allocations and reserved addresses).
        #[arg(long, value_parser = limit::<u64>)]
        addresses: Option<Limit<u64>>,
        /// Shortest IPv4 prefix length of a pool a host creates (16: nothing larger than a /16).
        #[arg(long, value_parser = limit::<u8>)]
        max_prefix_v4: Option<Limit<u8>>,
        /// Shortest IPv6 prefix length of a pool a host creates (48: nothing larger than a /48).
        #[arg(long, value_parser = limit::<u8>)]
        max_prefix_v6: Option<Limit<u8>>,
    },
    /// Drop a host's own quotas (it is bound by the cluster's again), or with no --host, the
    /// cluster's (back to the built-in 64 pools, 65,536 addresses, /16, /48).
    Reset {
        /// The host.
        #[arg(long)]
        host: Option<String>,
    },
    /// Show the quotas and every host's use.
    Show,
}

/// A limit on the command line: a number, or `none`.
#[derive(Clone, Copy, Debug)]
pub struct Limit<T>(Option<T>);

fn limit<T: std::str::FromStr>(s: &str) -> Result<Limit<T>, String> {
    if matches!(s, "none" | "unlimited") {
        return Ok(Limit(None));
    }
    s.parse::<T>()
        .map(|v| Limit(Some(v)))
        .map_err(|_| format!("{s:?} is not a number (or `none` for no limit)"))
}

/// Every host's quotas and use; `None` from a node too old to know them.
pub async fn quotas(client: &Client) -> anyhow::Result<Option<QuotaReport>> {
    match client.query(Query::Quotas, Consistency::Linearizable).await {
        Ok(QueryReply::Quotas(q)) => Ok(Some(q)),
        Ok(r) => anyhow::bail!("unexpected answer to a quotas query: {r:?}"),
        Err(_) => Ok(None),
    }
}

/// "2/64".
fn of<T: std::fmt::Display>(used: u64, limit: Option<T>) -> String {
    match limit {
        Some(l) => format!("{used}/{l}"),
        None => format!("{used}/none"),
    }
}

fn quota_cell(q: &HostQuota) -> String {
    let p = |v: Option<u8>| v.map_or("none".to_string(), |v| format!("/{v}"));
    format!(
        "pools {} addresses {} v4 {} v6 {}{}",
        of(q.pools, q.quotas.pools),
        of(q.addresses, q.quotas.addresses),
        p(q.quotas.max_prefix_v4),
        p(q.quotas.max_prefix_v6),
        if q.own { " (own)" } else { "" }
    )
}

fn cluster_line(r: &QuotaReport) -> String {
    format!(
        "quotas of every host ({}): {}{}",
        if r.cluster_set {
            "set by an operator"
        } else {
            "built-in"
        },
        r.cluster,
        if r.enforced {
            ""
        } else {
            " — not enforced until `raftipam cluster upgrade` (cluster version 2)"
        }
    )
}

/// A host as `host ls --json` prints it.
#[derive(Serialize)]
struct HostRow {
    #[serde(flatten)]
    info: HostInfo,
    /// Seconds since the last heartbeat (by this machine's clock).
    last_seen_age_s: Option<u64>,
    /// Seconds since its shim's last reconciliation report.
    report_age_s: Option<u64>,
    /// Its quotas and use of them (none from a node older than 0.2, or for an operator).
    quota: Option<HostQuota>,
    /// How its agent last said it checks each subnet on the LAN (none: it never said).
    lan: Option<allocator_core::HostLan>,
}

/// Every host's last LAN-check report; empty from a node too old to know them.
pub async fn lan_checks(client: &Client) -> Vec<allocator_core::HostLan> {
    match client
        .query(Query::LanChecks, Consistency::Linearizable)
        .await
    {
        Ok(QueryReply::LanChecks(h)) => h,
        _ => Vec::new(),
    }
}

/// "on (2 subnets)", "off for 10.0.0.0/24 (no interface ...)", "-".
pub(super) fn lan_cell(lan: Option<&allocator_core::HostLan>) -> String {
    let Some(lan) = lan else {
        return "-".into();
    };
    let off: Vec<&allocator_core::LanCheck> =
        lan.checks.iter().filter(|c| c.off.is_some()).collect();
    match off.first() {
        None => format!("on ({} subnets)", lan.checks.len()),
        Some(c) => format!(
            "OFF for {}{}: {}",
            c.subnet,
            if off.len() > 1 {
                format!(" and {} more", off.len() - 1)
            } else {
                String::new()
            },
            super::term_safe(c.off.as_deref().unwrap_or_default())
        ),
    }
}

/// Every host the cluster knows (linearizable).
pub async fn hosts(client: &Client) -> anyhow::Result<Vec<HostInfo>> {
    match client
        .query(Query::Hosts, Consistency::Linearizable)
        .await?
    {
        QueryReply::Hosts(h) => Ok(h),
        r => anyhow::bail!("unexpected answer to a hosts query: {r:?}"),
    }
}

fn age(h: &HostInfo, now: u64) -> Option<Duration> {
    h.last_seen_ms
        .map(|t| Duration::from_millis(now.saturating_sub(t)))
}

/// "3m 2s ago", or "never".
pub(super) fn fmt_age(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!(
            "{} ago",
            humantime::format_duration(Duration::from_secs(d.as_secs()))
        ),
        None => "never".into(),
    }
}

pub async fn run(ctx: &Ctx, cmd: HostCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        HostCmd::Ls => {
            let now = now_ms();
            let report = quotas(&client).await?;
            let lan = lan_checks(&client).await;
            let rows: Vec<HostRow> = hosts(&client)
                .await?
                .into_iter()
                .map(|info| HostRow {
                    last_seen_age_s: age(&info, now).map(|d| d.as_secs()),
                    report_age_s: info.report_ms.map(|t| now.saturating_sub(t) / 1000),
                    quota: report
                        .as_ref()
                        .and_then(|r| r.hosts.iter().find(|q| q.host == info.name).cloned()),
                    lan: lan.iter().find(|l| l.host == info.name).cloned(),
                    info,
                })
                .collect();
            ctx.print(&rows, |rows| {
                if let Some(r) = &report {
                    outln!("{}", cluster_line(r));
                }
                if rows.is_empty() {
                    outln!("no hosts");
                    return;
                }
                outln!(
                    "{:<24} {:<10} {:<20} {:>9} {:>12} {:>5} {:>6}  {:<20} QUOTA (USED/LIMIT)",
                    "HOST",
                    "VERSION",
                    "LAST SEEN",
                    "ADDRESSES",
                    "RESERVATIONS",
                    "POOLS",
                    "LEAKED",
                    "CHECKED"
                );
                for r in rows {
                    outln!(
                        "{:<24} {:<10} {:<20} {:>9} {:>12} {:>5} {:>6}  {:<20} {}",
                        super::term_safe(&r.info.name),
                        super::term_safe(r.info.version.as_deref().unwrap_or("-")),
                        fmt_age(r.last_seen_age_s.map(Duration::from_secs)),
                        r.info.allocations,
                        r.info.reservations,
                        r.info.pools,
                        r.info.leaked.map_or("-".to_string(), |n| n.to_string()),
                        fmt_age(r.report_age_s.map(Duration::from_secs)),
                        r.quota.as_ref().map_or("-".to_string(), quota_cell),
                    );
                }
                for r in rows {
                    if r.lan.is_some() {
                        outln!(
                            "LAN checks of {}: {}",
                            super::term_safe(&r.info.name),
                            lan_cell(r.lan.as_ref())
                        );
                    }
                }
            })
        }
        HostCmd::Quota(cmd) => quota(ctx, &client, cmd).await,
        HostCmd::Forget {
            host,
            yes,
            force,
            fresh,
        } => {
            let now = now_ms();
            let all = hosts(&client).await?;
            let Some(h) = all.iter().find(|h| h.name == host) else {
                anyhow::bail!(
                    "the cluster knows no host named {host:?} (raftipam host ls lists them)"
                );
            };
            if let Some(a) = age(h, now) {
                if a < fresh && !force {
                    anyhow::bail!(
                        "host {host} sent a heartbeat {} — its shim looks alive; stop it first, \
                         wait until its heartbeat is older than {}, or use --force",
                        fmt_age(Some(a)),
                        humantime::format_duration(fresh)
                    );
                }
            }
            if !yes {
                anyhow::ensure!(
                    std::io::stdin().is_terminal(),
                    "refusing to forget host {host} without confirmation: run it on a terminal or add --yes"
                );
                eprint!(
                    "Forget host {host}: release its {} addresses, {} reservation shares and {} pool holds (last seen {})? Type the host name to confirm: ",
                    h.allocations,
                    h.reservations,
                    h.pools,
                    fmt_age(age(h, now))
                );
                let _ = std::io::stderr().flush();
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("reading the confirmation")?;
                anyhow::ensure!(line.trim() == host, "not confirmed; nothing changed");
            }
            let w = client.apply(Op::ForgetHost { host: host.clone() }).await?;
            let Outcome::HostForgotten {
                allocations,
                reservations,
                pools,
            } = w.outcome
            else {
                anyhow::bail!("unexpected answer to forget: {:?}", w.outcome);
            };
            ctx.print(
                &serde_json::json!({
                    "host": host,
                    "allocations": allocations,
                    "reservations": reservations,
                    "pools": pools,
                }),
                |_| {
                    outln!(
                        "forgot host {host}: released {allocations} addresses, {reservations} reservation shares, {pools} pool holds"
                    )
                },
            )
        }
    }
}

/// `raftipam host quota ...`.
async fn quota(ctx: &Ctx, client: &Client, cmd: QuotaCmd) -> anyhow::Result<()> {
    let (host, quotas) = match cmd {
        QuotaCmd::Show => {
            let Some(r) = quotas(client).await? else {
                anyhow::bail!(
                    "the node answered no quotas: it runs a release older than 0.2, which has none"
                );
            };
            return ctx.print(&r, |r| {
                outln!("{}", cluster_line(r));
                for q in &r.hosts {
                    outln!("{:<24} {}", q.host, quota_cell(q));
                }
            });
        }
        QuotaCmd::Reset { host } => (host, None),
        QuotaCmd::Set {
            host,
            pools,
            addresses,
            max_prefix_v4,
            max_prefix_v6,
        } => {
            anyhow::ensure!(
                pools.is_some()
                    || addresses.is_some()
                    || max_prefix_v4.is_some()
                    || max_prefix_v6.is_some(),
                "give at least one of --pools, --addresses, --max-prefix-v4, --max-prefix-v6 (a number, or `none`)"
            );
            let report = quotas(client).await?.ok_or_else(|| {
                anyhow::anyhow!("the node answered no quotas: it runs a release older than 0.2")
            })?;
            let current = match &host {
                Some(h) => report
                    .hosts
                    .iter()
                    .find(|q| &q.host == h)
                    .map_or(report.cluster, |q| q.quotas),
                None => report.cluster,
            };
            let q = Quotas::new(
                pools.map_or(current.pools, |l| l.0),
                addresses.map_or(current.addresses, |l| l.0),
                max_prefix_v4.map_or(current.max_prefix_v4, |l| l.0),
                max_prefix_v6.map_or(current.max_prefix_v6, |l| l.0),
            );
            (host, Some(q))
        }
    };
    let w = client
        .apply(Op::SetQuotas {
            host: host.clone(),
            quotas,
        })
        .await?;
    let Outcome::QuotasSet { quotas: now } = w.outcome else {
        anyhow::bail!("unexpected answer to setting quotas: {:?}", w.outcome);
    };
    let whose = host
        .as_ref()
        .map_or("every host".to_string(), |h| format!("host {h}"));
    ctx.print(&serde_json::json!({"host": host, "quotas": now}), |_| {
        outln!("quotas of {whose}: {now}")
    })
}

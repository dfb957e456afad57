//! `raftipam host`: the Docker hosts the cluster knows (heartbeats and holdings), and
//! forgetting one that is gone for good.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use allocator_core::{HostInfo, Op, Outcome};
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
            let rows: Vec<HostRow> = hosts(&client)
                .await?
                .into_iter()
                .map(|info| HostRow {
                    last_seen_age_s: age(&info, now).map(|d| d.as_secs()),
                    report_age_s: info.report_ms.map(|t| now.saturating_sub(t) / 1000),
                    info,
                })
                .collect();
            ctx.print(&rows, |rows| {
                if rows.is_empty() {
                    outln!("no hosts");
                    return;
                }
                outln!(
                    "{:<24} {:<10} {:<20} {:>9} {:>12} {:>5} {:>6}  CHECKED",
                    "HOST",
                    "VERSION",
                    "LAST SEEN",
                    "ADDRESSES",
                    "RESERVATIONS",
                    "POOLS",
                    "LEAKED"
                );
                for r in rows {
                    outln!(
                        "{:<24} {:<10} {:<20} {:>9} {:>12} {:>5} {:>6}  {}",
                        super::term_safe(&r.info.name),
                        super::term_safe(r.info.version.as_deref().unwrap_or("-")),
                        fmt_age(r.last_seen_age_s.map(Duration::from_secs)),
                        r.info.allocations,
                        r.info.reservations,
                        r.info.pools,
                        r.info.leaked.map_or("-".to_string(), |n| n.to_string()),
                        fmt_age(r.report_age_s.map(Duration::from_secs)),
                    );
                }
            })
        }
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

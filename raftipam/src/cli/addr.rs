//! `raftipam addr`: allocate, release, list and look up addresses.

use std::net::IpAddr;

use allocator_core::{Holding, Op, Owner, PoolId};
use clap::Subcommand;
use raft_node::{Consistency, Query, QueryReply};

use super::{parse_pool, resolve_pool, Ctx};

#[derive(Subcommand, Debug)]
pub enum AddrCmd {
    /// Allocate an address (a given one with --ip, else the pool's next free one).
    Alloc {
        /// The pool (SPACE/SUBNET[/RANGE], or a bare SUBNET in the global space).
        #[arg(value_parser = parse_pool)]
        pool: PoolId,
        /// This address.
        #[arg(long)]
        ip: Option<IpAddr>,
        /// Who gets it, HOST/ENDPOINT. Repeating an allocation for the same owner returns the
        /// same address.
        #[arg(long, default_value = "cli", value_parser = parse_owner)]
        owner: Owner,
    },
    /// Release an address.
    Release {
        /// The pool.
        #[arg(value_parser = parse_pool)]
        pool: PoolId,
        /// The address.
        ip: IpAddr,
        /// The host releasing it (only its own addresses unless --force).
        #[arg(long, default_value = "cli")]
        host: String,
        /// Release it whoever holds it.
        #[arg(long)]
        force: bool,
    },
    /// List a pool's allocations.
    Ls {
        /// The pool.
        #[arg(value_parser = parse_pool)]
        pool: PoolId,
    },
    /// Show what holds an address, in every pool.
    WhoHas {
        /// The address.
        ip: IpAddr,
    },
    /// List the addresses a device on the LAN answered for: free ones in quarantine (no host
    /// hands them out until their probation ends) and duplicate alarms (a container holds
    /// the address and another device answers for it too).
    Conflicts,
    /// Forget the conflict of an address (the device is gone): it may be handed out again.
    /// To keep it out for good instead ("this is the printer"), reserve it in the pool.
    Clear {
        /// The pool.
        #[arg(value_parser = parse_pool)]
        pool: PoolId,
        /// The address.
        ip: IpAddr,
    },
}

fn parse_owner(s: &str) -> Result<Owner, String> {
    s.parse::<Owner>().map_err(|e| e.to_string())
}

pub async fn run(ctx: &Ctx, cmd: AddrCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        AddrCmd::Alloc { pool, ip, owner } => {
            let pool = resolve_pool(&client, pool).await?;
            let addr = client.allocate(&pool, ip, owner.clone()).await?;
            ctx.print(
                &serde_json::json!({"pool": pool.to_string(), "address": addr.to_string(), "owner": owner.to_string()}),
                |_| outln!("{addr}"),
            )
        }
        AddrCmd::Release {
            pool,
            ip,
            host,
            force,
        } => {
            let pool = resolve_pool(&client, pool).await?;
            let what = client.release(&pool, ip, &host, force).await?;
            ctx.print(&serde_json::json!({"pool": pool.to_string(), "address": ip, "released": format!("{what:?}")}), |_| {
                outln!("{ip}: released ({what:?})")
            })
        }
        AddrCmd::Ls { pool } => {
            let pool = resolve_pool(&client, pool).await?;
            let list = client.allocations(&pool).await?;
            ctx.print(&list, |list| {
                if list.is_empty() {
                    outln!("no allocations in {pool}");
                }
                for a in list {
                    outln!(
                        "{:<40} {:<30} #{}",
                        a.addr,
                        super::term_safe(&a.owner.to_string()),
                        a.seq
                    );
                }
            })
        }
        AddrCmd::Conflicts => {
            let c = match client
                .query(Query::Conflicts, Consistency::Linearizable)
                .await?
            {
                QueryReply::Conflicts(c) => c,
                other => anyhow::bail!("the cluster answered {other:?} to a list of conflicts"),
            };
            let now = raft_node::now_ms();
            ctx.print(&c, |c| {
                if c.quarantined.is_empty() && c.alarms.is_empty() {
                    outln!("no conflicts: no device raftipam does not know answers for an address of a pool");
                }
                for q in &c.quarantined {
                    let r = &q.record;
                    let state = if q.quarantined_at(now) {
                        format!("quarantined for {}", ago(q.until_ms.saturating_sub(now)))
                    } else {
                        "probation over".to_string()
                    };
                    outln!(
                        "{:<24} {}  {}  seen by {} ({}, {}x, first {} ago, last {} ago)  {}",
                        r.addr,
                        r.mac,
                        state,
                        super::term_safe(&r.host),
                        r.how,
                        r.count,
                        ago(now.saturating_sub(r.first_seen_ms)),
                        ago(now.saturating_sub(r.last_seen_ms)),
                        r.pool
                    );
                }
                for a in &c.alarms {
                    let r = &a.record;
                    outln!(
                        "{:<24} DUPLICATE: held by {} and answered by {} too (seen by {}, last {} ago)  {}",
                        r.addr,
                        super::term_safe(&a.holder.to_string()),
                        r.mac,
                        super::term_safe(&r.host),
                        ago(now.saturating_sub(r.last_seen_ms)),
                        r.pool
                    );
                }
            })
        }
        AddrCmd::Clear { pool, ip } => {
            let pool = resolve_pool(&client, pool).await?;
            client
                .apply(Op::ClearConflict {
                    pool: pool.clone(),
                    addr: ip,
                })
                .await?;
            ctx.print(
                &serde_json::json!({"pool": pool.to_string(), "address": ip, "cleared": true}),
                |_| outln!("{ip}: conflict cleared in {pool}"),
            )
        }
        AddrCmd::WhoHas { ip } => {
            let h = client.who_has(ip).await?;
            ctx.print(&h, |h| {
                if h.is_empty() {
                    outln!("{ip} is free everywhere");
                }
                for x in h {
                    match x {
                        Holding::Allocated { pool, allocation } => {
                            outln!(
                                "{ip} in {pool}: allocated to {} (#{})",
                                super::term_safe(&allocation.owner.to_string()),
                                allocation.seq
                            )
                        }
                        Holding::Reserved { pool, why } => {
                            outln!(
                                "{ip} in {pool}: reserved ({})",
                                super::term_safe(&why.to_string())
                            )
                        }
                        Holding::Cooling { pool, until_ms } => {
                            outln!("{ip} in {pool}: cooling down until t={until_ms} ms")
                        }
                        other => outln!("{ip}: {}", super::term_safe(&format!("{other:?}"))),
                    }
                }
            })
        }
    }
}

/// A duration in ms as `2h`, `15m`, `40s` (the largest unit).
fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

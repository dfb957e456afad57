//! `raftipam pool`: create, list, show and delete pools.

use std::net::IpAddr;
use std::time::Duration;

use allocator_core::{AddrRange, Op, PoolId, PoolInfo, PoolSpec};
use clap::Subcommand;
use ipnet::IpNet;

use super::{parse_pool, resolve_pool, Ctx};

#[derive(Subcommand, Debug)]
pub enum PoolCmd {
    /// Create a pool (or join it, if the same one exists).
    Create {
        /// The subnet, e.g. 10.1.0.0/16 or fd00:1::/64.
        cidr: IpNet,
        /// Hand out addresses without a preference from this sub-range only.
        #[arg(long)]
        range: Option<IpNet>,
        /// Reserve this gateway address.
        #[arg(long)]
        gateway: Option<IpAddr>,
        /// Never hand out these addresses (IP or IP-IP; e.g. a DHCP server's dynamic range);
        /// repeatable. `--exclude` is the same.
        #[arg(long, visible_alias = "exclude", value_parser = parse_range)]
        reserve: Vec<AddrRange>,
        /// Hand out addresses in serial order (next after the last one) by default.
        #[arg(long)]
        serial: bool,
        /// Hold released addresses back from reuse this long (e.g. 30s, 5m).
        #[arg(long, value_parser = humantime::parse_duration)]
        cooldown: Option<Duration>,
        /// Address space.
        #[arg(long, default_value = "global")]
        space: String,
        /// Who holds the pool (a host name).
        #[arg(long, default_value = "cli")]
        holder: String,
    },
    /// List every pool.
    Ls,
    /// Show one pool (SPACE/SUBNET[/RANGE], or a bare SUBNET in the global space).
    Show {
        /// The pool.
        #[arg(value_parser = parse_pool)]
        pool: PoolId,
    },
    /// Keep an address out of every hand-out, as a device's own (a printer, a VM, a router:
    /// "this is the printer"); drops a conflict recorded for it. `raftipam addr release POOL
    /// IP --host HOLDER` gives it back.
    Reserve {
        /// The pool.
        #[arg(value_parser = parse_pool)]
        pool: PoolId,
        /// The address.
        ip: std::net::IpAddr,
        /// Who the reservation is for (a label: the device's name).
        #[arg(long, default_value = "operator")]
        holder: String,
    },
    /// How long a free address of the pool stays in quarantine after a device on the LAN was
    /// last seen answering for it (admin; default 24h, at most 30 days; 0s: alarms only, no
    /// quarantine).
    Probation {
        /// The pool.
        #[arg(value_parser = parse_pool)]
        pool: PoolId,
        /// The probation (e.g. 24h, 30m, 0s).
        #[arg(value_parser = humantime::parse_duration)]
        probation: Duration,
    },
    /// Delete a pool whoever holds it.
    Delete {
        /// The pool.
        #[arg(value_parser = parse_pool)]
        pool: PoolId,
        /// Also drop its allocations.
        #[arg(long)]
        force: bool,
    },
}

/// What `pool show` prints: the pool, and how many addresses of its subnet each host holds.
#[derive(serde::Serialize)]
struct PoolShow {
    #[serde(flatten)]
    info: PoolInfo,
    allocated_by_host: std::collections::BTreeMap<String, u64>,
}

fn parse_range(s: &str) -> Result<AddrRange, String> {
    s.parse::<AddrRange>().map_err(|e| e.to_string())
}

fn show(p: &PoolInfo) {
    outln!("pool {}", p.id);
    outln!("  usage:   {}", p.usage);
    outln!("  serial:  {}", p.serial);
    if p.cooldown_ms > 0 {
        outln!(
            "  cooldown: {}",
            humantime::format_duration(Duration::from_millis(p.cooldown_ms))
        );
    }
    if !p.holders.is_empty() {
        let h: Vec<String> = p
            .holders
            .iter()
            .map(|(k, v)| format!("{}({v})", super::term_safe(k)))
            .collect();
        outln!("  holders: {}", h.join(", "));
    }
    for r in &p.reserve {
        outln!("  reserve: {r}");
    }
    for (a, who) in &p.reservations {
        let w: Vec<String> = who.keys().map(|h| super::term_safe(h)).collect();
        outln!("  reserved {a} by {}", w.join(", "));
    }
}

pub async fn run(ctx: &Ctx, cmd: PoolCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        PoolCmd::Create {
            cidr,
            range,
            gateway,
            reserve,
            serial,
            cooldown,
            space,
            holder,
        } => {
            let spec = {
                let mut spec = PoolSpec::default();
                spec.space = space;
                spec.subnet = Some(cidr);
                spec.range = range;
                spec.reserve = reserve;
                spec.serial = serial;
                spec.cooldown_ms = cooldown.map(|d| d.as_millis() as u64).unwrap_or(0);
                spec
            };
            let id = client.create_pool(spec, &holder).await?;
            if let Some(gw) = gateway {
                client
                    .apply(Op::Reserve {
                        pool: id.clone(),
                        addr: gw,
                        holder: holder.clone(),
                    })
                    .await?;
            }
            let info = client.pool(&id).await?;
            ctx.print(&info, show)
        }
        PoolCmd::Ls => {
            let pools = client.pools().await?;
            ctx.print(&pools, |pools| {
                if pools.is_empty() {
                    outln!("no pools");
                }
                for p in pools {
                    outln!(
                        "{:<40} {:>8} allocated {:>12} free",
                        p.id.to_string(),
                        p.usage.allocated,
                        allocator_core::human_count(p.usage.free)
                    );
                }
            })
        }
        PoolCmd::Show { pool } => {
            let pool = resolve_pool(&client, pool).await?;
            let info = client.pool(&pool).await?;
            let mut by_host = std::collections::BTreeMap::<String, u64>::new();
            for a in client.allocations(&pool).await? {
                *by_host.entry(a.owner.host).or_default() += 1;
            }
            let out = PoolShow {
                info,
                allocated_by_host: by_host,
            };
            ctx.print(&out, |o| {
                show(&o.info);
                let h: Vec<String> = o
                    .allocated_by_host
                    .iter()
                    .map(|(k, v)| format!("{}: {v}", super::term_safe(k)))
                    .collect();
                if !h.is_empty() {
                    outln!("  allocated by host (whole subnet): {}", h.join(", "));
                }
            })
        }
        PoolCmd::Reserve { pool, ip, holder } => {
            let pool = resolve_pool(&client, pool).await?;
            allocator_core::check_host_name(&holder)
                .map_err(|e| super::UsageError(format!("--holder {holder:?}: {e}")))?;
            client
                .apply(allocator_core::Op::Reserve {
                    pool: pool.clone(),
                    addr: ip,
                    holder: holder.clone(),
                })
                .await?;
            ctx.print(
                &serde_json::json!({"pool": pool.to_string(), "address": ip, "holder": holder}),
                |_| outln!("{ip} reserved in {pool} for {holder}"),
            )
        }
        PoolCmd::Probation { pool, probation } => {
            let pool = resolve_pool(&client, pool).await?;
            let ms = u64::try_from(probation.as_millis()).unwrap_or(u64::MAX);
            let w = client
                .apply(allocator_core::Op::SetProbation {
                    pool: pool.clone(),
                    probation_ms: ms,
                })
                .await?;
            let allocator_core::Outcome::ProbationSet { probation_ms } = w.outcome else {
                anyhow::bail!("unexpected answer to setting a probation: {:?}", w.outcome);
            };
            let now = Duration::from_millis(probation_ms);
            ctx.print(
                &serde_json::json!({"pool": pool.to_string(), "probation_ms": probation_ms}),
                |_| outln!("probation of {pool}: {}", humantime::format_duration(now)),
            )
        }
        PoolCmd::Delete { pool, force } => {
            let pool = resolve_pool(&client, pool).await?;
            let removed = client.delete_pool(&pool, force).await?;
            ctx.print(
                &serde_json::json!({"pool": pool.to_string(), "removed": removed}),
                |_| {
                    outln!("pool {pool} deleted");
                },
            )
        }
    }
}

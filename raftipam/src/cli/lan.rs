//! What is on the LAN besides raftipam's containers: `raftipam scan POOL` (probe a pool's
//! addresses from this machine and print who answers) and `raftipam import FORMAT FILE`
//! (reserve the addresses other inventories — `/etc/ethers`, dnsmasq and ISC dhcpd leases,
//! `arp-scan` output — say are in use).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocator_core::{AllocError, Detection, Mac, Op, PoolId, PoolInfo};
use anyhow::Context;
use clap::{Args, ValueEnum};
use ipnet::IpNet;
use plugin_shim::import::{self, Entry, Imported};
use plugin_shim::probe::{interface_for, probe};
use serde::Serialize;

use super::{parse_pool, resolve_pool, term_safe, Ctx, UsageError};

/// Probe a pool's addresses on the LAN from this machine and print which answer.
#[derive(Args, Debug)]
pub struct ScanArgs {
    /// The pool (its range, or its subnet without one).
    #[arg(value_parser = parse_pool)]
    pool: PoolId,
    /// The interface to probe on (default: the one this machine has the subnet on).
    #[arg(long)]
    interface: Option<String>,
    /// How long each probe waits for an answer.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Probes a second, at most (the LAN's switches see every one as a broadcast).
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Probe at most this many addresses (from the start of the range).
    #[arg(long, default_value_t = 4096)]
    max: u64,
    /// Report each free address that answers as a conflict (quarantined cluster-wide), as
    /// this host.
    #[arg(long, value_name = "HOST")]
    report_as: Option<String>,
}

#[derive(Serialize)]
struct Answer {
    addr: IpAddr,
    mac: Mac,
    /// What the cluster says of the address.
    cluster: String,
    reported: bool,
}

#[derive(Serialize)]
struct ScanOut {
    pool: String,
    interface: String,
    probed: u64,
    seconds: f64,
    answers: Vec<Answer>,
}

/// The addresses of `net` a container could get (no network or IPv4 broadcast address).
fn usable(net: &IpNet, subnet: &IpNet, max: u64) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for a in net.hosts() {
        if out.len() as u64 >= max {
            break;
        }
        if a == subnet.network() || (subnet.addr().is_ipv4() && a == subnet.broadcast()) {
            continue;
        }
        out.push(a);
    }
    out
}

/// What the cluster says of `addr` in `info` (allocated, reserved, or free).
fn cluster_view(
    info: &PoolInfo,
    allocated: &BTreeMap<IpAddr, String>,
    addr: IpAddr,
) -> (String, bool) {
    if let Some(owner) = allocated.get(&addr) {
        return (format!("allocated to {owner}"), false);
    }
    if let Some((_, holders)) = info.reservations.iter().find(|(a, _)| *a == addr) {
        let who: Vec<&str> = holders.keys().map(String::as_str).collect();
        return (format!("reserved by {}", who.join(", ")), false);
    }
    if info.reserve.iter().any(|r| {
        let v = |a: IpAddr| match a {
            IpAddr::V4(x) => u32::from(x) as u128,
            IpAddr::V6(x) => u128::from(x),
        };
        v(r.first) <= v(addr) && v(addr) <= v(r.last)
    }) {
        return ("in a reserve range".into(), false);
    }
    ("free".into(), true)
}

pub async fn scan(ctx: &Ctx, a: ScanArgs) -> anyhow::Result<()> {
    if a.rate == 0 {
        return Err(UsageError("--rate must be at least 1 probe a second".into()).into());
    }
    let client = ctx.client()?;
    let pool = resolve_pool(&client, a.pool).await?;
    let info = client.pool(&pool).await?;
    let allocated: BTreeMap<IpAddr, String> = client
        .allocations(&pool)
        .await?
        .into_iter()
        .map(|x| (x.addr, x.owner.to_string()))
        .collect();
    let subnet = pool.subnet;
    let interface = match a.interface {
        Some(i) => i,
        None => {
            let s = subnet;
            tokio::task::spawn_blocking(move || interface_for(&s))
                .await
                .context("finding the interface")??
        }
    };
    let net = pool.range.unwrap_or(subnet);
    let addrs = usable(&net, &subnet, a.max);
    let gap = Duration::from_secs(1) / a.rate;
    let started = Instant::now();
    let mut tasks = Vec::new();
    let iface = Arc::new(interface.clone());
    for (i, addr) in addrs.iter().copied().enumerate() {
        // Paced: probe i leaves i/rate seconds after the start, whatever the answers take.
        tokio::time::sleep_until((started + gap * i as u32).into()).await;
        let iface = Arc::clone(&iface);
        let timeout = a.timeout;
        tasks.push(tokio::task::spawn_blocking(move || {
            (addr, probe(&iface, addr, timeout))
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        let (addr, r) = t.await.context("a probe task failed")?;
        let Some(mac) = r.with_context(|| format!("probing {addr} on {interface}"))? else {
            continue;
        };
        let (view, free) = cluster_view(&info, &allocated, addr);
        let mut reported = false;
        if let (Some(host), true) = (&a.report_as, free) {
            client
                .apply(Op::ReportConflict {
                    pool: pool.clone(),
                    addr,
                    mac,
                    host: host.clone(),
                    how: Detection::Sweep,
                })
                .await
                .with_context(|| format!("reporting {addr} ({mac})"))?;
            reported = true;
        }
        answers.push(Answer {
            addr,
            mac,
            cluster: view,
            reported,
        });
    }
    let out = ScanOut {
        pool: pool.to_string(),
        interface,
        probed: addrs.len() as u64,
        seconds: started.elapsed().as_secs_f64(),
        answers,
    };
    ctx.print(&out, |o| {
        outln!(
            "{} addresses of {} probed on {} in {:.1} s; {} answered:",
            o.probed,
            o.pool,
            o.interface,
            o.seconds,
            o.answers.len()
        );
        for x in &o.answers {
            outln!(
                "  {:<24} {}  {}{}",
                x.addr,
                x.mac,
                term_safe(&x.cluster),
                if x.reported {
                    "  (reported: quarantined)"
                } else {
                    ""
                }
            );
        }
    })
}

/// The inventory formats `raftipam import` reads.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// `/etc/ethers`: a MAC and an address (or a host name, skipped) a line.
    Ethers,
    /// A dnsmasq lease file (`/var/lib/misc/dnsmasq.leases`).
    Dnsmasq,
    /// ISC dhcpd's lease file (`/var/lib/dhcp/dhcpd.leases`).
    Dhcpd,
    /// `arp-scan --localnet` output.
    ArpScan,
}

/// Reserve, in the pools they fall in, the addresses another inventory says are in use.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The file's format.
    #[arg(value_enum)]
    format: Format,
    /// The file (`-` for stdin).
    file: PathBuf,
    /// Only this pool (default: every pool an address falls in).
    #[arg(long, value_parser = parse_pool)]
    pool: Option<PoolId>,
    /// Say what would be reserved, change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Serialize)]
struct ImportRow {
    addr: Option<IpAddr>,
    mac: Mac,
    name: String,
    pool: Option<String>,
    holder: String,
    /// reserved, would reserve, already reserved, outside every pool, or refused: why.
    outcome: String,
}

/// A reservation holder for an imported entry: `SOURCE-NAME` (or `SOURCE-MAC`), in the
/// charset of host names.
fn holder_of(e: &Entry) -> String {
    let name: String = e
        .name
        .as_deref()
        .unwrap_or("")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let tail = if name.trim_matches('-').is_empty() {
        e.mac.to_string().replace(':', "")
    } else {
        name
    };
    let mut h = format!("{}-{}", e.source.label(), tail);
    h.truncate(allocator_core::MAX_HOST_NAME_LEN);
    h
}

pub async fn import(ctx: &Ctx, a: ImportArgs) -> anyhow::Result<()> {
    let text = if a.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("reading stdin")?;
        s
    } else {
        std::fs::read_to_string(&a.file)
            .with_context(|| format!("cannot read {}", a.file.display()))?
    };
    let Imported { entries, errors } = match a.format {
        Format::Ethers => import::parse_ethers(&text),
        Format::Dnsmasq => import::parse_dnsmasq(&text),
        Format::Dhcpd => import::parse_dhcpd_leases(&text),
        Format::ArpScan => import::parse_arp_scan(&text),
    };
    for e in &errors {
        eprintln!("{}: {e}", a.file.display());
    }
    let client = ctx.client()?;
    let pools: Vec<PoolId> = match a.pool {
        Some(p) => vec![resolve_pool(&client, p).await?],
        None => client.pools().await?.into_iter().map(|p| p.id).collect(),
    };
    let mut rows = Vec::new();
    let mut refused = 0;
    for e in entries {
        let holder = holder_of(&e);
        let Some(addr) = e.ip else {
            rows.push(ImportRow {
                addr: None,
                mac: e.mac,
                name: e.name.clone().unwrap_or_default(),
                pool: None,
                holder,
                outcome: "a host name, not an address: skipped (resolve it and list the address)"
                    .into(),
            });
            continue;
        };
        let pool = pools
            .iter()
            .filter(|p| p.subnet.contains(&addr))
            .max_by_key(|p| p.range.is_some_and(|r| r.contains(&addr)))
            .cloned();
        let outcome = match &pool {
            None => "outside every pool".to_string(),
            Some(_) if a.dry_run => "would reserve".to_string(),
            Some(p) => match client
                .apply(Op::Reserve {
                    pool: p.clone(),
                    addr,
                    holder: holder.clone(),
                })
                .await
            {
                Ok(_) => "reserved".to_string(),
                Err(err) => match err.alloc() {
                    Some(held @ AllocError::HeldBy { .. }) => {
                        refused += 1;
                        format!("refused: {held} — a container has it while {} says {} uses it: a duplicate? (`raftipam addr who-has {addr}`)", e.source.label(), e.mac)
                    }
                    Some(other) => {
                        refused += 1;
                        format!("refused: {other}")
                    }
                    None => return Err(err).with_context(|| format!("reserving {addr}")),
                },
            },
        };
        rows.push(ImportRow {
            addr: Some(addr),
            mac: e.mac,
            name: e.name.clone().unwrap_or_default(),
            pool: pool.map(|p| p.to_string()),
            holder,
            outcome,
        });
    }
    ctx.print(&rows, |rows| {
        for r in rows {
            outln!(
                "{:<24} {}  {:<24} {}",
                r.addr.map_or("-".to_string(), |a| a.to_string()),
                r.mac,
                term_safe(&r.holder),
                term_safe(&r.outcome)
            );
        }
        outln!(
            "{} entries, {} unreadable lines{}",
            rows.len(),
            errors.len(),
            if refused > 0 {
                format!(", {refused} refused")
            } else {
                String::new()
            }
        );
    })?;
    anyhow::ensure!(
        refused == 0,
        "{refused} entries could not be reserved (see above)"
    );
    Ok(())
}

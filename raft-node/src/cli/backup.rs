//! `raftipam backup FILE` and `raftipam restore FILE`.
//!
//! A backup is the allocator's snapshot (`State::to_snapshot`: versioned, checksummed
//! postcard), read from the cluster through the client API with a linearizable read. A
//! restore replays a backup into a running, empty cluster through the client API: every pool
//! with its holders, every shared reservation, every allocation at its address with its owner.
//! Sequence numbers are new, cooling addresses are free again and serial cursors restart;
//! hosts' heartbeats are not replayed (their shims send new ones).

use std::path::PathBuf;

use allocator_core::{Op, Order, PoolSpec, State};
use anyhow::Context;
use clap::Args;
use raft_node::api::{Consistency, Query, QueryReply};
use serde::Serialize;

use super::Ctx;

/// Holder that keeps a pool nobody held while its allocations are replayed.
const RESTORE_HOLDER: &str = "raftipam-restore";

/// Write the allocator state to a file.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Where to write it (written whole to a temporary file first, then renamed).
    file: PathBuf,
}

/// Replay a backup into a running, empty cluster.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A file written by `raftipam backup`.
    file: PathBuf,
}

#[derive(Serialize)]
struct Summary {
    file: String,
    bytes: usize,
    pools: usize,
    allocations: usize,
    hosts: usize,
}

fn summary(file: &std::path::Path, bytes: usize, st: &State) -> Summary {
    Summary {
        file: file.display().to_string(),
        bytes,
        pools: st.pools().len(),
        allocations: st.all_allocations().len(),
        hosts: st.hosts().len(),
    }
}

pub async fn backup(ctx: &Ctx, a: BackupArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let bytes = match client
        .query(Query::Snapshot, Consistency::Linearizable)
        .await?
    {
        QueryReply::Snapshot(b) => b,
        r => anyhow::bail!("unexpected answer to a snapshot query: {r:?}"),
    };
    let st = State::from_snapshot(&bytes)
        .map_err(|e| anyhow::anyhow!("the cluster sent a snapshot that does not load: {e}"))?;
    let tmp = a.file.with_extension("tmp-raftipam");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &a.file)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), a.file.display()))?;
    let s = summary(&a.file, bytes.len(), &st);
    ctx.print(&s, |s| {
        println!(
            "wrote {} ({} bytes): {} pools, {} allocations, {} hosts",
            s.file, s.bytes, s.pools, s.allocations, s.hosts
        )
    })
}

pub async fn restore(ctx: &Ctx, a: RestoreArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let st = State::from_snapshot(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a raftipam backup or is damaged: {e}",
            a.file.display()
        )
    })?;
    let client = ctx.client()?;
    let existing = client.pools().await?;
    anyhow::ensure!(
        existing.is_empty(),
        "the cluster at {} already has {} pool(s) (first: {}); restore only into an empty cluster",
        client.endpoints().join(","),
        existing.len(),
        existing[0].id
    );
    let pools = st.pools();
    let mut placeholder = Vec::new();
    for p in &pools {
        let spec = PoolSpec {
            space: p.id.space.clone(),
            subnet: Some(p.id.subnet),
            range: p.id.range,
            v6: p.id.subnet.addr().is_ipv6(),
            prefix_len: None,
            reserve: p.reserve.clone(),
            serial: p.serial,
            cooldown_ms: p.cooldown_ms,
        };
        let mut holders: Vec<(String, u32)> =
            p.holders.iter().map(|(h, c)| (h.clone(), *c)).collect();
        if holders.is_empty() {
            holders.push((RESTORE_HOLDER.to_string(), 1));
            placeholder.push(p.id.clone());
        }
        for (holder, count) in holders {
            for _ in 0..count {
                client
                    .apply(Op::RequestPool {
                        spec: spec.clone(),
                        holder: holder.clone(),
                    })
                    .await
                    .with_context(|| format!("restoring pool {} for {holder}", p.id))?;
            }
        }
    }
    // Shared reservations: once per subnet (pools over one subnet share them); the pools'
    // own reserve ranges (`@pool` holders) came back with the pools.
    let mut done = std::collections::BTreeSet::new();
    for p in &pools {
        if !done.insert((p.id.space.clone(), p.id.subnet)) {
            continue;
        }
        for (addr, holders) in &p.reservations {
            for (holder, count) in holders {
                if holder.starts_with('@') {
                    continue;
                }
                for _ in 0..*count {
                    client
                        .apply(Op::Reserve {
                            pool: p.id.clone(),
                            addr: *addr,
                            holder: holder.clone(),
                        })
                        .await
                        .with_context(|| {
                            format!("restoring the reservation of {addr} by {holder}")
                        })?;
                }
            }
        }
    }
    let allocations = st.all_allocations();
    for (pool, al) in &allocations {
        client
            .apply(Op::Allocate {
                pool: pool.clone(),
                addr: Some(al.addr),
                owner: al.owner.clone(),
                order: Order::PoolDefault,
            })
            .await
            .with_context(|| {
                format!(
                    "restoring {} for {}/{}",
                    al.addr, al.owner.host, al.owner.endpoint
                )
            })?;
    }
    for id in placeholder {
        client
            .apply(Op::ReleasePool {
                pool: id.clone(),
                holder: RESTORE_HOLDER.to_string(),
            })
            .await
            .with_context(|| format!("dropping the restore's hold on {id}"))?;
    }
    let s = summary(&a.file, bytes.len(), &st);
    ctx.print(&s, |s| {
        println!(
            "restored {}: {} pools, {} allocations (sequence numbers are new; cooling addresses are free)",
            s.file, s.pools, s.allocations
        )
    })
}

//! `raftipam backup FILE` and `raftipam restore FILE`.
//!
//! A backup is the allocator's snapshot (`State::to_snapshot`: versioned, checksummed
//! postcard), read from the cluster through the client API with a linearizable read. A
//! restore proposes the backup in pieces of at most 4 MiB (`Op::RestoreChunk`: a client
//! request stays small, whoever sends it) to a running cluster whose state is empty; with the
//! last piece every replica replaces its empty state with the backup's, exactly — allocations
//! keep their sequence numbers, cooling addresses keep cooling, serial cursors, heartbeats and
//! reports come back. The state machine refuses it when the state holds anything.

use std::path::PathBuf;

use allocator_core::{Op, Outcome, State, MAX_RESTORE_CHUNK};
use anyhow::Context;
use clap::Args;
use raft_node::api::{Consistency, Query, QueryReply};
use serde::Serialize;

use super::Ctx;

/// Write the allocator state to a file.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Where to write it (written whole to a temporary file first, then renamed).
    file: PathBuf,
}

/// Load a backup into a running cluster whose state is empty (a new cluster).
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
    // Checked here first, for a clear message before anything is sent.
    let st = State::from_snapshot(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a raftipam backup or is damaged: {e}",
            a.file.display()
        )
    })?;
    let s = summary(&a.file, bytes.len(), &st);
    drop(st);
    let client = ctx.client()?;
    // Tells this restore's pieces from another's (a second `restore` started meanwhile).
    let restore = raft_node::now_ms() ^ (u64::from(std::process::id()) << 40);
    let total = bytes.len() as u64;
    let mut done = false;
    for (i, piece) in bytes.chunks(MAX_RESTORE_CHUNK).enumerate() {
        let offset = (i * MAX_RESTORE_CHUNK) as u64;
        let w = client
            .apply(Op::RestoreChunk {
                restore,
                offset,
                total,
                bytes: piece.to_vec(),
            })
            .await
            .with_context(|| {
                format!(
                    "restoring {} into the cluster at {} (bytes {offset}..{} of {total})",
                    a.file.display(),
                    client.endpoints().join(","),
                    offset + piece.len() as u64
                )
            })?;
        match w.outcome {
            Outcome::RestoreStaged { .. } => {}
            Outcome::Restored { .. } => done = true,
            o => anyhow::bail!("unexpected answer to a restore: {o:?}"),
        }
    }
    anyhow::ensure!(
        done,
        "the cluster took every piece of {} but did not restore it",
        a.file.display()
    );
    ctx.print(&s, |s| {
        println!(
            "restored {}: {} pools, {} allocations, {} hosts — sequence numbers, cooling addresses, serial cursors, heartbeats and reports as they were",
            s.file, s.pools, s.allocations, s.hosts
        )
    })
}

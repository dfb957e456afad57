//! `raftipam-chaos`: the seeded chaos harness (the library of this crate) as a command. Runs
//! seeds one after another against real `raftipam node` processes, prints one line per seed
//! and a summary, and on a failure the seed, the command that replays it, what was violated
//! and where the files are.
//!
//! It drives the `raftipam` binary found beside itself (both are built into the same target
//! directory) or the one `--raftipam` names. `--crash-points` needs a binary built with crash
//! points, which only the workspace's test builds are; a release binary is refused before any
//! node starts.

/// `println!` that ends quietly on a closed pipe (`raftipam-chaos ... | head`).
macro_rules! outln {
    ($($arg:tt)*) => {
        write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

use std::path::PathBuf;
use std::time::Duration;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use raftipam_chaos::cluster::NodeSettings;
use raftipam_chaos::run::{run, tidy, RunConfig, RunReport};
use raftipam_chaos::schedule::{Fault, FaultKind};

fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    let a = ChaosArgs::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run_chaos(a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Fault kinds on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    Kill,
    Pause,
    Partition,
    OneWay,
    Bridge,
    Rejoin,
    Grow,
    Delay,
    Loss,
    Reorder,
    Slow,
    Flood,
    RogueNode,
}

impl From<Kind> for FaultKind {
    fn from(k: Kind) -> FaultKind {
        match k {
            Kind::Kill => FaultKind::Kill,
            Kind::Pause => FaultKind::Pause,
            Kind::Partition => FaultKind::Partition,
            Kind::OneWay => FaultKind::PartitionOneWay,
            Kind::Bridge => FaultKind::Bridge,
            Kind::Rejoin => FaultKind::Rejoin,
            Kind::Grow => FaultKind::Grow,
            Kind::Delay => FaultKind::Delay,
            Kind::Loss => FaultKind::Loss,
            Kind::Reorder => FaultKind::Reorder,
            Kind::Slow => FaultKind::Slow,
            Kind::Flood => FaultKind::Flood,
            Kind::RogueNode => FaultKind::RogueNode,
        }
    }
}

/// Run a real raftipam cluster under seeded faults and check every operation (needs root and
/// iproute2: it makes network namespaces and a bridge, and removes them after).
#[derive(Parser, Debug)]
#[command(name = "raftipam-chaos", version)]
pub struct ChaosArgs {
    /// Print one JSON summary on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// The raftipam binary the nodes run [default: `raftipam` beside this program].
    #[arg(long, value_name = "PATH")]
    raftipam: Option<PathBuf>,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=5))]
    nodes: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many seeds to run (seed, seed+1, ...).
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Length of each run's workload.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent client processes.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Fault kinds to draw from (comma separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "kill,pause,partition,one-way,bridge"
    )]
    faults: Vec<Kind>,
    /// Also kill every node at once, once per run.
    #[arg(long)]
    kill_all: bool,
    /// Nodes snapshot every this many entries (small values exercise snapshot install and
    /// log purge).
    #[arg(long, default_value_t = 10_000)]
    snapshot_every: u64,
    /// Replay this schedule (schedule.json of an earlier run) instead of drawing one.
    #[arg(long)]
    schedule: Option<PathBuf>,
    /// Where each run's files go (a folder per seed).
    #[arg(long, default_value = "/tmp/raftipam-chaos")]
    out: PathBuf,
    /// Keep the data directories of runs that passed too.
    #[arg(long)]
    keep: bool,
    /// Crash the nodes at their crash points now and then (each point at most once per process
    /// start): before and after a vote is saved, before and after a log sync, during apply, during
    /// snapshot build, install and log purge. Crashed nodes are restarted at once.
    #[arg(long, conflicts_with = "failpoints")]
    crash_points: bool,
    /// `FAILPOINTS` for every node (fail-rs syntax: `name=[pct%][cnt*]return;...`), instead of
    /// --crash-points' choice.
    #[arg(long, value_name = "SPEC")]
    failpoints: Option<String>,
}

/// What --crash-points sets: rare enough that the cluster mostly works, often enough that
/// every point fires in a 90 s run (a log sync happens hundreds of times a second).
pub const CRASH_POINTS: &str = "vote::before_save=3%1*return;vote::after_save=3%1*return;\
log::before_sync=0.01%1*return;log::after_sync=0.01%1*return;sm::apply=0.01%1*return;\
snapshot::build=1%1*return;snapshot::install=10%1*return;log::purge=1%1*return;\
log::after_purge=1%1*return";

fn rerun(a: &ChaosArgs, seed: u64) -> String {
    let faults: Vec<String> = a
        .faults
        .iter()
        .filter_map(|k| k.to_possible_value().map(|v| v.get_name().to_string()))
        .collect();
    format!(
        "sudo raftipam-chaos --nodes {} --seed {seed} --duration {} --clients {} --faults {}{} --snapshot-every {}",
        a.nodes,
        humantime::format_duration(a.duration),
        a.clients,
        faults.join(","),
        if a.kill_all { " --kill-all" } else { "" },
        a.snapshot_every
    ) + &match (&a.failpoints, a.crash_points) {
        (Some(f), _) => format!(" --failpoints '{f}'"),
        (None, true) => " --crash-points".to_string(),
        _ => String::new(),
    }
}

async fn run_chaos(a: ChaosArgs) -> anyhow::Result<()> {
    let uid = std::process::Command::new("id").arg("-u").output();
    anyhow::ensure!(
        uid.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0"),
        "raftipam-chaos needs root: it makes network namespaces, a bridge and routes (run it with sudo)"
    );
    let schedule: Option<Vec<Fault>> = match &a.schedule {
        Some(f) => Some(
            serde_json::from_slice(
                &std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?,
            )
            .with_context(|| format!("{} is not a chaos schedule (schedule.json)", f.display()))?,
        ),
        None => None,
    };
    let bin = match &a.raftipam {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .context("cannot find this program's path (give --raftipam PATH)")?
            .with_file_name("raftipam"),
    };
    anyhow::ensure!(
        bin.is_file(),
        "no raftipam binary at {}: build it (`cargo build --release -p raftipam`) or give --raftipam PATH",
        bin.display()
    );
    if a.crash_points || a.failpoints.is_some() {
        let image =
            std::fs::read(&bin).with_context(|| format!("cannot read {}", bin.display()))?;
        anyhow::ensure!(
            raftipam_chaos::cluster::has_crash_points(&image),
            "the raftipam binary at {} has no crash points compiled in (a release build): build one with them, `cargo build --release -p raftipam --features failpoints` (the workspace's test builds have them), or leave out --crash-points/--failpoints",
            bin.display()
        );
    }
    let mut reports: Vec<RunReport> = Vec::new();
    let mut broken: Vec<u64> = Vec::new();
    for seed in a.seed..a.seed + a.seeds {
        let dir = a.out.join(format!("seed-{seed}-n{}", a.nodes));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = RunConfig {
            seed,
            nodes: a.nodes as usize,
            duration: a.duration,
            clients: a.clients,
            dir: dir.clone(),
            node: NodeSettings {
                bin: bin.clone(),
                snapshot_every: a.snapshot_every,
                keep_logs: (a.snapshot_every / 2).max(10),
                write_timeout: Duration::from_secs(3),
                failpoints: a
                    .failpoints
                    .clone()
                    .or_else(|| a.crash_points.then(|| CRASH_POINTS.to_string())),
                tls: None,
            },
            kinds: a.faults.iter().map(|k| FaultKind::from(*k)).collect(),
            kill_all: a.kill_all,
            schedule: schedule.clone(),
            min_ok_before_fault: 50,
        };
        let r = match run(cfg).await {
            Ok(r) => r,
            // A run that could not be set up (or torn down) found nothing: with one seed that
            // is the answer; with many, the others still run and the command fails at the end.
            Err(e) => {
                let e = e.context(format!(
                    "chaos run of seed {seed} (files in {})",
                    dir.display()
                ));
                if a.seeds == 1 {
                    return Err(e);
                }
                outln!("seed {seed:>5}: ERROR — {e:#}");
                broken.push(seed);
                continue;
            }
        };
        let mut faults: Vec<String> = r.faults.iter().map(|(k, n)| format!("{k}×{n}")).collect();
        if r.held_chunks > 0 {
            faults.push(format!("({} chunks held by the proxies)", r.held_chunks));
        }
        faults.push(format!(
            "({} conflict reports, {} quarantines)",
            r.conflict_reports, r.quarantines
        ));
        if r.rogue.sent > 0 {
            faults.push(format!(
                "(rogue node: {} sent, {} refused, {} unanswered, {} served)",
                r.rogue.sent,
                r.rogue.refused,
                r.rogue.unanswered,
                r.rogue.accepted.len()
            ));
        }
        outln!(
            "seed {seed:>5}: {} — {} ok, {} refused, {} unknown; faults {}; converged in {}",
            if r.passed() { "PASS" } else { "FAIL" },
            r.ok,
            r.fail,
            r.info,
            faults.join(" "),
            r.converged_s.map_or("-".into(), |s| format!("{s:.1} s"))
        );
        if r.passed() {
            if !a.keep {
                tidy(&dir, a.nodes as usize);
            }
        } else {
            outln!(
                "  files (history.jsonl, schedule.json, node logs and data): {}",
                dir.display()
            );
            outln!(
                "  replay: {} --schedule {}/schedule.json",
                rerun(&a, seed),
                dir.display()
            );
            for x in &r.anomalies {
                outln!("  - {x}");
            }
        }
        reports.push(r);
    }
    let failed: Vec<u64> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.seed)
        .collect();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for r in &reports {
        for (k, n) in &r.faults {
            *kinds.entry(k.clone()).or_default() += n;
        }
    }
    let summary = serde_json::json!({
        "nodes": a.nodes,
        "schedules": reports.len(),
        "operations_ok": reports.iter().map(|r| r.ok).sum::<usize>(),
        "operations_refused": reports.iter().map(|r| r.fail).sum::<usize>(),
        "operations_unknown": reports.iter().map(|r| r.info).sum::<usize>(),
        "faults": kinds,
        "held_chunks": reports.iter().map(|r| r.held_chunks).sum::<u64>(),
        "conflict_reports": reports.iter().map(|r| r.conflict_reports).sum::<usize>(),
        "quarantines": reports.iter().map(|r| r.quarantines).sum::<usize>(),
        "rogue_sent": reports.iter().map(|r| r.rogue.sent).sum::<u64>(),
        "rogue_refused": reports.iter().map(|r| r.rogue.refused).sum::<u64>(),
        "rogue_unanswered": reports.iter().map(|r| r.rogue.unanswered).sum::<u64>(),
        "rogue_accepted": reports.iter().map(|r| r.rogue.accepted.len()).sum::<usize>(),
        "failed_seeds": failed,
        "broken_seeds": broken,
        "runs": reports,
    });
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&summary).context("encoding JSON")?
        );
    } else {
        outln!(
            "{} schedules on {} nodes: {} operations ok, {} refused, {} unknown; faults {:?}; failed seeds: {:?}; seeds that could not run: {:?}",
            reports.len(),
            a.nodes,
            summary["operations_ok"],
            summary["operations_refused"],
            summary["operations_unknown"],
            kinds,
            failed,
            broken
        );
    }
    anyhow::ensure!(
        failed.is_empty(),
        "{} of {} runs found anomalies",
        failed.len(),
        reports.len()
    );
    anyhow::ensure!(
        broken.is_empty(),
        "{} of {} seeds could not run (see their ERROR lines): {broken:?}",
        broken.len(),
        a.seeds
    );
    Ok(())
}

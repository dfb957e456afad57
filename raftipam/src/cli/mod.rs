//! Command-line parsing and dispatch. Each command group lives in its own module; this one
//! holds the global options, the client they build, and how results are printed.

/// `println!` for a command's output: a closed pipe (`raftipam pool ls | head -3`) ends the
/// command quietly, as coreutils and ripgrep do, instead of panicking.
macro_rules! outln {
    () => {
        $crate::cli::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod addr;
mod backup;
mod bench;
mod cert;
mod check;
mod cluster;
mod cni;
pub(crate) mod config;
mod host;
mod join;
mod lan;
pub(crate) mod logs;
mod node;
mod ops;
mod pool;
mod shim;
mod status;
mod up;

use std::process::ExitCode;
use std::time::Duration;

use allocator_core::PoolId;
use anyhow::Context;
use clap::{Parser, Subcommand};
use raft_node::{Client, ClientConfig};
use serde::Serialize;

/// raftipam: one IP address authority for a whole Docker cluster, replicated with Raft.
///
/// Run `raftipam node` on 3 or 5 machines, `raftipam cluster init` once and `raftipam
/// cluster add` for the others; then manage pools and addresses from anywhere with
/// `--endpoints` naming any of the nodes.
///
/// With `--json`, every command prints one JSON document on stdout: the same data the
/// library's types hold (`PoolInfo`, `Allocation`, `Holding`, `NodeStatus`, ...), serialised
/// with serde. Errors go to stderr as text, with a non-zero exit status.
#[derive(Parser, Debug)]
#[command(name = "raftipam", version, propagate_version = true)]
pub struct Cli {
    /// The cluster's nodes, HOST:PORT, comma separated [default: 127.0.0.1:7379, where `up`
    /// listens].
    #[arg(long, global = true, env = "RAFTIPAM_ENDPOINTS", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// How long a client call may take, retries included (e.g. 15s, 1m).
    #[arg(long, global = true, default_value = "15s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Read options from this TOML file (top-level keys: global options; `[node]`, `[shim]`,
    /// ... tables: that command's options). Flags and environment variables override it.
    #[arg(long, global = true, env = "RAFTIPAM_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Mutual TLS: a directory with ca.pem, cert.pem and key.pem (see `raftipam cert`). Nodes
    /// serve with it, clients and shims present it.
    #[arg(long, global = true, env = "RAFTIPAM_TLS_DIR")]
    tls_dir: Option<std::path::PathBuf>,
    /// Allow plain TCP to or on an address other than loopback: anyone who reaches the port
    /// can then allocate, release and reconfigure. For trusted, isolated networks only.
    #[arg(long, global = true, env = "RAFTIPAM_INSECURE")]
    insecure: bool,
    /// How `node`, `shim` and `up` write their logs (to stderr): `text` (coloured only on a
    /// terminal, never with NO_COLOR set) or `json`, one object a line, for log shippers.
    #[arg(
        long,
        global = true,
        env = "RAFTIPAM_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: logs::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node (until SIGINT or SIGTERM).
    Node(node::NodeArgs),
    /// Initialise the cluster, add or remove nodes, show its status.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Create, list, show and delete pools.
    #[command(subcommand)]
    Pool(pool::PoolCmd),
    /// Allocate, release, list and look up addresses.
    #[command(subcommand)]
    Addr(addr::AddrCmd),
    /// Load-generate against the cluster: allocations/s and latency.
    Bench(bench::BenchArgs),
    /// Serve Docker's IPAM plugin on this host against the cluster named by --endpoints.
    Shim(shim::ShimArgs),
    /// Run a one-node cluster and Docker's IPAM plugin in one process (the embedded default).
    Up(up::UpArgs),
    /// Compare what the cluster says this host holds with what its dockerd has (leaked,
    /// missing, held twice); exit status 1 if anything is wrong. --repair fixes what it can.
    Check(check::CheckArgs),
    /// List the Docker hosts the cluster knows; forget one that is gone for good.
    #[command(subcommand)]
    Host(host::HostCmd),
    /// Probe a pool's addresses on the LAN from this machine and print which answer (a
    /// newcomer's first look at a LAN it is about to share); --report-as quarantines them.
    Scan(lan::ScanArgs),
    /// Reserve the addresses another inventory says are in use: /etc/ethers, dnsmasq or ISC
    /// dhcpd leases, arp-scan output.
    Import(lan::ImportArgs),
    /// Write the allocator state (a snapshot) to a file.
    Backup(backup::BackupArgs),
    /// Replay a backup into a running, empty cluster.
    Restore(backup::RestoreArgs),
    /// One screen: cluster health (leader, members), pools with usage, hosts with heartbeat
    /// age and leaks, and any problem with what to do. Exit status 1 without a leader.
    Status,
    /// Print raftipam's version.
    Version,
    /// Get this Docker host's certificate from the cluster with a join token.
    Join(join::JoinArgs),
    /// Make the cluster's certificates (a CA; node, host and admin certificates), show one.
    #[command(subcommand)]
    Cert(cert::CertCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (raftipam.1, raftipam-pool.1, raftipam-pool-create.1, ...)
    /// generated from these definitions into DIR (what the Debian package installs).
    #[command(hide = true)]
    Man {
        /// The directory to write them into (created if missing).
        dir: std::path::PathBuf,
    },
}

/// Writes a manual page for `cmd` and each of its subcommands, named `PREFIX-SUB-...`.
fn write_man_pages(
    cmd: clap::Command,
    prefix: &str,
    dir: &std::path::Path,
) -> anyhow::Result<usize> {
    let name = if prefix.is_empty() {
        cmd.get_name().to_string()
    } else {
        format!("{prefix}-{}", cmd.get_name())
    };
    let cmd = cmd.name(name.clone());
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .with_context(|| format!("rendering the manual page of {name}"))?;
    let file = dir.join(format!("{name}.1"));
    std::fs::write(&file, page).with_context(|| format!("cannot write {}", file.display()))?;
    let mut n = 1;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        n += write_man_pages(sub.clone(), &name, dir)?;
    }
    Ok(n)
}

/// Writes a command's output to stdout. Nobody reading it any more (a closed pipe) ends the
/// process at once with status 0; any other failure to write ends it with status 1. Control
/// characters other than newline and tab are written escaped (see [`term_safe_text`]):
/// whatever a command forgot to pass through [`term_safe`], a string another process sent
/// cannot reach the operator's terminal as an escape sequence.
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) {
    write_raw(&term_safe_text(&args.to_string()));
}

/// Writes `s` to stdout as it is: only for what this process made itself and a terminal
/// cannot misread (JSON, whose strings serde escapes; a completion script).
pub(crate) fn write_raw(s: &str) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_all(s.as_bytes()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// Characters a terminal does not show as themselves: controls (ESC starts an escape sequence
/// that can move the cursor, retitle the window or rewrite what was printed), and the
/// invisible format characters that reorder or hide text (bidirectional overrides and
/// isolates, zero-width spaces and joiners, the byte-order mark).
pub(crate) fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}' | '\u{feff}'
        )
}

/// A string another process sent (a release, a name) as a terminal may show it: control
/// characters (escape sequences among them, and newlines) and invisible format characters
/// are written escaped (`\u{1b}`, `\n`, `\u{202e}`).
pub(crate) fn term_safe(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if unprintable(c) {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// [`term_safe`] for a whole text of lines: newlines and tabs stay what they are.
pub(crate) fn term_safe_text(s: &str) -> String {
    if !s.chars().any(|c| c != '\n' && c != '\t' && unprintable(c)) {
        return s.to_string();
    }
    s.split('\n')
        .map(|line| {
            line.split('\t')
                .map(term_safe)
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where `raftipam up` listens, and the endpoint used when neither `--endpoints`,
/// `RAFTIPAM_ENDPOINTS` nor the config file names any.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7379";

/// What commands share: the parsed global options.
pub struct Ctx {
    endpoints: Vec<String>,
    json: bool,
    timeout: Duration,
    tls_dir: Option<std::path::PathBuf>,
    insecure: bool,
    log_format: logs::LogFormat,
}

/// Whether `HOST:PORT` names this machine's loopback (an IP in 127.0.0.0/8 or ::1, or
/// `localhost`).
pub fn is_loopback(addr: &str) -> bool {
    let host = match addr.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Ctx {
    /// The TLS of `--tls-dir`, loaded, if given.
    fn tls(&self) -> anyhow::Result<Option<raft_node::tls::Tls>> {
        let Some(dir) = &self.tls_dir else {
            return Ok(None);
        };
        let tls = raft_node::tls::Tls::load(dir)
            .with_context(|| format!("cannot use --tls-dir {}", dir.display()))?;
        Ok(Some(tls))
    }

    /// Refuses plain TCP to or on `addrs` unless every one is loopback or `--insecure` was
    /// given (and then warns, every time).
    fn check_plain(&self, what: &str, addrs: &[String]) -> anyhow::Result<()> {
        let Some(open) = addrs.iter().find(|a| !is_loopback(a)) else {
            return Ok(());
        };
        if self.insecure {
            eprintln!(
                "WARNING: --insecure: {what} {open} without TLS; anyone who reaches it can allocate, release and reconfigure"
            );
            return Ok(());
        }
        anyhow::bail!(
            "refusing to {what} {open} without TLS: give --tls-dir DIR with this machine's certificate \
             (`raftipam cert --help`), or --insecure on a network you trust completely"
        )
    }

    /// The client configuration for the cluster named by `--endpoints`: `--tls-dir`'s
    /// certificate, or plain TCP where that is allowed.
    fn client_config(&self, timeout: Duration) -> anyhow::Result<ClientConfig> {
        let tls = self.tls()?;
        if tls.is_none() {
            self.check_plain("talk to", &self.endpoints)?;
        }
        Ok(ClientConfig {
            timeout,
            tls,
            ..Default::default()
        })
    }

    /// A client of the cluster named by `--endpoints`.
    fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::with_config(
            &self.endpoints,
            self.client_config(self.timeout)?,
        )?)
    }

    /// Prints `v` as JSON with `--json`, else runs `human`.
    fn print<T: Serialize>(&self, v: &T, human: impl FnOnce(&T)) -> anyhow::Result<()> {
        if self.json {
            let json = serde_json::to_string_pretty(v).context("encoding JSON")?;
            write_raw(&format!("{json}\n"));
        } else {
            human(v);
        }
        Ok(())
    }
}

/// An error in what the command line asks for that no retry can fix (exit status 2, as clap's
/// own usage errors: the systemd units do not restart on it).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Parses the command line, runs the command, and maps errors to exit status 1. A bad config
/// file exits with status 2, as a bad command line does (clap): a usage error, which the
/// systemd units do not restart (`RestartPreventExitStatus=2`).
pub fn main() -> ExitCode {
    if cni::invoked_as_plugin() {
        return cni::plugin_main();
    }
    let argv = match config::argv() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    let endpoints = if cli.endpoints.iter().all(|e| e.trim().is_empty()) {
        vec![DEFAULT_ENDPOINT.to_string()]
    } else {
        cli.endpoints
    };
    let ctx = Ctx {
        endpoints,
        json: cli.json,
        timeout: cli.timeout,
        tls_dir: cli.tls_dir,
        insecure: cli.insecure,
        log_format: cli.log_format,
    };
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
    let r = rt.block_on(async {
        match cli.command {
            Command::Node(a) => node::run(&ctx, a).await,
            Command::Cluster(c) => cluster::run(&ctx, c).await,
            Command::Pool(c) => pool::run(&ctx, c).await,
            Command::Addr(c) => addr::run(&ctx, c).await,
            Command::Bench(a) => bench::run(&ctx, a).await,
            Command::Shim(a) => shim::run(&ctx, a).await,
            Command::Up(a) => up::run(&ctx, a).await,
            Command::Cert(c) => cert::run(&ctx, c).await,
            Command::Join(a) => join::run(&ctx, a).await,
            Command::Check(a) => check::run(&ctx, a).await,
            Command::Host(c) => host::run(&ctx, c).await,
            Command::Scan(a) => lan::scan(&ctx, a).await,
            Command::Import(a) => lan::import(&ctx, a).await,
            Command::Backup(a) => backup::backup(&ctx, a).await,
            Command::Restore(a) => backup::restore(&ctx, a).await,
            Command::Status => status::run(&ctx).await,
            Command::Version => ctx.print(
                &serde_json::json!({"version": env!("CARGO_PKG_VERSION")}),
                |_| outln!("raftipam {}", env!("CARGO_PKG_VERSION")),
            ),
            Command::Completions { shell } => {
                use clap::CommandFactory;
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "raftipam", &mut script);
                write_raw(&String::from_utf8_lossy(&script));
                Ok(())
            }
            Command::Man { dir } => {
                use clap::CommandFactory;
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let mut cmd = Cli::command();
                cmd.build();
                let n = write_man_pages(cmd, "", &dir)?;
                ctx.print(&serde_json::json!({"dir": dir, "pages": n}), |_| {
                    outln!("wrote {n} manual pages into {}", dir.display())
                })
            }
        }
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // An error can quote what a node answered (names a host chose among them).
            eprintln!("error: {}", term_safe_text(&format!("{e:#}")));
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Resolves a pool named without a range: if no pool has exactly that id but exactly one pool
/// of that space covers that subnet (with a sub-range), that is the one meant. Saves typing
/// `global/10.0.0.0/24/10.0.0.128/25` for a network created with `--range`. A bare subnet
/// (the `global` space) that names no pool there also finds the one pool over that subnet in
/// another space, e.g. `local/...` for a network `docker network create` made.
pub async fn resolve_pool(client: &Client, id: PoolId) -> anyhow::Result<PoolId> {
    if id.range.is_some() {
        return Ok(id);
    }
    let pools = client.pools().await?;
    if pools.iter().any(|p| p.id == id) {
        return Ok(id);
    }
    let mut same: Vec<&PoolId> = pools
        .iter()
        .map(|p| &p.id)
        .filter(|p| p.space == id.space && p.subnet == id.subnet)
        .collect();
    if same.is_empty() && id.space == "global" {
        // A bare subnet: Docker's ordinary (local-scope) networks put their pools in the
        // `local` space, so look in every space.
        same = pools
            .iter()
            .map(|p| &p.id)
            .filter(|p| p.subnet == id.subnet)
            .collect();
    }
    match same.as_slice() {
        [] => Ok(id),
        [only] => Ok((*only).clone()),
        many => {
            let names: Vec<String> = many.iter().map(|p| p.to_string()).collect();
            anyhow::bail!(
                "{id} names no pool, and {} pools share its subnet: name one of {}",
                many.len(),
                names.join(", ")
            )
        }
    }
}

pub use raft_node::api::parse_pool;

#[cfg(test)]
mod tests {
    use super::parse_pool;

    #[test]
    fn pool_ids_may_leave_out_the_global_space() {
        let full = parse_pool("global/10.5.0.0/16/10.5.1.0/24").expect("full id");
        assert_eq!(parse_pool("10.5.0.0/16/10.5.1.0/24"), Ok(full));
        assert_eq!(
            parse_pool("10.5.0.0/16").map(|p| p.to_string()),
            Ok("global/10.5.0.0/16".into())
        );
        assert_eq!(
            parse_pool("local/fd00::/64").map(|p| p.to_string()),
            Ok("local/fd00::/64".into())
        );
        for bad in ["10.5.0.0/16/10.5.1.0", "10.5.0.0/16/x/24", "10.5.0.0", ""] {
            let e = parse_pool(bad).expect_err(bad);
            assert!(e.contains("SUBNET/RANGE"), "{bad}: {e}");
        }
    }
}

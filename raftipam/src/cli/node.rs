//! `raftipam node`: run one node in the foreground.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use raft_node::{Node, NodeConfig};

/// Run a node.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// This node's id: a positive integer, unique in the cluster and never reused.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    id: u64,
    /// Address to listen on for nodes and clients, HOST:PORT.
    #[arg(long)]
    listen: SocketAddr,
    /// Address the others reach this node at, if not --listen (e.g. when listening on 0.0.0.0).
    #[arg(long)]
    advertise: Option<String>,
    /// Data directory (created if missing; must belong to this node id).
    #[arg(long)]
    data_dir: PathBuf,
    /// Serve Prometheus metrics on HOST:PORT (GET /metrics).
    /// Plain HTTP on loopback; another address needs --tls-dir and serves HTTPS to admin and
    /// host certificates.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Serve the web view — a live, read-only subnet map — on HOST:PORT (off unless given).
    /// A non-loopback address needs --tls and serves HTTPS to admin and host certificates.
    #[arg(long, value_name = "HOST:PORT")]
    http: Option<SocketAddr>,
    /// How long a write may wait for a leader with a quorum before failing.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    write_timeout: Duration,
    /// Build a snapshot (and purge the log behind it) every this many entries; once a
    /// snapshot is over 4 MiB, only when the log since the last one is about as large as a
    /// snapshot (its bytes / 128 entries), so big states do not spend their time snapshotting.
    #[arg(long, default_value_t = 10_000)]
    snapshot_every: u64,
    /// Log entries to keep behind a snapshot.
    #[arg(long, default_value_t = 1_000)]
    keep_logs: u64,
    /// Also serve Docker's IPAM plugin on this socket (its base name is the driver name).
    #[arg(long)]
    plugin_socket: Option<std::path::PathBuf>,
    /// With --plugin-socket: this Docker host's name (default: the machine's hostname).
    #[arg(long, requires = "plugin_socket")]
    host: Option<String>,
    /// With --plugin-socket: longest time one plugin call may take.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    plugin_call_timeout: Duration,
    #[command(flatten)]
    ops: super::ops::OpsArgs,
}

pub async fn run(ctx: &super::Ctx, a: NodeArgs) -> anyhow::Result<()> {
    super::logs::init(ctx.log_format);
    // Crash points named by FAILPOINTS (the chaos harness); none without it. A release
    // build has none: say so rather than run without the crashes someone asked for.
    if std::env::var_os("FAILPOINTS").is_some() && !raft_node::CRASH_POINTS {
        anyhow::bail!(
            "FAILPOINTS is set but this raftipam binary has no crash points (they are only in the chaos harness's builds): unset FAILPOINTS"
        );
    }
    if a.ops.cni_socket.is_some() && a.plugin_socket.is_none() {
        return Err(super::UsageError(
            "--cni-socket needs --plugin-socket on a node: the CNI agent is this host's agent, beside its Docker plugin (on a host without Docker, run `raftipam shim --cni-socket PATH` against the cluster)".into(),
        )
        .into());
    }
    let _failpoints = fail::FailScenario::setup();
    let mut cfg = NodeConfig::new(a.id, a.listen, a.data_dir);
    cfg.advertise = a.advertise;
    cfg.write_timeout = a.write_timeout;
    cfg.snapshot_every = a.snapshot_every;
    cfg.keep_logs = a.keep_logs;
    cfg.tls = ctx.tls()?;
    if cfg.tls.is_none() {
        let mut addrs = vec![a.listen.to_string()];
        addrs.extend(cfg.advertise.clone());
        ctx.check_plain("listen on", &addrs)?;
    }
    crate::metrics::check_addr(a.metrics, cfg.tls.is_some())?;
    let tls = cfg.tls.clone();
    let _reload = super::shim::reload_on_hangup(tls.clone())?;
    let web = match a.http {
        Some(h) => crate::web::bind(h, false, tls.is_some()).await?,
        None => None,
    };
    let node = Node::start(cfg).await.context("cannot start the node")?;
    eprintln!("raftipam node {} serving on {}", node.id(), node.addr());
    let beside = match serve_beside(&node, web, a.metrics).await {
        Ok(b) => b,
        Err(e) => {
            let _ = node.shutdown().await;
            return Err(e);
        }
    };
    let plugin = match &a.plugin_socket {
        Some(socket) => {
            match super::shim::start_for_node(
                &node,
                socket,
                a.host.clone(),
                a.plugin_call_timeout,
                tls.clone(),
                a.ops.lan_checks(),
            )
            .await
            {
                Ok(p) => Some(p),
                Err(e) => {
                    let _ = node.shutdown().await;
                    return Err(e);
                }
            }
        }
        None => None,
    };
    // With the plugin: this host's heartbeat and reconciliation, through the node's own address.
    let _ops = match (&plugin, &a.plugin_socket) {
        (Some(_), Some(socket)) => {
            let host = super::shim::host_name(a.host.clone())?;
            let client = super::shim::shim_client(
                &[node.addr().to_string()],
                a.plugin_call_timeout,
                &host,
                tls.clone(),
            )?;
            let started = a
                .ops
                .start(
                    client,
                    &host,
                    &super::shim::driver_name(socket),
                    a.plugin_call_timeout,
                )
                .await;
            match started {
                Ok(t) => Some(t),
                Err(e) => {
                    drop(plugin);
                    let _ = node.shutdown().await;
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    let r = tokio::select! {
        r = async {
            match plugin {
                Some(p) => p.until_signal().await,
                None => {
                    let r = wait_for_signal().await;
                    eprintln!("stopping");
                    r
                }
            }
        } => r,
        // A node that cannot go on ends the process, non-zero, so that systemd restarts it
        // and its operator reads why.
        why = node.failed() => Err(anyhow::anyhow!("the node stopped: {why}")),
    };
    // The web view's and the metrics' connections hold the node's view: they end first, or
    // the node's database would stay open (and a restart would wait for it).
    drop(beside);
    if let Err(e) = node.shutdown().await {
        tracing::warn!("stopping the node: {e}");
    }
    r
}

/// The web view and the metrics server of a node, stopped when dropped.
pub(super) struct Beside {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The web view's URL, if it is served.
    pub web_url: Option<String>,
}

impl Drop for Beside {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Serves the web view (on a listener bound before the node started) and the metrics
/// (`GET /metrics` on `metrics`) of `node`.
pub(super) async fn serve_beside(
    node: &Node,
    web: Option<tokio::net::TcpListener>,
    metrics: Option<SocketAddr>,
) -> anyhow::Result<Beside> {
    let mut beside = Beside {
        tasks: Vec::new(),
        web_url: None,
    };
    if let Some(m) = metrics {
        let view = node.view();
        let secure = node
            .view()
            .tls()
            .cloned()
            .map(|tls| crate::metrics::Secure {
                tls,
                node: Some(node.view()),
            });
        let t = crate::metrics::serve(m, std::sync::Arc::new(move || view.metrics_text()), secure)
            .await
            .with_context(|| format!("cannot serve metrics on {m}"))?;
        beside.tasks.push(t);
    }
    if let Some(l) = web {
        let (t, url) = crate::web::start(l, node.view()).context("serving the web view")?;
        beside.tasks.push(t);
        beside.web_url = Some(url);
    }
    Ok(beside)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

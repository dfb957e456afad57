//! `raftipam up`: the embedded default. A one-node cluster (initialised on first start,
//! reused afterwards) and Docker's IPAM plugin in one process.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use raft_node::{ApiError, Node, NodeConfig};

use super::shim::{driver_name, host_name, Plugin, DEFAULT_SOCKET};

/// Run a one-node cluster with the Docker plugin.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Data directory (created on first start, reused afterwards).
    #[arg(long, default_value = "/var/lib/raftipam")]
    data_dir: PathBuf,
    /// Address the node listens on for clients (`raftipam pool ls --endpoints ...`).
    #[arg(long, default_value = super::DEFAULT_ENDPOINT)]
    listen: SocketAddr,
    /// The plugin socket; its base name is the driver name (`--ipam-driver raftipam`).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// This Docker host's name, stable across restarts (default: the machine's hostname).
    #[arg(long)]
    host: Option<String>,
    /// Serve Prometheus metrics on HOST:PORT (GET /metrics).
    /// Plain HTTP on loopback; another address needs --tls-dir and serves HTTPS to admin and
    /// host certificates.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Serve the web view — a live, read-only subnet map — on HOST:PORT, or `off`. Default
    /// 127.0.0.1:7380 (skipped with a warning if that port is taken). A non-loopback address
    /// needs --tls and serves HTTPS to admin and host certificates.
    #[arg(long, value_name = "HOST:PORT|off", value_parser = parse_http)]
    http: Option<Http>,
    /// Longest time one plugin call may take before dockerd gets an error.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    call_timeout: Duration,
    #[command(flatten)]
    ops: super::ops::OpsArgs,
}

/// Where `up` serves the web view unless told otherwise.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7380";

/// `--http`: an address or `off`.
#[derive(Clone, Copy, Debug)]
pub enum Http {
    /// No web view.
    Off,
    /// The web view on this address.
    At(SocketAddr),
}

fn parse_http(s: &str) -> Result<Http, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Http::Off);
    }
    s.parse()
        .map(Http::At)
        .map_err(|_| format!("{s:?} is neither HOST:PORT (e.g. 127.0.0.1:7380) nor `off`"))
}

/// How long `up` waits for its node to become leader.
const LEADER_WAIT: Duration = Duration::from_secs(30);

pub async fn run(ctx: &super::Ctx, a: UpArgs) -> anyhow::Result<()> {
    super::logs::init(ctx.log_format);
    let host = host_name(a.host.clone())?;
    let mut cfg = NodeConfig::new(1, a.listen, a.data_dir.clone());
    let (http, http_optional) = match a.http {
        None => (Some(DEFAULT_HTTP.parse()?), true),
        Some(Http::Off) => (None, false),
        Some(Http::At(h)) => (Some(h), false),
    };
    cfg.tls = ctx.tls()?;
    if cfg.tls.is_none() {
        ctx.check_plain("listen on", &[a.listen.to_string()])?;
    }
    crate::metrics::check_addr(a.metrics, cfg.tls.is_some())?;
    let tls = cfg.tls.clone();
    let _reload = super::shim::reload_on_hangup(tls.clone())?;
    let web = match http {
        Some(h) => crate::web::bind(h, http_optional, tls.is_some()).await?,
        None => None,
    };
    let node = Node::start(cfg).await.with_context(|| {
        format!(
            "cannot start the node (data in {}, listening on {})",
            a.data_dir.display(),
            a.listen
        )
    })?;
    let r = match super::node::serve_beside(&node, web, a.metrics).await {
        Ok(beside) => serve(&node, &host, &a, tls, beside.web_url.as_deref()).await,
        Err(e) => Err(e),
    };
    if let Err(e) = node.shutdown().await {
        eprintln!("error stopping the node: {e}");
    }
    r
}

async fn serve(
    node: &Node,
    host: &str,
    a: &UpArgs,
    tls: Option<raft_node::tls::Tls>,
    web_url: Option<&str>,
) -> anyhow::Result<()> {
    // The membership may not be loaded into the node's status yet right after start, so ask
    // Raft: initialisation is refused (and only refused) when the data is already a cluster's.
    match node.init().await {
        Ok(_) => eprintln!(
            "initialised a new one-node cluster in {}",
            a.data_dir.display()
        ),
        Err(ApiError::Cluster(_)) => {
            eprintln!("reusing the cluster in {}", a.data_dir.display())
        }
        Err(e) => return Err(e).context("initialising the one-node cluster"),
    }
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let s = node.status();
        if s.state == "Leader" {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node {} did not become leader within {} (state {}, members {:?}); is {} another cluster's data?",
            s.id,
            humantime::format_duration(LEADER_WAIT),
            s.state,
            s.voters(),
            a.data_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = super::shim::shim_client(&[node.addr().to_string()], a.call_timeout, host, tls)?;
    let plugin = Plugin::start(
        client.clone(),
        &a.socket,
        host,
        a.call_timeout,
        a.ops.lan_checks(),
    )
    .await?;
    let _ops = a
        .ops
        .start(client, host, &driver_name(&a.socket), a.call_timeout)
        .await?;
    eprintln!(
        "raftipam node 1 on {} (data {}), plugin socket {} for host {host}",
        node.addr(),
        a.data_dir.display(),
        a.socket.display()
    );
    // Said on stdout for whoever started it; a closed stdout must not stop the service.
    let _ = writeln!(
        std::io::stdout(),
        "raftipam is ready: docker network create --ipam-driver {} --subnet 10.20.0.0/24 mynet",
        driver_name(&a.socket)
    );
    if let Some(url) = web_url {
        let _ = writeln!(std::io::stdout(), "subnet map: {url}");
    }
    tokio::select! {
        r = plugin.until_signal() => r,
        why = node.failed() => Err(anyhow::anyhow!("the node stopped: {why}")),
    }
}

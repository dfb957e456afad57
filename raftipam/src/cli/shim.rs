//! `raftipam shim`: Docker's IPAM plugin alone, on a Docker host that is not a Raft voter,
//! talking to the cluster as a client. Also the pieces `node --plugin-socket` and `up` share:
//! starting the plugin on a socket, the default host name, and waiting for a signal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use plugin_shim::{PluginSocket, ShimConfig};
use raft_node::client::backend::{shim_client_config, SHIM_CALL_TIMEOUT};
use raft_node::Client;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::Ctx;

/// Where dockerd looks for the plugin by default (the base name is the driver name).
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/raftipam.sock";

/// Run Docker's IPAM plugin against a cluster.
#[derive(Args, Debug)]
pub struct ShimArgs {
    /// The plugin socket; its base name is the driver name (`--ipam-driver raftipam`).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// This Docker host's name, unique in the cluster and stable across restarts (default:
    /// the machine's hostname).
    #[arg(long)]
    host: Option<String>,
    /// Longest time one plugin call may take before dockerd gets an error.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    call_timeout: Duration,
    /// Serve this shim's Prometheus metrics (reconciliation, heartbeats) on HOST:PORT.
    /// Plain HTTP on loopback; another address needs --tls-dir and serves HTTPS to admin and
    /// host certificates.
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    #[command(flatten)]
    ops: super::ops::OpsArgs,
}

pub async fn run(ctx: &Ctx, a: ShimArgs) -> anyhow::Result<()> {
    super::logs::init(ctx.log_format);
    let host = host_name(a.host)?;
    let tls = ctx.tls()?;
    if tls.is_none() {
        ctx.check_plain("talk to", &ctx.endpoints)?;
    }
    crate::metrics::check_addr(a.metrics, tls.is_some())?;
    let _reload = reload_on_hangup(tls.clone())?;
    let client = shim_client(&ctx.endpoints, a.call_timeout, &host, tls.clone())?;
    let plugin = Plugin::start(
        client.clone(),
        &a.socket,
        &host,
        a.call_timeout,
        a.ops.lan_checks(),
    )
    .await?;
    let _ops = a
        .ops
        .start(client, &host, &driver_name(&a.socket), a.call_timeout)
        .await?;
    let _metrics = match a.metrics {
        Some(m) => Some(AbortOnDrop(
            super::ops::serve_shim_metrics(m, tls.clone()).await?,
        )),
        None => None,
    };
    eprintln!(
        "raftipam shim for host {host} serving {} (driver {}) against {}",
        a.socket.display(),
        driver_name(&a.socket),
        ctx.endpoints.join(",")
    );
    plugin.until_signal().await
}

/// The cluster client a shim for `host` uses: with `tls`, its certificate must name `host`
/// (a host or node certificate acts only as its own host), or every write would be refused.
pub fn shim_client(
    endpoints: &[String],
    call_timeout: Duration,
    host: &str,
    tls: Option<raft_node::tls::Tls>,
) -> anyhow::Result<Client> {
    if let Some(t) = &tls {
        let id = t.identity();
        anyhow::ensure!(
            id.role == raft_node::tls::Role::Admin || id.name == host,
            "this Docker host is named {host:?} (--host) but the certificate in {} names {} {:?},              which may act only as host {:?}: give --host {:?}, or a certificate made for {host:?}              (`raftipam cert create-host {host}`)",
            t.dir().display(),
            id.role.as_str(),
            id.name,
            id.name,
            id.name
        );
    }
    let mut cfg = shim_client_config(call_timeout);
    cfg.tls = tls;
    Ok(Client::with_config(endpoints, cfg)?)
}

/// Reloads `tls`'s files at every SIGHUP (a renewed certificate), until dropped. The process
/// keeps its old certificate if the new files are unusable, and says why.
pub fn reload_on_hangup(tls: Option<raft_node::tls::Tls>) -> anyhow::Result<Option<AbortOnDrop>> {
    use tokio::signal::unix::{signal, SignalKind};
    let Some(tls) = tls else {
        return Ok(None);
    };
    let mut hup = signal(SignalKind::hangup()).context("installing a SIGHUP handler")?;
    Ok(Some(AbortOnDrop(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => {
                    tracing::info!(dir = %tls.dir().display(), "SIGHUP: TLS certificate and CA reloaded")
                }
                Err(e) => tracing::error!("SIGHUP: keeping the certificate in use: {e}"),
            }
        }
    }))))
}

/// Aborts a background task when dropped.
pub struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Logs to stderr, `RUST_LOG` or `info`.
/// `--host`, or the machine's hostname.
pub fn host_name(given: Option<String>) -> anyhow::Result<String> {
    if let Some(h) = given {
        let h = h.trim().to_string();
        anyhow::ensure!(
            !h.is_empty(),
            "--host is empty: give this Docker host a unique, stable name"
        );
        allocator_core::check_host_name(&h).map_err(|e| anyhow::anyhow!("--host: {e}"))?;
        return Ok(h);
    }
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    from_kernel
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .context("cannot read this machine's hostname: name this Docker host with --host NAME")
}

/// The driver name dockerd derives from a socket path (its base name without `.sock`).
pub fn driver_name(socket: &Path) -> String {
    socket
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "raftipam".into())
}

/// A plugin being served in the background.
pub struct Plugin {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), plugin_shim::ShimError>>,
    call_timeout: Duration,
}

impl Plugin {
    /// Binds `socket` (the file exists when this returns) and serves the plugin on it, as
    /// `host`, against the cluster `client`, probing addresses on the LAN with `lan_checks`.
    pub async fn start(
        client: Client,
        socket: &Path,
        host: &str,
        call_timeout: Duration,
        lan_checks: Option<plugin_shim::probe::LanChecks>,
    ) -> anyhow::Result<Plugin> {
        let call_timeout = if call_timeout.is_zero() {
            SHIM_CALL_TIMEOUT
        } else {
            call_timeout
        };
        if let Some(why) = plugin_shim::socket::undiscoverable(socket) {
            tracing::warn!("{why}");
            eprintln!("WARNING: {why}");
        }
        let bound = PluginSocket::bind(socket)
            .await
            .with_context(|| format!("cannot create the plugin socket {}", socket.display()))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let config = ShimConfig::new(host)
            .with_call_timeout(call_timeout)
            .with_lan_checks(lan_checks);
        let task = tokio::spawn(
            bound.serve(std::sync::Arc::new(client), config, async move {
                let _ = stopped.await;
            }),
        );
        Ok(Plugin {
            stop,
            task,
            call_timeout,
        })
    }

    /// Serves until SIGINT or SIGTERM, then stops (see [`Plugin::stop`]). Fails if the
    /// plugin stops serving by itself first.
    pub async fn until_signal(mut self) -> anyhow::Result<()> {
        tokio::select! {
            r = wait_for_signal() => {
                eprintln!("stopping");
                let stopped = self.stop().await;
                r.and(stopped)
            }
            r = &mut self.task => Err(match r {
                Ok(Ok(())) => anyhow::anyhow!("the plugin stopped serving"),
                Ok(Err(e)) => anyhow::Error::new(e).context("the plugin stopped serving"),
                Err(e) => anyhow::anyhow!("the plugin task failed: {e}"),
            }),
        }
    }

    /// Stops serving: the socket file goes at once, calls in progress finish (each bounded
    /// by the call timeout).
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        match tokio::time::timeout(self.call_timeout + Duration::from_secs(2), self.task).await {
            Ok(Ok(r)) => r.context("serving the plugin"),
            Ok(Err(e)) => Err(anyhow::anyhow!("the plugin task failed: {e}")),
            Err(_) => Err(anyhow::anyhow!(
                "the plugin did not stop within {}",
                humantime::format_duration(self.call_timeout + Duration::from_secs(2))
            )),
        }
    }
}

/// Waits for SIGINT or SIGTERM.
pub async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Starts the plugin inside a running node (`node --plugin-socket`): a client of the node's
/// own address, so writes take the same path (and leader forwarding) as any client's.
pub async fn start_for_node(
    node: &raft_node::Node,
    socket: &Path,
    host: Option<String>,
    call_timeout: Duration,
    tls: Option<raft_node::tls::Tls>,
    lan_checks: Option<plugin_shim::probe::LanChecks>,
) -> anyhow::Result<Plugin> {
    let host = host_name(host)?;
    let client = shim_client(&[node.addr().to_string()], call_timeout, &host, tls)?;
    let plugin = Plugin::start(client, socket, &host, call_timeout, lan_checks).await?;
    eprintln!(
        "raftipam plugin for host {host} serving {} (driver {})",
        socket.display(),
        driver_name(socket)
    );
    Ok(plugin)
}

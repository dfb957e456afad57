//! What every shim runs beside the plugin: the heartbeat and background reconciliation
//! (`up`, `shim`, `node --plugin-socket` share these flags).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use plugin_shim::agent::metrics::ops_metrics;
use plugin_shim::agent::reconcile::{heartbeat, ReconcileConfig, Reconciler};
use plugin_shim::agent::{Docker, DEFAULT_DOCKER_HOST};
use raft_node::Client;
use tokio::task::JoinHandle;

/// Heartbeat and reconciliation settings of a shim.
#[derive(Args, Debug, Clone)]
pub struct OpsArgs {
    /// dockerd's API socket (a path, or unix://PATH as in DOCKER_HOST), which reconciliation compares with the cluster.
    #[arg(long, env = "DOCKER_HOST", default_value = DEFAULT_DOCKER_HOST)]
    pub docker_host: String,
    /// Time between reconciliation passes (0s: no background reconciliation).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub reconcile_interval: Duration,
    /// A leaked address is released only when seen leaked at two passes this far apart.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub reconcile_grace: Duration,
    /// Time between heartbeats to the cluster (0s: none).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// Also serve this host's CNI plugins (containerd, Podman, Nomad, Multus) on this unix
    /// socket, as this host: the `raftipam` CNI plugin's ipam.socket (its default is
    /// /run/raftipam/cni.sock).
    #[arg(long)]
    pub cni_socket: Option<PathBuf>,
    /// With --cni-socket: where one record per CNI attachment (its network namespace) is
    /// kept, so that an attachment whose namespace vanished without DEL is released after
    /// --reconcile-grace.
    #[arg(long, default_value = "/var/lib/raftipam/cni")]
    pub cni_records: PathBuf,
    /// Probe every container address on the LAN before handing it out (an ARP probe for
    /// IPv4, a neighbor solicitation for IPv6, on the interface the subnet is on): an address
    /// a device answers for is quarantined cluster-wide and the next one is taken. Needs
    /// CAP_NET_RAW; without it (or without an interface on the subnet) a warning, and
    /// addresses are handed out unchecked.
    #[arg(long, env = "RAFTIPAM_LAN_CHECKS", default_value = "on", value_parser = ["on", "off"])]
    pub lan_checks: String,
    /// How long a probe waits for a device's answer.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub probe_timeout: Duration,
    /// With LAN checks: probe the next N addresses of every pool this host hands out from,
    /// ahead of time (at most 5 probes a second), so that a hand-out rarely waits for a
    /// probe (0: never; every hand-out then waits up to --probe-timeout).
    #[arg(long, default_value_t = 2)]
    pub sweep_ahead: usize,
    /// With LAN checks: probes a second of the background sweep that walks every free
    /// address of the pools (each pool is swept by one host at a time, chosen among the
    /// hosts whose checks of its subnet are on; the turn moves every 10 minutes; 0: no
    /// sweep). The same host also watches ARP and neighbor discovery on the subnets'
    /// interfaces (no packets sent).
    #[arg(long, default_value_t = 1.0)]
    pub sweep_rate: f64,
    /// With LAN checks: how often the agent reads the pools, the interfaces their subnets
    /// are on and the other hosts' LAN-check reports again (a new pool's subnet is watched
    /// from then on).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub lan_refresh: Duration,
    /// The one set of LAN checks of this process (the plugin, CNI and the sweep share what
    /// they learn).
    #[arg(skip)]
    shared_checks: std::sync::OnceLock<Option<plugin_shim::probe::LanChecks>>,
}

/// The background tasks; dropped, they stop.
pub struct OpsTasks {
    tasks: Vec<JoinHandle<()>>,
    _cni: Option<super::cni::CniServer>,
}

impl Drop for OpsTasks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl OpsArgs {
    /// The LAN checks asked for (`None`: off).
    pub fn lan_checks(&self) -> Option<plugin_shim::probe::LanChecks> {
        self.shared_checks
            .get_or_init(|| {
                (self.lan_checks == "on")
                    .then(|| plugin_shim::probe::LanChecks::new(self.probe_timeout))
            })
            .clone()
    }

    /// Starts the heartbeat and the reconciler of `host` (IPAM driver `driver`), and with
    /// --cni-socket the CNI agent (its calls bounded by `call_timeout`).
    pub async fn start(
        &self,
        client: Client,
        host: &str,
        driver: &str,
        call_timeout: Duration,
    ) -> anyhow::Result<OpsTasks> {
        let cni = match &self.cni_socket {
            Some(socket) => {
                Some(super::cni::serve(client.clone(), host, socket, call_timeout, self).await?)
            }
            None => None,
        };
        let mut tasks = Vec::new();
        if let (Some(checks), true) = (self.lan_checks(), self.sweep_ahead > 0) {
            let (client, host, ahead) = (client.clone(), host.to_string(), self.sweep_ahead);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Err(e) = checks
                        .sweep(&client, &host, ahead, Duration::from_millis(200))
                        .await
                    {
                        tracing::debug!("LAN sweep: {e}");
                    }
                }
            }));
        }
        if let Some(checks) = self.lan_checks() {
            if !(0.0..=50.0).contains(&self.sweep_rate) {
                anyhow::bail!(
                    "--sweep-rate {} is out of range: give 0 (no sweep) to 50 probes a second",
                    self.sweep_rate
                );
            }
            let cfg = plugin_shim::probe::LanAgentConfig {
                sweep_rate: self.sweep_rate,
                refresh: self.lan_refresh.max(Duration::from_millis(200)),
                ..Default::default()
            };
            let agent = plugin_shim::probe::LanAgent::new(
                checks,
                std::sync::Arc::new(client.clone()),
                host,
                cfg,
            );
            tasks.push(tokio::spawn(agent.run()));
        }
        if !self.heartbeat_interval.is_zero() {
            tasks.push(tokio::spawn(heartbeat(
                client.clone(),
                host.to_string(),
                self.heartbeat_interval,
            )));
        }
        if !self.reconcile_interval.is_zero() {
            let cfg = ReconcileConfig {
                host: host.to_string(),
                driver: driver.to_string(),
                interval: self.reconcile_interval,
                grace: self.reconcile_grace,
            };
            tracing::info!(
                docker = %self.docker_host,
                interval = %humantime::format_duration(self.reconcile_interval),
                grace = %humantime::format_duration(self.reconcile_grace),
                "reconciling leaked addresses of host {host} in the background"
            );
            let r = Reconciler::new(client, Docker::new(&self.docker_host), cfg);
            tasks.push(tokio::spawn(r.run()));
        }
        Ok(OpsTasks { tasks, _cni: cni })
    }
}

/// Serves the shim's own counters (reconciliation, heartbeats) as Prometheus text on
/// `GET /metrics` at `addr`, until the task is aborted.
pub async fn serve_shim_metrics(
    addr: SocketAddr,
    tls: Option<raft_node::tls::Tls>,
) -> anyhow::Result<JoinHandle<()>> {
    let mut registry = prometheus_client::registry::Registry::with_prefix("raftipam");
    ops_metrics().register(&mut registry);
    let render = move || {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    };
    let secure = tls.map(|tls| crate::metrics::Secure { tls, node: None });
    crate::metrics::serve(addr, std::sync::Arc::new(render), secure)
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))
}

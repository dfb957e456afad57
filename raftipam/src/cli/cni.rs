//! CNI: the plugin process (`raftipam` run by a container runtime, `CNI_COMMAND` set and no
//! arguments) and the agent's local CNI socket (`--cni-socket`, beside the Docker plugin).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use plugin_shim::cni::agent::{router, CniAgent, Records};
use plugin_shim::cni::spec::{code, CniError, MAX_STDIN, NEWEST_VERSION};
use plugin_shim::PluginSocket;
use raft_node::Client;
use tokio::task::JoinHandle;

/// Whether this process was started as a CNI plugin: a runtime sets `CNI_COMMAND` and passes
/// no arguments. (`raftipam` with arguments is the command line, whatever the environment.)
pub fn invoked_as_plugin() -> bool {
    std::env::var_os("CNI_COMMAND").is_some() && std::env::args_os().len() == 1
}

/// Runs one CNI call: configuration on stdin, result or error object on stdout.
pub fn plugin_main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin()
        .take(MAX_STDIN as u64 + 1)
        .read_to_end(&mut stdin);
    let out = match read {
        Err(e) => plugin_shim::cni::plugin::Outcome {
            stdout: CniError::new(
                code::IO,
                format!("cannot read the network configuration from stdin: {e}"),
            )
            .to_json(NEWEST_VERSION)
            .to_string(),
            exit: 1,
        },
        Ok(_) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(plugin_shim::cni::plugin::run(
                |k| std::env::var(k).ok(),
                &stdin,
            )),
            Err(e) => plugin_shim::cni::plugin::Outcome {
                stdout: CniError::new(code::IO, format!("cannot start the async runtime: {e}"))
                    .to_json(NEWEST_VERSION)
                    .to_string(),
                exit: 1,
            },
        },
    };
    let mut so = std::io::stdout().lock();
    let _ = so.write_all(out.stdout.as_bytes());
    let _ = so.flush();
    ExitCode::from(out.exit)
}

/// The agent's CNI socket and its sweep of vanished namespaces; both stop when dropped (the
/// socket file goes with the server).
pub struct CniServer {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for CniServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Serves CNI calls of `host` on `socket` against the cluster `client`, with `ops`'s
/// settings: LAN checks before hand-out, attachment records in `--cni-records`, and every
/// `--reconcile-interval` (0: never) the release of attachments whose namespace has been gone
/// for `--reconcile-grace`.
pub async fn serve(
    client: Client,
    host: &str,
    socket: &Path,
    call_timeout: Duration,
    ops: &super::ops::OpsArgs,
) -> anyhow::Result<CniServer> {
    let (records, interval, grace) = (
        ops.cni_records.clone(),
        ops.reconcile_interval,
        ops.reconcile_grace,
    );
    let bound = PluginSocket::bind(socket)
        .await
        .with_context(|| format!("cannot create the CNI socket {}", socket.display()))?;
    let agent = Arc::new(
        CniAgent::new(client, host, Records::new(&records)).with_lan_checks(ops.lan_checks()),
    );
    let app = router(Arc::clone(&agent), call_timeout);
    let shown = socket.display().to_string();
    let mut tasks = vec![tokio::spawn(async move {
        if let Err(e) = bound.serve_router(app, std::future::pending()).await {
            tracing::error!("the CNI socket {shown} stopped serving: {e}");
        }
    })];
    if !interval.is_zero() {
        tasks.push(tokio::spawn(async move {
            let mut seen = HashMap::new();
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                if let Err(e) = agent.sweep_vanished(&mut seen, Instant::now(), grace).await {
                    tracing::warn!("CNI sweep of vanished namespaces: {e}");
                }
            }
        }));
    }
    tracing::info!(socket = %socket.display(), records = %records.display(), "serving CNI for host {host}");
    eprintln!("raftipam CNI agent for host {host} on {}", socket.display());
    Ok(CniServer { tasks })
}

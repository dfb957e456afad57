//! `raftipam cluster`: initialise, grow, shrink and inspect the cluster.

use clap::Subcommand;
use raft_node::api::NodeInfo;
use raft_node::AdminCommand;

use super::Ctx;

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Make the first endpoint a one-node cluster (once, on a new node).
    Init,
    /// Add a node: it catches up as a learner, then becomes a voter.
    Add {
        /// Its id.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        id: u64,
        /// Its address, HOST:PORT.
        #[arg(long, value_parser = parse_addr)]
        addr: String,
    },
    /// Remove a node from the cluster.
    Remove {
        /// Its id.
        #[arg(long)]
        id: u64,
    },
    /// Show every endpoint's view of the cluster, with its release and the cluster version.
    Status,
    /// Raise the cluster version once every member runs this release (after a rolling
    /// upgrade): what the new release brought becomes usable, and the members can no longer
    /// be rolled back to the old release. Refused, naming them, while a member runs an older
    /// one.
    Upgrade,
}

fn parse_addr(s: &str) -> Result<String, String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
    Ok(s.to_string())
}

pub async fn run(ctx: &Ctx, cmd: ClusterCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        ClusterCmd::Init => {
            let s = client.admin(AdminCommand::Init).await?;
            ctx.print(&s, |s| {
                outln!(
                    "initialised a one-node cluster: node {} at {}",
                    s.id,
                    s.addr
                )
            })
        }
        ClusterCmd::Add { id, addr } => {
            let s = client.admin(AdminCommand::AddNode { id, addr }).await?;
            ctx.print(&s, |s| {
                outln!("node {id} added; voters: {:?}", s.voters());
            })
        }
        ClusterCmd::Remove { id } => {
            let s = client.admin(AdminCommand::RemoveNode { id }).await?;
            ctx.print(&s, |s| {
                outln!("node {id} removed; voters: {:?}", s.voters());
            })
        }
        ClusterCmd::Upgrade => {
            // Every member says its release first: a member of an older release could not
            // even read the request, so it is refused here, naming them.
            let first = client.node_info(0).await?;
            let cfg = ctx.client_config(std::time::Duration::from_secs(5))?;
            let mut old = Vec::new();
            for m in &first.status.members {
                let c = raft_node::Client::with_config([m.addr.as_str()], cfg.clone())?;
                match c.node_info(0).await {
                    Ok(i) if i.protocol_max >= 2 => {}
                    Ok(i) => old.push(format!(
                        "node {} runs raftipam {}",
                        m.id,
                        super::term_safe(&i.binary)
                    )),
                    Err(e) => {
                        old.push(format!("node {} at {} does not answer ({e})", m.id, m.addr))
                    }
                }
            }
            anyhow::ensure!(
                old.is_empty(),
                "the cluster version can be raised once every member runs raftipam {} or newer: {}; upgrade them (one at a time, the leader last), then run `raftipam cluster upgrade` again",
                env!("CARGO_PKG_VERSION"),
                old.join("; ")
            );
            let before = Some(first.cluster_version);
            let s = client.admin(AdminCommand::UpgradeCluster).await?;
            // The leader raised it; the node asked here shows it once it has applied it.
            let mut info = client.node_info(0).await?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while Some(info.cluster_version) == before && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                info = client.node_info(0).await?;
            }
            ctx.print(
                &serde_json::json!({"status": s, "cluster_version": info.cluster_version}),
                |_| match before {
                    Some(b) if b == info.cluster_version => {
                        outln!("the cluster is at cluster version {b} already")
                    }
                    _ => outln!("cluster version raised to {}", info.cluster_version),
                },
            )
        }
        ClusterCmd::Status => {
            let mut all: Vec<Result<NodeInfo, String>> = Vec::new();
            for i in 0..client.endpoints().len() {
                all.push(client.node_info(i).await.map_err(|e| e.to_string()));
            }
            if all.iter().all(|r| r.is_err()) {
                anyhow::bail!("no endpoint answered: {}", client.endpoints().join(", "));
            }
            let json: Vec<serde_json::Value> = all
                .iter()
                .zip(client.endpoints())
                .map(|(r, ep)| match r {
                    Ok(i) => serde_json::json!({
                        "endpoint": ep,
                        "status": i.status,
                        "version": i.binary,
                        "cluster_version": i.cluster_version,
                    }),
                    Err(e) => serde_json::json!({"endpoint": ep, "error": e}),
                })
                .collect();
            ctx.print(&json, |_| {
                outln!(
                    "{:<22} {:>4} {:<8} {:>3} {:<10} {:>5} {:>6} {:>10} {:>10} {:>10}  members",
                    "endpoint",
                    "id",
                    "version",
                    "cv",
                    "state",
                    "term",
                    "leader",
                    "last_log",
                    "committed",
                    "applied"
                );
                let o = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
                for (r, ep) in all.iter().zip(client.endpoints()) {
                    match r {
                        Ok(i) => {
                            let s = &i.status;
                            let members: Vec<String> = s
                                .members
                                .iter()
                                .map(|m| {
                                    format!(
                                        "{}{}@{}",
                                        m.id,
                                        if m.voter { "" } else { "(learner)" },
                                        m.addr
                                    )
                                })
                                .collect();
                            outln!(
                                "{:<22} {:>4} {:<8} {:>3} {:<10} {:>5} {:>6} {:>10} {:>10} {:>10}  {}",
                                ep,
                                s.id,
                                super::term_safe(&i.binary),
                                i.cluster_version,
                                s.state,
                                s.term,
                                o(s.leader),
                                o(s.last_log_index),
                                o(s.committed),
                                o(s.applied),
                                members.join(" ")
                            );
                        }
                        Err(e) => outln!("{ep:<22} unreachable: {e}"),
                    }
                }
            })
        }
    }
}

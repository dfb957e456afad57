//! `raftipam join TOKEN --host NAME`: a new Docker host gets its own host certificate from the
//! cluster, with a join token instead of copied keys (see `raft_node::tls::join`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::Ctx;

/// Get a host certificate for this Docker host with a join token.
#[derive(Args, Debug)]
pub struct JoinArgs {
    /// The token (`raftipam cert token`), RIPAM-1-...
    token: String,
    /// This Docker host's name in the cluster (the shim's --host); it must be new.
    #[arg(long)]
    host: String,
    /// Directory to write ca.pem, cert.pem and key.pem into (what --tls-dir reads); must not
    /// hold them already.
    #[arg(long, default_value = "/etc/raftipam/tls")]
    out: PathBuf,
}

pub async fn run(ctx: &Ctx, a: JoinArgs) -> anyhow::Result<()> {
    let token = raft_node::tls::join::Token::parse(&a.token)?;
    anyhow::ensure!(
        !ctx.endpoints.is_empty(),
        "no endpoints given: name the cluster's nodes with --endpoints"
    );
    for f in ["cert.pem", "key.pem"] {
        anyhow::ensure!(
            !a.out.join(f).exists(),
            "{} exists already: this host has a certificate (remove it first, or write elsewhere with --out)",
            a.out.join(f).display()
        );
    }
    let mut last = None;
    for ep in &ctx.endpoints {
        match raft_node::client::join::request(
            ep,
            &token,
            &a.host,
            ctx.timeout.min(Duration::from_secs(30)),
        )
        .await
        {
            Ok((cert, key, ca)) => {
                raft_node::tls::certs::write_dir(&a.out, &cert, &key, &ca)
                    .with_context(|| format!("writing the certificate to {}", a.out.display()))?;
                outln!(
                    "joined: host certificate for {} in {} (ca.pem, cert.pem, key.pem): start the shim with --host {} --tls-dir {}",
                    a.host,
                    a.out.display(),
                    a.host,
                    a.out.display()
                );
                return Ok(());
            }
            Err(e) => {
                let refused = e.to_string().contains("refused to issue");
                last = Some(e);
                if refused {
                    break;
                }
            }
        }
    }
    Err(last
        .map(anyhow::Error::new)
        .unwrap_or_else(|| anyhow::anyhow!("no endpoint answered")))
}

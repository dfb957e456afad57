//! `raftipam cert`: make the cluster's certificates in one place — a CA, then one certificate
//! per node, per Docker host and per operator — and show what a certificate says.
//!
//! Each `create-*` writes a directory that `--tls-dir` reads: `ca.pem`, `cert.pem`, `key.pem`
//! (mode 0600). The CA's key (`ca-key.pem`) stays where `create-ca` wrote it: keep it off
//! the nodes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use raft_node::tls::certs::{self, Leaf, CA_LIFETIME, CERT_LIFETIME};
use raft_node::tls::{identity_of, serial_of, Role};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::Serialize;

use super::Ctx;

/// Certificate commands.
#[derive(Subcommand, Debug)]
pub enum CertCmd {
    /// Make the cluster's CA: ca.pem and ca-key.pem (keep the key safe and off the nodes).
    CreateCa {
        /// Directory to write into (created if missing; existing files are never overwritten).
        #[arg(long, default_value = "raftipam-ca")]
        ca_dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = CA_LIFETIME.as_secs() / 86_400)]
        days: u64,
    },
    /// A node's certificate: may serve Raft and the API, forward calls, and act as the Docker
    /// host of its name.
    CreateNode {
        /// The node's id (names the certificate `node-ID` unless --name is given).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        id: u64,
        /// The addresses clients and nodes reach it at, HOST:PORT (one or more; the host part
        /// goes into the certificate, so TLS clients can check they reached this node).
        #[arg(long, required = true, num_args = 1..)]
        addr: Vec<String>,
        /// Its name: the Docker host name its own plugin runs as (`--host`).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        common: Issue,
    },
    /// A Docker host's certificate: may allocate, release, heartbeat and report only as NAME.
    CreateHost {
        /// The host's name in the cluster (its shim's --host).
        name: String,
        #[command(flatten)]
        common: Issue,
    },
    /// An operator's certificate: may do everything.
    CreateAdmin {
        /// The operator's name.
        #[arg(default_value = "admin")]
        name: String,
        #[command(flatten)]
        common: Issue,
    },
    /// Re-issue the certificate in --tls-dir (same role, name and addresses; a new key and
    /// expiry), replacing cert.pem and key.pem; then send the process using it SIGHUP.
    Renew {
        /// Where the CA is (ca.pem, ca-key.pem).
        #[arg(long, default_value = "raftipam-ca")]
        ca_dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = CERT_LIFETIME.as_secs() / 86_400)]
        days: u64,
    },
    /// Make a join token (needs an admin certificate in --tls-dir): a new Docker host gets its
    /// own host certificate with `raftipam join TOKEN --host NAME`, without copying keys.
    Token {
        /// How long the token is accepted.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Instead: stop accepting this token.
        #[arg(long, value_name = "TOKEN")]
        revoke: Option<String>,
        /// How many certificates the token may give (one by default). Needs cluster version 2
        /// (`raftipam cluster upgrade`).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        uses: u32,
        /// The one host name the token gives a certificate for (`raftipam join --host NAME`).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the certificates nodes gave to joins (serial, name, role, when, which token),
    /// as the cluster recorded them (cluster version 2 on).
    Ls,
    /// Revoke every certificate of NAME issued until now, in the whole cluster (`host forget`
    /// does this too); certificates issued later are accepted. Or revoke one certificate by
    /// its serial number (--serial, or --cert FILE), leaving the name's others good. Needs an
    /// admin certificate.
    Revoke {
        /// The certificate name (a host's, a node's or an operator's).
        #[arg(required_unless_present_any = ["serial", "cert"], conflicts_with_all = ["serial", "cert"])]
        name: Option<String>,
        /// The serial number of the one certificate to revoke, in hex as `cert show` prints it
        /// (colons and leading zeros are ignored).
        #[arg(long, conflicts_with = "cert")]
        serial: Option<String>,
        /// The certificate file (PEM) whose serial number to revoke.
        #[arg(long, value_name = "FILE")]
        cert: Option<PathBuf>,
    },
    /// Show the identity and validity of a certificate (default: the one in --tls-dir).
    Show {
        /// A certificate file (PEM).
        file: Option<PathBuf>,
    },
}

/// Options every `create-*` but the CA's takes.
#[derive(Args, Debug)]
pub struct Issue {
    /// Where the CA is (ca.pem, ca-key.pem).
    #[arg(long, default_value = "raftipam-ca")]
    ca_dir: PathBuf,
    /// Directory to write ca.pem, cert.pem and key.pem into (what --tls-dir reads).
    #[arg(long)]
    out: PathBuf,
    /// Validity in days.
    #[arg(long, default_value_t = CERT_LIFETIME.as_secs() / 86_400)]
    days: u64,
}

#[derive(Serialize)]
struct Shown {
    role: &'static str,
    name: String,
    serial: String,
    not_before: String,
    not_after: String,
    expired: bool,
}

fn days(d: u64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        (1..=36_500).contains(&d),
        "--days {d}: give between 1 and 36500"
    );
    Ok(Duration::from_secs(d * 86_400))
}

fn issue(
    role: Role,
    name: String,
    addrs: Vec<String>,
    node_id: Option<u64>,
    c: Issue,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        role == Role::Admin || !allocator_core::is_operator_name(&name),
        "{name:?} is an operator's name (quotas never bind it): a {} certificate may not carry it; choose another name",
        role.as_str()
    );
    let leaf = Leaf {
        role,
        name: name.clone(),
        addrs,
        lifetime: days(c.days)?,
        node_id,
    };
    certs::issue(&c.ca_dir, &leaf, &c.out)?;
    outln!(
        "wrote {} certificate for {name} to {} (ca.pem, cert.pem, key.pem): use --tls-dir {}",
        role.as_str(),
        c.out.display(),
        c.out.display()
    );
    Ok(())
}

pub async fn run(ctx: &Ctx, c: CertCmd) -> anyhow::Result<()> {
    match c {
        CertCmd::CreateCa { ca_dir, days: d } => {
            let (ca, key) = certs::create_ca(&ca_dir, days(d)?)?;
            outln!(
                "wrote the cluster CA: {} and its key {} (mode 0600; keep it off the nodes)",
                ca.display(),
                key.display()
            );
            Ok(())
        }
        CertCmd::CreateNode {
            id,
            addr,
            name,
            common,
        } => issue(
            Role::Node,
            name.unwrap_or_else(|| format!("node-{id}")),
            addr,
            Some(id),
            common,
        ),
        CertCmd::CreateHost { name, common } => issue(Role::Host, name, Vec::new(), None, common),
        CertCmd::CreateAdmin { name, common } => issue(Role::Admin, name, Vec::new(), None, common),
        CertCmd::Renew { ca_dir, days: d } => {
            let dir = ctx
                .tls_dir
                .as_ref()
                .context("name the directory to renew with --tls-dir")?;
            let leaf = certs::renew(&ca_dir, dir, days(d)?)?;
            outln!(
                "renewed the {} certificate of {} in {} for {d} days: send SIGHUP to the raftipam process using it (`systemctl reload` the unit)",
                leaf.role.as_str(),
                leaf.name,
                dir.display()
            );
            Ok(())
        }
        CertCmd::Ls => {
            let client = ctx.client()?;
            let certs = match client
                .query(
                    raft_node::api::Query::IssuedCerts,
                    raft_node::api::Consistency::Linearizable,
                )
                .await?
            {
                raft_node::api::QueryReply::IssuedCerts(c) => c,
                r => anyhow::bail!("unexpected answer to a certificates query: {r:?}"),
            };
            ctx.print(&certs, |certs| {
                if certs.is_empty() {
                    outln!("no certificate was given to a join (certificates made with `cert create-*` are not recorded)");
                    return;
                }
                outln!(
                    "{:<42} {:<24} {:<6} {:<26} TOKEN",
                    "SERIAL",
                    "NAME",
                    "ROLE",
                    "ISSUED"
                );
                for c in certs {
                    let at = std::time::UNIX_EPOCH + Duration::from_millis(c.issued_ms);
                    outln!(
                        "{:<42} {:<24} {:<6} {:<26} {}",
                        c.serial,
                        c.name,
                        c.role,
                        humantime::format_rfc3339_seconds(at).to_string(),
                        c.token
                    );
                }
            })
        }
        CertCmd::Token {
            ttl,
            revoke,
            uses,
            name,
        } => {
            let client = ctx.client()?;
            if let Some(t) = revoke {
                let token = raft_node::tls::join::Token::parse(&t)?;
                let w = client
                    .apply(allocator_core::Op::RevokeJoinToken {
                        hash: token.secret_hash(),
                    })
                    .await?;
                let existed = matches!(
                    w.outcome,
                    allocator_core::Outcome::JoinTokenRevoked { existed: true }
                );
                outln!(
                    "{}",
                    if existed {
                        "the token is no longer accepted"
                    } else {
                        "the token was not accepted anyway (unknown or expired)"
                    }
                );
                return Ok(());
            }
            let most = Duration::from_millis(allocator_core::cluster::MAX_JOIN_TOKEN_TTL_MS);
            anyhow::ensure!(
                ttl <= most,
                "--ttl {} is longer than a join token may live (7 days): give --ttl 7d or less, and make a new token when it runs out",
                humantime::format_duration(ttl)
            );
            if let Some(n) = &name {
                anyhow::ensure!(
                    !allocator_core::is_operator_name(n),
                    "{n:?} is an operator's name: a host may not carry it"
                );
            }
            let dir = ctx.tls_dir.as_ref().context(
                "a join token pins the cluster's CA: give --tls-dir with an admin certificate",
            )?;
            let ca = CertificateDer::from_pem_file(dir.join("ca.pem"))
                .with_context(|| format!("cannot read {}", dir.join("ca.pem").display()))?;
            let token = raft_node::tls::join::Token::new(&ca)?;
            let expires_ms = raft_node::now_ms().saturating_add(ttl.as_millis() as u64);
            let hash = token.secret_hash();
            client
                .apply(allocator_core::Op::AddJoinTokenFor {
                    hash,
                    expires_ms,
                    uses,
                    name: name.clone(),
                })
                .await?;
            ctx.print(
                &serde_json::json!({"token": token.to_string(), "expires_ms": expires_ms, "uses": uses, "name": name}),
                |_| {
                    outln!("{token}");
                    eprintln!(
                        "accepted for {}, {uses} certificate(s){}, by every node holding the CA key; on the new host: raftipam join {token} --host {} --endpoints {}",
                        humantime::format_duration(ttl),
                        name.as_ref().map_or(String::new(), |n| format!(" for host {n} only")),
                        name.as_deref().unwrap_or("NAME"),
                        ctx.endpoints.join(",")
                    );
                },
            )
        }
        CertCmd::Revoke {
            name: None,
            serial,
            cert,
        } => {
            let serial = match (serial, cert) {
                (Some(s), _) => allocator_core::canonical_serial(&s).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--serial {s:?} is not a serial number: give the hex digits `raftipam cert show` prints"
                    )
                })?,
                (None, Some(f)) => {
                    let der = CertificateDer::from_pem_file(&f).with_context(|| {
                        format!("cannot read a PEM certificate from {}", f.display())
                    })?;
                    serial_of(&der).ok_or_else(|| {
                        anyhow::anyhow!("{} is not an X.509 certificate", f.display())
                    })?
                }
                (None, None) => anyhow::bail!("name a certificate, or give --serial or --cert"),
            };
            let client = ctx.client()?;
            let w = client
                .apply(allocator_core::Op::RevokeSerial {
                    serial: serial.clone(),
                })
                .await?;
            let new = match w.outcome {
                allocator_core::Outcome::SerialRevoked { new } => new,
                o => anyhow::bail!("unexpected answer to a revocation: {o:?}"),
            };
            ctx.print(
                &serde_json::json!({"serial": serial, "newly_revoked": new}),
                |_| {
                    if new {
                        outln!("revoked the certificate with serial {serial}: nodes refuse it from now on");
                    } else {
                        outln!("the certificate with serial {serial} was revoked already");
                    }
                },
            )
        }
        CertCmd::Revoke {
            name: Some(name), ..
        } => {
            let client = ctx.client()?;
            let w = client
                .apply(allocator_core::Op::Revoke { name: name.clone() })
                .await?;
            let before = match w.outcome {
                allocator_core::Outcome::Revoked { before_ms } => before_ms,
                o => anyhow::bail!("unexpected answer to a revocation: {o:?}"),
            };
            ctx.print(
                &serde_json::json!({"name": name, "revoked_before_ms": before}),
                |_| {
                    outln!(
                        "revoked every certificate of {name} issued before now: nodes refuse them from now on; issue a new one with `raftipam cert create-*`"
                    )
                },
            )
        }
        CertCmd::Show { file } => {
            let file = match (file, &ctx.tls_dir) {
                (Some(f), _) => f,
                (None, Some(d)) => d.join("cert.pem"),
                (None, None) => anyhow::bail!("name a certificate file, or give --tls-dir"),
            };
            let der = CertificateDer::from_pem_file(&file).with_context(|| {
                format!("cannot read a PEM certificate from {}", file.display())
            })?;
            let id = identity_of(&der)?;
            let (_, x) = x509_parser::parse_x509_certificate(&der)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let v = x.validity();
            let shown = Shown {
                role: id.role.as_str(),
                name: id.name,
                serial: serial_of(&der).unwrap_or_else(|| x.raw_serial_as_string()),
                not_before: v.not_before.to_string(),
                not_after: v.not_after.to_string(),
                expired: !v.is_valid(),
            };
            ctx.print(&shown, |s| {
                outln!(
                    "{} {} (serial {}), valid {} to {}{}",
                    s.role,
                    super::term_safe(&s.name),
                    s.serial,
                    s.not_before,
                    s.not_after,
                    if s.expired { " — EXPIRED" } else { "" }
                )
            })
        }
    }
}

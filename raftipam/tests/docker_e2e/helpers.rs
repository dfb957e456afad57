//! What the docker end-to-end scenarios share: the cluster as the `raftipam` CLI shows it
//! ([`raftipam_json`], [`cluster_allocations`], [`cluster_addrs`], [`cluster_pools`],
//! [`raftipam_ok`]), address parsing, the veth pair guard ([`Veth`]) and one restartable
//! `raftipam up` with its shims ([`Up`]).
//!
//! Every `Up` runs over mutual TLS: one CA per test process ([`pki`]), a node certificate named
//! after the `up`'s host, a host certificate per shim, and the CLI helpers present the admin
//! certificate to the clusters an `Up` started (other clusters are plain, on loopback).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use ipnet::IpNet;
use serde_json::Value;

use crate::binary::*;

/// This test process's CA (and admin certificate), made on first use.
pub fn pki() -> &'static Path {
    static PKI: OnceLock<tempfile::TempDir> = OnceLock::new();
    PKI.get_or_init(|| {
        let d = tempfile::tempdir().expect("tempdir");
        let ca = d.path().join("ca").display().to_string();
        let admin = d.path().join("admin").display().to_string();
        raftipam_ok(&["cert", "create-ca", "--ca-dir", &ca]);
        raftipam_ok(&["cert", "create-admin", "--ca-dir", &ca, "--out", &admin]);
        d
    })
    .path()
}

/// Issues `raftipam cert KIND ARGS --out OUT` with this process's CA, unless OUT has one.
fn issue(kind: &str, args: &[&str], out: &Path) {
    if out.join("cert.pem").exists() {
        return;
    }
    let ca = pki().join("ca").display().to_string();
    let out = out.display().to_string();
    let mut a = vec!["cert", kind];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--ca-dir", &ca, "--out", &out]);
    raftipam_ok(&a);
}

/// Ports of the clusters started with TLS (an `Up`'s): the CLI helpers present the admin
/// certificate to them.
fn tls_ports() -> &'static Mutex<BTreeSet<u16>> {
    static PORTS: OnceLock<Mutex<BTreeSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(Default::default)
}

/// Runs `raftipam ARGS --endpoints 127.0.0.1:PORT --json` (with the admin certificate when
/// that cluster serves TLS) and parses stdout.
pub fn raftipam_json(port: u16, args: &[&str]) -> Value {
    let mut tls: Vec<String> = Vec::new();
    if tls_ports()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&port)
    {
        tls = vec![
            "--tls-dir".into(),
            pki().join("admin").display().to_string(),
        ];
    }
    let endpoint = format!("127.0.0.1:{port}");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--endpoints", &endpoint, "--json"]);
    all.extend(tls.iter().map(String::as_str));
    let o = run_ok(60, &all);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "raftipam {} printed no JSON ({e}): {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

/// The allocated addresses of `pool`, with their owners' hosts, as the cluster sees them.
pub fn cluster_allocations(port: u16, pool: &str) -> Vec<(IpAddr, String)> {
    let v = raftipam_json(port, &["addr", "ls", pool]);
    v.as_array()
        .expect("addr ls --json prints an array")
        .iter()
        .map(|a| {
            let addr = a["addr"]
                .as_str()
                .expect("addr")
                .parse()
                .expect("an address");
            let host = a["owner"]["host"].as_str().expect("owner.host").to_string();
            (addr, host)
        })
        .collect()
}

pub fn cluster_addrs(port: u16, pool: &str) -> BTreeSet<IpAddr> {
    cluster_allocations(port, pool)
        .into_iter()
        .map(|(a, _)| a)
        .collect()
}

/// Every pool id in the cluster.
pub fn cluster_pools(port: u16) -> Vec<String> {
    raftipam_json(port, &["pool", "ls"])
        .as_array()
        .expect("pool ls --json prints an array")
        .iter()
        .map(pool_id)
        .collect()
}

pub fn net(s: &str) -> IpNet {
    s.parse().expect("a subnet")
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

/// Runs `raftipam ARGS` (bounded), failing the test unless it succeeds.
pub fn raftipam_ok(args: &[&str]) {
    run_ok(90, args);
}

/// Runs `raftipam ARGS` under `timeout SECS`, failing the test unless it succeeds.
fn run_ok(secs: u32, args: &[&str]) -> std::process::Output {
    let o = Command::new("timeout")
        .arg(secs.to_string())
        .arg(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run raftipam");
    assert!(
        o.status.success(),
        "raftipam {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

// ---------------------------------------------------------------------------------------
// guards

/// A veth pair, deleted on drop.
pub struct Veth {
    pub a: String,
    pub b: String,
}

impl Veth {
    pub fn new(a: &str, b: &str) -> Veth {
        let _ = Command::new("ip").args(["link", "del", a]).output();
        let ok = |args: &[&str]| {
            let o = Command::new("ip").args(args).output().expect("run ip");
            assert!(
                o.status.success(),
                "ip {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr)
            );
        };
        ok(&["link", "add", a, "type", "veth", "peer", "name", b]);
        let v = Veth {
            a: a.to_string(),
            b: b.to_string(),
        };
        ok(&["link", "set", a, "up"]);
        ok(&["link", "set", b, "up"]);
        v
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.a]).output();
        let _ = Command::new("ip").args(["link", "del", &self.b]).output();
    }
}

// ---------------------------------------------------------------------------------------
// raftipam processes

/// One `raftipam up`: a one-node cluster with the plugin, restartable on the same data.
pub struct Up {
    dir: tempfile::TempDir,
    pub port: u16,
    driver: String,
    host: String,
    extra: Vec<String>,
    proc: Option<Proc>,
}

/// The port goes back to plain TCP for the CLI helpers: another test's node may be given
/// the same port number later (a stale entry here made the CLI speak TLS to a plain node,
/// which reset the connection).
impl Drop for Up {
    fn drop(&mut self) {
        tls_ports()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.port);
    }
}

impl Up {
    pub fn start(driver: &str, host: &str) -> Up {
        Up::start_with(driver, host, &[])
    }

    /// Like [`Up::start`], with more command-line arguments for `up`.
    pub fn start_with(driver: &str, host: &str, extra: &[&str]) -> Up {
        let mut up = Up {
            dir: tempfile::tempdir().expect("tempdir"),
            port: free_port(),
            driver: driver.to_string(),
            host: host.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            proc: None,
        };
        issue(
            "create-node",
            &["--id", "1", "--name", host, "--addr", &up.endpoint()],
            &up.tls(),
        );
        tls_ports()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(up.port);
        up.restart();
        up
    }

    /// Its node certificate (named after its host).
    fn tls(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts `up` (again) on the same data dir, port and socket; waits for the ready line.
    pub fn restart(&mut self) {
        drop(self.proc.take());
        let socket = socket_path(&self.driver);
        let args = vec![
            "up".to_string(),
            "--data-dir".into(),
            self.dir.path().join("data").display().to_string(),
            "--listen".into(),
            self.endpoint(),
            "--socket".into(),
            socket.display().to_string(),
            "--host".into(),
            self.host.clone(),
            "--tls-dir".into(),
            self.tls().display().to_string(),
        ];
        let args: Vec<String> = args.into_iter().chain(self.extra.clone()).collect();
        let mut p = spawn(self.dir.path(), &args);
        p.wait_started("raftipam is ready:", &socket);
        assert!(
            p.log_text().contains(&format!(
                "docker network create --ipam-driver {} --subnet",
                self.driver
            )),
            "the ready line names the driver:\n{}",
            p.log_text()
        );
        self.proc = Some(p);
    }

    pub fn proc(&mut self) -> &mut Proc {
        self.proc.as_mut().expect("up is running")
    }

    /// A `raftipam shim` for another host on this cluster.
    pub fn shim(&self, driver: &str, host: &str) -> Proc {
        let socket = socket_path(driver);
        let certs = self.dir.path().join(format!("tls-{host}"));
        issue("create-host", &[host], &certs);
        let args = vec![
            "shim".to_string(),
            "--endpoints".into(),
            self.endpoint(),
            "--socket".into(),
            socket.display().to_string(),
            "--host".into(),
            host.into(),
            "--tls-dir".into(),
            certs.display().to_string(),
        ];
        let mut p = spawn(self.dir.path(), &args);
        p.wait_started("raftipam shim for host", &socket);
        p
    }
}

//! Operations end to end, against a real dockerd: leaks found by `check` and repaired by the
//! shim's reconciliation, an address released and handed out again between two passes left
//! alone, `host forget`, and backup/restore into a fresh cluster.
//!
//! Each test runs its own cluster (`raftipam node` + `cluster init` on a free port) and its own
//! shims, with driver names, networks, containers and subnets of its own (prefix `ops`,
//! subnets 10.151–10.159), so these tests run in parallel with each other and with
//! `docker_e2e`. Cleanup is done by Drop guards; every wait is bounded. When no Docker
//! daemon answers, each test prints a loud SKIP and returns.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::binary::*;

// ---------------------------------------------------------------------------------------
// raftipam processes

/// A one-node cluster (`raftipam node` + `cluster init`) and the shims started on it.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    metrics: u16,
    node: Option<Proc>,
}

/// How a shim reconciles and beats.
#[derive(Clone, Copy)]
struct ShimTiming {
    interval: &'static str,
    grace: &'static str,
    heartbeat: &'static str,
}

const SLOW: ShimTiming = ShimTiming {
    interval: "1h",
    grace: "1h",
    heartbeat: "1s",
};

impl Cluster {
    /// One node serving over mutual TLS: certificates made with `raftipam cert` in the test's
    /// directory; the CLI acts as an admin, each shim with a host certificate of its name.
    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let metrics = free_port();
        let addr = format!("127.0.0.1:{port}");
        let (node_certs, _) = node_and_admin_certs(dir.path(), &addr);
        let args: Vec<String> = [
            "node",
            "--id",
            "1",
            "--listen",
            &addr,
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--metrics",
            &format!("127.0.0.1:{metrics}"),
            "--tls-dir",
            &node_certs,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut node = spawn(dir.path(), &args);
        node.wait_for("serving on", None);
        let c = Cluster {
            dir,
            port,
            metrics,
            node: Some(node),
        };
        c.cli_ok(&["cluster", "init"]);
        c
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The admin's certificates (what the CLI uses).
    fn admin_tls(&self) -> String {
        self.dir.path().join("tls-admin").display().to_string()
    }

    /// A host certificate for `host` (made on first use).
    fn host_tls(&self, host: &str) -> String {
        let out = self.dir.path().join(format!("tls-host-{host}"));
        if !out.join("cert.pem").exists() {
            let ca = self.dir.path().join("ca").display().to_string();
            cert(&[
                "create-host",
                host,
                "--ca-dir",
                &ca,
                "--out",
                &out.display().to_string(),
            ]);
        }
        out.display().to_string()
    }

    /// `raftipam ARGS --endpoints THIS`, bounded.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("60")
            .arg(BIN)
            .args(args)
            .args([
                "--endpoints",
                &self.endpoint(),
                "--tls-dir",
                &self.admin_tls(),
            ])
            .env_remove("RAFTIPAM_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run raftipam")
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        stdout_ok(&format!("raftipam {}", args.join(" ")), &self.cli(args))
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.cli_ok(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("raftipam {} printed no JSON ({e}): {out}", args.join(" ")))
    }

    /// Every allocation as (address, host, endpoint, seq).
    fn allocations(&self) -> Vec<(IpAddr, String, String, u64)> {
        let mut out = Vec::new();
        for p in self.json(&["pool", "ls"]).as_array().expect("pools").iter() {
            let id = pool_id(p);
            for a in self
                .json(&["addr", "ls", &id])
                .as_array()
                .expect("allocations")
            {
                out.push((
                    a["addr"].as_str().expect("addr").parse().expect("address"),
                    a["owner"]["host"].as_str().expect("host").to_string(),
                    a["owner"]["endpoint"]
                        .as_str()
                        .expect("endpoint")
                        .to_string(),
                    a["seq"].as_u64().expect("seq"),
                ));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn holds(&self, addr: IpAddr) -> Option<(String, String, u64)> {
        self.allocations()
            .into_iter()
            .find(|a| a.0 == addr)
            .map(|a| (a.1, a.2, a.3))
    }

    /// `raftipam check --host HOST --driver DRIVER EXTRA`.
    fn check(&self, host: &str, driver: &str, extra: &[&str]) -> Output {
        let mut a = vec!["check", "--host", host, "--driver", driver];
        a.extend_from_slice(extra);
        self.cli(&a)
    }

    /// The pool over `subnet`.
    fn pool_of(&self, subnet: &str) -> String {
        self.json(&["pool", "ls"])
            .as_array()
            .expect("pools")
            .iter()
            .map(pool_id)
            .find(|id| id.contains(subnet))
            .unwrap_or_else(|| panic!("no pool over {subnet}"))
    }

    /// A `raftipam shim` for `host` serving `driver`.
    fn shim(&self, driver: &str, host: &str, t: ShimTiming) -> Proc {
        self.shim_with(driver, host, t, &[])
    }

    /// Like [`Cluster::shim`], with more arguments.
    fn shim_with(&self, driver: &str, host: &str, t: ShimTiming, extra: &[&str]) -> Proc {
        let socket = socket_path(driver);
        let args: Vec<String> = [
            "shim",
            "--endpoints",
            &self.endpoint(),
            "--socket",
            &socket.display().to_string(),
            "--host",
            host,
            "--tls-dir",
            &self.host_tls(host),
            "--reconcile-interval",
            t.interval,
            "--reconcile-grace",
            t.grace,
            "--heartbeat-interval",
            t.heartbeat,
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        let mut p = spawn(self.dir.path(), &args);
        p.wait_started("raftipam shim for host", &socket);
        p
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        drop(self.node.take());
    }
}

/// `GET /metrics` at 127.0.0.1:`port` (with curl, bounded).
fn metrics(port: u16) -> String {
    let o = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            &format!("http://127.0.0.1:{port}/metrics"),
        ])
        .output()
        .expect("run curl");
    assert!(
        o.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Waits (bounded) until `f` holds.
fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ---------------------------------------------------------------------------------------
// the tests

/// A container removed while its host's shim is stopped leaks its address (dockerd cannot
/// tell the plugin). `check` finds it (exit status 1, the address under "leaked"), the
/// container still running is not reported; the restarted shim's reconciliation releases
/// the leak after the grace period (and only it), logs the release, and `check` is clean.
#[test]
fn a_leak_made_while_the_shim_was_stopped_is_found_and_repaired_after_the_grace() {
    require_docker!("a_leak_made_while_the_shim_was_stopped_is_found_and_repaired_after_the_grace");
    let cluster = Cluster::start();
    let (driver, host) = ("opsleak", "ops-leak-host");
    let mut shim = cluster.shim(driver, host, SLOW);
    let mut d = Docker::new("opsleak-");
    let net = d.network(
        "net",
        &["--ipam-driver", driver, "--subnet", "10.151.0.0/24"],
    );
    let keep = d.run_ok("keep", &net, &[]);
    let gone = d.run_ok("gone", &net, &[]);
    let keep_ip = ip_of(&keep, &net);
    let gone_ip = ip_of(&gone, &net);
    let check = || cluster.check(host, driver, &["--json"]);
    let o = check();
    assert!(
        o.status.success(),
        "check on a healthy host: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    // The leak: the shim stops, the container goes.
    shim.stop();
    d.rm(&gone);
    assert_eq!(
        cluster.holds(gone_ip).map(|h| h.0),
        Some(host.to_string()),
        "the removed container's address is still allocated (leaked)"
    );

    let o = check();
    assert_eq!(o.status.code(), Some(1), "check exits 1 on a leak");
    let report: Value = serde_json::from_slice(&o.stdout).expect("check --json");
    let leaked: Vec<String> = report["leaked"]
        .as_array()
        .expect("leaked")
        .iter()
        .map(|l| l["allocation"]["addr"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(leaked, vec![gone_ip.to_string()], "{report}");
    assert_eq!(
        report["missing"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    assert_eq!(
        report["held_twice"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    // Human output names it too.
    let o = cluster.check(host, driver, &[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(&format!("leaked   {gone_ip}")), "{text}");

    // The shim comes back with a short grace: the leak goes after it, not before.
    let started = Instant::now();
    let shim_metrics = free_port();
    let shim = cluster.shim_with(
        driver,
        host,
        ShimTiming {
            interval: "1s",
            grace: "4s",
            heartbeat: "1s",
        },
        &["--metrics", &format!("127.0.0.1:{shim_metrics}")],
    );
    wait_until("the leak is released", Duration::from_secs(60), || {
        cluster.holds(gone_ip).is_none()
    });
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "released after {:?}, before the 4s grace",
        started.elapsed()
    );
    assert!(
        shim.log_text().contains("released leaked address"),
        "{}",
        shim.log_text()
    );
    let m = metrics(shim_metrics);
    assert!(m.contains("raftipam_leaked_repaired_total 1"), "{m}");
    assert!(m.contains("raftipam_leaked_found_total 1"), "{m}");
    assert!(!m.contains("raftipam_reconcile_passes_total 0"), "{m}");
    assert_eq!(
        cluster.holds(keep_ip).map(|h| h.0),
        Some(host.to_string()),
        "the running container keeps its address"
    );
    let o = check();
    assert!(
        o.status.success(),
        "check after the repair: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Usage that tells the truth across hosts. A pool filled up, one of its addresses leaked
/// while the shim was stopped (grace far away, so nothing is released by itself): the shim's
/// next pass reports the leak into the cluster; `host ls` counts it; `check` run as another
/// host (which cannot see this dockerd) lists it from the report and exits 1; dockerd's
/// "pool full" error says that 1 address is leaked and where to repair it. After the repair on
/// the leaking host the address is used again, and the next "pool full" says no host
/// reported leaks.
#[test]
fn a_full_pool_says_which_hosts_leak_and_check_speaks_for_every_host() {
    require_docker!("a_full_pool_says_which_hosts_leak_and_check_speaks_for_every_host");
    let cluster = Cluster::start();
    let (driver, host) = ("opsfull", "ops-full-a");
    let quick = ShimTiming {
        interval: "1s",
        grace: "1h",
        heartbeat: "1s",
    };
    let mut shim = cluster.shim(driver, host, quick);
    let mut d = Docker::new("opsfull-");
    // .0 network, .1 gateway, .7 broadcast: five addresses for containers.
    let net = d.network(
        "net",
        &["--ipam-driver", driver, "--subnet", "10.158.0.0/29"],
    );
    let mut names = Vec::new();
    for i in 0..5 {
        names.push(d.run_ok(&format!("c{i}"), &net, &[]));
    }
    let gone_ip = ip_of(&names[0], &net);
    let leaked_of = |c: &Cluster| {
        c.json(&["host", "ls"])
            .as_array()
            .expect("hosts")
            .iter()
            .find(|h| h["name"] == host)
            .map(|h| h["leaked"].clone())
    };
    // A pass that ran while a container was being created may have reported its fresh
    // address as a leak (grace keeps it from being released): wait for a report with every
    // container up, so that the leak reported below can only be the one made next.
    wait_until(
        "a report without leaks, every container up",
        Duration::from_secs(60),
        || leaked_of(&cluster) == Some(serde_json::json!(0)),
    );
    shim.stop();
    d.rm(&names[0]);
    drop(shim);
    let _shim = cluster.shim(driver, host, quick);
    // The leak reported is the removed container's address (a report of the new shim's).
    let reported = |c: &Cluster| -> Vec<String> {
        let o = c.cli(&["check", "--from-reports", "--json"]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        v["others"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["host"] == host)
            .flat_map(|o| o["leaked"].as_array().cloned().unwrap_or_default())
            .filter_map(|l| l["allocation"]["addr"].as_str().map(str::to_string))
            .collect()
    };
    wait_until("the shim reports the leak", Duration::from_secs(60), || {
        leaked_of(&cluster) == Some(serde_json::json!(1))
            && reported(&cluster) == vec![gone_ip.to_string()]
    });
    let text = cluster.cli_ok(&["host", "ls"]);
    assert!(text.contains("LEAKED"), "{text}");
    let m = metrics(cluster.metrics);
    assert!(
        m.contains(&format!(
            "raftipam_host_leaked_addresses{{host=\"{host}\"}} 1"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "raftipam_host_report_age_seconds{{host=\"{host}\"}}"
        )),
        "{m}"
    );

    // `check` on another host: this host's part comes from its report.
    let o = cluster.check("ops-full-b", "opsnone", &["--json"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).expect("check --json");
    let others = v["others"].as_array().expect("others");
    let a = others
        .iter()
        .find(|o| o["host"] == host)
        .expect("host a in others");
    assert_eq!(a["status"], "reported", "{v}");
    let leaked: Vec<&str> = a["leaked"]
        .as_array()
        .expect("leaked")
        .iter()
        .filter_map(|l| l["allocation"]["addr"].as_str())
        .collect();
    assert_eq!(leaked, vec![gone_ip.to_string().as_str()], "{v}");
    assert_eq!(v["ok"], false, "{v}");
    // From reports alone (no dockerd asked): the same finding.
    let o = cluster.cli(&["check", "--from-reports", "--json"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).expect("check --from-reports --json");
    assert!(v.get("leaked").is_none(), "no live part: {v}");
    let a = v["others"]
        .as_array()
        .expect("others")
        .iter()
        .find(|o| o["host"] == host)
        .expect("host a listed")
        .clone();
    assert_eq!(
        a["leaked"][0]["allocation"]["addr"],
        gone_ip.to_string(),
        "{v}"
    );
    // `--local` looks at the checking host only: clean.
    let o = cluster.check("ops-full-b", "opsnone", &["--local"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));

    // dockerd's error for a container the full pool cannot take names the leak.
    let o = d.run("c5", &net, &[]);
    assert!(!o.status.success(), "the pool should be full");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is full"), "{err}");
    assert!(err.contains("1 of its addresses are leaked"), "{err}");
    assert!(err.contains(&format!("{host} (1)")), "{err}");
    assert!(
        err.contains(&format!("`raftipam check --repair` on {host}")),
        "{err}"
    );

    // Repaired on the leaking host: the address serves again; the next refusal finds no leak.
    stdout_ok(
        "check --repair",
        &cluster.check(host, driver, &["--repair", "--min-age", "0s"]),
    );
    let _ = docker(&["rm", "-f", &d.name("c5")]);
    d.run_ok("c6", &net, &[]);
    let o = d.run("c7", &net, &[]);
    assert!(!o.status.success(), "the pool should be full again");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no host reported leaks"), "{err}");
    let o = cluster.check("ops-full-b", "opsnone", &[]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `check --repair` releases a leak at once (after saying what it will do), and claims for the
/// host an endpoint address the cluster holds for nobody.
#[test]
fn check_repair_releases_leaks_and_claims_missing_addresses() {
    require_docker!("check_repair_releases_leaks_and_claims_missing_addresses");
    let cluster = Cluster::start();
    let (driver, host) = ("opsrepair", "ops-repair-host");
    let _shim = cluster.shim(driver, host, SLOW);
    let mut d = Docker::new("opsrepair-");
    let net = d.network(
        "net",
        &["--ipam-driver", driver, "--subnet", "10.152.0.0/24"],
    );
    let c = d.run_ok("c", &net, &[]);
    let c_ip = ip_of(&c, &net);
    let pool = cluster.pool_of("10.152.0.0");
    // A leak (allocated to this host, no endpoint) and a missing one (the cluster forgets c's).
    cluster.cli_ok(&[
        "addr",
        "alloc",
        &pool,
        "--ip",
        "10.152.0.200",
        "--owner",
        &format!("{host}/ghost"),
    ]);
    cluster.cli_ok(&["addr", "release", &pool, &c_ip.to_string(), "--force"]);
    let o = cluster.check(host, driver, &[]);
    assert_eq!(o.status.code(), Some(1));
    let o = cluster.check(host, driver, &["--repair", "--min-age", "0s"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(text.contains("will release 10.152.0.200"), "{text}");
    assert!(text.contains(&format!("will claim {c_ip}")), "{text}");
    assert!(cluster.holds("10.152.0.200".parse().unwrap()).is_none());
    assert_eq!(
        cluster.holds(c_ip),
        cluster.holds(c_ip).filter(|h| h.0 == host && h.1 == c)
    );
    assert!(cluster.holds(c_ip).is_some());
    let o = cluster.check(host, driver, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

/// Reconciliation passes driven by hand (the pass takes its time as an argument): an address
/// seen leaked, then released and handed out again (a new sequence number) before the grace
/// ran out, is not freed at the next pass after the grace; the new allocation is freed only
/// after it, too, was leaked for the whole grace. And a release with a stale sequence number
/// is a no-op.
#[test]
fn an_address_released_and_reallocated_between_passes_is_not_freed() {
    require_docker!("an_address_released_and_reallocated_between_passes_is_not_freed");
    let cluster = Cluster::start();
    let (driver, host) = ("opsreuse", "ops-reuse-host");
    let _shim = cluster.shim(driver, host, SLOW);
    let mut d = Docker::new("opsreuse-");
    let net = d.network(
        "net",
        &["--ipam-driver", driver, "--subnet", "10.153.0.0/24"],
    );
    let keep = d.run_ok("keep", &net, &[]);
    let keep_ip = ip_of(&keep, &net);
    let pool = cluster.pool_of("10.153.0.0");
    let x: IpAddr = "10.153.0.100".parse().unwrap();
    let owner = format!("{host}/ghost");
    cluster.cli_ok(&[
        "addr",
        "alloc",
        &pool,
        "--ip",
        "10.153.0.100",
        "--owner",
        &owner,
    ]);
    let seq1 = cluster.holds(x).expect("allocated").2;

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        use plugin_shim::agent::reconcile::{ReconcileConfig, Reconciler};
        let tls = raft_node::tls::Tls::load(Path::new(&cluster.host_tls(host))).expect("tls");
        let cfg = raft_node::ClientConfig {
            tls: Some(tls),
            ..Default::default()
        };
        let client = raft_node::Client::with_config([cluster.endpoint()], cfg).expect("client");
        let grace = Duration::from_secs(600);
        let mut r = Reconciler::new(
            client.clone(),
            plugin_shim::agent::Docker::new("/var/run/docker.sock"),
            ReconcileConfig {
                host: host.to_string(),
                driver: driver.to_string(),
                interval: Duration::from_secs(60),
                grace,
            },
        );
        let t0 = Instant::now();
        let p = r.pass(t0).await.expect("pass 1");
        assert_eq!((p.leaked, p.released), (1, 0));

        // Released and handed out again (still no endpoint: still a leak, but a new one).
        cluster.cli_ok(&["addr", "release", &pool, "10.153.0.100", "--force"]);
        cluster.cli_ok(&[
            "addr",
            "alloc",
            &pool,
            "--ip",
            "10.153.0.100",
            "--owner",
            &owner,
        ]);
        let seq2 = cluster.holds(x).expect("allocated again").2;
        assert_ne!(seq1, seq2);

        let t1 = t0 + grace + Duration::from_secs(1);
        let p = r.pass(t1).await.expect("pass 2");
        assert_eq!(
            (p.leaked, p.released),
            (1, 0),
            "the new allocation is not freed"
        );
        assert_eq!(cluster.holds(x).map(|h| h.2), Some(seq2));

        // A release naming the old sequence number does nothing.
        let stale = plugin_shim::agent::compare::Leak {
            pool: pool.parse().expect("pool id"),
            allocation: allocator_core::Allocation {
                addr: x,
                owner: allocator_core::Owner::new(host, "ghost"),
                seq: seq1,
                at_s: 0,
            },
        };
        let released = plugin_shim::agent::reconcile::release_leak(&client, host, &stale)
            .await
            .expect("release if unchanged");
        assert!(!released);
        assert_eq!(cluster.holds(x).map(|h| h.2), Some(seq2));

        // Leaked for the whole grace since it was first seen: now it goes.
        let p = r.pass(t1 + grace).await.expect("pass 3");
        assert_eq!((p.leaked, p.released), (1, 1));
        assert!(cluster.holds(x).is_none());
        let p = r.pass(t1 + grace * 2).await.expect("pass 4");
        assert_eq!((p.leaked, p.released), (0, 0));
    });
    assert!(
        cluster.holds(keep_ip).is_some(),
        "the running container keeps its address"
    );
}

/// `host forget` refuses while a host's heartbeat is fresh (and without --yes off a
/// terminal); for a host whose shim is gone it releases every address, reservation share and
/// pool hold it had, and `host ls` no longer lists it.
#[test]
fn host_forget_releases_a_dead_hosts_holdings_and_refuses_a_live_one() {
    require_docker!("host_forget_releases_a_dead_hosts_holdings_and_refuses_a_live_one");
    let cluster = Cluster::start();
    let live = cluster.shim("opsfgtlive", "ops-live", SLOW);
    let dead = cluster.shim("opsfgtdead", "ops-dead", SLOW);
    let mut d = Docker::new("opsfgt-");
    let live_net = d.network(
        "live",
        &["--ipam-driver", "opsfgtlive", "--subnet", "10.154.0.0/24"],
    );
    let dead_net = d.network(
        "dead",
        &["--ipam-driver", "opsfgtdead", "--subnet", "10.155.0.0/24"],
    );
    let l = d.run_ok("l", &live_net, &[]);
    let a = d.run_ok("a", &dead_net, &[]);
    let b = d.run_ok("b", &dead_net, &[]);
    let l_ip = ip_of(&l, &live_net);
    let (a_ip, b_ip) = (ip_of(&a, &dead_net), ip_of(&b, &dead_net));

    let hosts = cluster.json(&["host", "ls"]);
    let find = |hosts: &Value, name: &str| -> Option<Value> {
        hosts
            .as_array()
            .expect("hosts")
            .iter()
            .find(|h| h["name"] == name)
            .cloned()
    };
    let dh = find(&hosts, "ops-dead").expect("the dead host is listed");
    assert_eq!(dh["allocations"], 2, "{dh}");
    assert!(dh["pools"].as_u64().unwrap_or(0) >= 1, "{dh}");
    assert!(
        dh["reservations"].as_u64().unwrap_or(0) >= 1,
        "the gateway: {dh}"
    );
    assert_eq!(dh["version"], env!("CARGO_PKG_VERSION"));
    assert!(dh["last_seen_age_s"].as_u64().is_some(), "{dh}");
    let text = cluster.cli_ok(&["host", "ls"]);
    assert!(text.contains("ops-dead") && text.contains("ago"), "{text}");
    let m = metrics(cluster.metrics);
    assert!(
        m.contains("raftipam_host_last_seen_age_seconds{host=\"ops-dead\"}"),
        "{m}"
    );
    assert!(m.contains("raftipam_hosts 2"), "{m}");

    // Live: refused (fresh heartbeat), whatever --yes says.
    let o = cluster.cli(&["host", "forget", "ops-live", "--yes"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("looks alive") && err.contains("--force"),
        "{err}"
    );
    // Unknown host: refused, naming it.
    let o = cluster.cli(&["host", "forget", "ops-nobody", "--yes"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("ops-nobody"));

    // Dead: its shim stops; once its heartbeat is older than --fresh, forget works.
    drop(dead);
    std::thread::sleep(Duration::from_secs(3));
    let o = cluster.cli(&["host", "forget", "ops-dead", "--fresh", "2s"]);
    assert!(!o.status.success(), "no --yes and no terminal: refused");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--yes"));
    assert!(cluster.holds(a_ip).is_some());
    let out = cluster.json(&["host", "forget", "ops-dead", "--yes", "--fresh", "2s"]);
    assert_eq!(out["allocations"], 2, "{out}");
    assert!(out["pools"].as_u64().unwrap_or(0) >= 1, "{out}");
    assert!(cluster.holds(a_ip).is_none() && cluster.holds(b_ip).is_none());
    assert!(find(&cluster.json(&["host", "ls"]), "ops-dead").is_none());
    // The live host is untouched.
    assert_eq!(
        cluster.holds(l_ip).map(|h| h.0),
        Some("ops-live".to_string())
    );
    assert!(find(&cluster.json(&["host", "ls"]), "ops-live").is_some());
    drop(live);
}

/// `backup` then `restore` into a fresh cluster: exactly the same state — a backup of the
/// restored cluster is byte for byte the first backup (pools, holders, reserve ranges,
/// settings, reservations, allocations with their sequence numbers, a cooling address, serial
/// cursors, heartbeats). A restore into a cluster that holds anything is refused; a damaged
/// file too, and nothing changes.
#[test]
fn backup_then_restore_into_a_fresh_cluster_gives_the_same_state() {
    require_docker!("backup_then_restore_into_a_fresh_cluster_gives_the_same_state");
    let a = Cluster::start();
    let _shim = a.shim("opsbackup", "ops-backup-host", SLOW);
    let mut d = Docker::new("opsbackup-");
    let net = d.network(
        "net",
        &["--ipam-driver", "opsbackup", "--subnet", "10.156.0.0/24"],
    );
    for i in 0..3 {
        d.run_ok(&format!("c{i}"), &net, &[]);
    }
    a.cli_ok(&[
        "pool",
        "create",
        "10.157.0.0/16",
        "--range",
        "10.157.1.0/24",
        "--gateway",
        "10.157.0.1",
        "--reserve",
        "10.157.1.1-10.157.1.9",
        "--serial",
        "--cooldown",
        "1m",
        "--holder",
        "ops-cli",
    ]);
    a.cli_ok(&["addr", "alloc", "10.157.0.0/16", "--owner", "ops-other/web"]);
    a.cli_ok(&[
        "addr",
        "alloc",
        "10.157.0.0/16",
        "--ip",
        "10.157.3.3",
        "--owner",
        "ops-other/db",
    ]);
    // An address released in the pool with a cooldown: cooling, and must stay so.
    a.cli_ok(&[
        "addr",
        "alloc",
        "10.157.0.0/16",
        "--ip",
        "10.157.1.77",
        "--owner",
        "ops-other/tmp",
    ]);
    a.cli_ok(&[
        "addr",
        "release",
        "10.157.0.0/16",
        "10.157.1.77",
        "--host",
        "ops-other",
    ]);
    // Usage that tells the truth: size, reserved, allocated, cooling, free, and who holds what.
    let show = a.json(&["pool", "show", "10.157.0.0/16"]);
    assert_eq!(show["allocated_by_host"]["ops-other"], 2, "{show}");
    assert_eq!(show["holders"]["ops-cli"], 1, "{show}");
    let u = &show["usage"];
    assert_eq!(u["size"], 256, "{show}");
    assert_eq!(u["reserved"], 9, "the reserve range: {show}");
    assert_eq!(u["allocated"], 1, "in the range: {show}");
    assert_eq!(u["cooling"], 1, "{show}");
    assert_eq!(u["free"], 245, "{show}");
    let text = a.cli_ok(&["pool", "show", "10.157.0.0/16"]);
    assert!(
        text.contains("allocated by host (whole subnet): ops-other: 2"),
        "{text}"
    );
    assert!(text.contains("holders: ops-cli(1)"), "{text}");
    let file = a.dir.path().join("backup.raftipam");
    let out = a.json(&["backup", &file.display().to_string()]);
    assert_eq!(out["allocations"], 5, "{out}");

    let b = Cluster::start();
    let out = b.json(&["restore", &file.display().to_string()]);
    assert_eq!(out["pools"], 2, "{out}");
    let again = b.dir.path().join("again.raftipam");
    b.json(&["backup", &again.display().to_string()]);
    assert!(
        std::fs::read(&file).expect("backup") == std::fs::read(&again).expect("second backup"),
        "the restored cluster's backup differs from the backup it was restored from"
    );
    let who = b.json(&["addr", "who-has", "10.157.1.77"]);
    assert!(who.to_string().contains("ooling"), "{who}");

    let strip_hosts = |v: Value| -> Vec<Value> {
        v.as_array()
            .expect("hosts")
            .iter()
            .map(|h| {
                serde_json::json!([h["name"], h["allocations"], h["reservations"], h["pools"]])
            })
            .collect()
    };
    assert_eq!(a.json(&["pool", "ls"]), b.json(&["pool", "ls"]));
    let owners = |c: &Cluster| -> Vec<(IpAddr, String, String)> {
        c.allocations()
            .into_iter()
            .map(|(a, h, e, _)| (a, h, e))
            .collect()
    };
    assert_eq!(owners(&a), owners(&b));
    assert_eq!(owners(&b).len(), 5);
    assert_eq!(
        a.allocations(),
        b.allocations(),
        "the same sequence numbers"
    );
    assert_eq!(
        strip_hosts(a.json(&["host", "ls"])),
        strip_hosts(b.json(&["host", "ls"]))
    );

    // Into a cluster with pools: refused. A damaged file: refused, nothing changed.
    let o = b.cli(&["restore", &file.display().to_string()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("empty cluster"));
    let c = Cluster::start();
    let bad = a.dir.path().join("bad.raftipam");
    let mut bytes = std::fs::read(&file).expect("backup");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&bad, bytes).expect("write");
    let o = c.cli(&["restore", &bad.display().to_string()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("damaged"));
    assert_eq!(c.json(&["pool", "ls"]), serde_json::json!([]));
}

/// `--config`: the file's settings apply, flags override them, unknown keys are refused
/// naming the file; `version` and `completions` work. (No dockerd needed.)
#[test]
fn config_file_version_and_completions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let file = dir.path().join("raftipam.toml");
    std::fs::write(
        &file,
        format!("endpoints = [\"127.0.0.1:{port}\"]\ntimeout = \"2s\"\n[check]\nhost = \"h\"\n"),
    )
    .expect("write config");
    let run = |args: &[&str]| {
        Command::new("timeout")
            .arg("60")
            .arg(BIN)
            .args(args)
            .env_remove("RAFTIPAM_ENDPOINTS")
            .env_remove("RAFTIPAM_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run raftipam")
    };
    let cfg = file.display().to_string();
    let o = run(&["--config", &cfg, "check"]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success());
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("within 2s"),
        "{err}"
    );
    let o = run(&["--config", &cfg, "check", "--timeout", "1s"]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        err.contains("within 1s"),
        "the flag overrides the file: {err}"
    );
    std::fs::write(&file, "[check]\nbogus = 1\n").expect("write config");
    let o = run(&["--config", &cfg, "check"]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains("bogus") && err.contains(&cfg), "{err}");
    assert_eq!(
        o.status.code(),
        Some(2),
        "a config error is a usage error: {err}"
    );

    let o = run(&["version"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(env!("CARGO_PKG_VERSION")));
    let o = run(&["completions", "bash"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("raftipam"));
}

/// `up` and `node --plugin-socket` send heartbeats too (`host ls` lists their hosts with the
/// version), and their reconciliation starts. (No dockerd needed: the plugin sockets are in a
/// temporary directory.)
#[test]
fn up_and_node_with_a_plugin_send_heartbeats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (up_port, node_port) = (free_port(), free_port());
    let up_args: Vec<String> = [
        "up",
        "--data-dir",
        &dir.path().join("up").display().to_string(),
        "--listen",
        &format!("127.0.0.1:{up_port}"),
        "--socket",
        &dir.path().join("opsup.sock").display().to_string(),
        "--host",
        "ops-up-host",
        "--heartbeat-interval",
        "1s",
        "--reconcile-interval",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut up = spawn(dir.path(), &up_args);
    up.wait_for("raftipam is ready:", None);
    let node_args: Vec<String> = [
        "node",
        "--id",
        "1",
        "--listen",
        &format!("127.0.0.1:{node_port}"),
        "--data-dir",
        &dir.path().join("node").display().to_string(),
        "--plugin-socket",
        &dir.path().join("opsnode.sock").display().to_string(),
        "--host",
        "ops-node-host",
        "--heartbeat-interval",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut node = spawn(dir.path(), &node_args);
    node.wait_for("raftipam plugin for host ops-node-host", None);
    let cli = |port: u16, args: &[&str]| -> Value {
        let o = Command::new("timeout")
            .arg("60")
            .arg(BIN)
            .args(args)
            .args(["--endpoints", &format!("127.0.0.1:{port}"), "--json"])
            .env_remove("RAFTIPAM_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run raftipam");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).expect("JSON")
    };
    cli(node_port, &["cluster", "init"]);
    for (port, host) in [(up_port, "ops-up-host"), (node_port, "ops-node-host")] {
        wait_until(
            &format!("{host} is listed"),
            Duration::from_secs(30),
            || {
                cli(port, &["host", "ls"]).as_array().is_some_and(|hs| {
                    hs.iter()
                        .any(|h| h["name"] == host && h["version"] == env!("CARGO_PKG_VERSION"))
                })
            },
        );
    }
    up.wait_for("reconciling leaked addresses of host ops-up-host", None);
    node.wait_for("reconciling leaked addresses of host ops-node-host", None);
}

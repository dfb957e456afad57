//! End-to-end tests against a real dockerd: the `raftipam` binary (`up` and `shim`) as child
//! processes serving the IPAM plugin socket, and the `docker` CLI creating networks and
//! running containers on it.
//!
//! `scripts/test.sh` starts containerd and dockerd and builds the `raftipam-busybox` image
//! (`scripts/dockerd.sh`). When no Docker daemon answers, each test prints a loud SKIP and
//! returns; that is the only skip.
//!
//! Every test has its own cluster (data dir, port), its own driver names (the socket's base
//! name), networks, subnets and container names, so tests run in parallel. Cleanup (containers,
//! networks, veth pairs, child processes) is done by Drop guards, so it happens on failure too.
//! Every wait is bounded. Containers only `sleep`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde_json::Value;

#[macro_use]
mod support;
use support::*;

/// Runs `raftipam ARGS --endpoints 127.0.0.1:PORT --json` and parses stdout.
fn raftipam_json(port: u16, args: &[&str]) -> Value {
    let o = Command::new("timeout")
        .arg("60")
        .arg(BIN)
        .args(args)
        .args(["--endpoints", &format!("127.0.0.1:{port}"), "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("run raftipam");
    assert!(
        o.status.success(),
        "raftipam {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "raftipam {} printed no JSON ({e}): {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

/// The allocated addresses of `pool`, with their owners' hosts, as the cluster sees them.
fn cluster_allocations(port: u16, pool: &str) -> Vec<(IpAddr, String)> {
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

fn cluster_addrs(port: u16, pool: &str) -> BTreeSet<IpAddr> {
    cluster_allocations(port, pool)
        .into_iter()
        .map(|(a, _)| a)
        .collect()
}

/// Every pool id in the cluster.
fn cluster_pools(port: u16) -> Vec<String> {
    raftipam_json(port, &["pool", "ls"])
        .as_array()
        .expect("pool ls --json prints an array")
        .iter()
        .map(pool_id)
        .collect()
}

fn net(s: &str) -> IpNet {
    s.parse().expect("a subnet")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

// ---------------------------------------------------------------------------------------
// guards

/// A veth pair, deleted on drop.
struct Veth {
    a: String,
    b: String,
}

impl Veth {
    fn new(a: &str, b: &str) -> Veth {
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
struct Up {
    dir: tempfile::TempDir,
    port: u16,
    driver: String,
    host: String,
    extra: Vec<String>,
    proc: Option<Proc>,
}

impl Up {
    fn start(driver: &str, host: &str) -> Up {
        Up::start_with(driver, host, &[])
    }

    /// Like [`Up::start`], with more command-line arguments for `up`.
    fn start_with(driver: &str, host: &str, extra: &[&str]) -> Up {
        let mut up = Up {
            dir: tempfile::tempdir().expect("tempdir"),
            port: free_port(),
            driver: driver.to_string(),
            host: host.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            proc: None,
        };
        up.restart();
        up
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts `up` (again) on the same data dir, port and socket; waits for the ready line.
    fn restart(&mut self) {
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

    fn proc(&mut self) -> &mut Proc {
        self.proc.as_mut().expect("up is running")
    }

    /// A `raftipam shim` for another host on this cluster.
    fn shim(&self, driver: &str, host: &str) -> Proc {
        let socket = socket_path(driver);
        let args = vec![
            "shim".to_string(),
            "--endpoints".into(),
            self.endpoint(),
            "--socket".into(),
            socket.display().to_string(),
            "--host".into(),
            host.into(),
        ];
        let mut p = spawn(self.dir.path(), &args);
        p.wait_started("raftipam shim for host", &socket);
        p
    }
}

// ---------------------------------------------------------------------------------------
// the tests

/// 1. A bridge network with `--subnet --ip-range --gateway --aux-address`: 20 containers get
///    20 distinct addresses inside the range, none the gateway or an aux address, and the
///    cluster (`raftipam addr ls`) agrees with `docker inspect`.
#[test]
fn twenty_containers_get_distinct_addresses_in_the_range() {
    require_docker!("twenty_containers_get_distinct_addresses_in_the_range");
    let up = Up::start("rtest1", "hostrt1");
    let mut d = Docker::new("rt1-");
    let gateway = ip("10.101.0.1");
    let aux = [ip("10.101.0.129"), ip("10.101.0.131"), ip("10.101.0.140")];
    let range = net("10.101.0.128/27");
    let n = d.network(
        "net",
        &[
            "--ipam-driver",
            "rtest1",
            "--subnet",
            "10.101.0.0/24",
            "--ip-range",
            "10.101.0.128/27",
            "--gateway",
            "10.101.0.1",
            "--aux-address",
            "a=10.101.0.129",
            "--aux-address",
            "b=10.101.0.131",
            "--aux-address",
            "c=10.101.0.140",
        ],
    );
    let gw = docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
        &n,
    ]);
    assert_eq!(gw, "10.101.0.1");

    let mut seen = BTreeSet::new();
    for i in 0..20 {
        let c = d.run_ok(&format!("c{i}"), &n, &[]);
        let a = ip_of(&c, &n);
        assert!(range.contains(&a), "{c} got {a}, outside {range}");
        assert_ne!(a, gateway, "{c} got the gateway");
        assert!(!aux.contains(&a), "{c} got aux address {a}");
        assert!(seen.insert(a), "{c} got {a} twice");
    }
    assert_eq!(seen.len(), 20);

    let pool = "local/10.101.0.0/24/10.101.0.128/27";
    let allocs = cluster_allocations(up.port, pool);
    let cluster: BTreeSet<IpAddr> = allocs.iter().map(|(a, _)| *a).collect();
    assert_eq!(cluster, seen, "the cluster and docker inspect disagree");
    assert!(allocs.iter().all(|(_, h)| h == "hostrt1"), "{allocs:?}");
}

/// 2. `--ip` for a free address works; for a taken one `docker run` fails with a message
///    naming who holds it.
#[test]
fn ip_option_free_works_taken_fails_naming_the_holder() {
    require_docker!("ip_option_free_works_taken_fails_naming_the_holder");
    let up = Up::start("rtest2", "hostrt2");
    let mut d = Docker::new("rt2-");
    let n = d.network(
        "net",
        &[
            "--ipam-driver",
            "rtest2",
            "--subnet",
            "10.102.0.0/24",
            "--aux-address",
            "h=10.102.0.60",
        ],
    );
    let first = d.run_ok("c1", &n, &["--ip", "10.102.0.50"]);
    assert_eq!(ip_of(&first, &n), ip("10.102.0.50"));

    // The same address again: refused, and the message says who has it.
    let o = d.run("c2", &n, &["--ip", "10.102.0.50"]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "a second container got 10.102.0.50");
    assert!(
        err.contains("10.102.0.50") && err.contains("held by") && err.contains("hostrt2"),
        "the error does not name the holder: {err}"
    );
    // An aux address and the gateway are refused too.
    let o = d.run("c3", &n, &["--ip", "10.102.0.60"]);
    assert!(!o.status.success(), "a container got the aux address");
    let o = d.run("c4", &n, &["--ip", "10.102.0.1"]);
    assert!(!o.status.success(), "a container got the gateway");

    // Only the first container holds an address.
    assert_eq!(
        cluster_addrs(up.port, "local/10.102.0.0/24"),
        BTreeSet::from([ip("10.102.0.50")])
    );
    // A container without --ip skips the taken ones.
    let c5 = d.run_ok("c5", &n, &[]);
    let a5 = ip_of(&c5, &n);
    assert!(
        ![ip("10.102.0.1"), ip("10.102.0.50"), ip("10.102.0.60")].contains(&a5),
        "{a5}"
    );
}

/// 3. Two Docker hosts (an `up` and a `shim` with other `--host` and socket names) on one
///    cluster: networks on the same subnet under two driver names; addresses unique across
///    both. (Two macvlan networks on the two ends of a veth pair: one dockerd refuses two
///    bridge networks on one subnet, which two real hosts would not.)
#[test]
fn two_shims_on_one_cluster_never_share_an_address() {
    require_docker!("two_shims_on_one_cluster_never_share_an_address");
    let up = Up::start("rtest3a", "hostrt3a");
    let _shim_b = up.shim("rtest3b", "hostrt3b");
    let veth = Veth::new("rt3va", "rt3vb");
    let mut d = Docker::new("rt3-");
    let parent_a = format!("parent={}", veth.a);
    let parent_b = format!("parent={}", veth.b);
    let common = ["--subnet", "10.103.0.0/24", "--gateway", "10.103.0.1"];
    let mut args_a = vec!["-d", "macvlan", "-o", &parent_a, "--ipam-driver", "rtest3a"];
    args_a.extend_from_slice(&common);
    let mut args_b = vec!["-d", "macvlan", "-o", &parent_b, "--ipam-driver", "rtest3b"];
    args_b.extend_from_slice(&common);
    let na = d.network("neta", &args_a);
    let nb = d.network("netb", &args_b);

    let mut seen = BTreeSet::new();
    for i in 0..6 {
        for (host, n) in [("a", &na), ("b", &nb)] {
            let c = d.run_ok(&format!("{host}{i}"), n, &[]);
            let a = ip_of(&c, n);
            assert_ne!(a, ip("10.103.0.1"));
            assert!(
                seen.insert(a),
                "{c} got {a}, already given to another container"
            );
        }
    }
    // A fixed address held on host A is refused on host B.
    let held = *seen.iter().next().expect("addresses");
    let o = d.run("bx", &nb, &["--ip", &held.to_string()]);
    assert!(!o.status.success(), "host B got {held}, held on host A");

    // One pool, held by both hosts; the cluster agrees with docker.
    let pools = cluster_pools(up.port);
    assert_eq!(pools, vec!["local/10.103.0.0/24".to_string()]);
    let allocs = cluster_allocations(up.port, "local/10.103.0.0/24");
    let addrs: BTreeSet<IpAddr> = allocs.iter().map(|(a, _)| *a).collect();
    assert_eq!(addrs, seen);
    for host in ["hostrt3a", "hostrt3b"] {
        assert_eq!(
            allocs.iter().filter(|(_, h)| h == host).count(),
            6,
            "{allocs:?}"
        );
    }
    drop(d);
    assert!(
        cluster_pools(up.port).is_empty(),
        "the pool outlived both networks"
    );
}

/// 4. `docker rm` releases the address; `docker network rm` releases the pool (and the
///    gateway and aux reservations); nothing is left in the cluster.
#[test]
fn rm_releases_the_address_and_network_rm_the_pool() {
    require_docker!("rm_releases_the_address_and_network_rm_the_pool");
    let up = Up::start("rtest4", "hostrt4");
    let mut d = Docker::new("rt4-");
    let pool = "local/10.104.0.0/24";
    let n = d.network(
        "net",
        &[
            "--ipam-driver",
            "rtest4",
            "--subnet",
            "10.104.0.0/24",
            "--aux-address",
            "x=10.104.0.2",
        ],
    );
    let c: Vec<String> = (0..3)
        .map(|i| d.run_ok(&format!("c{i}"), &n, &[]))
        .collect();
    let addrs: Vec<IpAddr> = c.iter().map(|c| ip_of(c, &n)).collect();
    assert_eq!(
        cluster_addrs(up.port, pool),
        addrs.iter().copied().collect()
    );

    d.rm(&c[1]);
    let left = cluster_addrs(up.port, pool);
    assert!(!left.contains(&addrs[1]), "{} still allocated", addrs[1]);
    assert_eq!(left, BTreeSet::from([addrs[0], addrs[2]]));
    // The freed address is given out again (lowest free first).
    let again = d.run_ok("c3", &n, &[]);
    assert_eq!(ip_of(&again, &n), addrs[1]);

    for name in [&c[0], &c[2], &again] {
        d.rm(name);
    }
    assert!(cluster_addrs(up.port, pool).is_empty());
    d.network_rm(&n);
    assert!(
        cluster_pools(up.port).is_empty(),
        "pools left after network rm"
    );
    let who = raftipam_json(up.port, &["addr", "who-has", "10.104.0.1"]);
    assert_eq!(who, Value::Array(vec![]), "the gateway is still reserved");
    let who = raftipam_json(up.port, &["addr", "who-has", "10.104.0.2"]);
    assert_eq!(
        who,
        Value::Array(vec![]),
        "the aux address is still reserved"
    );
}

/// 5. `raftipam up` killed (SIGKILL) and started again on the same data while containers
///    run: every container keeps its address, the cluster still knows them, new containers
///    get other addresses, and releases after the restart work. SIGTERM removes the socket.
#[test]
fn restarted_up_keeps_every_address() {
    require_docker!("restarted_up_keeps_every_address");
    let mut up = Up::start("rtest5", "hostrt5");
    let mut d = Docker::new("rt5-");
    let pool = "local/10.105.0.0/24";
    let n = d.network(
        "net",
        &["--ipam-driver", "rtest5", "--subnet", "10.105.0.0/24"],
    );
    let old: Vec<String> = (0..4)
        .map(|i| d.run_ok(&format!("old{i}"), &n, &[]))
        .collect();
    let before: Vec<IpAddr> = old.iter().map(|c| ip_of(c, &n)).collect();

    up.proc().kill9();
    assert!(
        socket_path("rtest5").exists(),
        "a killed process leaves its socket"
    );
    up.restart(); // replaces the stale socket
    let log = up.proc().log_text();
    assert!(log.contains("reusing the cluster"), "{log}");

    let after: Vec<IpAddr> = old.iter().map(|c| ip_of(c, &n)).collect();
    assert_eq!(before, after);
    assert_eq!(
        cluster_addrs(up.port, pool),
        before.iter().copied().collect()
    );
    let mut all: BTreeSet<IpAddr> = before.iter().copied().collect();
    for i in 0..4 {
        let c = d.run_ok(&format!("new{i}"), &n, &[]);
        let a = ip_of(&c, &n);
        assert!(
            all.insert(a),
            "{c} got {a}, held by a container from before the restart"
        );
    }
    assert_eq!(cluster_addrs(up.port, pool), all);

    // Releases after the restart.
    d.rm(&old[0]);
    all.remove(&before[0]);
    assert_eq!(cluster_addrs(up.port, pool), all);

    // A second, graceful restart: SIGTERM removes the socket and exits 0.
    let status = up.proc().terminate().expect("up exits on SIGTERM");
    assert!(status.success(), "up exited with {status}");
    assert!(
        !socket_path("rtest5").exists(),
        "SIGTERM left the socket behind"
    );
    up.restart();
    assert_eq!(cluster_addrs(up.port, pool), all);
    drop(d);
    assert!(cluster_pools(up.port).is_empty());
}

/// 6. An IPv6 network (`--ipv6 --subnet fd..::/64`) and dual-stack containers.
#[test]
fn ipv6_dual_stack_containers() {
    require_docker!("ipv6_dual_stack_containers");
    // Fast reconciliation: dockerd 20.10 leaks an IPv4 address below; it must be found
    // and released.
    let up = Up::start_with(
        "rtest6",
        "hostrt6",
        &["--reconcile-interval", "1s", "--reconcile-grace", "2s"],
    );
    let mut d = Docker::new("rt6-");
    let v4 = net("10.106.0.0/24");
    let v6 = net("fd00:106::/64");
    let n = d.network(
        "net",
        &[
            "--ipv6",
            "--ipam-driver",
            "rtest6",
            "--subnet",
            "10.106.0.0/24",
            "--subnet",
            "fd00:106::/64",
        ],
    );
    let mut seen4 = BTreeSet::new();
    let mut seen6 = BTreeSet::new();
    for i in 0..3 {
        let c = d.run_ok(&format!("c{i}"), &n, &[]);
        let (a4, a6) = ips_of(&c, &n);
        let a4 = a4.unwrap_or_else(|| panic!("{c} has no IPv4 address"));
        let a6 = a6.unwrap_or_else(|| panic!("{c} has no IPv6 address"));
        assert!(v4.contains(&a4) && v6.contains(&a6), "{a4} {a6}");
        assert!(seen4.insert(a4) && seen6.insert(a6));
    }
    let fixed = d.run_ok("fixed", &n, &["--ip6", "fd00:106::abcd"]);
    let (_, a6) = ips_of(&fixed, &n);
    assert_eq!(a6, Some(ip("fd00:106::abcd")));
    seen6.insert(ip("fd00:106::abcd"));
    let o = d.run("dup", &n, &["--ip6", "fd00:106::abcd"]);
    assert!(!o.status.success(), "fd00:106::abcd given twice");

    assert_eq!(cluster_addrs(up.port, "local/fd00:106::/64"), seen6);
    // Every IPv4 address docker shows is the cluster's. dockerd 20.10 does not release an
    // endpoint's IPv4 address when its IPv6 request fails (moby `network.go` createEndpoint
    // installs its release only after both succeed), so the refused `dup` leaves one IPv4
    // allocation of this host behind, until reconciliation finds and releases it.
    seen4.insert(ips_of(&fixed, &n).0.expect("IPv4 of fixed"));
    let cluster4 = cluster_allocations(up.port, "local/10.106.0.0/24");
    let addrs4: BTreeSet<IpAddr> = cluster4.iter().map(|(a, _)| *a).collect();
    assert!(addrs4.is_superset(&seen4), "{addrs4:?} vs {seen4:?}");
    assert!(addrs4.len() <= seen4.len() + 1, "{cluster4:?} vs {seen4:?}");
    assert!(cluster4.iter().all(|(_, h)| h == "hostrt6"), "{cluster4:?}");
    let deadline = Instant::now() + WAIT;
    loop {
        let now = cluster_addrs(up.port, "local/10.106.0.0/24");
        if now == seen4 {
            break;
        }
        assert!(
            now.is_superset(&seen4),
            "reconciliation released a used address: {now:?} vs {seen4:?}"
        );
        assert!(
            Instant::now() < deadline,
            "the leaked address was not reconciled: {now:?} vs {seen4:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // And nothing used was released meanwhile.
    assert_eq!(cluster_addrs(up.port, "local/fd00:106::/64"), seen6);
}

/// 7. A macvlan network on one end of a veth pair, with the hosts' addresses given as
///    `--aux-address`: no container gets a host's address.
#[test]
fn macvlan_containers_never_get_a_host_address() {
    require_docker!("macvlan_containers_never_get_a_host_address");
    let up = Up::start("rtest7", "hostrt7");
    let veth = Veth::new("rt7va", "rt7vb");
    // The "LAN" side has hosts at .2, .3 and .4.
    let o = Command::new("ip")
        .args(["addr", "add", "10.107.0.2/24", "dev", &veth.b])
        .output()
        .expect("ip addr add");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut d = Docker::new("rt7-");
    let parent = format!("parent={}", veth.a);
    let n = d.network(
        "net",
        &[
            "-d",
            "macvlan",
            "-o",
            &parent,
            "--ipam-driver",
            "rtest7",
            "--subnet",
            "10.107.0.0/24",
            "--gateway",
            "10.107.0.1",
            "--aux-address",
            "host1=10.107.0.2",
            "--aux-address",
            "host2=10.107.0.3",
            "--aux-address",
            "host3=10.107.0.4",
        ],
    );
    let hosts = [
        ip("10.107.0.1"),
        ip("10.107.0.2"),
        ip("10.107.0.3"),
        ip("10.107.0.4"),
    ];
    let mut seen = BTreeSet::new();
    for i in 0..5 {
        let c = d.run_ok(&format!("c{i}"), &n, &[]);
        let a = ip_of(&c, &n);
        assert!(!hosts.contains(&a), "{c} got a host's address {a}");
        assert!(seen.insert(a));
    }
    let o = d.run("h", &n, &["--ip", "10.107.0.3"]);
    assert!(!o.status.success(), "a container got host2's address");
    assert_eq!(cluster_addrs(up.port, "local/10.107.0.0/24"), seen);
}

/// 8. `raftipam node --plugin-socket --host`: the plugin inside a node. Before the node is
///    part of a cluster there is no quorum: `docker network create` fails within the call
///    timeout with a message saying so (dockerd is not blocked). After `cluster init` the same
///    command works.
#[test]
fn node_with_plugin_socket_says_no_quorum_then_works() {
    require_docker!("node_with_plugin_socket_says_no_quorum_then_works");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let socket = socket_path("rtest8");
    let args: Vec<String> = [
        "node",
        "--id",
        "1",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        &dir.path().join("data").display().to_string(),
        "--plugin-socket",
        &socket.display().to_string(),
        "--host",
        "hostrt8",
        "--plugin-call-timeout",
        "4s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut node = spawn(dir.path(), &args);
    node.wait_started("raftipam plugin for host hostrt8", &socket);
    let mut d = Docker::new("rt8-");
    let create = ["--ipam-driver", "rtest8", "--subnet", "10.108.0.0/24"];

    let name = d.name("net");
    let t = Instant::now();
    let o = docker(&[
        "network", "create", create[0], create[1], create[2], create[3], &name,
    ]);
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        !o.status.success(),
        "a network was created without a cluster"
    );
    assert!(
        err.contains("no quorum"),
        "the error does not say why: {err}"
    );
    assert!(took < Duration::from_secs(30), "dockerd waited {took:?}");

    let o = Command::new("timeout")
        .arg("60")
        .arg(BIN)
        .args([
            "cluster",
            "init",
            "--endpoints",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .expect("run raftipam cluster init");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let n = d.network("net", &create);
    let c = d.run_ok("c1", &n, &[]);
    let a = ip_of(&c, &n);
    assert_eq!(
        cluster_allocations(port, "local/10.108.0.0/24"),
        vec![(a, "hostrt8".to_string())]
    );
    drop(d);
    let status = node.terminate().expect("node exits on SIGTERM");
    assert!(
        status.success(),
        "node exited with {status}:\n{}",
        node.log_text()
    );
    assert!(!socket.exists(), "the node left its plugin socket behind");
}

/// 9. `raftipam shim` whose cluster is down: every call fails within the call timeout with a
///    message saying the cluster did not answer.
#[test]
fn shim_without_a_cluster_fails_fast_and_says_why() {
    require_docker!("shim_without_a_cluster_fails_fast_and_says_why");
    let dir = tempfile::tempdir().expect("tempdir");
    let dead = free_port(); // nothing listens there
    let socket = socket_path("rtest9");
    let args: Vec<String> = [
        "shim",
        "--endpoints",
        &format!("127.0.0.1:{dead}"),
        "--socket",
        &socket.display().to_string(),
        "--host",
        "hostrt9",
        "--call-timeout",
        "3s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut shim = spawn(dir.path(), &args);
    shim.wait_started("raftipam shim for host hostrt9", &socket);
    let mut d = Docker::new("rt9-");
    let name = d.name("net");
    d.networks.push(name.clone());
    let t = Instant::now();
    let o = docker(&[
        "network",
        "create",
        "--ipam-driver",
        "rtest9",
        "--subnet",
        "10.109.0.0/24",
        &name,
    ]);
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        !o.status.success(),
        "a network was created without a cluster"
    );
    assert!(
        err.contains("did not answer") || err.contains("no node"),
        "the error does not say why: {err}"
    );
    assert!(
        err.contains(&dead.to_string()),
        "the error names no endpoint: {err}"
    );
    assert!(took < Duration::from_secs(30), "dockerd waited {took:?}");
}

/// A dockerd of this test's own (own data and exec roots, socket, containerd namespace, no
/// default bridge), sharing the machine's containerd and `/run/docker/plugins`, so that it
/// can be restarted without disturbing the other tests. Stopped, and its mounts undone, on
/// drop.
struct PrivateDockerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

const CONTAINERD_SOCK: &str = "/run/containerd/containerd.sock";

impl PrivateDockerd {
    fn start(live_restore: bool) -> PrivateDockerd {
        assert!(
            Path::new(CONTAINERD_SOCK).exists(),
            "no containerd at {CONTAINERD_SOCK} (scripts/dockerd.sh starts one)"
        );
        let mut d = PrivateDockerd {
            // Short paths: dockerd puts unix sockets under its exec root.
            dir: tempfile::Builder::new()
                .prefix("rtd")
                .tempdir_in("/tmp")
                .expect("tempdir"),
            child: None,
        };
        std::fs::write(d.dir.path().join("daemon.json"), "{}").expect("daemon.json");
        d.launch(live_restore);
        let img = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker save {IMAGE} | DOCKER_HOST={} docker load",
                d.host()
            ))
            .envs(docker_host().map(|h| ("DOCKER_HOST", h)))
            .output()
            .expect("docker save | docker load");
        assert!(
            img.status.success(),
            "copying {IMAGE} to the private dockerd: {}",
            String::from_utf8_lossy(&img.stderr)
        );
        d
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    fn launch(&mut self, live_restore: bool) {
        let p = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p.join("dockerd.log"))
            .expect("dockerd log");
        let mut c = Command::new("dockerd");
        c.args(["--iptables=false", "--ip6tables=false", "--bridge", "none"])
            .args(["--containerd", CONTAINERD_SOCK])
            .args(["--containerd-namespace", "raftipam-e2e"])
            .args(["--containerd-plugins-namespace", "raftipam-e2e-plugins"])
            .args(["--shutdown-timeout", "2"])
            .arg("--data-root")
            .arg(p.join("data"))
            .arg("--exec-root")
            .arg(p.join("exec"))
            .arg("--pidfile")
            .arg(p.join("docker.pid"))
            .arg("--config-file")
            .arg(p.join("daemon.json"))
            .args(["-H", &self.host()]);
        if live_restore {
            c.arg("--live-restore");
        }
        let err = log.try_clone().expect("dockerd log");
        self.child = Some(
            c.stdin(Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .expect("spawn dockerd"),
        );
        let deadline = Instant::now() + WAIT;
        while !docker_at(Some(&self.host()), &["info"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "the private dockerd did not answer within {WAIT:?}:\n{}",
                std::fs::read_to_string(p.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM; waits (bounded) for the exit.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn restart(&mut self, live_restore: bool) {
        self.stop();
        self.launch(live_restore);
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        self.stop();
        for root in ["data", "exec"] {
            let _ = Command::new("umount")
                .arg("-R")
                .arg(self.dir.path().join(root))
                .output();
        }
    }
}

/// 10. dockerd restarted with containers running — with `--live-restore` (containers keep
///     running and their endpoints; no plugin call is replayed) and without (containers are
///     stopped, releasing their addresses; those with a restart policy come back with
///     addresses again): every running container keeps a unique address, the cluster holds
///     exactly the running containers' addresses (nothing leaks), and a new container gets
///     a fresh one. Proves `RequiresRequestReplay: false` against a real dockerd.
#[test]
fn dockerd_restarted_with_containers_running() {
    require_docker!("dockerd_restarted_with_containers_running");
    let mut dockerd = PrivateDockerd::start(true);
    let host = dockerd.host();
    // Reconciliation (should it run) compares with the dockerd that uses this plugin.
    let up = Up::start_with("rtest10", "hostrt10", &["--docker-host", &host]);
    let mut d = Docker::at(Some(host.clone()), "rt10-");
    let pool = "local/10.110.0.0/24";
    let n = d.network(
        "net",
        &[
            "--ipam-driver",
            "rtest10",
            "--subnet",
            "10.110.0.0/24",
            "--aux-address",
            "x=10.110.0.3",
        ],
    );
    let mut running: Vec<String> = Vec::new();
    for i in 0..4 {
        let extra: &[&str] = if i < 2 { &["--restart", "always"] } else { &[] };
        running.push(d.run_ok(&format!("c{i}"), &n, extra));
    }
    let addrs = |d: &Docker, names: &[String]| -> Vec<IpAddr> {
        names
            .iter()
            .map(|c| {
                ips_of_at(d.host.as_deref(), c, &n)
                    .0
                    .unwrap_or_else(|| panic!("{c} has no address"))
            })
            .collect()
    };
    let before = addrs(&d, &running);
    let set: BTreeSet<IpAddr> = before.iter().copied().collect();
    assert_eq!(set.len(), 4);
    assert_eq!(cluster_addrs(up.port, pool), set);

    // Live restore: the containers run on, with the same addresses, and nothing changes in
    // the cluster.
    dockerd.restart(true);
    let states = docker_ok_at(
        Some(&host),
        &["ps", "--filter", "name=rt10-", "--format", "{{.Names}}"],
    );
    assert_eq!(
        states.lines().count(),
        4,
        "containers did not survive: {states}"
    );
    assert_eq!(addrs(&d, &running), before);
    assert_eq!(cluster_addrs(up.port, pool), set);
    running.push(d.run_ok("new0", &n, &[]));
    let now = addrs(&d, &running);
    let now_set: BTreeSet<IpAddr> = now.iter().copied().collect();
    assert_eq!(
        now_set.len(),
        5,
        "a new container got a taken address: {now:?}"
    );
    assert_eq!(cluster_addrs(up.port, pool), now_set);

    // A plain restart: containers without a restart policy stop (and release their
    // addresses), the two with `--restart always` come back.
    dockerd.restart(false);
    let deadline = Instant::now() + WAIT;
    let up_names = loop {
        let out = docker_ok_at(
            Some(&host),
            &["ps", "--filter", "name=rt10-", "--format", "{{.Names}}"],
        );
        let mut names: Vec<String> = out.lines().map(str::to_string).collect();
        names.sort();
        if names == ["rt10-c0", "rt10-c1"] {
            break names;
        }
        assert!(
            Instant::now() < deadline,
            "expected rt10-c0 and rt10-c1 running, got {names:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let back: BTreeSet<IpAddr> = addrs(&d, &up_names).into_iter().collect();
    assert_eq!(back.len(), 2);
    assert_eq!(
        cluster_addrs(up.port, pool),
        back,
        "the cluster holds addresses of stopped containers"
    );
    let fresh = d.run_ok("new1", &n, &[]);
    let a = ips_of_at(Some(&host), &fresh, &n).0.expect("an address");
    assert!(!back.contains(&a) && a != ip("10.110.0.3"), "{a}");

    drop(d);
    assert!(
        cluster_pools(up.port).is_empty(),
        "pools left after cleanup"
    );
}

/// Runs `raftipam ARGS` (bounded), failing the test unless it succeeds.
fn raftipam_ok(args: &[&str]) {
    let o = Command::new("timeout")
        .arg("90")
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
}

/// 11. A three-node cluster with the plugin in node 1 (`node --plugin-socket`). With two
///     nodes killed there is no quorum: `docker run` fails within the plugin's call timeout
///     (default 10 s) saying so, and nothing is allocated. With the two back (same data),
///     containers start again and every address is unique.
#[test]
fn three_node_cluster_without_quorum_blocks_nobody() {
    require_docker!("three_node_cluster_without_quorum_blocks_nobody");
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = socket_path("rtest11");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let node_args = |i: usize| -> Vec<String> {
        let mut a: Vec<String> = vec![
            "node".into(),
            "--id".into(),
            (i + 1).to_string(),
            "--listen".into(),
            addr(i),
            "--data-dir".into(),
            dir.path().join(format!("n{}", i + 1)).display().to_string(),
        ];
        if i == 0 {
            a.extend([
                "--plugin-socket".into(),
                socket.display().to_string(),
                "--host".into(),
                "hostrt11".into(),
            ]);
        }
        a
    };
    let start = |i: usize| -> Proc {
        let mut p = spawn(dir.path(), &node_args(i));
        let ready = if i == 0 {
            "raftipam plugin for host hostrt11"
        } else {
            "serving on"
        };
        // Nodes 2 and 3 have no socket: wait on their data dir's existence instead.
        let probe = if i == 0 {
            socket.clone()
        } else {
            dir.path().join(format!("n{}", i + 1))
        };
        p.wait_for(ready, Some(&probe));
        if i != 0 {
            p.socket = None;
        }
        p
    };
    let _n1 = start(0);
    let mut n2 = start(1);
    let mut n3 = start(2);
    let all = format!("{},{},{}", addr(0), addr(1), addr(2));
    raftipam_ok(&["cluster", "init", "--endpoints", &addr(0)]);
    raftipam_ok(&[
        "cluster",
        "add",
        "--id",
        "2",
        "--addr",
        &addr(1),
        "--endpoints",
        &all,
    ]);
    raftipam_ok(&[
        "cluster",
        "add",
        "--id",
        "3",
        "--addr",
        &addr(2),
        "--endpoints",
        &all,
    ]);

    let mut d = Docker::new("rt11-");
    let n = d.network(
        "net",
        &["--ipam-driver", "rtest11", "--subnet", "10.111.0.0/24"],
    );
    let c0 = d.run_ok("c0", &n, &[]);
    let a0 = ip_of(&c0, &n);

    // Two of three down: no quorum.
    n2.kill9();
    n3.kill9();
    let t = Instant::now();
    let o = d.run("c1", &n, &[]);
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        !o.status.success(),
        "a container got an address without a quorum"
    );
    assert!(
        err.contains("no quorum"),
        "the error does not say why: {err}"
    );
    assert!(took < Duration::from_secs(25), "docker run waited {took:?}");
    let _ = docker(&["rm", "-f", &d.name("c1")]);

    // Back: same data, same ports.
    n2 = start(1);
    n3 = start(2);
    let deadline = Instant::now() + WAIT;
    let c2 = loop {
        let o = d.run("c2", &n, &[]);
        if o.status.success() {
            break d.name("c2");
        }
        let _ = docker(&["rm", "-f", &d.name("c2")]);
        assert!(
            Instant::now() < deadline,
            "no container could start after the quorum came back: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let a2 = ip_of(&c2, &n);
    assert_ne!(a0, a2);
    let port0 = ports[0];
    let mut expected = BTreeSet::from([a0, a2]);
    // The refused `c1` may have been committed after its caller gave up ("a write may still
    // be applied"); dockerd then never releases it. That is the only extra allowed.
    let held = cluster_addrs(port0, "local/10.111.0.0/24");
    assert!(held.is_superset(&expected), "{held:?}");
    assert!(held.len() <= 3, "{held:?}");
    let c3 = d.run_ok("c3", &n, &[]);
    let a3 = ip_of(&c3, &n);
    assert!(!held.contains(&a3), "{a3} given twice");
    expected.insert(a3);
    assert!(cluster_addrs(port0, "local/10.111.0.0/24").is_superset(&expected));
    drop(d); // its releases need the quorum: before the nodes go
    drop((n2, n3));
}

/// 12. `--ipam-opt` through a real dockerd: `serial=true` hands out the next address after
///     the last one (a released address is not reused at once), `reserve=` keeps a range out,
///     `cooldown=` holds a released address back in lowest-first order.
#[test]
fn ipam_options_serial_reserve_cooldown() {
    require_docker!("ipam_options_serial_reserve_cooldown");
    let _up = Up::start("rtest12", "hostrt12");
    let mut d = Docker::new("rt12-");
    let serial = d.network(
        "serial",
        &[
            "--ipam-driver",
            "rtest12",
            "--subnet",
            "10.112.0.0/24",
            "--ipam-opt",
            "serial=true",
            "--ipam-opt",
            "reserve=10.112.0.4-10.112.0.6",
        ],
    );
    let a: Vec<IpAddr> = (0..3)
        .map(|i| {
            let c = d.run_ok(&format!("s{i}"), &serial, &[]);
            ip_of(&c, &serial)
        })
        .collect();
    // .1 is the gateway, .4-.6 reserved.
    assert_eq!(a, [ip("10.112.0.2"), ip("10.112.0.3"), ip("10.112.0.7")]);
    d.rm(&d.name("s0"));
    let next = d.run_ok("s3", &serial, &[]);
    assert_eq!(
        ip_of(&next, &serial),
        ip("10.112.0.8"),
        "serial order reused an address"
    );
    let o = d.run("s4", &serial, &["--ip", "10.112.0.5"]);
    assert!(!o.status.success(), "a reserved address was handed out");

    let cool = d.network(
        "cool",
        &[
            "--ipam-driver",
            "rtest12",
            "--subnet",
            "10.113.0.0/24",
            "--ipam-opt",
            "cooldown=5m",
        ],
    );
    let c0 = d.run_ok("c0", &cool, &[]);
    let first = ip_of(&c0, &cool);
    d.rm(&c0);
    let c1 = d.run_ok("c1", &cool, &[]);
    assert_ne!(
        ip_of(&c1, &cool),
        first,
        "a cooling address was handed out again"
    );
}

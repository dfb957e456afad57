//! The seed's scenario end to end, in a lab of network namespaces on this one machine
//! (`lab/lab.sh`): a Linux bridge as the LAN (10.231.0.0/24), three Docker hosts — each a
//! netns with its own containerd, dockerd, private `/run/docker/plugins` and a raftipam node
//! talking Raft over its LAN address — and a legacy host with no Docker. Containers join a
//! `macvlan` network on the LAN, as thin VMs.
//!
//! One lab per test, one test at a time (a lock): each lab is 3 dockerds on shared cores.
//! The lab is torn down by a Drop guard (`lab.sh down`), so also when a test fails; logs of
//! the nodes and dockerds are printed first when it does. Every wait is bounded. When
//! network namespaces or dockerd cannot run here at all, each test prints a loud SKIP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "support/cni.rs"]
mod cni_support;
use cni_support::{exec_plugin, podman_conf, podman_ready, REFERENCE_PLUGINS};

const BIN: &str = env!("CARGO_BIN_EXE_raftipam");
const IMAGE: &str = "raftipam-busybox";
const NET: &str = "lan";
const POOL: &str = "local/10.231.0.0/24";
const SUBNET_PREFIX: &str = "10.231.0.";
/// Gateway, the three Docker hosts and the legacy host: never a container's.
const RESERVED: [&str; 5] = [
    "10.231.0.1",
    "10.231.0.11",
    "10.231.0.12",
    "10.231.0.13",
    "10.231.0.20",
];

static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab/lab.sh")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ip(s: &str) -> IpAddr {
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not an address: {s:?}"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Raftipam,
    Default,
}

/// A running lab; `Drop` tears it down completely.
struct Lab {
    dir: PathBuf,
}

impl Lab {
    /// Brings a lab up, or prints a loud SKIP and returns `None` when this machine cannot run
    /// one at all (`lab.sh check` exits 77).
    fn up(test: &str, mode: Mode) -> Option<Lab> {
        let check = Command::new("bash")
            .arg(script())
            .arg("check")
            .stdin(Stdio::null())
            .output()
            .expect("run bash");
        if check.status.code() == Some(77) {
            eprintln!(
                "\n\
                 ************************************************************************\n\
                 SKIP {test}: {}\
                 ************************************************************************\n",
                String::from_utf8_lossy(&check.stderr)
            );
            return None;
        }
        assert!(check.status.success(), "lab.sh check: {}", text(&check));
        // Labs left by a test run that was killed outright (no Drop): gone before this one.
        let _ = Command::new("timeout")
            .args(["120", "bash"])
            .arg(script())
            .arg("sweep")
            .stdin(Stdio::null())
            .status();
        // A fresh path `lab.sh up` creates and `down` removes whole (also `sweep`, after a
        // killed run): no parent directory is left behind.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let lab = Lab {
            dir: std::env::temp_dir().join(format!("rlab-{}-{nanos}", std::process::id())),
        };
        let mode = match mode {
            Mode::Raftipam => "raftipam",
            Mode::Default => "default",
        };
        let t = Instant::now();
        let o = Command::new("timeout")
            .args(["300", "bash"])
            .arg(script())
            .arg("up")
            .arg(&lab.dir)
            .arg(mode)
            .env("RAFTIPAM_BIN", BIN)
            .env("RUST_LOG", "info")
            .env("LAB_OWNER_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run lab.sh up");
        assert!(o.status.success(), "lab.sh up {mode} failed:\n{}", text(&o));
        eprintln!("[{test}] lab ({mode}) up in {:?}", t.elapsed());
        Some(lab)
    }

    fn sh(&self, cmd: &str, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["180", "bash"])
            .arg(script())
            .arg(cmd)
            .arg(&self.dir)
            .args(args)
            .env("RAFTIPAM_BIN", BIN)
            .stdin(Stdio::null())
            .output()
            .expect("run lab.sh")
    }

    fn sh_ok(&self, cmd: &str, args: &[&str]) -> String {
        let o = self.sh(cmd, args);
        assert!(
            o.status.success(),
            "lab.sh {cmd} {} failed:\n{}",
            args.join(" "),
            text(&o)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `docker ARGS` against host `n`'s dockerd.
    fn docker(&self, n: usize, args: &[&str]) -> Output {
        let host = format!("unix://{}/h{n}/docker.sock", self.dir.display());
        Command::new("timeout")
            .args(["120", "docker", "-H", &host])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    fn docker_ok(&self, n: usize, args: &[&str]) -> String {
        let o = self.docker(n, args);
        assert!(
            o.status.success(),
            "docker (h{n}) {} failed:\n{}",
            args.join(" "),
            text(&o)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// The macvlan network on the LAN on every host (raftipam's IPAM in raftipam mode).
    fn networks(&self) {
        for n in 1..=3 {
            self.sh_ok("network", &[&n.to_string(), NET]);
        }
    }

    fn run(&self, n: usize, name: &str) -> Output {
        self.docker(
            n,
            &[
                "run",
                "-d",
                "--name",
                name,
                "--network",
                NET,
                IMAGE,
                "sleep",
                "1d",
            ],
        )
    }

    /// Starts container `name` on host `n`; returns its address.
    fn run_ok(&self, n: usize, name: &str) -> IpAddr {
        let o = self.run(n, name);
        assert!(
            o.status.success(),
            "docker run {name} on h{n} failed:\n{}",
            text(&o)
        );
        self.ip_of(n, name)
    }

    fn inspect(&self, n: usize, name: &str, field: &str) -> String {
        let fmt = format!(
            "{{{{with index .NetworkSettings.Networks \"{NET}\"}}}}{{{{.{field}}}}}{{{{end}}}}"
        );
        self.docker_ok(n, &["inspect", "-f", &fmt, name])
    }

    fn ip_of(&self, n: usize, name: &str) -> IpAddr {
        ip(&self.inspect(n, name, "IPAddress"))
    }

    fn mac_of(&self, n: usize, name: &str) -> String {
        self.inspect(n, name, "MacAddress").to_lowercase()
    }

    /// Running containers of host `n` on the LAN network: name → address.
    fn running(&self, n: usize) -> BTreeMap<String, IpAddr> {
        let names = self.docker_ok(n, &["ps", "--format", "{{.Names}}"]);
        names
            .lines()
            .filter(|l| !l.is_empty())
            .map(|c| (c.to_string(), self.ip_of(n, c)))
            .collect()
    }

    /// Host → running containers' addresses, across the lab.
    fn all_running(&self, hosts: &[usize]) -> Vec<(usize, String, IpAddr)> {
        let mut v = Vec::new();
        for &n in hosts {
            for (c, a) in self.running(n) {
                v.push((n, c, a));
            }
        }
        v
    }

    /// How many answer ARP for `addr` (replies per broadcast probe from the legacy host), and
    /// the MACs that answered.
    fn arp(&self, addr: IpAddr) -> (usize, Vec<String>) {
        let out = self.sh_ok("arp", &[&addr.to_string()]);
        let mut it = out.split_whitespace();
        let count = it
            .next()
            .and_then(|s| s.parse().ok())
            .expect("lab.sh arp prints a count");
        let macs = it
            .next()
            .filter(|m| *m != "-")
            .map(|m| m.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        (count, macs)
    }

    fn ping(&self, addr: IpAddr) -> bool {
        self.sh(
            "legacy",
            &[
                "busybox",
                "ping",
                "-c",
                "2",
                "-W",
                "2",
                "-w",
                "4",
                &addr.to_string(),
            ],
        )
        .status
        .success()
    }

    /// `raftipam ARGS --json` from host `n`'s netns, every node as an endpoint.
    fn raftipam(&self, n: usize, args: &[&str]) -> Output {
        let mut a = args.to_vec();
        a.push("--json");
        let mut all = vec![n.to_string()];
        all.extend(a.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        self.sh("raftipam", &refs)
    }

    /// The cluster's allocations in the LAN pool: (address, owner host), asked via host `n`.
    fn allocations(&self, n: usize) -> Vec<(IpAddr, String)> {
        let o = self.raftipam(n, &["addr", "ls", POOL]);
        assert!(o.status.success(), "raftipam addr ls failed:\n{}", text(&o));
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("addr ls printed no JSON ({e}): {}", text(&o)));
        v.as_array()
            .expect("addr ls --json prints an array")
            .iter()
            .map(|a| {
                (
                    ip(a["addr"].as_str().expect("addr")),
                    a["owner"]["host"].as_str().expect("owner.host").to_string(),
                )
            })
            .collect()
    }

    /// Prints the tail of every log in the lab (on failure, before teardown).
    fn dump_logs(&self) {
        for n in 1..=3 {
            for log in ["node.log", "dockerd.log"] {
                let p = self.dir.join(format!("h{n}/{log}"));
                if let Ok(s) = std::fs::read_to_string(&p) {
                    let lines: Vec<&str> = s.lines().collect();
                    let tail = &lines[lines.len().saturating_sub(15)..];
                    eprintln!("---- h{n}/{log} (last lines) ----\n{}", tail.join("\n"));
                }
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        let o = Command::new("timeout")
            .args(["120", "bash"])
            .arg(script())
            .arg("down")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output();
        match o {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("lab.sh down failed:\n{}", text(&o)),
            Err(e) => eprintln!("cannot run lab.sh down: {e}"),
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

macro_rules! lab_or_skip {
    ($test:expr, $mode:expr) => {
        match Lab::up($test, $mode) {
            Some(l) => l,
            None => return,
        }
    };
}

/// Every address is a container's own: inside the subnet, not reserved, held once.
fn assert_unique_and_not_reserved(held: &[(usize, String, IpAddr)]) {
    let mut seen: BTreeMap<IpAddr, (usize, &str)> = BTreeMap::new();
    for (n, c, a) in held {
        assert!(
            a.to_string().starts_with(SUBNET_PREFIX),
            "{c} on h{n} got {a}, outside the LAN subnet"
        );
        assert!(
            !RESERVED.contains(&a.to_string().as_str()),
            "{c} on h{n} got {a}: a host's or the gateway's address"
        );
        if let Some((n0, c0)) = seen.insert(*a, (*n, c)) {
            panic!("{a} held twice: {c0} on h{n0} and {c} on h{n}");
        }
    }
}

/// The cluster holds each address once and holds every running container's address, owned
/// by that container's host.
fn assert_cluster_agrees(lab: &Lab, via: usize, held: &[(usize, String, IpAddr)]) {
    let alloc = lab.allocations(via);
    let mut owners: BTreeMap<IpAddr, String> = BTreeMap::new();
    for (a, h) in &alloc {
        if let Some(h0) = owners.insert(*a, h.clone()) {
            panic!("the cluster lists {a} twice ({h0}, {h})");
        }
        assert!(
            !RESERVED.contains(&a.to_string().as_str()),
            "the cluster allocated reserved {a}"
        );
    }
    for (n, c, a) in held {
        assert_eq!(
            owners.get(a).map(String::as_str),
            Some(format!("h{n}").as_str()),
            "{c} on h{n} uses {a} but the cluster says {:?}",
            owners.get(a)
        );
    }
}

/// Exactly one responder per address, the container's own MAC; and reachable by ping.
fn assert_one_responder_each(lab: &Lab, held: &[(usize, String, IpAddr)]) {
    for (n, c, a) in held {
        let mac = lab.mac_of(*n, c);
        let (count, macs) = lab.arp(*a);
        assert_eq!(
            count, 1,
            "{a} ({c} on h{n}) answered ARP {count} times per probe: {macs:?}"
        );
        assert_eq!(
            macs,
            vec![mac.clone()],
            "{a} answered by {macs:?}, not {c}'s {mac}"
        );
        assert!(
            lab.ping(*a),
            "the legacy host cannot ping {a} ({c} on h{n})"
        );
    }
}

/// The id (= host number) of the current leader, from `cluster status`.
fn leader(lab: &Lab) -> usize {
    let o = lab.raftipam(1, &["cluster", "status"]);
    assert!(o.status.success(), "cluster status failed:\n{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("cluster status --json");
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("status"))
        .find(|s| s["state"] == "Leader")
        .and_then(|s| s["id"].as_u64())
        .map(|id| id as usize)
        .unwrap_or_else(|| panic!("no leader in cluster status: {v}"))
}

/// Waits until node `n` has applied everything the leader had committed when asked.
fn wait_caught_up(lab: &Lab, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let o = lab.raftipam(n, &["cluster", "status"]);
        if o.status.success() {
            if let Ok(v) = serde_json::from_slice::<Value>(&o.stdout) {
                let nodes: Vec<&Value> = v
                    .as_array()
                    .map(|a| a.iter().filter_map(|e| e.get("status")).collect())
                    .unwrap_or_default();
                let leader_committed = nodes
                    .iter()
                    .find(|s| s["state"] == "Leader")
                    .and_then(|s| s["committed"].as_u64());
                let applied = nodes
                    .iter()
                    .find(|s| s["id"].as_u64() == Some(n as u64))
                    .and_then(|s| s["applied"].as_u64());
                if let (Some(c), Some(a)) = (leader_committed, applied) {
                    if a >= c {
                        return;
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "node {n} did not catch up within {within:?}; cluster status:\n{}",
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Retries `docker run` for up to `within` (a leader election may be under way); each failed
/// attempt's leftover container is removed.
fn run_eventually(lab: &Lab, n: usize, name: &str, within: Duration) -> IpAddr {
    let deadline = Instant::now() + within;
    loop {
        let o = lab.run(n, name);
        if o.status.success() {
            return lab.ip_of(n, name);
        }
        let _ = lab.docker(n, &["rm", "-f", name]);
        assert!(
            Instant::now() < deadline,
            "docker run {name} on h{n} kept failing for {within:?}:\n{}",
            text(&o)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// 1 and 2. Each host creates the macvlan network with raftipam's IPAM, the gateway and every
/// host's address as aux addresses; two containers on each host get addresses distinct
/// across the cluster, never a host's or the gateway's; the legacy host pings every one and
/// each address is answered by exactly one MAC. Then `check` across hosts, each with its own
/// dockerd: a leak of h2, seen by `check` on h2, is listed by `check` on h1 from h2's report,
/// and gone after `check --repair` on h2.
#[test]
fn lab_raftipam_addresses_unique_across_hosts_and_reachable() {
    let _g = lock();
    let lab = lab_or_skip!(
        "lab_raftipam_addresses_unique_across_hosts_and_reachable",
        Mode::Raftipam
    );
    lab.networks();
    for round in 0..2 {
        for n in 1..=3 {
            lab.run_ok(n, &format!("c{n}-{round}"));
        }
    }
    let held = lab.all_running(&[1, 2, 3]);
    assert_eq!(held.len(), 6, "{held:?}");
    assert_unique_and_not_reserved(&held);
    assert_cluster_agrees(&lab, 1, &held);
    assert_one_responder_each(&lab, &held);
    // On the wire too: each host's address is answered by that host alone, the gateway's
    // (no router in the lab) by nobody.
    for h in &RESERVED[1..4] {
        let (count, macs) = lab.arp(ip(h));
        assert_eq!(count, 1, "host address {h} answered by {macs:?}");
    }
    let (count, macs) = lab.arp(ip(RESERVED[0]));
    assert_eq!(count, 0, "the gateway address is answered by {macs:?}");
    eprintln!("addresses: {held:?}");

    // `check` across hosts, each with its own dockerd: a leak on h2 (an address allocated to
    // it that no container of its dockerd uses), found by `check` on h2 and written into the
    // cluster as h2's report; `check` on h1 (its own dockerd clean) lists h2's leak from that
    // report and exits 1; after `check --repair` on h2, `check` on h1 passes.
    let o = lab.raftipam(1, &["addr", "alloc", POOL, "--owner", "h2/ghost"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("addr alloc --json");
    let ghost = v["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .map(ip)
        .unwrap_or_else(|| panic!("no address in {v}"));
    let check = |n: usize, extra: &[&str]| {
        let sock = lab.dir.join(format!("h{n}/docker.sock"));
        let host = format!("h{n}");
        let mut a = vec!["check", "--host", &host, "--docker-host"];
        let sock = sock.display().to_string();
        a.push(&sock);
        a.extend_from_slice(extra);
        lab.raftipam(n, &a)
    };
    let o = check(2, &[]);
    assert_eq!(o.status.code(), Some(1), "check on h2: {}", text(&o));
    let o = check(1, &[]);
    assert_eq!(o.status.code(), Some(1), "check on h1: {}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("check --json");
    assert_eq!(
        v["leaked"].as_array().map(Vec::len),
        Some(0),
        "h1 is clean: {v}"
    );
    let h2 = v["others"]
        .as_array()
        .and_then(|o| o.iter().find(|h| h["host"] == "h2"))
        .unwrap_or_else(|| panic!("h2 not among the others: {v}"));
    assert_eq!(h2["status"], "reported", "{v}");
    let leaked: Vec<&str> = h2["leaked"]
        .as_array()
        .expect("leaked")
        .iter()
        .filter_map(|l| l["allocation"]["addr"].as_str())
        .collect();
    assert_eq!(leaked, vec![ghost.to_string().as_str()], "{v}");
    assert_eq!(v["across_hosts"].as_array().map(Vec::len), Some(0), "{v}");
    let o = check(2, &["--repair", "--min-age", "0s"]);
    assert!(o.status.success(), "check --repair on h2: {}", text(&o));
    let o = check(1, &[]);
    assert!(
        o.status.success(),
        "check on h1 after the repair: {}",
        text(&o)
    );
    assert!(
        !lab.allocations(1).iter().any(|(a, _)| *a == ghost),
        "the leak is released"
    );
}

/// 3. The leader's host dies (its node and dockerd killed -9; its containers stay, as in a
///    dockerd crash): the other two hosts elect a leader and keep starting containers with
///    unique addresses. The host comes back, its node catches up, its dockerd starts
///    containers again; nothing is held twice and every address has one ARP responder.
#[test]
fn lab_raftipam_host_dies_and_comes_back() {
    let _g = lock();
    let lab = lab_or_skip!("lab_raftipam_host_dies_and_comes_back", Mode::Raftipam);
    lab.networks();
    for n in 1..=3 {
        lab.run_ok(n, &format!("before{n}"));
    }
    let v = leader(&lab);
    let others: Vec<usize> = (1..=3).filter(|&n| n != v).collect();
    let victims = (v, format!("before{v}"), lab.ip_of(v, &format!("before{v}")));
    let victims_mac = lab.mac_of(v, &victims.1);
    lab.sh_ok("kill-host", &[&v.to_string()]);
    for round in 0..2 {
        for &n in &others {
            // The election after the kill is covered by the write timeout; allow a retry.
            run_eventually(
                &lab,
                n,
                &format!("while{n}-{round}"),
                Duration::from_secs(30),
            );
        }
    }
    let mut held = lab.all_running(&others);
    assert_eq!(held.len(), 6, "{held:?}");
    assert_one_responder_each(&lab, &held);
    // The dead host's container still runs (containerd lives on) and keeps its address.
    let (count, macs) = lab.arp(victims.2);
    assert_eq!(
        (count, macs),
        (1, vec![victims_mac]),
        "ARP for {}",
        victims.2
    );
    held.push(victims);
    assert_unique_and_not_reserved(&held);
    assert_cluster_agrees(&lab, others[0], &held);

    // Back: same data; its node rejoins and catches up, its dockerd restarts (and, without
    // live-restore, stops the containers it had, releasing their addresses).
    lab.sh_ok("start-host", &[&v.to_string()]);
    wait_caught_up(&lab, v, Duration::from_secs(60));
    let after = run_eventually(&lab, v, "after", Duration::from_secs(60));
    let held = lab.all_running(&[1, 2, 3]);
    assert!(
        held.iter().any(|(n, c, _)| *n == v && c == "after"),
        "{held:?}"
    );
    assert!(!RESERVED.contains(&after.to_string().as_str()));
    assert_unique_and_not_reserved(&held);
    assert_cluster_agrees(&lab, v, &held);
    assert_one_responder_each(&lab, &held);
}

/// 4. The leader's host is cut off from the LAN (its bridge port down): it cannot allocate
///    and says so within the timeout, while the other two elect a leader and go on. After the
///    link is back, no address is held twice, the cut-off host's earlier container keeps its
///    address and the host allocates again.
#[test]
fn lab_raftipam_host_cut_off_then_heals() {
    let _g = lock();
    let lab = lab_or_skip!("lab_raftipam_host_cut_off_then_heals", Mode::Raftipam);
    lab.networks();
    for n in 1..=3 {
        lab.run_ok(n, &format!("before{n}"));
    }
    let v = leader(&lab);
    let others: Vec<usize> = (1..=3).filter(|&n| n != v).collect();
    let before = format!("before{v}");
    let before_addr = lab.ip_of(v, &before);

    lab.sh_ok("cut", &[&v.to_string()]);
    let t = Instant::now();
    let o = lab.run(v, "cut");
    let took = t.elapsed();
    let err = text(&o);
    assert!(
        !o.status.success(),
        "a container on the cut-off host got an address: {err}"
    );
    assert!(
        err.contains("no quorum") || err.contains("no leader"),
        "the cut-off host's error does not say why: {err}"
    );
    assert!(took < Duration::from_secs(30), "docker run waited {took:?}");
    eprintln!("cut-off h{v} refused in {took:?}: {}", err.trim());
    let _ = lab.docker(v, &["rm", "-f", "cut"]);
    for round in 0..2 {
        for &n in &others {
            run_eventually(
                &lab,
                n,
                &format!("while{n}-{round}"),
                Duration::from_secs(30),
            );
        }
    }
    let held = lab.all_running(&others);
    assert_unique_and_not_reserved(&held);
    assert_cluster_agrees(&lab, others[0], &held);
    for (n, c, a) in &held {
        assert!(
            lab.ping(*a),
            "the legacy host cannot ping {a} ({c} on h{n})"
        );
    }

    lab.sh_ok("heal", &[&v.to_string()]);
    wait_caught_up(&lab, v, Duration::from_secs(60));
    run_eventually(&lab, v, "after", Duration::from_secs(60));
    assert_eq!(
        lab.ip_of(v, &before),
        before_addr,
        "{before} on h{v} lost its address"
    );
    let held = lab.all_running(&[1, 2, 3]);
    assert_eq!(held.len(), 3 + 4 + 1, "{held:?}");
    assert_unique_and_not_reserved(&held);
    assert_cluster_agrees(&lab, v, &held);
    assert_one_responder_each(&lab, &held);
}

/// 5. The same lab with Docker's default IPAM shows the problem: each host hands out the same
///    first addresses, and those addresses have several ARP responders on the LAN.
#[test]
fn lab_default_ipam_hands_out_duplicates() {
    let _g = lock();
    let lab = lab_or_skip!("lab_default_ipam_hands_out_duplicates", Mode::Default);
    lab.networks();
    for round in 0..2 {
        for n in 1..=3 {
            lab.run_ok(n, &format!("c{n}-{round}"));
        }
    }
    let held = lab.all_running(&[1, 2, 3]);
    assert_eq!(held.len(), 6, "{held:?}");
    let distinct: BTreeSet<IpAddr> = held.iter().map(|(_, _, a)| *a).collect();
    assert!(
        distinct.len() < held.len(),
        "default IPAM gave distinct addresses: the lab cannot show the problem: {held:?}"
    );
    let dup = *held
        .iter()
        .map(|(_, _, a)| a)
        .find(|a| held.iter().filter(|(_, _, b)| b == *a).count() == 3)
        .expect("an address every host handed out");
    let (count, macs) = lab.arp(dup);
    assert_eq!(
        count, 3,
        "{dup} is held on three hosts; ARP answers: {macs:?}"
    );
    eprintln!("default IPAM: {held:?}; {dup} answered by {count} responders");
}

/// Podman in a lab host, with its own storage and configuration; its containers are removed
/// when dropped (before the lab goes).
struct LabPodman<'a> {
    lab: &'a Lab,
    host: &'static str,
    dir: PathBuf,
}

impl LabPodman<'_> {
    fn cmd(&self, args: &[&str]) -> Output {
        let conf = self.dir.join("containers.conf");
        let (root, runroot) = (self.dir.join("root"), self.dir.join("runroot"));
        let mut all: Vec<String> = ["in", self.host, "env"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        all.push(format!("CONTAINERS_CONF={}", conf.display()));
        all.extend(
            [
                "timeout",
                "120",
                "podman",
                "--root",
                &root.display().to_string(),
                "--runroot",
                &runroot.display().to_string(),
                "--storage-driver",
                "vfs",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        all.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        self.lab.sh(refs[0], &refs[1..])
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "podman {args:?} in {}:\n{}",
            self.host,
            text(&o)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for LabPodman<'_> {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-af", "-t", "0"]);
    }
}

/// 5. One pool on the LAN for three kinds of host: h1 runs Docker containers, h2 Podman
///    containers (its CNI backend, a macvlan conflist naming raftipam, through h2's node as
///    its agent), h3 a bare CNI attachment (Debian's macvlan plugin run as a runtime runs it,
///    for a namespace the test made). The legacy host holds the range's first address,
///    declared nowhere: the first host to probe it quarantines it (`addr conflicts` names the
///    legacy MAC) and no container gets it. Every address distinct and not reserved, each
///    answered on the wire by one MAC and reachable from the legacy host; `podman rm` gives
///    its address back.
#[test]
fn lab_raftipam_docker_podman_and_bare_cni_share_the_lan() {
    let test = "lab_raftipam_docker_podman_and_bare_cni_share_the_lan";
    if !podman_ready(test) {
        return;
    }
    let _g = lock();
    let lab = lab_or_skip!(test, Mode::Raftipam);
    // The legacy host also holds 10.231.0.2, the first address of the range, declared nowhere:
    // every host probes before handing an address out, so no container ever gets it.
    lab.sh_ok(
        "legacy",
        &["ip", "addr", "add", "10.231.0.2/24", "dev", "eth0"],
    );
    let legacy_link = lab.sh_ok("legacy", &["ip", "-o", "link", "show", "eth0"]);
    let legacy_mac = legacy_link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("the legacy host's MAC")
        .to_string();
    lab.networks();
    let mut held: Vec<(usize, String, IpAddr)> = Vec::new();
    for i in 0..2 {
        let name = format!("docker-{i}");
        let a = lab.run_ok(1, &name);
        held.push((1, name, a));
    }
    // The CNI configuration every CNI host uses: the Docker network's pool, its gateway, the
    // hosts' addresses excluded (Docker's --aux-address for the same network).
    let ipam = |n: usize| {
        serde_json::json!({"type": "raftipam", "subnet": "10.231.0.0/24", "gateway": "10.231.0.1",
            "exclude": ["10.231.0.11-10.231.0.13", "10.231.0.20"],
            "socket": lab.dir.join(format!("h{n}/cni.sock")).display().to_string()})
    };
    let cni_bin = lab.dir.join("cni-bin");
    std::fs::create_dir_all(&cni_bin).unwrap();
    std::os::unix::fs::symlink(BIN, cni_bin.join("raftipam")).unwrap();

    // h2: Podman.
    let pm = LabPodman {
        lab: &lab,
        host: "h2",
        dir: lab.dir.join("podman"),
    };
    let netd = pm.dir.join("net.d");
    std::fs::create_dir_all(&netd).unwrap();
    std::fs::write(pm.dir.join("containers.conf"), podman_conf(&cni_bin, &netd)).unwrap();
    let conflist = serde_json::json!({"cniVersion": "1.0.0", "name": NET, "plugins": [
        {"type": "macvlan", "master": "eth0", "mode": "bridge", "ipam": ipam(2)}]});
    std::fs::write(netd.join("lan.conflist"), conflist.to_string()).unwrap();
    pm.ok(&[
        "import",
        &lab.dir.join("rootfs.tar").display().to_string(),
        "localhost/rt-busybox",
    ]);
    for i in 0..2 {
        let name = format!("podman-{i}");
        pm.ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            NET,
            "localhost/rt-busybox",
            "sleep",
            "1d",
        ]);
        let a = pm.ok(&[
            "inspect",
            &name,
            "--format",
            "{{.NetworkSettings.Networks.lan.IPAddress}}",
        ]);
        held.push((2, name, ip(&a)));
    }

    // h3: a bare CNI attachment through Debian's macvlan plugin.
    let env = std::fs::read_to_string(lab.dir.join("lab.env")).expect("lab.env");
    let id = env
        .lines()
        .find_map(|l| l.strip_prefix("LAB_ID="))
        .expect("LAB_ID")
        .to_string();
    let bare = format!("{id}-bare");
    let _ = Command::new("ip").args(["netns", "add", &bare]).status();
    struct DelNetns(String);
    impl Drop for DelNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _bare_guard = DelNetns(bare.clone());
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "bare", "type": "macvlan",
        "master": "eth0", "mode": "bridge", "ipam": ipam(3)});
    let cni_path = format!("{}:{REFERENCE_PLUGINS}", cni_bin.display());
    let netns = format!("/var/run/netns/{bare}");
    let (code, r) = exec_plugin(
        &format!("{REFERENCE_PLUGINS}/macvlan"),
        Some(&format!("{id}-h3")),
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "bare-1"),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", &cni_path),
        ],
        &conf,
    );
    assert_eq!(code, 0, "macvlan ADD on h3: {r}");
    let a = r["ips"][0]["address"].as_str().expect("address");
    held.push((3, "bare-1".into(), ip(a.split('/').next().unwrap())));

    eprintln!("addresses: {held:?}");
    assert_unique_and_not_reserved(&held);
    assert!(
        !held.iter().any(|(_, _, a)| *a == ip("10.231.0.2")),
        "the legacy host's undeclared address was handed out: {held:?}"
    );
    let o = lab.raftipam(1, &["addr", "conflicts"]);
    assert!(o.status.success(), "addr conflicts: {}", text(&o));
    let c: Value = serde_json::from_slice(&o.stdout).expect("addr conflicts --json");
    let q: Vec<(String, String)> = c["quarantined"]
        .as_array()
        .expect("quarantined")
        .iter()
        .map(|x| {
            (
                x["record"]["addr"].as_str().unwrap_or("").to_string(),
                x["record"]["mac"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        q,
        vec![("10.231.0.2".to_string(), legacy_mac.clone())],
        "the legacy host's address, quarantined with its MAC: {c}"
    );
    let owners: BTreeMap<IpAddr, String> = {
        let o = lab.raftipam(1, &["addr", "ls", POOL]);
        let v: Value = serde_json::from_slice(&o.stdout).expect("addr ls --json");
        v.as_array()
            .expect("array")
            .iter()
            .map(|x| {
                (
                    ip(x["addr"].as_str().unwrap()),
                    format!(
                        "{}/{}",
                        x["owner"]["host"].as_str().unwrap(),
                        x["owner"]["endpoint"].as_str().unwrap_or("")
                    ),
                )
            })
            .collect()
    };
    for (n, name, a) in &held {
        let owner = owners
            .get(a)
            .unwrap_or_else(|| panic!("{a} ({name}) not held: {owners:?}"));
        assert!(
            owner.starts_with(&format!("h{n}/")),
            "{a} of {name} held by {owner}"
        );
        if *n > 1 {
            assert!(owner.contains("/cni:"), "{a} of {name} held by {owner}");
        }
        assert!(
            lab.ping(*a),
            "{name} ({a}) on h{n} is not reachable from the legacy host"
        );
        let (count, macs) = lab.arp(*a);
        assert_eq!(count, 1, "{a} ({name}) answered by {macs:?}");
    }
    let gone = held[2].2;
    pm.ok(&["rm", "-f", "-t", "0", "podman-0"]);
    assert!(
        !lab.allocations(1).iter().any(|(a, _)| *a == gone),
        "podman rm gave {gone} back"
    );
}

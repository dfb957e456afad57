//! A rolling upgrade under load, with real processes: three nodes of the previous release
//! (0.1.0, built by `scripts/old-release.sh`, named by `RAFTIPAM_OLD_BIN`) and a Docker
//! plugin shim of each release, the chaos workload allocating, releasing and reading all the
//! while; the nodes are replaced one at a time (stop, swap, start; the leader last), one of
//! them rolled back to the old release and forward again before the cluster version is
//! raised. It asserts that writes commit throughout (no gap over 10 s), that the new
//! release's operation is refused with the gating error until `raftipam cluster upgrade`
//! and works after, that an old shim serves through new nodes and a new shim through old
//! ones, that an old binary then refuses the upgraded data directory and says why, and that
//! the replicas end byte-identical with no anomaly in the history.
//!
//! `RAFTIPAM_UPGRADE_NODES=5` runs it on five nodes (on demand; CI runs three).
//!
//! Without `RAFTIPAM_OLD_BIN` the test says SKIP (and fails under `CI=true`, where
//! `scripts/test.sh` always builds the old release).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocator_core::{AllocError, Op, PoolId, PoolSpec};
use raft_node::api::{ApiError, Query, QueryReply};
use raft_node::{Client, ClientConfig, ClientError};
use raftipam_chaos::workload::{self, Recorder, Workload};
use raftipam_history::{check, parse_history, FinalState};

// The bounded wait of raft-node's in-process harness.
#[path = "../../../raft-node/tests/in_process/mod.rs"]
mod in_process;
use in_process::{eventually, free_addr};

/// The binary built with this test (beside the harness in the target directory).
fn new_bin() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_raftipam-chaos")).with_file_name("raftipam")
}

/// One node process and where it keeps its data.
struct Node {
    id: u64,
    addr: String,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, bin: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(bin)
            .args(["node", "--id", &self.id.to_string(), "--listen", &self.addr])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--snapshot-every", "300", "--keep-logs", "50"])
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a node");
        self.child = Some(child);
    }

    /// SIGTERM, then SIGKILL after 20 s.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn client(endpoints: &[String]) -> Client {
    Client::with_config(
        endpoints,
        ClientConfig {
            timeout: Duration::from_secs(20),
            ..Default::default()
        },
    )
    .expect("client")
}

fn cli(args: &[&str]) -> Output {
    Command::new(new_bin())
        .args(args)
        .output()
        .expect("run raftipam")
}

fn cli_ok(args: &[&str]) -> String {
    let o = cli(args);
    assert!(
        o.status.success(),
        "raftipam {args:?}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The node's own status, asked of it alone.
async fn status_of(addr: &str) -> Option<raft_node::NodeStatus> {
    let c = Client::with_config(
        [addr],
        ClientConfig {
            timeout: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .ok()?;
    c.node_status(0).await.ok()
}

/// Waits until node `addr` answers and has applied at least `index`.
async fn caught_up(addr: &str, index: u64) {
    eventually(90, &format!("{addr} to catch up to {index}"), || async {
        status_of(addr)
            .await
            .filter(|s| s.applied.unwrap_or(0) >= index && s.leader.is_some())
            .map(|_| ())
    })
    .await;
}

/// The highest index any node has committed.
async fn committed(nodes: &[Node]) -> u64 {
    let mut best = 0;
    for n in nodes {
        if let Some(s) = status_of(&n.addr).await {
            best = best.max(s.committed.unwrap_or(0));
        }
    }
    best
}

/// The leader of the highest term any node reports (a restarted leader may call itself
/// leader of an older term until it hears of the new one).
async fn leader(nodes: &[Node]) -> u64 {
    eventually(60, "a leader", || async {
        let mut best: Option<(u64, u64)> = None;
        for n in nodes {
            if let Some(s) = status_of(&n.addr).await {
                if let Some(l) = s.leader {
                    if best.is_none_or(|(t, _)| s.term > t) {
                        best = Some((s.term, l));
                    }
                }
            }
        }
        best.map(|(_, l)| l)
    })
    .await
}

/// One call of Docker's IPAM protocol to the plugin at `socket` (HTTP/1.1 over a unix
/// socket, as dockerd makes it); the status and the JSON answer.
fn plugin_call(socket: &Path, method: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("plugin socket");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let body = body.to_string();
    write!(
        s,
        "POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("answer");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json = out
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// A container's life through a shim: an address from the pool, then given back.
fn through_shim(socket: &Path, pool_id: &str, name: &str) {
    let (code, got) = plugin_call(
        socket,
        "IpamDriver.RequestAddress",
        &serde_json::json!({"PoolID": pool_id, "Address": "", "Options": {"com.docker.network.endpoint.name": name}}),
    );
    assert_eq!(
        code,
        200,
        "RequestAddress through {}: {got}",
        socket.display()
    );
    let addr = got["Address"].as_str().expect("an address").to_string();
    let ip = addr.split('/').next().expect("ip").to_string();
    let (code, got) = plugin_call(
        socket,
        "IpamDriver.ReleaseAddress",
        &serde_json::json!({"PoolID": pool_id, "Address": ip}),
    );
    assert_eq!(
        code,
        200,
        "ReleaseAddress through {}: {got}",
        socket.display()
    );
}

fn shim(bin: &Path, endpoint: &str, socket: &Path, host: &str, log: &Path) -> Child {
    Command::new(bin)
        .args(["shim", "--endpoints", endpoint, "--host", host])
        .arg("--socket")
        .arg(socket)
        .args(["--reconcile-interval", "0s", "--heartbeat-interval", "2s"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("start a shim")
}

fn gated_op() -> Op {
    Op::AddJoinTokenUses {
        hash: "a".repeat(64),
        expires_ms: raft_node::now_ms() + 3_600_000,
        uses: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_upgrade_under_load_never_stops_the_cluster() {
    let Some(old) = std::env::var_os("RAFTIPAM_OLD_BIN").map(PathBuf::from) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "RAFTIPAM_OLD_BIN is not set: scripts/test.sh builds the previous release (scripts/old-release.sh) and names it"
        );
        eprintln!("\n*** SKIP rolling upgrade: RAFTIPAM_OLD_BIN is not set (bash scripts/old-release.sh builds it) ***\n");
        return;
    };
    let new = new_bin();
    assert!(
        new.is_file(),
        "no {} (cargo test --workspace builds it)",
        new.display()
    );
    // 3 nodes in CI; RAFTIPAM_UPGRADE_NODES=5 runs the 5-node variant on demand.
    let n: u64 = std::env::var("RAFTIPAM_UPGRADE_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| [3, 5].contains(n))
        .unwrap_or(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes: Vec<Node> = (1..=n)
        .map(|id| Node {
            id,
            addr: free_addr().to_string(),
            dir: dir.path().join(format!("n{id}")),
            log: dir.path().join(format!("n{id}.log")),
            child: None,
        })
        .collect();
    let endpoints: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    for n in &mut nodes {
        n.start(&old);
    }
    // Formed by the new CLI: a new client talking to old nodes.
    eventually(60, "node 1 to answer", || status_of(&nodes[0].addr)).await;
    cli_ok(&["--endpoints", &nodes[0].addr, "cluster", "init"]);
    for n in &nodes[1..] {
        cli_ok(&[
            "--endpoints",
            &nodes[0].addr,
            "--timeout",
            "2m",
            "cluster",
            "add",
            "--id",
            &n.id.to_string(),
            "--addr",
            &n.addr,
        ]);
    }
    let admin = client(&endpoints);

    // A shim of each release, each through a node of its own.
    let (sock_old, sock_new) = (dir.path().join("old.sock"), dir.path().join("new.sock"));
    let mut shims = [
        shim(
            &old,
            &nodes[0].addr,
            &sock_old,
            "h-old",
            &dir.path().join("shim-old.log"),
        ),
        shim(
            &new,
            &nodes[1].addr,
            &sock_new,
            "h-new",
            &dir.path().join("shim-new.log"),
        ),
    ];
    for s in [&sock_old, &sock_new] {
        eventually(30, "the shim's socket", || async {
            s.exists().then_some(())
        })
        .await;
    }
    let (code, pool) = plugin_call(
        &sock_new,
        "IpamDriver.RequestPool",
        &serde_json::json!({"AddressSpace": "global", "Pool": "10.241.0.0/24", "SubPool": "", "Options": {}, "V6": false}),
    );
    assert_eq!(code, 200, "RequestPool: {pool}");
    let shim_pool = pool["PoolID"].as_str().expect("a pool id").to_string();
    // A new shim through an old node.
    through_shim(&sock_new, &shim_pool, "before-new");
    through_shim(&sock_old, &shim_pool, "before-old");

    // The chaos workload, all along.
    let spec = PoolSpec::new("global").subnet("10.240.0.0/24".parse().expect("subnet"));
    let pool: PoolId = admin.create_pool(spec, "chaos").await.expect("pool");
    let start = Instant::now();
    let history_path = dir.path().join("history.jsonl");
    let rec = Arc::new(Recorder::new(
        std::fs::File::create(&history_path).expect("history"),
        start,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let work = tokio::spawn(workload::run(
        Workload {
            endpoints: endpoints.clone(),
            pool: pool.clone(),
            hot: (2..34)
                .map(|i| format!("10.240.0.{i}").parse().expect("ip"))
                .collect(),
            clients: 4,
            call_timeout: Duration::from_secs(4),
            seed: 24,
            tls: None,
            // The cluster starts on 0.1.0 (cluster version 1): no conflict reports.
            conflicts: false,
        },
        rec.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rolling_from = start.elapsed();

    // The rolling upgrade: followers first, the leader last.
    let lead = leader(&nodes).await;
    let all = 0..nodes.len();
    let mut order: Vec<usize> = all.clone().filter(|i| nodes[*i].id != lead).collect();
    order.push(
        all.clone()
            .find(|i| nodes[*i].id == lead)
            .expect("the leader"),
    );
    for (k, &i) in order.iter().enumerate() {
        let at = committed(&nodes).await;
        nodes[i].stop();
        if k + 1 == nodes.len() {
            // The leader stays down until the upgraded members have elected a leader among
            // themselves (as a package swap takes longer than an election), then comes back.
            let others: Vec<String> = nodes
                .iter()
                .filter(|n| n.id != lead)
                .map(|n| n.addr.clone())
                .collect();
            let new_leader = eventually(30, "a leader among the upgraded members", || {
                let others = others.clone();
                async move {
                    for a in &others {
                        if let Some(l) = status_of(a).await.and_then(|s| s.leader) {
                            if l != lead {
                                return Some(l);
                            }
                        }
                    }
                    None
                }
            })
            .await;
            eprintln!(
                "{:?}: node {new_leader} leads while node {lead} is down",
                start.elapsed()
            );
        }
        nodes[i].start(&new);
        caught_up(&nodes[i].addr, at).await;
        eprintln!(
            "{:?}: node {} runs {} (leader {})",
            start.elapsed(),
            nodes[i].id,
            env!("CARGO_PKG_VERSION"),
            leader(&nodes).await
        );
        if k == 0 {
            // Rolled back before the raise: the old release rejoins, then forward again.
            let at = committed(&nodes).await;
            nodes[i].stop();
            nodes[i].start(&old);
            caught_up(&nodes[i].addr, at).await;
            let at = committed(&nodes).await;
            nodes[i].stop();
            nodes[i].start(&new);
            caught_up(&nodes[i].addr, at).await;
        }
        if k + 2 == nodes.len() {
            // One member still runs the old release: the raise is refused, naming it.
            let o = cli(&["--endpoints", &nodes[i].addr, "cluster", "upgrade"]);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                !o.status.success(),
                "cluster upgrade with an old member: {err}"
            );
            assert!(
                err.contains("0.1.x") && err.contains(&format!("node {lead}")),
                "{err}"
            );
        }
    }
    let rolled = start.elapsed();

    // Every member runs the new release; the cluster version is still 1: the new operation
    // is refused with the gating error, before it reaches the log.
    let e = admin.apply(gated_op()).await.expect_err("gated");
    assert!(
        matches!(
            &e,
            ClientError::Api(ApiError::Alloc(AllocError::NeedsClusterVersion {
                needs: 2,
                current: 1,
                ..
            }))
        ),
        "{e}"
    );
    assert!(e.to_string().contains("raftipam cluster upgrade"), "{e}");
    // An old shim through new nodes.
    through_shim(&sock_old, &shim_pool, "after-old");
    through_shim(&sock_new, &shim_pool, "after-new");

    let out = cli_ok(&["--endpoints", &nodes[0].addr, "cluster", "upgrade"]);
    assert!(out.contains("raised to 2"), "{out}");
    admin
        .apply(gated_op())
        .await
        .expect("allowed at cluster version 2");
    let listed = cli_ok(&[
        "--endpoints",
        &endpoints.join(","),
        "--json",
        "cluster",
        "status",
    ]);
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
    for m in listed.as_array().expect("members") {
        assert_eq!(m["version"], env!("CARGO_PKG_VERSION"), "{m}");
        assert_eq!(m["cluster_version"], 2, "{m}");
    }

    // Let the workload run on the raised cluster, then stop it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    work.await.expect("workload");
    rec.flush();

    // The old release now refuses an upgraded data directory, and says why.
    let last = order[0];
    eventually(
        30,
        "the data directory's record to say cluster version 2",
        || async {
            std::fs::read_to_string(nodes[last].dir.join("raftipam-node.json"))
                .ok()
                .filter(|t| t.contains("\"needs\""))
                .map(|_| ())
        },
    )
    .await;
    let at = committed(&nodes).await;
    for n in &nodes {
        caught_up(&n.addr, at).await;
    }
    nodes[last].stop();
    let refused = Command::new(&old)
        .args([
            "node",
            "--id",
            &nodes[last].id.to_string(),
            "--listen",
            &free_addr().to_string(),
        ])
        .arg("--data-dir")
        .arg(&nodes[last].dir)
        .output()
        .expect("run the old release");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "the old release started on an upgraded directory: {err}"
    );
    assert!(err.contains("data format version 2"), "{err}");
    nodes[last].start(&new);
    caught_up(&nodes[last].addr, at).await;

    for s in &mut shims {
        let _ = s.kill();
        let _ = s.wait();
    }

    // Replicas byte-identical, and the history without an anomaly.
    let final_index = committed(&nodes).await;
    let mut snaps = Vec::new();
    let mut replicas = std::collections::BTreeMap::new();
    for n in &nodes {
        caught_up(&n.addr, final_index).await;
        let c = client(std::slice::from_ref(&n.addr));
        let QueryReply::Snapshot(b) = c
            .query_node(0, Query::Snapshot)
            .await
            .expect("a local snapshot")
        else {
            panic!("not a snapshot");
        };
        snaps.push(b);
        let QueryReply::AllAllocations(all) = c
            .query_node(0, Query::AllAllocations)
            .await
            .expect("allocations")
        else {
            panic!("not allocations");
        };
        replicas.insert(
            n.id,
            all.into_iter()
                .filter(|(p, _)| *p == pool)
                .map(|(_, a)| (a.addr, a.owner.to_string()))
                .collect(),
        );
    }
    assert!(
        snaps.windows(2).all(|w| w[0] == w[1]),
        "the replicas differ after the upgrade"
    );
    let text = std::fs::read_to_string(&history_path).expect("history");
    let history = parse_history(&text).expect("history parses");
    let report = check(
        &history,
        &FinalState {
            replicas,
            digests: Default::default(),
        },
    );
    assert!(report.passed(), "anomalies:\n{report}");
    assert!(
        report.summary.ok() >= 200,
        "only {} operations succeeded",
        report.summary.ok()
    );
    // Writes committed throughout the rolling upgrade: no gap over 10 s between two
    // successful operations.
    let mut oks: Vec<u64> = history
        .events
        .iter()
        .filter(|e| e.kind.as_str() == "ok")
        .map(|e| e.t_ns)
        .filter(|t| {
            let t = Duration::from_nanos(*t);
            t >= rolling_from && t <= rolled
        })
        .collect();
    oks.sort_unstable();
    let gap = oks
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .map(Duration::from_nanos)
        .unwrap_or(rolled);
    eprintln!(
        "rolling upgrade of {} nodes: {} operations ok, {} during the roll ({:?}), longest gap {gap:?}",
        nodes.len(),
        report.summary.ok(),
        oks.len(),
        rolled - rolling_from
    );
    assert!(
        gap < Duration::from_secs(10),
        "writes stopped for {gap:?} during the upgrade"
    );
}

//! The real `raftipam` binary as separate processes: SIGKILL of the leader and of every
//! node, restarts from disk, and bad input on the command line and in data directories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::binary::{Proc, BIN};
use crate::in_process::{assert_all_present, eventually, free_addr, spec};
use allocator_core::{Allocation, Owner, PoolId};
use raft_node::{AdminCommand, Client, ClientConfig};

struct Procs {
    /// The running nodes, SIGKILLed on drop — before `dir` is removed (fields drop in order).
    children: BTreeMap<u64, Proc>,
    dir: tempfile::TempDir,
    addrs: BTreeMap<u64, String>,
}

impl Procs {
    fn new() -> Procs {
        Procs {
            children: BTreeMap::new(),
            dir: tempfile::tempdir().expect("tempdir"),
            addrs: BTreeMap::new(),
        }
    }

    fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("n{id}"))
    }

    /// Starts (or restarts) node `id` as a process and waits until it answers.
    async fn start(&mut self, id: u64) {
        let addr = self
            .addrs
            .entry(id)
            .or_insert_with(|| free_addr().to_string())
            .clone();
        let log = self.dir.path().join(format!("n{id}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let node = Proc::start(
            Command::new(BIN)
                .args([
                    "node",
                    "--id",
                    &id.to_string(),
                    "--listen",
                    &addr,
                    "--data-dir",
                ])
                .arg(self.data_dir(id))
                .args(["--snapshot-every", "100", "--keep-logs", "20"])
                .stdout(Stdio::null())
                .stderr(file),
            log,
        )
        .kill_on_drop();
        self.children.insert(id, node);
        let c = Client::with_config(
            [addr],
            ClientConfig {
                timeout: Duration::from_secs(2),
                ..Default::default()
            },
        )
        .expect("client");
        eventually(60, "the node to answer", || {
            let c = c.clone();
            async move { c.status().await.ok() }
        })
        .await;
    }

    /// SIGKILL.
    fn kill(&mut self, id: u64) {
        if let Some(mut node) = self.children.remove(&id) {
            node.kill9();
        }
    }

    fn client(&self) -> Client {
        let eps: Vec<String> = self
            .children
            .keys()
            .map(|id| self.addrs[id].clone())
            .collect();
        Client::with_config(
            eps,
            ClientConfig {
                timeout: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .expect("client")
    }

    async fn leader(&self) -> u64 {
        let c = self.client();
        eventually(60, "a leader among the running nodes", || {
            let c = c.clone();
            async move {
                let s = c.status().await.ok()?;
                s.leader.filter(|l| self.children.contains_key(l))
            }
        })
        .await
    }

    /// Waits until every running node has applied the same index; returns their states,
    /// asserting that they are identical.
    async fn converged(&self) -> Vec<(PoolId, Allocation)> {
        let c = self.client();
        let n = self.children.len();
        eventually(60, "all nodes to apply the same index", || {
            let c = c.clone();
            async move {
                let mut applied = Vec::new();
                let mut committed = Vec::new();
                for i in 0..n {
                    let s = c.node_status(i).await.ok()?;
                    applied.push(s.applied);
                    committed.push(s.committed);
                }
                let max_c = committed.iter().copied().max().flatten();
                (applied.iter().all(|a| *a == applied[0])
                    && applied[0] >= max_c
                    && applied[0].is_some())
                .then_some(())
            }
        })
        .await;
        let mut states = Vec::new();
        for i in 0..n {
            states.push(crate::in_process::local_allocations(&c, i).await);
        }
        for s in &states {
            assert_eq!(s, &states[0], "the nodes' states differ");
        }
        states.swap_remove(0)
    }
}

async fn three_node_cluster() -> Procs {
    let mut p = Procs::new();
    for id in 1..=3 {
        p.start(id).await;
    }
    let c = p.client();
    c.admin(AdminCommand::Init).await.expect("init");
    for id in 2..=3 {
        c.admin(AdminCommand::AddNode {
            id,
            addr: p.addrs[&id].clone(),
        })
        .await
        .expect("add");
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_leader_and_then_of_every_node_loses_no_acknowledged_allocation() {
    let mut p = three_node_cluster().await;
    let client = p.client();
    let pool = client
        .create_pool(spec("10.70.0.0/16"), "h")
        .await
        .expect("pool");

    // Load from 8 workers; SIGKILL the leader once some of it is in.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8u32 {
        let (client, pool, acked) = (client.clone(), pool.clone(), acked.clone());
        tasks.spawn(async move {
            for i in 0..60u32 {
                let owner = Owner::new("load", format!("w{w}-{i}"));
                if let Ok(a) = client.allocate(&pool, None, owner.clone()).await {
                    acked.lock().unwrap().push((a.addr(), owner));
                }
            }
        });
    }
    eventually(60, "some allocations", || async {
        (acked.lock().unwrap().len() > 100).then_some(())
    })
    .await;
    let old = p.leader().await;
    p.kill(old);
    while tasks.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 400, "only {} acknowledged", acked.len());
    let new = p.leader().await;
    assert_ne!(new, old);
    let state = p.converged().await;
    assert_all_present(&acked, &state);
    // `raftipam status` through a survivor: degraded, the new leader, the killed one DOWN.
    let survivor = p.addrs[&new].clone();
    let out = run(&["--endpoints", &survivor, "--json", "status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(st["health"], "degraded", "{st}");
    assert_eq!(st["leader"], new, "{st}");
    let down: Vec<u64> = st["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["status"].is_null())
        .filter_map(|m| m["id"].as_u64())
        .collect();
    assert_eq!(down, vec![old], "{st}");
    let text = run(&["--endpoints", &survivor, "status"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("DEGRADED")
            && text.contains("DOWN")
            && text.contains(&format!("member {old}")),
        "{text}"
    );

    // The killed node restarts from its disk and catches up.
    p.start(old).await;
    assert_eq!(p.converged().await, state);

    // Every node killed at once, then restarted: the same state.
    for id in [1, 2, 3] {
        p.kill(id);
    }
    for id in [1, 2, 3] {
        p.start(id).await;
    }
    p.leader().await;
    let after = p.converged().await;
    assert_eq!(after, state);
    assert_all_present(&acked, &after);
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RAFTIPAM_ENDPOINTS")
        .output()
        .expect("run raftipam")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Starting a node on `dir` fails at once with a message containing `want`, and leaves the
/// directory's files as they were.
fn node_refuses(id: u64, dir: &Path, want: &str) {
    let before: Vec<(PathBuf, Vec<u8>)> = files_under(dir)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).expect("read");
            (p, b)
        })
        .collect();
    let addr = free_addr().to_string();
    let out = run(&[
        "node",
        "--id",
        &id.to_string(),
        "--listen",
        &addr,
        "--data-dir",
        dir.to_str().expect("utf-8 path"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "node started on {dir:?}: {err}");
    assert!(err.contains(want), "expected {want:?} in: {err}");
    let after: Vec<(PathBuf, Vec<u8>)> = files_under(dir)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).expect("read");
            (p, b)
        })
        .collect();
    let names = |v: &[(PathBuf, Vec<u8>)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&after),
        names(&before),
        "files were added or removed in {dir:?}"
    );
    // The database's own files are compared by name only (RocksDB may rotate its LOG);
    // everything else must be byte-identical.
    for ((p, a), (_, b)) in before.iter().zip(&after) {
        if !p.to_string_lossy().contains("/db/") {
            assert_eq!(a, b, "{p:?} changed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_directories_are_refused_with_a_clear_error_and_left_untouched() {
    let t = tempfile::tempdir().expect("tempdir");
    // A real data directory of node 1.
    let good = t.path().join("n1");
    {
        let mut p = Procs::new();
        p.dir = tempfile::tempdir_in(t.path()).expect("tempdir");
        p.start(1).await;
        p.kill(1);
        std::fs::rename(p.data_dir(1), &good).expect("move data dir");
    }
    // Wrong node id.
    node_refuses(2, &good, "holds the data of node 1, not node 2");
    // Foreign directory.
    let foreign = t.path().join("foreign");
    std::fs::create_dir(&foreign).expect("mkdir");
    std::fs::write(foreign.join("important.txt"), "do not touch").expect("write");
    node_refuses(1, &foreign, "is not a raftipam data directory");
    // Damaged metadata record.
    let damaged = t.path().join("damaged");
    std::fs::create_dir(&damaged).expect("mkdir");
    std::fs::write(damaged.join("raftipam-node.json"), "{not json").expect("write");
    node_refuses(1, &damaged, "is damaged");
    // Damaged database.
    std::fs::write(good.join("db").join("CURRENT"), "MANIFEST-424242\n").expect("write");
    node_refuses(1, &good, "is damaged");
}

#[test]
fn malformed_command_lines_fail_with_a_clear_error_before_contacting_anyone() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--endpoints",
                "127.0.0.1:1",
                "pool",
                "create",
                "10.0.0.0/33",
            ],
            "invalid value '10.0.0.0/33'",
        ),
        (
            &[
                "--endpoints",
                "127.0.0.1:1",
                "pool",
                "create",
                "10.0.0.0/24",
                "--gateway",
                "10.0.0.300",
            ],
            "invalid value '10.0.0.300'",
        ),
        (
            &[
                "--endpoints",
                "127.0.0.1:1",
                "pool",
                "create",
                "10.0.0.0/24",
                "--reserve",
                "10.0.0.9-10.0.0.2",
            ],
            "the first address is after the last",
        ),
        (
            &[
                "--endpoints",
                "127.0.0.1:1",
                "pool",
                "create",
                "10.0.0.0/24",
                "--cooldown",
                "soon",
            ],
            "invalid value 'soon'",
        ),
        (
            &[
                "--endpoints",
                "127.0.0.1:1",
                "addr",
                "alloc",
                "global/10.0.0.0",
                "--ip",
                "10.0.0.5",
            ],
            "invalid pool id",
        ),
        (
            &[
                "--endpoints",
                "127.0.0.1:1",
                "addr",
                "alloc",
                "10.0.0.0/24",
                "--ip",
                "ten",
            ],
            "invalid value 'ten'",
        ),
        (
            &[
                "--endpoints",
                "127.0.0.1:1",
                "addr",
                "alloc",
                "10.0.0.0/24",
                "--owner",
                "/x",
            ],
            "invalid owner",
        ),
        (
            &["--endpoints", "127.0.0.1:1", "addr", "who-has", "10.0.0"],
            "invalid value '10.0.0'",
        ),
        (
            &[
                "--endpoints",
                "127.0.0.1:1",
                "cluster",
                "add",
                "--id",
                "2",
                "--addr",
                "nohost",
            ],
            "is not HOST:PORT",
        ),
        (
            &[
                "node",
                "--id",
                "0",
                "--listen",
                "127.0.0.1:1",
                "--data-dir",
                "/nonexistent/x",
            ],
            "invalid value '0'",
        ),
        (
            &[
                "node",
                "--id",
                "1",
                "--listen",
                "localhost",
                "--data-dir",
                "/nonexistent/x",
            ],
            "invalid value 'localhost'",
        ),
        // No endpoint named: the one `up` listens on (nothing listens there in the tests).
        (&["pool", "ls", "--timeout", "1s"], "127.0.0.1:7379"),
        (
            &[
                "node",
                "--id",
                "1",
                "--listen",
                "0.0.0.0:0",
                "--data-dir",
                "/nonexistent/x",
                "--insecure",
            ],
            "needs an advertise address",
        ),
    ];
    for (args, want) in cases {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: expected {want:?} in: {err}");
    }
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["node", "--help"],
        &["cluster", "--help"],
        &["cluster", "init", "--help"],
        &["cluster", "add", "--help"],
        &["cluster", "remove", "--help"],
        &["cluster", "status", "--help"],
        &["pool", "--help"],
        &["pool", "create", "--help"],
        &["pool", "ls", "--help"],
        &["pool", "show", "--help"],
        &["pool", "delete", "--help"],
        &["addr", "--help"],
        &["addr", "alloc", "--help"],
        &["addr", "release", "--help"],
        &["addr", "ls", "--help"],
        &["addr", "who-has", "--help"],
        &["bench", "--help"],
    ] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage:"),
            "{args:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_a_cluster_end_to_end_with_json_output() {
    let mut p = Procs::new();
    p.start(1).await;
    let ep = p.addrs[&1].clone();
    let cli = |args: &[&str]| {
        let mut v = vec!["--endpoints", ep.as_str(), "--json"];
        v.extend_from_slice(args);
        let out = run(&v);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let fails = |args: &[&str], want: &str| {
        let mut v = vec!["--endpoints", ep.as_str()];
        v.extend_from_slice(args);
        let out = run(&v);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: expected {want:?} in: {err}");
    };
    // A node never initialised says so at once, with what to run, instead of waiting out the
    // timeout for a leader that cannot exist.
    let asked = std::time::Instant::now();
    fails(
        &["--timeout", "60s", "pool", "ls"],
        "not initialised: node 1",
    );
    fails(&["addr", "ls", "10.80.0.0/24"], "raftipam cluster init");
    fails(&["status"], "the cluster has no leader");
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "an uninitialised node made the client wait {:?}",
        asked.elapsed()
    );
    cli(&["cluster", "init"]);
    // No dockerd where `check` looks: it says which socket and what to do.
    fails(
        &["check", "--docker-host", "unix:///nonexistent/docker.sock"],
        "is dockerd running?",
    );
    fails(
        &["cluster", "init"],
        "already part of an initialised cluster",
    );
    let pool = cli(&[
        "pool",
        "create",
        "10.80.0.0/24",
        "--gateway",
        "10.80.0.1",
        "--reserve",
        "10.80.0.2-10.80.0.4",
        "--serial",
        "--cooldown",
        "30s",
    ]);
    assert_eq!(pool["id"]["space"], "global");
    fails(
        &["pool", "create", "10.80.0.128/25"],
        "overlaps pool global/10.80.0.0/24",
    );
    fails(
        &["pool", "show", "10.81.0.0/24"],
        "pool global/10.81.0.0/24 does not exist",
    );
    // A pool with a range is found by its bare subnet while it is the only one on it.
    cli(&[
        "pool",
        "create",
        "10.82.0.0/24",
        "--range",
        "10.82.0.128/25",
    ]);
    let r = cli(&["addr", "alloc", "10.82.0.0/24", "--owner", "h1/r"]);
    assert_eq!(r["address"], "10.82.0.128/24");
    cli(&["pool", "create", "10.82.0.0/24", "--range", "10.82.0.0/25"]);
    fails(
        &["addr", "ls", "10.82.0.0/24"],
        "name one of global/10.82.0.0/24/10.82.0.0/25, global/10.82.0.0/24/10.82.0.128/25",
    );
    // ... and then by SUBNET/RANGE, without the space.
    let ls = cli(&["addr", "ls", "10.82.0.0/24/10.82.0.128/25"]);
    assert_eq!(ls.as_array().map(|a| a.len()), Some(1), "{ls}");
    let a = cli(&["addr", "alloc", "10.80.0.0/24", "--owner", "h1/web"]);
    assert_eq!(a["address"], "10.80.0.5/24");
    let again = cli(&["addr", "alloc", "global/10.80.0.0/24", "--owner", "h1/web"]);
    assert_eq!(again["address"], "10.80.0.5/24");
    let who = cli(&["addr", "who-has", "10.80.0.5"]);
    assert_eq!(
        who[0]["Allocated"]["allocation"]["owner"]["endpoint"],
        "web"
    );
    let ls = cli(&["addr", "ls", "10.80.0.0/24"]);
    assert_eq!(ls.as_array().map(|a| a.len()), Some(1));
    fails(
        &[
            "addr",
            "alloc",
            "10.80.0.0/24",
            "--ip",
            "10.80.0.5",
            "--owner",
            "h2/db",
        ],
        "already held by h1/web",
    );
    fails(
        &[
            "addr",
            "alloc",
            "10.80.0.0/24",
            "--ip",
            "10.80.0.1",
            "--owner",
            "h2/db",
        ],
        "reserved",
    );
    // Another host may not release it; the owner may.
    fails(
        &[
            "addr",
            "release",
            "10.80.0.0/24",
            "10.80.0.5",
            "--host",
            "h2",
        ],
        "held by h1/web",
    );
    cli(&[
        "addr",
        "release",
        "10.80.0.0/24",
        "10.80.0.5",
        "--host",
        "h1",
    ]);
    let out = run(&["--endpoints", &ep, "pool", "delete", "10.80.0.0/24"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pools = cli(&["pool", "ls"]);
    assert_eq!(pools.as_array().map(|a| a.len()), Some(2));
    let bench = cli(&["bench", "--clients", "4", "--count", "200"]);
    assert_eq!(bench["phases"][0]["ops"], 200);
    // Many pools: created, filled round-robin, emptied and deleted again.
    let bench = cli(&["bench", "--clients", "4", "--count", "100", "--pools", "7"]);
    let phases: Vec<(&str, u64, u64)> = bench["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| {
            (
                p["phase"].as_str().expect("phase"),
                p["ops"].as_u64().expect("ops"),
                p["errors"].as_u64().expect("errors"),
            )
        })
        .collect();
    assert_eq!(
        phases,
        [("pools", 7, 0), ("allocate", 100, 0), ("release", 100, 0)],
        "{bench}"
    );
    assert_eq!(cli(&["pool", "ls"]).as_array().map(|a| a.len()), Some(2));
    // More addresses than the /24 pools hold: refused before anything is created.
    fails(
        &["bench", "--count", "1000", "--pools", "2"],
        "which holds 254",
    );
    assert_eq!(cli(&["pool", "ls"]).as_array().map(|a| a.len()), Some(2));
    let status = cli(&["cluster", "status"]);
    assert_eq!(status[0]["status"]["state"], "Leader");
    // `raftipam status`: healthy, the one node leading, the pools with their usage.
    let listed = cli(&["pool", "ls"]);
    let st = cli(&["status"]);
    assert_eq!(st["health"], "healthy", "{st}");
    assert_eq!(st["leader"], 1, "{st}");
    let summary = |pools: &serde_json::Value| -> Vec<(String, u64)> {
        pools
            .as_array()
            .expect("pools")
            .iter()
            .map(|p| {
                (
                    format!("{}/{}", p["id"]["space"], p["id"]["subnet"]),
                    p["usage"]["allocated"].as_u64().expect("allocated"),
                )
            })
            .collect()
    };
    assert!(!summary(&listed).is_empty());
    assert_eq!(summary(&st["pools"]), summary(&listed), "{st}");
    let text = run(&["--endpoints", &ep, "status"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.starts_with("cluster: HEALTHY — leader 1"), "{text}");
    let first = listed[0]["id"]["subnet"].as_str().expect("subnet");
    assert!(text.contains(first), "{text}");

    // Grow to two voters and shrink back with the CLI.
    p.start(2).await;
    let added = cli(&[
        "cluster",
        "add",
        "--id",
        "2",
        "--addr",
        &p.addrs[&2].clone(),
    ]);
    let voters = |s: &serde_json::Value| -> Vec<u64> {
        s["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter(|x| x["voter"] == true)
                    .filter_map(|x| x["id"].as_u64())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(voters(&added), vec![1, 2]);
    let removed = cli(&["cluster", "remove", "--id", "2"]);
    assert_eq!(voters(&removed), vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_every_node_in_the_middle_of_load_keeps_every_acknowledged_allocation() {
    let mut p = three_node_cluster().await;
    let client = Client::with_config(
        p.addrs.values().cloned(),
        ClientConfig {
            timeout: Duration::from_secs(3),
            ..Default::default()
        },
    )
    .expect("client");
    let pool = client
        .create_pool(spec("10.75.0.0/16"), "h")
        .await
        .expect("pool");
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..16u32 {
        let (client, pool, acked, stop) =
            (client.clone(), pool.clone(), acked.clone(), stop.clone());
        tasks.spawn(async move {
            for i in 0..10_000u32 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let owner = Owner::new("load", format!("w{w}-{i}"));
                if let Ok(a) = client.allocate(&pool, None, owner.clone()).await {
                    acked.lock().unwrap().push((a.addr(), owner));
                }
            }
        });
    }
    eventually(60, "load to be under way", || async {
        (acked.lock().unwrap().len() > 300).then_some(())
    })
    .await;
    // Every node at once, while writes are in flight.
    for id in [1, 2, 3] {
        p.kill(id);
    }
    let acked_at_kill = acked.lock().unwrap().clone();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    for id in [1, 2, 3] {
        p.start(id).await;
    }
    p.leader().await;
    let state = p.converged().await;
    assert_all_present(&acked_at_kill, &state);
    // Answers that arrived after the kill came from before it too: all present.
    assert_all_present(&acked.lock().unwrap(), &state);
}

/// A closed pipe ends a listing quietly (`raftipam pool ls | head -3`), as coreutils and
/// ripgrep do: status 0, no panic, no "Broken pipe" error. Checked for every command that
/// lists, in text and in JSON, with the reader gone before the first byte and, for a listing
/// far over a pipe's buffer, after the first lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_every_listing_quietly() {
    use std::io::{BufRead, BufReader};
    let mut p = Procs::new();
    p.start(1).await;
    let c = p.client();
    c.admin(AdminCommand::Init).await.expect("init");
    let pool = c
        .create_pool(spec("10.90.0.0/20"), "h1")
        .await
        .expect("pool");
    for i in 0..20 {
        c.create_pool(spec(&format!("10.91.{i}.0/24")), "h1")
            .await
            .expect("pool");
    }
    // 2,000 allocations with long names: `addr ls` prints far more than a pipe holds.
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let (c, pool) = (c.clone(), pool.clone());
        tasks.spawn(async move {
            for i in 0..250 {
                let owner = Owner {
                    host: "h1".into(),
                    endpoint: format!("container-{t}-{i:04}-{}", "x".repeat(60)),
                };
                c.allocate(&pool, None, owner).await.expect("allocate");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("allocating task");
    }
    let ep = p.addrs[&1].clone();
    let pool = pool.to_string();
    let listings: Vec<Vec<&str>> = vec![
        vec!["pool", "ls"],
        vec!["pool", "show", &pool],
        vec!["addr", "ls", &pool],
        vec!["addr", "who-has", "10.90.0.1"],
        vec!["host", "ls"],
        vec!["cluster", "status"],
        vec!["version"],
        vec!["completions", "bash"],
    ];
    let spawn = |args: &[&str], json: bool| {
        let mut cmd = Command::new(BIN);
        cmd.args(["--endpoints", &ep]);
        if json {
            cmd.arg("--json");
        }
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn raftipam")
    };
    let quiet = |args: &[&str], out: std::process::Output| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?} with its reader gone: {:?}\n{err}",
            out.status
        );
    };
    for args in &listings {
        for json in [false, true] {
            let mut child = spawn(args, json);
            drop(child.stdout.take()); // nobody reads: the first write meets a closed pipe
            quiet(args, child.wait_with_output().expect("wait"));
        }
    }
    // `raftipam addr ls POOL | head -3`.
    let mut child = spawn(&["addr", "ls", &pool], false);
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for _ in 0..3 {
        lines.next().expect("a line").expect("read a line");
    }
    drop(lines);
    quiet(
        &["addr", "ls", &pool],
        child.wait_with_output().expect("wait"),
    );
    // And the whole listing, read to the end, is all there.
    let all = run(&["--endpoints", &ep, "addr", "ls", &pool]);
    assert!(all.status.success());
    assert!(
        all.stdout.len() > 128 << 10 && all.stdout.iter().filter(|b| **b == b'\n').count() >= 2_000,
        "addr ls printed {} bytes",
        all.stdout.len()
    );
}

/// `GET path` over a plain TCP connection (HTTP/1.0), the whole answer.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_its_metrics_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, metrics) = (free_addr().to_string(), free_addr().to_string());
    let log = dir.path().join("n1.log");
    let _node = Proc::start(
        Command::new(BIN)
            .args([
                "node",
                "--id",
                "1",
                "--listen",
                &addr,
                "--metrics",
                &metrics,
            ])
            .arg("--data-dir")
            .arg(dir.path().join("n1"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file")),
        log,
    )
    .kill_on_drop();
    let page = eventually(60, "the metrics endpoint", || {
        let metrics = metrics.clone();
        async move {
            std::net::TcpStream::connect(&metrics)
                .is_ok()
                .then(|| http_get(&metrics, "/metrics"))
        }
    })
    .await;
    assert!(
        page.starts_with("HTTP/1.0 200") || page.starts_with("HTTP/1.1 200"),
        "{page}"
    );
    assert!(page.contains("raftipam_applied_index"), "{page}");
    assert!(page.trim_end().ends_with("# EOF"), "{page}");
}

/// SIGTERM ends a node promptly and cleanly while a browser holds the web view's live feed
/// open and a scraper keeps an idle connection to the metrics: those connections hold the
/// node's view, so they must end with it, or its database stays open (a restart by systemd
/// would then wait out the node's 10 s bound and warn).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_node_cleanly_with_web_and_metrics_connections_open() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, metrics, web) = (
        free_addr().to_string(),
        free_addr().to_string(),
        free_addr().to_string(),
    );
    let log = dir.path().join("n1.log");
    let mut node = Proc::start(
        Command::new(BIN)
            .args(["node", "--id", "1", "--listen", &addr])
            .args(["--metrics", &metrics, "--http", &web])
            .arg("--data-dir")
            .arg(dir.path().join("n1"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file")),
        log,
    )
    .with_grace(Duration::from_secs(60));
    eventually(60, "the web view", || {
        let web = web.clone();
        async move { std::net::TcpStream::connect(&web).is_ok().then_some(()) }
    })
    .await;
    assert!(run(&["--endpoints", &addr, "cluster", "init"])
        .status
        .success());
    // The live feed: a request whose answer never ends; its first bytes say it is served.
    let mut feed = std::net::TcpStream::connect(&web).expect("connect");
    feed.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    feed.write_all(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("send");
    let mut first = [0u8; 12];
    feed.read_exact(&mut first).expect("the feed answers");
    assert_eq!(&first, b"HTTP/1.1 200", "the live feed");
    // A scraper's kept-alive connection, idle after one scrape.
    let mut scrape = std::net::TcpStream::connect(&metrics).expect("connect");
    scrape
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    scrape.read_exact(&mut first).expect("the scrape answers");
    assert_eq!(&first, b"HTTP/1.1 200", "the scrape");

    let status = node.terminate().expect("the node exits after SIGTERM");
    let text = node.log_text();
    assert!(status.success(), "exit {status:?}:\n{text}");
    assert!(
        !text.contains("still open"),
        "the node did not stop cleanly:\n{text}"
    );
}

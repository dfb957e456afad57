//! The CNI path through a real agent on a real unix socket (an in-process allocator behind
//! it): the plugin's `run` is given an environment and a configuration exactly as a runtime
//! gives them, and its stdout and exit code are read as a runtime reads them.
//!
//! Owners, GC scoping and the sweep of vanished namespaces are checked here, where two hosts'
//! agents and a Docker endpoint can share one allocator; the real executable, real CNI
//! plugins and Podman are `raftipam`'s tests.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocator_core::{Op, Order, Owner, PoolId, PoolSpec};
use plugin_shim::backend::{Backend, Inventory};
use plugin_shim::cni::agent::{router, CniAgent, Records};
use plugin_shim::cni::plugin::run;
use plugin_shim::{MemoryBackend, PluginSocket};
use serde_json::{json, Value};
use tokio::sync::oneshot;

struct Agent {
    socket: PathBuf,
    records: PathBuf,
    agent: Arc<CniAgent<Arc<MemoryBackend>>>,
    _stop: oneshot::Sender<()>,
}

async fn agent(dir: &Path, host: &str, backend: &Arc<MemoryBackend>) -> Agent {
    let socket = dir.join(format!("{host}/cni.sock"));
    let records = dir.join(format!("{host}/records"));
    let agent = Arc::new(CniAgent::new(
        Arc::clone(backend),
        host,
        Records::new(&records),
    ));
    let bound = PluginSocket::bind(&socket).await.expect("bind");
    let (stop, stopped) = oneshot::channel::<()>();
    let app = router(Arc::clone(&agent), Duration::from_secs(10));
    tokio::spawn(bound.serve_router(app, async move {
        let _ = stopped.await;
    }));
    Agent {
        socket,
        records,
        agent,
        _stop: stop,
    }
}

fn conf(version: &str, net: &str, socket: &Path, extra: Value) -> Vec<u8> {
    let mut c = json!({
        "cniVersion": version,
        "name": net,
        "type": "macvlan",
        "ipam": {"type": "raftipam", "subnet": "10.77.0.0/24", "gateway": "10.77.0.1",
                 "exclude": ["10.77.0.2-10.77.0.9"], "routes": [{"dst": "0.0.0.0/0"}],
                 "socket": socket.display().to_string()}
    });
    if let (Some(o), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&c).expect("json")
}

async fn cni(
    cmd: &str,
    id: &str,
    netns: &str,
    extra_env: &[(&str, &str)],
    stdin: &[u8],
) -> (u8, Value) {
    let mut env: HashMap<String, String> = [
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", id),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", netns),
        ("CNI_PATH", "/usr/lib/cni"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra_env {
        env.insert(k.to_string(), v.to_string());
    }
    let out = run(|k| env.get(k).cloned(), stdin).await;
    let v = if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", out.stdout))
    };
    (out.exit, v)
}

fn addr_of(result: &Value) -> IpAddr {
    let a = result["ips"][0]["address"].as_str().expect("an address");
    a.split('/').next().expect("addr").parse().expect("ip")
}

/// An error object as the spec shapes it: `cniVersion`, a numeric `code`, a non-empty `msg`.
fn assert_error(v: &Value, code: u64) {
    assert_eq!(v["code"].as_u64(), Some(code), "{v}");
    assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["cniVersion"].is_string(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_check_del_are_idempotent_and_shaped_as_the_spec_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(MemoryBackend::default());
    let a = agent(dir.path(), "h1", &backend).await;
    let netns = dir.path().join("netns-c1");
    std::fs::write(&netns, b"").expect("netns stand-in");
    let ns = netns.display().to_string();
    let c = conf("1.0.0", "lan", &a.socket, json!({}));

    let (exit, r) = cni("ADD", "c1", &ns, &[], &c).await;
    assert_eq!(exit, 0, "{r}");
    assert_eq!(r["cniVersion"], "1.0.0");
    let ip = addr_of(&r);
    // The gateway and the excluded range are never handed out: .10 is the first free one.
    assert_eq!(ip, "10.77.0.10".parse::<IpAddr>().unwrap());
    assert_eq!(r["ips"][0]["address"], "10.77.0.10/24");
    assert_eq!(r["ips"][0]["gateway"], "10.77.0.1");
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    assert!(
        r["ips"][0].get("version").is_none(),
        "1.0.0 has no ips[].version"
    );

    // The same attachment again: the same address, nothing more taken.
    let (exit, again) = cni("ADD", "c1", &ns, &[], &c).await;
    assert_eq!(exit, 0, "{again}");
    assert_eq!(addr_of(&again), ip);
    let held = backend.host_allocations("h1").await.expect("read");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].1.owner, Owner::new("h1", "cni:lan:c1:eth0"));

    // CHECK with the ADD result as prevResult passes; with another address it fails.
    let prev = json!({"prevResult": r.clone()});
    let (exit, v) = cni(
        "CHECK",
        "c1",
        &ns,
        &[],
        &conf("1.0.0", "lan", &a.socket, prev),
    )
    .await;
    assert_eq!((exit, &v), (0, &Value::Null));
    let wrong =
        json!({"prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.77.0.99/24"}]}});
    let (exit, v) = cni(
        "CHECK",
        "c1",
        &ns,
        &[],
        &conf("1.0.0", "lan", &a.socket, wrong),
    )
    .await;
    assert_eq!(exit, 1);
    assert_error(&v, 103);

    // DEL releases; DEL again, and DEL of an attachment never added, succeed.
    for id in ["c1", "c1", "never-added"] {
        let (exit, v) = cni("DEL", id, "", &[], &c).await;
        assert_eq!((exit, &v), (0, &Value::Null), "DEL {id}");
    }
    assert!(backend
        .host_allocations("h1")
        .await
        .expect("read")
        .is_empty());
    assert!(
        std::fs::read_dir(&a.records)
            .expect("records")
            .next()
            .is_none(),
        "record removed"
    );

    // An old configuration version gets the old result shape.
    let (exit, old) = cni(
        "ADD",
        "c2",
        &ns,
        &[],
        &conf("0.3.1", "lan", &a.socket, json!({})),
    )
    .await;
    assert_eq!(exit, 0, "{old}");
    assert_eq!(old["ips"][0]["version"], "4");
    assert_eq!(old["cniVersion"], "0.3.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_addresses_and_refusals_carry_the_spec_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(MemoryBackend::default());
    let a = agent(dir.path(), "h1", &backend).await;
    let c = conf("1.1.0", "lan", &a.socket, json!({}));

    // CNI_ARGS IP= (Podman's form) and runtimeConfig.ips.
    let (exit, r) = cni(
        "ADD",
        "p1",
        "/x",
        &[("CNI_ARGS", "IgnoreUnknown=1;IP=10.77.0.50")],
        &c,
    )
    .await;
    assert_eq!(exit, 0, "{r}");
    assert_eq!(addr_of(&r), "10.77.0.50".parse::<IpAddr>().unwrap());
    let rc = conf(
        "1.1.0",
        "lan",
        &a.socket,
        json!({"runtimeConfig": {"ips": ["10.77.0.51/24"]}}),
    );
    let (exit, r) = cni("ADD", "p2", "/x", &[], &rc).await;
    assert_eq!(exit, 0, "{r}");
    assert_eq!(addr_of(&r), "10.77.0.51".parse::<IpAddr>().unwrap());

    // The same address for another attachment: taken (102), naming who holds it.
    let (exit, v) = cni("ADD", "p3", "/x", &[("CNI_ARGS", "IP=10.77.0.50")], &c).await;
    assert_eq!(exit, 1);
    assert_error(&v, 102);
    assert!(
        v["msg"].as_str().unwrap().contains("cni:lan:p1:eth0"),
        "{v}"
    );
    // An excluded address: taken too.
    let (exit, v) = cni("ADD", "p4", "/x", &[("CNI_ARGS", "IP=10.77.0.3")], &c).await;
    assert_eq!(exit, 1);
    assert_error(&v, 102);
    // Outside every configured subnet: invalid configuration (7).
    let (exit, v) = cni("ADD", "p5", "/x", &[("CNI_ARGS", "IP=10.99.0.3")], &c).await;
    assert_eq!(exit, 1);
    assert_error(&v, 7);

    // Bad environment (4), bad JSON (6), bad version (1), no agent (100; STATUS: 50).
    let (exit, v) = cni("ADD", "", "/x", &[], &c).await;
    assert_eq!(exit, 1);
    assert_error(&v, 4);
    let (exit, v) = cni("ADD", "p6", "/x", &[], b"{not json").await;
    assert_eq!(exit, 1);
    assert_error(&v, 6);
    let (exit, v) = cni(
        "ADD",
        "p6",
        "/x",
        &[],
        &conf("0.2.0", "lan", &a.socket, json!({})),
    )
    .await;
    assert_eq!(exit, 1);
    assert_error(&v, 1);
    let gone = dir.path().join("nobody/cni.sock");
    let (exit, v) = cni(
        "ADD",
        "p6",
        "/x",
        &[],
        &conf("1.1.0", "lan", &gone, json!({})),
    )
    .await;
    assert_eq!(exit, 1);
    assert_error(&v, 100);
    assert!(v["msg"].as_str().unwrap().contains("--cni-socket"), "{v}");
    let (exit, v) = cni(
        "STATUS",
        "",
        "",
        &[],
        &conf("1.1.0", "lan", &gone, json!({})),
    )
    .await;
    assert_eq!(exit, 1);
    assert_error(&v, 50);
    let (exit, v) = cni("STATUS", "", "", &[], &c).await;
    assert_eq!((exit, &v), (0, &Value::Null));

    // VERSION needs no agent.
    let (exit, v) = cni("VERSION", "", "", &[], br#"{"cniVersion":"1.1.0"}"#).await;
    assert_eq!(exit, 0);
    assert_eq!(v["cniVersion"], "1.1.0");
    assert!(v["supportedVersions"].as_array().unwrap().len() >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_releases_only_this_hosts_stale_attachments_of_this_network() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(MemoryBackend::default());
    let h1 = agent(dir.path(), "h1", &backend).await;
    let h2 = agent(dir.path(), "h2", &backend).await;
    // A Docker container on h1 in the same pool (space `local`, as a Docker macvlan network).
    let pool: PoolId = "local/10.77.0.0/24".parse().unwrap();
    backend
        .apply(Op::RequestPool {
            spec: PoolSpec::new("local").subnet("10.77.0.0/24".parse().unwrap()),
            holder: "h1".into(),
        })
        .await
        .expect("pool");
    backend
        .apply(Op::Allocate {
            pool: pool.clone(),
            addr: Some("10.77.0.200".parse().unwrap()),
            owner: Owner::new("h1", "web-1"),
            order: Order::PoolDefault,
        })
        .await
        .expect("docker endpoint");
    let lan1 = conf("1.1.0", "lan", &h1.socket, json!({}));
    let other1 = conf("1.1.0", "other", &h1.socket, json!({}));
    let lan2 = conf("1.1.0", "lan", &h2.socket, json!({}));
    for id in ["a", "b", "c"] {
        let (exit, r) = cni("ADD", id, "/x", &[], &lan1).await;
        assert_eq!(exit, 0, "{r}");
        assert_eq!(cni("ADD", id, "/x", &[], &lan2).await.0, 0);
        assert_eq!(cni("ADD", id, "/x", &[], &other1).await.0, 0);
    }
    assert_eq!(backend.host_allocations("h1").await.unwrap().len(), 7);

    // h1's runtime says only "a" is still valid on network "lan".
    let gc = conf(
        "1.1.0",
        "lan",
        &h1.socket,
        json!({"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
               "cni.dev/attachments": [{"containerID": "a", "ifname": "eth0"}]}),
    );
    let (exit, v) = cni("GC", "", "", &[], &gc).await;
    assert_eq!((exit, &v), (0, &Value::Null));
    let left: HashSet<String> = backend
        .all_allocations()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, a)| a.owner.to_string())
        .collect();
    let want: HashSet<String> = [
        "h1/web-1",
        "h1/cni:lan:a:eth0",
        "h1/cni:other:a:eth0",
        "h1/cni:other:b:eth0",
        "h1/cni:other:c:eth0",
        "h2/cni:lan:a:eth0",
        "h2/cni:lan:b:eth0",
        "h2/cni:lan:c:eth0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        left, want,
        "GC touched only h1's stale attachments of network lan"
    );

    // GC without any list releases nothing and says so.
    let (exit, v) = cni(
        "GC",
        "",
        "",
        &[],
        &conf("1.1.0", "other", &h1.socket, json!({})),
    )
    .await;
    assert_eq!(exit, 1);
    assert_error(&v, 7);
    assert_eq!(backend.host_allocations("h1").await.unwrap().len(), 5);
    // GC before 1.1.0 does not exist.
    let (exit, v) = cni(
        "GC",
        "",
        "",
        &[],
        &conf(
            "1.0.0",
            "other",
            &h1.socket,
            json!({"cni.dev/valid-attachments": []}),
        ),
    )
    .await;
    assert_eq!(exit, 1);
    assert_error(&v, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_get_distinct_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(MemoryBackend::default());
    let a = agent(dir.path(), "h1", &backend).await;
    let c = Arc::new(conf("1.0.0", "lan", &a.socket, json!({})));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let c = Arc::clone(&c);
        tasks.push(tokio::spawn(async move {
            cni("ADD", &format!("c{i}"), "/x", &[], &c).await
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        let (exit, r) = t.await.expect("task");
        assert_eq!(exit, 0, "{r}");
        assert!(seen.insert(addr_of(&r)), "an address handed out twice: {r}");
    }
    assert_eq!(seen.len(), 32);
    let pool = backend
        .pool(&"local/10.77.0.0/24".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        pool.holders.get("h1"),
        Some(&1),
        "one pool reference for the host, not one per ADD"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_whose_namespace_vanished_is_released_after_the_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(MemoryBackend::default());
    let a = agent(dir.path(), "h1", &backend).await;
    let c = conf("1.0.0", "lan", &a.socket, json!({}));
    let (alive, dead) = (dir.path().join("ns-alive"), dir.path().join("ns-dead"));
    std::fs::write(&alive, b"").unwrap();
    std::fs::write(&dead, b"").unwrap();
    assert_eq!(
        cni("ADD", "alive", &alive.display().to_string(), &[], &c)
            .await
            .0,
        0
    );
    assert_eq!(
        cni("ADD", "dead", &dead.display().to_string(), &[], &c)
            .await
            .0,
        0
    );
    std::fs::remove_file(&dead).unwrap();

    let grace = Duration::from_secs(600);
    let mut seen = HashMap::new();
    let t0 = Instant::now();
    // First sighting: nothing released yet.
    assert_eq!(
        a.agent.sweep_vanished(&mut seen, t0, grace).await.unwrap(),
        0
    );
    assert_eq!(backend.host_allocations("h1").await.unwrap().len(), 2);
    // Still gone a grace later: released; the live one stays.
    assert_eq!(
        a.agent
            .sweep_vanished(&mut seen, t0 + grace, grace)
            .await
            .unwrap(),
        1
    );
    let left = backend.host_allocations("h1").await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1.owner.endpoint, "cni:lan:alive:eth0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_fails_add_with_101_and_status_with_50() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(MemoryBackend::default());
    let a = agent(dir.path(), "h1", &backend).await;
    // A /30: .1 the gateway, .2 the only address to hand out.
    let c = serde_json::to_vec(&json!({"cniVersion": "1.1.0", "name": "tiny",
        "ipam": {"subnet": "10.78.0.0/30", "gateway": "10.78.0.1",
                 "socket": a.socket.display().to_string()}}))
    .unwrap();
    let (exit, v) = cni("STATUS", "", "", &[], &c).await;
    assert_eq!(
        (exit, &v),
        (0, &Value::Null),
        "no pool yet: ADD could be served"
    );
    let (exit, r) = cni("ADD", "t1", "/x", &[], &c).await;
    assert_eq!(exit, 0, "{r}");
    assert_eq!(addr_of(&r), "10.78.0.2".parse::<IpAddr>().unwrap());
    let (exit, v) = cni("ADD", "t2", "/x", &[], &c).await;
    assert_eq!(exit, 1);
    assert_error(&v, 101);
    let (exit, v) = cni("STATUS", "", "", &[], &c).await;
    assert_eq!(exit, 1);
    assert_error(&v, 50);
    assert!(
        v["msg"].as_str().unwrap().contains("no free address"),
        "{v}"
    );
    assert_eq!(cni("DEL", "t1", "", &[], &c).await.0, 0);
    let (exit, v) = cni("STATUS", "", "", &[], &c).await;
    assert_eq!((exit, &v), (0, &Value::Null), "room again after DEL");
}

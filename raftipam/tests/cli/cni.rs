//! CNI through the real executable: `raftipam` run as a runtime runs a CNI plugin (the
//! environment, the configuration on stdin, no arguments) against a real agent (`raftipam up
//! --cni-socket`), and Debian's reference CNI plugins (`macvlan`, `bridge`, from
//! `containernetworking-plugins` in /usr/lib/cni) calling `raftipam` as their IPAM for network
//! namespaces this test creates.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::binary::{free_port, spawn, Proc, BIN};
use crate::cni_support::{exec_plugin, podman_conf, podman_ready, REFERENCE_PLUGINS};

/// `raftipam up` with a CNI socket, in `dir`.
fn agent(dir: &Path, host: &str) -> (Proc, PathBuf) {
    agent_with(dir, host, &[])
}

/// Like [`agent`], with more arguments for `up`.
fn agent_with(dir: &Path, host: &str, extra: &[&str]) -> (Proc, PathBuf) {
    let socket = dir.join("cni/cni.sock");
    let mut args: Vec<String> = [
        "up",
        "--data-dir",
        &dir.join("data").display().to_string(),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--socket",
        &dir.join("docker.sock").display().to_string(),
        "--host",
        host,
        "--cni-socket",
        &socket.display().to_string(),
        "--cni-records",
        &dir.join("records").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut p = spawn(dir, &args);
    p.wait_for(
        &format!("raftipam CNI agent for host {host}"),
        Some(&socket),
    );
    p.wait_for("raftipam is ready:", None);
    (p, socket)
}

fn ipam(socket: &Path, subnet: &str, gateway: &str) -> Value {
    json!({"type": "raftipam", "subnet": subnet, "gateway": gateway,
           "routes": [{"dst": "0.0.0.0/0"}], "socket": socket.display().to_string()})
}

/// The spec's error object: `cniVersion`, a numeric `code`, a non-empty `msg`.
fn assert_error(v: &Value, code: u64) {
    assert_eq!(v["code"].as_u64(), Some(code), "{v}");
    assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["cniVersion"].is_string(), "{v}");
}

/// A 1.0.0+ `ADD` result: `ips[]` of `{address: CIDR, gateway?}` and nothing else an IPAM
/// plugin may not return.
fn assert_ipam_result(v: &Value) -> IpAddr {
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    for k in o.keys() {
        assert!(
            ["cniVersion", "ips", "routes", "dns"].contains(&k.as_str()),
            "unexpected key {k} in {v}"
        );
    }
    let ips = v["ips"].as_array().expect("ips");
    assert!(!ips.is_empty(), "{v}");
    let cidr = ips[0]["address"].as_str().expect("address");
    let (a, len) = cidr.split_once('/').expect("CIDR");
    assert!(len.parse::<u8>().is_ok(), "{cidr}");
    a.parse().expect("ip")
}

#[test]
fn the_executable_speaks_the_cni_spec_to_a_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut up, socket) = agent(dir.path(), "cni-exec");
    let conf = |v: &str| {
        json!({"cniVersion": v, "name": "lan", "type": "macvlan",
               "ipam": ipam(&socket, "10.213.40.0/24", "10.213.40.1")})
    };
    let env = |cmd: &'static str, id: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/proc/1/ns/net"),
            ("CNI_PATH", "/usr/lib/cni"),
        ]
    };
    let (code, r) = exec_plugin(BIN, None, &env("ADD", "c1"), &conf("1.1.0"));
    assert_eq!(code, 0, "{r}");
    let a = assert_ipam_result(&r);
    assert_eq!(
        a,
        "10.213.40.2".parse::<IpAddr>().unwrap(),
        "the gateway is reserved"
    );
    let (code, again) = exec_plugin(BIN, None, &env("ADD", "c1"), &conf("1.1.0"));
    assert_eq!(
        (code, assert_ipam_result(&again)),
        (0, a),
        "ADD is idempotent"
    );
    let (code, other) = exec_plugin(BIN, None, &env("ADD", "c2"), &conf("1.1.0"));
    assert_eq!(code, 0);
    assert_ne!(assert_ipam_result(&other), a);

    // The allocation is the cluster's: `addr ls` shows it with its CNI owner.
    let o = Command::new(BIN)
        .args([
            "--endpoints",
            &up_endpoint(&up),
            "--json",
            "addr",
            "ls",
            "local/10.213.40.0/24",
        ])
        .output()
        .expect("addr ls");
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(
        listed.contains("cni:lan:c1:eth0"),
        "{listed}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let mut check = conf("1.1.0");
    check["prevResult"] = r.clone();
    let (code, v) = exec_plugin(BIN, None, &env("CHECK", "c1"), &check);
    assert_eq!((code, &v), (0, &Value::Null));
    for _ in 0..2 {
        let (code, v) = exec_plugin(BIN, None, &env("DEL", "c1"), &conf("1.1.0"));
        assert_eq!((code, &v), (0, &Value::Null), "DEL, and DEL again");
    }
    let (code, v) = exec_plugin(BIN, None, &env("CHECK", "c1"), &check);
    assert_eq!(code, 1);
    assert_error(&v, 103);

    let mut gc = conf("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    let (code, v) = exec_plugin(
        BIN,
        None,
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")],
        &gc,
    );
    assert_eq!((code, &v), (0, &Value::Null));
    let (code, v) = exec_plugin(BIN, None, &env("CHECK", "c2"), &check);
    assert_eq!(code, 1, "GC released c2: {v}");

    let (code, v) = exec_plugin(BIN, None, &[("CNI_COMMAND", "STATUS")], &conf("1.1.0"));
    assert_eq!((code, &v), (0, &Value::Null));
    let (code, v) = exec_plugin(
        BIN,
        None,
        &[("CNI_COMMAND", "VERSION")],
        &json!({"cniVersion": "1.0.0"}),
    );
    assert_eq!(code, 0);
    assert_eq!(v["supportedVersions"].as_array().map(|a| a.len()), Some(5));

    // Errors: bad environment (4), undecodable stdin (6), an old version (1).
    let (code, v) = exec_plugin(BIN, None, &[("CNI_COMMAND", "ADD")], &conf("1.1.0"));
    assert_eq!(code, 1);
    assert_error(&v, 4);
    let (code, v) = exec_plugin(BIN, None, &env("ADD", "c3"), &json!("not an object"));
    assert_eq!(code, 1);
    assert_error(&v, 6);
    let (code, v) = exec_plugin(BIN, None, &env("ADD", "c3"), &conf("0.2.0"));
    assert_eq!(code, 1);
    assert_error(&v, 1);

    // The agent gone: ADD says so (100) and STATUS says the plugin cannot serve (50).
    up.stop();
    let (code, v) = exec_plugin(BIN, None, &env("ADD", "c3"), &conf("1.1.0"));
    assert_eq!(code, 1);
    assert_error(&v, 100);
    let (code, v) = exec_plugin(BIN, None, &[("CNI_COMMAND", "STATUS")], &conf("1.1.0"));
    assert_eq!(code, 1);
    assert_error(&v, 50);
}

fn up_endpoint(up: &Proc) -> String {
    let log = up.log_text();
    let at = log
        .find("raftipam node 1 on ")
        .expect("node address in the log")
        + "raftipam node 1 on ".len();
    log[at..]
        .split_whitespace()
        .next()
        .expect("address")
        .to_string()
}

/// Network namespaces (and so their interfaces) this test created, deleted when dropped.
pub(crate) struct Netns(pub(crate) Vec<String>);

impl Netns {
    pub(crate) fn add(&mut self, name: &str) -> String {
        // A leftover of a killed run, if any (usually none: the error is not shown).
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run_ok("ip", &["netns", "add", name]);
        self.0.push(name.to_string());
        name.to_string()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in self.0.iter().rev() {
            // Some are gone already (a test deletes one to make it vanish).
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

pub(crate) fn run_ok(program: &str, args: &[&str]) -> String {
    let o = Command::new(program).args(args).output().expect("spawn");
    assert!(
        o.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Whether this runs as root (network namespaces); in CI (`CI` set) not being root fails.
pub(crate) fn root_or_skip(test: &str) -> bool {
    if run_ok("id", &["-u"]).trim() == "0" {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: needs root (network namespaces)"
    );
    eprintln!("SKIP {test}: needs root (network namespaces)");
    false
}

/// Whether the reference plugins are here; in CI (`CI` set) their absence fails the test.
fn reference_plugins_ready(test: &str) -> bool {
    let there = Path::new(REFERENCE_PLUGINS).join("macvlan").exists()
        && Path::new(REFERENCE_PLUGINS).join("bridge").exists();
    let root = run_ok("id", &["-u"]).trim() == "0";
    if there && root {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: needs root and Debian's containernetworking-plugins in {REFERENCE_PLUGINS} (scripts/test.sh installs it)"
    );
    eprintln!(
        "\n************************************************************************\n\
         SKIP {test}: needs root and Debian's containernetworking-plugins in {REFERENCE_PLUGINS}.\n\
         Run `bash scripts/test.sh` (as root), which installs it.\n\
         ************************************************************************\n"
    );
    false
}

/// The addresses of `ifname` in namespace `ns`.
fn addrs_in(ns: &str, ifname: &str) -> String {
    run_ok("ip", &["-n", ns, "-o", "addr", "show", "dev", ifname])
}

#[test]
fn debians_macvlan_and_bridge_plugins_use_raftipam_for_their_addresses() {
    if !reference_plugins_ready(
        "debians_macvlan_and_bridge_plugins_use_raftipam_for_their_addresses",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_up, socket) = agent(dir.path(), "cni-ref");
    // The runtime's plugin path: raftipam (a link to the binary under test) and Debian's.
    let plugins = dir.path().join("cni-bin");
    std::fs::create_dir_all(&plugins).unwrap();
    std::os::unix::fs::symlink(BIN, plugins.join("raftipam")).unwrap();
    let cni_path = format!("{}:{REFERENCE_PLUGINS}", plugins.display());

    let tag = std::process::id() % 100_000;
    let mut ns = Netns(Vec::new());
    // The "host": a namespace with a LAN interface (one end of a veth pair whose other end
    // stays unused) as the macvlan parent.
    let host = ns.add(&format!("rtc-h{tag}"));
    run_ok(
        "ip",
        &[
            "-n", &host, "link", "add", "lan0", "type", "veth", "peer", "name", "lanp",
        ],
    );
    for l in ["lan0", "lanp"] {
        run_ok("ip", &["-n", &host, "link", "set", l, "up"]);
    }
    let macvlan = |v: &str| {
        json!({"cniVersion": v, "name": "rtlan", "type": "macvlan", "master": "lan0", "mode": "bridge",
               "ipam": ipam(&socket, "10.213.41.0/24", "10.213.41.1")})
    };
    let call = |cmd: &str, id: &str, netns: &str, conf: &Value| -> (i32, Value) {
        let netns_path = if netns.is_empty() {
            String::new()
        } else {
            format!("/var/run/netns/{netns}")
        };
        exec_plugin(
            &format!(
                "{REFERENCE_PLUGINS}/{}",
                conf["type"].as_str().expect("type")
            ),
            Some(&host),
            &[
                ("CNI_COMMAND", cmd),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", &netns_path),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", &cni_path),
            ],
            conf,
        )
    };

    // Six containers at once through macvlan: six distinct addresses, each on its eth0.
    let containers: Vec<String> = (0..6).map(|i| ns.add(&format!("rtc-c{i}-{tag}"))).collect();
    let results: Vec<(i32, Value)> = std::thread::scope(|s| {
        let hs: Vec<_> = containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let call = &call;
                let conf = macvlan("1.0.0");
                s.spawn(move || call("ADD", &format!("ctr{i}"), c, &conf))
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let mut seen = std::collections::HashSet::new();
    for ((code, r), c) in results.iter().zip(&containers) {
        assert_eq!(*code, 0, "macvlan ADD: {r}");
        let a = r["ips"][0]["address"]
            .as_str()
            .expect("address")
            .to_string();
        assert!(seen.insert(a.clone()), "{a} handed out twice");
        assert!(
            addrs_in(c, "eth0").contains(&a),
            "{a} not on {c}'s eth0: {}",
            addrs_in(c, "eth0")
        );
    }

    // CHECK through macvlan (it calls raftipam's CHECK with prevResult).
    let mut check = macvlan("1.0.0");
    check["prevResult"] = results[0].1.clone();
    let (code, v) = call("CHECK", "ctr0", &containers[0], &check);
    assert_eq!((code, &v), (0, &Value::Null), "macvlan CHECK");

    // DEL, DEL again, and DEL after the namespace is gone: all succeed; the address is free.
    let a0 = results[0].1["ips"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(call("DEL", "ctr0", &containers[0], &macvlan("1.0.0")).0, 0);
    assert_eq!(call("DEL", "ctr0", &containers[0], &macvlan("1.0.0")).0, 0);
    run_ok("ip", &["netns", "del", &containers[1]]);
    let (code, v) = call("DEL", "ctr1", "", &macvlan("1.0.0"));
    assert_eq!(code, 0, "DEL without its namespace: {v}");

    // A failed ADD: the address asked for (`IP=`, Podman's form) is held by ctr2, so
    // raftipam refuses and macvlan passes the refusal on; then the runtime's DEL succeeds.
    let fresh = ns.add(&format!("rtc-n{tag}"));
    let held = results[2].1["ips"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let held_ip = held.split('/').next().unwrap().to_string();
    let (code, v) = exec_plugin(
        &format!("{REFERENCE_PLUGINS}/macvlan"),
        Some(&host),
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "ctr-bad"),
            ("CNI_NETNS", &format!("/var/run/netns/{fresh}")),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", &cni_path),
            ("CNI_ARGS", &format!("IgnoreUnknown=1;IP={held_ip}")),
        ],
        &macvlan("1.0.0"),
    );
    assert_ne!(code, 0, "{v}");
    assert_eq!(
        v["code"].as_u64(),
        Some(102),
        "raftipam's refusal passed on: {v}"
    );
    assert!(
        v["msg"].as_str().unwrap_or("").contains("ctr2"),
        "names the holder: {v}"
    );
    assert_eq!(call("DEL", "ctr-bad", &fresh, &macvlan("1.0.0")).0, 0);

    // A crashed ADD: raftipam gave an address (as macvlan asks it to) but the main plugin
    // never finished; the runtime's DEL through macvlan gives the address back.
    let (code, r) = exec_plugin(
        BIN,
        None,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "ctr-crash"),
            ("CNI_NETNS", "/var/run/netns/none"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", &cni_path),
        ],
        &macvlan("1.0.0"),
    );
    assert_eq!(code, 0, "{r}");
    let crashed = r["ips"][0]["address"].as_str().unwrap().to_string();
    assert_eq!(call("DEL", "ctr-crash", "", &macvlan("1.0.0")).0, 0);

    // Freed addresses come back: the next ADD gets one no live container holds.
    let (code, r) = call("ADD", "ctr-new", &fresh, &macvlan("1.0.0"));
    assert_eq!(code, 0, "{r}");
    let got = r["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(
        [&a0, &crashed].contains(&&got) || !seen.contains(&got),
        "{got} is still held by a live container"
    );

    // The bridge plugin with raftipam on another subnet, old result version.
    let bridge = json!({"cniVersion": "0.4.0", "name": "rtbr", "type": "bridge", "bridge": "rtbr0",
                        "ipam": ipam(&socket, "10.213.42.0/24", "10.213.42.1")});
    // A second interface (net1) of a container that has its macvlan eth0, as Multus adds.
    let bridge_call = |cmd: &str| {
        exec_plugin(
            &format!("{REFERENCE_PLUGINS}/bridge"),
            Some(&host),
            &[
                ("CNI_COMMAND", cmd),
                ("CNI_CONTAINERID", "ctr3"),
                ("CNI_NETNS", &format!("/var/run/netns/{}", containers[3])),
                ("CNI_IFNAME", "net1"),
                ("CNI_PATH", &cni_path),
            ],
            &bridge,
        )
    };
    let (code, r) = bridge_call("ADD");
    assert_eq!(code, 0, "bridge ADD: {r}");
    assert_eq!(
        r["ips"][0]["version"], "4",
        "0.4.0 results carry ips[].version: {r}"
    );
    let a = r["ips"][0]["address"].as_str().unwrap();
    assert!(a.starts_with("10.213.42."), "{r}");
    assert!(addrs_in(&containers[3], "net1").contains(a));
    assert_eq!(bridge_call("DEL").0, 0);
    // ctr3's eth0 (macvlan, network rtlan) is untouched by the DEL of its net1 (rtbr).
    let eth0 = results[3].1["ips"][0]["address"].as_str().unwrap();
    assert!(addrs_in(&containers[3], "eth0").contains(eth0));
    let mut check = macvlan("1.0.0");
    check["prevResult"] = results[3].1.clone();
    assert_eq!(call("CHECK", "ctr3", &containers[3], &check).0, 0);
}

/// Podman (Debian's 4.3, with its CNI backend) in a directory of its own: its own storage
/// (vfs), configuration and network definitions, so nothing of the machine's is used.
struct Podman {
    dir: PathBuf,
    bridge: String,
}

impl Podman {
    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .args(["--storage-driver", "vfs"]);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd().args(args).output().expect("podman");
        assert!(
            o.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd().args(["rm", "-af", "-t", "0"]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// Podman's containers, a bare CNI attachment and another host's container share one pool:
/// every address distinct; `podman run` gets one of the pool (and the one `--ip` asks for),
/// `podman rm` gives it back.
#[test]
fn podman_with_its_cni_backend_shares_the_pool() {
    if !podman_ready("podman_with_its_cni_backend_shares_the_pool") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (up, socket) = agent(dir.path(), "cni-podman");
    let endpoint = up_endpoint(&up);
    let cli = |args: &[&str]| -> String {
        let mut all = vec!["--endpoints", &endpoint];
        all.extend_from_slice(args);
        run_ok(BIN, &all)
    };
    let tag = std::process::id() % 100_000;
    let pm = Podman {
        dir: dir.path().join("podman"),
        bridge: format!("rtpod{tag}"),
    };
    let bin = pm.dir.join("cni-bin");
    let netd = pm.dir.join("net.d");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&netd).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("raftipam")).unwrap();
    std::fs::write(pm.dir.join("containers.conf"), podman_conf(&bin, &netd)).unwrap();
    // The bridge has no address on this machine (isGateway false): the containers reach
    // only each other.
    let net = format!("rtpod{tag}");
    let conflist = json!({"cniVersion": "1.0.0", "name": net, "plugins": [
        {"type": "bridge", "bridge": pm.bridge, "isGateway": false, "ipMasq": false,
         "ipam": ipam(&socket, "10.213.51.0/24", "10.213.51.1")}]});
    std::fs::write(netd.join(format!("{net}.conflist")), conflist.to_string()).unwrap();
    // An image from Debian's static busybox.
    let rootfs = pm.dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static");
    for l in ["sh", "sleep", "ip", "ping"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(l)).unwrap();
    }
    let tar = pm.dir.join("rootfs.tar");
    run_ok(
        "tar",
        &[
            "-C",
            &rootfs.display().to_string(),
            "-cf",
            &tar.display().to_string(),
            ".",
        ],
    );
    pm.ok(&["import", &tar.display().to_string(), "localhost/rt-busybox"]);

    // Another host's network and container in the same pool (as its Docker plugin would
    // hold them: a macvlan network is in Docker's `local` space).
    cli(&[
        "pool",
        "create",
        "10.213.51.0/24",
        "--space",
        "local",
        "--holder",
        "docker-host",
        "--gateway",
        "10.213.51.1",
    ]);
    cli(&[
        "addr",
        "alloc",
        "local/10.213.51.0/24",
        "--ip",
        "10.213.51.2",
        "--owner",
        "docker-host/web",
    ]);
    let run = |name: &str, extra: &[&str]| -> (String, String) {
        let mut args = vec!["run", "-d", "--name", name, "--network", &net];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["localhost/rt-busybox", "sleep", "120"]);
        let id = pm.ok(&args);
        let ip = pm.ok(&[
            "inspect",
            name,
            "--format",
            &format!("{{{{.NetworkSettings.Networks.{net}.IPAddress}}}}"),
        ]);
        (id, ip)
    };
    let (id1, ip1) = run("p1", &[]);
    let (_id2, ip2) = run("p2", &[]);
    let (_id3, ip3) = run("p3", &["--ip", "10.213.51.77"]);
    assert_eq!(ip3, "10.213.51.77", "podman run --ip");
    // A bare CNI attachment (a runtime-less netns) in the same pool.
    let (code, r) = exec_plugin(
        BIN,
        None,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "bare1"),
            ("CNI_NETNS", "/proc/1/ns/net"),
            ("CNI_IFNAME", "eth0"),
        ],
        &json!({"cniVersion": "1.0.0", "name": "bare", "ipam": ipam(&socket, "10.213.51.0/24", "10.213.51.1")}),
    );
    assert_eq!(code, 0, "{r}");
    let bare = assert_ipam_result(&r).to_string();
    let all = [
        ip1.clone(),
        ip2.clone(),
        ip3.clone(),
        bare.clone(),
        "10.213.51.2".into(),
        "10.213.51.1".into(),
    ];
    let distinct: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "every address distinct: {all:?}");
    let listed = cli(&["addr", "ls", "local/10.213.51.0/24"]);
    assert!(
        listed.contains(&format!("cni-podman/cni:{net}:{id1}:eth0")),
        "podman's container owns its address by its id: {listed}"
    );
    // The containers reach each other over the bridge.
    pm.ok(&["exec", "p1", "ping", "-c", "1", "-W", "5", &ip2]);

    pm.ok(&["rm", "-f", "-t", "0", "p1"]);
    let listed = cli(&["addr", "ls", "local/10.213.51.0/24"]);
    assert!(
        !listed.contains(&format!("{ip1} ")),
        "podman rm gave {ip1} back: {listed}"
    );
    assert!(
        listed.contains(&ip2) && listed.contains("docker-host/web"),
        "{listed}"
    );
}

/// A runtime that dies before its DEL: the attachment's network namespace goes, and the
/// agent (its sweep at the reconcile interval) gives the address back after the grace; an
/// attachment whose namespace lives keeps its address.
#[test]
fn the_agent_releases_an_attachment_whose_namespace_vanished() {
    if !root_or_skip("the_agent_releases_an_attachment_whose_namespace_vanished") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (up, socket) = agent_with(
        dir.path(),
        "cni-sweep",
        &["--reconcile-interval", "1s", "--reconcile-grace", "2s"],
    );
    let endpoint = up_endpoint(&up);
    let tag = std::process::id() % 100_000;
    let mut ns = Netns(Vec::new());
    let (live, doomed) = (
        ns.add(&format!("rtc-live{tag}")),
        ns.add(&format!("rtc-gone{tag}")),
    );
    let conf = json!({"cniVersion": "1.0.0", "name": "sweep",
                      "ipam": ipam(&socket, "10.213.43.0/24", "10.213.43.1")});
    let mut addrs = Vec::new();
    for (id, n) in [("live", &live), ("gone", &doomed)] {
        let netns = format!("/var/run/netns/{n}");
        let (code, r) = exec_plugin(
            BIN,
            None,
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", &netns),
                ("CNI_IFNAME", "eth0"),
            ],
            &conf,
        );
        assert_eq!(code, 0, "{r}");
        addrs.push(assert_ipam_result(&r).to_string());
    }
    run_ok("ip", &["netns", "del", &doomed]);
    let ls = || {
        run_ok(
            BIN,
            &[
                "--endpoints",
                &endpoint,
                "addr",
                "ls",
                "local/10.213.43.0/24",
            ],
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let listed = ls();
        if !listed.contains(&format!("{} ", addrs[1])) {
            assert!(
                listed.contains(&format!("{} ", addrs[0])),
                "the live one stays: {listed}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not released within 60 s: {listed}\n{}",
            up.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(
        up.log_text().contains("network namespace is gone"),
        "{}",
        up.log_text()
    );
}

/// Check before hand-out, with real ARP and neighbor discovery in namespaces this test makes:
/// a "host" namespace runs `raftipam up --lan-checks on` (its LAN interface has the pool's
/// first address, the gateway); a "device" namespace on the same link holds two IPv4
/// addresses and one IPv6 address of the pool that nobody declared. ADD skips them (each
/// answered, given back and quarantined cluster-wide), `addr conflicts` names the device's
/// MAC, a request for one of them is refused with that MAC, and a subnet with no interface
/// here is handed out unchecked with a warning.
#[test]
fn lan_checks_quarantine_what_a_device_answers_for() {
    if !root_or_skip("lan_checks_quarantine_what_a_device_answers_for") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let tag = std::process::id() % 100_000;
    let mut ns = Netns(Vec::new());
    let (host, device) = (
        ns.add(&format!("rtc-lh{tag}")),
        ns.add(&format!("rtc-ld{tag}")),
    );
    run_ok(
        "ip",
        &[
            "-n", &host, "link", "add", "lan0", "type", "veth", "peer", "name", "dev0", "netns",
            &device,
        ],
    );
    for (n, l) in [
        (&host, "lo"),
        (&host, "lan0"),
        (&device, "lo"),
        (&device, "dev0"),
    ] {
        run_ok("ip", &["-n", n, "link", "set", l, "up"]);
    }
    run_ok(
        "ip",
        &["-n", &host, "addr", "add", "10.213.61.1/24", "dev", "lan0"],
    );
    run_ok(
        "ip",
        &[
            "-n",
            &host,
            "addr",
            "add",
            "fd00:213:61::1/64",
            "dev",
            "lan0",
            "nodad",
        ],
    );
    for a in ["10.213.61.2/24", "10.213.61.3/24"] {
        run_ok("ip", &["-n", &device, "addr", "add", a, "dev", "dev0"]);
    }
    run_ok(
        "ip",
        &[
            "-n",
            &device,
            "addr",
            "add",
            "fd00:213:61::2/64",
            "dev",
            "dev0",
            "nodad",
        ],
    );
    let link = run_ok("ip", &["-n", &device, "-o", "link", "show", "dev0"]);
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("the device's MAC")
        .to_string();

    // The agent, inside the host namespace (its Raft port on that namespace's loopback).
    let socket = dir.path().join("cni.sock");
    let port = free_port().to_string();
    let endpoint = format!("127.0.0.1:{port}");
    let log = dir.path().join("up.log");
    let file = std::fs::File::create(&log).expect("log");
    let mut up = Proc::start(
        Command::new("ip")
            .args([
                "netns", "exec", &host, BIN, "up", "--listen", &endpoint, "--host", "lan-host",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--socket")
            .arg(dir.path().join("docker.sock"))
            .arg("--cni-socket")
            .arg(&socket)
            .arg("--cni-records")
            .arg(dir.path().join("records"))
            .args(["--lan-checks", "on", "--probe-timeout", "300ms"])
            .env("RUST_LOG", "info")
            .env_remove("RAFTIPAM_LAN_CHECKS")
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file),
        log,
    );
    up.wait_for("raftipam is ready:", Some(&socket));
    let cli = |args: &[&str]| -> String {
        let mut all = vec!["netns", "exec", &host, BIN, "--endpoints", &endpoint];
        all.extend_from_slice(args);
        run_ok("ip", &all)
    };
    let add = |net: &str, subnet: &str, gateway: &str, id: &str, args: &str| {
        exec_plugin(
            BIN,
            None,
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", "/proc/1/ns/net"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", args),
            ],
            &json!({"cniVersion": "1.0.0", "name": net, "ipam": ipam(&socket, subnet, gateway)}),
        )
    };

    let (code, r) = add("lan4", "10.213.61.0/24", "10.213.61.1", "c1", "");
    assert_eq!(code, 0, "{r}\n{}", up.log_text());
    assert_eq!(
        assert_ipam_result(&r),
        "10.213.61.4".parse::<IpAddr>().unwrap(),
        ".2 and .3 answer on the wire: {}",
        up.log_text()
    );
    let conflicts: Value =
        serde_json::from_str(&cli(&["--json", "addr", "conflicts"])).expect("json");
    let q = conflicts["quarantined"].as_array().expect("quarantined");
    let found: Vec<(String, String)> = q
        .iter()
        .map(|c| {
            (
                c["record"]["addr"].as_str().unwrap().to_string(),
                c["record"]["mac"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            ("10.213.61.2".to_string(), mac.clone()),
            ("10.213.61.3".to_string(), mac.clone())
        ],
        "{conflicts}"
    );
    let status: Value = serde_json::from_str(&cli(&["--json", "status"])).expect("status --json");
    assert_eq!(status["conflicts"]["quarantined"], 2, "{status}");
    // Asked for by address: refused, naming the device.
    let (code, v) = add(
        "lan4",
        "10.213.61.0/24",
        "10.213.61.1",
        "c2",
        "IP=10.213.61.2",
    );
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["code"].as_u64(), Some(102), "{v}");
    assert!(v["msg"].as_str().unwrap().contains(&mac), "{v}");

    // IPv6: the device's ::2 answers the duplicate address detection probe.
    let (code, r) = add("lan6", "fd00:213:61::/64", "fd00:213:61::1", "c3", "");
    assert_eq!(code, 0, "{r}");
    assert_eq!(
        assert_ipam_result(&r),
        "fd00:213:61::3".parse::<IpAddr>().unwrap(),
        "{}",
        up.log_text()
    );

    // A "VM" appears on .5, the next free address: the agent's sweep ahead of hand-outs (the
    // next 2 free addresses of the pools it used, every second) finds it and quarantines it
    // before any container could get it.
    run_ok(
        "ip",
        &[
            "-n",
            &device,
            "addr",
            "add",
            "10.213.61.5/24",
            "dev",
            "dev0",
        ],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let c: Value = serde_json::from_str(&cli(&["--json", "addr", "conflicts"])).expect("json");
        let swept = c["quarantined"].as_array().expect("list").iter().any(|x| {
            x["record"]["addr"] == "10.213.61.5"
                && x["record"]["how"]
                    .as_str()
                    .is_some_and(|h| h.eq_ignore_ascii_case("sweep"))
        });
        if swept {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep did not find .5 within 30 s: {c}\n{}",
            up.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }

    // Cleared (the device is gone): .2 may be handed out again — and is probed again, so
    // while the device still answers it goes straight back into quarantine; .3 and .5 stay
    // quarantined, .4 is c1's: c4 gets .6.
    cli(&["addr", "clear", "local/10.213.61.0/24", "10.213.61.2"]);
    let (code, r) = add("lan4", "10.213.61.0/24", "10.213.61.1", "c4", "");
    assert_eq!(code, 0, "{r}");
    assert_eq!(
        assert_ipam_result(&r),
        "10.213.61.6".parse::<IpAddr>().unwrap()
    );

    // `raftipam scan` from the host: the device's two addresses answer (the containers'
    // addresses here have no device behind them); --report-as reports the free ones.
    let scan: Value = serde_json::from_str(&cli(&[
        "--json",
        "scan",
        "local/10.213.61.0/24",
        "--max",
        "8",
        "--report-as",
        "lan-host",
    ]))
    .expect("scan --json");
    let answered: Vec<(String, String)> = scan["answers"]
        .as_array()
        .expect("answers")
        .iter()
        .map(|x| {
            (
                x["addr"].as_str().unwrap().to_string(),
                x["mac"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        answered,
        vec![
            ("10.213.61.2".to_string(), mac.clone()),
            ("10.213.61.3".to_string(), mac.clone()),
            ("10.213.61.5".to_string(), mac.clone())
        ],
        "{scan}"
    );
    assert_eq!(scan["probed"], 8, "{scan}");
    assert!(scan["answers"][0]["reported"].as_bool().unwrap(), "{scan}");

    // A host whose agent may not open raw sockets (CAP_NET_RAW dropped from its bounding
    // set, as a hardened unit would): a warning naming the capability, and addresses handed
    // out unchecked — .2, which the device holds, since this is a cluster of its own.
    let socket2 = dir.path().join("cni-noraw.sock");
    let endpoint2 = format!("127.0.0.1:{}", free_port());
    let log2 = dir.path().join("noraw.log");
    let file2 = std::fs::File::create(&log2).expect("log");
    let mut noraw = Proc::start(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &host,
                "setpriv",
                "--bounding-set=-net_raw",
                BIN,
            ])
            .args(["up", "--listen", &endpoint2, "--host", "noraw-host"])
            .arg("--data-dir")
            .arg(dir.path().join("data-noraw"))
            .arg("--socket")
            .arg(dir.path().join("docker-noraw.sock"))
            .arg("--cni-socket")
            .arg(&socket2)
            .arg("--cni-records")
            .arg(dir.path().join("records-noraw"))
            .args([
                "--lan-checks",
                "on",
                "--sweep-ahead",
                "0",
                "--lan-refresh",
                "1s",
            ])
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(file2.try_clone().expect("log"))
            .stderr(file2),
        log2,
    );
    noraw.wait_for("raftipam is ready:", Some(&socket2));
    let (code, r) = exec_plugin(
        BIN,
        None,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "n1"),
            ("CNI_NETNS", "/proc/1/ns/net"),
            ("CNI_IFNAME", "eth0"),
        ],
        &json!({"cniVersion": "1.0.0", "name": "lan4",
                "ipam": ipam(&socket2, "10.213.61.0/24", "10.213.61.1")}),
    );
    assert_eq!(code, 0, "{r}\n{}", noraw.log_text());
    assert_eq!(
        assert_ipam_result(&r),
        "10.213.61.2".parse::<IpAddr>().unwrap()
    );
    assert!(
        noraw
            .log_text()
            .contains("LAN checks off for 10.213.61.0/24")
            && noraw.log_text().contains("CAP_NET_RAW"),
        "{}",
        noraw.log_text()
    );
    // ... and the cluster hears it: `host ls` and `status` say where checks are off, and why.
    let cli2 = |args: &[&str]| -> String {
        let mut all = vec!["netns", "exec", &host, BIN, "--endpoints", &endpoint2];
        all.extend_from_slice(args);
        run_ok("ip", &all)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status: Value =
            serde_json::from_str(&cli2(&["--json", "status"])).expect("status --json");
        let off = status["lan_checks_off"].as_array().is_some_and(|o| {
            o.iter().any(|x| {
                x["host"] == "noraw-host"
                    && x["subnet"] == "10.213.61.0/24"
                    && x["why"].as_str().is_some_and(|w| w.contains("CAP_NET_RAW"))
            })
        });
        if off {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never said checks are off on noraw-host: {status}\n{}",
            noraw.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let text = cli2(&["host", "ls"]);
    assert!(
        text.contains("LAN checks of noraw-host: OFF for 10.213.61.0/24: checks need CAP_NET_RAW"),
        "{text}"
    );
    let text = cli2(&["status"]);
    assert!(
        text.contains("LAN checks off (addresses handed out there unchecked):")
            && text.contains("host noraw-host for 10.213.61.0/24: checks need CAP_NET_RAW"),
        "{text}"
    );

    // No interface of the host has 10.213.62.0/24 on its link: unchecked, with a warning.
    let (code, r) = add("elsewhere", "10.213.62.0/24", "10.213.62.1", "c5", "");
    assert_eq!(code, 0, "{r}");
    assert!(
        up.log_text().contains("LAN checks off for 10.213.62.0/24"),
        "{}",
        up.log_text()
    );
}

//! `raftipam import`: what other inventories say is in use, reserved in the pools it falls in.

use std::process::Command;

use serde_json::{json, Value};

use crate::binary::{free_port, spawn, Proc, BIN};
use crate::cni::{root_or_skip, run_ok, Netns};

#[test]
fn import_reserves_what_an_inventory_lists_and_refuses_a_containers_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let endpoint = format!("127.0.0.1:{port}");
    let args: Vec<String> = [
        "up",
        "--data-dir",
        &dir.path().join("data").display().to_string(),
        "--listen",
        &endpoint,
        "--socket",
        &dir.path().join("docker.sock").display().to_string(),
        "--host",
        "imp-host",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut up = spawn(dir.path(), &args);
    up.wait_for("raftipam is ready:", None);
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .args(["--endpoints", &endpoint, "--json"])
            .args(args)
            .output()
            .expect("raftipam")
    };
    let ok = |args: &[&str]| {
        let o = cli(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // A DHCP server's dynamic range kept out with --exclude (the same as --reserve).
    ok(&[
        "pool",
        "create",
        "10.213.70.0/24",
        "--exclude",
        "10.213.70.100-10.213.70.199",
    ]);
    let p: Value = serde_json::from_str(&ok(&["pool", "show", "10.213.70.0/24"])).unwrap();
    assert_eq!(p["reserve"][0]["first"], "10.213.70.100", "{p}");
    ok(&[
        "addr",
        "alloc",
        "10.213.70.0/24",
        "--ip",
        "10.213.70.9",
        "--owner",
        "h1/web",
    ]);
    let ethers = dir.path().join("ethers");
    std::fs::write(
        &ethers,
        "# printers and friends\n\
         02:00:00:00:00:01 10.213.70.5\n\
         02:00:00:00:00:02 10.213.70.9\n\
         02:00:00:00:00:03 192.0.2.77\n\
         02:00:00:00:00:04 nas.example\n\
         not a line\n",
    )
    .unwrap();
    let e = ethers.display().to_string();
    // Dry run: nothing changes.
    let dry: Value =
        serde_json::from_str(&ok(&["import", "ethers", &e, "--dry-run"])).expect("json");
    assert_eq!(dry[0]["outcome"], "would reserve", "{dry}");
    let before: Value = serde_json::from_str(&ok(&["pool", "show", "10.213.70.0/24"])).unwrap();
    assert!(
        !before["reservations"].to_string().contains("ethers"),
        "{before}"
    );

    // For real: .5 reserved for the printer, .9 refused (a container has it), 192.0.2.77
    // outside every pool, the host name skipped; exit status 1 because of the refusal, and
    // the unreadable line named on stderr.
    let o = cli(&["import", "ethers", &e]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("line 6"), "{stderr}");
    let rows: Value = serde_json::from_slice(&o.stdout).expect("json");
    let outcome = |addr: &str| -> String {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["addr"] == addr)
            .map(|r| r["outcome"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{addr} not in {rows}"))
    };
    assert_eq!(outcome("10.213.70.5"), "reserved");
    assert!(outcome("10.213.70.9").contains("h1/web"), "{rows}");
    assert_eq!(outcome("192.0.2.77"), "outside every pool");
    let after: Value = serde_json::from_str(&ok(&["pool", "show", "10.213.70.0/24"])).unwrap();
    let res = after["reservations"].to_string();
    assert!(
        res.contains("10.213.70.5") && res.contains("ethers-02000000000"),
        "{after}"
    );
    // The reserved address is never handed out.
    let who = ok(&["addr", "who-has", "10.213.70.5"]);
    assert!(who.contains("ethers"), "{who}");
}

/// A Docker plugin call on the unix socket, as dockerd makes it: the JSON answer.
fn plugin_call(socket: &std::path::Path, method: &str, body: &Value) -> Value {
    let o = Command::new("curl")
        .args(["-s", "--max-time", "30", "--unix-socket"])
        .arg(socket)
        .args(["-X", "POST", "-d", &body.to_string()])
        .arg(format!("http://plugin/{method}"))
        .output()
        .expect("curl");
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{method}: not JSON ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

fn mac_of(ns: &str, ifname: &str) -> String {
    let link = run_ok("ip", &["-n", ns, "-o", "link", "show", ifname]);
    link.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("a MAC")
        .to_string()
}

/// Whether `addr conflicts --json` lists `addr` quarantined, answered by `mac`, found by the
/// watch.
fn watched(c: &Value, addr: &str, mac: &str) -> bool {
    c["quarantined"].as_array().is_some_and(|q| {
        q.iter().any(|x| {
            x["record"]["addr"] == addr
                && x["record"]["mac"] == mac
                && x["record"]["how"]
                    .as_str()
                    .is_some_and(|h| h.eq_ignore_ascii_case("watch"))
        })
    })
}

/// Waits up to `secs` for `what` to hold of `addr conflicts --json`.
fn wait_conflicts(
    cli: &dyn Fn(&[&str]) -> String,
    secs: u64,
    what: &str,
    ok: impl Fn(&Value) -> bool,
    log: &dyn Fn() -> String,
) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let c: Value = serde_json::from_str(&cli(&["--json", "addr", "conflicts"])).expect("json");
        if ok(&c) {
            return c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} not within {secs} s: {c}\n{}",
            log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The passive watch (issue 26): with no probe or sweep at all (`--sweep-ahead 0
/// --sweep-rate 0`), the agent learns from the ARP traffic on the LAN bridge. A "VM" that
/// appears on a free address is quarantined as soon as it speaks; the container whose MAC
/// Docker sent is not mistaken for a foreign device; a device claiming the container's
/// address raises a duplicate alarm naming the container, its host and the other MAC within
/// seconds; once the VM has left and the (shortened) probation is over, its address is handed
/// out again; `host ls` says the checks are on, and on which interface.
#[test]
fn the_watch_finds_a_vm_a_duplicate_and_lets_the_address_go_after_probation() {
    if !root_or_skip("the_watch_finds_a_vm_a_duplicate_and_lets_the_address_go_after_probation") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let tag = std::process::id() % 100_000;
    let mut ns = Netns(Vec::new());
    let (host, device, ctr) = (
        ns.add(&format!("rtw-h{tag}")),
        ns.add(&format!("rtw-d{tag}")),
        ns.add(&format!("rtw-c{tag}")),
    );
    // The LAN: a bridge in the host namespace, a device and a container on it.
    run_ok("ip", &["-n", &host, "link", "add", "br0", "type", "bridge"]);
    for (peer, inner, port) in [(&device, "dev0", "dv"), (&ctr, "eth0", "ct")] {
        run_ok(
            "ip",
            &[
                "-n", &host, "link", "add", port, "type", "veth", "peer", "name", inner, "netns",
                peer,
            ],
        );
        run_ok("ip", &["-n", &host, "link", "set", port, "master", "br0"]);
        run_ok("ip", &["-n", &host, "link", "set", port, "up"]);
        run_ok("ip", &["-n", peer, "link", "set", inner, "up"]);
        run_ok("ip", &["-n", peer, "link", "set", "lo", "up"]);
    }
    let container_mac = "02:42:0a:d5:3e:02";
    run_ok(
        "ip",
        &["-n", &ctr, "link", "set", "eth0", "address", container_mac],
    );
    for l in ["lo", "br0"] {
        run_ok("ip", &["-n", &host, "link", "set", l, "up"]);
    }
    run_ok(
        "ip",
        &["-n", &host, "addr", "add", "10.213.62.1/24", "dev", "br0"],
    );
    run_ok(
        "ip",
        &[
            "-n",
            &host,
            "addr",
            "add",
            "fd00:213:62::1/64",
            "dev",
            "br0",
            "nodad",
        ],
    );
    // The bridge hands every multicast frame (neighbor solicitations) to the host too.
    run_ok(
        "ip",
        &[
            "-n",
            &host,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ],
    );
    let device_mac = mac_of(&device, "dev0");

    let socket = dir.path().join("docker.sock");
    let endpoint = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("up.log");
    let file = std::fs::File::create(&log).expect("log");
    let mut up = Proc::start(
        Command::new("ip")
            .args([
                "netns", "exec", &host, BIN, "up", "--listen", &endpoint, "--host", "w-host",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--socket")
            .arg(&socket)
            .args([
                "--lan-checks",
                "on",
                "--sweep-ahead",
                "0",
                "--sweep-rate",
                "0",
                "--lan-refresh",
                "1s",
            ])
            .env("RUST_LOG", "info,plugin_shim::probe=debug")
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
    let up_log = || up.log_text();

    // Docker's calls: the network (pool and gateway), then the container "web" with its MAC.
    let pool = plugin_call(
        &socket,
        "IpamDriver.RequestPool",
        &json!({"AddressSpace": "local", "Pool": "10.213.62.0/24", "Options": {}, "V6": false}),
    );
    let pool_id = pool["PoolID"].as_str().expect("PoolID").to_string();
    let gw = plugin_call(
        &socket,
        "IpamDriver.RequestAddress",
        &json!({"PoolID": pool_id, "Address": "",
                "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
    );
    assert_eq!(gw["Address"], "10.213.62.1/24", "{gw}");
    let web = plugin_call(
        &socket,
        "IpamDriver.RequestAddress",
        &json!({"PoolID": pool_id, "Address": "",
                "Options": {"com.docker.network.endpoint.macaddress": container_mac,
                            "com.docker.network.endpoint.name": "web"}}),
    );
    assert_eq!(web["Address"], "10.213.62.2/24", "{web}");
    run_ok(
        "ip",
        &["-n", &ctr, "addr", "add", "10.213.62.2/24", "dev", "eth0"],
    );

    // The agent watches the bridge once it has seen the pool (refresh: 1 s) and says so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let hosts: Value = serde_json::from_str(&cli(&["--json", "host", "ls"])).expect("json");
        let lan = hosts
            .as_array()
            .expect("rows")
            .iter()
            .find(|h| h["name"] == "w-host")
            .map(|h| h["lan"].clone())
            .unwrap_or(Value::Null);
        let on = lan["checks"].as_array().is_some_and(|c| {
            c.iter().any(|c| {
                c["subnet"] == "10.213.62.0/24" && c["interface"] == "br0" && c["off"].is_null()
            })
        });
        if on {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "host ls never showed checks on br0: {hosts}\n{}",
            up_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let text = cli(&["host", "ls"]);
    assert!(
        text.contains("LAN checks of w-host: on (1 subnets)"),
        "{text}"
    );

    // The container speaks (its ARP request for the gateway carries its own MAC): no
    // conflict. A "VM" appears on .50 and speaks: quarantined, seen by the watch.
    // An ARP request for the gateway from `from` (busybox's arping, as a device asking
    // for its router does; the test command installs busybox-static).
    let speak = |ns: &str, ifname: &str, from: &str| {
        run_ok(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "busybox",
                "arping",
                "-c",
                "2",
                "-w",
                "3",
                "-I",
                ifname,
                "-s",
                from,
                "10.213.62.1",
            ],
        );
    };
    speak(&ctr, "eth0", "10.213.62.2");
    run_ok(
        "ip",
        &[
            "-n",
            &device,
            "addr",
            "add",
            "10.213.62.50/24",
            "dev",
            "dev0",
        ],
    );
    speak(&device, "dev0", "10.213.62.50");
    let c = wait_conflicts(
        &cli,
        15,
        "the VM on .50 quarantined by the watch",
        |c| watched(c, "10.213.62.50", &device_mac),
        &up_log,
    );
    assert_eq!(
        c["alarms"].as_array().map(Vec::len),
        Some(0),
        "the container's own traffic is no conflict: {c}"
    );
    assert_eq!(c["quarantined"].as_array().map(Vec::len), Some(1), "{c}");
    // Asked for now: refused while quarantined.
    let asked = plugin_call(
        &socket,
        "IpamDriver.RequestAddress",
        &json!({"PoolID": pool_id, "Address": "10.213.62.50",
                "Options": {"com.docker.network.endpoint.macaddress": "02:42:0a:d5:3e:32",
                            "com.docker.network.endpoint.name": "db"}}),
    );
    assert!(
        asked["Err"]
            .as_str()
            .is_some_and(|e| e.contains("quarantine")),
        "{asked}"
    );

    // The device claims the container's address: a duplicate alarm within seconds, naming
    // the container, its host and the other MAC, in `addr conflicts`, `status` and the log.
    let claimed = std::time::Instant::now();
    run_ok(
        "ip",
        &[
            "-n",
            &device,
            "addr",
            "add",
            "10.213.62.2/24",
            "dev",
            "dev0",
        ],
    );
    speak(&device, "dev0", "10.213.62.2");
    let c = wait_conflicts(
        &cli,
        10,
        "the duplicate alarm on .2",
        |c| {
            c["alarms"].as_array().is_some_and(|a| {
                a.iter().any(|x| {
                    x["record"]["addr"] == "10.213.62.2"
                        && x["record"]["mac"] == device_mac.as_str()
                        && x["holder"]["host"] == "w-host"
                        && x["holder"]["endpoint"] == "web"
                })
            })
        },
        &up_log,
    );
    eprintln!(
        "duplicate alarm raised {:.1} s after the device claimed the address",
        claimed.elapsed().as_secs_f64()
    );
    let status: Value = serde_json::from_str(&cli(&["--json", "status"])).expect("status");
    assert_eq!(status["conflicts"]["alarms"], 1, "{status}");
    assert!(
        up_log().contains(&format!(
            "DUPLICATE ADDRESS: 10.213.62.2 belongs to container web on host w-host (MAC {container_mac}), and the device {device_mac} answers for it too"
        )),
        "{c}\n{}",
        up_log()
    );

    // The VM leaves; the probation (shortened to 2 s) ends: .50 is handed out again, after
    // a probe that nobody answers.
    run_ok(
        "ip",
        &[
            "-n",
            &device,
            "addr",
            "del",
            "10.213.62.50/24",
            "dev",
            "dev0",
        ],
    );
    cli(&["pool", "probation", "local/10.213.62.0/24", "2s"]);
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    let again = plugin_call(
        &socket,
        "IpamDriver.RequestAddress",
        &json!({"PoolID": pool_id, "Address": "10.213.62.50",
                "Options": {"com.docker.network.endpoint.macaddress": "02:42:0a:d5:3e:32",
                            "com.docker.network.endpoint.name": "db"}}),
    );
    assert_eq!(again["Address"], "10.213.62.50/24", "{again}\n{}", up_log());
    let c: Value = serde_json::from_str(&cli(&["--json", "addr", "conflicts"])).expect("json");
    assert_eq!(
        c["quarantined"].as_array().map(Vec::len),
        Some(0),
        "handed out after its probation, the record goes: {c}"
    );

    // IPv6: a device on a free address of a /64 speaks neighbor discovery (a solicitation
    // for the gateway from its own address): quarantined by the watch, as for IPv4.
    let pool6 = plugin_call(
        &socket,
        "IpamDriver.RequestPool",
        &json!({"AddressSpace": "local", "Pool": "fd00:213:62::/64", "Options": {}, "V6": true}),
    );
    assert!(pool6["PoolID"].is_string(), "{pool6}");
    run_ok(
        "ip",
        &[
            "-n",
            &device,
            "addr",
            "add",
            "fd00:213:62::50/64",
            "dev",
            "dev0",
            "nodad",
        ],
    );
    // The watcher of the new subnet's interface is the same (br0); the pool is seen at
    // the next refresh (1 s): speak for a few seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let _ = Command::new("ip")
            .args(["-n", &device, "neigh", "flush", "all"])
            .output();
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                &device,
                "busybox",
                "ping6",
                "-c",
                "1",
                "-W",
                "1",
                "fd00:213:62::1",
            ])
            .output();
        let c: Value = serde_json::from_str(&cli(&["--json", "addr", "conflicts"])).expect("json");
        if watched(&c, "fd00:213:62::50", &device_mac) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the IPv6 device was not found by the watch: {c}\n{}",
            up_log()
        );
    }
}

/// What dockerd sends ends up in the plugin's log (the endpoint's name in "address
/// allocated"): a name holding terminal escape sequences reaches the log escaped, so
/// `journalctl` or `tail -f` on an operator's terminal runs none of them. Failed before
/// `cli::logs::SafeStderr` (tracing-subscriber 0.3.23 writes a field's `Display` raw: the
/// ESC, BEL and CR reached the log as they came).
#[test]
fn escape_sequences_from_docker_reach_the_log_escaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("docker.sock");
    let args: Vec<String> = [
        "up",
        "--data-dir",
        &dir.path().join("data").display().to_string(),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--socket",
        &socket.display().to_string(),
        "--host",
        "esc-host",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut up = spawn(dir.path(), &args);
    up.wait_for("raftipam is ready:", Some(&socket));
    let pool = plugin_call(
        &socket,
        "IpamDriver.RequestPool",
        &json!({"AddressSpace": "local", "Pool": "10.213.63.0/24", "Options": {}, "V6": false}),
    );
    let pool_id = pool["PoolID"].as_str().expect("PoolID").to_string();
    let evil = "web\u{1b}[2J\u{1b}]0;pwned\u{7}\r\u{9b}31m";
    let got = plugin_call(
        &socket,
        "IpamDriver.RequestAddress",
        &json!({"PoolID": pool_id, "Address": "",
                "Options": {"com.docker.network.endpoint.name": evil,
                            "com.docker.network.endpoint.macaddress": "02:42:0a:d5:3f:02"}}),
    );
    assert!(got["Address"].is_string(), "{got}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read(&up.log).expect("log");
        if String::from_utf8_lossy(&log).contains("pwned") {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the allocation was not logged: {}",
            String::from_utf8_lossy(&log)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    for bad in [0x1bu8, 0x07, b'\r'] {
        assert!(
            !log.contains(&bad),
            "the log holds the byte {bad:#04x} raw:\n{}",
            String::from_utf8_lossy(&log)
        );
    }
    assert!(
        !String::from_utf8_lossy(&log).contains('\u{9b}'),
        "the log holds a C1 control raw"
    );
}

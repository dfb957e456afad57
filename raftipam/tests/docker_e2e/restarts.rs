//! Restarts under running containers: `raftipam up` killed (and terminated) and started again
//! on the same data, and a dockerd of the test's own ([`PrivateDockerd`]) restarted with and
//! without `--live-restore`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::binary::*;
use crate::helpers::*;

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

/// A dockerd of this test's own (own data and exec roots, socket, containerd namespace, no
/// default bridge), sharing the machine's containerd and `/run/docker/plugins`, so that it
/// can be restarted without disturbing the other tests. Stopped, and its mounts undone, on
/// drop.
struct PrivateDockerd {
    dir: tempfile::TempDir,
    /// The running dockerd: SIGTERM, and SIGKILL after [`WAIT`], when stopped.
    proc: Option<Proc>,
}

/// The engine under test: the system's dockerd and containerd, or the ones named by
/// `RAFTIPAM_DOCKER_ENGINE_ROOT` (an unpacked engine: its `usr/sbin` and `usr/bin` go first in
/// PATH) and `RAFTIPAM_CONTAINERD_SOCK`, as `scripts/test.sh` sets them for the current engine.
fn containerd_sock() -> String {
    std::env::var("RAFTIPAM_CONTAINERD_SOCK")
        .unwrap_or_else(|_| "/run/containerd/containerd.sock".into())
}

fn engine_path() -> Option<String> {
    let root = std::env::var("RAFTIPAM_DOCKER_ENGINE_ROOT").ok()?;
    Some(format!(
        "{root}/usr/sbin:{root}/usr/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ))
}

impl PrivateDockerd {
    fn start(live_restore: bool) -> PrivateDockerd {
        let sock = containerd_sock();
        assert!(
            Path::new(&sock).exists(),
            "no containerd at {sock} (scripts/dockerd.sh starts one)"
        );
        let mut d = PrivateDockerd {
            // Short paths: dockerd puts unix sockets under its exec root.
            dir: tempfile::Builder::new()
                .prefix("rtd")
                .tempdir_in("/tmp")
                .expect("tempdir"),
            proc: None,
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
        let log_path = p.join("dockerd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("dockerd log");
        let mut c = Command::new("dockerd");
        if let Some(path) = engine_path() {
            c.env("PATH", path);
        }
        c.args(["--iptables=false", "--ip6tables=false", "--bridge", "none"])
            .args(["--containerd", &containerd_sock()])
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
        self.proc = Some(
            Proc::start(c.stdin(Stdio::null()).stdout(log).stderr(err), log_path).with_grace(WAIT),
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

    /// SIGTERM; waits (bounded) for the exit, SIGKILL if it does not come.
    fn stop(&mut self) {
        if let Some(mut dockerd) = self.proc.take() {
            dockerd.stop();
        }
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

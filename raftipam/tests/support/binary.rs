//! The binary harness: helpers for the tests that run the `raftipam` binary (and a dockerd)
//! as child processes and drive a real Docker daemon — `docker_e2e/`, `cli/ops.rs`, and
//! `cli/processes.rs` for its child guard. The docker command line, the loud SKIP when no daemon
//! answers ([`docker_ready`], `require_docker!`), free ports and plugin socket paths, the guard
//! of containers and networks ([`Docker`]), and the one guard of child processes ([`Proc`]:
//! [`spawn`] starts a `raftipam`, [`Proc::start`] any command). Tests with real nodes inside
//! the test process use `tests/in_process/mod.rs` instead.
#![allow(dead_code)]

use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_raftipam");
pub const IMAGE: &str = "raftipam-busybox";
pub const PLUGIN_DIR: &str = "/run/docker/plugins";
pub const WAIT: Duration = Duration::from_secs(60);

pub fn docker_host() -> Option<String> {
    std::env::var("RAFTIPAM_DOCKER_HOST")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Runs `docker ARGS` against the test daemon (bounded by `timeout 120`).
pub fn docker(args: &[&str]) -> Output {
    docker_at(docker_host().as_deref(), args)
}

/// Runs `docker ARGS` against the daemon at `host` (default: `DOCKER_HOST` or docker's own).
pub fn docker_at(host: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new("timeout");
    c.args(["120", "docker"]).args(args);
    if let Some(h) = host {
        c.env("DOCKER_HOST", h);
    }
    c.stdin(Stdio::null())
        .output()
        .expect("cannot run `docker` (is docker.io installed?)")
}

/// Runs `docker ARGS`, fails the test unless it succeeds; returns stdout, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    docker_ok_at(docker_host().as_deref(), args)
}

pub fn docker_ok_at(host: Option<&str>, args: &[&str]) -> String {
    let o = docker_at(host, args);
    stdout_ok(&format!("docker {}", args.join(" ")), &o)
        .trim()
        .to_string()
}

/// Fails the test, naming `what` with its status and output, unless `o` succeeded; its stdout.
pub fn stdout_ok(what: &str, o: &Output) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A pool's id (`SPACE/SUBNET[/RANGE]`) from its `pool ls --json` entry.
pub fn pool_id(p: &serde_json::Value) -> String {
    let id = &p["id"];
    let mut s = format!(
        "{}/{}",
        id["space"].as_str().unwrap_or("?"),
        id["subnet"].as_str().unwrap_or("?")
    );
    if let Some(r) = id["range"].as_str() {
        s.push('/');
        s.push_str(r);
    }
    s
}

/// True if a Docker daemon answers and has the test image. Prints the loud SKIP otherwise
/// (a daemon without the image is a broken setup: that fails instead).
pub fn docker_ready(test: &str) -> bool {
    let info = Command::new("timeout")
        .args(["30", "docker", "info"])
        .envs(docker_host().map(|h| ("DOCKER_HOST", h)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(info, Ok(s) if s.success()) {
        eprintln!(
            "\n\
             ************************************************************************\n\
             SKIP {test}: no Docker daemon answers `docker info` here.\n\
             Run `bash scripts/test.sh` (as root) to start containerd and dockerd.\n\
             ************************************************************************\n"
        );
        return false;
    }
    let img = docker(&["image", "inspect", IMAGE]);
    assert!(
        img.status.success(),
        "dockerd runs but the image {IMAGE} is missing: run `bash scripts/dockerd.sh` to build it"
    );
    true
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub fn socket_path(driver: &str) -> PathBuf {
    Path::new(PLUGIN_DIR).join(format!("{driver}.sock"))
}

#[allow(unused_macros)]
macro_rules! require_docker {
    ($name:expr) => {
        if !docker_ready($name) {
            return;
        }
    };
}

/// The container's IPv4 (and IPv6) address on `network`, from `docker inspect`.
pub fn ips_of(container: &str, network: &str) -> (Option<IpAddr>, Option<IpAddr>) {
    ips_of_at(docker_host().as_deref(), container, network)
}

pub fn ips_of_at(
    host: Option<&str>,
    container: &str,
    network: &str,
) -> (Option<IpAddr>, Option<IpAddr>) {
    let fmt = format!(
        "{{{{with index .NetworkSettings.Networks \"{network}\"}}}}{{{{.IPAddress}}}} {{{{.GlobalIPv6Address}}}}{{{{end}}}}"
    );
    let out = docker_ok_at(host, &["inspect", "-f", &fmt, container]);
    let mut it = out.split_whitespace().map(|s| s.parse::<IpAddr>().ok());
    (it.next().flatten(), it.next().flatten())
}

/// The container's IPv4 address on `network`; fails the test if it has none.
pub fn ip_of(container: &str, network: &str) -> IpAddr {
    ips_of(container, network)
        .0
        .unwrap_or_else(|| panic!("container {container} has no IPv4 address on {network}"))
}

/// Containers and networks whose names start with a prefix: leftovers of an earlier run
/// removed on creation, everything removed on drop (containers first).
pub struct Docker {
    /// The daemon (`DOCKER_HOST`), or docker's default.
    pub host: Option<String>,
    prefix: String,
    containers: Vec<String>,
    /// Networks removed on drop.
    pub networks: Vec<String>,
}

impl Docker {
    /// A guard for the containers and networks whose names start with `prefix`.
    pub fn new(prefix: &str) -> Docker {
        Docker::at(docker_host(), prefix)
    }

    /// Like [`Docker::new`], for the daemon at `host`.
    pub fn at(host: Option<String>, prefix: &str) -> Docker {
        let d = Docker {
            host,
            prefix: prefix.to_string(),
            containers: Vec::new(),
            networks: Vec::new(),
        };
        d.remove_leftovers();
        d
    }

    fn remove_leftovers(&self) {
        let filter = format!("name={}", self.prefix);
        let ids = docker_at(self.host.as_deref(), &["ps", "-aq", "--filter", &filter]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = docker_at(self.host.as_deref(), &["rm", "-f", id]);
        }
        let nets = docker_at(
            self.host.as_deref(),
            &["network", "ls", "-q", "--filter", &filter],
        );
        for id in String::from_utf8_lossy(&nets.stdout).split_whitespace() {
            let _ = docker_at(self.host.as_deref(), &["network", "rm", id]);
        }
    }

    /// The full name of `what` (the prefix in front).
    pub fn name(&self, what: &str) -> String {
        format!("{}{what}", self.prefix)
    }

    /// `docker network create ARGS NAME`; returns the network's name.
    pub fn network(&mut self, what: &str, args: &[&str]) -> String {
        let name = self.name(what);
        let mut a = vec!["network", "create"];
        a.extend_from_slice(args);
        a.push(&name);
        self.networks.push(name.clone());
        docker_ok_at(self.host.as_deref(), &a);
        name
    }

    /// `docker run -d --name NAME --network NET EXTRA raftipam-busybox sleep 300`, which may
    /// fail: its output.
    pub fn run(&mut self, what: &str, network: &str, extra: &[&str]) -> Output {
        let name = self.name(what);
        self.containers.push(name.clone());
        let mut a = vec!["run", "-d", "--name", &name, "--network", network];
        a.extend_from_slice(extra);
        a.extend_from_slice(&[IMAGE, "sleep", "300"]);
        docker_at(self.host.as_deref(), &a)
    }

    /// Like [`Docker::run`], failing the test unless the container starts; returns its name.
    pub fn run_ok(&mut self, what: &str, network: &str, extra: &[&str]) -> String {
        let o = self.run(what, network, extra);
        assert!(
            o.status.success(),
            "docker run {what} on {network} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        self.name(what)
    }

    pub fn rm(&mut self, name: &str) {
        docker_ok_at(self.host.as_deref(), &["rm", "-f", name]);
        self.containers.retain(|c| c != name);
    }

    pub fn network_rm(&mut self, name: &str) {
        docker_ok_at(self.host.as_deref(), &["network", "rm", name]);
        self.networks.retain(|n| n != name);
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        for c in self.containers.drain(..) {
            let _ = docker_at(self.host.as_deref(), &["rm", "-f", &c]);
        }
        for n in self.networks.drain(..).rev() {
            let _ = docker_at(self.host.as_deref(), &["network", "rm", &n]);
        }
    }
}

/// A child process of a test — a `raftipam` ([`spawn`]) or any other command such as a dockerd
/// ([`Proc::start`]) — its output in a log file: the one guard of the tests' child processes.
/// Dropped while running, it is stopped ([`Proc::stop`]: SIGTERM, then SIGKILL after its grace
/// and its plugin socket removed) or, if made with [`Proc::kill_on_drop`], SIGKILLed at once;
/// either way reaped. A process the test already stopped keeps whatever it left (a killed
/// one's stale socket is for the next start to replace).
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    /// The plugin socket it serves, once known ([`Proc::wait_started`]).
    pub socket: Option<PathBuf>,
    /// How long [`Proc::terminate`] waits for the exit after SIGTERM.
    grace: Duration,
    /// Dropped while running: SIGKILL at once instead of [`Proc::stop`].
    kill_on_drop: bool,
}

impl Proc {
    /// Spawns `cmd` as the caller set it up (arguments, environment, stdio — its output
    /// pointed at `log`) and guards the child: a grace of 15 s, stopped on drop.
    pub fn start(cmd: &mut Command, log: PathBuf) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {:?}: {e}", cmd.get_program()));
        Proc {
            child,
            log,
            socket: None,
            grace: Duration::from_secs(15),
            kill_on_drop: false,
        }
    }

    /// The time [`Proc::terminate`] (and so [`Proc::stop`]) gives it to exit after SIGTERM.
    pub fn with_grace(mut self, grace: Duration) -> Proc {
        self.grace = grace;
        self
    }

    /// Dropped while running, it is SIGKILLed at once (as a crash would), not stopped.
    pub fn kill_on_drop(mut self) -> Proc {
        self.kill_on_drop = true;
        self
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (bounded by its grace) for the exit status.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Stops it if it runs: SIGTERM, and SIGKILL (its socket removed) if that is not enough.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if self.terminate().is_none() {
                self.kill9();
                if let Some(s) = &self.socket {
                    let _ = std::fs::remove_file(s);
                }
            }
        }
    }

    /// Waits until the log contains `what` (and `file`, if any, exists); panics with the log
    /// if the process exits or the wait runs out.
    pub fn wait_for(&mut self, what: &str, file: Option<&Path>) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.log_text().contains(what) && file.is_none_or(|f| f.exists()) {
                return;
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!(
                    "raftipam exited ({s}) before {what:?}:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what:?} within {WAIT:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Like [`Proc::wait_for`], for a process serving the plugin socket `socket`.
    pub fn wait_started(&mut self, what: &str, socket: &Path) {
        self.socket = Some(socket.to_path_buf());
        self.wait_for(what, Some(socket));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.kill_on_drop {
            self.stop();
        } else if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

static STARTS: AtomicU32 = AtomicU32::new(0);

/// Starts `raftipam ARGS` with its output in `dir/raftipam-N.log`, `RUST_LOG=info`, LAN checks
/// off, and no `RAFTIPAM_ENDPOINTS` / `RAFTIPAM_CONFIG` from the test's environment.
pub fn spawn(dir: &Path, args: &[String]) -> Proc {
    let n = STARTS.fetch_add(1, Ordering::Relaxed);
    let log = dir.join(format!("raftipam-{n}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let err = file.try_clone().expect("log file");
    Proc::start(
        Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info,openraft=warn")
            .env_remove("RAFTIPAM_ENDPOINTS")
            .env_remove("RAFTIPAM_CONFIG")
            // No ARP or neighbor probes on this machine's interfaces: a test that wants LAN
            // checks says `--lan-checks on`, in namespaces it made (`cli/cni.rs`, the lab).
            .env("RAFTIPAM_LAN_CHECKS", "off")
            // Reconciliation talks to the dockerd under test, as the docker CLI does.
            .env_remove("DOCKER_HOST")
            .envs(docker_host().map(|h| ("DOCKER_HOST", h)))
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err),
        log,
    )
}

/// `raftipam cert ARGS`, which must succeed.
pub fn cert(args: &[&str]) {
    let o = Command::new(BIN)
        .arg("cert")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run raftipam cert");
    stdout_ok(&format!("raftipam cert {}", args.join(" ")), &o);
}

/// A CA in `DIR/ca`, node 1's certificate for `addr` in `DIR/tls-node` and an admin's in
/// `DIR/tls-admin`, made with `raftipam cert`: the node's and the admin's directories.
pub fn node_and_admin_certs(dir: &Path, addr: &str) -> (String, String) {
    let d = dir.display().to_string();
    let ca = format!("{d}/ca");
    let (node, admin) = (format!("{d}/tls-node"), format!("{d}/tls-admin"));
    cert(&["create-ca", "--ca-dir", &ca]);
    cert(&[
        "create-node",
        "--id",
        "1",
        "--name",
        "n1",
        "--addr",
        addr,
        "--ca-dir",
        &ca,
        "--out",
        &node,
    ]);
    cert(&["create-admin", "--ca-dir", &ca, "--out", &admin]);
    (node, admin)
}

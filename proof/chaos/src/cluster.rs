//! The chaos run's nodes: real `raftipam node` processes, each in its own network namespace
//! ([`super::net`]) with its own RocksDB data directory and log file, killed with SIGKILL,
//! paused with SIGSTOP and resumed with SIGCONT, restarted from their data.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::proxy::PROXY_PORT;

/// A crash point's name, present in a `raftipam` binary's bytes only when its crash points are
/// compiled in (`fail_point!` expands to nothing otherwise).
const CRASH_POINT_MARK: &[u8] = b"log::after_purge";

/// Whether a `raftipam` executable (its bytes) was built with crash points (the `failpoints`
/// feature): the chaos harness refuses `--crash-points` against one without, and the package
/// test checks that the shipped binary has none.
pub fn has_crash_points(image: &[u8]) -> bool {
    image
        .windows(CRASH_POINT_MARK.len())
        .any(|w| w == CRASH_POINT_MARK)
}
use raft_node::api::NodeStatus;
use raft_node::{Client, ClientConfig};

/// The port every node listens on, in its own namespace.
pub const PORT: u16 = 7379;

/// One node process.
#[derive(Debug)]
pub struct ChaosNode {
    /// Raft id: its 1-based place in the network at first, a new one after a rejoin.
    pub id: u64,
    /// `HOST:PORT` the cluster and the clients know it by: its proxy's when the run has
    /// proxies ([`super::proxy`]), else where it listens.
    pub addr: String,
    /// `HOST:PORT` it listens on.
    listen: String,
    /// A member of the cluster (else a spare, stopped, for a `Grow` fault).
    pub member: bool,
    ns: String,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// The log's length when the process was last started.
    log_start: u64,
    /// The run's certificates, if it has TLS (its status calls present the admin one).
    pub tls: Option<ChaosTls>,
    /// The ids it had before it was wiped (removed from the cluster), oldest first.
    pub retired: Vec<u64>,
}

/// How every node runs.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// The raftipam binary.
    pub bin: PathBuf,
    /// `--snapshot-every`.
    pub snapshot_every: u64,
    /// `--keep-logs`.
    pub keep_logs: u64,
    /// `--write-timeout`.
    pub write_timeout: Duration,
    /// `FAILPOINTS` for every node process (crash points, fail-rs syntax), if any.
    pub failpoints: Option<String>,
    /// Mutual TLS for the whole run (nodes and clients), else plain TCP (`--insecure`).
    pub tls: Option<ChaosTls>,
}

/// The run's certificates: a CA, an admin certificate every client of the run presents, and
/// node certificates bound to their Raft ids, issued as ids are first started.
#[derive(Clone, Debug)]
pub struct ChaosTls {
    /// The CA's directory (`ca.pem`, `ca-key.pem`).
    pub ca: PathBuf,
    /// Where the leaf certificates go, one directory each.
    pub dir: PathBuf,
    /// The run's admin certificate (the workload, the harness's own calls).
    pub admin: raft_node::tls::Tls,
}

/// Certificates of the run live a day.
const CERT_LIFETIME: Duration = Duration::from_secs(86_400);

impl ChaosTls {
    /// A new CA and admin certificate under `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<ChaosTls> {
        use raft_node::tls::certs;
        let ca = dir.join("ca");
        certs::create_ca(&ca, CERT_LIFETIME)?;
        let admin = dir.join("admin");
        let leaf = certs::Leaf {
            role: raft_node::api::Role::Admin,
            name: "chaos-admin".into(),
            addrs: vec![],
            lifetime: CERT_LIFETIME,
            node_id: None,
        };
        certs::issue(&ca, &leaf, &admin)?;
        let admin = raft_node::tls::Tls::load(&admin)?;
        Ok(ChaosTls {
            ca,
            dir: dir.to_path_buf(),
            admin,
        })
    }

    /// The directory of a certificate `name` of `role` (issued unless it exists), bound to
    /// Raft id `node_id` and reachable at `ip` for a node.
    pub fn leaf(
        &self,
        role: raft_node::api::Role,
        name: &str,
        ip: Option<&str>,
        node_id: Option<u64>,
    ) -> anyhow::Result<PathBuf> {
        let out = self.dir.join(name);
        if !out.join("cert.pem").exists() {
            let leaf = raft_node::tls::certs::Leaf {
                role,
                name: name.into(),
                addrs: ip.map(|i| vec![i.to_string()]).unwrap_or_default(),
                lifetime: CERT_LIFETIME,
                node_id,
            };
            raft_node::tls::certs::issue(&self.ca, &leaf, &out)?;
        }
        Ok(out)
    }

    /// The certificate of node `id` at `ip` (issued unless it exists).
    pub fn node(&self, id: u64, ip: &str) -> anyhow::Result<PathBuf> {
        self.leaf(
            raft_node::api::Role::Node,
            &node_cert_name(id),
            Some(ip),
            Some(id),
        )
    }
}

/// The name (CN) of node `id`'s certificate.
pub fn node_cert_name(id: u64) -> String {
    format!("node-{id}")
}

/// A client of the run: TLS with the admin certificate when the run has TLS.
pub fn client_config(
    tls: Option<&ChaosTls>,
    timeout: Duration,
    connect_timeout: Duration,
) -> ClientConfig {
    ClientConfig {
        timeout,
        connect_timeout,
        tls: tls.map(|t| t.admin.clone()),
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

impl ChaosNode {
    /// A node (not started) in namespace `ns` at `ip`, with its files under `dir`; known by
    /// its proxy's address (`ip`:[`PROXY_PORT`]) when `proxied`.
    pub fn new(id: u64, ns: String, ip: &str, dir: &Path, proxied: bool) -> ChaosNode {
        ChaosNode {
            id,
            addr: format!("{ip}:{}", if proxied { PROXY_PORT } else { PORT }),
            listen: format!("{ip}:{PORT}"),
            member: true,
            ns,
            data: dir.join(format!("n{id}")),
            log: dir.join(format!("n{id}.log")),
            child: None,
            paused: false,
            log_start: 0,
            tls: None,
            retired: Vec::new(),
        }
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Stops it for good and wipes its data: it will start as a new node, `new_id`, with an
    /// empty data directory (and the same address).
    pub fn wipe_as(&mut self, new_id: u64) -> std::io::Result<()> {
        self.resume();
        self.kill9();
        match std::fs::remove_dir_all(&self.data) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.retired.push(self.id);
        self.id = new_id;
        Ok(())
    }

    /// Starts the process (appending to its log), unless it runs.
    pub fn start(&mut self, s: &NodeSettings) -> std::io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        // Where this run of the process begins in the log: its crash point, if any, is after.
        self.log_start = log.metadata()?.len();
        let err = log.try_clone()?;
        let security: Vec<std::ffi::OsString> = match &s.tls {
            Some(t) => {
                let ip = self.listen.rsplit_once(':').map_or("", |(h, _)| h);
                let dir = t.node(self.id, ip).map_err(std::io::Error::other)?;
                vec!["--tls-dir".into(), dir.into()]
            }
            None => vec!["--insecure".into()],
        };
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(&s.bin)
            .args(security)
            .args(["node", "--id", &self.id.to_string()])
            .args([
                "--listen",
                &self.listen,
                "--advertise",
                &self.addr,
                "--data-dir",
            ])
            .arg(&self.data)
            .args(["--snapshot-every", &s.snapshot_every.to_string()])
            .args(["--keep-logs", &s.keep_logs.to_string()])
            .args([
                "--write-timeout",
                &format!("{}ms", s.write_timeout.as_millis()),
            ])
            .env("RUST_LOG", "info,openraft=warn")
            .envs(s.failpoints.as_ref().map(|f| ("FAILPOINTS", f.as_str())))
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// Whether its process runs (paused or not).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// SIGSTOP.
    pub fn pause(&mut self) {
        if let Some(c) = &self.child {
            signal(c.id(), "-STOP");
            self.paused = true;
        }
    }

    /// SIGCONT (if paused).
    pub fn resume(&mut self) {
        if let (Some(c), true) = (&self.child, self.paused) {
            signal(c.id(), "-CONT");
        }
        self.paused = false;
    }

    /// Whether its last run's last words are a crash point's (an injected crash, not a bug).
    /// Only what the last run wrote counts: an earlier run's crash point must not excuse an
    /// exit that followed it (say, a node refusing its store at start).
    pub fn crashed_at_failpoint(&self) -> bool {
        std::fs::read(&self.log).is_ok_and(|l| last_run_ended_at_failpoint(&l, self.log_start))
    }

    /// Whether the process exited by itself (a crash): its exit status.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(st)) => {
                self.child = None;
                Some(st)
            }
            _ => None,
        }
    }

    /// Its status, asked directly, within `timeout`.
    pub async fn status(&self, timeout: Duration) -> Option<NodeStatus> {
        let c = Client::with_config(
            [self.addr.as_str()],
            client_config(self.tls.as_ref(), timeout, timeout),
        )
        .ok()?;
        c.node_status(0).await.ok()
    }
}

impl Drop for ChaosNode {
    fn drop(&mut self) {
        self.resume();
        self.kill9();
    }
}

/// Whether the part of a node's log from `start` (where its last run began) ends with a crash
/// point's last words (within its last 20 lines).
fn last_run_ended_at_failpoint(log: &[u8], start: u64) -> bool {
    let start = usize::try_from(start).unwrap_or(usize::MAX).min(log.len());
    String::from_utf8_lossy(&log[start..])
        .lines()
        .rev()
        .take(20)
        .any(|x| x.contains("raftipam failpoint"))
}

#[cfg(test)]
mod failpoint_tests {
    use super::last_run_ended_at_failpoint;

    #[test]
    fn only_the_last_run_of_a_node_can_end_at_a_crash_point() {
        let first = "node started\nraftipam failpoint log::purge: aborting the process here\n";
        let second = "node started\nError: the log store is corrupted\n";
        let log = format!("{first}{second}");
        // The first run crashed at a crash point; the second exited for another reason.
        assert!(last_run_ended_at_failpoint(first.as_bytes(), 0));
        assert!(!last_run_ended_at_failpoint(
            log.as_bytes(),
            first.len() as u64
        ));
        // Reading the whole log (as before) would have excused the second exit.
        assert!(last_run_ended_at_failpoint(log.as_bytes(), 0));
        assert!(!last_run_ended_at_failpoint(log.as_bytes(), u64::MAX));
    }
}

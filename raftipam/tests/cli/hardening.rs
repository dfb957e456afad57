//! The smaller hardening points of the security review, each attack run against the real
//! binary: strings other processes chose never reach the operator's terminal raw, names
//! outside the documented charset are refused, the loopback web view serves only requests
//! addressed to loopback (DNS rebinding), plain metrics only on loopback, and private keys
//! only if their owner alone may read them.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::binary::*;
use crate::in_process::{eventually, free_addr, spec};
use allocator_core::{Op, Owner};
use raft_node::{Client, ClientConfig};

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RAFTIPAM_ENDPOINTS")
        .env_remove("RAFTIPAM_CONFIG")
        .env_remove("RAFTIPAM_TLS_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run raftipam")
}

/// Starts a one-node cluster (`raftipam node`, then `cluster init`) with `extra` arguments;
/// returns the process and its address once it has a leader.
async fn one_node(dir: &Path, extra: &[&str]) -> (Proc, String) {
    let addr = free_addr().to_string();
    let log = dir.join("n1.log");
    let node = Proc::start(
        Command::new(BIN)
            .args(["node", "--id", "1", "--listen", &addr])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.join("n1"))
            .env_remove("RAFTIPAM_CONFIG")
            .env_remove("RAFTIPAM_TLS_DIR")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file")),
        log,
    )
    .kill_on_drop();
    let c = client(&addr);
    eventually(60, "the node to answer", || {
        let c = c.clone();
        async move { c.status().await.ok() }
    })
    .await;
    let init = run(&["--endpoints", &addr, "cluster", "init"]);
    stdout_ok("cluster init", &init);
    eventually(60, "a leader", || {
        let c = c.clone();
        async move { c.status().await.ok()?.leader }
    })
    .await;
    (node, addr)
}

fn client(addr: &str) -> Client {
    Client::with_config(
        [addr.to_string()],
        ClientConfig {
            timeout: Duration::from_secs(30),
            ..Default::default()
        },
    )
    .expect("client")
}

/// A process that reaches the cluster (a shim, a host without TLS) heartbeats with a host
/// name that holds terminal escape sequences (clear the screen, retitle the window) and a
/// version with a bidi override (one with a fake prompt after a carriage return is refused
/// outright), and allocates for an endpoint named the
/// same way; `host ls`, `status`, `addr ls`, `addr who-has` and `pool show` print them
/// escaped: no ESC byte (nor BEL, CR) reaches the operator's terminal, and the text stays
/// readable. On commit 4b9aa6a (release 0.1.0) `host ls` printed them raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_from_other_processes_reach_the_terminal_escaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_node, addr) = one_node(dir.path(), &[]).await;
    let c = client(&addr);
    let evil_host = "h\u{1b}[2J\u{1b}]0;pwned\u{7}";
    // A version with control characters is refused before it is proposed (the node's
    // write checks); one with a bidi override is not a control character and gets through.
    let refused = c
        .apply(Op::Heartbeat {
            host: evil_host.into(),
            version: "0.2.0\r\u{1b}[31mroot# \u{9b}0m".into(),
        })
        .await;
    assert!(refused.is_err(), "a version with escapes was taken");
    let evil_version = "0.2.0\u{202e}";
    c.apply(Op::Heartbeat {
        host: evil_host.into(),
        version: evil_version.into(),
    })
    .await
    .expect("heartbeat");
    let pool = c
        .create_pool(spec("10.77.0.0/24"), evil_host)
        .await
        .expect("pool");
    let ip = c
        .allocate(
            &pool,
            None,
            Owner::new(evil_host, "web\u{1b}[1A\n\u{1b}[2K"),
        )
        .await
        .expect("allocate");
    let pool_s = pool.to_string();
    let ip_s = ip.addr().to_string();
    for args in [
        vec!["host", "ls"],
        vec!["status"],
        vec!["addr", "ls", &pool_s],
        vec!["addr", "who-has", &ip_s],
        vec!["pool", "show", &pool_s],
        vec!["pool", "ls"],
    ] {
        let mut full = vec!["--endpoints", &addr];
        full.extend(&args);
        let o = run(&full);
        let out = &o.stdout;
        for bad in [0x1bu8, 0x07, b'\r'] {
            assert!(
                !out.contains(&bad),
                "raftipam {args:?} wrote the byte {bad:#04x} raw:\n{}",
                String::from_utf8_lossy(out)
            );
        }
        let text = String::from_utf8_lossy(out);
        assert!(
            !text.contains('\u{9b}') && !text.contains('\u{202e}'),
            "raftipam {args:?} wrote a C1 control or a bidi override raw: {text:?}"
        );
        if args[0] == "host" {
            assert!(
                text.contains("h\\u{1b}[2J"),
                "host ls shows the name, escaped: {text}"
            );
        }
    }
    // JSON stays JSON (serde escapes control characters in strings).
    let o = run(&["--endpoints", &addr, "--json", "host", "ls"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert!(v.to_string().contains("pwned"), "{v}");
    assert!(!o.stdout.contains(&0x1b), "JSON escapes ESC");
}

/// Certificate names outside the charset (letters, digits, '.', '-', '_', starting with a
/// letter or digit) are refused by `cert create-*` before anything is written: a right-to-left
/// override would show "adm\u{202e}nimda" to an operator as another name. On commit 4b9aa6a
/// (release 0.1.0) the override, a zero-width space and an escape sequence were accepted.
#[test]
fn certificate_names_outside_the_charset_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca").display().to_string();
    cert(&["create-ca", "--ca-dir", &ca]);
    for (i, bad) in [
        "adm\u{202e}nimda",
        "h\u{200b}1",
        "h\u{1b}[2J",
        "_h1",
        "h\u{e9}",
    ]
    .iter()
    .enumerate()
    {
        let out = dir.path().join(format!("out{i}")).display().to_string();
        for cmd in [
            vec!["cert", "create-host", bad, "--ca-dir", &ca, "--out", &out],
            vec!["cert", "create-admin", bad, "--ca-dir", &ca, "--out", &out],
            vec![
                "cert",
                "create-node",
                "--id",
                "1",
                "--name",
                bad,
                "--addr",
                "127.0.0.1:7379",
                "--ca-dir",
                &ca,
                "--out",
                &out,
            ],
        ] {
            let o = run(&cmd);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{cmd:?} issued a certificate");
            assert!(
                err.contains("ASCII letter") || err.contains("ASCII letters"),
                "{cmd:?}: the error gives the rule: {err}"
            );
            assert!(
                !err.contains('\u{1b}') && !err.contains('\u{202e}'),
                "{err:?}"
            );
            assert!(
                !Path::new(&out).join("cert.pem").exists(),
                "{cmd:?} wrote a certificate"
            );
        }
    }
    cert(&[
        "create-host",
        "host-5.example_1",
        "--ca-dir",
        &ca,
        "--out",
        &dir.path().join("good").display().to_string(),
    ]);
}

/// One raw HTTP/1.1 request; the whole answer.
fn raw_get(at: &str, host: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(at).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

/// DNS rebinding: a page on evil.example whose name the attacker re-points at 127.0.0.1
/// makes the operator's browser send the loopback web view requests with `Host:
/// evil.example:PORT`; they are refused (421) with a text that says why, while requests
/// addressed to 127.0.0.1 or localhost (any port: an SSH tunnel) are served. On commit
/// 4b9aa6a (release 0.1.0) every Host was served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loopback_web_view_refuses_other_host_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web = free_addr().to_string();
    let (_node, _addr) = one_node(dir.path(), &["--http", &web]).await;
    let port = web.rsplit_once(':').expect("port").1;
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        String::new(),
    ] {
        let a = raw_get(&web, &host, "/api/overview");
        assert!(a.starts_with("HTTP/1.1 421"), "Host {host:?}: {a}");
        assert!(a.contains("loopback name"), "Host {host:?}: {a}");
        assert!(!a.contains("\"pools\""), "Host {host:?} got the data: {a}");
    }
    for host in [
        format!("127.0.0.1:{port}"),
        "localhost:8080".to_string(),
        "127.0.0.1".to_string(),
        format!("[::1]:{port}"),
    ] {
        let a = raw_get(&web, &host, "/api/overview");
        assert!(a.starts_with("HTTP/1.1 200"), "Host {host:?}: {a}");
        assert!(a.contains("\"pools\""), "Host {host:?}: {a}");
    }
}

/// `--metrics` on an address other than loopback without TLS is a usage error (exit status
/// 2, so systemd does not restart it) that says what to do, before anything is started or
/// written; on loopback it is served. On commit 4b9aa6a (release 0.1.0) the metrics were
/// served without authentication on any address.
#[test]
fn plain_metrics_are_refused_off_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let o = Command::new("timeout")
        .arg("60")
        .arg(BIN)
        .args([
            "node",
            "--id",
            "1",
            "--listen",
            &free_addr().to_string(),
            "--metrics",
            &format!("0.0.0.0:{}", free_port()),
            "--data-dir",
            &data.display().to_string(),
        ])
        .env_remove("RAFTIPAM_CONFIG")
        .env_remove("RAFTIPAM_TLS_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run raftipam");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--metrics") && err.contains("loopback") && err.contains("--tls-dir"),
        "the error says what to do: {err}"
    );
    assert!(!data.exists(), "nothing was written: {err}");
    let o = run(&[
        "shim",
        "--endpoints",
        "127.0.0.1:1",
        "--host",
        "h1",
        "--socket",
        &dir.path().join("p.sock").display().to_string(),
        "--metrics",
        &format!("0.0.0.0:{}", free_port()),
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A node whose key.pem others may read refuses to start, naming the file and the `chmod`
/// that fixes it; with the key 0600 it starts. On commit 4b9aa6a (release 0.1.0) the key was
/// used whatever its mode.
#[test]
fn a_key_others_may_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = format!("127.0.0.1:{}", free_port());
    let (node_dir, _admin) = node_and_admin_certs(dir.path(), &addr);
    let key = Path::new(&node_dir).join("key.pem");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600, "cert create-node writes its key 0600");
    assert_eq!(
        mode(&dir.path().join("ca/ca-key.pem")),
        0o600,
        "cert create-ca writes its key 0600"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let data = dir.path().join("data");
    let o = Command::new("timeout")
        .arg("60")
        .arg(BIN)
        .args([
            "node",
            "--id",
            "1",
            "--listen",
            &addr,
            "--tls-dir",
            &node_dir,
        ])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("RAFTIPAM_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run raftipam");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the node started: {err}");
    assert!(
        err.contains(&format!("chmod 600 {}", key.display())),
        "the error names the file and the fix: {err}"
    );
    // The CA key too, where `cert create-*` reads it.
    let ca_key = dir.path().join("ca/ca-key.pem");
    std::fs::set_permissions(&ca_key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let o = run(&[
        "cert",
        "create-host",
        "h9",
        "--ca-dir",
        &dir.path().join("ca").display().to_string(),
        "--out",
        &dir.path().join("h9").display().to_string(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "issued with a readable CA key: {err}");
    assert!(
        err.contains(&format!("chmod 600 {}", ca_key.display())),
        "{err}"
    );
}

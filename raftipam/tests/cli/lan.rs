//! `raftipam import`: what other inventories say is in use, reserved in the pools it falls in.

use std::process::Command;

use serde_json::Value;

use crate::binary::{free_port, spawn, BIN};

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

//! The systemd units of `packaging/systemd` under a real systemd: `scripts/systemd-test.sh`
//! boots systemd as PID 1 of a `systemd-nspawn` container (a throw-away overlay of this
//! machine's `/`, its own network namespace, so only its own loopback) with the binary cargo
//! built for this test, and checks start, the node answering on loopback only, the data under
//! `/var/lib/raftipam`, the plugin socket, a clean stop on SIGTERM within `TimeoutStopSec`, the
//! data kept across a restart, `Restart=on-failure` after SIGKILL, the order against
//! `docker.service`, the shim, socket activation (`raftipam-node.socket`), and — where this
//! machine has Debian's docker.io — the container's own dockerd, started by its systemd before
//! the node, creating a network whose first call starts the node and running a container that
//! gets its address from it. With
//! `RAFTIPAM_DEB` naming the Debian package (`scripts/test.sh` builds it with
//! `scripts/package.sh`), the package is what gets installed, with dpkg, and its install and
//! removal are checked too. It needs root; without root, or where no systemd can boot in a
//! container (the script says why), the test prints a loud SKIP.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_raftipam");

fn skip(why: &str) {
    eprintln!(
        "\n\
         ************************************************************************\n\
         SKIP the systemd units test: {why}\n\
         ************************************************************************\n"
    );
}

#[test]
fn the_systemd_units_start_stop_restart_and_order_before_docker() {
    let uid = Command::new("id").arg("-u").output().expect("run id");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        skip("it needs root (systemd-nspawn, mounts); run `bash scripts/test.sh` as root");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/systemd-test.sh");
    let o = Command::new("timeout")
        .args(["-k", "30", "900", "bash"])
        .arg(&script)
        .arg(BIN)
        .output()
        .expect("run scripts/systemd-test.sh");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    println!("{out}");
    eprintln!("{err}");
    if let Some(line) = out.lines().find(|l| l.starts_with("SKIP:")) {
        assert!(
            o.status.success(),
            "SKIP with a failure status:\n{out}{err}"
        );
        skip(line);
        return;
    }
    assert!(o.status.success(), "systemd-test.sh failed:\n{out}{err}");
    assert!(!out.contains("FAIL:"), "{out}");
    assert!(
        out.contains("PASS: all") && out.contains("checks passed"),
        "no summary line:\n{out}"
    );
    assert!(
        out.contains("PASS: the first call starts raftipam-node through the socket"),
        "socket activation was not checked:\n{out}"
    );
    if std::env::var_os("RAFTIPAM_DEB").is_some() {
        assert!(
            out.contains("PASS: dpkg -i raftipam.deb") && out.contains("PASS: dpkg -P raftipam"),
            "RAFTIPAM_DEB is set but the package was not installed and purged:\n{out}"
        );
    }
    // scripts/test.sh installs Debian's docker.io (and says so in RAFTIPAM_DOCKER_HOST): then the
    // container's own dockerd must have created a network and run a container through raftipam.
    // Where this machine cannot run dockerd (or runc) inside a container at all, the script
    // says so in a NOTE and that part is not required.
    if std::env::var_os("RAFTIPAM_DOCKER_HOST").is_some()
        && !out.contains("NOTE: dockerd cannot run in a container here")
    {
        let mut required = vec![
            "PASS: docker network create --ipam-driver raftipam: dockerd's call started the node",
            "PASS: docker rm and docker network rm: the address and the pool are given back",
        ];
        if out.contains("NOTE: runc cannot start a container inside this container") {
            eprintln!("NOTE: runc could not start a container inside the systemd container here");
        } else {
            required.push(
                "PASS: docker run --network sdt-net: the container has an address of the range",
            );
            required
                .push("PASS: raftipam addr who-has: the container's address is held by this host");
        }
        for line in required {
            assert!(
                out.contains(line),
                "Docker is installed here but the container's dockerd did not pass `{line}`:\n{out}"
            );
        }
    }
}

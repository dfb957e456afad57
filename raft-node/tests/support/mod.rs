//! Helpers shared by the end-to-end tests that drive the `raftipam` binary and a real
//! dockerd (`docker_e2e.rs`, `ops_e2e.rs`): the docker command line, the loud SKIP when no
//! daemon answers, free ports and plugin socket paths.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

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
    assert!(
        o.status.success(),
        "docker {} failed ({}):\n{}{}",
        args.join(" "),
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
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

macro_rules! require_docker {
    ($name:expr) => {
        if !docker_ready($name) {
            return;
        }
    };
}

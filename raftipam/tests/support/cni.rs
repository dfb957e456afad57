//! CNI helpers shared by the tests that run CNI plugins and Podman (`cli/cni.rs`,
//! `lab_e2e.rs`): running a plugin as a runtime does, and Podman's configuration.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Where Debian's containernetworking-plugins are.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// Runs `program` as a runtime runs a CNI plugin: a clean environment with the CNI
/// variables, the configuration on stdin. Returns the exit code and stdout as JSON (Null if
/// empty).
pub fn exec_plugin(
    program: &str,
    netns_exec: Option<&str>,
    env: &[(&str, &str)],
    stdin: &Value,
) -> (i32, Value) {
    let mut cmd = match netns_exec {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    };
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn the plugin");
    {
        use std::io::Write;
        let mut i = child.stdin.take().expect("stdin");
        i.write_all(stdin.to_string().as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("plugin output");
    let text = String::from_utf8_lossy(&out.stdout);
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "{program} wrote something that is not JSON ({e}): {text}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    (out.status.code().unwrap_or(-1), v)
}

/// Podman 4's `containers.conf` for a test: the CNI backend, plugins from `cni_bin` then
/// Debian's, networks from `netd`, no systemd, and limits below this machine's hard ones
/// (Podman's defaults are above them, and runc then fails to set them).
pub fn podman_conf(cni_bin: &Path, netd: &Path) -> String {
    format!(
        "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"{REFERENCE_PLUGINS}\"]\n\
         network_config_dir = \"{}\"\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
         [containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n",
        cni_bin.display(),
        netd.display()
    )
}

/// Debian's Podman 4 and containernetworking-plugins are here; in CI (`CI` set) their absence
/// fails the test, elsewhere a loud SKIP.
pub fn podman_ready(test: &str) -> bool {
    let podman = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("podman version 4."));
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if podman && root && Path::new(REFERENCE_PLUGINS).join("macvlan").exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: needs root, Debian's podman 4 and containernetworking-plugins (scripts/test.sh installs them)"
    );
    eprintln!(
        "\n************************************************************************\n\
         SKIP {test}: needs root, Debian's podman 4 and containernetworking-plugins.\n\
         Run `bash scripts/test.sh` (as root), which installs them.\n\
         ************************************************************************\n"
    );
    false
}

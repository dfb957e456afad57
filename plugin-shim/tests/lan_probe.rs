//! Checks on the LAN with real packets: two network namespaces made for the test, joined by a
//! veth pair. One end holds 10.213.N.1/24 and fd00:213:N::1/64 (inside those namespaces only;
//! no frame leaves them); the prober runs in the other namespace (a thread that joined it),
//! finds the interface from the routing table, probes the held addresses — the answer must
//! carry the peer's MAC — and free ones — no answer within the timeout. The watcher sees the
//! other side's probes. Everything is removed afterwards, even when an assertion fails.
//!
//! Needs root (network namespaces, raw sockets). Without it the test prints a loud SKIP, and
//! fails under `CI=true`, where it must run.

use std::fs::File;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use allocator_core::Mac;
use nix::sched::{setns, CloneFlags};
use plugin_shim::probe::{interface_for, probe, Seen, Watcher, DEFAULT_TIMEOUT};

fn root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn ip(args: &[&str]) -> String {
    let o = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e} (is iproute2 installed?)"));
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Two namespaces and a veth pair, named after this process; deleted on drop.
struct Lab {
    holder_ns: String,
    prober_ns: String,
    holder_if: String,
    prober_if: String,
    n: u32,
}

impl Lab {
    fn new() -> Lab {
        let pid = std::process::id();
        let lab = Lab {
            holder_ns: format!("ripam-lp{pid}-a"),
            prober_ns: format!("ripam-lp{pid}-b"),
            holder_if: format!("lpa{}", pid % 1_000_000),
            prober_if: format!("lpb{}", pid % 1_000_000),
            n: pid % 250 + 1,
        };
        lab.remove();
        ip(&["netns", "add", &lab.holder_ns]);
        ip(&["netns", "add", &lab.prober_ns]);
        ip(&[
            "link",
            "add",
            &lab.holder_if,
            "netns",
            &lab.holder_ns,
            "type",
            "veth",
            "peer",
            "name",
            &lab.prober_if,
            "netns",
            &lab.prober_ns,
        ]);
        for (ns, dev, host) in [
            (&lab.holder_ns, &lab.holder_if, 1),
            (&lab.prober_ns, &lab.prober_if, 2),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.213.{}.{host}/24", lab.n),
                "dev",
                dev,
            ]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("fd00:213:{}::{host}/64", lab.n),
                "dev",
                dev,
                "nodad",
            ]);
        }
        lab
    }

    fn remove(&self) {
        for ns in [&self.holder_ns, &self.prober_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }

    /// The MAC of `dev` in `ns`, as `ip` prints it.
    fn mac(ns: &str, dev: &str) -> Mac {
        let out = ip(&["-n", ns, "-o", "link", "show", "dev", dev]);
        let word = out
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no link/ether in {out:?}"));
        word.parse().expect("a MAC")
    }

    fn addr(&self, host: u8) -> IpAddr {
        format!("10.213.{}.{host}", self.n)
            .parse()
            .expect("address")
    }

    fn addr6(&self, host: u8) -> IpAddr {
        format!("fd00:213:{}::{host}", self.n)
            .parse()
            .expect("address")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Runs `f` on a thread that joined network namespace `ns`.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = File::open(format!("/var/run/netns/{ns}"))
                .unwrap_or_else(|e| panic!("namespace {ns}: {e}"));
            setns(fd, CloneFlags::CLONE_NEWNET).expect("join the namespace");
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

#[test]
fn a_probe_names_the_device_holding_an_address_and_hears_nothing_for_a_free_one() {
    if !root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the LAN probe test needs root (network namespaces, raw sockets) and CI runs as root"
        );
        eprintln!(
            "\n*** SKIP LAN probe test: it needs root (network namespaces, raw sockets) ***\n"
        );
        return;
    }
    let lab = Lab::new();
    let holder = Lab::mac(&lab.holder_ns, &lab.holder_if);
    let prober = Lab::mac(&lab.prober_ns, &lab.prober_if);
    in_netns(&lab.prober_ns, || {
        for (subnet, held, free) in [
            (format!("10.213.{}.0/24", lab.n), lab.addr(1), lab.addr(3)),
            (
                format!("fd00:213:{}::/64", lab.n),
                lab.addr6(1),
                lab.addr6(3),
            ),
        ] {
            let dev = interface_for(&subnet.parse().expect("subnet")).expect("on the link");
            assert_eq!(dev, lab.prober_if, "{subnet}");
            let got = probe(&dev, held, Duration::from_secs(1)).expect("probe");
            assert_eq!(got, Some(holder), "{held} is held by the other end");
            let t = Instant::now();
            let got = probe(&dev, free, DEFAULT_TIMEOUT).expect("probe");
            assert_eq!(got, None, "{free} is free");
            assert!(t.elapsed() >= DEFAULT_TIMEOUT, "waited the whole timeout");
        }
        let e = interface_for(&"10.214.0.0/24".parse().expect("subnet")).expect_err("no route");
        assert!(e.to_string().contains("10.214.0.0/24"), "{e}");
    });
    // The watcher on the prober's side sees the holder's side probe for the prober's own
    // addresses (and the prober's kernel answers them, which the holder's probe hears).
    let watcher = in_netns(&lab.prober_ns, || {
        Watcher::start(&lab.prober_if, 16).expect("watcher")
    });
    in_netns(&lab.holder_ns, || {
        for a in [lab.addr(2), lab.addr6(2)] {
            let got = probe(&lab.holder_if, a, Duration::from_secs(1)).expect("probe");
            assert_eq!(got, Some(prober), "{a} is held by the prober's end");
        }
    });
    let mut seen = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    while seen.len() < 2 && Instant::now() < until {
        if let Some(o) = watcher.recv_timeout(Duration::from_millis(100)) {
            // (The holder's kernel may run its own link-local DAD meanwhile: other addresses.)
            let ours = [lab.addr(2), lab.addr6(2)].contains(&o.ip);
            if ours && o.mac == holder && matches!(o.seen, Seen::ArpProbe | Seen::DadProbe) {
                seen.push(o.ip);
            }
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![lab.addr(2), lab.addr6(2)],
        "the watcher saw both probes"
    );
    drop(watcher);
    // A watcher nobody reads keeps what its buffer holds and counts the rest; dropping it
    // stops it.
    let small = in_netns(&lab.prober_ns, || {
        Watcher::start(&lab.prober_if, 1).expect("watcher")
    });
    in_netns(&lab.holder_ns, || {
        for host in 10..14 {
            probe(&lab.holder_if, lab.addr(host), Duration::from_millis(20)).expect("probe");
        }
    });
    let until = Instant::now() + Duration::from_secs(2);
    while small.dropped() < 3 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        small.dropped() >= 3,
        "four probes, room for one: {} dropped",
        small.dropped()
    );
    assert_eq!(small.drain().len(), 1);
    let t = Instant::now();
    drop(small);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "a dropped watcher stops at once"
    );
}

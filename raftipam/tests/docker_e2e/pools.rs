//! Releases and pools: `docker rm` releases the address and `docker network rm` the pool with
//! its reservations; `--ipam-opt` `serial`, `reserve` and `cooldown` shape what is handed out.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::Value;

use crate::binary::*;
use crate::helpers::*;

/// 4. `docker rm` releases the address; `docker network rm` releases the pool (and the
///    gateway and aux reservations); nothing is left in the cluster.
#[test]
fn rm_releases_the_address_and_network_rm_the_pool() {
    require_docker!("rm_releases_the_address_and_network_rm_the_pool");
    let up = Up::start("rtest4", "hostrt4");
    let mut d = Docker::new("rt4-");
    let pool = "local/10.104.0.0/24";
    let n = d.network(
        "net",
        &[
            "--ipam-driver",
            "rtest4",
            "--subnet",
            "10.104.0.0/24",
            "--aux-address",
            "x=10.104.0.2",
        ],
    );
    let c: Vec<String> = (0..3)
        .map(|i| d.run_ok(&format!("c{i}"), &n, &[]))
        .collect();
    let addrs: Vec<IpAddr> = c.iter().map(|c| ip_of(c, &n)).collect();
    assert_eq!(
        cluster_addrs(up.port, pool),
        addrs.iter().copied().collect()
    );

    d.rm(&c[1]);
    let left = cluster_addrs(up.port, pool);
    assert!(!left.contains(&addrs[1]), "{} still allocated", addrs[1]);
    assert_eq!(left, BTreeSet::from([addrs[0], addrs[2]]));
    // The freed address is given out again (lowest free first).
    let again = d.run_ok("c3", &n, &[]);
    assert_eq!(ip_of(&again, &n), addrs[1]);

    for name in [&c[0], &c[2], &again] {
        d.rm(name);
    }
    assert!(cluster_addrs(up.port, pool).is_empty());
    d.network_rm(&n);
    assert!(
        cluster_pools(up.port).is_empty(),
        "pools left after network rm"
    );
    let who = raftipam_json(up.port, &["addr", "who-has", "10.104.0.1"]);
    assert_eq!(who, Value::Array(vec![]), "the gateway is still reserved");
    let who = raftipam_json(up.port, &["addr", "who-has", "10.104.0.2"]);
    assert_eq!(
        who,
        Value::Array(vec![]),
        "the aux address is still reserved"
    );
}

/// 12. `--ipam-opt` through a real dockerd: `serial=true` hands out the next address after
///     the last one (a released address is not reused at once), `reserve=` keeps a range out,
///     `cooldown=` holds a released address back in lowest-first order.
#[test]
fn ipam_options_serial_reserve_cooldown() {
    require_docker!("ipam_options_serial_reserve_cooldown");
    let _up = Up::start("rtest12", "hostrt12");
    let mut d = Docker::new("rt12-");
    let serial = d.network(
        "serial",
        &[
            "--ipam-driver",
            "rtest12",
            "--subnet",
            "10.112.0.0/24",
            "--ipam-opt",
            "serial=true",
            "--ipam-opt",
            "reserve=10.112.0.4-10.112.0.6",
        ],
    );
    let a: Vec<IpAddr> = (0..3)
        .map(|i| {
            let c = d.run_ok(&format!("s{i}"), &serial, &[]);
            ip_of(&c, &serial)
        })
        .collect();
    // .1 is the gateway, .4-.6 reserved.
    assert_eq!(a, [ip("10.112.0.2"), ip("10.112.0.3"), ip("10.112.0.7")]);
    d.rm(&d.name("s0"));
    let next = d.run_ok("s3", &serial, &[]);
    assert_eq!(
        ip_of(&next, &serial),
        ip("10.112.0.8"),
        "serial order reused an address"
    );
    let o = d.run("s4", &serial, &["--ip", "10.112.0.5"]);
    assert!(!o.status.success(), "a reserved address was handed out");

    let cool = d.network(
        "cool",
        &[
            "--ipam-driver",
            "rtest12",
            "--subnet",
            "10.113.0.0/24",
            "--ipam-opt",
            "cooldown=5m",
        ],
    );
    let c0 = d.run_ok("c0", &cool, &[]);
    let first = ip_of(&c0, &cool);
    d.rm(&c0);
    let c1 = d.run_ok("c1", &cool, &[]);
    assert_ne!(
        ip_of(&c1, &cool),
        first,
        "a cooling address was handed out again"
    );
}

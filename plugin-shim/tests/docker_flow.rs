//! The calls dockerd makes over a network's life, on a real unix socket: create (pool,
//! gateway, aux address), endpoints, repeats, deletes — on one host and on two hosts that
//! share one allocator.

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use allocator_core::PoolId;
use common::{Client, Running};
use hyper::StatusCode;
use plugin_shim::{MemoryBackend, ShimConfig};
use serde_json::{json, Value};

fn gateway_opts() -> Value {
    json!({"RequestAddressType": "com.docker.network.gateway"})
}

async fn request_address(c: &mut Client, pool: &str, addr: &str, options: Value) -> common::Reply {
    c.call(
        "IpamDriver.RequestAddress",
        json!({"PoolID": pool, "Address": addr, "Options": options}),
    )
    .await
}

async fn endpoint(c: &mut Client, pool: &str, name: &str, addr: &str) -> common::Reply {
    request_address(
        c,
        pool,
        addr,
        json!({"com.docker.network.endpoint.name": name}),
    )
    .await
}

async fn release(c: &mut Client, pool: &str, addr: &str) {
    let r = c
        .call(
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": pool, "Address": addr}),
        )
        .await;
    assert_eq!(r.ok(), json!({}));
}

fn address_of(reply: &common::Reply) -> String {
    reply.ok()["Address"]
        .as_str()
        .expect("Address is a string")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_create_endpoints_and_delete_like_dockerd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(MemoryBackend::default());
    let shim = Running::start(
        &dir.path().join("plugins/raftipam.sock"),
        Arc::clone(&backend),
        ShimConfig::new("host-a"),
    )
    .await;
    let mut c = shim.client().await;

    // Handshake: empty bodies, as dockerd sends them.
    assert_eq!(
        c.call_empty("Plugin.Activate").await.ok(),
        json!({"Implements": ["IpamDriver"]})
    );
    assert_eq!(
        c.call_empty("IpamDriver.GetCapabilities").await.ok(),
        json!({"RequiresMACAddress": true, "RequiresRequestReplay": false})
    );
    assert_eq!(
        c.call_empty("IpamDriver.GetDefaultAddressSpaces")
            .await
            .ok(),
        json!({"LocalDefaultAddressSpace": "local", "GlobalDefaultAddressSpace": "global"})
    );

    // docker network create --subnet 10.20.0.0/24 --aux-address host=10.20.0.200
    let pool = c
        .call("IpamDriver.RequestPool", json!({"AddressSpace": "local", "Pool": "10.20.0.0/24", "SubPool": "", "Options": {}, "V6": false}))
        .await
        .ok();
    assert_eq!(
        pool,
        json!({"PoolID": "local/10.20.0.0/24", "Pool": "10.20.0.0/24", "Data": {}})
    );
    let id = "local/10.20.0.0/24";
    assert_eq!(
        address_of(&request_address(&mut c, id, "", gateway_opts()).await),
        "10.20.0.1/24"
    );
    assert_eq!(
        address_of(&request_address(&mut c, id, "10.20.0.200", Value::Null).await),
        "10.20.0.200/24"
    );

    // Containers.
    let web1 = address_of(&endpoint(&mut c, id, "web-1", "").await);
    assert_eq!(web1, "10.20.0.2/24");
    assert_eq!(
        address_of(&endpoint(&mut c, id, "web-1", "").await),
        web1,
        "a repeated request gets the same address"
    );
    assert_eq!(
        address_of(&endpoint(&mut c, id, "web-2", "").await),
        "10.20.0.3/24"
    );
    assert_eq!(
        address_of(&endpoint(&mut c, id, "db", "10.20.0.50").await),
        "10.20.0.50/24"
    );
    assert_eq!(
        address_of(&endpoint(&mut c, id, "db", "10.20.0.50").await),
        "10.20.0.50/24",
        "repeat with --ip"
    );

    // Conflicts are refused with a reason.
    endpoint(&mut c, id, "web-3", "10.20.0.2")
        .await
        .err(StatusCode::CONFLICT, "host-a/web-1");
    endpoint(&mut c, id, "web-3", "10.20.0.200")
        .await
        .err(StatusCode::CONFLICT, "reserved");
    endpoint(&mut c, id, "web-3", "10.20.0.1")
        .await
        .err(StatusCode::CONFLICT, "reserved");

    // docker rm, then docker network rm: endpoints, gateway, aux, pool.
    for a in ["10.20.0.2", "10.20.0.3", "10.20.0.50"] {
        release(&mut c, id, a).await;
    }
    release(&mut c, id, "10.20.0.1").await;
    release(&mut c, id, "10.20.0.200").await;
    assert_eq!(
        c.call("IpamDriver.ReleasePool", json!({"PoolID": id}))
            .await
            .ok(),
        json!({})
    );
    assert!(
        backend.with_state(|s| s.pools().is_empty()),
        "the network's pool is gone"
    );

    shim.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_options_range_serial_cooldown_and_reserve_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(MemoryBackend::default());
    let shim = Running::start(
        &dir.path().join("ipam.sock"),
        Arc::clone(&backend),
        ShimConfig::new("host-a"),
    )
    .await;
    let mut c = shim.client().await;

    // --subnet 10.30.0.0/16 --ip-range 10.30.5.0/24 with raftipam's options.
    let pool = c
        .call(
            "IpamDriver.RequestPool",
            json!({"AddressSpace": "local", "Pool": "10.30.0.0/16", "SubPool": "10.30.5.0/24",
                   "Options": {"com.docker.network.ipam.serial": "true", "cooldown": "1h",
                               "reserve": "10.30.5.0-10.30.5.9", "com.example.unknown": "x"}, "V6": false}),
        )
        .await
        .ok();
    let id = pool["PoolID"].as_str().expect("PoolID").to_string();
    assert_eq!(id, "local/10.30.0.0/16/10.30.5.0/24");
    assert_eq!(pool["Pool"], "10.30.0.0/16");
    assert_eq!(
        address_of(&request_address(&mut c, &id, "", gateway_opts()).await),
        "10.30.0.1/16",
        "gateway: the subnet's first host"
    );

    let a = address_of(&endpoint(&mut c, &id, "a", "").await);
    assert_eq!(
        a, "10.30.5.10/16",
        "from the range, after the reserved addresses"
    );
    let b = address_of(&endpoint(&mut c, &id, "b", "").await);
    assert_eq!(b, "10.30.5.11/16");
    release(&mut c, &id, "10.30.5.10").await;
    let next = address_of(&endpoint(&mut c, &id, "c", "").await);
    assert_eq!(
        next, "10.30.5.12/16",
        "serial order does not go back to the released address"
    );
    endpoint(&mut c, &id, "d", "10.30.5.10")
        .await
        .err(StatusCode::CONFLICT, "cools down");
    endpoint(&mut c, &id, "d", "10.30.5.3")
        .await
        .err(StatusCode::CONFLICT, "reserved");

    // Bad option values are refused, naming the option.
    c.call(
        "IpamDriver.RequestPool",
        json!({"AddressSpace": "local", "Pool": "10.31.0.0/24", "Options": {"cooldown": "soon"}}),
    )
    .await
    .err(StatusCode::BAD_REQUEST, "cooldown");
    shim.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_and_self_chosen_pools() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(MemoryBackend::default());
    let shim = Running::start(
        &dir.path().join("ipam.sock"),
        Arc::clone(&backend),
        ShimConfig::new("host-a"),
    )
    .await;
    let mut c = shim.client().await;

    let v6 = c
        .call(
            "IpamDriver.RequestPool",
            json!({"AddressSpace": "local", "Pool": "fd00:10::/64", "V6": true}),
        )
        .await
        .ok();
    let id = v6["PoolID"].as_str().expect("PoolID").to_string();
    assert_eq!(
        address_of(&request_address(&mut c, &id, "", gateway_opts()).await),
        "fd00:10::1/64"
    );
    assert_eq!(
        address_of(&endpoint(&mut c, &id, "web", "").await),
        "fd00:10::2/64"
    );
    endpoint(&mut c, &id, "web-2", "10.0.0.5")
        .await
        .err(StatusCode::BAD_REQUEST, "IPv4 address but pool");

    // No --subnet: the allocator picks one; dockerd may ask again while holding the first
    // (its overlap loop) and must get another.
    let first = c
        .call(
            "IpamDriver.RequestPool",
            json!({"AddressSpace": "local", "Pool": "", "V6": false}),
        )
        .await
        .ok();
    let second = c
        .call(
            "IpamDriver.RequestPool",
            json!({"AddressSpace": "local", "Pool": "", "V6": false}),
        )
        .await
        .ok();
    assert_ne!(first["Pool"], second["Pool"]);
    for p in [&first, &second] {
        let id: PoolId = p["PoolID"]
            .as_str()
            .expect("PoolID")
            .parse()
            .expect("a pool id dockerd can hand back");
        assert_eq!(p["Pool"].as_str(), Some(id.subnet.to_string().as_str()));
        assert!(matches!(id.subnet.addr(), IpAddr::V4(_)));
    }
    shim.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_the_pool_and_gateway_but_never_an_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(MemoryBackend::default());
    let a = Running::start(
        &dir.path().join("a/raftipam.sock"),
        Arc::clone(&backend),
        ShimConfig::new("host-a"),
    )
    .await;
    let b = Running::start(
        &dir.path().join("b/raftipam.sock"),
        Arc::clone(&backend),
        ShimConfig::new("host-b"),
    )
    .await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);

    let req = json!({"AddressSpace": "local", "Pool": "10.40.0.0/24", "SubPool": "", "Options": null, "V6": false});
    let pa = ca.call("IpamDriver.RequestPool", req.clone()).await.ok();
    let pb = cb.call("IpamDriver.RequestPool", req).await.ok();
    assert_eq!(pa, pb, "the same network on two hosts is one pool");
    let id = pa["PoolID"].as_str().expect("PoolID").to_string();

    assert_eq!(
        address_of(&request_address(&mut ca, &id, "", gateway_opts()).await),
        "10.40.0.1/24"
    );
    assert_eq!(
        address_of(&request_address(&mut cb, &id, "", gateway_opts()).await),
        "10.40.0.1/24",
        "one gateway, shared"
    );

    // The same container name on two hosts: two owners, two addresses.
    let on_a = address_of(&endpoint(&mut ca, &id, "web", "").await);
    let on_b = address_of(&endpoint(&mut cb, &id, "web", "").await);
    assert_ne!(on_a, on_b);
    endpoint(&mut cb, &id, "other", on_a.trim_end_matches("/24"))
        .await
        .err(StatusCode::CONFLICT, "host-a/web");
    let r = cb
        .call(
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": id, "Address": on_a.trim_end_matches("/24")}),
        )
        .await;
    r.err(StatusCode::CONFLICT, "not by host \"host-b\"");

    // Host A deletes the network: the gateway stays reserved for host B.
    release(&mut ca, &id, on_a.trim_end_matches("/24")).await;
    release(&mut ca, &id, "10.40.0.1").await;
    assert_eq!(
        ca.call("IpamDriver.ReleasePool", json!({"PoolID": id}))
            .await
            .ok(),
        json!({})
    );
    endpoint(&mut cb, &id, "sneaky", "10.40.0.1")
        .await
        .err(StatusCode::CONFLICT, "reserved");

    // Host B deletes it too: nothing is left.
    release(&mut cb, &id, on_b.trim_end_matches("/24")).await;
    release(&mut cb, &id, "10.40.0.1").await;
    assert_eq!(
        cb.call("IpamDriver.ReleasePool", json!({"PoolID": id}))
            .await
            .ok(),
        json!({})
    );
    assert!(backend.with_state(|s| s.pools().is_empty()));

    a.stop().await.expect("clean shutdown");
    b.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_default_gateway_is_reported_with_a_way_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(MemoryBackend::default());
    let a = Running::start(
        &dir.path().join("a.sock"),
        Arc::clone(&backend),
        ShimConfig::new("host-a"),
    )
    .await;
    let b = Running::start(
        &dir.path().join("b.sock"),
        Arc::clone(&backend),
        ShimConfig::new("host-b"),
    )
    .await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let req = json!({"AddressSpace": "local", "Pool": "10.50.0.0/24"});
    let id = ca.call("IpamDriver.RequestPool", req.clone()).await.ok()["PoolID"]
        .as_str()
        .expect("PoolID")
        .to_string();
    // Host A chose another gateway, and a container took .1.
    assert_eq!(
        address_of(&request_address(&mut ca, &id, "10.50.0.254", gateway_opts()).await),
        "10.50.0.254/24"
    );
    assert_eq!(
        address_of(&endpoint(&mut ca, &id, "web", "").await),
        "10.50.0.1/24"
    );
    cb.call("IpamDriver.RequestPool", req).await.ok();
    let msg = request_address(&mut cb, &id, "", gateway_opts())
        .await
        .err(StatusCode::CONFLICT, "--gateway");
    assert!(msg.contains("10.50.0.1"), "{msg}");
    a.stop().await.expect("clean shutdown");
    b.stop().await.expect("clean shutdown");
}

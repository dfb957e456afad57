//! Every way a request can be wrong gets a non-200 reply with a JSON `{"Err"}` that says
//! what is wrong — never plain text, never a hang.

mod common;

use std::sync::Arc;

use common::Running;
use hyper::StatusCode;
use plugin_shim::{MemoryBackend, ShimConfig};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_json_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(MemoryBackend::default());
    let shim = Running::start(
        &dir.path().join("ipam.sock"),
        backend,
        ShimConfig::new("host-a"),
    )
    .await;
    let mut c = shim.client().await;
    let v4 = c
        .call(
            "IpamDriver.RequestPool",
            json!({"AddressSpace": "local", "Pool": "10.60.0.0/24"}),
        )
        .await
        .ok();
    let v4 = v4["PoolID"].as_str().expect("PoolID").to_string();
    let v6 = c
        .call(
            "IpamDriver.RequestPool",
            json!({"AddressSpace": "local", "Pool": "fd00:60::/64"}),
        )
        .await
        .ok();
    let v6 = v6["PoolID"].as_str().expect("PoolID").to_string();
    let ep = json!({"com.docker.network.endpoint.name": "web"});

    // Not JSON, wrong shapes, wrong types.
    c.raw("POST", "/IpamDriver.RequestPool", b"{not json".to_vec())
        .await
        .err(StatusCode::BAD_REQUEST, "not valid JSON");
    c.raw("POST", "/IpamDriver.RequestPool", b"[1,2]".to_vec())
        .await
        .err(StatusCode::BAD_REQUEST, "JSON object");
    c.raw("POST", "/IpamDriver.RequestPool", Vec::new())
        .await
        .err(StatusCode::BAD_REQUEST, "needs a JSON object body");
    c.raw("POST", "/IpamDriver.RequestAddress", vec![0xff, 0xfe, 0x00])
        .await
        .err(StatusCode::BAD_REQUEST, "JSON");
    c.call("IpamDriver.RequestPool", json!({"AddressSpace": 5}))
        .await
        .err(StatusCode::BAD_REQUEST, "field AddressSpace");
    c.call(
        "IpamDriver.RequestPool",
        json!({"AddressSpace": "local", "V6": "yes"}),
    )
    .await
    .err(StatusCode::BAD_REQUEST, "field V6");
    c.call(
        "IpamDriver.RequestAddress",
        json!({"PoolID": v4, "Options": {"a": 1}}),
    )
    .await
    .err(StatusCode::BAD_REQUEST, "field Options");
    c.call(
        "IpamDriver.RequestPool",
        json!({"AddressSpace": "local", "Pool": "10.61.0.0"}),
    )
    .await
    .err(StatusCode::BAD_REQUEST, "prefix length");

    // Pools and addresses that do not fit.
    c.call(
        "IpamDriver.RequestAddress",
        json!({"PoolID": "local/10.99.0.0/24", "Address": "", "Options": ep}),
    )
    .await
    .err(StatusCode::BAD_REQUEST, "does not exist");
    c.call(
        "IpamDriver.RequestAddress",
        json!({"PoolID": "no-such-thing", "Address": "", "Options": ep}),
    )
    .await
    .err(StatusCode::BAD_REQUEST, "invalid pool id");
    c.call(
        "IpamDriver.RequestAddress",
        json!({"PoolID": "", "Address": "", "Options": ep}),
    )
    .await
    .err(StatusCode::BAD_REQUEST, "PoolID is empty");
    c.call(
        "IpamDriver.RequestAddress",
        json!({"PoolID": v4, "Address": "10.61.0.5", "Options": ep}),
    )
    .await
    .err(StatusCode::BAD_REQUEST, "outside pool local/10.60.0.0/24");
    c.call(
        "IpamDriver.RequestAddress",
        json!({"PoolID": v6, "Address": "10.60.0.5", "Options": ep}),
    )
    .await
    .err(
        StatusCode::BAD_REQUEST,
        "IPv4 address but pool local/fd00:60::/64 is IPv6",
    );
    c.call(
        "IpamDriver.RequestAddress",
        json!({"PoolID": v4, "Address": "10.60.0.300", "Options": ep}),
    )
    .await
    .err(StatusCode::BAD_REQUEST, "not an IP address");
    c.call(
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": v4, "Address": ""}),
    )
    .await
    .err(StatusCode::BAD_REQUEST, "Address is empty");
    c.call(
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": v4, "Address": "fd00::1"}),
    )
    .await
    .err(StatusCode::BAD_REQUEST, "IPv6 address");
    c.call(
        "IpamDriver.ReleasePool",
        json!({"PoolID": "local/10.98.0.0/24"}),
    )
    .await
    .err(StatusCode::BAD_REQUEST, "does not exist");

    // Unknown methods and wrong HTTP methods.
    c.call("IpamDriver.Frobnicate", json!({}))
        .await
        .err(StatusCode::NOT_FOUND, "unknown plugin method");
    c.call_empty("NetworkDriver.CreateNetwork")
        .await
        .err(StatusCode::NOT_FOUND, "IpamDriver.RequestPool");
    c.raw("GET", "/Plugin.Activate", Vec::new())
        .await
        .err(StatusCode::METHOD_NOT_ALLOWED, "POST");

    // The connection is still good after all that.
    assert_eq!(
        c.call_empty("Plugin.Activate").await.ok(),
        json!({"Implements": ["IpamDriver"]})
    );
    shim.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_with_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shim = Running::start(
        &dir.path().join("ipam.sock"),
        Arc::new(MemoryBackend::default()),
        ShimConfig::new("host-a"),
    )
    .await;
    let mut c = shim.client().await;
    let huge = format!(
        r#"{{"AddressSpace":"local","Pool":"10.70.0.0/24","Options":{{"x":"{}"}}}}"#,
        "a".repeat(80 * 1024)
    );
    c.raw("POST", "/IpamDriver.RequestPool", huge.into_bytes())
        .await
        .err(StatusCode::PAYLOAD_TOO_LARGE, "larger than 65536 bytes");
    // Just under the limit is fine.
    let mut c = shim.client().await;
    let big = format!(
        r#"{{"AddressSpace":"local","Pool":"10.70.0.0/24","Options":{{"x":"{}"}}}}"#,
        "a".repeat(60 * 1024)
    );
    c.raw("POST", "/IpamDriver.RequestPool", big.into_bytes())
        .await
        .ok();
    shim.stop().await.expect("clean shutdown");
}

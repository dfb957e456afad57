//! A cluster that does not answer must not block dockerd: every call is answered within the
//! configured timeout, with an error that says the cluster did not answer.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use allocator_core::{Op, Outcome, PoolId, PoolInfo};
use common::Running;
use hyper::StatusCode;
use plugin_shim::{Backend, BackendError, ShimConfig};
use serde_json::json;

/// A backend that accepts every call and never answers (a cluster without quorum).
struct Silent;

impl Backend for Silent {
    fn apply(&self, _op: Op) -> impl Future<Output = Result<Outcome, BackendError>> + Send {
        std::future::pending()
    }

    fn pool(&self, _id: &PoolId) -> impl Future<Output = Result<PoolInfo, BackendError>> + Send {
        std::future::pending()
    }
}

/// A backend that knows it cannot reach the cluster.
struct Unreachable;

impl Backend for Unreachable {
    async fn apply(&self, _op: Op) -> Result<Outcome, BackendError> {
        Err(BackendError::Unavailable(
            "no quorum: 1 of 3 voters reachable".into(),
        ))
    }

    async fn pool(&self, _id: &PoolId) -> Result<PoolInfo, BackendError> {
        Err(BackendError::Unavailable(
            "no quorum: 1 of 3 voters reachable".into(),
        ))
    }
}

/// A backend with a bug.
struct Buggy;

impl Backend for Buggy {
    async fn apply(&self, op: Op) -> Result<Outcome, BackendError> {
        panic!("bug while applying {op:?}")
    }

    async fn pool(&self, _id: &PoolId) -> Result<PoolInfo, BackendError> {
        panic!("bug while reading a pool")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_cluster_gets_an_error_within_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ShimConfig::new("host-a").with_call_timeout(Duration::from_millis(300));
    let shim = Running::start(&dir.path().join("ipam.sock"), Arc::new(Silent), config).await;
    let mut c = shim.client().await;
    let msg = c
        .call(
            "IpamDriver.RequestPool",
            json!({"AddressSpace": "local", "Pool": "10.80.0.0/24"}),
        )
        .await
        .err(
            StatusCode::SERVICE_UNAVAILABLE,
            "did not answer within 300ms",
        );
    assert!(msg.contains("no quorum"), "{msg}");
    let ep = json!({"com.docker.network.endpoint.name": "web"});
    c.call(
        "IpamDriver.RequestAddress",
        json!({"PoolID": "local/10.80.0.0/24", "Address": "", "Options": ep}),
    )
    .await
    .err(StatusCode::SERVICE_UNAVAILABLE, "did not answer");
    // The handshake needs no backend and still works; so does the same connection.
    c.call_empty("IpamDriver.GetCapabilities").await.ok();
    // Shutdown is not held up by the calls that timed out.
    shim.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_reported_as_such() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shim = Running::start(
        &dir.path().join("ipam.sock"),
        Arc::new(Unreachable),
        ShimConfig::new("host-a"),
    )
    .await;
    let mut c = shim.client().await;
    c.call(
        "IpamDriver.ReleasePool",
        json!({"PoolID": "local/10.80.0.0/24"}),
    )
    .await
    .err(
        StatusCode::SERVICE_UNAVAILABLE,
        "cluster is unavailable: no quorum",
    );
    shim.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_backend_gets_a_500_and_the_plugin_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shim = Running::start(
        &dir.path().join("ipam.sock"),
        Arc::new(Buggy),
        ShimConfig::new("host-a"),
    )
    .await;
    let mut c = shim.client().await;
    c.call(
        "IpamDriver.RequestPool",
        json!({"AddressSpace": "local", "Pool": "10.80.0.0/24"}),
    )
    .await
    .err(StatusCode::INTERNAL_SERVER_ERROR, "bug");
    c.call_empty("Plugin.Activate").await.ok();
    shim.stop().await.expect("clean shutdown");
}

//! The socket file's life: where it is created, who may use it, what happens to a stale or a
//! live socket in the way, and that it goes away when the shim stops.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;

use common::{Client, Running};
use plugin_shim::{serve, MemoryBackend, PluginSocket, ShimConfig, ShimError};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_created_in_a_new_directory_for_root_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("run/docker/plugins/raftipam.sock");
    let shim = Running::start(
        &path,
        Arc::new(MemoryBackend::default()),
        ShimConfig::new("h"),
    )
    .await;
    let meta = std::fs::symlink_metadata(&path).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Nothing but the socket is left in the directory (no temporary name).
    let names: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("raftipam.sock")]);
    shim.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_removed_on_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raftipam.sock");
    let shim = Running::start(
        &path,
        Arc::new(MemoryBackend::default()),
        ShimConfig::new("h"),
    )
    .await;
    let mut c = shim.client().await;
    c.call_empty("Plugin.Activate").await.ok();
    drop(c);
    shim.stop().await.expect("clean shutdown");
    assert!(!path.exists(), "the socket file is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_not_held_up_by_an_idle_kept_alive_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raftipam.sock");
    let shim = Running::start(
        &path,
        Arc::new(MemoryBackend::default()),
        ShimConfig::new("h"),
    )
    .await;
    let mut c = shim.client().await;
    c.call_empty("Plugin.Activate").await.ok();
    // `c` stays open, as dockerd's pooled connection would.
    shim.stop().await.expect("clean shutdown");
    assert!(!path.exists());
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raftipam.sock");
    // A crashed plugin leaves its socket file behind.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind a stale socket"));
    assert!(path.exists());
    let shim = Running::start(
        &path,
        Arc::new(MemoryBackend::default()),
        ShimConfig::new("h"),
    )
    .await;
    let mut c = Client::connect(&path).await;
    assert_eq!(
        c.call_empty("Plugin.Activate").await.ok(),
        json!({"Implements": ["IpamDriver"]})
    );
    shim.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_socket_is_not_taken_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raftipam.sock");
    let first = Running::start(
        &path,
        Arc::new(MemoryBackend::default()),
        ShimConfig::new("h"),
    )
    .await;
    let second = PluginSocket::bind(&path).await;
    assert!(
        matches!(second, Err(ShimError::SocketInUse { .. })),
        "{second:?}"
    );
    let msg = second.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("in use"), "{msg}");
    // The first shim still serves.
    first
        .client()
        .await
        .call_empty("Plugin.Activate")
        .await
        .ok();
    first.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_socket_is_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raftipam.sock");
    std::fs::write(&path, b"precious").expect("write");
    let r = PluginSocket::bind(&path).await;
    assert!(matches!(r, Err(ShimError::NotASocket { .. })), "{r:?}");
    assert_eq!(std::fs::read(&path).expect("still there"), b"precious");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_host_name_is_refused_before_binding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raftipam.sock");
    let r = serve(
        &path,
        Arc::new(MemoryBackend::default()),
        ShimConfig::new(" "),
        async {},
    )
    .await;
    assert!(matches!(r, Err(ShimError::Config(_))), "{r:?}");
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_returns_when_shutdown_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raftipam.sock");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        path.clone(),
        Arc::new(MemoryBackend::default()),
        ShimConfig::new("h"),
        async move {
            let _ = rx.await;
        },
    ));
    // Wait for the socket to appear (serve binds it before serving).
    common::patiently("socket to appear", async {
        while !path.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    Client::connect(&path)
        .await
        .call_empty("IpamDriver.GetCapabilities")
        .await
        .ok();
    let _ = tx.send(());
    common::patiently("serve to return", server)
        .await
        .expect("no panic")
        .expect("clean shutdown");
    assert!(!path.exists());
}

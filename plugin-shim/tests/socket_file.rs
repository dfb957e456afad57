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

/// No socket is ever created by name in the plugin directory: it appears there only by a
/// rename, with its final name, after its mode is set — a socket created there first (under a
/// temporary name, with the umask's mode, 0777 under umask 0) could be connected to before its
/// chmod, and that connection would outlive the chmod. Watched with inotify, so the order is
/// the kernel's, not a guess. On commit 4b9aa6a (release 0.1.0) the socket was bound under a
/// temporary name in the plugin directory itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_appears_only_by_a_rename_with_its_final_mode() {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("mkdir");
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = plugins.join("raftipam.sock");
    let watch = Inotify::init(InitFlags::IN_NONBLOCK).expect("inotify");
    watch
        .add_watch(
            &plugins,
            AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ATTRIB,
        )
        .expect("watch");
    let shim = Running::start(
        &path,
        Arc::new(MemoryBackend::default()),
        ShimConfig::new("h"),
    )
    .await;
    let meta = std::fs::symlink_metadata(&path).expect("socket exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let mut seen = Vec::new();
    while let Ok(events) = watch.read_events() {
        if events.is_empty() {
            break;
        }
        seen.extend(events.into_iter().map(|e| (e.mask, e.name)));
    }
    for (mask, name) in &seen {
        let name = name.as_ref().map(|n| n.to_string_lossy().into_owned());
        if mask.contains(AddWatchFlags::IN_ISDIR) || name.is_none() {
            continue; // the private directory the socket is made in; the directory itself
        }
        assert!(
            mask.contains(AddWatchFlags::IN_MOVED_TO) && name.as_deref() == Some("raftipam.sock"),
            "something other than the finished socket appeared in the plugin directory: {mask:?} {name:?} (all: {seen:?})"
        );
    }
    assert!(
        seen.iter()
            .any(|(m, _)| m.contains(AddWatchFlags::IN_MOVED_TO)),
        "the socket was renamed into place: {seen:?}"
    );
    let names: Vec<_> = std::fs::read_dir(&plugins)
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

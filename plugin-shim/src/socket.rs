//! The life of the socket file dockerd finds the plugin by.
//!
//! dockerd discovers a legacy plugin by a socket in `/run/docker/plugins/` whose base name is
//! the driver name. This module owns that file: it creates the directory, refuses to take
//! over a socket that another live process serves (or a file that is not a socket), replaces
//! a stale socket left by a crash, makes the socket reachable by root only, and removes it
//! when the shim stops — as soon as shutdown begins, so that dockerd does not connect to a
//! plugin that will not answer.
//!
//! The socket is bound in a private directory (mode 0700) made next to its path, given mode
//! 0600 there and then renamed into place: no socket with wider permissions is ever reachable
//! (whatever the umask), the final path never exists with them, and a stale socket is replaced
//! in one step.
//!
//! Under systemd socket activation (`raftipam-node.socket`, `raftipam-shim.socket`) the socket
//! is systemd's: it exists before dockerd starts, even while the node still replays its log,
//! and dockerd's calls wait in its backlog until the plugin serves. The plugin then takes the
//! socket systemd passed (`LISTEN_FDS`) instead of binding, and leaves the file in place when
//! it stops, so that the next call starts it again.

use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::{info, warn};

use crate::backend::Backend;
use crate::error::ShimError;
use crate::router::router;
use crate::ShimConfig;

/// Permissions of the socket: dockerd runs as root, and anyone who can reach the socket can
/// allocate and release addresses as this host.
pub const SOCKET_MODE: u32 = 0o600;

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ShimError + 'a {
    move |source| ShimError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The directories dockerd searches for a plugin's socket (moby `pkg/plugins/discovery.go`):
/// a socket anywhere else is never found, and `docker network create --ipam-driver NAME` fails
/// with "plugin NAME not found".
pub const DOCKER_PLUGIN_DIRS: [&str; 3] = [
    "/run/docker/plugins",
    "/etc/docker/plugins",
    "/usr/lib/docker/plugins",
];

/// Why dockerd will not find a plugin socket at `path`, with what to do; `None` if it will.
pub fn undiscoverable(path: &Path) -> Option<String> {
    let dir = path.parent().unwrap_or(Path::new(""));
    let named_ok = path.extension().is_some_and(|e| e == "sock");
    if named_ok && DOCKER_PLUGIN_DIRS.iter().any(|d| dir == Path::new(d)) {
        return None;
    }
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "raftipam".into());
    Some(format!(
        "dockerd will not find the plugin socket {}: it looks for NAME.sock in {} only; use --socket /run/docker/plugins/{name}.sock (the driver name is then `{name}`)",
        path.display(),
        DOCKER_PLUGIN_DIRS.join(", ")
    ))
}

/// Removes the socket file when dropped, if the path still names the socket this process
/// bound (a newer shim may have replaced it).
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    fn remove(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.id => match std::fs::remove_file(&self.path) {
                Ok(()) => info!(path = %self.path.display(), "plugin socket removed"),
                Err(e) => {
                    warn!(path = %self.path.display(), error = %e, "could not remove the plugin socket")
                }
            },
            _ => {}
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A bound plugin socket, not yet served. Binding first lets a caller know the socket exists
/// (and start dockerd) before serving begins.
#[derive(Debug)]
pub struct PluginSocket {
    listener: tokio::net::UnixListener,
    /// The file this process created (removed when serving stops); `None` when systemd owns
    /// it (socket activation).
    file: Option<SocketFile>,
    path: PathBuf,
}

/// The unix socket systemd passed for `path` (socket activation), if it passed one. Fails if
/// it passed something else, or a socket for another path.
fn from_systemd(path: &Path) -> Result<Option<std::os::unix::net::UnixListener>, ShimError> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let listener = fds
        .take_unix_listener(0)
        .map_err(io_err("taking the socket systemd passed for", path))?
        .ok_or_else(|| {
            ShimError::Config(format!(
                "systemd passed a socket that is not a listening unix socket; the plugin socket {} must be `ListenStream=` a path",
                path.display()
            ))
        })?;
    let passed = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    if passed.as_deref() != Some(path) {
        return Err(ShimError::Config(format!(
            "systemd passed the socket {} but the plugin socket is configured as {}: make the socket unit's ListenStream= and the socket option the same path",
            passed.map_or("(unnamed)".into(), |p| p.display().to_string()),
            path.display()
        )));
    }
    Ok(Some(listener))
}

/// Checks what is at `path` now: nothing, a stale socket (fine), or something in the way.
fn check_existing(path: &Path) -> Result<(), ShimError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspecting", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ShimError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ShimError::SocketInUse {
            path: path.to_path_buf(),
        }),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
            ) =>
        {
            info!(path = %path.display(), "replacing a stale plugin socket");
            Ok(())
        }
        Err(e) => Err(io_err("probing the existing socket", path)(e)),
    }
}

impl PluginSocket {
    /// Creates the socket at `path` (and its directory), mode 0600, replacing a stale socket.
    ///
    /// Fails if another process serves `path`, or if something other than a socket is there.
    /// Must be called from within a Tokio runtime.
    pub async fn bind(path: impl AsRef<Path>) -> Result<PluginSocket, ShimError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = path.as_ref();
        if let Some(listener) = from_systemd(path)? {
            listener
                .set_nonblocking(true)
                .map_err(io_err("configuring", path))?;
            let listener = tokio::net::UnixListener::from_std(listener)
                .map_err(io_err("registering", path))?;
            info!(path = %path.display(), "plugin socket passed by systemd (socket activation)");
            return Ok(PluginSocket {
                listener,
                file: None,
                path: path.to_path_buf(),
            });
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(io_err("creating the directory", &dir))?;
        check_existing(path)?;

        // Bound in a private directory (0700) next to the target, given its mode there and
        // then renamed into place: until the rename nobody else can reach it, whatever the
        // process's umask (a socket is created with the umask's mode, and a connection made
        // before a chmod outlives it).
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let private = dir.join(format!(".raftipam-{}-{n}.d", std::process::id()));
        let _ = std::fs::remove_dir_all(&private);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(io_err("creating a private directory", &private))?;
        let tmp = private.join("plugin.sock");
        let placed = std::os::unix::net::UnixListener::bind(&tmp)
            .map_err(io_err("binding", &tmp))
            .and_then(|listener| {
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(SOCKET_MODE))
                    .map_err(io_err("setting permissions on", &tmp))?;
                std::fs::rename(&tmp, path)
                    .map_err(io_err("moving the socket into place at", path))?;
                Ok(listener)
            });
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_dir(&private);
        let listener = placed?;
        let meta = std::fs::symlink_metadata(path).map_err(io_err("inspecting", path))?;
        let file = SocketFile {
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
        };
        listener
            .set_nonblocking(true)
            .map_err(io_err("configuring", path))?;
        let listener =
            tokio::net::UnixListener::from_std(listener).map_err(io_err("registering", path))?;
        info!(path = %path.display(), "plugin socket bound");
        Ok(PluginSocket {
            listener,
            file: Some(file),
            path: path.to_path_buf(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves the plugin on this socket until `shutdown` completes, then removes the socket
    /// file and waits for calls in progress (each bounded by `config.call_timeout`).
    pub async fn serve<B: Backend>(
        self,
        backend: Arc<B>,
        config: ShimConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ShimError> {
        if config.host.trim().is_empty() {
            return Err(ShimError::Config(
                "the host name is empty; every Docker host needs a unique, stable name".into(),
            ));
        }
        let PluginSocket {
            listener,
            file,
            path,
        } = self;
        info!(path = %path.display(), host = %config.host, "serving the raftipam IPAM plugin");
        PluginSocket {
            listener,
            file,
            path,
        }
        .serve_router(router(backend, config), shutdown)
        .await
    }

    /// Serves `app` on this socket until `shutdown` completes, then removes the socket file
    /// (the CNI agent's socket is served this way too).
    pub async fn serve_router(
        self,
        app: axum::Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ShimError> {
        let PluginSocket {
            listener,
            file,
            path,
        } = self;
        // The file goes when shutdown begins (or with this future, if serving fails first);
        // a socket systemd passed stays, for the next activation.
        let shown = path.clone();
        let shutdown = async move {
            shutdown.await;
            info!(path = %shown.display(), "socket shutting down");
            drop(file);
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(io_err("serving", &path))
    }
}

/// Binds `socket_path` (see [`PluginSocket::bind`]) and serves the plugin on it until
/// `shutdown` completes; the socket file is removed when it does.
///
/// `backend` answers every call, made as `config.host`.
pub async fn serve<B: Backend>(
    socket_path: impl AsRef<Path>,
    backend: Arc<B>,
    config: ShimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ShimError> {
    if config.host.trim().is_empty() {
        return Err(ShimError::Config(
            "the host name is empty; every Docker host needs a unique, stable name".into(),
        ));
    }
    PluginSocket::bind(socket_path)
        .await?
        .serve(backend, config, shutdown)
        .await
}

#[cfg(test)]
mod discovery_tests {
    use super::undiscoverable;
    use std::path::Path;

    #[test]
    fn only_sockets_in_dockers_plugin_directories_are_found() {
        assert_eq!(
            undiscoverable(Path::new("/run/docker/plugins/raftipam.sock")),
            None
        );
        assert_eq!(
            undiscoverable(Path::new("/etc/docker/plugins/ipam2.sock")),
            None
        );
        let w = undiscoverable(Path::new("/tmp/raftipam.sock")).expect("not found by dockerd");
        assert!(w.contains("/run/docker/plugins/raftipam.sock"), "{w}");
        let w = undiscoverable(Path::new("/run/docker/plugins/sub/x.sock")).expect("subdir");
        assert!(w.contains("--socket /run/docker/plugins/x.sock"), "{w}");
        assert!(
            undiscoverable(Path::new("/run/docker/plugins/raftipam")).is_some(),
            "no .sock"
        );
    }
}

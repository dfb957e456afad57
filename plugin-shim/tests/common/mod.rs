//! Test helpers: a shim on a real unix socket in a temporary directory, and an HTTP/1.1
//! client that talks to it the way dockerd's plugin client does (POST, `Accept` header, no
//! `Content-Type`, one kept-alive connection).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use plugin_shim::wire::CONTENT_TYPE;
use plugin_shim::{Backend, PluginSocket, ShimConfig, ShimError};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous bound on anything a test waits for: a slow, shared machine must not fail a test,
/// a hang must.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub async fn patiently<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {PATIENCE:?}"),
    }
}

/// A shim serving on a socket until stopped.
pub struct Running {
    pub path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ShimError>>>,
}

impl Running {
    /// Binds `path` and serves `backend` on it as `config.host`.
    pub async fn start<B: Backend>(path: &Path, backend: Arc<B>, config: ShimConfig) -> Running {
        let socket = PluginSocket::bind(path)
            .await
            .expect("bind the plugin socket");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(socket.serve(backend, config, async move {
            let _ = rx.await;
        }));
        Running {
            path: path.to_path_buf(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn stop(mut self) -> Result<(), ShimError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("running");
        patiently("shutdown", task)
            .await
            .expect("server task did not panic")
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.path).await
    }
}

/// One HTTP/1.1 connection to a plugin socket.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
    _conn: JoinHandle<()>,
}

/// A reply: status, content type and body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {:?}", self.body))
    }

    /// Asserts a 200 and returns the JSON body.
    pub fn ok(&self) -> Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "expected 200, got {} {:?}",
            self.status,
            self.body
        );
        assert_eq!(self.content_type.as_deref(), Some(CONTENT_TYPE));
        self.json()
    }

    /// Asserts a non-200 with `status` and a JSON `{"Err": ...}` containing `needle`.
    pub fn err(&self, status: StatusCode, needle: &str) -> String {
        assert_eq!(
            self.status, status,
            "expected {status}, got {} {:?}",
            self.status, self.body
        );
        let msg = assert_err_body(&self.body);
        assert!(
            msg.contains(needle),
            "error {msg:?} should mention {needle:?}"
        );
        assert_eq!(self.content_type.as_deref(), Some(CONTENT_TYPE));
        msg
    }
}

/// Asserts that a non-200 body is `{"Err": "<non-empty>"}` and returns the message.
pub fn assert_err_body(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("error reply is not JSON ({e}): {body:?}"));
    let msg = v
        .get("Err")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("error reply has no Err string: {v}"));
    assert!(!msg.trim().is_empty(), "empty Err in {v}");
    msg.to_string()
}

impl Client {
    pub async fn connect(path: &Path) -> Client {
        let stream = patiently("connect", tokio::net::UnixStream::connect(path))
            .await
            .expect("connect to the plugin socket");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Client {
            sender,
            _conn: conn,
        }
    }

    /// POSTs raw bytes to `/path`.
    pub async fn raw(&mut self, http_method: &str, path: &str, body: Vec<u8>) -> Reply {
        patiently(path, async {
            self.sender.ready().await.expect("connection ready");
            let req = Request::builder()
                .method(http_method)
                .uri(path)
                .header("Host", "plugin.moby.localhost")
                .header("Accept", CONTENT_TYPE)
                .body(Full::new(Bytes::from(body)))
                .expect("request");
            let resp = self.sender.send_request(req).await.expect("send request");
            let status = resp.status();
            let content_type = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = resp
                .into_body()
                .collect()
                .await
                .expect("read body")
                .to_bytes();
            Reply {
                status,
                content_type,
                body,
            }
        })
        .await
    }

    /// Calls plugin method `method` (e.g. `IpamDriver.RequestPool`) with a JSON body.
    pub async fn call(&mut self, method: &str, body: Value) -> Reply {
        self.raw(
            "POST",
            &format!("/{method}"),
            serde_json::to_vec(&body).expect("encode"),
        )
        .await
    }

    /// Calls a method with no body, as dockerd does for the handshake.
    pub async fn call_empty(&mut self, method: &str) -> Reply {
        self.raw("POST", &format!("/{method}"), Vec::new()).await
    }
}

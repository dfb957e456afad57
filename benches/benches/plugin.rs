//! The whole path from Docker's side: `RequestAddress` + `ReleaseAddress` as HTTP+JSON over the
//! plugin's unix socket, one keep-alive connection as dockerd uses, against (a) the in-memory
//! backend and (b) a 3-node raft-node cluster on loopback (RocksDB, disk syncs on).
//! Figures are in the README ("Benchmarks").

use std::sync::Arc;
use std::time::Duration;

use allocator_core::State;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use plugin_shim::{Backend, MemoryBackend, PluginSocket, ShimConfig};
use serde_json::{json, Value};

/// One HTTP/1.1 connection to the plugin socket.
struct Plugin {
    sender: SendRequest<Full<Bytes>>,
}

impl Plugin {
    async fn connect(path: &std::path::Path) -> Plugin {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Plugin { sender }
    }

    async fn call(&mut self, method: &str, body: Value) -> Value {
        let req = hyper::Request::post(format!("/{method}"))
            .header("host", "plugin")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        self.sender.ready().await.expect("connection ready");
        let resp = self.sender.send_request(req).await.expect("send");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let v: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method}: {status}: not JSON ({e}): {bytes:?}"));
        assert!(status.is_success(), "{method}: {status} {v}");
        v
    }
}

/// Starts the plugin on a fresh socket with `backend`, creates a pool and returns a connection
/// and the pool id.
async fn plugin_with<B: Backend>(dir: &std::path::Path, backend: B) -> (Plugin, String) {
    let path = dir.join("bench.sock");
    let socket = PluginSocket::bind(&path).await.expect("bind");
    tokio::spawn(socket.serve(
        Arc::new(backend),
        ShimConfig::new("bench-host"),
        std::future::pending(),
    ));
    let mut p = Plugin::connect(&path).await;
    let pool = p
        .call(
            "IpamDriver.RequestPool",
            json!({"AddressSpace": "local", "Pool": "10.0.0.0/16", "Options": {}, "V6": false}),
        )
        .await;
    let id = pool["PoolID"].as_str().expect("PoolID").to_string();
    (p, id)
}

fn request_release(
    c: &mut Criterion,
    name: &str,
    rt: &tokio::runtime::Runtime,
    p: &mut Plugin,
    pool: &str,
) {
    let mut g = c.benchmark_group("plugin_request_release_address");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function(name, |b| {
        b.iter(|| {
            rt.block_on(async {
                let opts = json!({"com.docker.network.endpoint.macaddress": "02:42:0a:00:00:02"});
                let got = p
                    .call(
                        "IpamDriver.RequestAddress",
                        json!({"PoolID": pool, "Address": "", "Options": opts}),
                    )
                    .await;
                let addr = got["Address"].as_str().expect("Address");
                let ip = addr.split('/').next().unwrap_or_default().to_string();
                p.call(
                    "IpamDriver.ReleaseAddress",
                    json!({"PoolID": pool, "Address": ip}),
                )
                .await;
            })
        })
    });
    g.finish();
}

fn plugin(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut p, pool) = rt.block_on(plugin_with(
            dir.path(),
            MemoryBackend::new(State::default()),
        ));
        request_release(c, "memory_backend", &rt, &mut p, &pool);
    }
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let (nodes, client) = rt.block_on(benches::three_nodes(dir.path()));
        let (mut p, pool) = rt.block_on(plugin_with(dir.path(), client));
        request_release(c, "three_node_cluster", &rt, &mut p, &pool);
        drop(p);
        rt.block_on(async {
            for n in nodes {
                n.shutdown().await.expect("shutdown");
            }
        });
    }
}

criterion_group!(benches, plugin);
criterion_main!(benches);

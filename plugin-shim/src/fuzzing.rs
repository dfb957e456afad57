//! Entry points of the cargo-fuzz target `router` (`plugin-shim/fuzz/`), the same functions
//! the stable tests (`tests/fuzz_router.rs`: a proptest and the committed corpus) drive.
//!
//! A fuzz input is up to 8 calls separated by 0x00 bytes; each call's first byte picks a
//! method (every method of the protocol, and one that does not exist) and the rest is its
//! body. They run in order against one router over an in-memory allocator seeded with two
//! pools. Every answer must be JSON; a failure must be a non-200 `{"Err": "<non-empty>"}`,
//! never a 500; a RequestAddress success must carry a CIDR. A broken promise panics (the
//! fuzzer's signal), so this module may panic where the library never does.

/// The router over an in-memory allocator holding `local/10.0.0.0/24` and `local/fd00::/64`,
/// with a 512-byte body limit.
pub async fn seeded_router() -> axum::Router {
    use std::sync::Arc;

    use crate::{router, Backend, MemoryBackend, ShimConfig};
    use allocator_core::{Op, PoolSpec};

    let backend = Arc::new(MemoryBackend::default());
    for subnet in ["10.0.0.0/24", "fd00::/64"] {
        let spec = {
            let mut spec = PoolSpec::default();
            spec.space = "local".into();
            spec.subnet = subnet.parse().ok();
            spec
        };
        backend
            .apply(Op::RequestPool {
                spec,
                holder: "seed".into(),
            })
            .await
            .expect("seed pool");
    }
    router(backend, ShimConfig::new("host-a").with_body_limit(512))
}

/// Sends one call through `app` and checks its answer (panics on a broken promise).
pub async fn call_and_check(app: &axum::Router, method: &str, path: &str, body: &[u8]) {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use serde_json::Value;
    use tower::ServiceExt;

    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::from(body.to_vec()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    assert_ne!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{method} {path} {:?} -> {bytes:?}",
        String::from_utf8_lossy(body)
    );
    let v: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {bytes:?}"));
    if status != StatusCode::OK {
        let err = v.get("Err").and_then(Value::as_str).unwrap_or("");
        assert!(!err.trim().is_empty(), "{method} {path} -> {status} {v}");
    } else {
        assert!(
            v.is_object() && v.get("Err").is_none(),
            "{method} {path} -> {v}"
        );
        if path == "/IpamDriver.RequestAddress" {
            let addr = v.get("Address").and_then(Value::as_str).unwrap_or("");
            assert!(
                addr.parse::<ipnet::IpNet>().is_ok(),
                "Address {addr:?} is not CIDR"
            );
        }
    }
}

/// Runs one fuzz input through the plugin's router (see the file's comment).
pub fn router_call(data: &[u8]) {
    use crate::router::METHODS;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let app = seeded_router().await;
        for call in data.split(|b| *b == 0).take(8) {
            let Some((&pick, body)) = call.split_first() else {
                continue;
            };
            let path = match METHODS.get(pick as usize % (METHODS.len() + 1)) {
                Some(m) => format!("/{m}"),
                None => "/IpamDriver.NoSuchMethod".to_string(),
            };
            call_and_check(&app, "POST", &path, body).await;
        }
    });
}

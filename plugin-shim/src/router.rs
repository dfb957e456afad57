//! The HTTP surface: one route per plugin method, and the rules every call goes through.
//!
//! This module owns what is common to all methods so that the method modules
//! ([`crate::handshake`], [`crate::pool`], [`crate::address`]) are plain translations:
//!
//! - **Bodies** are read as bytes (at most [`ShimConfig::body_limit`]) and decoded here, not
//!   by axum's `Json` extractor: dockerd sends no `Content-Type` (only `Accept`), and every
//!   rejection — too large, not JSON, not an object, a field of the wrong type — must become
//!   a `{"Err"}` reply naming the method and the field, never axum's plain-text rejection.
//! - **Time**: each call runs as its own task, bounded by [`ShimConfig::call_timeout`]. When
//!   that passes the task is aborted and dockerd gets a 503 saying the cluster did not answer
//!   (a plugin that never answers blocks dockerd). A panic in a call is caught the same way
//!   and answered with a 500.
//! - **Unknown paths** get a 404 and wrong HTTP methods a 405, both with `{"Err"}`.
//! - **Replies** carry dockerd's plugin content type.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::backend::Backend;
use crate::error::ApiError;
use crate::wire::{
    ReleaseAddressRequest, ReleasePoolRequest, RequestAddressRequest, RequestPoolRequest,
    CONTENT_TYPE,
};
use crate::{address, handshake, pool, ShimConfig};

/// Every method this plugin serves, as dockerd names it (the path without its `/`).
pub const METHODS: [&str; 7] = [
    "Plugin.Activate",
    "IpamDriver.GetCapabilities",
    "IpamDriver.GetDefaultAddressSpaces",
    "IpamDriver.RequestPool",
    "IpamDriver.ReleasePool",
    "IpamDriver.RequestAddress",
    "IpamDriver.ReleaseAddress",
];

/// What every route shares: the backend and the configuration.
struct Ctx<B> {
    backend: Arc<B>,
    config: Arc<ShimConfig>,
}

impl<B> Clone for Ctx<B> {
    fn clone(&self) -> Self {
        Ctx {
            backend: Arc::clone(&self.backend),
            config: Arc::clone(&self.config),
        }
    }
}

/// The plugin's routes over `backend`, as `config.host`. [`crate::serve`] serves this on the
/// unix socket; tests and benchmarks may drive it directly as a `tower::Service`.
pub fn router<B: Backend>(backend: Arc<B>, config: ShimConfig) -> Router {
    let limit = config.body_limit;
    let ctx = Ctx {
        backend,
        config: Arc::new(config),
    };
    Router::new()
        .route(
            "/Plugin.Activate",
            post(|| async { reply(&handshake::activate()) }),
        )
        .route(
            "/IpamDriver.GetCapabilities",
            post(|| async { reply(&handshake::capabilities()) }),
        )
        .route(
            "/IpamDriver.GetDefaultAddressSpaces",
            post(|| async { reply(&handshake::default_address_spaces()) }),
        )
        .route("/IpamDriver.RequestPool", post(request_pool::<B>))
        .route("/IpamDriver.ReleasePool", post(release_pool::<B>))
        .route("/IpamDriver.RequestAddress", post(request_address::<B>))
        .route("/IpamDriver.ReleaseAddress", post(release_address::<B>))
        .fallback(unknown_method)
        .method_not_allowed_fallback(wrong_http_method)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ctx)
}

async fn request_pool<B: Backend>(
    State(ctx): State<Ctx<B>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call(
        ctx,
        "IpamDriver.RequestPool",
        body,
        |b, c, r: RequestPoolRequest| async move { pool::request_pool(&b, &c, r).await },
    )
    .await
}

async fn release_pool<B: Backend>(
    State(ctx): State<Ctx<B>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call(
        ctx,
        "IpamDriver.ReleasePool",
        body,
        |b, c, r: ReleasePoolRequest| async move { pool::release_pool(&b, &c, r).await },
    )
    .await
}

async fn request_address<B: Backend>(
    State(ctx): State<Ctx<B>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call(
        ctx,
        "IpamDriver.RequestAddress",
        body,
        |b, c, r: RequestAddressRequest| async move { address::request_address(&b, &c, r).await },
    )
    .await
}

async fn release_address<B: Backend>(
    State(ctx): State<Ctx<B>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call(
        ctx,
        "IpamDriver.ReleaseAddress",
        body,
        |b, c, r: ReleaseAddressRequest| async move { address::release_address(&b, &c, r).await },
    )
    .await
}

/// Decodes the body, runs `f` as a bounded task and turns the result into a reply.
async fn call<B, Req, Resp, F, Fut>(
    ctx: Ctx<B>,
    method: &'static str,
    body: Result<Bytes, BytesRejection>,
    f: F,
) -> Response
where
    B: Backend,
    Req: DeserializeOwned + Debug,
    Resp: Serialize + Send + 'static,
    F: FnOnce(Arc<B>, Arc<ShimConfig>, Req) -> Fut,
    Fut: Future<Output = Result<Resp, ApiError>> + Send + 'static,
{
    let result = async {
        let bytes = body.map_err(|r| body_rejection(method, r, ctx.config.body_limit))?;
        let req: Req = decode(method, &bytes)?;
        debug!(method, request = ?req, "plugin call");
        bounded(
            method,
            ctx.config.call_timeout,
            f(Arc::clone(&ctx.backend), Arc::clone(&ctx.config), req),
        )
        .await
    }
    .await;
    match result {
        Ok(resp) => reply(&resp),
        Err(e) => {
            if e.status.is_server_error() {
                warn!(method, status = %e.status, error = %e.message, "plugin call failed");
            } else {
                info!(method, status = %e.status, error = %e.message, "plugin call refused");
            }
            e.into_response()
        }
    }
}

/// A 200 reply with dockerd's content type.
fn reply<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut resp = (StatusCode::OK, body).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            resp
        }
        Err(e) => {
            ApiError::internal(format!("the reply could not be encoded: {e}")).into_response()
        }
    }
}

fn body_rejection(method: &str, rejection: BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{method}: the request body is larger than {limit} bytes, the most this plugin accepts"),
        );
    }
    ApiError::new(
        rejection.status(),
        format!(
            "{method}: the request body could not be read: {}",
            rejection.body_text()
        ),
    )
}

/// Decodes a JSON object body, naming the field that is wrong.
fn decode<T: DeserializeOwned>(method: &str, bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::bad_request(format!(
                "{method} needs a JSON object body; the request had none"
            )))
        }
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "{method}: the body must be a JSON object ({{...}})"
            )))
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() || path == "." {
            ApiError::bad_request(format!("{method}: the body is not valid JSON: {inner}"))
        } else {
            ApiError::bad_request(format!("{method}: field {path}: {inner}"))
        }
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request(format!(
            "{method}: unexpected data after the JSON object: {e}"
        ))
    })?;
    Ok(value)
}

/// Aborts the task when dropped: when dockerd hangs up or the call times out, nothing keeps
/// running on its behalf.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `fut` as its own task, at most `timeout` long; a panic becomes a 500.
async fn bounded<T: Send + 'static>(
    method: &str,
    timeout: Duration,
    fut: impl Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    let mut task = AbortOnDrop(tokio::spawn(fut));
    match tokio::time::timeout(timeout, &mut task.0).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) if join.is_panic() => {
            let payload = join.into_panic();
            let why = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            Err(ApiError::internal(format!("{method} failed on a bug in the raftipam plugin (panic: {why}); please report it")))
        }
        Ok(Err(_)) => Err(ApiError::internal(format!("{method} was cancelled"))),
        Err(_) => Err(ApiError::unavailable(format!(
            "{method}: the raftipam cluster did not answer within {}: it may have no quorum (too few raft-node voters up) \
             or be unreachable from this host; the request may still take effect later",
            humantime::format_duration(timeout)
        ))),
    }
}

async fn unknown_method(uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(128).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "unknown plugin method {path:?}: raftipam implements {}",
            METHODS.join(", ")
        ),
    )
}

async fn wrong_http_method(method: Method, uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(128).collect();
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} {path}: plugin methods are called with POST"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_names_the_wrong_field() {
        let e = decode::<RequestPoolRequest>("M", br#"{"AddressSpace":"local","V6":"yes"}"#)
            .expect_err("wrong type");
        assert!(e.message.contains("field V6"), "{}", e.message);
        let e = decode::<RequestPoolRequest>("M", br#"{"AddressSpace":"#).expect_err("truncated");
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        let e = decode::<RequestPoolRequest>("M", b"[1]").expect_err("array");
        assert!(e.message.contains("JSON object"), "{}", e.message);
        let e = decode::<RequestPoolRequest>("M", b"{} {}").expect_err("trailing");
        assert!(e.message.contains("after the JSON object"), "{}", e.message);
        let e = decode::<RequestPoolRequest>("M", b"  \n").expect_err("empty");
        assert!(
            e.message.contains("needs a JSON object body"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn bounded_turns_a_panic_into_a_500() {
        let r: Result<(), ApiError> =
            bounded("M", Duration::from_secs(60), async { panic!("boom") }).await;
        let e = r.expect_err("panicked");
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(e.message.contains("boom"), "{}", e.message);
    }
}

//! `GET /metrics` over plain HTTP: a node's text (`Node::metrics_text`), a shim's counters, or
//! both in one process (`up`). What is rendered is the caller's; this only serves it.

use std::net::SocketAddr;
use std::sync::Arc;

/// What the metrics server calls for the text of every scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `GET /metrics` on `addr`, answering each scrape with `render()`, until the returned
/// task is aborted.
pub async fn serve(
    addr: SocketAddr,
    render: Render,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(tokio::spawn(crate::http::serve_plain(
        listener, app, "metrics",
    )))
}

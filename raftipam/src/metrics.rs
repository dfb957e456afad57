//! `GET /metrics`: a node's text (`Node::metrics_text`), a shim's counters, or both in one
//! process (`up`). What is rendered is the caller's; this only serves it. On loopback it is
//! plain HTTP; anywhere else it needs the process's TLS and serves HTTPS that asks every
//! scraper for an admin or host certificate of the cluster's CA (on a node: not revoked) —
//! [`check_addr`] refuses a public address without TLS before anything starts.

use std::net::SocketAddr;
use std::sync::Arc;

use raft_node::tls::Tls;
use raft_node::NodeView;

/// What the metrics server calls for the text of every scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// How a metrics server on a non-loopback address checks its scrapers: the process's TLS, and
/// on a node its view (for revocations).
pub struct Secure {
    /// The process's certificates.
    pub tls: Tls,
    /// A node's view, to refuse revoked certificates; `None` in a shim (no state).
    pub node: Option<NodeView>,
}

/// Refuses `--metrics` on an address other than loopback without TLS: the metrics name
/// hosts, pools and members, and plain HTTP would show them to anyone who reaches the port.
/// The error is a usage error (exit status 2).
pub fn check_addr(addr: Option<SocketAddr>, has_tls: bool) -> anyhow::Result<()> {
    match addr {
        Some(a) if !a.ip().is_loopback() && !has_tls => Err(crate::cli::UsageError(format!(
            "--metrics {a}: metrics are served without authentication on plain HTTP, so only on a \
             loopback address (e.g. --metrics 127.0.0.1:9101, scraped through a local agent or an SSH \
             tunnel); give the process TLS (--tls-dir DIR) to serve them on {a} as HTTPS that asks \
             the scraper for an admin or host certificate"
        ))
        .into()),
        _ => Ok(()),
    }
}

/// Serves `GET /metrics` on `addr`, answering each scrape with `render()`, until the returned
/// task is aborted: plain on loopback, else HTTPS with `secure` (an error without it).
pub async fn serve(
    addr: SocketAddr,
    render: Render,
    secure: Option<Secure>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
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
    check_addr(Some(addr), secure.is_some())?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let public = !listener.local_addr()?.ip().is_loopback();
    Ok(match secure.filter(|_| public) {
        None => tokio::spawn(crate::http::serve_plain(listener, app, "metrics")),
        Some(Secure { tls, node }) => {
            tokio::spawn(crate::http::serve_tls(listener, app, "metrics", tls, node))
        }
    })
}

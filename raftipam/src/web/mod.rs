//! The web view: a live subnet map of the cluster, served beside a node on `--http HOST:PORT`.
//! It reads the node through a `raft_node::NodeView` (status, applied state, change feed)
//! and nothing else of it.
//!
//! One page (`index.html`, embedded in the binary: no external assets, works offline) and the
//! read-only JSON API behind it, answered from this node's applied state:
//!
//! | path | answer |
//! |---|---|
//! | `GET /` | the page |
//! | `GET /api/overview` | this node's [`NodeStatus`], every [`PoolInfo`], every [`HostInfo`], `now_ms` |
//! | `GET /api/cluster` | every member asked directly: its status or why it does not answer |
//! | `GET /api/map?pool=ID&page=N\|addr=IP&size=256` | a dense page of cells ([`MapPage`]) |
//! | `GET /api/sparse?pool=ID&from=IP&limit=256` | non-free addresses and free runs ([`SparsePage`]) |
//! | `GET /api/events` | server-sent events: `change`, `raft`, `resync` |
//!
//! It changes nothing. Bound to a loopback address it serves plain HTTP; anywhere else it
//! needs the node's TLS and serves HTTPS that asks every client for a certificate of the
//! cluster's CA (an admin or host certificate, not revoked) — the CLI refuses anything else.
//!
//! The map reads a page at a time: a page costs time in proportion to the page, whatever the
//! size of the subnet (see `allocator_core::State::map_page`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use allocator_core::{HostInfo, MapPage, PoolInfo, SparsePage};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::Stream;
use raft_node::api::NodeStatus;
use raft_node::tls::Tls;
use raft_node::{now_ms, Client, ClientConfig, NodeEvent, NodeView, Subscription};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// The page, with its style and script inline.
const PAGE: &str = include_str!("index.html");
/// Addresses per dense page unless asked otherwise.
const DEFAULT_PAGE: u32 = 256;
/// How long one member may take to say how it is.
const MEMBER_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Clone)]
struct Web {
    node: NodeView,
    /// One client per member address, reused between calls.
    members: Arc<Mutex<HashMap<String, Client>>>,
}

/// Everything the page's tables need, in one answer.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Overview {
    /// The node answering.
    pub node: NodeStatus,
    /// Every pool.
    pub pools: Vec<PoolInfo>,
    /// Every host.
    pub hosts: Vec<HostInfo>,
    /// The node's clock (ms since the Unix epoch), for ages.
    pub now_ms: u64,
}

/// One member as asked directly.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct MemberView {
    /// Its id.
    pub id: u64,
    /// Its address.
    pub addr: String,
    /// Voter (or learner).
    pub voter: bool,
    /// What it said.
    pub status: Option<NodeStatus>,
    /// Its release, if it answered.
    pub version: Option<String>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// The cluster as every member sees it.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ClusterView {
    /// The leader this node knows of.
    pub leader: Option<u64>,
    /// Every member.
    pub members: Vec<MemberView>,
}

/// An error answer: `{"error": "..."}` with a 4xx/5xx status.
struct ApiFail(StatusCode, String);

impl IntoResponse for ApiFail {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiFail {
    ApiFail(StatusCode::BAD_REQUEST, msg.into())
}

/// Serves the web view on `listener` until the returned task is aborted. With `tls`, every
/// connection must complete a TLS handshake with an admin or host certificate that is not
/// revoked.
fn serve(listener: TcpListener, node: NodeView, tls: Option<Tls>) -> tokio::task::JoinHandle<()> {
    let web = Web {
        node: node.clone(),
        members: Arc::new(Mutex::new(HashMap::new())),
    };
    let app = Router::new()
        .route("/", get(page))
        .route("/api/overview", get(overview))
        .route("/api/cluster", get(cluster))
        .route("/api/map", get(map))
        .route("/api/sparse", get(sparse))
        .route("/api/events", get(events))
        .with_state(web);
    match tls {
        None => tokio::spawn(crate::http::serve_plain(
            listener,
            app.layer(axum::middleware::from_fn(loopback_host_only)),
            "web view",
        )),
        Some(tls) => tokio::spawn(crate::http::serve_tls(
            listener,
            app,
            "web view",
            tls,
            Some(node),
        )),
    }
}

/// What the plain (loopback) web view answers a request whose `Host` is not loopback.
pub const NOT_LOOPBACK_HOST: &str = "refused: this web view answers only requests addressed to a loopback name (Host: 127.0.0.1, [::1] or localhost, any port); open it as http://127.0.0.1:PORT/";

/// Whether a `Host` header names this machine's loopback: an IP in 127.0.0.0/8, `[::1]`, or
/// `localhost`, with any port (an SSH tunnel may forward another one).
fn loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() && !h.ends_with(':') => h,
        _ => host,
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback()),
    }
}

/// The plain web view serves only requests whose `Host` is loopback: a web page elsewhere
/// whose name the attacker re-points at 127.0.0.1 (DNS rebinding) would otherwise read the
/// whole map from the operator's own browser. Its requests carry the attacker's name and get
/// 421 Misdirected Request.
async fn loopback_host_only(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if host.is_some_and(loopback_host) {
        return next.run(req).await;
    }
    (
        StatusCode::MISDIRECTED_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        NOT_LOOPBACK_HOST,
    )
        .into_response()
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything is inline; nothing may be loaded from anywhere, not even here.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(PAGE),
    )
}

async fn overview(State(w): State<Web>) -> Json<Overview> {
    let node = w.node.status();
    let (pools, hosts) = w.node.with_state(|st| (st.pools(), st.hosts()));
    Json(Overview {
        node,
        pools,
        hosts,
        now_ms: now_ms(),
    })
}

async fn cluster(State(w): State<Web>) -> Json<ClusterView> {
    let me = w.node.status();
    let asks = me.members.iter().map(|m| {
        let w = w.clone();
        let own = (m.id == me.id).then(|| w.node.info());
        let m = m.clone();
        async move {
            let answer = match own {
                Some(i) => Ok(i),
                None => match w.member_client(&m.addr) {
                    Ok(c) => c.node_info(0).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                },
            };
            let (status, version, error) = match answer {
                Ok(i) => (Some(i.status), Some(i.binary), None),
                Err(e) => (None, None, Some(e)),
            };
            MemberView {
                id: m.id,
                addr: m.addr,
                voter: m.voter,
                status,
                version,
                error,
            }
        }
    });
    let members = futures::future::join_all(asks).await;
    Json(ClusterView {
        leader: me.leader,
        members,
    })
}

impl Web {
    fn member_client(&self, addr: &str) -> Result<Client, String> {
        let mut m = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = m.get(addr) {
            return Ok(c.clone());
        }
        let cfg = ClientConfig {
            timeout: MEMBER_TIMEOUT,
            connect_timeout: MEMBER_TIMEOUT,
            tls: self.node.tls().cloned(),
        };
        let c = Client::with_config([addr], cfg).map_err(|e| e.to_string())?;
        // Members come and go; a bounded cache is enough (a cluster has a handful).
        if m.len() >= 64 {
            m.clear();
        }
        m.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

#[derive(Deserialize)]
struct MapParams {
    pool: String,
    page: Option<u64>,
    addr: Option<String>,
    size: Option<u32>,
}

fn pool_of(s: &str) -> Result<allocator_core::PoolId, ApiFail> {
    raft_node::api::parse_pool(s).map_err(|e| bad(format!("pool {s:?}: {e}")))
}

fn ip_of(s: &str) -> Result<std::net::IpAddr, ApiFail> {
    s.trim()
        .parse()
        .map_err(|_| bad(format!("{s:?} is not an IP address")))
}

async fn map(State(w): State<Web>, Query(q): Query<MapParams>) -> Result<Json<MapPage>, ApiFail> {
    let pool = pool_of(&q.pool)?;
    let size = q.size.unwrap_or(DEFAULT_PAGE);
    let addr = q.addr.as_deref().map(ip_of).transpose()?;
    w.node
        .with_state(|st| {
            let page = match addr {
                Some(a) => st.map_page_of(&pool, a, size),
                None => Ok(q.page.unwrap_or(0)),
            };
            page.and_then(|p| st.map_page(&pool, p, size))
        })
        .map(Json)
        .map_err(|e| bad(e.to_string()))
}

#[derive(Deserialize)]
struct SparseParams {
    pool: String,
    from: Option<String>,
    limit: Option<u32>,
}

async fn sparse(
    State(w): State<Web>,
    Query(q): Query<SparseParams>,
) -> Result<Json<SparsePage>, ApiFail> {
    let pool = pool_of(&q.pool)?;
    let from = q
        .from
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(ip_of)
        .transpose()?;
    w.node
        .with_state(|st| st.map_sparse(&pool, from, q.limit.unwrap_or(DEFAULT_PAGE)))
        .map(Json)
        .map_err(|e| bad(e.to_string()))
}

/// Server-sent events: every applied change (`change`), leader and term changes (`raft`), and
/// `resync` when this watcher fell behind or a snapshot replaced the state.
async fn events(State(w): State<Web>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold(w.node.subscribe(), |mut s: Subscription| async move {
        let ev = match s.next().await? {
            NodeEvent::Leadership(l) => json_event("raft", &l),
            NodeEvent::Changed(c) if c.kind == "snapshot" => json_event("resync", &c),
            NodeEvent::Changed(c) => json_event("change", &c),
            NodeEvent::Lagged { missed } => {
                json_event("resync", &serde_json::json!({ "missed": missed }))
            }
            // A kind of event this page does not know: have it read everything again.
            _ => json_event("resync", &serde_json::json!({})),
        };
        Some((Ok(ev), s))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn json_event<T: Serialize>(name: &str, data: &T) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(data).unwrap_or_else(|_| "{}".into()))
}

/// Whether serving the web view on `addr` needs TLS: anything but loopback does.
pub fn needs_tls(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// Binds the web view's port, before the node opens its data directory (a node that cannot
/// serve writes nothing). Off loopback it needs the node's TLS. With `optional`, a taken
/// address is a warning and no web view, not a failure (`up`'s default address).
pub async fn bind(
    at: SocketAddr,
    optional: bool,
    has_tls: bool,
) -> anyhow::Result<Option<TcpListener>> {
    anyhow::ensure!(
        !needs_tls(&at) || has_tls,
        "the web view on {at} would show the cluster's addresses to anyone who can reach it: bind it to a loopback address (--http 127.0.0.1:7380) or give the node TLS (--tls DIR), which makes it HTTPS asking for an admin or host certificate"
    );
    match TcpListener::bind(at).await {
        Ok(l) => Ok(Some(l)),
        Err(e) if optional => {
            tracing::warn!(
                "not serving the web view on {at}: {e} (give --http HOST:PORT for another address)"
            );
            Ok(None)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot listen on {at}"))),
    }
}

/// Serves the web view on `listener` for `node` until the task is aborted; its URL
/// (`http://` on loopback, else `https://` with the node's TLS).
pub fn start(
    listener: TcpListener,
    node: NodeView,
) -> std::io::Result<(tokio::task::JoinHandle<()>, String)> {
    let at = listener.local_addr()?;
    let tls = node.tls().cloned().filter(|_| needs_tls(&at));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let task = serve(listener, node, tls);
    let url = format!("{scheme}://{at}/");
    tracing::info!("web view (subnet map) on {url}");
    Ok((task, url))
}

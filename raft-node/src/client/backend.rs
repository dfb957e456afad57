//! The cluster as the Docker plugin's allocator and the host agent's inventory:
//! [`plugin_shim::Backend`] and [`plugin_shim::Inventory`] for [`Client`].
//!
//! The shim bounds every plugin call with its own timeout (10 s by default) and answers
//! dockerd with an error when it passes. The client used here must give up *before* that,
//! so that dockerd sees the real reason ("no quorum", "no node answered") rather than the
//! shim's generic timeout: [`shim_client_config`] derives the client's timeout from the
//! shim's call timeout, leaving a margin.
//!
//! Error mapping: the allocator's refusals (pool full, address held by someone, ...) become
//! [`BackendError::Alloc`], which the shim reports as a conflict or bad request naming the
//! pool, address and holder. Everything else — no leader with a quorum, a timeout, no node
//! reachable, an unexpected answer — becomes [`BackendError::Unavailable`] with a message
//! saying the cluster has no quorum or did not answer.

use std::time::Duration;

use std::net::IpAddr;

use allocator_core::{Allocation, HostInfo, Op, Outcome, PoolId, PoolInfo, StoredReport};
use plugin_shim::{Backend, BackendError, Inventory};

use crate::api::{ApiError, Consistency, Query, QueryReply};
use crate::client::{Client, ClientConfig, ClientError};

/// How long a plugin call may take by default (the shim's own bound).
pub const SHIM_CALL_TIMEOUT: Duration = plugin_shim::DEFAULT_CALL_TIMEOUT;

/// How much sooner than the shim's call timeout the cluster client gives up.
pub const CLIENT_MARGIN: Duration = Duration::from_secs(2);

/// A client configuration for a shim whose calls are bounded by `call_timeout`: the client
/// gives up [`CLIENT_MARGIN`] earlier (8 s for the default 10 s), but never in under 1 s.
pub fn shim_client_config(call_timeout: Duration) -> ClientConfig {
    let timeout = call_timeout
        .saturating_sub(CLIENT_MARGIN)
        .max(Duration::from_secs(1))
        .min(call_timeout);
    ClientConfig {
        timeout,
        connect_timeout: Duration::from_secs(2).min(timeout),
        tls: None,
    }
}

/// Maps a client failure to what the shim tells dockerd.
pub fn backend_error(e: ClientError) -> BackendError {
    match e {
        ClientError::Api(ApiError::Alloc(a)) => BackendError::Alloc(a),
        ClientError::Api(ApiError::Unavailable(m)) if m.contains("quorum") => {
            BackendError::Unavailable(m)
        }
        ClientError::Api(ApiError::Unavailable(m)) => {
            BackendError::Unavailable(format!("no quorum: {m}"))
        }
        e @ ClientError::Api(ApiError::NotInitialised(_)) => {
            BackendError::Unavailable(e.to_string())
        }
        e @ ClientError::Unreachable { .. } => BackendError::Unavailable(format!(
            "no node of the cluster answered (no quorum, or the nodes are down or unreachable): {e}"
        )),
        e => BackendError::Unavailable(format!("the cluster did not answer the call: {e}")),
    }
}

impl Backend for Client {
    async fn apply(&self, op: Op) -> Result<Outcome, BackendError> {
        Client::apply(self, op)
            .await
            .map(|w| w.outcome)
            .map_err(backend_error)
    }

    async fn pool(&self, id: &PoolId) -> Result<PoolInfo, BackendError> {
        Client::pool(self, id).await.map_err(backend_error)
    }
}

/// A linearizable query whose answer must be of the `expect`ed kind.
async fn read<T>(
    client: &Client,
    q: Query,
    pick: impl FnOnce(QueryReply) -> Result<T, QueryReply>,
) -> Result<T, BackendError> {
    let reply = client
        .query(q, Consistency::Linearizable)
        .await
        .map_err(backend_error)?;
    pick(reply).map_err(|other| {
        backend_error(ClientError::Protocol(format!(
            "unexpected answer to a query: {other:?}"
        )))
    })
}

impl Inventory for Client {
    async fn all_allocations(&self) -> Result<Vec<(PoolId, Allocation)>, BackendError> {
        Client::all_allocations(self).await.map_err(backend_error)
    }

    async fn host_allocations(
        &self,
        host: &str,
    ) -> Result<Vec<(PoolId, Allocation)>, BackendError> {
        read(
            self,
            Query::HostAllocations(host.to_string()),
            |r| match r {
                QueryReply::HostAllocations(a) => Ok(a),
                r => Err(r),
            },
        )
        .await
    }

    async fn pools(&self) -> Result<Vec<PoolInfo>, BackendError> {
        Client::pools(self).await.map_err(backend_error)
    }

    async fn hosts(&self) -> Result<Vec<HostInfo>, BackendError> {
        read(self, Query::Hosts, |r| match r {
            QueryReply::Hosts(h) => Ok(h),
            r => Err(r),
        })
        .await
    }

    async fn reports(&self) -> Result<Vec<StoredReport>, BackendError> {
        read(self, Query::Reports, |r| match r {
            QueryReply::Reports(r) => Ok(r),
            r => Err(r),
        })
        .await
    }

    async fn next_free(&self, pool: &PoolId, count: usize) -> Result<Vec<IpAddr>, BackendError> {
        let q = Query::NextFree {
            pool: pool.clone(),
            count: u32::try_from(count).unwrap_or(u32::MAX),
        };
        read(self, q, |r| match r {
            QueryReply::NextFree(a) => Ok(a),
            r => Err(r),
        })
        .await
    }

    async fn on_lan(
        &self,
        addr: IpAddr,
    ) -> Result<Vec<allocator_core::AddressOnLan>, BackendError> {
        read(self, Query::OnLan(addr), |r| match r {
            QueryReply::OnLan(a) => Ok(a),
            r => Err(r),
        })
        .await
    }

    async fn lan_checks(&self) -> Result<Vec<allocator_core::HostLan>, BackendError> {
        read(self, Query::LanChecks, |r| match r {
            QueryReply::LanChecks(h) => Ok(h),
            r => Err(r),
        })
        .await
    }

    async fn free_after(
        &self,
        pool: &PoolId,
        after: Option<IpAddr>,
        count: usize,
    ) -> Result<Vec<IpAddr>, BackendError> {
        let q = Query::FreeAfter {
            pool: pool.clone(),
            after,
            count: u32::try_from(count).unwrap_or(u32::MAX),
        };
        read(self, q, |r| match r {
            QueryReply::FreeAfter(a) => Ok(a),
            r => Err(r),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_core::AllocError;

    #[test]
    fn client_gives_up_before_the_shim() {
        let c = shim_client_config(Duration::from_secs(10));
        assert_eq!(c.timeout, Duration::from_secs(8));
        let c = shim_client_config(Duration::from_millis(1500));
        assert_eq!(c.timeout, Duration::from_secs(1));
        let c = shim_client_config(Duration::from_millis(500));
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert!(c.connect_timeout <= c.timeout);
    }

    #[test]
    fn refusals_stay_refusals_and_the_rest_is_unavailable() {
        let refusal = AllocError::Invalid("nope".into());
        assert_eq!(
            backend_error(ClientError::Api(ApiError::Alloc(refusal.clone()))),
            BackendError::Alloc(refusal)
        );
        let quorum = backend_error(ClientError::Api(ApiError::Unavailable("x".into())));
        assert!(matches!(&quorum, BackendError::Unavailable(m) if m.contains("no quorum")));
        let said = "no quorum / no leader within 10s".to_string();
        let quorum = backend_error(ClientError::Api(ApiError::Unavailable(said.clone())));
        assert_eq!(quorum, BackendError::Unavailable(said));
        let gone = backend_error(ClientError::Unreachable {
            endpoints: "127.0.0.1:1".into(),
            timeout: Duration::from_secs(8),
            last: "refused".into(),
        });
        assert!(
            matches!(&gone, BackendError::Unavailable(m) if m.contains("no node") && m.contains("127.0.0.1:1"))
        );
        let other = backend_error(ClientError::Protocol("odd".into()));
        assert!(matches!(other, BackendError::Unavailable(_)));
    }
}

//! The seam between the Docker protocol and whoever allocates.
//!
//! The shim must not know whether its allocator is a Raft cluster, a local state machine or a
//! test double, so it speaks only this trait: apply an [`Op`], read a pool. raft-node
//! implements it for its cluster client; [`MemoryBackend`] implements it over one in-process
//! [`State`] for tests and for users who embed the allocator without replication.
//!
//! The backend, not the shim, stamps the time into the [`allocator_core::Command`]: in a
//! cluster it is the node that proposes the command that owns the clock.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use allocator_core::{
    AddressOnLan, AllocError, Allocation, Command, HostInfo, HostLan, Op, Outcome, PoolId,
    PoolInfo, State, StoredReport,
};
use thiserror::Error;

/// Why a backend could not carry out a call.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BackendError {
    /// The allocator refused the operation (a full pool, an address held by someone else...).
    /// Nothing changed.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// The allocator could not be reached or could not decide: no quorum, a timeout, the
    /// cluster unreachable. The message says which. The operation may or may not have been
    /// applied.
    #[error("the raftipam cluster is unavailable: {0}")]
    Unavailable(String),
}

/// Something that applies allocator operations: a Raft cluster client, or [`MemoryBackend`].
///
/// Implementations may write `async fn apply(&self, op: Op) -> Result<Outcome, BackendError>`
/// as long as the future is `Send`. The shim bounds every call with its own timeout and drops
/// the future when that passes, so an implementation need not (but may) time out by itself.
///
/// The trait uses `impl Future` in its methods, so it is used generically (`B: Backend`), not
/// as `dyn Backend`; `Arc<B>` is a `Backend` too, so one backend can serve several shims.
pub trait Backend: Send + Sync + 'static {
    /// Applies `op`, stamping it with the current time (ms since the Unix epoch).
    fn apply(&self, op: Op) -> impl Future<Output = Result<Outcome, BackendError>> + Send;

    /// Reads one pool.
    fn pool(&self, id: &PoolId) -> impl Future<Output = Result<PoolInfo, BackendError>> + Send;
}

impl<B: Backend> Backend for Arc<B> {
    fn apply(&self, op: Op) -> impl Future<Output = Result<Outcome, BackendError>> + Send {
        B::apply(self, op)
    }

    fn pool(&self, id: &PoolId) -> impl Future<Output = Result<PoolInfo, BackendError>> + Send {
        B::pool(self, id)
    }
}

/// A [`Backend`] that can also list what the host agent needs to compare a host's dockerd with
/// the allocator and to judge other hosts' reports. The reads are linearizable where the
/// backend is a cluster: a pass never acts on an answer older than a write it saw acknowledged.
pub trait Inventory: Backend {
    /// Every allocation of every pool.
    fn all_allocations(
        &self,
    ) -> impl Future<Output = Result<Vec<(PoolId, Allocation)>, BackendError>> + Send;

    /// The allocations whose owner is `host` (cheap however many hosts there are).
    fn host_allocations(
        &self,
        host: &str,
    ) -> impl Future<Output = Result<Vec<(PoolId, Allocation)>, BackendError>> + Send;

    /// Every pool.
    fn pools(&self) -> impl Future<Output = Result<Vec<PoolInfo>, BackendError>> + Send;

    /// Every host the allocator knows of.
    fn hosts(&self) -> impl Future<Output = Result<Vec<HostInfo>, BackendError>> + Send;

    /// Every host's last report.
    fn reports(&self) -> impl Future<Output = Result<Vec<StoredReport>, BackendError>> + Send;

    /// The next `count` addresses an allocation would hand out in `pool`, not taken (what
    /// the LAN checks probe ahead of time). A backend that cannot say lists none, and every
    /// hand-out is then probed when it happens.
    fn next_free(
        &self,
        pool: &PoolId,
        count: usize,
    ) -> impl Future<Output = Result<Vec<std::net::IpAddr>, BackendError>> + Send {
        let _ = (pool, count);
        async { Ok(Vec::new()) }
    }

    /// What the allocator knows of `addr` for a host that saw a device answer for it (see
    /// [`State::on_lan`]). A backend that cannot say knows nothing: the watcher then reports
    /// nothing.
    fn on_lan(
        &self,
        addr: std::net::IpAddr,
    ) -> impl Future<Output = Result<Vec<AddressOnLan>, BackendError>> + Send {
        let _ = addr;
        async { Ok(Vec::new()) }
    }

    /// Every host's last report of how it checks the LAN.
    fn lan_checks(&self) -> impl Future<Output = Result<Vec<HostLan>, BackendError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Up to `count` free addresses of `pool`'s range after `after` (see
    /// [`State::free_after`]): a background sweep's next page.
    fn free_after(
        &self,
        pool: &PoolId,
        after: Option<std::net::IpAddr>,
        count: usize,
    ) -> impl Future<Output = Result<Vec<std::net::IpAddr>, BackendError>> + Send {
        let _ = (pool, after, count);
        async { Ok(Vec::new()) }
    }
}

impl<B: Inventory> Inventory for Arc<B> {
    fn all_allocations(
        &self,
    ) -> impl Future<Output = Result<Vec<(PoolId, Allocation)>, BackendError>> + Send {
        B::all_allocations(self)
    }

    fn host_allocations(
        &self,
        host: &str,
    ) -> impl Future<Output = Result<Vec<(PoolId, Allocation)>, BackendError>> + Send {
        B::host_allocations(self, host)
    }

    fn pools(&self) -> impl Future<Output = Result<Vec<PoolInfo>, BackendError>> + Send {
        B::pools(self)
    }

    fn hosts(&self) -> impl Future<Output = Result<Vec<HostInfo>, BackendError>> + Send {
        B::hosts(self)
    }

    fn reports(&self) -> impl Future<Output = Result<Vec<StoredReport>, BackendError>> + Send {
        B::reports(self)
    }

    fn next_free(
        &self,
        pool: &PoolId,
        count: usize,
    ) -> impl Future<Output = Result<Vec<std::net::IpAddr>, BackendError>> + Send {
        B::next_free(self, pool, count)
    }

    fn on_lan(
        &self,
        addr: std::net::IpAddr,
    ) -> impl Future<Output = Result<Vec<AddressOnLan>, BackendError>> + Send {
        B::on_lan(self, addr)
    }

    fn lan_checks(&self) -> impl Future<Output = Result<Vec<HostLan>, BackendError>> + Send {
        B::lan_checks(self)
    }

    fn free_after(
        &self,
        pool: &PoolId,
        after: Option<std::net::IpAddr>,
        count: usize,
    ) -> impl Future<Output = Result<Vec<std::net::IpAddr>, BackendError>> + Send {
        B::free_after(self, pool, after, count)
    }
}

/// The wall clock in ms since the Unix epoch (what commands are stamped with here).
pub(crate) fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// An allocator in this process: one [`State`] behind a mutex, no replication, no persistence.
///
/// For tests, benchmarks and embedding. Its state is lost when the process ends, so a shim
/// serving dockerd from it forgets every pool on restart (see
/// [`crate::handshake`] on why the shim does not ask dockerd to replay).
#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
}

impl MemoryBackend {
    /// A backend over `state`.
    pub fn new(state: State) -> Self {
        MemoryBackend {
            state: Mutex::new(state),
        }
    }

    /// Runs `f` on the state, e.g. to query allocations in a test.
    pub fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        // A panic inside `apply` would poison the lock; the queries are still worth answering.
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&state)
    }

    /// After a panic halfway through `apply` the state may be inconsistent: refuse to use it
    /// rather than hand out addresses from it.
    fn poisoned() -> BackendError {
        BackendError::Unavailable(
            "the in-memory allocator was poisoned by an earlier panic; restart the process".into(),
        )
    }
}

impl Backend for MemoryBackend {
    async fn apply(&self, op: Op) -> Result<Outcome, BackendError> {
        let cmd = Command {
            at_ms: now_ms(),
            op,
        };
        let mut state = self.state.lock().map_err(|_| Self::poisoned())?;
        Ok(state.apply(&cmd)?)
    }

    async fn pool(&self, id: &PoolId) -> Result<PoolInfo, BackendError> {
        let state = self.state.lock().map_err(|_| Self::poisoned())?;
        Ok(state.pool(id)?)
    }
}

impl MemoryBackend {
    #[allow(clippy::result_large_err)] // the allocator's refusals, carried whole as elsewhere
    fn read<R>(&self, f: impl FnOnce(&State) -> R) -> Result<R, BackendError> {
        let state = self.state.lock().map_err(|_| Self::poisoned())?;
        Ok(f(&state))
    }
}

impl Inventory for MemoryBackend {
    async fn all_allocations(&self) -> Result<Vec<(PoolId, Allocation)>, BackendError> {
        self.read(State::all_allocations)
    }

    async fn host_allocations(
        &self,
        host: &str,
    ) -> Result<Vec<(PoolId, Allocation)>, BackendError> {
        self.read(|s| s.host_allocations(host))
    }

    async fn pools(&self) -> Result<Vec<PoolInfo>, BackendError> {
        self.read(State::pools)
    }

    async fn next_free(
        &self,
        pool: &PoolId,
        count: usize,
    ) -> Result<Vec<std::net::IpAddr>, BackendError> {
        let now = now_ms();
        Ok(self.read(|s| s.next_free(pool, count, now))??)
    }

    async fn on_lan(&self, addr: std::net::IpAddr) -> Result<Vec<AddressOnLan>, BackendError> {
        self.read(|s| s.on_lan(addr))
    }

    async fn lan_checks(&self) -> Result<Vec<HostLan>, BackendError> {
        self.read(State::lan_checks)
    }

    async fn free_after(
        &self,
        pool: &PoolId,
        after: Option<std::net::IpAddr>,
        count: usize,
    ) -> Result<Vec<std::net::IpAddr>, BackendError> {
        Ok(self.read(|s| s.free_after(pool, after, count))??)
    }

    async fn hosts(&self) -> Result<Vec<HostInfo>, BackendError> {
        self.read(State::hosts)
    }

    async fn reports(&self) -> Result<Vec<StoredReport>, BackendError> {
        self.read(State::reports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_core::PoolSpec;

    #[tokio::test]
    async fn memory_backend_applies_and_reads_pools() {
        let backend = Arc::new(MemoryBackend::default());
        let spec = {
            let mut spec = PoolSpec::default();
            spec.space = "local".into();
            spec.subnet = "10.9.0.0/24".parse().ok();
            spec
        };
        let out = backend
            .apply(Op::RequestPool {
                spec,
                holder: "h".into(),
            })
            .await;
        let Ok(Outcome::Pool {
            pool,
            created: true,
        }) = out
        else {
            panic!("unexpected {out:?}")
        };
        let info = backend.pool(&pool).await.expect("pool exists");
        assert_eq!(info.holders.get("h"), Some(&1));
        let missing: PoolId = "local/10.8.0.0/24".parse().expect("valid id");
        assert!(matches!(
            backend.pool(&missing).await,
            Err(BackendError::Alloc(AllocError::NoSuchPool(_)))
        ));
    }

    #[test]
    fn unavailable_says_the_cluster_is_unavailable() {
        let e = BackendError::Unavailable("no quorum: 1 of 3 voters reachable".into());
        assert_eq!(
            e.to_string(),
            "the raftipam cluster is unavailable: no quorum: 1 of 3 voters reachable"
        );
    }
}

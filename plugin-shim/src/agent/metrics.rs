//! The host agent's counters: process-wide, so that every reconciler, heartbeat and `check
//! --repair` of the process adds to the same numbers, which join the node's `/metrics` or the
//! shim's own `--metrics`.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Process-wide counters of reconciliation and heartbeats.
pub struct OpsMetrics {
    /// Leaked addresses found (counted once per address and sequence number).
    pub leaked_found: Counter,
    /// Leaked addresses released.
    pub repaired: Counter,
    /// Reconciliation passes completed.
    pub passes: Counter,
    /// Reconciliation passes that failed (dockerd or the cluster did not answer).
    pub pass_failures: Counter,
    /// Addresses seen leaked at the last pass.
    pub leaked_now: Gauge,
    /// Heartbeats sent successfully.
    pub heartbeats: Counter,
}

impl OpsMetrics {
    /// Adds these counters to `registry` (the node's, or the shim's own).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "leaked_found",
            "Leaked addresses found by reconciliation (allocated to this host, no endpoint in dockerd)",
            self.leaked_found.clone(),
        );
        registry.register(
            "leaked_repaired",
            "Leaked addresses released by reconciliation or check --repair",
            self.repaired.clone(),
        );
        registry.register(
            "reconcile_passes",
            "Reconciliation passes completed",
            self.passes.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciliation passes that failed (dockerd or the cluster did not answer)",
            self.pass_failures.clone(),
        );
        registry.register(
            "leaked_addresses",
            "Addresses seen leaked at the last reconciliation pass",
            self.leaked_now.clone(),
        );
        registry.register(
            "heartbeats",
            "Heartbeats this process sent to the cluster",
            self.heartbeats.clone(),
        );
    }
}

static OPS: LazyLock<OpsMetrics> = LazyLock::new(|| OpsMetrics {
    leaked_found: Counter::default(),
    repaired: Counter::default(),
    passes: Counter::default(),
    pass_failures: Counter::default(),
    leaked_now: Gauge::default(),
    heartbeats: Counter::default(),
});

/// This process's reconciliation and heartbeat counters.
pub fn ops_metrics() -> &'static OpsMetrics {
    &OPS
}

//! Prometheus metrics of a node, rendered as OpenMetrics text by [`crate::Node::metrics_text`]
//! (the `raftipam` binary serves it on `--metrics HOST:PORT`; an embedder serves it as it likes).
//!
//! Counters and the latency histogram are updated on the write path; the Raft gauges and the
//! per-pool usage gauges are refreshed from the node's state at every scrape, so they never
//! go stale.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The metrics of one node.
pub struct Metrics {
    registry: Registry,
    /// Writes proposed to Raft by this node (as leader).
    pub proposals: Counter,
    /// Proposals that failed (timeout, leader change, storage).
    pub proposal_failures: Counter,
    /// Time from proposal to the applied outcome, in seconds.
    pub apply_latency: Histogram,
    /// Linearizable reads this node answered from its own state (as leader or follower).
    pub reads_local: Counter,
    /// Linearizable reads this node passed on to the leader whole.
    pub reads_forwarded: Counter,
    /// Read-index rounds this node (as leader) ran for followers' batches of reads.
    pub read_index_served: Counter,
    /// Raft messages from a newer release that this node could not read (it stops then).
    pub undecodable_from_newer: Counter,
    /// Connections, messages and calls refused to protect the node ([`Metrics::refuse`]).
    refused: Family<Vec<(String, String)>, Counter>,
    /// API requests being served now, over every connection.
    pub api_in_flight: Gauge,
    /// The most API requests served at once since the node started.
    pub api_in_flight_peak: Gauge,
    build_info: Family<Vec<(String, String)>, Gauge>,
    member_version: Family<Vec<(String, String)>, Gauge>,
    cluster_version: Gauge,
    certificate_expiry: Family<Vec<(String, String)>, Gauge>,
    term: Gauge,
    leader: Gauge,
    is_leader: Gauge,
    last_log_index: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    snapshot_index: Gauge,
    pool_addresses: Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>,
    host_last_seen_age: Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>,
    host_report_age: Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>,
    host_leaked: Family<Vec<(String, String)>, Gauge>,
    lan_conflicts: Family<Vec<(String, String)>, Gauge>,
    hosts: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("raftipam");
        let proposals = Counter::default();
        let proposal_failures = Counter::default();
        let apply_latency = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let (reads_local, reads_forwarded, read_index_served) =
            (Counter::default(), Counter::default(), Counter::default());
        registry.register(
            "reads_local",
            "Linearizable reads answered from this node's own state (leader or follower)",
            reads_local.clone(),
        );
        registry.register(
            "reads_forwarded",
            "Linearizable reads passed on to the leader whole",
            reads_forwarded.clone(),
        );
        registry.register(
            "read_index_served",
            "Read-index calls this node answered for followers (one per batch of their reads)",
            read_index_served.clone(),
        );
        let undecodable_from_newer = Counter::default();
        registry.register(
            "undecodable_from_newer",
            "Raft messages from a newer release this node could not read (it stops: upgrade it)",
            undecodable_from_newer.clone(),
        );
        let refused = Family::default();
        registry.register(
            "refused",
            "Connections, messages and calls refused to protect the node, by what (raft: a Raft message from a certificate that is not that member's; forward: a call forwarded by one; connection: a connection past a limit; request: a request too large or invalid)",
            refused.clone(),
        );
        let api_in_flight = Gauge::default();
        registry.register(
            "api_requests_in_flight",
            "API requests being served now, over every connection",
            api_in_flight.clone(),
        );
        let api_in_flight_peak = Gauge::default();
        registry.register(
            "api_requests_in_flight_peak",
            "The most API requests served at once since the node started",
            api_in_flight_peak.clone(),
        );
        let build_info = Family::default();
        registry.register(
            "build_info",
            "This node's release (the `version` label), always 1",
            build_info.clone(),
        );
        let member_version = Family::default();
        registry.register(
            "member_version_info",
            "Each member's release as this node last heard it in a handshake, always 1",
            member_version.clone(),
        );
        let cluster_version = Gauge::default();
        registry.register(
            "cluster_version",
            "The cluster version applied here (what every member can apply)",
            cluster_version.clone(),
        );
        let certificate_expiry = Family::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When this node's TLS certificate expires (Unix seconds)",
            certificate_expiry.clone(),
        );
        let (term, leader, is_leader) = (Gauge::default(), Gauge::default(), Gauge::default());
        let (last_log_index, commit_index, applied_index, snapshot_index) = (
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
        );
        let pool_addresses = Family::default();
        registry.register(
            "proposals",
            "Writes proposed to Raft by this node",
            proposals.clone(),
        );
        registry.register(
            "proposal_failures",
            "Proposals that failed (timeout, leader change, storage)",
            proposal_failures.clone(),
        );
        registry.register(
            "apply_latency_seconds",
            "Time from proposing a write to its applied outcome",
            apply_latency.clone(),
        );
        registry.register("term", "Current Raft term", term.clone());
        registry.register(
            "leader",
            "Id of the leader this node knows of (-1: none)",
            leader.clone(),
        );
        registry.register(
            "is_leader",
            "1 if this node is the leader",
            is_leader.clone(),
        );
        registry.register(
            "last_log_index",
            "Index of the last log entry",
            last_log_index.clone(),
        );
        registry.register(
            "commit_index",
            "Index of the last committed entry",
            commit_index.clone(),
        );
        registry.register(
            "applied_index",
            "Index of the last applied entry",
            applied_index.clone(),
        );
        registry.register(
            "snapshot_index",
            "Index covered by the latest snapshot",
            snapshot_index.clone(),
        );
        registry.register(
            "pool_addresses",
            "Addresses of each pool by state (allocated, reserved, cooling, free)",
            pool_addresses.clone(),
        );
        let host_last_seen_age = Family::default();
        let hosts = Gauge::default();
        registry.register(
            "host_last_seen_age_seconds",
            "Seconds since each host's last heartbeat",
            host_last_seen_age.clone(),
        );
        registry.register(
            "hosts",
            "Hosts that hold something or sent a heartbeat",
            hosts.clone(),
        );
        let host_report_age = Family::default();
        registry.register(
            "host_report_age_seconds",
            "Seconds since each host's shim last reported its reconciliation pass",
            host_report_age.clone(),
        );
        let host_leaked = Family::default();
        registry.register(
            "host_leaked_addresses",
            "Addresses each host's last report calls leaked that are still allocated the same way (cluster-wide view)",
            host_leaked.clone(),
        );
        let lan_conflicts = Family::default();
        registry.register(
            "lan_conflicts",
            "Addresses of pools that a device on the LAN raftipam does not know answers for: kind=quarantined (free, handed out by no host now), past_probation (free, probation over), alarm (a container holds it too: a duplicate)",
            lan_conflicts.clone(),
        );
        #[cfg(feature = "docker")]
        plugin_shim::agent::metrics::ops_metrics().register(&mut registry);
        Metrics {
            lan_conflicts,
            host_last_seen_age,
            host_report_age,
            host_leaked,
            hosts,
            registry,
            proposals,
            proposal_failures,
            apply_latency,
            reads_local,
            reads_forwarded,
            read_index_served,
            undecodable_from_newer,
            refused,
            api_in_flight,
            api_in_flight_peak,
            build_info,
            member_version,
            cluster_version,
            certificate_expiry,
            term,
            leader,
            is_leader,
            last_log_index,
            commit_index,
            applied_index,
            snapshot_index,
            pool_addresses,
        }
    }

    /// Counts one refusal of `what` (`raft`, `forward`, `connection`, `request`).
    pub fn refuse(&self, what: &str) {
        self.refused
            .get_or_create(&vec![("what".to_string(), what.to_string())])
            .inc();
    }

    /// Refreshes the release series: this node's, the members' (`members`: id and release),
    /// the cluster version, and the expiry of this node's certificate (role, name, time).
    pub fn set_versions(
        &self,
        own: &str,
        members: &[(u64, String)],
        cluster_version: u32,
        certificate: Option<(&str, &str, i64)>,
    ) {
        self.build_info.clear();
        self.build_info
            .get_or_create(&vec![("version".to_string(), own.to_string())])
            .set(1);
        self.member_version.clear();
        for (id, v) in members {
            self.member_version
                .get_or_create(&vec![
                    ("member".to_string(), id.to_string()),
                    ("version".to_string(), v.clone()),
                ])
                .set(1);
        }
        self.cluster_version.set(i64::from(cluster_version));
        self.certificate_expiry.clear();
        if let Some((role, name, at)) = certificate {
            self.certificate_expiry
                .get_or_create(&vec![
                    ("role".to_string(), role.to_string()),
                    ("name".to_string(), name.to_string()),
                ])
                .set(at);
        }
    }

    /// Refreshes the per-host gauges from `hosts` (ages measured at `now_ms`).
    pub fn set_hosts(&self, hosts: &[allocator_core::HostInfo], now_ms: u64) {
        self.hosts.set(hosts.len() as i64);
        self.host_last_seen_age.clear();
        self.host_report_age.clear();
        self.host_leaked.clear();
        for h in hosts {
            let label = vec![("host".to_string(), h.name.clone())];
            if let Some(seen) = h.last_seen_ms {
                self.host_last_seen_age
                    .get_or_create(&label)
                    .set(now_ms.saturating_sub(seen) as f64 / 1000.0);
            }
            if let Some(at) = h.report_ms {
                self.host_report_age
                    .get_or_create(&label)
                    .set(now_ms.saturating_sub(at) as f64 / 1000.0);
            }
            if let Some(n) = h.leaked {
                self.host_leaked.get_or_create(&label).set(n as i64);
            }
        }
    }

    /// Sets the conflict gauges from `counts` (every kind, zeros included, so that an alert
    /// on a rise sees the series before it).
    pub fn set_conflicts(&self, counts: allocator_core::ConflictCounts) {
        for (kind, n) in [
            ("quarantined", counts.quarantined),
            ("past_probation", counts.past_probation),
            ("alarm", counts.alarms),
        ] {
            self.lan_conflicts
                .get_or_create(&vec![("kind".to_string(), kind.to_string())])
                .set(n as i64);
        }
    }

    /// Refreshes the gauges from `status` and `pools`, then encodes everything as text.
    pub fn render(
        &self,
        status: &crate::api::NodeStatus,
        pools: &[allocator_core::PoolInfo],
    ) -> String {
        let i = |v: Option<u64>| v.map(|x| x as i64).unwrap_or(-1);
        self.term.set(status.term as i64);
        self.leader.set(i(status.leader));
        self.is_leader
            .set(i64::from(status.leader == Some(status.id)));
        self.last_log_index.set(i(status.last_log_index));
        self.commit_index.set(i(status.committed));
        self.applied_index.set(i(status.applied));
        self.snapshot_index.set(i(status.snapshot));
        self.pool_addresses.clear();
        for p in pools {
            let u = &p.usage;
            for (state, v) in [
                ("allocated", u.allocated as f64),
                ("reserved", u.reserved as f64),
                ("cooling", u.cooling as f64),
                ("free", u.free as f64),
            ] {
                self.pool_addresses
                    .get_or_create(&vec![
                        ("pool".to_string(), p.id.to_string()),
                        ("state".to_string(), state.to_string()),
                    ])
                    .set(v);
            }
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

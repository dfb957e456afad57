//! Proof under faults: a seeded chaos harness that runs a real cluster (`raftipam node`
//! processes, each with its own RocksDB, each in its own network namespace on a bridge),
//! drives it with concurrent clients through the real client while it kills, pauses,
//! partitions and slows nodes on a replayable schedule, records every operation, heals, and checks
//! the history and the replicas (the `raftipam-chaos` binary; docs/chaos.md).
//!
//! - [`schedule`]: the faults, drawn from a seed (JSON, replayable).
//! - [`net`]: the bridge, the namespaces, the blackhole routes of partitions.
//! - [`proxy`]: a TCP proxy per node for delay, loss, reordering and slow links.
//! - [`cluster`]: the node processes (SIGKILL, SIGSTOP/SIGCONT, restart).
//! - [`workload`]: the client processes and the history they write.
//! - [`flood`]: a host flooding the nodes (a fault kind).
//! - [`rogue`]: a rogue node certificate attacking the nodes (a fault kind).
//! - [`run`]: one run from start to verdict.
//! - [`rng`]: the seeded generator the schedule and the proxies draw from.
//!
//! The checker of a history against the final replicas is a pure crate of its own
//! (`raftipam_history`), so its tests need no cluster.
//!
//! It never touches an address outside the namespaces it made, and every loop in it is
//! bounded in time.

pub mod cluster;
pub mod flood;
pub mod net;
pub mod proxy;
pub mod rng;
pub mod rogue;
pub mod run;
pub mod schedule;
pub mod workload;

//! The in-process cluster harness (raft-node's `tests/node/` and the binary's `tests/cli/` include it): real
//! nodes — real tarpc on loopback, real RocksDB in a temp dir — started as [`Node`]s inside
//! the test process ([`Cluster`]), so that fault scenarios read like scripts; with the bounded
//! wait [`eventually`], free loopback addresses ([`free_addr`]), a pool [`spec`] and a node's
//! [`local_allocations`]. Tests of the `raftipam` binary as child processes use
//! the binary's `tests/support/binary.rs` instead.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use allocator_core::{Allocation, PoolId, PoolSpec};
use raft_node::{AdminCommand, Client, ClientConfig, Node, NodeConfig, Query, QueryReply};

/// Waits until `f` returns `Some`, checking every 50 ms, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free port on an address of its own in 127.0.0.0/8 (not 127.0.0.1): clients connect from
/// 127.0.0.1, so their ephemeral ports can never take a node's port between a stop and a
/// restart.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) + std::process::id() % 50_000;
    let ip = std::net::Ipv4Addr::new(127, 0, (1 + (n / 250) % 250) as u8, (2 + n % 250) as u8);
    let l = TcpListener::bind((ip, 0)).expect("bind a free port");
    l.local_addr().expect("local addr")
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub addrs: BTreeMap<u64, SocketAddr>,
    pub nodes: BTreeMap<u64, Node>,
    pub tune: fn(&mut NodeConfig),
}

fn no_tune(_: &mut NodeConfig) {}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n), initialises node 1 and adds the others as voters.
    pub async fn start(n: u64) -> Cluster {
        Self::start_with(n, no_tune).await
    }

    pub async fn start_with(n: u64, tune: fn(&mut NodeConfig)) -> Cluster {
        let mut c = Cluster {
            dir: tempfile::tempdir().expect("tempdir"),
            addrs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            tune,
        };
        for id in 1..=n {
            c.addrs.insert(id, free_addr());
            c.restart(id).await;
        }
        c.nodes[&1].init().await.expect("init");
        let admin = c.client();
        for id in 2..=n {
            admin
                .admin(AdminCommand::AddNode {
                    id,
                    addr: c.addrs[&id].to_string(),
                })
                .await
                .expect("add node");
        }
        c
    }

    pub fn config(&self, id: u64) -> NodeConfig {
        let mut cfg = NodeConfig::new(id, self.addrs[&id], self.dir.path().join(format!("n{id}")));
        (self.tune)(&mut cfg);
        cfg
    }

    /// Starts (or restarts) node `id` from its data directory.
    pub async fn restart(&mut self, id: u64) {
        self.addrs.entry(id).or_insert_with(free_addr);
        let node = Node::start(self.config(id)).await.expect("start node");
        self.nodes.insert(id, node);
    }

    /// Stops node `id` abruptly (its tasks are aborted; what is on disk stays).
    pub async fn kill(&mut self, id: u64) {
        if let Some(n) = self.nodes.remove(&id) {
            n.shutdown().await.expect("shutdown");
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr().to_string()).collect()
    }

    /// A client of every running node.
    pub fn client(&self) -> Client {
        Client::with_config(
            self.endpoints(),
            ClientConfig {
                timeout: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .expect("client")
    }

    /// A client of node `id` only.
    pub fn client_of(&self, id: u64) -> Client {
        Client::connect([self.addrs[&id].to_string()]).expect("client")
    }

    /// The leader, once the running nodes agree on one.
    pub async fn leader(&self) -> u64 {
        eventually(30, "a leader", || async {
            let ls: Vec<Option<u64>> = self.nodes.values().map(|n| n.status().leader).collect();
            let l = ls.first().copied().flatten()?;
            (ls.iter().all(|x| *x == Some(l)) && self.nodes.contains_key(&l)).then_some(l)
        })
        .await
    }

    /// Waits until every running node has applied the same index, then returns every
    /// node's allocations (asserting that they are identical and that the invariants hold).
    pub async fn converged(&self) -> Vec<(PoolId, Allocation)> {
        eventually(60, "all nodes to apply the same index", || async {
            let a: Vec<Option<u64>> = self.nodes.values().map(|n| n.status().applied).collect();
            let c: Vec<Option<u64>> = self.nodes.values().map(|n| n.status().committed).collect();
            (a.iter().all(|x| *x == a[0])
                && a[0].is_some()
                && a[0] >= c.iter().copied().max().flatten())
            .then_some(())
        })
        .await;
        let mut all = Vec::new();
        let mut snaps = Vec::new();
        for n in self.nodes.values() {
            let (allocs, inv, snap) =
                n.with_state(|s| (s.all_allocations(), s.check_invariants(), s.to_snapshot()));
            inv.expect("invariants");
            all.push(allocs);
            snaps.push(snap);
        }
        for (i, a) in all.iter().enumerate() {
            assert_eq!(a, &all[0], "node #{i} differs from the first");
        }
        // The whole allocator state (pools, reservations, cursors, cooldowns), byte for byte.
        for (i, s) in snaps.iter().enumerate() {
            assert!(s == &snaps[0], "node #{i}'s state differs from the first's");
        }
        all.swap_remove(0)
    }

    /// Starts a new node `id` and adds it to the cluster as a voter.
    pub async fn add(&mut self, id: u64) {
        self.restart(id).await;
        self.client()
            .admin(AdminCommand::AddNode {
                id,
                addr: self.addrs[&id].to_string(),
            })
            .await
            .expect("add node");
    }

    /// Removes node `id` from the cluster and stops it.
    pub async fn remove(&mut self, id: u64) {
        self.client()
            .admin(AdminCommand::RemoveNode { id })
            .await
            .expect("remove node");
        self.kill(id).await;
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id).await;
        }
    }
}

pub fn spec(cidr: &str) -> PoolSpec {
    PoolSpec::new("global").subnet(cidr.parse().expect("cidr"))
}

pub async fn local_allocations(c: &Client, i: usize) -> Vec<(PoolId, Allocation)> {
    match c.query_node(i, Query::AllAllocations).await.expect("query") {
        QueryReply::AllAllocations(a) => a,
        r => panic!("unexpected {r:?}"),
    }
}

/// Every acknowledged allocation is in `state` with its owner, and no address twice.
pub fn assert_all_present(
    acked: &[(std::net::IpAddr, allocator_core::Owner)],
    state: &[(allocator_core::PoolId, allocator_core::Allocation)],
) {
    let held: std::collections::BTreeMap<_, _> = state
        .iter()
        .map(|(_, a)| (a.addr, a.owner.clone()))
        .collect();
    assert_eq!(held.len(), state.len(), "an address is held twice");
    for (addr, owner) in acked {
        assert_eq!(
            held.get(addr),
            Some(owner),
            "acknowledged {addr} for {owner} is missing"
        );
    }
}

//! In-process clusters: replication, leader loss, restarts, membership, snapshots, quorum.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use allocator_core::Owner;
use common::{spec, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_allocations_from_all_nodes_are_distinct_and_replicated() {
    let c = Cluster::start(3).await;
    let pool = c.client().create_pool(spec("10.10.0.0/16"), "h").await.expect("pool");
    let clients: Vec<_> = c.nodes.keys().map(|id| c.client_of(*id)).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000usize {
        let cl = clients[i % clients.len()].clone();
        let pool = pool.clone();
        tasks.spawn(async move {
            cl.allocate(&pool, None, Owner::new(format!("h{}", i % 7), format!("e{i}")))
                .await
        });
    }
    let mut got = BTreeSet::new();
    while let Some(r) = tasks.join_next().await {
        let addr = r.expect("task").expect("allocate");
        assert!(got.insert(addr.addr()), "{addr} handed out twice");
    }
    assert_eq!(got.len(), 1000);
    let all = c.converged().await;
    assert_eq!(all.len(), 1000);
    c.shutdown().await;
}

//! The replicated path: 3 raft-node nodes in this process on loopback, real RocksDB with
//! disk syncs on, allocations through the typed client at 1, 16 and 256 concurrent clients.
//! Figures are in the README ("Benchmarks").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocator_core::{Owner, PoolId, PoolSpec};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use raft_node::{Client, Node};

struct Cluster {
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
    pool: PoolId,
}

async fn cluster() -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, client) = benches::three_nodes(dir.path()).await;
    let spec = {
        let mut spec = PoolSpec::default();
        spec.space = "bench".into();
        spec.subnet = Some("10.0.0.0/8".parse().expect("cidr"));
        spec
    };
    let pool = client.create_pool(spec, "bench").await.expect("pool");
    Cluster {
        _dir: dir,
        nodes,
        pool,
    }
}

fn replicated(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cl = rt.block_on(cluster());
    let endpoints: Vec<String> = cl.nodes.iter().map(|n| n.addr().to_string()).collect();
    let next = Arc::new(AtomicU64::new(0));
    let mut g = c.benchmark_group("replicated_allocate");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(1));
    for clients in [1usize, 16, 256] {
        let pool_clients: Vec<Client> = (0..clients)
            .map(|_| Client::connect(&endpoints).expect("client"))
            .collect();
        g.bench_function(format!("{clients}_clients"), |b| {
            b.iter_custom(|iters| {
                let (pool, next) = (cl.pool.clone(), next.clone());
                let pool_clients = pool_clients.clone();
                rt.block_on(async move {
                    let todo = Arc::new(AtomicU64::new(iters));
                    let start = Instant::now();
                    let mut tasks = tokio::task::JoinSet::new();
                    for c in pool_clients {
                        let (pool, next, todo) = (pool.clone(), next.clone(), todo.clone());
                        tasks.spawn(async move {
                            while todo
                                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                                    t.checked_sub(1)
                                })
                                .is_ok()
                            {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                c.allocate(&pool, None, Owner::new("bench", format!("e{i}")))
                                    .await
                                    .expect("allocate");
                            }
                        });
                    }
                    while tasks.join_next().await.is_some() {}
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
    rt.block_on(async move {
        for n in cl.nodes {
            let _ = n.shutdown().await;
        }
    });
}

criterion_group!(benches, replicated);
criterion_main!(benches);

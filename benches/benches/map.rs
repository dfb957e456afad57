//! The web view's subnet map: a page costs time in proportion to the page, not to the subnet.
//! A dense page of 256 cells of a /24, and of a /8 holding 1,000,000 allocations (at its
//! start, where every cell is allocated, and at its end, where all are free); a sparse page of
//! 256 entries of an IPv6 /64 holding 1,000,000 allocations (at its start, in the middle, and
//! in the free space past them). Results are in the README ("Benchmarks").

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use allocator_core::{Command, Op, Order, Owner, PoolId, PoolSpec, State};
use benches::endpoint_name;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const MILLION: u64 = 1_000_000;

fn filled(cidr: &str, n: u64) -> (State, PoolId) {
    let mut s = State::default();
    let spec = {
        let mut spec = PoolSpec::default();
        spec.space = "global".into();
        spec.subnet = Some(cidr.parse().unwrap());
        spec
    };
    s.apply(&Command {
        at_ms: 1_700_000_000_000,
        op: Op::RequestPool {
            spec,
            holder: "bench".into(),
        },
    })
    .unwrap();
    let id = s.pools()[0].id.clone();
    for i in 0..n {
        s.apply(&Command {
            at_ms: 1_700_000_000_000,
            op: Op::Allocate {
                pool: id.clone(),
                addr: None,
                owner: Owner::new(format!("host-{}", i % 7), endpoint_name(i)),
                order: Order::Lowest,
            },
        })
        .unwrap();
    }
    (s, id)
}

fn dense(c: &mut Criterion) {
    let mut g = c.benchmark_group("map_page_256");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(256));
    let (small, small_id) = filled("10.1.0.0/24", 200);
    g.bench_function("slash24_200_allocated", |b| {
        b.iter(|| black_box(small.map_page(&small_id, 0, 256).unwrap()))
    });
    let (big, big_id) = filled("10.0.0.0/8", MILLION);
    g.bench_function("slash8_1m_allocated/first_page", |b| {
        b.iter(|| black_box(big.map_page(&big_id, 0, 256).unwrap()))
    });
    g.bench_function("slash8_1m_allocated/last_page", |b| {
        b.iter(|| black_box(big.map_page(&big_id, 65_535, 256).unwrap()))
    });
    g.finish();
}

fn sparse(c: &mut Criterion) {
    let mut g = c.benchmark_group("map_sparse_256");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(256));
    let (s, id) = filled("fd00::/64", MILLION);
    let at = |off: u128| -> Option<IpAddr> {
        Some(IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from("fd00::".parse::<std::net::Ipv6Addr>().unwrap()) + off,
        )))
    };
    g.bench_function("slash64_1m_allocated/start", |b| {
        b.iter(|| black_box(s.map_sparse(&id, None, 256).unwrap()))
    });
    g.bench_function("slash64_1m_allocated/middle", |b| {
        b.iter(|| black_box(s.map_sparse(&id, at(500_000), 256).unwrap()))
    });
    g.bench_function("slash64_1m_allocated/free_tail", |b| {
        b.iter(|| black_box(s.map_sparse(&id, at(1 << 40), 256).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, dense, sparse);
criterion_main!(benches);

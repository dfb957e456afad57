//! allocator-core benchmarks: the bitmap alone and the whole `apply` path with owners.
//! Targets and results are in the README ("Benchmarks").

use std::hint::black_box;
use std::time::Duration;

use allocator_core::bitmap::Bitmap;
use allocator_core::{Op, Order, Owner, PoolId, State};
use benches::{
    cmd, endpoint_name, filled_bitmap, filled_pair, live_bytes, next_address_commands, pool_state,
    Counting,
};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

#[global_allocator]
static ALLOC: Counting = Counting;

fn alloc_release(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc_release_pair");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (name, prefix) in [("slash16", 16u32), ("slash8", 8)] {
        let bits = 32 - prefix;
        for (fill_name, permille) in [("50pct", 500u64), ("99pct", 990)] {
            // Setup happens inside each closure, so a filtered run builds only what it measures,
            // and once: criterion calls the closure for every sample, and a /8 at 99% takes
            // seconds to fill (built per sample, it made this run take over 20 minutes).
            let mut bitmap = None;
            g.bench_function(format!("bitmap/{name}/{fill_name}"), |bench| {
                let b = bitmap.get_or_insert_with(|| filled_bitmap(bits, permille));
                bench.iter(|| {
                    let i = b.take_first_in(0, u128::MAX).unwrap();
                    b.clear(black_box(i));
                })
            });
            drop(bitmap);
            let mut filled = None;
            g.bench_function(format!("apply/{name}/{fill_name}"), |bench| {
                let (s, alloc, release) =
                    filled.get_or_insert_with(|| filled_pair(prefix, permille));
                bench.iter(|| {
                    black_box(s.apply(alloc).unwrap());
                    black_box(s.apply(release).unwrap());
                })
            });
            drop(filled);
        }
    }
    g.finish();
}

fn fill_slash16(c: &mut Criterion) {
    let mut g = c.benchmark_group("fill_slash16");
    g.throughput(Throughput::Elements(65_534))
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("bitmap", |bench| {
        bench.iter_batched_ref(
            || Bitmap::new(16),
            |b| {
                b.set(0);
                b.set(65_535);
                while b.take_first_in(0, u128::MAX).is_some() {}
            },
            BatchSize::LargeInput,
        )
    });
    let alloc = cmd(Op::Allocate {
        pool: "global/10.0.0.0/16".parse().unwrap(),
        addr: None,
        owner: Owner::new("host-1", ""),
        order: Order::Lowest,
    });
    g.sample_size(20);
    g.bench_function("apply", |bench| {
        bench.iter_batched_ref(
            || pool_state("10.0.0.0/16").0,
            |s| {
                for _ in 0..65_534 {
                    black_box(s.apply(&alloc).unwrap());
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

const MILLION: u64 = 1_000_000;

fn ipv6_million(c: &mut Criterion) {
    let mut g = c.benchmark_group("ipv6_slash64_first_million");
    g.throughput(Throughput::Elements(MILLION))
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("bitmap", |bench| {
        bench.iter_batched_ref(
            || Bitmap::new(64),
            |b| {
                for _ in 0..MILLION {
                    black_box(b.take_first_in(0, u128::MAX));
                }
            },
            BatchSize::LargeInput,
        )
    });
    let id: PoolId = "global/fd00::/64".parse().unwrap();
    let cmds = next_address_commands(&id, MILLION);
    g.bench_function("apply", |bench| {
        bench.iter_batched_ref(
            || pool_state("fd00::/64").0,
            |s| {
                for c in &cmds {
                    black_box(s.apply(c).unwrap());
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
    // Memory held afterwards, per allocated address (owners included).
    let before = live_bytes();
    let (mut s, _) = pool_state("fd00::/64");
    for c in &cmds {
        s.apply(c).unwrap();
    }
    let held = live_bytes() - before;
    println!(
        "ipv6_slash64_first_million/memory: {held} bytes held for {MILLION} allocations = {:.1} bytes per address (State::heap_bytes says {})",
        held as f64 / MILLION as f64,
        s.heap_bytes()
    );
}

fn snapshot_million(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot_1m_allocations");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(1));
    let (mut s, id) = pool_state("fd00::/64");
    for i in 0..MILLION {
        s.apply(&cmd(Op::Allocate {
            pool: id.clone(),
            addr: None,
            owner: Owner::new("host-1", endpoint_name(i)),
            order: Order::Lowest,
        }))
        .unwrap();
    }
    let bytes = s.to_snapshot();
    println!("snapshot_1m_allocations/size: {} bytes", bytes.len());
    g.bench_function("encode", |bench| bench.iter(|| black_box(s.to_snapshot())));
    g.bench_function("decode", |bench| {
        bench.iter(|| black_box(State::from_snapshot(&bytes).unwrap()))
    });
    g.finish();
}

criterion_group!(
    benches,
    alloc_release,
    fill_slash16,
    ipv6_million,
    snapshot_million
);
criterion_main!(benches);

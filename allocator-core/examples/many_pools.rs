//! A site with many networks, in the allocator alone: creates N /24 pools in one address space
//! (10.(k / 256).(k % 256).0/24), allocates 100 addresses in each, round-robin, then times a
//! snapshot's encode and decode (decode validates every invariant, as a restart, a snapshot
//! install or a restore does) and a copy of the state (what a snapshot build takes).
//! `cargo run --release -p allocator-core --example many_pools -- 10000`
//!
//! Each step should cost about the same per pool at 1,000 and at 10,000 pools; before the
//! subnets' overlap checks used their order, creating pools and decoding a snapshot grew with
//! the square of the pool count (10,000 pools: 0.84 s to create, 2.2 s to decode).

use std::time::Instant;

use allocator_core::{Command, Op, Order, Owner, PoolId, PoolSpec, State};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .filter(|n| (1..=65_536).contains(n))
        .unwrap_or(10_000);
    let mut s = State::default();
    let t = Instant::now();
    let mut ids = Vec::new();
    for k in 0..n {
        let net = format!("10.{}.{}.0/24", k / 256, k % 256);
        let spec = PoolSpec::new("site").subnet(net.parse().expect("a /24"));
        s.apply(&Command {
            at_ms: 0,
            op: Op::RequestPool {
                spec,
                holder: "h".into(),
            },
        })
        .expect("pool");
        ids.push(format!("site/{net}").parse::<PoolId>().expect("pool id"));
    }
    let per = |d: std::time::Duration, count: u64| d.as_nanos() as f64 / count as f64 / 1000.0;
    let el = t.elapsed();
    println!(
        "create {n} pools: {el:?} ({:.2} µs each)",
        per(el, n.into())
    );
    let count = u64::from(n) * 100;
    let t = Instant::now();
    for i in 0..count {
        let id = &ids[(i % u64::from(n)) as usize];
        s.apply(&Command {
            at_ms: 0,
            op: Op::Allocate {
                pool: id.clone(),
                addr: None,
                owner: Owner::new("host-1", format!("e{i}")),
                order: Order::Lowest,
            },
        })
        .expect("allocation");
    }
    let el = t.elapsed();
    println!("allocate {count}: {el:?} ({:.3} µs each)", per(el, count));
    let t = Instant::now();
    let bytes = s.to_snapshot();
    println!("snapshot encode: {:?}, {} bytes", t.elapsed(), bytes.len());
    let t = Instant::now();
    let back = State::from_snapshot(&bytes).expect("decode");
    println!("snapshot decode (validated): {:?}", t.elapsed());
    let t = Instant::now();
    let copy = back.clone();
    println!("copy of the state: {:?}", t.elapsed());
    drop(copy);
}

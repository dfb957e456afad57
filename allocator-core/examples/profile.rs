//! A plain program for profilers (`perf record`): fills an IPv6 /64 with N allocations with
//! 32-character endpoint names through `apply`, then allocates and releases on a /16 at 99%.
//! `cargo run --release -p allocator-core --example profile -- 1000000 1000000 [FILE]` (fill
//! count, pair count; with FILE, the filled /64's state is also written there as a snapshot —
//! a file `raftipam restore` takes, for measuring a large restore).

use std::time::Instant;

use allocator_core::{Command, Op, Order, Owner, PoolId, PoolSpec, State};
/// A 32-character endpoint name.
fn endpoint_name(i: u64) -> String {
    format!("container-{i:022}")
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut s = State::default();
    let spec = PoolSpec::new("global").subnet("fd00::/64".parse().expect("cidr"));
    s.apply(&Command {
        at_ms: 0,
        op: Op::RequestPool {
            spec,
            holder: "h".into(),
        },
    })
    .expect("pool");
    let id: PoolId = "global/fd00::/64".parse().expect("id");
    let cmds: Vec<Command> = (0..n)
        .map(|i| Command {
            at_ms: 0,
            op: Op::Allocate {
                pool: id.clone(),
                addr: None,
                owner: Owner::new("host-1", endpoint_name(i)),
                order: Order::Lowest,
            },
        })
        .collect();
    let t = Instant::now();
    for c in &cmds {
        s.apply(c).expect("alloc");
    }
    let el = t.elapsed();
    println!(
        "{n} allocations: {:?} = {:.1} ns each",
        el,
        el.as_nanos() as f64 / n as f64
    );
    if let Some(file) = std::env::args().nth(3) {
        let bytes = s.to_snapshot();
        std::fs::write(&file, &bytes).unwrap_or_else(|e| panic!("cannot write {file}: {e}"));
        println!("wrote {file}: {} bytes", bytes.len());
    }

    // Allocate + release on a /16 at 99% full, scattered.
    let id: PoolId = "global/10.0.0.0/16".parse().expect("id");
    let mut s = State::default();
    let spec = PoolSpec::new("global").subnet(id.subnet);
    s.apply(&Command {
        at_ms: 0,
        op: Op::RequestPool {
            spec,
            holder: "h".into(),
        },
    })
    .expect("pool");
    // 99% full: every address but one in a hundred, scattered by a multiplicative hash.
    for o in (1..65_535u64).filter(|o| o.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 100 != 0) {
        let addr = std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + o as u32));
        let op = Op::Allocate {
            pool: id.clone(),
            addr: Some(addr),
            owner: Owner::new("host-1", endpoint_name(o)),
            order: Order::Lowest,
        };
        s.apply(&Command { at_ms: 0, op }).expect("fill");
    }
    let alloc = Command {
        at_ms: 0,
        op: Op::Allocate {
            pool: id.clone(),
            addr: None,
            owner: Owner::new("host-2", endpoint_name(u64::MAX)),
            order: Order::Lowest,
        },
    };
    let Ok(allocator_core::Outcome::Allocated { addr, .. }) = s.apply(&alloc) else {
        panic!("alloc")
    };
    let release = Command {
        at_ms: 0,
        op: Op::Release {
            pool: id,
            addr: addr.addr(),
            host: "host-2".into(),
            force: false,
        },
    };
    s.apply(&release).expect("release");
    let t = Instant::now();
    let n = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(n);
    for _ in 0..n {
        s.apply(&alloc).expect("alloc");
        s.apply(&release).expect("release");
    }
    let el = t.elapsed();
    println!(
        "{n} allocate+release pairs on a /16 at 99%: {:.1} ns each",
        el.as_nanos() as f64 / n as f64
    );
}

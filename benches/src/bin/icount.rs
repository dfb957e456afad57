//! Instruction counts of the core's hot paths, for `scripts/icount.sh`, which runs this under
//! valgrind's callgrind collecting only inside the `measured_*` functions (the setup — filling
//! a /8 — is not counted). Times differ between machines of the same kind (an AMD EPYC and an
//! Intel Xeon by almost 2× on the same case); instruction counts do not, so they are the
//! figures to drive down.
//!
//!   icount CASE N      runs CASE's setup, then its measured part N times (or over N addresses)
//!   icount --list      the cases

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use allocator_core::bitmap::Bitmap;
use allocator_core::{Command, Op, Order, Owner, State};
use benches::{endpoint_name, scattered};

fn cmd(op: Op) -> Command {
    Command {
        at_ms: 1_700_000_000_000,
        op,
    }
}

/// The cases: name, what one unit is.
const CASES: &[(&str, &str)] = &[
    (
        "bitmap_pair/slash16/50pct",
        "take the first free + clear it",
    ),
    (
        "bitmap_pair/slash16/99pct",
        "take the first free + clear it",
    ),
    ("bitmap_pair/slash8/50pct", "take the first free + clear it"),
    ("bitmap_pair/slash8/99pct", "take the first free + clear it"),
    (
        "apply_pair/slash16/50pct",
        "apply Allocate + apply Release, with owners",
    ),
    (
        "apply_pair/slash16/99pct",
        "apply Allocate + apply Release, with owners",
    ),
    (
        "apply_pair/slash8/50pct",
        "apply Allocate + apply Release, with owners",
    ),
    (
        "apply_pair/slash8/99pct",
        "apply Allocate + apply Release, with owners",
    ),
    (
        "fill/ipv6_slash64",
        "apply Allocate of the next address of a /64, with an owner",
    ),
    (
        "fill/slash16",
        "apply Allocate of the next address of a /16, one owner",
    ),
];

#[inline(never)]
fn measured_bitmap_pairs(b: &mut Bitmap, n: u64) {
    for _ in 0..n {
        let i = b.take_first_in(0, u128::MAX).expect("a free bit");
        b.clear(black_box(i));
    }
}

#[inline(never)]
fn measured_apply_pairs(s: &mut State, alloc: &Command, release: &Command, n: u64) {
    for _ in 0..n {
        black_box(s.apply(alloc).expect("allocate"));
        black_box(s.apply(release).expect("release"));
    }
}

#[inline(never)]
fn measured_apply_all(s: &mut State, cmds: &[Command]) {
    for c in cmds {
        black_box(s.apply(c).expect("allocate"));
    }
}

fn pool(cidr: &str) -> (State, allocator_core::PoolId) {
    let mut s = State::default();
    s.apply(&cmd(Op::RequestPool {
        spec: allocator_core::PoolSpec {
            space: "global".into(),
            subnet: Some(cidr.parse().expect("cidr")),
            ..Default::default()
        },
        holder: "icount".into(),
    }))
    .expect("pool");
    let id = s.pools()[0].id.clone();
    (s, id)
}

fn run(case: &str, n: u64) -> Result<(), String> {
    let parts: Vec<&str> = case.split('/').collect();
    let prefix = |p: &str| match p {
        "slash16" => Ok(16u32),
        "slash8" => Ok(8),
        other => Err(format!("unknown size {other} (slash16 or slash8)")),
    };
    let permille = |p: &str| match p {
        "50pct" => Ok(500u64),
        "99pct" => Ok(990),
        other => Err(format!("unknown fill {other} (50pct or 99pct)")),
    };
    match parts.as_slice() {
        ["bitmap_pair", size, fill] => {
            let bits = 32 - prefix(size)?;
            let size = 1u64 << bits;
            let mut b = Bitmap::new(bits);
            b.set(0);
            b.set(u128::from(size - 1));
            for o in scattered(size, permille(fill)?, 42) {
                b.set(u128::from(o));
            }
            measured_bitmap_pairs(&mut b, n);
        }
        ["apply_pair", size, fill] => {
            let prefix = prefix(size)?;
            let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
            let (mut s, id) = pool(&format!("10.0.0.0/{prefix}"));
            for o in scattered(1u64 << (32 - prefix), permille(fill)?, 42) {
                s.apply(&cmd(Op::Allocate {
                    pool: id.clone(),
                    addr: Some(IpAddr::V4(Ipv4Addr::from(base + o as u32))),
                    owner: Owner::new("host-1", endpoint_name(o)),
                    order: Order::Lowest,
                }))
                .map_err(|e| e.to_string())?;
            }
            let alloc = cmd(Op::Allocate {
                pool: id.clone(),
                addr: None,
                owner: Owner::new("host-2", endpoint_name(u64::MAX)),
                order: Order::Lowest,
            });
            // The address the pair will take and give back, released once so that its
            // cooldown does not apply (as in the criterion bench).
            let first = match s.apply(&alloc).map_err(|e| e.to_string())? {
                allocator_core::Outcome::Allocated { addr, .. } => addr.addr(),
                o => return Err(format!("unexpected {o:?}")),
            };
            let release = cmd(Op::Release {
                pool: id,
                addr: first,
                host: "host-2".into(),
                force: false,
            });
            s.apply(&release).map_err(|e| e.to_string())?;
            measured_apply_pairs(&mut s, &alloc, &release, n);
        }
        ["fill", "ipv6_slash64"] => {
            let (mut s, id) = pool("fd00::/64");
            let cmds: Vec<Command> = (0..n)
                .map(|i| {
                    cmd(Op::Allocate {
                        pool: id.clone(),
                        addr: None,
                        owner: Owner::new("host-1", endpoint_name(i)),
                        order: Order::Lowest,
                    })
                })
                .collect();
            measured_apply_all(&mut s, &cmds);
        }
        ["fill", "slash16"] => {
            let (mut s, id) = pool("10.0.0.0/16");
            let n = n.min(65_534);
            let cmds: Vec<Command> = (0..n)
                .map(|_| {
                    cmd(Op::Allocate {
                        pool: id.clone(),
                        addr: None,
                        owner: Owner::new("host-1", ""),
                        order: Order::Lowest,
                    })
                })
                .collect();
            measured_apply_all(&mut s, &cmds);
        }
        _ => return Err(format!("unknown case {case:?} (icount --list)")),
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [l] if l == "--list" => {
            for (name, unit) in CASES {
                println!("{name}\t{unit}");
            }
        }
        [case, n] => {
            let Ok(n) = n.parse::<u64>() else {
                eprintln!("error: N must be a whole number, not {n:?}");
                std::process::exit(2);
            };
            if let Err(e) = run(case, n) {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
        _ => {
            eprintln!("usage: icount CASE N | icount --list");
            std::process::exit(2);
        }
    }
}

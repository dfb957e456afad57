//! Instruction counts of the core's hot paths, for `scripts/icount.sh`, which runs this under
//! valgrind's callgrind collecting only inside the `measured_*` functions (the setup — filling
//! a /8 — is not counted). Times differ between machines of the same kind (an AMD EPYC and an
//! Intel Xeon by almost 2× on the same case); instruction counts do not, so they are the
//! figures to drive down.
//!
//!   icount CASE N      runs CASE's setup, then its measured part N times (or over N addresses)
//!   icount --list      the cases

use std::hint::black_box;

use allocator_core::bitmap::Bitmap;
use allocator_core::{Command, Op, Order, Owner, State};
use benches::{cmd, filled_bitmap, filled_pair, next_address_commands, pool_state};

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
            let mut b = filled_bitmap(32 - prefix(size)?, permille(fill)?);
            measured_bitmap_pairs(&mut b, n);
        }
        ["apply_pair", size, fill] => {
            let (mut s, alloc, release) = filled_pair(prefix(size)?, permille(fill)?);
            measured_apply_pairs(&mut s, &alloc, &release, n);
        }
        ["fill", "ipv6_slash64"] => {
            let (mut s, id) = pool_state("fd00::/64");
            measured_apply_all(&mut s, &next_address_commands(&id, n));
        }
        ["fill", "slash16"] => {
            let (mut s, id) = pool_state("10.0.0.0/16");
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

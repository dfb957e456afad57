//! Helpers shared by raftipam's criterion benchmarks (`benches/`): deterministic fill patterns
//! and a heap-counting allocator, so that every figure in the README can be reproduced with
//! `cargo bench -p benches`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A global allocator that counts live heap bytes, to measure what a structure holds.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
// A counting allocator must implement the unsafe trait; it only forwards to `System`.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Live heap bytes right now (only meaningful when [`Counting`] is the global allocator).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// A small deterministic generator (splitmix64) so fill patterns are the same on every run.
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random index below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Offsets `1..size-1` (the usable ones of an IPv4 subnet) to fill so that `fill_permille`
/// of them are taken in a scattered pattern: a shuffled selection, never a solid prefix.
pub fn scattered(size: u64, fill_permille: u64, seed: u64) -> Vec<u64> {
    let mut rng = SplitMix(seed);
    let mut all: Vec<u64> = (1..size - 1).collect();
    let take = (all.len() as u64 * fill_permille / 1000) as usize;
    // Partial Fisher-Yates: the first `take` entries become a uniform random subset.
    for i in 0..take {
        let j = i + rng.below((all.len() - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(take);
    all
}

/// An endpoint name of exactly 32 characters.
pub fn endpoint_name(i: u64) -> String {
    format!("container-{i:022}")
}

/// Three raft-node nodes in this process on loopback (RocksDB in `dir`, syncs on), joined into
/// one cluster, and a client of all three.
pub async fn three_nodes(dir: &std::path::Path) -> (Vec<raft_node::Node>, raft_node::Client) {
    use raft_node::{AdminCommand, Client, Node, NodeConfig};
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let cfg = NodeConfig::new(
            id,
            "127.0.0.1:0".parse().expect("addr"),
            dir.join(format!("n{id}")),
        );
        nodes.push(Node::start(cfg).await.expect("start"));
    }
    nodes[0].init().await.expect("init");
    let client = Client::connect(nodes.iter().map(|n| n.addr().to_string())).expect("client");
    for n in &nodes[1..] {
        let add = AdminCommand::AddNode {
            id: n.id(),
            addr: n.addr().to_string(),
        };
        client.admin(add).await.expect("add node");
    }
    (nodes, client)
}

/// A command stamped at a fixed time (benchmarks never depend on the clock).
pub fn cmd(op: allocator_core::Op) -> allocator_core::Command {
    allocator_core::Command {
        at_ms: 1_700_000_000_000,
        op,
    }
}

/// A state with one pool of `cidr` in the global space, and its id.
pub fn pool_state(cidr: &str) -> (allocator_core::State, allocator_core::PoolId) {
    use allocator_core::{Op, PoolSpec, State};
    let mut s = State::default();
    let spec = {
        let mut spec = PoolSpec::default();
        spec.space = "global".into();
        spec.subnet = Some(cidr.parse().expect("a CIDR"));
        spec
    };
    s.apply(&cmd(Op::RequestPool {
        spec,
        holder: "bench".into(),
    }))
    .expect("the pool");
    let id = s.pools()[0].id.clone();
    (s, id)
}

/// `n` allocations of the next free address of `pool`, each with its own 32-character owner
/// (`host-1`, [`endpoint_name`]).
pub fn next_address_commands(
    pool: &allocator_core::PoolId,
    n: u64,
) -> Vec<allocator_core::Command> {
    use allocator_core::{Op, Order, Owner};
    (0..n)
        .map(|i| {
            cmd(Op::Allocate {
                pool: pool.clone(),
                addr: None,
                owner: Owner::new("host-1", endpoint_name(i)),
                order: Order::Lowest,
            })
        })
        .collect()
}

/// An IPv4 pool of `10.0.0.0/prefix` filled to `permille`‰ (scattered, seed 42, owners of
/// their own), and an allocate + release pair on it: the allocation of the lowest free address
/// by a new owner, and its release (applied once, so its cooldown does not apply).
pub fn filled_pair(
    prefix: u32,
    permille: u64,
) -> (
    allocator_core::State,
    allocator_core::Command,
    allocator_core::Command,
) {
    use allocator_core::{Op, Order, Outcome, Owner};
    use std::net::{IpAddr, Ipv4Addr};
    let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
    let (mut s, id) = pool_state(&format!("10.0.0.0/{prefix}"));
    for o in scattered(1u64 << (32 - prefix), permille, 42) {
        s.apply(&cmd(Op::Allocate {
            pool: id.clone(),
            addr: Some(IpAddr::V4(Ipv4Addr::from(base + o as u32))),
            owner: Owner::new("host-1", endpoint_name(o)),
            order: Order::Lowest,
        }))
        .expect("fill");
    }
    let alloc = cmd(Op::Allocate {
        pool: id.clone(),
        addr: None,
        owner: Owner::new("host-2", endpoint_name(u64::MAX)),
        order: Order::Lowest,
    });
    let first_free = match s.apply(&alloc).expect("allocate") {
        Outcome::Allocated { addr, .. } => addr.addr(),
        o => panic!("allocating gave {o:?}"),
    };
    let release = cmd(Op::Release {
        pool: id,
        addr: first_free,
        host: "host-2".into(),
        force: false,
    });
    s.apply(&release).expect("release");
    (s, alloc, release)
}

/// A bitmap of `bits` bits with its first and last set (network and broadcast) and
/// `permille`‰ of the rest (scattered, seed 42).
pub fn filled_bitmap(bits: u32, permille: u64) -> allocator_core::bitmap::Bitmap {
    let size = 1u64 << bits;
    let mut b = allocator_core::bitmap::Bitmap::new(bits);
    b.set(0);
    b.set(u128::from(size - 1));
    for o in scattered(size, permille, 42) {
        b.set(u128::from(o));
    }
    b
}

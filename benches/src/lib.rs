//! Helpers shared by raftipam's criterion benchmarks (`benches/`): deterministic fill patterns
//! and a heap-counting allocator, so that every figure in the README can be reproduced with
//! `cargo bench -p benches`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A global allocator that counts live heap bytes, to measure what a structure holds.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
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

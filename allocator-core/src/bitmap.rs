//! A hierarchical, lazily allocated bitmap over `2^bits` addresses (0 ≤ bits ≤ 120).
//!
//! Why not a flat bit vector: a /64 has 2^64 addresses, and a flat vector scanned for the first
//! zero costs time in proportion to how full it is. Here the addresses form a 64-ary tree whose
//! leaves are blocks of 4096 bits. Every inner node keeps one word, `nonfull`, with a bit per
//! child that still has a free address; a block keeps the same word over its 64 leaf words. So
//! "lowest free at or after `from`" is one descent plus at most one sibling hop per level:
//! O(depth) = O(bits / 6), whatever the fill.
//!
//! A child that was never touched is absent and means "all free": a fresh /64 is a root node and
//! nothing else, and memory follows what is set, not the size of the space.
//!
//! A set bit means "not available" (allocated, reserved or cooling — the bitmap does not care).

use std::collections::{BTreeMap, BTreeSet};

use crate::limits::MAX_BITS;

const BLOCK_BITS: u32 = 12; // 4096 addresses per block
const FANOUT_BITS: u32 = 6; // 64 children per inner node
const ALL: u64 = u64::MAX;

#[derive(Clone)]
struct Block {
    nonfull: u64,
    words: [u64; 64],
}

#[derive(Clone)]
struct Inner {
    nonfull: u64,
    children: [Option<Node>; 64],
}

#[derive(Clone)]
enum Node {
    Inner(Box<Inner>),
    Block(Box<Block>),
}

/// A set of used offsets in `0..2^bits`, with fast "first free at or after".
#[derive(Clone)]
pub struct Bitmap {
    bits: u32,
    root: Root,
    used: u128,
}

/// Spaces of up to 2^24 addresses are one tree. Larger ones (IPv6) are a sparse, ordered map
/// of 2^24-address trees, so a /64 costs three levels per operation instead of nine, plus a
/// set of the trees that are full.
#[derive(Clone)]
enum Root {
    Single {
        span: u32,
        node: Node,
    },
    Sparse {
        tops: BTreeMap<u128, Node>,
        full: BTreeSet<u128>,
        n_tops: u128,
    },
}

const TOP_BITS: u32 = 24;
const TOP_MASK: u128 = (1 << TOP_BITS) - 1;

impl std::fmt::Debug for Bitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitmap")
            .field("bits", &self.bits)
            .field("used", &self.used)
            .finish()
    }
}

fn mask_low(n: u32) -> u64 {
    if n >= 64 {
        ALL
    } else {
        (1u64 << n) - 1
    }
}

/// Bits strictly above position `i` in a word.
fn above(i: u32) -> u64 {
    if i >= 63 {
        0
    } else {
        ALL << (i + 1)
    }
}

impl Block {
    fn empty() -> Box<Block> {
        Box::new(Block {
            nonfull: ALL,
            words: [0; 64],
        })
    }

    /// A root block over fewer than 4096 addresses: positions past the end are marked used.
    fn partial(bits: u32) -> Box<Block> {
        let mut b = Block::empty();
        let valid = 1u64 << bits; // addresses
        for (w, word) in b.words.iter_mut().enumerate() {
            let start = (w as u64) * 64;
            if start >= valid {
                *word = ALL;
            } else if valid - start < 64 {
                *word = !mask_low((valid - start) as u32);
            }
        }
        b.nonfull = 0;
        for (w, word) in b.words.iter().enumerate() {
            if *word != ALL {
                b.nonfull |= 1 << w;
            }
        }
        b
    }

    fn find_from(&self, from: u32) -> Option<u32> {
        let w = from >> 6;
        let m = !self.words[w as usize] & (ALL << (from & 63));
        if m != 0 {
            return Some((w << 6) | m.trailing_zeros());
        }
        let rest = self.nonfull & above(w);
        if rest == 0 {
            return None;
        }
        let w2 = rest.trailing_zeros();
        Some((w2 << 6) | (!self.words[w2 as usize]).trailing_zeros())
    }

    /// Finds the lowest clear bit ≥ `from`, sets it; returns it and whether the block is full.
    fn take_from(&mut self, from: u32) -> Option<(u32, bool)> {
        let i = self.find_from(from)?;
        let (_, full) = self.set(i);
        Some((i, full))
    }

    /// Sets a bit; returns (was it clear, is the block full now).
    fn set(&mut self, i: u32) -> (bool, bool) {
        let w = (i >> 6) as usize;
        let bit = 1u64 << (i & 63);
        let was_clear = self.words[w] & bit == 0;
        self.words[w] |= bit;
        if self.words[w] == ALL {
            self.nonfull &= !(1 << w);
        }
        (was_clear, self.nonfull == 0)
    }

    /// Clears a bit; returns whether it was set.
    fn clear(&mut self, i: u32) -> bool {
        let w = (i >> 6) as usize;
        let bit = 1u64 << (i & 63);
        let was_set = self.words[w] & bit != 0;
        self.words[w] &= !bit;
        self.nonfull |= 1 << w;
        was_set
    }

    fn get(&self, i: u32) -> bool {
        self.words[(i >> 6) as usize] & (1u64 << (i & 63)) != 0
    }

    /// Lowest set bit ≥ `from`.
    fn find_set_from(&self, from: u32) -> Option<u32> {
        let first = (from >> 6) as usize;
        let mut m = self.words[first] & (ALL << (from & 63));
        for w in first..64 {
            if w > first {
                m = self.words[w];
            }
            if m != 0 {
                return Some(((w as u32) << 6) | m.trailing_zeros());
            }
        }
        None
    }
}

impl Inner {
    fn empty(nonfull: u64) -> Box<Inner> {
        Box::new(Inner {
            nonfull,
            children: std::array::from_fn(|_| None),
        })
    }
}

impl Node {
    /// Lowest clear offset ≥ `from` inside this node; `span` = bits covered by this node.
    fn find_from(&self, span: u32, from: u128) -> Option<u128> {
        match self {
            Node::Block(b) => b.find_from(from as u32).map(u128::from),
            Node::Inner(n) => {
                let child_span = span - FANOUT_BITS;
                let c = (from >> child_span) as u32;
                if n.nonfull & (1 << c) != 0 {
                    let local = from & ((1u128 << child_span) - 1);
                    match &n.children[c as usize] {
                        None => return Some(from),
                        Some(child) => {
                            if let Some(x) = child.find_from(child_span, local) {
                                return Some((u128::from(c) << child_span) | x);
                            }
                        }
                    }
                }
                let rest = n.nonfull & above(c);
                if rest == 0 {
                    return None;
                }
                let c2 = rest.trailing_zeros();
                let base = u128::from(c2) << child_span;
                match &n.children[c2 as usize] {
                    None => Some(base),
                    // A child whose nonfull bit is set has a free address: this cannot miss.
                    Some(child) => child.find_from(child_span, 0).map(|x| base | x),
                }
            }
        }
    }

    fn new_child(child_span: u32) -> Node {
        if child_span == BLOCK_BITS {
            Node::Block(Block::empty())
        } else {
            Node::Inner(Inner::empty(ALL))
        }
    }

    /// Finds the lowest clear offset ≥ `from` and sets it, in one descent. Returns it and
    /// whether this node is full now.
    fn take_from(&mut self, span: u32, from: u128) -> Option<(u128, bool)> {
        match self {
            Node::Block(b) => b
                .take_from(from as u32)
                .map(|(i, full)| (u128::from(i), full)),
            Node::Inner(n) => {
                let child_span = span - FANOUT_BITS;
                let c = (from >> child_span) as u32;
                let mut found = None;
                if n.nonfull & (1 << c) != 0 {
                    let local = from & ((1u128 << child_span) - 1);
                    let child =
                        n.children[c as usize].get_or_insert_with(|| Node::new_child(child_span));
                    found = child
                        .take_from(child_span, local)
                        .map(|(x, full)| (c, x, full));
                }
                if found.is_none() {
                    let rest = n.nonfull & above(c);
                    if rest == 0 {
                        return None;
                    }
                    let c2 = rest.trailing_zeros();
                    let child =
                        n.children[c2 as usize].get_or_insert_with(|| Node::new_child(child_span));
                    found = child
                        .take_from(child_span, 0)
                        .map(|(x, full)| (c2, x, full));
                }
                let (c, x, child_full) = found?;
                if child_full {
                    n.nonfull &= !(1 << c);
                }
                Some(((u128::from(c) << child_span) | x, n.nonfull == 0))
            }
        }
    }

    /// Sets a bit; returns (was it clear, is this node full now).
    fn set(&mut self, span: u32, i: u128) -> (bool, bool) {
        match self {
            Node::Block(b) => b.set(i as u32),
            Node::Inner(n) => {
                let child_span = span - FANOUT_BITS;
                let c = (i >> child_span) as usize;
                let local = i & ((1u128 << child_span) - 1);
                let child = n.children[c].get_or_insert_with(|| Node::new_child(child_span));
                let (was_clear, child_full) = child.set(child_span, local);
                if child_full {
                    n.nonfull &= !(1 << c);
                }
                (was_clear, n.nonfull == 0)
            }
        }
    }

    /// Clears a bit; returns whether it was set.
    fn clear(&mut self, span: u32, i: u128) -> bool {
        match self {
            Node::Block(b) => b.clear(i as u32),
            Node::Inner(n) => {
                let child_span = span - FANOUT_BITS;
                let c = (i >> child_span) as usize;
                let local = i & ((1u128 << child_span) - 1);
                match &mut n.children[c] {
                    None => false,
                    Some(child) => {
                        let was_set = child.clear(child_span, local);
                        if was_set {
                            n.nonfull |= 1 << c;
                        }
                        was_set
                    }
                }
            }
        }
    }

    /// Lowest set offset ≥ `from` inside this node. Absent children hold nothing, so the
    /// walk visits only children that were ever touched.
    fn find_set_from(&self, span: u32, from: u128) -> Option<u128> {
        match self {
            Node::Block(b) => b.find_set_from(from as u32).map(u128::from),
            Node::Inner(n) => {
                let child_span = span - FANOUT_BITS;
                let first = (from >> child_span) as usize;
                for c in first..64 {
                    let Some(child) = &n.children[c] else {
                        continue;
                    };
                    let local = if c == first {
                        from & ((1u128 << child_span) - 1)
                    } else {
                        0
                    };
                    if let Some(x) = child.find_set_from(child_span, local) {
                        return Some(((c as u128) << child_span) | x);
                    }
                }
                None
            }
        }
    }

    fn get(&self, span: u32, i: u128) -> bool {
        match self {
            Node::Block(b) => b.get(i as u32),
            Node::Inner(n) => {
                let child_span = span - FANOUT_BITS;
                let c = (i >> child_span) as usize;
                match &n.children[c] {
                    None => false,
                    Some(child) => child.get(child_span, i & ((1u128 << child_span) - 1)),
                }
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Node::Block(_) => std::mem::size_of::<Block>(),
            Node::Inner(n) => {
                std::mem::size_of::<Inner>()
                    + n.children
                        .iter()
                        .flatten()
                        .map(Node::heap_bytes)
                        .sum::<usize>()
            }
        }
    }

    /// Checks the summaries against the leaves; returns the number of set bits.
    fn check(&self, span: u32) -> Result<u128, String> {
        match self {
            Node::Block(b) => {
                for (w, word) in b.words.iter().enumerate() {
                    if (b.nonfull >> w) & 1 != u64::from(*word != ALL) {
                        return Err(format!("block summary bit {w} disagrees with its word"));
                    }
                }
                Ok(b.words.iter().map(|w| u128::from(w.count_ones())).sum())
            }
            Node::Inner(n) => {
                let child_span = span - FANOUT_BITS;
                let mut total = 0;
                for (c, child) in n.children.iter().enumerate() {
                    if let Some(child) = child {
                        let used = child.check(child_span)?;
                        let full = used == 1u128 << child_span;
                        if (n.nonfull >> c) & 1 == u64::from(full) {
                            return Err(format!("inner summary bit {c} disagrees with its child"));
                        }
                        total += used;
                    }
                }
                Ok(total)
            }
        }
    }
}

impl Bitmap {
    /// An empty bitmap over `2^bits` offsets. Panics if `bits > MAX_BITS` (callers validate).
    pub fn new(bits: u32) -> Bitmap {
        assert!(bits <= MAX_BITS, "bitmap of 2^{bits} bits is too large");
        let root = if bits <= BLOCK_BITS {
            Root::Single {
                span: BLOCK_BITS,
                node: Node::Block(Block::partial(bits)),
            }
        } else if bits <= TOP_BITS {
            let levels = (bits - BLOCK_BITS).div_ceil(FANOUT_BITS);
            let span = BLOCK_BITS + levels * FANOUT_BITS;
            let valid_children = 1u32 << (bits - (span - FANOUT_BITS));
            Root::Single {
                span,
                node: Node::Inner(Inner::empty(mask_low(valid_children))),
            }
        } else {
            Root::Sparse {
                tops: BTreeMap::new(),
                full: BTreeSet::new(),
                n_tops: 1u128 << (bits - TOP_BITS),
            }
        };
        Bitmap {
            bits,
            root,
            used: 0,
        }
    }

    /// Number of offsets covered: `2^bits`.
    pub fn capacity(&self) -> u128 {
        1u128 << self.bits
    }

    /// Number of set offsets.
    pub fn count(&self) -> u128 {
        self.used
    }

    /// Lowest clear offset `≥ from`, if any.
    pub fn first_clear_from(&self, from: u128) -> Option<u128> {
        if from >= self.capacity() {
            return None;
        }
        match &self.root {
            Root::Single { span, node } => node.find_from(*span, from),
            Root::Sparse { tops, full, n_tops } => {
                let (mut k, mut local) = (from >> TOP_BITS, from & TOP_MASK);
                // Each turn returns or moves to a later top, skipping full ones: bounded by
                // the number of tops that exist.
                loop {
                    if k >= *n_tops {
                        return None;
                    }
                    if !full.contains(&k) {
                        match tops.get(&k) {
                            None => return Some((k << TOP_BITS) | local),
                            Some(n) => {
                                if let Some(x) = n.find_from(TOP_BITS, local) {
                                    return Some((k << TOP_BITS) | x);
                                }
                            }
                        }
                    }
                    k = next_not_full(full, k + 1);
                    local = 0;
                }
            }
        }
    }

    /// Lowest clear offset in `lo..=hi`, if any.
    pub fn first_clear_in(&self, lo: u128, hi: u128) -> Option<u128> {
        self.first_clear_from(lo).filter(|&x| x <= hi)
    }

    /// Finds the lowest clear offset in `lo..=hi` and sets it, in one pass.
    pub fn take_first_in(&mut self, lo: u128, hi: u128) -> Option<u128> {
        if lo >= self.capacity() {
            return None;
        }
        let got = match &mut self.root {
            Root::Single { span, node } => {
                // A find past `hi` must not set anything: only take when the range reaches
                // the end of the space, else find first and set after.
                if hi + 1 >= 1u128 << self.bits {
                    node.take_from(*span, lo).map(|(x, _)| x)
                } else {
                    let x = node.find_from(*span, lo).filter(|&x| x <= hi)?;
                    node.set(*span, x);
                    Some(x)
                }
            }
            Root::Sparse { tops, full, n_tops } => {
                let (mut k, mut local) = (lo >> TOP_BITS, lo & TOP_MASK);
                // As in `first_clear_from`, but taking in the same descent: bounded by the
                // number of tops that exist.
                loop {
                    if k >= *n_tops || (k << TOP_BITS) > hi {
                        return None;
                    }
                    if !full.contains(&k) {
                        let node = tops
                            .entry(k)
                            .or_insert_with(|| Node::Inner(Inner::empty(ALL)));
                        if let Some((x, now_full)) = node.take_from(TOP_BITS, local) {
                            let off = (k << TOP_BITS) | x;
                            if off > hi {
                                // Past the range: put it back.
                                node.clear(TOP_BITS, x);
                                return None;
                            }
                            if now_full {
                                full.insert(k);
                            }
                            break Some(off);
                        }
                    }
                    k = next_not_full(full, k + 1);
                    local = 0;
                }
            }
        };
        if got.is_some() {
            self.used += 1;
        }
        got
    }

    /// Lowest set offset `≥ from`, if any: the next address that is not free. Costs one
    /// descent plus the parts of the tree ever touched between `from` and the answer.
    pub fn first_set_from(&self, from: u128) -> Option<u128> {
        if from >= self.capacity() {
            return None;
        }
        match &self.root {
            // A root block smaller than 4096 marks the positions past the end as set.
            Root::Single { span, node } => node
                .find_set_from(*span, from)
                .filter(|&x| x < self.capacity()),
            Root::Sparse { tops, .. } => {
                let k0 = from >> TOP_BITS;
                tops.range(k0..).find_map(|(&k, node)| {
                    let local = if k == k0 { from & TOP_MASK } else { 0 };
                    node.find_set_from(TOP_BITS, local)
                        .map(|x| (k << TOP_BITS) | x)
                })
            }
        }
    }

    /// Whether `i` is set. Offsets past the end read as set.
    pub fn get(&self, i: u128) -> bool {
        if i >= self.capacity() {
            return true;
        }
        match &self.root {
            Root::Single { span, node } => node.get(*span, i),
            Root::Sparse { tops, .. } => tops
                .get(&(i >> TOP_BITS))
                .is_some_and(|n| n.get(TOP_BITS, i & TOP_MASK)),
        }
    }

    /// Sets `i`; returns whether it was clear. Offsets past the end are ignored (false).
    pub fn set(&mut self, i: u128) -> bool {
        if i >= self.capacity() {
            return false;
        }
        let was_clear = match &mut self.root {
            Root::Single { span, node } => node.set(*span, i).0,
            Root::Sparse { tops, full, .. } => {
                let k = i >> TOP_BITS;
                let n = tops
                    .entry(k)
                    .or_insert_with(|| Node::Inner(Inner::empty(ALL)));
                let (was_clear, now_full) = n.set(TOP_BITS, i & TOP_MASK);
                if now_full {
                    full.insert(k);
                }
                was_clear
            }
        };
        if was_clear {
            self.used += 1;
        }
        was_clear
    }

    /// Clears `i`; returns whether it was set.
    pub fn clear(&mut self, i: u128) -> bool {
        if i >= self.capacity() {
            return false;
        }
        let was_set = match &mut self.root {
            Root::Single { span, node } => node.clear(*span, i),
            Root::Sparse { tops, full, .. } => {
                let k = i >> TOP_BITS;
                let was_set = tops
                    .get_mut(&k)
                    .is_some_and(|n| n.clear(TOP_BITS, i & TOP_MASK));
                if was_set {
                    full.remove(&k);
                }
                was_set
            }
        };
        if was_set {
            self.used -= 1;
        }
        was_set
    }

    /// Bytes of heap memory the bitmap holds.
    pub fn heap_bytes(&self) -> usize {
        match &self.root {
            Root::Single { node, .. } => node.heap_bytes(),
            Root::Sparse { tops, full, .. } => {
                tops.values().map(|n| n.heap_bytes() + 48).sum::<usize>() + full.len() * 24
            }
        }
    }

    /// Verifies every summary word against the leaves and the population count.
    pub fn check(&self) -> Result<(), String> {
        let set = match &self.root {
            Root::Single { span, node } => {
                let mut set = node.check(*span)?;
                if self.bits < BLOCK_BITS {
                    // The padding past the end of a small root block is marked used.
                    set -= (1u128 << BLOCK_BITS) - (1u128 << self.bits);
                }
                set
            }
            Root::Sparse { tops, full, .. } => {
                let mut set = 0;
                for (k, n) in tops {
                    let used = n.check(TOP_BITS)?;
                    if (used == 1u128 << TOP_BITS) != full.contains(k) {
                        return Err(format!("top {k} fullness disagrees with the full set"));
                    }
                    set += used;
                }
                set
            }
        };
        if set != self.used {
            return Err(format!("bitmap counts {} used but holds {set}", self.used));
        }
        Ok(())
    }
}

/// The first `k' ≥ k` not in `full`.
fn next_not_full(full: &BTreeSet<u128>, mut k: u128) -> u128 {
    for &f in full.range(k..) {
        if f != k {
            break;
        }
        k += 1;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn fresh_bitmap_of_a_slash_64_is_small_and_empty() {
        let b = Bitmap::new(64);
        assert_eq!(b.first_clear_from(0), Some(0));
        assert!(b.heap_bytes() < 2048, "{}", b.heap_bytes());
    }

    #[test]
    fn next_set_skips_untouched_space_of_a_slash_64() {
        let mut b = Bitmap::new(64);
        assert_eq!(b.first_set_from(0), None);
        for i in [5u128, 1 << 30, (1 << 63) + 7] {
            b.set(i);
        }
        assert_eq!(b.first_set_from(0), Some(5));
        assert_eq!(b.first_set_from(6), Some(1 << 30));
        assert_eq!(b.first_set_from((1 << 30) + 1), Some((1 << 63) + 7));
        assert_eq!(b.first_set_from((1 << 63) + 8), None);
        b.clear(1 << 30);
        assert_eq!(b.first_set_from(6), Some((1 << 63) + 7));
        // A small root block marks the positions past its end as used: never reported.
        let b = Bitmap::new(3);
        assert_eq!(b.first_set_from(0), None);
    }

    #[test]
    fn tiny_bitmaps_hold_exactly_their_capacity() {
        for bits in 0..=13 {
            let mut b = Bitmap::new(bits);
            let cap = 1u128 << bits;
            for i in 0..cap {
                assert_eq!(b.first_clear_from(0), Some(i));
                assert!(b.set(i));
            }
            assert_eq!(b.first_clear_from(0), None, "bits={bits}");
            assert_eq!(b.count(), cap);
            b.check().unwrap();
        }
    }

    #[test]
    fn finds_the_hole_after_a_full_prefix_of_a_big_space() {
        let mut b = Bitmap::new(24);
        for i in 0..100_000 {
            b.set(i);
        }
        assert_eq!(b.first_clear_from(0), Some(100_000));
        b.clear(4097);
        assert_eq!(b.first_clear_from(0), Some(4097));
        assert_eq!(b.first_clear_from(4098), Some(100_000));
        b.check().unwrap();
    }

    #[test]
    fn high_offsets_of_a_slash_48_work() {
        let mut b = Bitmap::new(80);
        let top = (1u128 << 80) - 1;
        assert!(b.set(top));
        assert_eq!(b.first_clear_from(top), None);
        assert_eq!(b.first_clear_from(top - 1), Some(top - 1));
        assert!(!b.set(1u128 << 80));
        b.check().unwrap();
    }

    #[test]
    fn a_full_top_of_a_sparse_space_is_skipped() {
        let mut b = Bitmap::new(26);
        let top = 1u128 << 24;
        for i in 0..top {
            assert_eq!(b.take_first_in(0, u128::MAX), Some(i));
        }
        assert_eq!(b.first_clear_from(0), Some(top));
        assert_eq!(b.first_clear_from(5), Some(top));
        b.set(top);
        assert_eq!(b.first_clear_from(0), Some(top + 1));
        b.clear(7);
        assert_eq!(b.first_clear_from(0), Some(7));
        b.check().unwrap();
    }

    proptest! {
        #[test]
        fn agrees_with_a_btreeset(bits in prop_oneof![0u32..20, 24u32..27], ops in proptest::collection::vec((any::<bool>(), any::<u32>(), any::<u32>()), 1..300)) {
            let mut b = Bitmap::new(bits);
            let mut m = BTreeSet::new();
            let cap = 1u128 << bits;
            for (set, x, from) in ops {
                let i = u128::from(x) % (cap + 2);
                if set {
                    prop_assert_eq!(b.set(i), i < cap && m.insert(i));
                } else {
                    prop_assert_eq!(b.clear(i), m.remove(&i));
                }
                if x % 7 == 0 {
                    let lo = u128::from(from) % (cap + 1);
                    let hi = lo + u128::from(x >> 8) % 70;
                    let want = (lo..=hi.min(cap.saturating_sub(1))).find(|x| !m.contains(x));
                    prop_assert_eq!(b.take_first_in(lo, hi), want);
                    if let Some(w) = want {
                        m.insert(w);
                    }
                }
                let from = u128::from(from) % (cap + 1);
                let want = (from..cap).find(|x| !m.contains(x));
                prop_assert_eq!(b.first_clear_from(from), want);
                prop_assert_eq!(b.first_set_from(from), m.range(from..).next().copied());
                prop_assert_eq!(b.count(), m.len() as u128);
            }
            prop_assert!(b.check().is_ok());
        }
    }
}

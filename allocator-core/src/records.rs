//! Who holds each allocated address of one subnet, packed to stay near 64 bytes per address.
//!
//! Why this shape: a /64 may hold millions of allocations, each with a host, an endpoint name,
//! a sequence number and a time. A `HashMap<u128, Owner>` costs well over 100 bytes an entry.
//! Here:
//! - records are grouped by 64-address *word*; a word's records sit in one `Vec<Rec>` ordered
//!   by address, found by rank in the word's `alloc` mask (20 bytes a record);
//! - endpoint names live in one byte arena (their own length, no per-name allocation), compacted
//!   when more than half of it is garbage;
//! - the owner index (for idempotent repeats) is a hash table of 4-byte word slots: a lookup
//!   hashes `{host, endpoint}`, then checks the ≤ 64 records of the candidate slot.

use hashbrown::hash_table::HashTable;
use hashbrown::DefaultHashBuilder;
use std::hash::BuildHasher;

use crate::limits::{MAX_NAME_LEN, MAX_SEQ, MAX_WORD_SLOTS};

/// One allocation. Packed to 2-byte alignment: 18 bytes.
#[derive(Clone, Copy, Debug)]
#[repr(C, packed(2))]
pub(crate) struct Rec {
    seq_lo: u32,
    seq_hi: u16,
    pub at_s: u32,
    name_off: u32,
    pub host: u16,
    name_len: u16,
}

impl Rec {
    fn seq(&self) -> u64 {
        u64::from(self.seq_lo) | (u64::from(self.seq_hi) << 32)
    }
}

#[derive(Clone)]
struct WordRecs {
    word: u128,
    alloc: u64,
    recs: Vec<Rec>,
}

/// `{host, endpoint name}` and its hash in the owner index.
pub(crate) struct OwnerKey<'a> {
    host: u16,
    name: &'a [u8],
    hash: u64,
}

/// A record as read out, with its name borrowed from the arena.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecView<'a> {
    pub seq: u64,
    pub at_s: u32,
    pub host: u16,
    pub name: &'a [u8],
}

/// A slot number in an owner-index entry (20 bits, see [`entry`]).
const SLOT_MASK: u32 = (1 << 20) - 1;
// Every slot a subnet may have fits in an entry; every sequence number and name length in a
// record.
const _: () = assert!(MAX_WORD_SLOTS <= SLOT_MASK as usize + 1);
const _: () = assert!(MAX_SEQ < 1 << 48);
const _: () = assert!(MAX_NAME_LEN <= u16::MAX as usize);

/// An owner-index entry: `tag << 26 | slot << 6 | bit`. The 6-bit tag is more of the owner's
/// hash: a lookup that lands on another owner's entry is rejected without following it into
/// the records and the name arena (three dependent cache misses on a large pool).
fn entry(hash: u64, slot: u32, bit: u32) -> u32 {
    (((hash >> 40) as u32 & 63) << 26) | (slot << 6) | bit
}

fn tag_matches(e: u32, hash: u64) -> bool {
    e >> 26 == (hash >> 40) as u32 & 63
}

fn slot_bit(e: u32) -> (u32, u32) {
    ((e >> 6) & SLOT_MASK, e & 63)
}

#[derive(Clone, Default)]
pub(crate) struct Records {
    slots: Vec<WordRecs>,
    free_slots: Vec<u32>,
    by_word: HashTable<u32>,
    /// Entries (see [`entry`]), hashed by the record's `{host, name}`.
    owners: HashTable<u32>,
    arena: Vec<u8>,
    garbage: usize,
    len: u64,
    hasher: DefaultHashBuilder,
    /// The word and slot of the last insert or removal: consecutive operations mostly touch
    /// the same word (lowest-free fills a word before the next, a release often follows an
    /// allocation), so they skip the word index.
    hot: Option<(u128, u32)>,
}

fn rank(mask: u64, bit: u32) -> usize {
    (mask & ((1u64 << bit) - 1)).count_ones() as usize
}

fn name_of<'a>(arena: &'a [u8], r: &Rec) -> &'a [u8] {
    let off = r.name_off as usize;
    &arena[off..off + r.name_len as usize]
}

fn rec_at(slots: &[WordRecs], e: u32) -> &Rec {
    let (slot, bit) = slot_bit(e);
    let w = &slots[slot as usize];
    &w.recs[rank(w.alloc, bit)]
}

impl Records {
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether one more allocation fits (a limit of about four billion per subnet).
    pub fn has_room(&self) -> bool {
        self.slots.len() < MAX_WORD_SLOTS || !self.free_slots.is_empty()
    }

    fn slot_of(&self, word: u128) -> Option<u32> {
        if let Some((w, s)) = self.hot {
            if w == word {
                return Some(s);
            }
        }
        let slots = &self.slots;
        self.by_word
            .find(self.hasher.hash_one(word), |&s| {
                slots[s as usize].word == word
            })
            .copied()
    }

    pub fn get(&self, off: u128) -> Option<RecView<'_>> {
        let slot = self.slot_of(off >> 6)?;
        let w = &self.slots[slot as usize];
        let bit = (off & 63) as u32;
        if w.alloc & (1 << bit) == 0 {
            return None;
        }
        let r = &w.recs[rank(w.alloc, bit)];
        Some(RecView {
            seq: r.seq(),
            at_s: r.at_s,
            host: r.host,
            name: name_of(&self.arena, r),
        })
    }

    /// An owner with its hash, computed once for a lookup and the insert that may follow.
    pub fn owner_key<'a>(&self, host: u16, name: &'a [u8]) -> OwnerKey<'a> {
        OwnerKey {
            host,
            name,
            hash: self.hasher.hash_one((host, name)),
        }
    }

    /// The offset held by `{host, name}` (empty names are not indexed).
    pub fn find_owner(&self, key: &OwnerKey<'_>) -> Option<u128> {
        let (host, name, h) = (key.host, key.name, key.hash);
        if name.is_empty() {
            return None;
        }
        let (slots, arena) = (&self.slots, &self.arena);
        let e = self.owners.find(h, |&e| {
            tag_matches(e, h) && {
                let r = rec_at(slots, e);
                r.host == host && name_of(arena, r) == name
            }
        })?;
        let (slot, bit) = slot_bit(*e);
        Some((slots[slot as usize].word << 6) | u128::from(bit))
    }

    fn new_slot(&mut self, word: u128) -> u32 {
        let w = WordRecs {
            word,
            alloc: 0,
            recs: Vec::new(),
        };
        let s = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s as usize] = w;
                s
            }
            None => {
                self.slots.push(w);
                (self.slots.len() - 1) as u32
            }
        };
        let Records {
            slots,
            by_word,
            hasher,
            ..
        } = self;
        by_word.insert_unique(hasher.hash_one(word), s, |&x| {
            hasher.hash_one(slots[x as usize].word)
        });
        s
    }

    /// Records an allocation at an offset that has none. The caller has checked `has_room()`,
    /// that the name is at most `u16::MAX` bytes, and that `{host, name}` holds nothing else.
    pub fn insert(&mut self, off: u128, seq: u64, at_s: u32, key: &OwnerKey<'_>) {
        let (host, name) = (key.host, key.name);
        if !name.is_empty() && self.owners.len() == self.owners.capacity() {
            self.grow_owners();
        }
        let word = off >> 6;
        let bit = (off & 63) as u32;
        let slot = match self.slot_of(word) {
            Some(s) => s,
            None => self.new_slot(word),
        };
        self.hot = Some((word, slot));
        let name_off = self.arena.len() as u32;
        self.arena.extend_from_slice(name);
        debug_assert!(seq <= MAX_SEQ);
        let rec = Rec {
            seq_lo: seq as u32,
            seq_hi: (seq >> 32) as u16,
            at_s,
            name_off,
            host,
            name_len: name.len() as u16,
        };
        let w = &mut self.slots[slot as usize];
        debug_assert!(w.alloc & (1 << bit) == 0, "offset {off} already recorded");
        w.recs.insert(rank(w.alloc, bit), rec);
        w.alloc |= 1 << bit;
        if !name.is_empty() {
            let Records {
                slots,
                owners,
                hasher,
                arena,
                ..
            } = self;
            let h = key.hash;
            owners.insert_unique(h, entry(h, slot, bit), |&e| {
                let r = rec_at(slots, e);
                hasher.hash_one((r.host, name_of(arena, r)))
            });
        }
        self.len += 1;
    }

    /// Doubles the owner index by walking the records in memory order. Letting the hash table
    /// rehash itself would look every entry's name up at random: several cache misses per
    /// entry, which made growth the largest cost of filling a big pool.
    fn grow_owners(&mut self) {
        let mut grown = HashTable::with_capacity((self.owners.capacity() * 2).max(64));
        for (s, w) in self.slots.iter().enumerate() {
            let mut mask = w.alloc;
            for r in &w.recs {
                let bit = mask.trailing_zeros();
                mask &= mask - 1;
                if r.name_len > 0 {
                    let h = self.hasher.hash_one((r.host, name_of(&self.arena, r)));
                    // Capacity is reserved: the rehash closure is never called.
                    grown.insert_unique(h, entry(h, s as u32, bit), |_| 0);
                }
            }
        }
        self.owners = grown;
    }

    /// Removes the record at `off` if `allow` accepts it; returns its sequence number and host,
    /// `Ok(None)` when nothing is recorded there, or `allow`'s refusal (nothing removed).
    pub fn remove_if<E>(
        &mut self,
        off: u128,
        allow: impl FnOnce(RecView<'_>) -> Result<(), E>,
    ) -> Result<Option<(u64, u16)>, E> {
        let word = off >> 6;
        let Some(slot) = self.slot_of(word) else {
            return Ok(None);
        };
        let bit = (off & 63) as u32;
        let w = &self.slots[slot as usize];
        if w.alloc & (1 << bit) == 0 {
            return Ok(None);
        }
        let r = w.recs[rank(w.alloc, bit)];
        let name = name_of(&self.arena, &r);
        allow(RecView {
            seq: r.seq(),
            at_s: r.at_s,
            host: r.host,
            name,
        })?;
        if r.name_len > 0 {
            let h = self.hasher.hash_one((r.host, name));
            let mine = entry(h, slot, bit);
            if let Ok(found) = self.owners.find_entry(h, |&e| e == mine) {
                found.remove();
            }
            self.garbage += r.name_len as usize;
        }
        let w = &mut self.slots[slot as usize];
        w.recs.remove(rank(w.alloc, bit));
        w.alloc &= !(1 << bit);
        if w.alloc == 0 {
            let word = w.word;
            w.recs = Vec::new();
            let slots = &self.slots;
            if let Ok(found) = self.by_word.find_entry(self.hasher.hash_one(word), |&s| {
                slots[s as usize].word == word
            }) {
                found.remove();
            }
            self.free_slots.push(slot);
            self.hot = None;
        } else {
            self.hot = Some((word, slot));
        }
        self.len -= 1;
        if self.garbage > 4096 && self.garbage * 2 > self.arena.len() {
            self.compact();
        }
        Ok(Some((r.seq(), r.host)))
    }

    /// Rewrites the name arena without the names of released records.
    fn compact(&mut self) {
        let mut arena = Vec::with_capacity(self.arena.len() - self.garbage);
        for w in &mut self.slots {
            for r in &mut w.recs {
                let off = arena.len() as u32;
                arena.extend_from_slice(name_of(&self.arena, r));
                r.name_off = off;
            }
        }
        self.arena = arena;
        self.garbage = 0;
    }

    /// Every record, in address order.
    pub fn iter_sorted(&self) -> Vec<(u128, RecView<'_>)> {
        let mut words: Vec<&WordRecs> = self.slots.iter().filter(|w| w.alloc != 0).collect();
        words.sort_unstable_by_key(|w| w.word);
        let mut out = Vec::with_capacity(self.len as usize);
        for w in words {
            let mut mask = w.alloc;
            for r in &w.recs {
                let bit = mask.trailing_zeros();
                mask &= mask - 1;
                let view = RecView {
                    seq: r.seq(),
                    at_s: r.at_s,
                    host: r.host,
                    name: name_of(&self.arena, r),
                };
                out.push(((w.word << 6) | u128::from(bit), view));
            }
        }
        out
    }

    /// At most `limit` records at offsets `from` and above, in offset order: a page of
    /// [`Records::iter_sorted`] without building the whole list (the cost is one pass over
    /// the words in use, a sort of those at or past `from`, and the page).
    pub fn iter_from(&self, from: u128, limit: usize) -> Vec<(u128, RecView<'_>)> {
        let first = from >> 6;
        let mut words: Vec<&WordRecs> = self
            .slots
            .iter()
            .filter(|w| w.alloc != 0 && w.word >= first)
            .collect();
        words.sort_unstable_by_key(|w| w.word);
        let mut out = Vec::with_capacity(limit.min(self.len as usize));
        for w in words {
            let mut mask = w.alloc;
            for r in &w.recs {
                let bit = mask.trailing_zeros();
                mask &= mask - 1;
                let off = (w.word << 6) | u128::from(bit);
                if off < from {
                    continue;
                }
                if out.len() >= limit {
                    return out;
                }
                out.push((
                    off,
                    RecView {
                        seq: r.seq(),
                        at_s: r.at_s,
                        host: r.host,
                        name: name_of(&self.arena, r),
                    },
                ));
            }
        }
        out
    }

    /// Bytes of heap memory held.
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<WordRecs>()
            + self
                .slots
                .iter()
                .map(|w| w.recs.capacity() * std::mem::size_of::<Rec>())
                .sum::<usize>()
            + self.free_slots.capacity() * 4
            + (self.by_word.capacity() + self.owners.capacity()) * 5
            + self.arena.capacity()
    }

    /// Checks the indexes against the records.
    pub fn check(&self) -> Result<(), String> {
        let mut n = 0u64;
        let mut named = 0usize;
        for (s, w) in self.slots.iter().enumerate() {
            if w.alloc == 0 {
                continue;
            }
            if w.recs.len() != w.alloc.count_ones() as usize {
                return Err(format!(
                    "word {} has {} records for {} bits",
                    w.word,
                    w.recs.len(),
                    w.alloc.count_ones()
                ));
            }
            if self.slot_of(w.word) != Some(s as u32) {
                return Err(format!("word {} is not indexed", w.word));
            }
            n += w.recs.len() as u64;
            let mut mask = w.alloc;
            for r in &w.recs {
                let bit = mask.trailing_zeros();
                mask &= mask - 1;
                let name = name_of(&self.arena, r);
                if !name.is_empty() {
                    named += 1;
                    let off = (w.word << 6) | u128::from(bit);
                    if self.find_owner(&self.owner_key(r.host, name)) != Some(off) {
                        return Err(format!("owner index misses the record at offset {off}"));
                    }
                }
            }
        }
        if n != self.len {
            return Err(format!("records count {n} but len says {}", self.len));
        }
        if named != self.owners.len() {
            return Err(format!(
                "owner index has {} entries for {named} named records",
                self.owners.len()
            ));
        }
        Ok(())
    }
}

//! An ordered map whose values live in a slab, for the state's subnets and pools.
//!
//! Why: every command looks its pool (and the pool its subnet) up. A `BTreeMap` keyed by a
//! `PoolId` compares strings and networks at every step; here a pool keeps its subnet's slot,
//! and the slot last reached through `get_mut` is tried first (a command usually names the pool
//! the previous one named). Iteration by reference is in key order, as a `BTreeMap`'s is.

use std::collections::BTreeMap;

#[derive(Clone)]
pub(crate) struct Keyed<K, V> {
    index: BTreeMap<K, usize>,
    slab: Vec<Option<(K, V)>>,
    free: Vec<usize>,
    /// The slot `get_mut` found last.
    hot: Option<usize>,
}

impl<K, V> Default for Keyed<K, V> {
    fn default() -> Self {
        Keyed {
            index: BTreeMap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            hot: None,
        }
    }
}

impl<K: Ord + Clone, V> Keyed<K, V> {
    pub fn id_of(&self, key: &K) -> Option<usize> {
        self.index.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.index.contains_key(key)
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.by_id(self.id_of(key)?)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let hot = self
            .hot
            .filter(|&h| matches!(&self.slab[h], Some((k, _)) if k == key));
        let id = match hot {
            Some(h) => h,
            None => self.id_of(key)?,
        };
        self.hot = Some(id);
        self.by_id_mut(id)
    }

    pub fn by_id(&self, id: usize) -> Option<&V> {
        self.slab.get(id)?.as_ref().map(|(_, v)| v)
    }

    pub fn by_id_mut(&mut self, id: usize) -> Option<&mut V> {
        self.slab.get_mut(id)?.as_mut().map(|(_, v)| v)
    }

    /// The value under `key`, created with `make` if absent; returns its slot too.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> (usize, &mut V) {
        let id = match self.id_of(&key) {
            Some(id) => id,
            None => {
                let entry = Some((key.clone(), make()));
                let id = match self.free.pop() {
                    Some(id) => {
                        self.slab[id] = entry;
                        id
                    }
                    None => {
                        self.slab.push(entry);
                        self.slab.len() - 1
                    }
                };
                self.index.insert(key, id);
                id
            }
        };
        let slot = &mut self.slab[id];
        // The slot was just found in the index or filled.
        let (_, v) = slot.as_mut().expect("an indexed slot is filled");
        (id, v)
    }

    /// Inserts a value under a new key; false (and nothing changes) if the key is there.
    pub fn insert_new(&mut self, key: K, value: V) -> bool {
        if self.index.contains_key(&key) {
            return false;
        }
        let mut value = Some(value);
        self.get_or_insert_with(key, || value.take().expect("called once"));
        true
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let id = self.index.remove(key)?;
        self.free.push(id);
        if self.hot == Some(id) {
            self.hot = None;
        }
        self.slab[id].take().map(|(_, v)| v)
    }

    /// In key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.index
            .iter()
            .filter_map(|(k, &id)| self.by_id(id).map(|v| (k, v)))
    }

    /// In key order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.index.keys()
    }

    /// The greatest key at or below `key`, and the least key above it.
    pub fn neighbours(&self, key: &K) -> (Option<&K>, Option<&K>) {
        use std::ops::Bound::{Excluded, Unbounded};
        (
            self.index.range(..=key).next_back().map(|(k, _)| k),
            self.index
                .range((Excluded(key), Unbounded))
                .next()
                .map(|(k, _)| k),
        )
    }

    /// In key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// In slot order (not key order).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.slab.iter_mut().flatten().map(|(k, v)| (&*k, v))
    }

    /// In slot order (not key order).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.iter_mut().map(|(_, v)| v)
    }
}

impl<'a, K: Ord + Clone, V> IntoIterator for &'a Keyed<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Box<dyn Iterator<Item = Self::Item> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

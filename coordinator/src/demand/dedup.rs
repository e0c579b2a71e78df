//! A bounded map that forgets its least recently used entries: the memory
//! behind webhook de-duplication (`Idempotency-Key`) and the tracker's
//! tombstones of jobs that left the pending state.
//!
//! Every operation is `O(log n)`; the map never holds more than its capacity,
//! so a flood of distinct keys costs bounded memory and merely pushes the
//! oldest keys out (a very late retry of an old event is then processed
//! again, which the tracker tolerates: events are idempotent there too).

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// A map of at most `capacity` entries, evicting the least recently used.
#[derive(Debug)]
pub struct LruMap<K, V> {
    capacity: usize,
    /// key -> (use stamp, value)
    entries: HashMap<K, (u64, V)>,
    /// use stamp -> key, oldest first
    order: BTreeMap<u64, K>,
    clock: u64,
}

impl<K: Hash + Eq + Clone, V> LruMap<K, V> {
    /// An empty map holding at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        LruMap {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
        }
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Most entries it will hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Whether `key` is present, without counting as a use.
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.contains_key(key)
    }

    /// The value of `key`, without counting as a use.
    pub fn peek<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(key).map(|(_, v)| v)
    }

    /// Marks `key` as just used; returns whether it was present.
    pub fn touch<Q>(&mut self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let stamp = self.tick();
        let Some((old, _)) = self.entries.get_mut(key) else {
            return false;
        };
        let previous = std::mem::replace(old, stamp);
        if let Some(k) = self.order.remove(&previous) {
            self.order.insert(stamp, k);
        }
        true
    }

    /// Inserts or replaces `key` (counting as a use) and returns the old
    /// value. Evicts the least recently used entry when full.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let stamp = self.tick();
        if let Some((old_stamp, old_value)) = self.entries.remove(&key) {
            self.order.remove(&old_stamp);
            self.order.insert(stamp, key.clone());
            self.entries.insert(key, (stamp, value));
            return Some(old_value);
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.order.insert(stamp, key.clone());
        self.entries.insert(key, (stamp, value));
        None
    }

    /// Removes `key` and returns its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (stamp, value) = self.entries.remove(key)?;
        self.order.remove(&stamp);
        Some(value)
    }
}

/// A bounded set of keys, evicting the least recently used.
#[derive(Debug)]
pub struct LruSet<K> {
    map: LruMap<K, ()>,
}

impl<K: Hash + Eq + Clone> LruSet<K> {
    /// An empty set of at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        LruSet {
            map: LruMap::new(capacity),
        }
    }

    /// Adds `key`; returns `false` (and refreshes it) when it was already
    /// there.
    pub fn insert(&mut self, key: K) -> bool {
        if self.map.touch(&key) {
            return false;
        }
        self.map.insert(key, ());
        true
    }

    /// Whether `key` is present.
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.contains(key)
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove<Q>(&mut self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.remove(key).is_some()
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used_key() {
        let mut set = LruSet::new(2);
        assert!(set.insert("a"));
        assert!(set.insert("b"));
        assert!(!set.insert("a"), "a duplicate is reported and refreshed");
        assert!(set.insert("c"), "c evicts b, the least recently used");
        assert!(set.contains("a"));
        assert!(!set.contains("b"));
        assert!(set.contains("c"));
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn never_grows_past_its_capacity() {
        let mut map = LruMap::new(100);
        for i in 0..10_000u64 {
            map.insert(i, i * 2);
        }
        assert_eq!(map.len(), 100);
        assert_eq!(map.peek(&9_999), Some(&19_998));
        assert!(!map.contains(&0));
        assert_eq!(map.order.len(), 100, "order index stays in step");
    }

    #[test]
    fn replace_and_remove_keep_the_index_consistent() {
        let mut map = LruMap::new(3);
        map.insert(1, "one");
        assert_eq!(map.insert(1, "uno"), Some("one"));
        assert_eq!(map.len(), 1);
        assert_eq!(map.remove(&1), Some("uno"));
        assert!(map.is_empty());
        assert!(map.order.is_empty());
        assert_eq!(LruMap::<u8, ()>::new(0).capacity(), 1);
    }
}

//! A small sorted map for the few named ports and metadata entries of an endpoint record.
//!
//! A `BTreeMap` allocates a whole B-tree leaf (eleven slots) even for one entry: about 300 B for
//! two ports and 540 B for one metadata pair. At 10,000 endpoints that was most of a record's
//! memory. `SmallMap` keeps the entries in one exactly sized, sorted boxed slice, serialises as
//! the same JSON object (keys in the same order), and offers the read API callers use.
//!
//! Kept rather than `litemap::LiteMap` (the same sorted-pairs idea, with serde), measured with
//! `cargo bench --bench vs_crates` and `examples/memory.rs` (fastest of 400 interleaved rounds
//! on 2 shared cores; medians within 2-4% of each other, p90 up to 3x the fastest from other
//! builds; three runs): collecting 4 strings 206-210 vs 213-220 ns, from JSON 283-295 vs
//! 284-297 ns, `get` 24-26 ns both, `==` 18-21 ns both, so time is a tie. Memory is not: LiteMap's Vec is 24 bytes inline instead
//! of 16 and keeps spare capacity, 163 B instead of 91 B for a record's two ports and 259 B
//! instead of 251 B for four metadata strings, about 80 B more per record (390 B today).

use std::borrow::Borrow;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Entries sorted by key, keys unique.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SmallMap<K, V> {
    entries: Box<[(K, V)]>,
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap {
            entries: Box::new([]),
        }
    }
}

impl<K: Ord, V> SmallMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value for `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.entries
            .binary_search_by(|(k, _)| k.borrow().cmp(key))
            .ok()
            .map(|i| &self.entries[i].1)
    }

    /// Is `key` present?
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`; returns the value it replaces. Rebuilds the slice: for building
    /// small maps, not for hot loops.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.entries.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                let mut v = std::mem::take(&mut self.entries).into_vec();
                v.insert(i, (key, value));
                self.entries = v.into_boxed_slice();
                None
            }
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries?
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// Keys in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// Values in key order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for SmallMap<K, V> {
    /// Later entries win over earlier ones with the same key, as with `BTreeMap`.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut v: Vec<(K, V)> = iter.into_iter().collect();
        // Stable: among equal keys the last inserted stays last. In place, one allocation:
        // a duplicate hands its value to the entry kept before it, then goes.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(&mut later.1, &mut kept.1);
            }
            same
        });
        SmallMap {
            entries: v.into_boxed_slice(),
        }
    }
}

impl<K: Ord, V, const N: usize> From<[(K, V); N]> for SmallMap<K, V> {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl<K: Ord, V> From<std::collections::BTreeMap<K, V>> for SmallMap<K, V> {
    fn from(map: std::collections::BTreeMap<K, V>) -> Self {
        SmallMap {
            entries: map.into_iter().collect::<Vec<_>>().into_boxed_slice(),
        }
    }
}

impl<'a, K, V> IntoIterator for &'a SmallMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl<K, V, Q> std::ops::Index<&Q> for SmallMap<K, V>
where
    K: Ord + Borrow<Q>,
    Q: Ord + ?Sized,
{
    type Output = V;
    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("no entry for key in SmallMap")
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for SmallMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl<K: Serialize, V: Serialize> Serialize for SmallMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.entries.len()))?;
        for (k, v) in self.entries.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de, K, V> Deserialize<'de> for SmallMap<K, V>
where
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_<K, V>(std::marker::PhantomData<(K, V)>);
        impl<'de, K, V> Visitor<'de> for V_<K, V>
        where
            K: Deserialize<'de> + Ord,
            V: Deserialize<'de>,
        {
            type Value = SmallMap<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::with_capacity(a.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = a.next_entry()? {
                    v.push(entry);
                }
                Ok(v.into_iter().collect())
            }
        }
        d.deserialize_map(V_(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// Same contents, lookups and JSON as a `BTreeMap` built from the same entries.
        #[test]
        fn behaves_like_a_btreemap(entries in prop::collection::vec(("[a-d]{0,2}", 0u16..5), 0..12),
                                   extra in prop::collection::vec(("[a-d]{0,2}", 0u16..5), 0..4)) {
            let mut small: SmallMap<String, u16> = entries.iter().cloned().collect();
            let mut tree: BTreeMap<String, u16> = entries.iter().cloned().collect();
            for (k, v) in extra {
                prop_assert_eq!(small.insert(k.clone(), v), tree.insert(k, v));
            }
            prop_assert_eq!(small.len(), tree.len());
            prop_assert!(small.iter().eq(tree.iter()));
            for k in ["", "a", "ab", "dd", "zz"] {
                prop_assert_eq!(small.get(k), tree.get(k));
            }
            let json = serde_json::to_string(&small).unwrap();
            prop_assert_eq!(&json, &serde_json::to_string(&tree).unwrap());
            let back: SmallMap<String, u16> = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, small);
        }
    }

    #[test]
    fn duplicate_keys_in_json_keep_the_last_value_like_a_btreemap() {
        let small: SmallMap<String, u16> = serde_json::from_str(r#"{"b":1,"a":2,"b":3}"#).unwrap();
        let tree: BTreeMap<String, u16> = serde_json::from_str(r#"{"b":1,"a":2,"b":3}"#).unwrap();
        assert!(small.iter().eq(tree.iter()));
        assert_eq!(small["b"], 3);
    }
}

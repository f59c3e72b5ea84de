//! A small sorted map for the few named ports and metadata entries of an endpoint record.
//!
//! A `BTreeMap` allocates a whole B-tree leaf (eleven slots) even for one entry: about 300 B for
//! two ports and 540 B for one metadata pair. At 10,000 endpoints that was most of a record's
//! memory. `SmallMap` keeps the entries in one exactly sized, sorted, shared slice (`Arc<[_]>`:
//! the ports and metadata of a deployment's pods are mostly equal, and their records hold one
//! copy), serialises as the same JSON object (keys in the same order), and offers the read API
//! callers use.
//!
//! Kept rather than `litemap::LiteMap` (the same sorted-pairs idea, with serde), measured with
//! `cargo bench --bench vs_crates` and `examples/memory.rs` (fastest of 400 interleaved rounds
//! on 2 shared cores; medians within 2-4% of each other, p90 up to 3x the fastest from other
//! builds; three runs): collecting 4 strings 206-210 vs 213-220 ns, from JSON 283-295 vs
//! 284-297 ns, `get` 24-26 ns both, `==` 18-21 ns both, so time is a tie. Memory is not: LiteMap's Vec is 24 bytes inline instead
//! of 16 and keeps spare capacity, 163 B instead of 91 B for a record's two ports and 259 B
//! instead of 251 B for four metadata strings, about 80 B more per record (390 B today).
//! (Measured with the boxed slice; the shared one adds 16 B of counters to an unshared copy,
//! 107 B for two ports, and costs nothing per record once shared.)

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Entries sorted by key, keys unique. The slice is shared: a clone costs a reference count,
/// so records whose ports or metadata are equal can hold one copy (see
/// [`SmallMap::share_if_equal`]); an empty map holds no allocation.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SmallMap<K, V> {
    entries: Option<Arc<[(K, V)]>>,
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap { entries: None }
    }
}

impl<K, V> SmallMap<K, V> {
    fn from_sorted(v: Vec<(K, V)>) -> Self {
        SmallMap {
            entries: (!v.is_empty()).then(|| Arc::from(v)),
        }
    }

    fn slice(&self) -> &[(K, V)] {
        self.entries.as_deref().unwrap_or(&[])
    }

    /// Takes `other`'s copy of the entries when they are equal, so the two share it.
    pub fn share_if_equal(&mut self, other: &Self)
    where
        K: PartialEq,
        V: PartialEq,
    {
        if let (Some(mine), Some(theirs)) = (&self.entries, &other.entries)
            && !Arc::ptr_eq(mine, theirs)
            && mine == theirs
        {
            self.entries = other.entries.clone();
        }
    }

    /// Do the two share one copy of their entries (or are both empty)?
    pub fn shares_with(&self, other: &Self) -> bool {
        match (&self.entries, &other.entries) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
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
        let entries = self.slice();
        entries
            .binary_search_by(|(k, _)| k.borrow().cmp(key))
            .ok()
            .map(|i| &entries[i].1)
    }

    /// Is `key` present?
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`; returns the value it replaces. Copies the slice: for building
    /// small maps, not for hot loops.
    pub fn insert(&mut self, key: K, value: V) -> Option<V>
    where
        K: Clone,
        V: Clone,
    {
        let mut v = self.slice().to_vec();
        let old = match v.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => Some(std::mem::replace(&mut v[i].1, value)),
            Err(i) => {
                v.insert(i, (key, value));
                None
            }
        };
        *self = Self::from_sorted(v);
        old
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.slice().len()
    }

    /// No entries?
    pub fn is_empty(&self) -> bool {
        self.slice().is_empty()
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&K, &V)> {
        self.slice().iter().map(|(k, v)| (k, v))
    }

    /// Keys in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &K> {
        self.slice().iter().map(|(k, _)| k)
    }

    /// Values in key order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &V> {
        self.slice().iter().map(|(_, v)| v)
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
        Self::from_sorted(v)
    }
}

impl<K: Ord, V, const N: usize> From<[(K, V); N]> for SmallMap<K, V> {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl<K: Ord, V> From<std::collections::BTreeMap<K, V>> for SmallMap<K, V> {
    fn from(map: std::collections::BTreeMap<K, V>) -> Self {
        Self::from_sorted(map.into_iter().collect())
    }
}

impl<'a, K, V> IntoIterator for &'a SmallMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.slice().iter().map(|(k, v)| (k, v))
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
            .entries(self.slice().iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl<K: Serialize, V: Serialize> Serialize for SmallMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.slice().len()))?;
        for (k, v) in self.slice().iter() {
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

    #[test]
    fn equal_maps_share_one_copy_and_a_change_copies_it() {
        let a: SmallMap<String, u16> = [("http".to_string(), 80), ("admin".to_string(), 9)].into();
        let mut b: SmallMap<String, u16> =
            [("admin".to_string(), 9), ("http".to_string(), 80)].into();
        let mut c: SmallMap<String, u16> = [("http".to_string(), 81)].into();
        assert!(!b.shares_with(&a));
        b.share_if_equal(&a);
        c.share_if_equal(&a);
        assert!(b.shares_with(&a), "equal maps share");
        assert!(!c.shares_with(&a), "different maps do not");
        assert_eq!(c["http"], 81);
        b.insert("http".to_string(), 8080);
        assert_eq!(
            (a["http"], b["http"]),
            (80, 8080),
            "a change leaves the other copy alone"
        );
        assert!(SmallMap::<String, u16>::new().shares_with(&SmallMap::new()));
    }
}

//! One copy of each distinct label set and port list among the indexed pods.
//!
//! The pods of a ReplicaSet have equal labels and ports; a copy per pod was about 150 bytes
//! and three allocations of each projection. The index passes every projection it keeps
//! through an [`Interner`], which swaps an equal value for the copy it holds. Copies nobody
//! else holds any more are dropped by a sweep that runs when the set has doubled since the
//! last one, so a sweep's cost is spread over the insertions that made it due. Pure, no I/O.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

use smol_str::SmolStr;

use crate::model::pod::{Labels, ports_heap_bytes};

/// A value whose clones share one copy.
pub(super) trait Shared: Clone + Eq + Hash {
    /// No one but the holder of this clone holds the copy.
    fn is_sole_copy(&self) -> bool;
    /// Heap bytes of the copy.
    fn heap_bytes(&self) -> usize;
}

impl Shared for Labels {
    fn is_sole_copy(&self) -> bool {
        Labels::is_sole_copy(self)
    }
    fn heap_bytes(&self) -> usize {
        Labels::heap_bytes(self)
    }
}

impl Shared for Arc<[(SmolStr, u16)]> {
    fn is_sole_copy(&self) -> bool {
        Arc::strong_count(self) == 1
    }
    fn heap_bytes(&self) -> usize {
        ports_heap_bytes(self)
    }
}

/// Sweeps wait until the set holds at least this many values.
const MIN_SWEEP: usize = 64;

/// The copies handed out, by value.
pub(super) struct Interner<T> {
    set: HashSet<T>,
    sweep_at: usize,
    /// Heap bytes of the copies in `set`, kept as it changes (read at every pod event).
    bytes: usize,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            set: HashSet::new(),
            sweep_at: MIN_SWEEP,
            bytes: 0,
        }
    }
}

impl<T: Shared> Interner<T> {
    /// Makes `value` the shared copy of what it equals.
    pub(super) fn intern(&mut self, value: &mut T) {
        if let Some(kept) = self.set.get(value) {
            *value = kept.clone();
            return;
        }
        if self.set.len() >= self.sweep_at {
            let mut freed = 0;
            self.set.retain(|v| {
                let keep = !v.is_sole_copy();
                freed += if keep { 0 } else { v.heap_bytes() };
                keep
            });
            self.bytes -= freed;
            self.sweep_at = (2 * self.set.len()).max(MIN_SWEEP);
        }
        self.bytes += value.heap_bytes();
        self.set.insert(value.clone());
    }

    /// Distinct values held (some may no longer be used, until the next sweep).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.set.len()
    }

    /// Heap bytes of the copies and of the set's table.
    pub(super) fn heap_bytes(&self) -> usize {
        self.set.capacity() * (std::mem::size_of::<T>() + 1) + self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().copied().collect()
    }

    #[test]
    fn equal_values_end_up_as_one_copy() {
        let mut interner = Interner::default();
        let mut a = labels(&[("app", "web"), ("track", "stable")]);
        let mut b = labels(&[("track", "stable"), ("app", "web")]);
        let mut c = labels(&[("app", "api")]);
        for l in [&mut a, &mut b, &mut c] {
            interner.intern(l);
        }
        assert!(a.shares_with(&b));
        assert!(!a.shares_with(&c));
        assert_eq!(interner.len(), 2);
        let mut ports: Interner<Arc<[(SmolStr, u16)]>> = Interner::default();
        let (mut p, mut q) = (
            Arc::from([("http".into(), 8080)]),
            Arc::from([("http".into(), 8080)]),
        );
        ports.intern(&mut p);
        ports.intern(&mut q);
        assert!(Arc::ptr_eq(&p, &q));
    }

    #[test]
    fn copies_no_one_holds_are_dropped_by_the_sweep_and_those_held_stay() {
        let mut interner = Interner::default();
        let mut kept = labels(&[("app", "kept")]);
        interner.intern(&mut kept);
        // Values interned and dropped at once: the set grows to the sweep threshold, then the
        // sweep drops them all but `kept`.
        for i in 0..MIN_SWEEP - 1 {
            interner.intern(&mut labels(&[("app", &format!("gone-{i}"))]));
        }
        assert_eq!(interner.len(), MIN_SWEEP);
        interner.intern(&mut labels(&[("app", "new")]));
        assert_eq!(interner.len(), 2, "kept and the new one");
        let mut again = labels(&[("app", "kept")]);
        interner.intern(&mut again);
        assert!(again.shares_with(&kept), "a held copy survives the sweep");
        let copies: usize = interner.set.iter().map(Shared::heap_bytes).sum();
        assert_eq!(
            interner.bytes, copies,
            "the running count is the sum of the copies"
        );
    }
}

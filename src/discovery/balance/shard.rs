//! Per-thread cursors: each thread steps through an order on a cache line of its own, so
//! threads picking at once from one balancer do not write to a shared line. Pure: a thread is
//! told its shard once, from a counter; no clocks, no I/O.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::CachePadded;

/// Cursors per balancer. Threads beyond this share cursors (still exactly, by atomic
/// increments), so it bounds the memory a balancer spends on them: 16 × 128 bytes.
pub const SHARDS: usize = 16;

/// Hands each thread its shard the first time it picks, round robin, so the first `SHARDS`
/// threads of a process never share a cursor.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// This thread's shard; `SHARDS` until it first picks.
thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(SHARDS) };
}

/// The shard this thread picks through.
#[inline]
pub fn this_thread() -> usize {
    SHARD.with(|shard| match shard.get() {
        SHARDS => {
            let k = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            shard.set(k);
            k
        }
        k => k,
    })
}

/// Puts this thread on shard `k`, for tests that need threads on distinct shards whatever
/// other tests' threads took before.
#[cfg(test)]
pub fn pin_this_thread(k: usize) {
    SHARD.with(|shard| shard.set(k % SHARDS));
}

/// One position in a cyclic order per shard. Each shard walks the whole order, so a thread's
/// own picks follow the order. The building thread's shard starts at `start`, so one thread
/// alone sees the order exactly as from a single cursor; the shard `k` after it starts `k /
/// SHARDS` of a cycle later, so threads picking at the same moment are spread over the order
/// rather than in step.
#[derive(Debug)]
pub struct Cursors {
    shards: Box<[CachePadded<AtomicUsize>; SHARDS]>,
}

impl Cursors {
    /// Cursors over an order of `len` positions, this thread's at `start` (modulo `len`).
    pub fn new(start: usize, len: usize) -> Cursors {
        let len = len.max(1);
        let here = this_thread();
        let shards = Box::new(std::array::from_fn(|k| {
            let after = (k + SHARDS - here) % SHARDS;
            CachePadded(AtomicUsize::new(Cursors::first(start, len, after)))
        }));
        Cursors { shards }
    }

    /// Where the shard `after` shards past the building thread's starts.
    pub fn first(start: usize, len: usize, after: usize) -> usize {
        let offset = (after as u128 * len as u128 / SHARDS as u128) as usize;
        (start % len + offset) % len
    }

    /// This thread's next position, not yet reduced modulo the order's length.
    #[inline]
    pub fn next(&self) -> usize {
        self.shards[this_thread()].0.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_shard_and_threads_spread_over_shards() {
        let here = this_thread();
        assert_eq!(this_thread(), here);
        let shards: std::collections::BTreeSet<usize> = (0..SHARDS)
            .map(|_| std::thread::spawn(this_thread).join().unwrap())
            .collect();
        // Other tests' threads take shards too, so consecutive spawns need not be adjacent;
        // but SHARDS threads spawned one after another never all land on one shard.
        assert!(shards.len() > 1, "{shards:?}");
    }

    #[test]
    fn shards_start_spread_over_the_order() {
        let starts: Vec<usize> = (0..SHARDS).map(|k| Cursors::first(5, 160, k)).collect();
        assert_eq!(&starts[..4], &[5, 15, 25, 35]);
        assert!(starts.iter().all(|&s| s < 160));
        assert_eq!(Cursors::first(7, 3, 15), (7 % 3 + 2) % 3);
    }
}

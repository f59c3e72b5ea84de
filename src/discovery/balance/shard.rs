//! Per-thread shards of what a pick writes (a cursor, an endpoint's reference count), so threads
//! picking at once write to lines of their own. Pure: process-wide counts only; no clocks, no I/O.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::CachePadded;

/// Shards per balancer: up to this many threads picking at once never share one. More share
/// (still exactly: cursors step by atomic increments), so it bounds what a balancer spends on
/// them: 8 cursors of 128 bytes, and 7 sets of one small handle per endpoint (about 32 bytes).
pub const SHARDS: usize = 8;

/// Live threads holding each shard. A thread takes the least held one when it first picks and
/// gives it back when it exits, so threads that come and go do not pile onto one shard.
static HELD: [AtomicUsize; SHARDS] = [const { AtomicUsize::new(0) }; SHARDS];

/// A thread's shard, given back when the thread exits.
struct Held(Cell<usize>);

impl Held {
    fn set(&self, k: usize) {
        self.release();
        HELD[k].fetch_add(1, Ordering::Relaxed);
        self.0.set(k);
    }

    fn release(&self) {
        if let Some(held) = HELD.get(self.0.replace(SHARDS)) {
            held.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

thread_local! {
    /// This thread's shard; `SHARDS` until it first picks.
    static SHARD: Held = const { Held(Cell::new(SHARDS)) };
}

/// The shard this thread picks through.
#[inline]
pub fn this_thread() -> usize {
    SHARD
        .try_with(|shard| match shard.0.get() {
            SHARDS => {
                // Two threads arriving at once may take the same one: a cost, not an error.
                let k = (0..SHARDS)
                    .min_by_key(|&k| HELD[k].load(Ordering::Relaxed))
                    .unwrap_or(0);
                shard.set(k);
                k
            }
            k => k,
        })
        // A pick from another thread-local's destructor, after this one is gone: share 0.
        .unwrap_or(0)
}

/// Puts this thread on shard `k`, for tests that need threads on distinct shards whatever
/// other tests' threads hold.
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
        self.next_in(this_thread())
    }

    /// The next position of `shard` (this thread's, from [`this_thread`]).
    #[inline]
    pub fn next_in(&self, shard: usize) -> usize {
        self.shards[shard % SHARDS]
            .0
            .fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_shard_and_live_threads_spread_over_shards() {
        let here = this_thread();
        assert_eq!(this_thread(), here);
        let all_live = std::sync::Barrier::new(SHARDS);
        let shards: std::collections::BTreeSet<usize> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..SHARDS)
                .map(|_| {
                    scope.spawn(|| {
                        let k = this_thread();
                        all_live.wait();
                        k
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        // Other tests' threads hold shards too, and two threads arriving at once may take
        // the same one; but live threads fill the least held shards first.
        assert!(shards.len() >= SHARDS / 2, "{shards:?}");
    }

    #[test]
    fn an_exited_thread_gives_its_shard_back() {
        let held = || {
            HELD.iter()
                .map(|h| h.load(Ordering::Relaxed))
                .sum::<usize>()
        };
        std::thread::spawn(|| {
            pin_this_thread(3);
            pin_this_thread(5);
        })
        .join()
        .unwrap();
        // Other tests come and go meanwhile, so only the sign is checked: no count leaks
        // upward from threads that exited (a leak would grow without bound over 100 rounds).
        let before = held();
        for _ in 0..100 {
            std::thread::spawn(this_thread).join().unwrap();
        }
        assert!(held() < before + 50, "{before} -> {}", held());
    }

    #[test]
    fn shards_start_spread_over_the_order() {
        let step = 160 / SHARDS;
        let starts: Vec<usize> = (0..SHARDS).map(|k| Cursors::first(5, 160, k)).collect();
        let want: Vec<usize> = (0..SHARDS).map(|k| 5 + k * step).collect();
        assert_eq!(starts, want);
        // Fewer positions than shards: some shards start together, all inside the order.
        assert!((0..SHARDS).all(|k| Cursors::first(7, 3, k) < 3));
    }
}

//! The small, fast random source behind Random, WeightedRandom and LeastRequest picks.
//! Not cryptographic and never used for anything but spreading load; touches no other state.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

/// wyrand: one add and one 128-bit multiply per number. A pick must stay in the
/// nanoseconds, and a shared or locked generator would cost more than the pick itself.
#[derive(Clone, Debug)]
pub struct WyRand {
    state: u64,
}

impl WyRand {
    /// A generator with a fixed seed, for reproducible tests and benchmarks.
    pub const fn seeded(seed: u64) -> WyRand {
        WyRand { state: seed }
    }

    /// A generator seeded from the process's hash keys, which differ per process and per call.
    pub fn from_entropy() -> WyRand {
        // RandomState is already seeded from the OS once per thread and bumped per instance,
        // which is all the entropy load spreading needs, without a dependency.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x5eed);
        WyRand::seeded(hasher.finish())
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        step(&mut self.state)
    }
}

#[inline]
fn step(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0xa076_1d64_78bd_642f);
    let t = u128::from(*state) * u128::from(*state ^ 0xe703_7ed1_a0b4_28db);
    (t as u64) ^ ((t >> 64) as u64)
}

thread_local! {
    static THREAD_STATE: Cell<u64> = Cell::new(WyRand::from_entropy().state);
}

/// 64 random bits from this thread's generator: no lock and no shared cache line.
#[inline]
pub fn thread_u64() -> u64 {
    THREAD_STATE.with(|cell| {
        let mut state = cell.get();
        let r = step(&mut state);
        cell.set(state);
        r
    })
}

/// Maps 32 random bits onto `0..n` with a multiply instead of a division (Lemire's reduction);
/// the bias is at most n / 2^32, far below what load balancing can notice.
#[inline]
pub fn below(r32: u32, n: usize) -> usize {
    ((u64::from(r32) * n as u64) >> 32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_generators_repeat_and_spread() {
        let mut a = WyRand::seeded(7);
        let mut b = WyRand::seeded(7);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let mut counts = [0u32; 10];
        let mut rng = WyRand::seeded(1);
        for _ in 0..100_000 {
            counts[below(rng.next_u64() as u32, 10)] += 1;
        }
        for c in counts {
            assert!(
                (9_500..10_500).contains(&c),
                "bucket count {c} is far from 10000"
            );
        }
    }

    #[test]
    fn thread_generators_differ() {
        let here = thread_u64();
        let there = std::thread::spawn(thread_u64).join().unwrap();
        assert_ne!(here, there);
    }
}

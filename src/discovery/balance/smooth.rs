//! Smooth weighted round robin (the nginx algorithm): the order is built at snapshot time,
//! so a pick is one increment of this thread's cursor. Pure index arithmetic over weights;
//! knows nothing of endpoints.

use std::sync::Mutex;

use super::shard::Cursors;

/// Cycles longer than this are stepped live under a mutex instead of stored: a table of
/// 256 Ki entries is 1 MiB, a fair price per snapshot; more than that is not.
const MAX_TABLE: u64 = 1 << 18;
/// Bound on the work to fill a table (cycle length × distinct weights), about 10 ms.
const MAX_TABLE_WORK: u64 = 1 << 24;

/// Picks each index exactly `weight` times per `sum(weights)` picks (after dividing by the
/// weights' gcd), interleaved the way nginx's smooth weighted round robin interleaves them.
#[derive(Debug)]
pub struct SmoothWrr {
    order: Order,
}

#[derive(Debug)]
enum Order {
    /// One whole cycle, precomputed; every thread walks all of it from its own cursor.
    Table {
        sequence: Box<[u32]>,
        cursors: Cursors,
    },
    /// Too long to store: step the same algorithm under a lock, shared by all threads.
    Live(Mutex<Stepper>),
}

impl SmoothWrr {
    /// Builds the order, this thread starting `start` picks into it (modulo the cycle).
    /// Returns `None` when every weight is 0 or there are none.
    ///
    /// Clients that build a snapshot at the same moment (a registry change, a warm-up step)
    /// must not all begin with the same endpoint, so the caller passes a random `start`: the
    /// interleaving and the shares over a cycle are the same from any position. Threads each
    /// walk the cycle from a cursor of their own, spread after `start` (see [`Cursors`]), so
    /// each thread's picks are the smooth order and every thread's whole cycles are exact.
    pub fn new(weights: &[u32], start: usize) -> Option<SmoothWrr> {
        let mut stepper = Stepper::new(weights)?;
        let cycle = stepper.cycle();
        let order = if cycle <= MAX_TABLE && cycle * stepper.classes.len() as u64 <= MAX_TABLE_WORK
        {
            let sequence: Box<[u32]> = (0..cycle).map(|_| stepper.step()).collect();
            let cursors = Cursors::new(start, sequence.len());
            Order::Table { sequence, cursors }
        } else {
            // A long cycle: stepping into it costs O(distinct weights) a step, so at most as
            // many steps as there are endpoints.
            for _ in 0..start % weights.len().max(1) {
                stepper.step();
            }
            Order::Live(Mutex::new(stepper))
        };
        Some(SmoothWrr { order })
    }

    /// Whether picks come from a precomputed cycle (lock-free) rather than the locked stepper.
    pub fn is_precomputed(&self) -> bool {
        matches!(self.order, Order::Table { .. })
    }

    /// The next index in the smooth order.
    #[inline]
    pub fn pick(&self) -> usize {
        self.pick_in(super::shard::this_thread())
    }

    /// The next index in the smooth order for a thread of `shard`.
    #[inline]
    pub fn pick_in(&self, shard: usize) -> usize {
        match &self.order {
            Order::Table { sequence, cursors } => {
                sequence[cursors.next_in(shard) % sequence.len()] as usize
            }
            Order::Live(stepper) => {
                let mut stepper = stepper
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                stepper.step() as usize
            }
        }
    }
}

/// Endpoints that share a weight, in index order.
#[derive(Debug)]
struct Class {
    weight: i64,
    members: Box<[u32]>,
    picks: u64,
}

/// nginx's algorithm, grouped by weight so a step costs O(distinct weights) instead of O(n).
///
/// nginx adds each weight to its endpoint's `current`, takes the largest `current` (first in
/// list order on a tie) and subtracts the total from it. After `t` steps an endpoint picked `k`
/// times holds `t*w - total*k`, so within a group of equal weights the winner is always the
/// member with the fewest picks and the lowest index: the group itself goes round robin, and
/// only one candidate per group needs comparing.
#[derive(Debug)]
struct Stepper {
    classes: Vec<Class>,
    total: i64,
    t: i64,
}

impl Stepper {
    fn new(weights: &[u32]) -> Option<Stepper> {
        let g = weights.iter().fold(0u32, |g, &w| gcd(g, w));
        if g == 0 {
            return None;
        }
        let mut by_weight: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
        for (i, &w) in weights.iter().enumerate().filter(|(_, w)| **w > 0) {
            by_weight.entry(w / g).or_default().push(i as u32);
        }
        let classes: Vec<Class> = by_weight
            .into_iter()
            .map(|(w, members)| Class {
                weight: i64::from(w),
                members: members.into(),
                picks: 0,
            })
            .collect();
        let total = classes
            .iter()
            .map(|c| c.weight * c.members.len() as i64)
            .sum();
        Some(Stepper {
            classes,
            total,
            t: 0,
        })
    }

    fn cycle(&self) -> u64 {
        self.total as u64
    }

    fn step(&mut self) -> u32 {
        self.t += 1;
        let mut best: Option<(i64, u32, usize)> = None;
        for (ci, class) in self.classes.iter().enumerate() {
            let size = class.members.len() as u64;
            let rounds = (class.picks / size) as i64;
            let index = class.members[(class.picks % size) as usize];
            let current = self.t * class.weight - self.total * rounds;
            let better = match best {
                None => true,
                Some((c, i, _)) => current > c || (current == c && index < i),
            };
            if better {
                best = Some((current, index, ci));
            }
        }
        let (_, index, ci) = best.expect("a stepper has at least one class");
        self.classes[ci].picks += 1;
        // After a whole cycle every `current` is back to 0: restart so the numbers stay small.
        if self.t == self.total {
            self.t = 0;
            self.classes.iter_mut().for_each(|c| c.picks = 0);
        }
        index
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// nginx's loop, written plainly, as the reference.
    fn nginx(weights: &[u32], picks: usize) -> Vec<usize> {
        let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
        let mut current = vec![0i64; weights.len()];
        let mut out = Vec::with_capacity(picks);
        for _ in 0..picks {
            let mut best: Option<usize> = None;
            for (i, &w) in weights.iter().enumerate() {
                if w == 0 {
                    continue;
                }
                current[i] += i64::from(w);
                if best.is_none_or(|b| current[i] > current[b]) {
                    best = Some(i);
                }
            }
            let b = best.unwrap();
            current[b] -= total;
            out.push(b);
        }
        out
    }

    #[test]
    fn nginx_example_five_one_one() {
        let wrr = SmoothWrr::new(&[5, 1, 1], 0).unwrap();
        let names: String = (0..14).map(|_| ['a', 'b', 'c'][wrr.pick()]).collect();
        assert_eq!(names, "aabacaaaabacaa");
    }

    #[test]
    fn each_index_exactly_weight_times_per_cycle() {
        let weights = [3, 7, 0, 2, 7, 1];
        let wrr = SmoothWrr::new(&weights, 5).unwrap();
        let total: u32 = weights.iter().sum();
        for _cycle in 0..3 {
            let mut counts = [0u32; 6];
            for _ in 0..total {
                counts[wrr.pick()] += 1;
            }
            assert_eq!(counts, weights);
        }
    }

    #[test]
    fn long_cycles_step_live_with_the_same_order() {
        // 1000 distinct weights: too much work to precompute, so the locked stepper runs.
        let weights: Vec<u32> = (1..=1000).collect();
        let wrr = SmoothWrr::new(&weights, 0).unwrap();
        assert!(!wrr.is_precomputed());
        let got: Vec<usize> = (0..5000).map(|_| wrr.pick()).collect();
        assert_eq!(got, nginx(&weights, 5000));
    }

    proptest! {
        #[test]
        fn grouped_stepper_matches_nginx(weights in prop::collection::vec(0u32..20, 1..30)) {
            prop_assume!(weights.iter().any(|&w| w > 0));
            let wrr = SmoothWrr::new(&weights, 0).unwrap();
            let total: u32 = weights.iter().sum();
            let picks = (total as usize) * 2;
            let got: Vec<usize> = (0..picks).map(|_| wrr.pick()).collect();
            prop_assert_eq!(got, nginx(&weights, picks));
        }

        /// From any start the order is nginx's, entered `start` picks in: the same interleaving
        /// and, over any cycle, each index exactly its weight's times.
        #[test]
        fn any_start_is_the_same_order_entered_later(
            weights in prop::collection::vec(0u32..20, 1..30),
            start in 0usize..10_000,
        ) {
            prop_assume!(weights.iter().any(|&w| w > 0));
            let g = weights.iter().fold(0u32, |g, &w| gcd(g, w));
            let cycle = (weights.iter().sum::<u32>() / g) as usize;
            let wrr = SmoothWrr::new(&weights, start).unwrap();
            let got: Vec<usize> = (0..cycle * 2).map(|_| wrr.pick()).collect();
            let skip = start % cycle;
            let want = nginx(&weights, skip + cycle * 2);
            prop_assert_eq!(&got[..], &want[skip..]);
        }
    }
}

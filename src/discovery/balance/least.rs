//! LeastRequest: power of two choices over counts kept per shard of picking threads, each read
//! in two loads. Pure: process-wide counts only; no clocks, no I/O.

use std::sync::{Arc, OnceLock, Weak};

use super::rng::below;
use super::shard::SHARDS;
use crate::discovery::endpoint::{Endpoint, InFlightGuard, Token};

/// A balancer's direct view of its targets' in-flight counts.
///
/// Each endpoint keeps one count per shard (what its guards hold), shared by its `Endpoint` in
/// every snapshot so that rebuilds forget no running request. Reaching one through the endpoint
/// walks four pointers (handle, data, load, count); here each shard keeps, per target, a
/// pointer straight to that shard's count, in one array: a pick reads two counts in two loads
/// each, from an array that stays in the cache (16 bytes a target). The pointers are `Weak`,
/// so a count's strong references are still one (the endpoint's) plus its live guards.
pub(crate) struct Counts {
    /// Per shard, made when that shard first picks here.
    shards: [OnceLock<Slots>; SHARDS],
}

/// One shard's pointers to its counts, one per target, each set when first read.
type Slots = Box<[OnceLock<Weak<Token>>]>;

impl Counts {
    /// No shard has picked yet: nothing is allocated.
    pub fn new() -> Counts {
        Counts {
            shards: Default::default(),
        }
    }

    /// Power of two choices: two distinct targets at random, the one with fewer of this shard's
    /// requests in flight wins. Almost as good as scanning all of them, at O(1) and without
    /// herding onto one "least loaded" endpoint. `targets` is this shard's set of handles.
    #[inline]
    pub fn least_of_two(&self, targets: &[Arc<Endpoint>], shard: usize, r: u64) -> usize {
        let n = targets.len();
        if n == 1 {
            return 0;
        }
        let a = below((r >> 32) as u32, n);
        let mut b = below(r as u32, n - 1);
        if b >= a {
            b += 1;
        }
        let count = |i| self.count(targets, shard, i).strong_count();
        std::hint::select_unpredictable(count(b) < count(a), b, a)
    }

    /// Counts a request on target `i` in `shard` until the guard drops.
    #[inline]
    pub fn start(&self, targets: &[Arc<Endpoint>], shard: usize, i: usize) -> InFlightGuard {
        match self.count(targets, shard, i).upgrade() {
            Some(token) => InFlightGuard::holding(token),
            // The target's endpoint, which holds the count, outlives this balancer.
            None => targets[i].start_request_in(shard),
        }
    }

    #[inline]
    fn count(&self, targets: &[Arc<Endpoint>], shard: usize, i: usize) -> &Weak<Token> {
        let slots = self.shards[shard]
            .get_or_init(|| (0..targets.len()).map(|_| OnceLock::new()).collect());
        slots[i].get_or_init(|| Arc::downgrade(targets[i].token_in(shard)))
    }
}

impl std::fmt::Debug for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = self.shards.iter().filter(|s| s.get().is_some()).count();
        f.debug_struct("Counts")
            .field("shards_used", &used)
            .finish()
    }
}

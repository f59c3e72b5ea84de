//! Load-balancing policies: everything a pick needs is built here once per snapshot, so a pick
//! is O(1) and allocation-free. Pure: no ZooKeeper, no clocks, no tokio.

pub mod alias;
mod least;
pub mod ring;
pub mod rng;
pub mod shape;
pub mod shard;
pub mod smooth;
#[cfg(test)]
mod threads_tests;

use std::sync::Arc;

use self::alias::AliasTable;
use self::least::Counts;
use self::ring::HashRing;
use self::rng::{Rng, below};
use self::shape::{ZonePreference, next_step_ms, ramped_weight, zone_mask};
use self::shard::{Cursors, SHARDS};
use self::smooth::SmoothWrr;
use super::endpoint::{Endpoint, PickContext, Picked};
use crate::model::policy::Policy;

/// Keeps a counter that picks write on its own cache line (two, for the prefetcher that pulls
/// lines in pairs), away from the read-only data and the other threads' counters around it.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

/// One policy's ready-to-pick state over the pickable endpoints of a snapshot.
#[derive(Debug)]
pub struct Balancer {
    policy: Policy,
    /// Only endpoints that are UP with weight above 0: nothing else can ever be picked. Set 0
    /// holds the snapshot's own `Arc`s; each other set, new handles on the same endpoints
    /// ([`Endpoint::handle`]). A pick clones from its thread's set, so two threads picking the
    /// same endpoint each count references on a line of their own.
    targets: [Box<[Arc<Endpoint>]>; SHARDS],
    state: State,
    /// When a warming target's ramped weight next moves (Unix ms): the tables are rebuilt then.
    next_step_ms: Option<i64>,
}

/// What a balancer is built for beyond the endpoints: the time and warm-up that ramp new
/// endpoints' weights, and the caller's zone preference.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shaping<'a> {
    /// The service's warm-up, in ms (0: none).
    pub warmup_ms: i64,
    /// Wall-clock time the weights are ramped for, Unix ms.
    pub now_ms: i64,
    /// Prefer the caller's zone, if it has one.
    pub zone: Option<&'a ZonePreference>,
}

#[derive(Debug)]
enum State {
    Empty,
    RoundRobin(Cursors),
    Random,
    WeightedRandom(AliasTable),
    WeightedRoundRobin(SmoothWrr),
    LeastRequest(Counts),
    ConsistentHash(Arc<HashRing>),
}

/// Where a new round-robin order starts: random, so that clients rebuilding at the same moment
/// do not start on the same endpoint.
fn random_start() -> usize {
    (rng::thread_u64() >> 1) as usize
}

impl Balancer {
    /// Builds `policy`'s state over the pickable ones among `endpoints`, whose order is kept
    /// (it decides round-robin order and smooth WRR tie-breaks).
    pub fn new(policy: Policy, endpoints: &[Arc<Endpoint>]) -> Balancer {
        Balancer::with_vnodes(policy, endpoints, ring::DEFAULT_VNODES)
    }

    /// Like [`Balancer::new`], with a chosen number of ring points per endpoint for ConsistentHash.
    pub fn with_vnodes(policy: Policy, endpoints: &[Arc<Endpoint>], vnodes: u32) -> Balancer {
        Balancer::rebuild(policy, endpoints, vnodes, None)
    }

    /// Like [`Balancer::with_vnodes`], reusing what `previous` built when it still fits: the
    /// ring depends on the endpoint names only, and building one for 1000 endpoints costs
    /// milliseconds, while most changes (weight, status of a pod that stays pickable, metadata)
    /// leave the names alone.
    pub fn rebuild(
        policy: Policy,
        endpoints: &[Arc<Endpoint>],
        vnodes: u32,
        previous: Option<&Balancer>,
    ) -> Balancer {
        Balancer::shaped(policy, endpoints, vnodes, previous, Shaping::default())
    }

    /// Like [`Balancer::rebuild`], with weights ramped for warm-up at `shaping.now_ms` and the
    /// targets narrowed to the caller's zone while it qualifies. Picks cost the same either
    /// way: all of it is decided here, and [`Balancer::next_step_ms`] says when to build again.
    pub fn shaped(
        policy: Policy,
        endpoints: &[Arc<Endpoint>],
        vnodes: u32,
        previous: Option<&Balancer>,
        shaping: Shaping<'_>,
    ) -> Balancer {
        let (targets, weights, next_step_ms) = shape(endpoints, shaping);
        let state = if targets.is_empty() {
            State::Empty
        } else {
            Balancer::state(policy, &targets, &weights, vnodes, previous)
        };
        Balancer {
            policy,
            targets: handle_sets(targets),
            state,
            next_step_ms,
        }
    }

    /// `policy`'s structure over non-empty `targets` weighing `weights`.
    fn state(
        policy: Policy,
        targets: &[Arc<Endpoint>],
        weights: &[u32],
        vnodes: u32,
        previous: Option<&Balancer>,
    ) -> State {
        match policy {
            // Every client builds a snapshot at the same moments (a registry change, a warm-up
            // step): from position 0 a fleet of them would all send their next call to the same
            // endpoint. A random start spreads them, as Envoy's round robin does. Each thread
            // goes round on its own cursor, so threads do not fight over one counter.
            Policy::RoundRobin => State::RoundRobin(Cursors::new(random_start(), targets.len())),
            Policy::Random => State::Random,
            Policy::LeastRequest => State::LeastRequest(Counts::new()),
            // Targets all weigh at least 1, so these builders always return Some.
            Policy::WeightedRandom => {
                AliasTable::new(weights).map_or(State::Empty, State::WeightedRandom)
            }
            Policy::WeightedRoundRobin => SmoothWrr::new(weights, random_start())
                .map_or(State::Empty, State::WeightedRoundRobin),
            Policy::ConsistentHash => match previous.and_then(|p| p.ring_for(targets, vnodes)) {
                Some(ring) => State::ConsistentHash(ring),
                None => {
                    let names: Vec<&[u8]> = targets.iter().map(|e| e.name().as_bytes()).collect();
                    HashRing::new(&names, vnodes)
                        .map_or(State::Empty, |ring| State::ConsistentHash(Arc::new(ring)))
                }
            },
        }
    }

    /// When a warming endpoint's weight next moves (Unix ms); `None` when none is warming.
    /// The balancer does not look at the clock: whoever holds it builds a new one then.
    pub fn next_step_ms(&self) -> Option<i64> {
        self.next_step_ms
    }

    /// This balancer's ring, if it was built with `vnodes` over the same names in the same order.
    fn ring_for(&self, targets: &[Arc<Endpoint>], vnodes: u32) -> Option<Arc<HashRing>> {
        match &self.state {
            State::ConsistentHash(ring)
                if ring.vnodes() == vnodes
                    && self.targets().len() == targets.len()
                    && self
                        .targets()
                        .iter()
                        .zip(targets)
                        .all(|(a, b)| a.name() == b.name()) =>
            {
                Some(Arc::clone(ring))
            }
            _ => None,
        }
    }

    /// The policy this balancer follows.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The endpoints a pick can return.
    pub fn targets(&self) -> &[Arc<Endpoint>] {
        &self.targets[0]
    }

    /// Picks one endpoint, drawing randomness from this thread's generator.
    /// `None` only when no endpoint is pickable.
    #[inline]
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<Picked> {
        let shard = shard::this_thread() % SHARDS;
        self.pick_index(ctx, shard, rng::thread_u64)
            .map(|i| self.picked(shard, i))
    }

    /// Picks one endpoint with randomness from `rng`, for reproducible tests.
    pub fn pick_with(&self, ctx: &PickContext<'_>, rng: &mut Rng) -> Option<Picked> {
        let shard = shard::this_thread() % SHARDS;
        self.pick_index(ctx, shard, || rng.u64(..))
            .map(|i| self.picked(shard, i))
    }

    /// Target `i` through `shard`'s own handles: another thread's set has its reference counts
    /// written by every pick there, on the lines that also hold the pointers read here.
    #[inline]
    fn picked(&self, shard: usize, i: usize) -> Picked {
        let targets = &self.targets[shard];
        let guard = match &self.state {
            State::LeastRequest(counts) => Some(counts.start(targets, shard, i)),
            _ => None,
        };
        let endpoint = Arc::clone(&targets[i]);
        Picked { endpoint, guard }
    }

    #[inline]
    fn pick_index(
        &self,
        ctx: &PickContext<'_>,
        shard: usize,
        mut random: impl FnMut() -> u64,
    ) -> Option<usize> {
        let n = self.targets().len();
        Some(match &self.state {
            State::Empty => return None,
            State::RoundRobin(cursors) => cursors.next_in(shard) % n,
            State::Random => below(random() as u32, n),
            State::WeightedRandom(table) => table.pick(random()),
            State::WeightedRoundRobin(wrr) => wrr.pick_in(shard),
            State::LeastRequest(counts) => {
                counts.least_of_two(&self.targets[shard], shard, random())
            }
            State::ConsistentHash(ring) => match ctx.key {
                Some(key) => ring.lookup(key),
                None => below(random() as u32, n),
            },
        })
    }
}

/// `targets` as set 0, and `SHARDS - 1` sets of new handles on the same endpoints.
fn handle_sets(targets: Box<[Arc<Endpoint>]>) -> [Box<[Arc<Endpoint>]>; SHARDS] {
    let mut sets: [Box<[Arc<Endpoint>]>; SHARDS] = Default::default();
    for set in sets.iter_mut().skip(1) {
        *set = targets.iter().map(|e| Arc::new(e.handle())).collect();
    }
    sets[0] = targets;
    sets
}

/// The pickable endpoints a balancer keeps under `shaping`, their ramped weights, and when the
/// next ramp step is due.
fn shape(
    endpoints: &[Arc<Endpoint>],
    shaping: Shaping<'_>,
) -> (Box<[Arc<Endpoint>]>, Vec<u32>, Option<i64>) {
    let (warmup, now) = (shaping.warmup_ms, shaping.now_ms);
    let pickable: Vec<&Arc<Endpoint>> = endpoints.iter().filter(|e| e.pickable()).collect();
    let ramped: Vec<u32> = pickable
        .iter()
        .map(|e| ramped_weight(e.record().weight, e.record().ready_since_ms, warmup, now))
        .collect();
    let next_step = pickable
        .iter()
        .filter_map(|e| next_step_ms(e.record().weight, e.record().ready_since_ms, warmup, now))
        .min();
    let keep = match shaping.zone {
        Some(pref) => {
            let zones: Vec<Option<&str>> = pickable
                .iter()
                .map(|e| e.record().zone.as_deref())
                .collect();
            zone_mask(&zones, &ramped, pref)
        }
        None => vec![true; pickable.len()],
    };
    let (targets, weights): (Vec<Arc<Endpoint>>, Vec<u32>) = pickable
        .into_iter()
        .zip(ramped)
        .zip(keep)
        .filter(|(_, kept)| *kept)
        .map(|((e, w), _)| (Arc::clone(e), w))
        .unzip();
    (targets.into_boxed_slice(), weights, next_step)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::shape::ZonePreference;
    use super::*;
    use crate::model::record::{EndpointRecord, EndpointStatus};

    pub(crate) fn record(i: usize, weight: u32, status: EndpointStatus) -> EndpointRecord {
        EndpointRecord {
            host: format!("10.0.0.{i}"),
            port: 8080,
            ports: Default::default(),
            weight,
            declared_weight: None,
            load: None,
            group: "default".into(),
            zone: None,
            node: None,
            pod: format!("web-{i}"),
            namespace: "shop".into(),
            metadata: Default::default(),
            status,
            ready_since_ms: 0,
        }
    }

    fn endpoints(spec: &[(u32, EndpointStatus)]) -> Vec<Arc<Endpoint>> {
        spec.iter()
            .enumerate()
            .map(|(i, &(w, s))| Arc::new(Endpoint::new(format!("web-{i}"), record(i, w, s))))
            .collect()
    }

    fn counts(balancer: &Balancer, picks: usize, seed: u64) -> BTreeMap<String, usize> {
        let mut rng = rng::Rng::with_seed(seed);
        let mut out = BTreeMap::new();
        for i in 0..picks {
            let key = format!("k{i}");
            let ctx = PickContext::with_key(key.as_bytes());
            *out.entry(
                balancer
                    .pick_with(&ctx, &mut rng)
                    .unwrap()
                    .name()
                    .to_string(),
            )
            .or_default() += 1;
        }
        out
    }

    #[test]
    fn empty_or_unpickable_sets_pick_nothing() {
        use EndpointStatus::*;
        for policy in Policy::ALL {
            assert!(
                Balancer::new(policy, &[])
                    .pick(&PickContext::default())
                    .is_none()
            );
            let none_pickable = endpoints(&[(0, Up), (5, Draining), (0, Draining)]);
            let balancer = Balancer::new(policy, &none_pickable);
            assert!(
                balancer.pick(&PickContext::with_key(b"k")).is_none(),
                "{policy}"
            );
            assert!(balancer.targets().is_empty());
        }
    }

    #[test]
    fn round_robin_visits_each_in_turn() {
        let eps = endpoints(&[
            (1, EndpointStatus::Up),
            (9, EndpointStatus::Up),
            (1, EndpointStatus::Draining),
            (3, EndpointStatus::Up),
        ]);
        let balancer = Balancer::new(Policy::RoundRobin, &eps);
        let names: Vec<String> = (0..6)
            .map(|_| {
                balancer
                    .pick(&PickContext::default())
                    .unwrap()
                    .name()
                    .to_string()
            })
            .collect();
        // From a random start: the pickable ones in list order, rotated.
        let cycle = ["web-0", "web-1", "web-3"];
        let first = cycle.iter().position(|n| *n == names[0]).unwrap();
        let want: Vec<&str> = (0..6).map(|i| cycle[(first + i) % 3]).collect();
        assert_eq!(names, want);
    }

    #[test]
    fn clients_rebuilding_at_the_same_moment_do_not_all_start_on_one_endpoint() {
        let eps = endpoints(&[
            (1, EndpointStatus::Up),
            (1, EndpointStatus::Up),
            (2, EndpointStatus::Up),
        ]);
        for policy in [Policy::RoundRobin, Policy::WeightedRoundRobin] {
            let firsts: std::collections::BTreeSet<String> = (0..100)
                .map(|_| {
                    let b = Balancer::new(policy, &eps);
                    b.pick(&PickContext::default()).unwrap().name().to_string()
                })
                .collect();
            // From position 0 every one of the 100 would start on web-0 (WRR: web-2).
            assert_eq!(firsts.len(), 3, "{policy:?}: {firsts:?}");
        }
    }

    #[test]
    fn random_is_uniform_and_weighted_random_follows_weights() {
        let eps = endpoints(&[
            (10, EndpointStatus::Up),
            (30, EndpointStatus::Up),
            (60, EndpointStatus::Up),
        ]);
        let picks = 1_000_000;
        let uniform = counts(&Balancer::new(Policy::Random, &eps), picks, 3);
        let weighted = counts(&Balancer::new(Policy::WeightedRandom, &eps), picks, 3);
        for (i, want) in [0.10, 0.30, 0.60].into_iter().enumerate() {
            let name = format!("web-{i}");
            let got_uniform = uniform[&name] as f64 / picks as f64;
            let got_weighted = weighted[&name] as f64 / picks as f64;
            assert!(
                (got_uniform - 1.0 / 3.0).abs() <= 0.01,
                "{name}: uniform share {got_uniform}"
            );
            assert!(
                (got_weighted - want).abs() <= 0.01,
                "{name}: weighted share {got_weighted}, want {want}"
            );
        }
    }

    #[test]
    fn smooth_wrr_through_the_balancer_is_exact_per_cycle() {
        use EndpointStatus::*;
        let eps = endpoints(&[(5, Up), (2, Draining), (1, Up), (1, Up)]);
        let balancer = Balancer::new(Policy::WeightedRoundRobin, &eps);
        let order: Vec<String> = (0..7)
            .map(|_| {
                balancer
                    .pick(&PickContext::default())
                    .unwrap()
                    .name()
                    .to_string()
            })
            .collect();
        // nginx's order over the pickable ones (5, 1, 1), entered at a random point.
        let cycle = [
            "web-0", "web-0", "web-2", "web-0", "web-3", "web-0", "web-0",
        ];
        let rotated = (0..7).any(|k| (0..7).all(|i| order[i] == cycle[(k + i) % 7]));
        assert!(rotated, "{order:?}");
    }

    #[test]
    fn least_request_avoids_the_loaded_endpoint_and_guards_release() {
        let eps = endpoints(&[(1, EndpointStatus::Up); 4]);
        let balancer = Balancer::new(Policy::LeastRequest, &eps);
        let held: Vec<_> = (0..10).map(|_| eps[0].start_request()).collect();
        assert_eq!(eps[0].in_flight(), 10);
        let mut rng = rng::Rng::with_seed(11);
        let mut seen = [0usize; 4];
        for _ in 0..10_000 {
            let picked = balancer
                .pick_with(&PickContext::default(), &mut rng)
                .unwrap();
            assert!(picked.guard.is_some());
            seen[picked.name()[4..].parse::<usize>().unwrap()] += 1;
        }
        // Two distinct candidates, and web-0 always carries more: it can never win.
        assert_eq!(seen[0], 0);
        assert!(seen[1..].iter().all(|&c| c > 2_500), "{seen:?}");
        // Each pick's guard dropped at the end of its iteration.
        assert!(eps[1..].iter().all(|e| e.in_flight() == 0));
        drop(held);
        assert_eq!(eps[0].in_flight(), 0);

        // Under held load the picks spread so that in-flight counts stay level.
        let guards: Vec<_> = (0..4000)
            .map(|_| {
                balancer
                    .pick_with(&PickContext::default(), &mut rng)
                    .unwrap()
            })
            .collect();
        let loads: Vec<usize> = eps.iter().map(|e| e.in_flight()).collect();
        let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(max - min <= 3, "in-flight counts drifted apart: {loads:?}");
        drop(guards);
        assert!(eps.iter().all(|e| e.in_flight() == 0));
    }

    #[test]
    fn consistent_hash_keeps_a_key_on_one_endpoint() {
        let eps = endpoints(&[(1, EndpointStatus::Up); 8]);
        let balancer = Balancer::new(Policy::ConsistentHash, &eps);
        let first = balancer
            .pick(&PickContext::with_key(b"user-42"))
            .unwrap()
            .name()
            .to_string();
        for _ in 0..100 {
            assert_eq!(
                balancer
                    .pick(&PickContext::with_key(b"user-42"))
                    .unwrap()
                    .name(),
                first
            );
        }
    }

    #[test]
    fn a_ring_is_reused_only_while_the_names_stay() {
        let ring = |b: &Balancer| match &b.state {
            State::ConsistentHash(ring) => Arc::clone(ring),
            other => panic!("not a ring: {other:?}"),
        };
        let first = Balancer::new(
            Policy::ConsistentHash,
            &endpoints(&[(1, EndpointStatus::Up); 3]),
        );
        let reweighted = endpoints(&[(5, EndpointStatus::Up); 3]);
        let second = Balancer::rebuild(
            Policy::ConsistentHash,
            &reweighted,
            ring::DEFAULT_VNODES,
            Some(&first),
        );
        assert!(Arc::ptr_eq(&ring(&first), &ring(&second)));
        let fewer = endpoints(&[
            (5, EndpointStatus::Up),
            (5, EndpointStatus::Draining),
            (5, EndpointStatus::Up),
        ]);
        let third = Balancer::rebuild(
            Policy::ConsistentHash,
            &fewer,
            ring::DEFAULT_VNODES,
            Some(&second),
        );
        assert!(!Arc::ptr_eq(&ring(&second), &ring(&third)));
        let fresh = Balancer::new(Policy::ConsistentHash, &fewer);
        for i in 0..1000u32 {
            let key = i.to_le_bytes();
            let ctx = PickContext::with_key(&key);
            assert_eq!(
                third.pick(&ctx).unwrap().name(),
                fresh.pick(&ctx).unwrap().name()
            );
        }
    }

    fn zoned(spec: &[(u32, Option<u8>, i64)]) -> Vec<Arc<Endpoint>> {
        spec.iter()
            .enumerate()
            .map(|(i, &(w, zone, ready))| {
                let mut r = record(i, w, EndpointStatus::Up);
                r.zone = zone.map(|z| format!("z{z}"));
                r.ready_since_ms = ready;
                Arc::new(Endpoint::new(format!("web-{i}"), r))
            })
            .collect()
    }

    #[test]
    fn a_warming_endpoint_weighs_its_ramp_until_the_next_step() {
        const READY: i64 = 1_767_225_600_000;
        // web-1 became ready 30 s into a 60 s warm-up: half its weight.
        let eps = zoned(&[(100, None, 0), (100, None, READY)]);
        for policy in [Policy::WeightedRandom, Policy::WeightedRoundRobin] {
            let shaping = |now| Shaping {
                warmup_ms: 60_000,
                now_ms: now,
                zone: None,
            };
            let half = Balancer::shaped(policy, &eps, 1, None, shaping(READY + 30_000));
            assert_eq!(half.next_step_ms(), Some(READY + 33_000));
            let got = counts(&half, 150_000, 5);
            let share = got["web-1"] as f64 / 150_000.0;
            assert!((share - 50.0 / 150.0).abs() < 0.01, "{policy}: {share}");
            let done = Balancer::shaped(policy, &eps, 1, None, shaping(READY + 60_000));
            assert_eq!(done.next_step_ms(), None);
            let share = counts(&done, 100_000, 5)["web-1"] as f64 / 100_000.0;
            assert!((share - 0.5).abs() < 0.01, "{policy}: {share}");
        }
        let plain = Balancer::new(Policy::WeightedRandom, &eps);
        assert_eq!(plain.next_step_ms(), None, "no warm-up, no steps");
    }

    proptest! {
        /// With a zone preference, no policy picks outside the zone while the zone holds its
        /// share of the weight, every pickable endpoint stays reachable when it does not, and
        /// an empty or unknown zone never panics.
        #[test]
        fn zone_preference_keeps_picks_in_the_zone_while_it_qualifies(
            spec in prop::collection::vec((1u32..100, prop::option::of(0u8..3)), 0..30),
            min_share in 0.0f64..0.9,
            seed in any::<u64>(),
        ) {
            let eps = zoned(&spec.iter().map(|&(w, z)| (w, z, 0)).collect::<Vec<_>>());
            let pref = ZonePreference { zone: Some("z0".into()), min_share };
            let local: u64 = spec.iter().filter(|(_, z)| *z == Some(0)).map(|(w, _)| u64::from(*w)).sum();
            let total: u64 = spec.iter().map(|(w, _)| u64::from(*w)).sum();
            let qualifies = local > 0 && local as f64 >= min_share * total as f64;
            for policy in Policy::ALL {
                let shaping = Shaping { zone: Some(&pref), ..Shaping::default() };
                let balancer = Balancer::shaped(policy, &eps, 16, None, shaping);
                let want = if qualifies { spec.iter().filter(|(_, z)| *z == Some(0)).count() } else { spec.len() };
                prop_assert_eq!(balancer.targets().len(), want, "{}", policy);
                let mut rng = rng::Rng::with_seed(seed);
                for i in 0..100u32 {
                    let key = i.to_le_bytes();
                    match balancer.pick_with(&PickContext::with_key(&key), &mut rng) {
                        Some(p) if qualifies => prop_assert_eq!(p.record().zone.as_deref(), Some("z0"), "{}", policy),
                        Some(_) => {}
                        None => prop_assert!(spec.is_empty(), "{} picked nothing", policy),
                    }
                }
            }
        }
    }

    fn status() -> impl Strategy<Value = EndpointStatus> {
        prop_oneof![Just(EndpointStatus::Up), Just(EndpointStatus::Draining)]
    }

    proptest! {
        /// Whatever the mix, no policy ever returns a DRAINING or weight-0 endpoint, and a pick
        /// exists exactly when some endpoint is pickable.
        #[test]
        fn unpickable_endpoints_are_never_picked(
            spec in prop::collection::vec((prop_oneof![Just(0u32), 1u32..100], status()), 0..40),
            seed in any::<u64>(),
        ) {
            let eps = endpoints(&spec);
            let any_pickable = eps.iter().any(|e| e.pickable());
            for policy in Policy::ALL {
                let balancer = Balancer::new(policy, &eps);
                let mut rng = rng::Rng::with_seed(seed);
                for i in 0..200u32 {
                    let key = i.to_le_bytes();
                    let ctx = if i % 2 == 0 { PickContext::with_key(&key) } else { PickContext::default() };
                    match balancer.pick_with(&ctx, &mut rng) {
                        Some(p) => prop_assert!(p.pickable(), "{} picked {} ({:?}, weight {})", policy, p.name(), p.record().status, p.record().weight),
                        None => prop_assert!(!any_pickable, "{} picked nothing among pickable endpoints", policy),
                    }
                }
            }
        }
    }
}

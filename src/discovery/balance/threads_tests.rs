//! Picks from several threads at once: what each policy promises on one thread still holds,
//! per thread and over all picks. Tests only.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, mpsc};

use super::shard::{self, SHARDS};
use super::smooth::SmoothWrr;
use super::*;
use crate::discovery::InFlightGuard;
use crate::model::record::EndpointStatus;

const THREADS: usize = 4;

fn endpoints(weights: &[u32]) -> Vec<Arc<Endpoint>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let record = super::tests::record(i, w, EndpointStatus::Up);
            Arc::new(Endpoint::new(format!("web-{i}"), record))
        })
        .collect()
}

fn index(picked: &Picked) -> usize {
    picked.name()["web-".len()..].parse().unwrap()
}

/// Each of `THREADS` threads, on a shard of its own, makes `picks(t)` picks at once with the
/// others and returns the indices it got, in order.
fn pick_on_threads(balancer: &Balancer, picks: impl Fn(usize) -> usize + Sync) -> Vec<Vec<usize>> {
    let start = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (start, picks) = (&start, &picks);
                scope.spawn(move || {
                    shard::pin_this_thread(t);
                    start.wait();
                    (0..picks(t))
                        .map(|_| index(&balancer.pick(&PickContext::default()).unwrap()))
                        .collect::<Vec<usize>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn totals(sequences: &[Vec<usize>], n: usize) -> Vec<usize> {
    let mut counts = vec![0; n];
    sequences.iter().flatten().for_each(|&i| counts[i] += 1);
    counts
}

/// `got` is a stretch of the cyclic order `cycle`, entered anywhere.
fn is_stretch_of(got: &[usize], cycle: &[usize]) -> bool {
    (0..cycle.len()).any(|k| {
        got.iter()
            .enumerate()
            .all(|(i, &x)| x == cycle[(k + i) % cycle.len()])
    })
}

#[test]
fn round_robin_threads_each_go_round_and_together_stay_even() {
    let n = 7;
    let balancer = Balancer::new(Policy::RoundRobin, &endpoints(&[1; 7]));
    let sequences = pick_on_threads(&balancer, |t| 1000 + 3 * t);
    let in_turn: Vec<usize> = (0..n).collect();
    for (t, seq) in sequences.iter().enumerate() {
        assert!(
            is_stretch_of(seq, &in_turn),
            "thread {t} left the round: {seq:?}"
        );
    }
    // Each thread adds whole rounds and one partial round: at most one pick more per thread.
    let counts = totals(&sequences, n);
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(max - min <= THREADS, "{counts:?}");
}

#[test]
fn threads_start_spread_over_the_round() {
    let balancer = Balancer::new(Policy::RoundRobin, &endpoints(&[1; 64]));
    let firsts: Vec<usize> = pick_on_threads(&balancer, |_| 1)
        .into_iter()
        .map(|seq| seq[0])
        .collect();
    // Shards k and k+1 start 64 / SHARDS positions apart.
    let step = 64 / SHARDS;
    for pair in firsts.windows(2) {
        assert_eq!((pair[1] + 64 - pair[0]) % 64, step, "{firsts:?}");
    }
}

/// The smooth order one thread sees today: nginx's, from the balancer's start.
fn smooth_cycle(weights: &[u32]) -> Vec<usize> {
    let wrr = SmoothWrr::new(weights, 0).unwrap();
    let cycle = weights.iter().sum::<u32>() as usize;
    (0..cycle).map(|_| wrr.pick()).collect()
}

/// Every thread's picks are the smooth order; over all picks each endpoint's count is its
/// exact share when every thread made whole cycles, and within 2 per thread of it otherwise.
#[test]
fn smooth_wrr_threads_are_each_smooth_and_together_exact() {
    let weights = [5, 1, 1, 3, 2, 8];
    let cycle = smooth_cycle(&weights);
    let total: u32 = weights.iter().sum();
    let balancer = Balancer::new(Policy::WeightedRoundRobin, &endpoints(&weights));

    let whole = pick_on_threads(&balancer, |t| (t + 1) * 50 * cycle.len());
    for (t, seq) in whole.iter().enumerate() {
        assert!(is_stretch_of(seq, &cycle), "thread {t} is not smooth");
    }
    let counts = totals(&whole, weights.len());
    let cycles: usize = (1..=THREADS).map(|t| t * 50).sum();
    let exact: Vec<usize> = weights.iter().map(|&w| w as usize * cycles).collect();
    assert_eq!(
        counts, exact,
        "whole cycles on every thread give exact shares"
    );

    // Uneven counts: each thread ends part-way into a cycle.
    let partial = pick_on_threads(&balancer, |t| 10_000 + 7 * t);
    for (t, seq) in partial.iter().enumerate() {
        assert!(is_stretch_of(seq, &cycle), "thread {t} is not smooth");
    }
    let picks: usize = partial.iter().map(Vec::len).sum();
    for (i, &got) in totals(&partial, weights.len()).iter().enumerate() {
        let share = picks as f64 * f64::from(weights[i]) / f64::from(total);
        assert!(
            (got as f64 - share).abs() < 2.0 * THREADS as f64,
            "endpoint {i}: {got} picks, exact share {share:.1}"
        );
    }
}

/// The bound the test above relies on: in the smooth order any stretch shorter than a cycle
/// holds each index within 2 of its share (nginx keeps `t·w - W·picks` inside (-W, W)).
#[test]
fn a_stretch_of_the_smooth_order_is_within_two_of_its_share() {
    let weights = [5, 1, 1, 3, 2, 8];
    let cycle = smooth_cycle(&weights);
    let total = f64::from(weights.iter().sum::<u32>());
    for start in 0..cycle.len() {
        let mut counts = [0usize; 6];
        for len in 1..=cycle.len() {
            counts[cycle[(start + len - 1) % cycle.len()]] += 1;
            for (i, &c) in counts.iter().enumerate() {
                let share = len as f64 * f64::from(weights[i]) / total;
                assert!(
                    (c as f64 - share).abs() < 2.0,
                    "start {start}, len {len}, index {i}"
                );
            }
        }
    }
}

/// Guards taken on the picking threads and dropped on others: every count is exact while
/// they are held and back to 0 once they are gone.
#[test]
fn least_request_counts_hold_when_guards_drop_on_other_threads() {
    let eps = endpoints(&[1; 10]);
    let balancer = Balancer::new(Policy::LeastRequest, &eps);
    let (send, receive) = mpsc::channel::<Picked>();
    let held: Vec<Picked> = std::thread::scope(|scope| {
        for _ in 0..THREADS {
            let (send, balancer) = (send.clone(), &balancer);
            scope.spawn(move || {
                for _ in 0..5_000 {
                    send.send(balancer.pick(&PickContext::default()).unwrap())
                        .unwrap();
                }
            });
        }
        drop(send);
        receive.iter().collect()
    });
    let mut want: BTreeMap<usize, usize> = BTreeMap::new();
    held.iter()
        .for_each(|p| *want.entry(index(p)).or_default() += 1);
    for (i, e) in eps.iter().enumerate() {
        assert_eq!(e.in_flight(), want.get(&i).copied().unwrap_or(0), "web-{i}");
    }
    // Two choices over counts kept level: the spread stays small even across threads.
    let (min, max) = (want.values().min().unwrap(), want.values().max().unwrap());
    assert!(max - min <= 2 * THREADS, "{want:?}");

    // Half the guards drop on each of two other threads, while pickers keep picking and
    // dropping on their own.
    let mut rest = held;
    let other = rest.split_off(rest.len() / 2);
    std::thread::scope(|scope| {
        scope.spawn(move || drop(rest));
        scope.spawn(move || drop(other));
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..10_000 {
                    drop(balancer.pick(&PickContext::default()));
                }
            });
        }
    });
    assert!(eps.iter().all(|e| e.in_flight() == 0), "counts left behind");
}

#[test]
fn balancers_and_picks_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Balancer>();
    send_sync::<Picked>();
    send_sync::<InFlightGuard>();
}

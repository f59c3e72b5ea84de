//! Tests of the load weighting and the policy switch, through the closed-loop model where the
//! loop matters.

use std::sync::Arc;

use proptest::prelude::*;

use super::policy::{AutoPolicy, AutoRule, Figures, Reason};
use super::sim::{self, Scenario, SimPod};
use super::weights::{Damping, LoadWeights, PodLoad, Sample, Unweighed};
use crate::model::policy::Policy;
use crate::model::weights::SHARE_UNIT;

/// `n` pods, every third at half capacity; with `canary`, the last two pods form a group at a
/// 10 % share.
fn scenario(n: usize, canary: bool, seed: u64) -> Scenario {
    let pods = (0..n)
        .map(|i| SimPod {
            name: format!("p{i:02}"),
            group: usize::from(canary && i >= n - 2),
            declared: 100,
            capacity: if i % 3 == 2 { 0.5 } else { 1.0 },
        })
        .collect();
    Scenario {
        pods,
        shares: canary.then(|| vec![90, 10]),
        load: 0.6,
        noise: 0.1,
        seed,
    }
}

const HOUR_PERIODS: usize = 240;

#[test]
fn unequal_capacities_even_out_within_five_periods() {
    let d = Damping::default();
    let s = scenario(12, false, 7);
    let stat = sim::run(&s, &d, 5, false);
    let load = sim::run(&s, &d, 5, true);
    let (before, after) = (stat[4].hottest_over_mean(), load[4].hottest_over_mean());
    assert!(
        before > 1.3,
        "static weights leave the slow pods hot: {before:.3}"
    );
    assert!(
        after <= 1.1,
        "after 5 periods the hottest pod is at {after:.3}× the mean"
    );
}

#[test]
fn converged_weights_are_rarely_rewritten() {
    let d = Damping::default();
    for seed in 0..8 {
        let trace = sim::run(&scenario(12, false, seed), &d, 20 + HOUR_PERIODS, true);
        let rewrites: usize = trace[20..].iter().map(|p| p.rewrites).sum();
        let per_pod_hour = rewrites as f64 / 12.0;
        assert!(
            per_pod_hour <= 2.0,
            "seed {seed}: {per_pod_hour:.2} rewrites per pod per hour"
        );
        let worst = trace[20..]
            .iter()
            .map(|p| p.hottest_over_mean())
            .fold(0.0, f64::max);
        assert!(
            worst <= 1.15,
            "seed {seed}: hottest at {worst:.3}× the mean once converged"
        );
    }
}

#[test]
fn group_shares_stay_exact_however_loaded() {
    let d = Damping::default();
    let trace = sim::run(&scenario(8, true, 3), &d, 40, true);
    for p in &trace {
        let canary: u64 = p.weights[6..].iter().map(|&w| u64::from(w)).sum();
        let stable: u64 = p.weights[..6].iter().map(|&w| u64::from(w)).sum();
        assert_eq!(
            (stable, canary),
            (90 * SHARE_UNIT, 10 * SHARE_UNIT),
            "at {} ms",
            p.t_ms
        );
    }
    let moved = trace.last().unwrap().weights[..6]
        .iter()
        .collect::<std::collections::BTreeSet<_>>();
    assert!(
        moved.len() > 1,
        "load moved weights inside the stable group"
    );
}

fn pod<'a>(name: &'a str, declared: u32, u: Option<f64>, at_ms: i64) -> PodLoad<'a> {
    PodLoad {
        name,
        group: 0,
        declared,
        ready_since_ms: -1_000_000,
        sample: u.map(|utilization| Sample { utilization, at_ms }),
    }
}

#[test]
fn stale_data_and_new_pods_mean_declared_weights() {
    let d = Damping::default();
    let mut w = LoadWeights::default();
    for k in 1..=6 {
        let t = k * d.period_ms;
        w.step(
            &d,
            &[pod("a", 100, Some(0.9), t), pod("b", 100, Some(0.3), t)],
            t,
        );
    }
    assert!(
        w.factor("a") < 0.8 && w.factor("b") > 1.2,
        "{} {}",
        w.factor("a"),
        w.factor("b")
    );
    let last = 6 * d.period_ms;
    let later = last + d.expire_ms + 1;
    let step = w.step(
        &d,
        &[
            pod("a", 100, Some(0.9), last),
            pod("b", 100, Some(0.3), last),
        ],
        later,
    );
    assert_eq!(step.changed, ["a", "b"], "both go back to declared");
    assert_eq!((w.factor("a"), w.factor("b")), (1.0, 1.0));
    let fresh = PodLoad {
        ready_since_ms: later - 1,
        ..pod("c", 100, Some(0.1), later)
    };
    assert_eq!(
        LoadWeights::unweighed(&d, &fresh, later),
        Some(Unweighed::Warming)
    );
    assert_eq!(
        LoadWeights::unweighed(&d, &pod("d", 100, None, 0), later),
        Some(Unweighed::NoData)
    );
}

fn arb_loads() -> impl Strategy<Value = Vec<(u32, f64)>> {
    prop::collection::vec((1u32..1000, 0.0f64..5.0), 2..12)
}

proptest! {
    /// Whatever the samples, factors stay within the floor and ceiling and move at most one
    /// step per period.
    #[test]
    fn factors_keep_their_bounds_and_steps(rounds in prop::collection::vec(arb_loads(), 1..8)) {
        let d = Damping::default();
        let mut w = LoadWeights::default();
        let names: Vec<String> = (0..12).map(|i| format!("p{i}")).collect();
        for (k, loads) in rounds.iter().enumerate() {
            let t = (k as i64 + 1) * d.period_ms;
            let pods: Vec<PodLoad<'_>> = loads.iter().enumerate()
                .map(|(i, &(declared, u))| pod(&names[i], declared, Some(u), t))
                .collect();
            let before: Vec<f64> = pods.iter().map(|p| w.factor(p.name)).collect();
            w.step(&d, &pods, t);
            for (p, b) in pods.iter().zip(before) {
                let f = w.factor(p.name);
                prop_assert!((d.floor..=d.ceiling).contains(&f), "{f}");
                prop_assert!(f / b <= 1.0 + d.max_step + 1e-9 && f / b >= 1.0 - d.max_step - 1e-9,
                    "{b} -> {f}");
            }
        }
    }

    /// A constant load with noise converges and then stays put, whatever the seed.
    #[test]
    fn a_noisy_constant_load_settles(seed in any::<u64>()) {
        let d = Damping::default();
        let trace = sim::run(&scenario(9, false, seed), &d, 20 + 60, true);
        let late: usize = trace[20..].iter().map(|p| p.rewrites).sum();
        prop_assert!(late <= 9, "{late} rewrites in the 15 minutes after convergence");
        prop_assert!(trace.iter().all(|p| p.utilization.iter().all(|&u| u > 0.0)), "a pod starved");
    }

    /// Figures that wander around every threshold never switch sooner than the dwell time.
    #[test]
    fn the_switch_respects_its_dwell_time(noise in prop::collection::vec((0.5f64..1.1, 1.0f64..2.0), 1..200)) {
        let rule = AutoRule::default();
        let mut p = AutoPolicy::new(Policy::RoundRobin, 0);
        let mut last_switch = i64::MIN / 2;
        for (k, &(mean_utilization, capacity_spread)) in noise.iter().enumerate() {
            let now = (k as i64 + 1) * 15_000;
            let f = Figures { weighed: 5, mean_utilization, capacity_spread };
            if p.step(&rule, Policy::RoundRobin, &f, now) {
                prop_assert!(now - last_switch >= rule.dwell_ms, "switched after {} ms", now - last_switch);
                last_switch = now;
            }
        }
    }

    /// ConsistentHash is never switched away from.
    #[test]
    fn consistent_hash_is_kept(mean_utilization in 0.0f64..3.0, capacity_spread in 1.0f64..5.0) {
        let mut p = AutoPolicy::new(Policy::ConsistentHash, 0);
        let f = Figures { weighed: 5, mean_utilization, capacity_spread };
        p.step(&AutoRule::default(), Policy::ConsistentHash, &f, 1_000_000);
        prop_assert_eq!((p.policy, p.reason), (Policy::ConsistentHash, Reason::Pinned));
    }
}

#[test]
fn the_switch_goes_hot_then_uneven_then_back_with_hysteresis() {
    let rule = AutoRule::default();
    let mut p = AutoPolicy::new(Policy::RoundRobin, 0);
    let fig = |mean_utilization, capacity_spread| Figures {
        weighed: 4,
        mean_utilization,
        capacity_spread,
    };
    let dwell = rule.dwell_ms;
    assert!(p.step(&rule, Policy::RoundRobin, &fig(0.95, 1.0), dwell));
    assert_eq!((p.policy, p.reason), (Policy::LeastRequest, Reason::Hot));
    assert!(
        !p.step(&rule, Policy::RoundRobin, &fig(0.75, 1.0), 3 * dwell),
        "above the exit"
    );
    assert!(p.step(&rule, Policy::RoundRobin, &fig(0.5, 1.6), 3 * dwell));
    assert_eq!(
        (p.policy, p.reason),
        (Policy::WeightedRoundRobin, Reason::Uneven)
    );
    assert!(
        !p.step(&rule, Policy::RoundRobin, &fig(0.5, 1.1), 4 * dwell - 1),
        "dwell"
    );
    assert!(
        !p.step(&rule, Policy::RoundRobin, &fig(0.5, 1.3), 5 * dwell),
        "above the exit"
    );
    assert!(p.step(&rule, Policy::RoundRobin, &fig(0.5, 1.1), 7 * dwell));
    assert_eq!((p.policy, p.reason), (Policy::RoundRobin, Reason::Declared));
    assert!(
        !p.step(&rule, Policy::RoundRobin, &fig(2.0, 3.0), 7 * dwell + 1),
        "dwell after a switch"
    );
    let few = Figures {
        weighed: 1,
        mean_utilization: 2.0,
        capacity_spread: 3.0,
    };
    assert!(
        !p.step(&rule, Policy::RoundRobin, &few, 20 * dwell),
        "one pod's data is too little"
    );
}

fn figs(cpu: i64) -> Option<crate::model::record::LoadFigures> {
    Some(crate::model::record::LoadFigures {
        cpu_utilization: Some(crate::model::record::Milli(cpu)),
        ..Default::default()
    })
}

#[test]
fn figures_move_with_the_factor_only() {
    use super::carried;
    let first = carried(None, 1.0, figs(500), true).expect("measured: an entry");
    assert_eq!(first.figures.as_deref(), figs(500).as_ref());
    // Same factor, new figures: the record keeps the ones it was weighed with.
    let same = carried(Some(&first), 1.0, figs(700), true).unwrap();
    assert!(Arc::ptr_eq(
        same.figures.as_ref().unwrap(),
        first.figures.as_ref().unwrap()
    ));
    // The factor moves: the figures it was computed from ride along.
    let moved = carried(Some(&same), 0.8, figs(900), true).unwrap();
    assert_eq!(
        (moved.factor, moved.figures.as_deref()),
        (0.8, figs(900).as_ref())
    );
    // A scrape that missed the pod keeps its figures; a pod no longer weighed drops them.
    let missed = carried(Some(&moved), 0.7, None, true).unwrap();
    assert_eq!(missed.figures.as_deref(), figs(900).as_ref());
    assert_eq!(carried(Some(&moved), 1.0, None, false), None);
    assert_eq!(carried(None, 1.0, None, false), None, "nothing to carry");
}

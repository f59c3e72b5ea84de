//! A closed-loop model of pods under traffic, to prove the load weighting (tests) and measure it
//! (`examples/load_sim.rs`, run by `scripts/bench`): traffic is split by the published weights,
//! utilization is traffic ÷ capacity, and the metric carries seeded noise. Pure and deterministic.

use super::weights::{Damping, LoadWeights, PodLoad, Sample, effective};
use crate::model::weights::{Member, solve};

/// One simulated pod.
#[derive(Clone, Debug)]
pub struct SimPod {
    /// Pod name (unique).
    pub name: String,
    /// Weight group index.
    pub group: usize,
    /// Declared weight.
    pub declared: u32,
    /// Requests it can serve at utilization 1.0 (relative units).
    pub capacity: f64,
}

/// The scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The pods.
    pub pods: Vec<SimPod>,
    /// Group shares (`None`: no groups).
    pub shares: Option<Vec<u32>>,
    /// Total traffic as a fraction of the total capacity (0.6: the mean pod at 60 %).
    pub load: f64,
    /// Relative metric noise, uniform in ±noise (0.1: ±10 %).
    pub noise: f64,
    /// Seed of the noise.
    pub seed: u64,
}

/// What one period looked like.
#[derive(Clone, Debug, PartialEq)]
pub struct Period {
    /// Time since the start, ms.
    pub t_ms: i64,
    /// Published weights, by pod.
    pub weights: Vec<u32>,
    /// True utilization, by pod.
    pub utilization: Vec<f64>,
    /// Pods whose published weight changed at the end of this period.
    pub rewrites: usize,
}

impl Period {
    /// The hottest pod's utilization over the mean.
    pub fn hottest_over_mean(&self) -> f64 {
        let n = self.utilization.len() as f64;
        let mean = self.utilization.iter().sum::<f64>() / n;
        self.utilization.iter().copied().fold(0.0, f64::max) / mean
    }
}

/// Runs `periods` periods; `weighted: false` keeps the declared weights (the baseline).
pub fn run(s: &Scenario, d: &Damping, periods: usize, weighted: bool) -> Vec<Period> {
    let mut rng = SplitMix(s.seed);
    let mut lw = LoadWeights::default();
    let mut weights = publish(s, &lw);
    let total_capacity: f64 = s.pods.iter().map(|p| p.capacity).sum();
    let mut out = Vec::with_capacity(periods);
    for k in 1..=periods {
        let t_ms = k as i64 * d.period_ms;
        let sum: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        let utilization: Vec<f64> = s
            .pods
            .iter()
            .zip(&weights)
            .map(|(p, &w)| s.load * total_capacity * f64::from(w) / sum / p.capacity)
            .collect();
        let mut rewrites = 0;
        if weighted {
            let samples: Vec<Sample> = utilization
                .iter()
                .map(|u| Sample {
                    utilization: u * (1.0 + s.noise * rng.signed()),
                    at_ms: t_ms,
                })
                .collect();
            let loads: Vec<PodLoad<'_>> = s
                .pods
                .iter()
                .zip(&samples)
                .map(|(p, &sample)| PodLoad {
                    name: &p.name,
                    group: p.group,
                    declared: p.declared,
                    ready_since_ms: -d.blackout_ms,
                    sample: Some(sample),
                })
                .collect();
            lw.step(d, &loads, t_ms);
            let next = publish(s, &lw);
            rewrites = next.iter().zip(&weights).filter(|(a, b)| a != b).count();
            weights = next;
        }
        out.push(Period {
            t_ms,
            weights: weights.clone(),
            utilization,
            rewrites,
        });
    }
    out
}

/// The weights the solver publishes for the current factors.
pub fn publish(s: &Scenario, lw: &LoadWeights) -> Vec<u32> {
    let members: Vec<Member<'_>> = s
        .pods
        .iter()
        .map(|p| Member {
            group: p.group,
            name: &p.name,
            relative: effective(p.declared, lw.factor(&p.name)),
        })
        .collect();
    solve(s.shares.as_deref(), &members)
}

/// A small seeded generator (SplitMix64): the model needs reproducible noise, not quality.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn signed(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

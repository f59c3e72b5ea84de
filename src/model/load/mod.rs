//! Load-aware balancing, the pure half: damped load factors for pods' weights (weights.rs), the
//! automatic policy switch (policy.rs), utilization from metrics (measure.rs), and a closed-loop
//! model to prove the weighting and the switch (sim.rs).
//! No metrics API and no clocks here: samples and the time come in as arguments.

pub mod measure;
pub mod policy;
pub mod sim;
pub mod weights;

#[cfg(test)]
mod tests;

pub use self::policy::{AutoPolicy, AutoRule, Figures, Reason};
pub use self::weights::{Damping, LoadWeights, PodLoad, Sample, Step, Unweighed, effective};

/// The figures the policy switch reads, over the pods weighed by load at `now_ms`.
pub fn figures(w: &LoadWeights, d: &Damping, pods: &[PodLoad<'_>], now_ms: i64) -> Figures {
    let mut weighed = 0;
    let mut sum = 0.0;
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for p in pods {
        let (Some(s), Some(c)) = (p.sample, w.capacity(p.name)) else {
            continue;
        };
        if LoadWeights::unweighed(d, p, now_ms).is_some() {
            continue;
        }
        weighed += 1;
        sum += s.utilization;
        let per_weight = c / f64::from(p.declared.max(1));
        lo = lo.min(per_weight);
        hi = hi.max(per_weight);
    }
    Figures {
        weighed,
        mean_utilization: if weighed > 0 {
            sum / weighed as f64
        } else {
            0.0
        },
        capacity_spread: if weighed > 0 && lo > 0.0 {
            hi / lo
        } else {
            1.0
        },
    }
}

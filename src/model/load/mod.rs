//! Load-aware balancing, the pure half: damped load factors for pods' weights (weights.rs), the
//! automatic policy switch (policy.rs), utilization from metrics (measure.rs), and a closed-loop
//! model to prove the weighting and the switch (sim.rs).
//! No metrics API and no clocks here: samples and the time come in as arguments.

use std::collections::HashMap;
use std::sync::Arc;

use smol_str::SmolStr;

use crate::model::record::LoadFigures;

pub mod measure;
pub mod policy;
pub mod sim;
pub mod weights;

#[cfg(test)]
mod tests;

pub use self::policy::{AutoPolicy, AutoRule, Figures, Reason};
pub use self::weights::{Damping, LoadWeights, PodLoad, Sample, Step, Unweighed, effective};

/// What the weighting says about one pod: the factor its declared weight is multiplied by,
/// and the figures its record carries.
#[derive(Clone, Debug, PartialEq)]
pub struct PodWeight {
    /// 1: the declared weight.
    pub factor: f32,
    /// The figures measured when the factor was set.
    pub figures: Option<Arc<LoadFigures>>,
}

/// The pods' weights in force, by pod name; a pod not in it has factor 1 and no figures.
pub type Factors = HashMap<SmolStr, PodWeight>;

/// A pod's entry after a period: `factor` as weighed now, `fresh` the figures measured now,
/// `weighed` whether its factor still rests on a sample. The figures change with the factor
/// only, so that they never rewrite a record by themselves (a full resync rebuilds every
/// record); a sample missed or lost, or a first one, still reaches them. `None`: no entry.
pub fn carried(
    old: Option<&PodWeight>,
    factor: f32,
    fresh: Option<LoadFigures>,
    weighed: bool,
) -> Option<PodWeight> {
    let kept = old.and_then(|o| o.figures.clone()).filter(|_| weighed);
    let fresh = || fresh.map(Arc::new);
    let figures = match old {
        Some(o) if o.factor == factor => kept.or_else(fresh),
        _ => fresh().or(kept),
    };
    (factor != 1.0 || figures.is_some()).then_some(PodWeight { factor, figures })
}

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

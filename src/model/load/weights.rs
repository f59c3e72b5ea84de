//! Damped load factors: from each pod's measured utilization, how much of its weight group's
//! budget it should get. Pure: samples and the time come in as arguments; no metrics API here.
//!
//! A pod's traffic follows its effective weight (`declared × factor`), so `effective ÷
//! utilization` estimates its capacity whatever the weights were, and that estimate is what is
//! smoothed (an EWMA): unlike utilization, it does not move when the weights move. The target
//! factor makes every pod's weight proportional to its capacity, normalised so the group keeps
//! its declared total; the group solver then splits the group's budget, so group shares never
//! move. Rewrites are rare by design: a factor changes only when its target is off by more than
//! the dead band, by at most the step limit, within the floor and ceiling.

use std::collections::HashMap;

use smol_str::SmolStr;

/// The damping of a resource's load weighting (defaults explained in the README).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Damping {
    /// How often samples are taken and factors reconsidered, in ms.
    pub period_ms: i64,
    /// Weight of a new capacity estimate in the moving average (0 < alpha ≤ 1).
    pub alpha: f64,
    /// The largest relative change of a factor in one period (0.25: ±25 %).
    pub max_step: f64,
    /// The lowest factor, relative to the group's mean (0.1: a tenth of an average pod's).
    pub floor: f64,
    /// The highest factor, relative to the group's mean (10: ten times an average pod's).
    pub ceiling: f64,
    /// A factor whose target is within this relative distance is not rewritten (0.1: 10 %).
    pub dead_band: f64,
    /// A pod without a sample newer than this (ms) goes back to its declared weight.
    pub expire_ms: i64,
    /// A pod ready for less than this (ms) keeps its declared weight.
    pub blackout_ms: i64,
}

impl Default for Damping {
    fn default() -> Self {
        Damping {
            period_ms: 15_000,
            alpha: 0.3,
            max_step: 0.25,
            floor: 0.1,
            ceiling: 10.0,
            dead_band: 0.1,
            expire_ms: 180_000,
            blackout_ms: 30_000,
        }
    }
}

/// One measurement of a pod's load: utilization relative to the target (1.0: at target), and
/// when the window it covers ended (Unix ms).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Usage ÷ request ÷ target, the highest over the resource's metrics.
    pub utilization: f64,
    /// End of the measured window.
    pub at_ms: i64,
}

/// A ready pod as the weighting sees it in one period.
#[derive(Clone, Copy, Debug)]
pub struct PodLoad<'a> {
    /// Pod name.
    pub name: &'a str,
    /// Weight group index.
    pub group: usize,
    /// The weight the spec gives it (annotation or default), ≥ 1.
    pub declared: u32,
    /// When it turned ready (Unix ms).
    pub ready_since_ms: i64,
    /// Its latest sample, if any.
    pub sample: Option<Sample>,
}

/// What one pod's weighting remembers between periods.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Estimate {
    /// Smoothed capacity, in effective-weight units per unit of utilization.
    capacity: f64,
    /// The sample last folded in.
    last: Sample,
    /// The factor in force, and the one before it with the time it was replaced: a sample
    /// whose window ended before the change measured the old one.
    factor: f64,
    previous: f64,
    changed_ms: i64,
}

/// Why a pod has no load factor: it is weighed as declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unweighed {
    /// Ready for less than the blackout.
    Warming,
    /// No sample yet, or none newer than `expire_ms`.
    NoData,
}

/// The outcome of one period.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    /// Pods whose factor changed: their records must be rebuilt.
    pub changed: Vec<SmolStr>,
    /// Pods whose target moved but stayed inside the dead band.
    pub suppressed: u32,
}

/// The load factors of one resource's pods, kept between periods.
#[derive(Clone, Debug, Default)]
pub struct LoadWeights {
    estimates: HashMap<SmolStr, Estimate>,
}

impl LoadWeights {
    /// The factor a pod's declared weight is multiplied by (1 when it has none).
    pub fn factor(&self, pod: &str) -> f64 {
        self.estimates.get(pod).map_or(1.0, |e| e.factor)
    }

    /// The pod's smoothed capacity estimate, if it is weighed by load.
    pub fn capacity(&self, pod: &str) -> Option<f64> {
        self.estimates.get(pod).map(|e| e.capacity)
    }

    /// The sample a pod's estimate last took in, if it is weighed by load.
    pub fn last_sample(&self, pod: &str) -> Option<Sample> {
        self.estimates.get(pod).map(|e| e.last)
    }

    /// Pods weighed by load.
    pub fn weighed(&self) -> usize {
        self.estimates.len()
    }

    /// Why `pod` is weighed as declared at `now_ms`, `None` when it is weighed by load.
    pub fn unweighed(d: &Damping, pod: &PodLoad<'_>, now_ms: i64) -> Option<Unweighed> {
        if now_ms - pod.ready_since_ms < d.blackout_ms {
            return Some(Unweighed::Warming);
        }
        match pod.sample {
            Some(s) if now_ms - s.at_ms <= d.expire_ms && s.utilization.is_finite() => None,
            _ => Some(Unweighed::NoData),
        }
    }

    /// One period: folds in the pods' samples and moves the factors toward their targets.
    /// `pods` are the resource's ready pods; pods not among them are forgotten.
    pub fn step(&mut self, d: &Damping, pods: &[PodLoad<'_>], now_ms: i64) -> Step {
        let mut step = Step::default();
        self.forget(d, pods, now_ms, &mut step);
        for p in pods {
            if LoadWeights::unweighed(d, p, now_ms).is_none() {
                self.observe(d, p, now_ms);
            }
        }
        let groups = pods.iter().map(|p| p.group).max().map_or(0, |g| g + 1);
        for g in 0..groups {
            self.retarget(d, pods, g, now_ms, &mut step);
        }
        step.changed.sort_unstable();
        step
    }

    /// Drops the estimates of pods that left, warm up again or lost their data: they go back
    /// to their declared weight at once.
    fn forget(&mut self, d: &Damping, pods: &[PodLoad<'_>], now_ms: i64, step: &mut Step) {
        let keep: HashMap<&str, &PodLoad<'_>> = pods.iter().map(|p| (p.name, p)).collect();
        self.estimates.retain(|name, e| {
            let kept = keep
                .get(name.as_str())
                .is_some_and(|p| LoadWeights::unweighed(d, p, now_ms).is_none());
            if !kept && e.factor != 1.0 && keep.contains_key(name.as_str()) {
                step.changed.push(name.clone());
            }
            kept
        });
    }

    /// Folds a new sample into the pod's capacity estimate.
    fn observe(&mut self, d: &Damping, p: &PodLoad<'_>, now_ms: i64) {
        let Some(s) = p.sample else { return };
        let seen = self.estimates.get(p.name);
        if seen.is_some_and(|e| e.last.at_ms >= s.at_ms) {
            return;
        }
        let factor = seen.map_or(1.0, |e| e.factor);
        let measured = seen.map_or(1.0, |e| {
            if s.at_ms < e.changed_ms {
                e.previous
            } else {
                e.factor
            }
        });
        let capacity = f64::from(p.declared) * measured / s.utilization.max(1e-3);
        let e = self.estimates.entry(p.name.into()).or_insert(Estimate {
            capacity,
            last: s,
            factor,
            previous: factor,
            changed_ms: now_ms,
        });
        e.capacity += d.alpha * (capacity - e.capacity);
        e.last = s;
    }

    /// Moves the factors of group `g`'s weighed pods toward capacity-proportional weights.
    fn retarget(&mut self, d: &Damping, pods: &[PodLoad<'_>], g: usize, now: i64, step: &mut Step) {
        let members: Vec<(&PodLoad<'_>, f64)> = pods
            .iter()
            .filter(|p| p.group == g)
            .filter_map(|p| Some((p, self.estimates.get(p.name)?.capacity)))
            .collect();
        let declared: f64 = members.iter().map(|(p, _)| f64::from(p.declared)).sum();
        let capacity: f64 = members.iter().map(|(_, c)| c).sum();
        if members.len() < 2 || capacity <= 0.0 {
            return;
        }
        for (p, c) in members {
            // Capacity-proportional, with the group's declared total kept.
            let target =
                (c / capacity * declared / f64::from(p.declared)).clamp(d.floor, d.ceiling);
            let e = self
                .estimates
                .get_mut(p.name)
                .expect("member has an estimate");
            match damped(d, e.factor, target) {
                Some(next) => {
                    e.previous = e.factor;
                    e.factor = next;
                    e.changed_ms = now;
                    step.changed.push(p.name.into());
                }
                None if target != e.factor => step.suppressed += 1,
                None => {}
            }
        }
    }
}

/// The factor after one period, `None` when the target is inside the dead band.
fn damped(d: &Damping, factor: f64, target: f64) -> Option<f64> {
    if (target / factor - 1.0).abs() < d.dead_band {
        return None;
    }
    let lo = factor * (1.0 - d.max_step);
    let hi = factor * (1.0 + d.max_step);
    Some(target.clamp(lo, hi).clamp(d.floor, d.ceiling))
}

/// The weight a pod's declared weight becomes under `factor`: at least 1.
pub fn effective(declared: u32, factor: f64) -> u32 {
    let w = (f64::from(declared) * factor).round();
    if w >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        (w as u32).max(1)
    }
}

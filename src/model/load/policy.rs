//! The automatic policy switch: which load-balancing policy a resource publishes, from its
//! load. Pure: the figures and the time come in as arguments.
//!
//! Hysteresis on every threshold (a higher one to enter, a lower one to leave) and a minimum
//! dwell time keep it from flapping. The weighted mode keys on the spread of the pods'
//! estimated capacities, which the weighting does not remove (the spread of utilization, which
//! it does remove, would switch back as soon as the weights worked).

use crate::model::policy::Policy;

/// When to switch (defaults explained in the README).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AutoRule {
    /// Mean utilization (1.0: at target) at or above which LeastRequest is published...
    pub hot_enter: f64,
    /// ...and below which it is left.
    pub hot_exit: f64,
    /// Capacity spread (highest ÷ lowest capacity per declared weight) at or above which a
    /// weighted policy is published...
    pub spread_enter: f64,
    /// ...and below which it is left.
    pub spread_exit: f64,
    /// The least time between two switches, ms.
    pub dwell_ms: i64,
}

impl Default for AutoRule {
    fn default() -> Self {
        AutoRule {
            hot_enter: 0.9,
            hot_exit: 0.7,
            spread_enter: 1.5,
            spread_exit: 1.25,
            dwell_ms: 120_000,
        }
    }
}

/// What the switch reads each period.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Figures {
    /// Pods with load data.
    pub weighed: usize,
    /// Their mean utilization relative to the target.
    pub mean_utilization: f64,
    /// Highest ÷ lowest estimated capacity per declared weight among them (1: all alike).
    pub capacity_spread: f64,
}

/// Why the published policy is what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// As the spec declares: load is even and moderate, or there is too little data.
    Declared,
    /// The mean utilization is high: requests go where fewest are in flight.
    Hot,
    /// The pods' capacities differ: requests follow the load-derived weights.
    Uneven,
    /// ConsistentHash is never switched away from (keys would move).
    Pinned,
}

impl Reason {
    /// The name shown on the status and in the service record.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Declared => "Declared",
            Reason::Hot => "HighUtilization",
            Reason::Uneven => "UnevenCapacity",
            Reason::Pinned => "ConsistentHashKept",
        }
    }
}

/// The policy in force and since when.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AutoPolicy {
    /// The published policy.
    pub policy: Policy,
    /// Why.
    pub reason: Reason,
    /// When it was switched to (Unix ms).
    pub since_ms: i64,
}

impl AutoPolicy {
    /// The state of a resource that has just declared `declared`.
    pub fn new(declared: Policy, now_ms: i64) -> AutoPolicy {
        let reason = match declared {
            Policy::ConsistentHash => Reason::Pinned,
            _ => Reason::Declared,
        };
        AutoPolicy {
            policy: declared,
            reason,
            since_ms: now_ms,
        }
    }

    /// One period: switches when the figures call for another policy and the dwell time has
    /// passed. Returns true on a switch.
    pub fn step(&mut self, rule: &AutoRule, declared: Policy, f: &Figures, now_ms: i64) -> bool {
        let (policy, reason) = self.wanted(rule, declared, f);
        let dwelt = now_ms - self.since_ms >= rule.dwell_ms;
        if policy == self.policy || !(dwelt || declared == Policy::ConsistentHash) {
            return false;
        }
        *self = AutoPolicy {
            policy,
            reason,
            since_ms: now_ms,
        };
        true
    }

    /// The policy the figures call for, given the one in force (for the hysteresis).
    fn wanted(&self, rule: &AutoRule, declared: Policy, f: &Figures) -> (Policy, Reason) {
        if declared == Policy::ConsistentHash {
            return (Policy::ConsistentHash, Reason::Pinned);
        }
        if f.weighed < 2 {
            return (declared, Reason::Declared);
        }
        let hot = match self.reason {
            Reason::Hot => f.mean_utilization >= rule.hot_exit,
            _ => f.mean_utilization >= rule.hot_enter,
        };
        if hot {
            return (Policy::LeastRequest, Reason::Hot);
        }
        let uneven = match self.reason {
            Reason::Uneven => f.capacity_spread >= rule.spread_exit,
            _ => f.capacity_spread >= rule.spread_enter,
        };
        match uneven {
            true => (weighted(declared), Reason::Uneven),
            false => (declared, Reason::Declared),
        }
    }
}

/// The weighted form of a declared policy: random stays random.
fn weighted(declared: Policy) -> Policy {
    match declared {
        Policy::Random | Policy::WeightedRandom => Policy::WeightedRandom,
        _ => Policy::WeightedRoundRobin,
    }
}

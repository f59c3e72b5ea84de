//! What a snapshot does to the published weights before the policies see them: the warm-up
//! ramp of new endpoints and the opt-in preference for the caller's zone. Pure: `now` comes in
//! as an argument, and everything here runs at snapshot build time, never per pick.
//!
//! The ramp follows Dubbo's `AbstractLoadBalance.calculateWarmupWeight` (weight × uptime ÷
//! warm-up, at least 1, at most the weight), with time taken in steps so a snapshot is rebuilt
//! a bounded number of times per warm-up rather than on every pick.

/// The ramp moves in this many steps per warm-up (5 % of the weight each)...
pub const RAMP_STEPS: i64 = 20;
/// ...but no more often than this, so a short warm-up does not rebuild tables back to back.
pub const MIN_STEP_MS: i64 = 500;
/// Zone preference holds while the caller's zone has at least this share of the ready weight,
/// unless the client sets its own threshold.
pub const DEFAULT_ZONE_MIN_SHARE: f64 = 0.2;

/// How a client shapes the weights it picks by (its own settings; the warm-up comes from the
/// service record).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ZonePreference {
    /// The caller's zone (`topology.kubernetes.io/zone` of where it runs); `None`: no preference.
    pub zone: Option<String>,
    /// The least share (0 to 1) of the ready weight the zone must hold to be preferred.
    pub min_share: f64,
}

impl ZonePreference {
    /// Prefer `zone` while it holds [`DEFAULT_ZONE_MIN_SHARE`] of the ready weight.
    pub fn new(zone: impl Into<String>) -> ZonePreference {
        ZonePreference {
            zone: Some(zone.into()),
            min_share: DEFAULT_ZONE_MIN_SHARE,
        }
    }
}

/// The length of one ramp step for a warm-up of `warmup_ms`.
pub fn step_ms(warmup_ms: i64) -> i64 {
    (warmup_ms / RAMP_STEPS).max(MIN_STEP_MS)
}

/// An endpoint's weight at `now_ms`: linear in the time since `ready_since_ms`, counted in whole
/// steps, within `[1, weight]`; the full weight once the warm-up is over, when it is 0, or when
/// the ready time is unknown (0). A ready time in the future (clock skew) weighs 1, as in Dubbo.
pub fn ramped_weight(weight: u32, ready_since_ms: i64, warmup_ms: i64, now_ms: i64) -> u32 {
    if weight == 0 || warmup_ms <= 0 || ready_since_ms <= 0 {
        return weight;
    }
    let elapsed = now_ms.saturating_sub(ready_since_ms).max(0);
    if elapsed >= warmup_ms {
        return weight;
    }
    let step = step_ms(warmup_ms);
    let counted = elapsed / step * step;
    let ramped = u128::from(weight) * counted as u128 / warmup_ms as u128;
    (ramped as u32).clamp(1, weight)
}

/// When [`ramped_weight`] next changes for this endpoint, if it is still warming at `now_ms`.
pub fn next_step_ms(weight: u32, ready_since_ms: i64, warmup_ms: i64, now_ms: i64) -> Option<i64> {
    if weight == 0 || warmup_ms <= 0 || ready_since_ms <= 0 {
        return None;
    }
    let end = ready_since_ms.saturating_add(warmup_ms);
    if now_ms >= end {
        return None;
    }
    let elapsed = now_ms.saturating_sub(ready_since_ms).max(0);
    let step = step_ms(warmup_ms);
    Some(
        ready_since_ms
            .saturating_add((elapsed / step + 1) * step)
            .min(end),
    )
}

/// Which of the pickable endpoints (`zones[i]`, `weights[i]`) to pick from: those in the
/// preferred zone while their share of the total weight is at least the threshold (and they
/// weigh anything), otherwise all. Returns the mask, `true` for kept.
pub fn zone_mask(zones: &[Option<&str>], weights: &[u32], pref: &ZonePreference) -> Vec<bool> {
    let all = vec![true; zones.len()];
    let Some(zone) = pref.zone.as_deref() else {
        return all;
    };
    let inside: Vec<bool> = zones.iter().map(|z| *z == Some(zone)).collect();
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let local: u64 = weights
        .iter()
        .zip(&inside)
        .filter(|(_, in_zone)| **in_zone)
        .map(|(&w, _)| u64::from(w))
        .sum();
    if local > 0 && local as f64 >= pref.min_share * total as f64 {
        inside
    } else {
        all
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const READY: i64 = 1_767_225_600_000;

    #[test]
    fn the_ramp_starts_at_one_climbs_by_steps_and_ends_at_the_weight() {
        let w = |t| ramped_weight(1000, READY, 60_000, READY + t);
        assert_eq!(w(0), 1);
        assert_eq!(w(2_999), 1, "within the first 3 s step");
        assert_eq!(w(3_000), 50);
        assert_eq!(w(30_000), 500);
        assert_eq!(w(59_999), 950);
        assert_eq!(w(60_000), 1000);
        assert_eq!(w(-5_000), 1, "a ready time in the future weighs 1");
        assert_eq!(ramped_weight(1000, 0, 60_000, READY), 1000, "unknown");
        assert_eq!(ramped_weight(1000, READY, 0, READY), 1000, "no warm-up");
        assert_eq!(ramped_weight(0, READY, 60_000, READY), 0, "draining");
    }

    #[test]
    fn steps_are_due_when_the_weight_moves_and_not_after_the_end() {
        assert_eq!(
            next_step_ms(1000, READY, 60_000, READY + 100),
            Some(READY + 3_000)
        );
        assert_eq!(
            next_step_ms(1000, READY, 60_000, READY + 3_000),
            Some(READY + 6_000)
        );
        assert_eq!(
            next_step_ms(1000, READY, 61_000, READY + 60_000),
            Some(READY + 61_000),
            "the last step ends exactly at the warm-up's end"
        );
        assert_eq!(next_step_ms(1000, READY, 60_000, READY + 60_000), None);
        assert_eq!(next_step_ms(1000, READY, 0, READY), None);
        assert_eq!(next_step_ms(1000, 0, 60_000, READY), None);
        assert_eq!(step_ms(2_000), MIN_STEP_MS);
    }

    #[test]
    fn a_zone_is_preferred_only_while_it_holds_enough_weight() {
        let zones = [Some("a"), Some("b"), None, Some("a")];
        let pref = ZonePreference::new("a");
        assert_eq!(
            zone_mask(&zones, &[10, 10, 10, 10], &pref),
            [true, false, false, true]
        );
        // Zone a holds 2 of 102: below 20 %, so everything is kept.
        assert_eq!(zone_mask(&zones, &[1, 50, 50, 1], &pref), [true; 4]);
        let nowhere = ZonePreference::new("z");
        assert_eq!(zone_mask(&zones, &[1, 1, 1, 1], &nowhere), [true; 4]);
        assert_eq!(zone_mask(&[], &[], &pref), Vec::<bool>::new());
        let any = ZonePreference::default();
        assert_eq!(zone_mask(&zones, &[1, 1, 1, 1], &any), [true; 4]);
    }

    proptest! {
        /// Monotone in time, always within [1, weight], the weight once the warm-up is over,
        /// and no effect at all without a warm-up.
        #[test]
        fn the_ramp_is_monotone_bounded_and_complete(
            weight in 1u32..=u32::MAX,
            warmup_s in 0i64..=3600,
            t1 in -10_000i64..4_000_000,
            dt in 0i64..4_000_000,
        ) {
            let warmup = warmup_s * 1000;
            let a = ramped_weight(weight, READY, warmup, READY + t1);
            let b = ramped_weight(weight, READY, warmup, READY + t1 + dt);
            prop_assert!(a <= b, "{a} then {b}");
            prop_assert!((1..=weight).contains(&a));
            prop_assert_eq!(ramped_weight(weight, READY, warmup, READY + warmup), weight);
            prop_assert_eq!(ramped_weight(weight, READY, 0, READY + t1), weight);
            // Nothing changes between now and the step said to be next.
            if let Some(next) = next_step_ms(weight, READY, warmup, READY + t1) {
                prop_assert!(next > READY + t1);
                prop_assert_eq!(ramped_weight(weight, READY, warmup, next - 1), a);
            } else {
                prop_assert_eq!(a, weight);
            }
        }

        /// Only the zone's endpoints are kept while it qualifies; all of them otherwise.
        #[test]
        fn zone_masks_keep_the_zone_or_everything(
            spec in prop::collection::vec((prop::option::of(0u8..3), 1u32..1000), 0..40),
            min_share in 0.0f64..1.0,
        ) {
            let names = ["z0", "z1", "z2"];
            let zones: Vec<Option<&str>> = spec.iter().map(|(z, _)| z.map(|z| names[z as usize])).collect();
            let weights: Vec<u32> = spec.iter().map(|(_, w)| *w).collect();
            let pref = ZonePreference { zone: Some("z0".into()), min_share };
            let mask = zone_mask(&zones, &weights, &pref);
            let local: u64 = spec.iter().filter(|(z, _)| *z == Some(0)).map(|(_, w)| u64::from(*w)).sum();
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            if local > 0 && local as f64 >= min_share * total as f64 {
                for (m, z) in mask.iter().zip(&zones) {
                    prop_assert_eq!(*m, *z == Some("z0"));
                }
            } else {
                prop_assert!(mask.iter().all(|&m| m));
            }
        }
    }
}

//! The weight solver: turns group shares and per-pod relative weights into integer endpoint
//! weights. Pure and deterministic; independent of input order.
//!
//! Semantics (also in the README):
//! * Without groups, an endpoint's weight is its relative weight (annotation or `weights.default`).
//! * With groups, every group with at least one ready endpoint gets a budget of
//!   `share × SHARE_UNIT`; so the groups' parts of the total stay in the ratio of their shares,
//!   whatever their sizes. A group without ready endpoints contributes nothing.
//! * Inside a group the budget is split by relative weight into integers that sum exactly to the
//!   budget (largest remainder; ties go to the smaller name). Each endpoint first gets 1, so no
//!   ready endpoint ever gets 0; only when a group has more endpoints than budget units does each
//!   get 1 and the sum exceed the budget.

/// Budget units per share point.
pub const SHARE_UNIT: u64 = 10_000;

/// One ready endpoint to weigh.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// Index of the endpoint's group.
    pub group: usize,
    /// Tie-break key; unique within a registration (the pod name).
    pub name: &'a str,
    /// Relative weight inside the group (≥ 1).
    pub relative: u32,
}

/// Weights for `members`, in their order. `shares[g]` is group g's share; `None` means no groups
/// were declared and relative weights are published as they are.
pub fn solve(shares: Option<&[u32]>, members: &[Member<'_>]) -> Vec<u32> {
    let Some(shares) = shares else {
        return members.iter().map(|m| m.relative.max(1)).collect();
    };
    let mut out = vec![0u32; members.len()];
    let mut by_group: Vec<Vec<usize>> = vec![Vec::new(); shares.len()];
    for (i, m) in members.iter().enumerate() {
        by_group[m.group].push(i);
    }
    for (g, idx) in by_group.iter().enumerate() {
        if idx.is_empty() {
            continue;
        }
        let budget = u64::from(shares[g]) * SHARE_UNIT;
        split(budget, idx, members, &mut out);
    }
    out
}

/// Splits `budget` over the members at `idx`, writing into `out`.
fn split(budget: u64, idx: &[usize], members: &[Member<'_>], out: &mut [u32]) {
    let n = idx.len() as u64;
    if budget <= n {
        for &i in idx {
            out[i] = 1;
        }
        return;
    }
    let spread = u128::from(budget - n);
    let total: u128 = idx
        .iter()
        .map(|&i| u128::from(members[i].relative.max(1)))
        .sum();
    let mut handed = 0u128;
    let mut remainders: Vec<(u128, &str, usize)> = Vec::with_capacity(idx.len());
    for &i in idx {
        let num = spread * u128::from(members[i].relative.max(1));
        let q = num / total;
        handed += q;
        out[i] = 1 + u32::try_from(q).unwrap_or(u32::MAX - 1);
        remainders.push((num % total, members[i].name, i));
    }
    let left = (spread - handed) as usize;
    if left > 0 {
        // Largest remainder first; equal remainders go to the smaller name so the result does
        // not depend on input order. Only which `left` members come first matters, not their
        // order: a selection, linear where a sort of unordered names is not.
        let first = |a: &(u128, &str, usize), b: &(u128, &str, usize)| {
            b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1))
        };
        if left < remainders.len() {
            remainders.select_nth_unstable_by(left - 1, first);
        }
        for &(_, _, i) in &remainders[..left] {
            out[i] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(spec: &[(usize, u32)]) -> (Vec<String>, Vec<(usize, u32)>) {
        (
            (0..spec.len()).map(|i| format!("pod-{i:04}")).collect(),
            spec.to_vec(),
        )
    }

    fn run(shares: Option<&[u32]>, names: &[String], spec: &[(usize, u32)]) -> Vec<u32> {
        let ms: Vec<Member> = spec
            .iter()
            .zip(names)
            .map(|(&(group, relative), name)| Member {
                group,
                name,
                relative,
            })
            .collect();
        solve(shares, &ms)
    }

    #[test]
    fn without_groups_relative_weights_are_published_as_is() {
        let (names, spec) = members(&[(0, 100), (0, 50), (0, 100)]);
        assert_eq!(run(None, &names, &spec), vec![100, 50, 100]);
    }

    #[test]
    fn worked_example_from_the_readme() {
        // stable share 90 with three pods (one annotated weight 200), canary share 10 with one pod.
        let (names, spec) = members(&[(0, 100), (0, 100), (0, 200), (1, 100)]);
        let w = run(Some(&[90, 10]), &names, &spec);
        assert_eq!(w, vec![225_000, 225_000, 450_000, 100_000]);
        // One stable pod fails: stable keeps its 900,000, canary keeps 100,000.
        let w = run(Some(&[90, 10]), &names[1..], &spec[1..]);
        assert_eq!(w, vec![300_000, 600_000, 100_000]);
    }

    #[test]
    fn remainders_go_to_the_smaller_names_and_the_sum_is_exact() {
        let (names, spec) = members(&[(0, 1), (0, 1), (0, 1)]);
        let w = run(Some(&[1]), &names, &spec);
        assert_eq!(w, vec![3334, 3333, 3333]);
    }

    #[test]
    fn a_pod_failure_in_a_large_group_changes_few_weights() {
        let spec: Vec<(usize, u32)> = vec![(0, 100); 10_000];
        let (names, spec) = members(&spec);
        let before = run(Some(&[90]), &names, &spec);
        let after = run(Some(&[90]), &names[1..], &spec[1..]);
        let changed = before[1..]
            .iter()
            .zip(&after)
            .filter(|(a, b)| a != b)
            .count();
        assert!(changed <= 100, "{changed} weights changed");
    }

    #[test]
    fn more_endpoints_than_budget_units_all_get_one() {
        let spec: Vec<(usize, u32)> = vec![(0, 5); 20];
        let (names, spec) = members(&spec);
        let ms: Vec<Member> = spec
            .iter()
            .zip(&names)
            .map(|(&(g, r), n)| Member {
                group: g,
                name: n,
                relative: r,
            })
            .collect();
        let mut out = vec![0; 20];
        split(10, &(0..20).collect::<Vec<_>>(), &ms, &mut out);
        assert!(out.iter().all(|&w| w == 1));
    }

    fn arb_case() -> impl Strategy<Value = (Vec<u32>, Vec<(usize, u32)>)> {
        prop::collection::vec(1u32..=10_000, 1..6).prop_flat_map(|shares| {
            let g = shares.len();
            (
                Just(shares),
                prop::collection::vec((0..g, 1u32..=10_000), 1..200),
            )
        })
    }

    proptest! {
        #[test]
        fn group_sums_are_exact_and_no_ready_endpoint_gets_zero((shares, spec) in arb_case()) {
            let (names, spec) = members(&spec);
            let w = run(Some(&shares), &names, &spec);
            prop_assert!(w.iter().all(|&x| x >= 1));
            for (g, &share) in shares.iter().enumerate() {
                let sum: u64 = spec.iter().zip(&w).filter(|((gi, _), _)| *gi == g).map(|(_, &x)| u64::from(x)).sum();
                let n = spec.iter().filter(|(gi, _)| *gi == g).count() as u64;
                if n > 0 {
                    prop_assert_eq!(sum, u64::from(share) * SHARE_UNIT, "group {} keeps its share", g);
                } else {
                    prop_assert_eq!(sum, 0);
                }
            }
        }

        #[test]
        fn weights_follow_relative_weights_within_one_unit_of_rounding((shares, spec) in arb_case()) {
            let (names, spec) = members(&spec);
            let w = run(Some(&shares), &names, &spec);
            for (g, &share) in shares.iter().enumerate() {
                let idx: Vec<usize> = (0..spec.len()).filter(|&i| spec[i].0 == g).collect();
                let n = idx.len() as f64;
                let total: f64 = idx.iter().map(|&i| f64::from(spec[i].1)).sum();
                let spread = f64::from(share) * SHARE_UNIT as f64 - n;
                for &i in &idx {
                    let ideal = 1.0 + spread * f64::from(spec[i].1) / total;
                    prop_assert!((f64::from(w[i]) - ideal).abs() < 1.0 + 1e-6, "w={} ideal={}", w[i], ideal);
                }
            }
        }

        #[test]
        fn result_is_independent_of_input_order((shares, spec) in arb_case(), seed in any::<u64>()) {
            let (names, spec) = members(&spec);
            let w = run(Some(&shares), &names, &spec);
            let mut order: Vec<usize> = (0..spec.len()).collect();
            let mut s = seed | 1;
            for i in (1..order.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                order.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let names2: Vec<String> = order.iter().map(|&i| names[i].clone()).collect();
            let spec2: Vec<(usize, u32)> = order.iter().map(|&i| spec[i]).collect();
            let w2 = run(Some(&shares), &names2, &spec2);
            for (k, &i) in order.iter().enumerate() {
                prop_assert_eq!(w2[k], w[i]);
            }
        }
    }
}

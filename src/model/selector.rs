//! Label selectors compiled from the Kubernetes form, matched against slim label sets.
//! Pure; an invalid selector is an error value, never a panic.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::pod::Labels;

/// Why a selector cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// An expression with an operator Kubernetes does not define.
    #[error("unknown selector operator {0:?}; expected In, NotIn, Exists or DoesNotExist")]
    UnknownOperator(String),
    /// `In`/`NotIn` need values, `Exists`/`DoesNotExist` take none.
    #[error("selector expression on {key:?}: {reason}")]
    BadValues {
        /// The label key.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A compiled label selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Compiles a Kubernetes label selector.
    pub fn compile(sel: &LabelSelector) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement::Equals(k.clone(), v.clone()));
        }
        for expr in sel.match_expressions.iter().flatten() {
            let values = expr.values.clone().unwrap_or_default();
            let key = expr.key.clone();
            let need_values = |values: Vec<String>| {
                if values.is_empty() {
                    Err(SelectorError::BadValues {
                        key: key.clone(),
                        reason: "In and NotIn need at least one value",
                    })
                } else {
                    Ok(values)
                }
            };
            let no_values = |values: &Vec<String>| {
                if values.is_empty() {
                    Ok(())
                } else {
                    Err(SelectorError::BadValues {
                        key: key.clone(),
                        reason: "Exists and DoesNotExist take no values",
                    })
                }
            };
            requirements.push(match expr.operator.as_str() {
                "In" => Requirement::In(key.clone(), need_values(values)?),
                "NotIn" => Requirement::NotIn(key.clone(), need_values(values)?),
                "Exists" => {
                    no_values(&values)?;
                    Requirement::Exists(key.clone())
                }
                "DoesNotExist" => {
                    no_values(&values)?;
                    Requirement::DoesNotExist(key.clone())
                }
                other => return Err(SelectorError::UnknownOperator(other.to_string())),
            });
        }
        Ok(Selector { requirements })
    }

    /// True when the selector has no requirement (it would select everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// A label every selected pod carries, with the values it may take there: the `matchLabels`
    /// entry or `In` expression with the fewest values. `None` when the selector has neither
    /// (it selects by `NotIn`, `Exists` or `DoesNotExist` alone). The index looks pods up by it,
    /// so a resource's build visits the pods it may select, not its whole namespace.
    pub fn anchor(&self) -> Option<(&str, Vec<&str>)> {
        self.requirements
            .iter()
            .filter_map(|r| match r {
                Requirement::Equals(k, v) => Some((k.as_str(), vec![v.as_str()])),
                Requirement::In(k, vs) => {
                    Some((k.as_str(), vs.iter().map(String::as_str).collect()))
                }
                _ => None,
            })
            .min_by_key(|(_, values)| values.len())
    }

    /// Does the label set satisfy every requirement?
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v.as_str()),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
            Requirement::Exists(k) => labels.get(k).is_some(),
            Requirement::DoesNotExist(k) => labels.get(k).is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().copied().collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if values.is_empty() {
                None
            } else {
                Some(values.iter().map(|s| s.to_string()).collect())
            },
        }
    }

    #[test]
    fn match_labels_and_expressions_combine_with_and() {
        let sel = Selector::compile(&LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![
                expr("track", "In", &["stable", "canary"]),
                expr("tier", "NotIn", &["db"]),
                expr("zone", "Exists", &[]),
                expr("legacy", "DoesNotExist", &[]),
            ]),
        })
        .unwrap();
        assert!(sel.matches(&labels(&[
            ("app", "web"),
            ("track", "canary"),
            ("zone", "a")
        ])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("track", "beta"), ("zone", "a")])));
        assert!(!sel.matches(&labels(&[
            ("app", "web"),
            ("track", "stable"),
            ("zone", "a"),
            ("tier", "db")
        ])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("track", "stable")])));
        assert!(!sel.matches(&labels(&[
            ("app", "web"),
            ("track", "stable"),
            ("zone", "a"),
            ("legacy", "1")
        ])));
        assert!(!sel.matches(&labels(&[
            ("app", "api"),
            ("track", "stable"),
            ("zone", "a")
        ])));
    }

    #[test]
    fn bad_expressions_are_errors() {
        let bad = |e| {
            Selector::compile(&LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![e]),
            })
        };
        assert_eq!(
            bad(expr("a", "Near", &[])),
            Err(SelectorError::UnknownOperator("Near".into()))
        );
        assert!(matches!(
            bad(expr("a", "In", &[])),
            Err(SelectorError::BadValues { .. })
        ));
        assert!(matches!(
            bad(expr("a", "Exists", &["x"])),
            Err(SelectorError::BadValues { .. })
        ));
        assert!(
            Selector::compile(&LabelSelector::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_anchor_is_the_narrowest_equality_or_in() {
        let sel = |labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>| {
            Selector::compile(&LabelSelector {
                match_labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                match_expressions: Some(exprs),
            })
            .unwrap()
        };
        let s = sel(
            &[],
            vec![expr("app", "In", &["a", "b"]), expr("tier", "In", &["x"])],
        );
        assert_eq!(s.anchor(), Some(("tier", vec!["x"])));
        let s = sel(&[("app", "web")], vec![expr("track", "In", &["a", "b"])]);
        assert_eq!(s.anchor(), Some(("app", vec!["web"])));
        let s = sel(
            &[],
            vec![expr("app", "Exists", &[]), expr("x", "NotIn", &["y"])],
        );
        assert_eq!(
            s.anchor(),
            None,
            "no requirement names the values a pod must have"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn requirement() -> impl Strategy<Value = LabelSelectorRequirement> {
            let key = prop::sample::select(vec!["a", "b", "c"]);
            let values = prop::collection::vec(prop::sample::select(vec!["1", "2", "3"]), 1..3);
            (key, 0..4usize, values).prop_map(|(k, op, vs)| match op {
                0 => expr(k, "In", &vs),
                1 => expr(k, "NotIn", &vs),
                2 => expr(k, "Exists", &[]),
                _ => expr(k, "DoesNotExist", &[]),
            })
        }

        fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
            let key = prop::sample::select(vec!["a", "b", "c", "d"]);
            let value = prop::sample::select(vec!["1", "2", "3"]);
            prop::collection::vec((key, value), 0..4).prop_map(|v| {
                v.into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
        }

        proptest! {
            /// What the index relies on: a pod the selector matches carries the anchor's key
            /// with one of its values, so looking pods up by the anchor misses none.
            #[test]
            fn every_selected_pod_carries_the_anchor(
                match_labels in pairs(),
                exprs in prop::collection::vec(requirement(), 0..3),
                pod in pairs(),
            ) {
                let sel = Selector::compile(&LabelSelector {
                    match_labels: Some(match_labels.into_iter().collect()),
                    match_expressions: Some(exprs),
                })
                .unwrap();
                let pod = Labels::from_iter(pod);
                if let (true, Some((key, values))) = (sel.matches(&pod), sel.anchor()) {
                    let value = pod.get(key);
                    prop_assert!(value.is_some_and(|v| values.contains(&v)));
                }
            }
        }
    }
}

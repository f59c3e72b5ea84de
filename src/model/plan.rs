//! The difference between desired endpoints and what ZooKeeper holds, as a list of operations.
//! Pure; the ZooKeeper writer turns a plan into `multi()` transactions.

use std::collections::BTreeMap;
use std::sync::Arc;

use smol_str::SmolStr;

use super::record::PublishedRecord;

/// One endpoint znode as read from ZooKeeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// The parsed record; `None` when the data is not a valid record (it gets rewritten).
    pub record: Option<Arc<PublishedRecord>>,
    /// The znode's data version, checked by updates and deletes.
    pub version: i32,
}

/// A change to one endpoint znode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The znode does not exist yet.
    Create {
        /// Pod name (the znode name).
        name: SmolStr,
        /// New content.
        record: Arc<PublishedRecord>,
    },
    /// The znode exists with other content.
    Update {
        /// Pod name.
        name: SmolStr,
        /// New content.
        record: Arc<PublishedRecord>,
        /// Version it must still have.
        version: i32,
    },
    /// The znode should not exist.
    Delete {
        /// Pod name.
        name: SmolStr,
        /// Version it must still have.
        version: i32,
    },
}

impl Op {
    /// The endpoint (pod) name.
    pub fn name(&self) -> &str {
        match self {
            Op::Create { name, .. } | Op::Update { name, .. } | Op::Delete { name, .. } => name,
        }
    }
}

/// Operations that bring ZooKeeper to the desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Creates first, then updates, then deletes, each by name.
    pub ops: Vec<Op>,
}

impl Plan {
    /// Nothing to do?
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Counts of (creates, updates, deletes).
    pub fn counts(&self) -> (usize, usize, usize) {
        self.ops.iter().fold((0, 0, 0), |(c, u, d), op| match op {
            Op::Create { .. } => (c + 1, u, d),
            Op::Update { .. } => (c, u + 1, d),
            Op::Delete { .. } => (c, u, d + 1),
        })
    }
}

/// Diffs desired against current; unchanged endpoints produce no operation. A record shared
/// with the current state (the same `Arc`) is equal without looking inside.
pub fn diff(
    desired: &BTreeMap<SmolStr, Arc<PublishedRecord>>,
    current: &BTreeMap<SmolStr, Current>,
) -> Plan {
    let mut creates = Vec::new();
    let mut updates = Vec::new();
    let mut deletes = Vec::new();
    // Both maps are sorted by name: walk them together instead of looking each name up.
    let mut want = desired.iter().peekable();
    let mut have = current.iter().peekable();
    loop {
        let order = match (want.peek(), have.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((w, _)), Some((h, _))) => w.cmp(h),
        };
        match order {
            std::cmp::Ordering::Less => {
                let (name, record) = want.next().expect("peeked");
                creates.push(Op::Create {
                    name: name.clone(),
                    record: record.clone(),
                });
            }
            std::cmp::Ordering::Greater => {
                let (name, cur) = have.next().expect("peeked");
                deletes.push(Op::Delete {
                    name: name.clone(),
                    version: cur.version,
                });
            }
            std::cmp::Ordering::Equal => {
                let (name, record) = want.next().expect("peeked");
                let (_, cur) = have.next().expect("peeked");
                if !same(cur.record.as_ref(), record) {
                    updates.push(Op::Update {
                        name: name.clone(),
                        record: record.clone(),
                        version: cur.version,
                    });
                }
            }
        }
    }
    creates.append(&mut updates);
    creates.append(&mut deletes);
    Plan { ops: creates }
}

/// [`diff`] restricted to `names`: the same plan when desired and current agree on every
/// other name (sorted input gives the same order), at a cost proportional to `names`.
pub fn diff_names<'a>(
    desired: &BTreeMap<SmolStr, Arc<PublishedRecord>>,
    current: &BTreeMap<SmolStr, Current>,
    names: impl IntoIterator<Item = &'a SmolStr>,
) -> Plan {
    let mut creates = Vec::new();
    let mut updates = Vec::new();
    let mut deletes = Vec::new();
    for name in names {
        match (desired.get(name), current.get(name)) {
            (Some(record), None) => creates.push(Op::Create {
                name: name.clone(),
                record: record.clone(),
            }),
            (Some(record), Some(cur)) if !same(cur.record.as_ref(), record) => {
                updates.push(Op::Update {
                    name: name.clone(),
                    record: record.clone(),
                    version: cur.version,
                })
            }
            (None, Some(cur)) => deletes.push(Op::Delete {
                name: name.clone(),
                version: cur.version,
            }),
            _ => {}
        }
    }
    creates.append(&mut updates);
    creates.append(&mut deletes);
    Plan { ops: creates }
}

fn same(current: Option<&Arc<PublishedRecord>>, desired: &Arc<PublishedRecord>) -> bool {
    current.is_some_and(|c| Arc::ptr_eq(c, desired) || **c == **desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::EndpointStatus;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn rec(host: &str, weight: u32) -> Arc<PublishedRecord> {
        Arc::new(PublishedRecord {
            host: host.into(),
            port: 80,
            ports: Default::default(),
            weight,
            declared_weight: None,
            load: None,
            group: "default".into(),
            zone: None,
            node: None,
            pod: host.into(),
            namespace: "ns".into(),
            metadata: Default::default(),
            status: EndpointStatus::Up,
            ready_since_ms: 0,
        })
    }

    #[test]
    fn creates_updates_deletes_and_leaves_equal_records_alone() {
        let desired: BTreeMap<_, _> = [
            ("a".into(), rec("a", 1)),
            ("b".into(), rec("b", 2)),
            ("c".into(), rec("c", 3)),
        ]
        .into();
        let current: BTreeMap<_, _> = [
            (
                "b".into(),
                Current {
                    record: Some(rec("b", 9)),
                    version: 4,
                },
            ),
            (
                "c".into(),
                Current {
                    record: Some(rec("c", 3)),
                    version: 1,
                },
            ),
            (
                "d".into(),
                Current {
                    record: None,
                    version: 7,
                },
            ),
        ]
        .into();
        let plan = diff(&desired, &current);
        assert_eq!(
            plan.ops,
            vec![
                Op::Create {
                    name: "a".into(),
                    record: rec("a", 1)
                },
                Op::Update {
                    name: "b".into(),
                    record: rec("b", 2),
                    version: 4
                },
                Op::Delete {
                    name: "d".into(),
                    version: 7
                },
            ]
        );
        assert_eq!(plan.counts(), (1, 1, 1));
    }

    proptest! {
        #[test]
        fn applying_the_plan_yields_the_desired_state(
            desired in prop::collection::btree_map("[a-e]", 0u32..3, 0..5),
            current in prop::collection::btree_map("[a-e]", prop::option::of(0u32..3), 0..5),
        ) {
            let desired: BTreeMap<SmolStr, Arc<PublishedRecord>> = desired.into_iter().map(|(k, w)| (k.as_str().into(), rec(&k, w))).collect();
            let current: BTreeMap<SmolStr, Current> = current
                .into_iter()
                .map(|(k, w)| (k.as_str().into(), Current { record: w.map(|w| rec(&k, w)), version: 0 }))
                .collect();
            let plan = diff(&desired, &current);
            let mut state: BTreeMap<SmolStr, Option<Arc<PublishedRecord>>> = current.iter().map(|(k, c)| (k.clone(), c.record.clone())).collect();
            for op in &plan.ops {
                match op {
                    Op::Create { name, record } => { prop_assert!(!state.contains_key(name)); state.insert(name.clone(), Some(record.clone())); }
                    Op::Update { name, record, .. } => { prop_assert!(state.contains_key(name)); state.insert(name.clone(), Some(record.clone())); }
                    Op::Delete { name, .. } => { prop_assert!(state.remove(name).is_some()); }
                }
            }
            let applied: BTreeMap<SmolStr, Arc<PublishedRecord>> = state.into_iter().map(|(k, v)| (k, v.unwrap())).collect();
            prop_assert_eq!(&applied, &desired);
            // Minimal: a second diff against the result is empty.
            let again: BTreeMap<SmolStr, Current> = applied.into_iter().map(|(k, r)| (k, Current { record: Some(r), version: 1 })).collect();
            prop_assert!(diff(&desired, &again).is_empty());
        }

        #[test]
        fn a_diff_of_the_changed_names_is_the_full_diff(
            base in prop::collection::btree_map("[a-f]", 0u32..3, 0..6),
            changed in prop::collection::btree_map("[a-f]", prop::option::of(0u32..3), 0..6),
            extra in prop::collection::btree_set("[a-f]", 0..3),
        ) {
            // Current is what was published; desired is it with `changed` applied.
            let current: BTreeMap<SmolStr, Current> = base
                .iter()
                .map(|(k, w)| (k.into(), Current { record: Some(rec(k, *w)), version: 3 }))
                .collect();
            let mut desired: BTreeMap<SmolStr, Arc<PublishedRecord>> =
                base.iter().map(|(k, w)| (k.into(), rec(k, *w))).collect();
            for (k, w) in &changed {
                match w {
                    Some(w) => { desired.insert(k.into(), rec(k, *w)); }
                    None => { desired.remove(k.as_str()); }
                }
            }
            // The names given may include unchanged ones (a superset).
            let names: BTreeSet<SmolStr> = changed.keys().map(SmolStr::from).chain(extra.iter().map(SmolStr::from)).collect();
            prop_assert_eq!(diff_names(&desired, &current, &names), diff(&desired, &current));
        }
    }
}

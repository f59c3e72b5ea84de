//! The plan for the znodes of the client formats (Dubbo, Curator, ServerSet): desired nodes by
//! path against the nodes this resource owns, leaving every node it does not own alone. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A client-format znode this resource owns, as read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedNode {
    /// Its data.
    pub data: Arc<[u8]>,
    /// Its data version, checked by updates and deletes.
    pub version: i32,
}

/// A change to one client-format znode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeOp {
    /// Create it.
    Create {
        /// Absolute path.
        path: String,
        /// Data.
        data: Arc<[u8]>,
    },
    /// Rewrite it (formats whose readers re-read data, like Curator's).
    Update {
        /// Absolute path.
        path: String,
        /// Data.
        data: Arc<[u8]>,
        /// Version it must still have.
        version: i32,
    },
    /// Delete it.
    Delete {
        /// Absolute path.
        path: String,
        /// Version it must still have.
        version: i32,
    },
}

impl NodeOp {
    /// The znode's path.
    pub fn path(&self) -> &str {
        match self {
            NodeOp::Create { path, .. }
            | NodeOp::Update { path, .. }
            | NodeOp::Delete { path, .. } => path,
        }
    }
}

/// What to do with the client-format znodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePlan {
    /// Creates, then updates, then deletes, each by path.
    pub ops: Vec<NodeOp>,
    /// Desired paths held by a node someone else wrote: never overwritten, reported.
    pub clashes: Vec<String>,
}

/// Diffs desired nodes against the ones this resource owns. A desired path that exists but is
/// not ours (`foreign`) is a clash: skipped, never overwritten.
pub fn diff(
    desired: &BTreeMap<String, Arc<[u8]>>,
    owned: &BTreeMap<String, OwnedNode>,
    foreign: &BTreeSet<String>,
) -> NodePlan {
    diff_holding(desired, owned, foreign, &[])
}

/// [`diff`], leaving the owned nodes in the `held` folders as they are: the folders of a
/// registry whose encoder refused the new state publish nothing new, and delete nothing either
/// (one bad label must not empty a provider list).
pub fn diff_holding(
    desired: &BTreeMap<String, Arc<[u8]>>,
    owned: &BTreeMap<String, OwnedNode>,
    foreign: &BTreeSet<String>,
    held: &[String],
) -> NodePlan {
    let is_held = |path: &str| {
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
        held.iter().any(|h| h == parent)
    };
    let mut plan = NodePlan::default();
    let mut updates = Vec::new();
    for (path, data) in desired {
        match owned.get(path) {
            Some(cur) if cur.data == *data => {}
            Some(cur) => updates.push(NodeOp::Update {
                path: path.clone(),
                data: data.clone(),
                version: cur.version,
            }),
            None if foreign.contains(path) => plan.clashes.push(path.clone()),
            None => plan.ops.push(NodeOp::Create {
                path: path.clone(),
                data: data.clone(),
            }),
        }
    }
    plan.ops.append(&mut updates);
    plan.ops.extend(
        owned
            .iter()
            .filter(|(path, _)| !desired.contains_key(*path) && !is_held(path))
            .map(|(path, cur)| NodeOp::Delete {
                path: path.clone(),
                version: cur.version,
            }),
    );
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(s: &str) -> Arc<[u8]> {
        Arc::from(s.as_bytes())
    }

    #[test]
    fn a_held_folder_keeps_its_nodes_while_the_others_follow() {
        let owned: BTreeMap<String, OwnedNode> = ["/dubbo/p/a", "/services/web/a"]
            .map(|p| {
                (
                    p.to_string(),
                    OwnedNode {
                        data: data("old"),
                        version: 3,
                    },
                )
            })
            .into();
        // The Dubbo encoder refused: nothing desired there. Curator moved on.
        let desired: BTreeMap<String, Arc<[u8]>> = [("/services/web/b".into(), data("new"))].into();
        let plan = diff_holding(&desired, &owned, &BTreeSet::new(), &["/dubbo/p".into()]);
        let paths: Vec<&str> = plan.ops.iter().map(NodeOp::path).collect();
        assert_eq!(paths, ["/services/web/b", "/services/web/a"]);
        let plan = diff(&desired, &owned, &BTreeSet::new());
        assert_eq!(
            plan.ops.len(),
            3,
            "without holding, the Dubbo node would go"
        );
    }

    #[test]
    fn foreign_nodes_are_never_touched_and_a_clash_is_reported() {
        let desired: BTreeMap<String, Arc<[u8]>> =
            [("/d/a".into(), data("1")), ("/d/vm".into(), data("ours"))].into();
        let foreign: BTreeSet<String> = ["/d/vm".to_string(), "/d/other".to_string()].into();
        let plan = diff(&desired, &BTreeMap::new(), &foreign);
        assert_eq!(
            plan.ops,
            vec![NodeOp::Create {
                path: "/d/a".into(),
                data: data("1")
            }]
        );
        assert_eq!(plan.clashes, vec!["/d/vm".to_string()]);
    }

    proptest! {
        #[test]
        fn applying_the_plan_yields_the_desired_nodes_and_leaves_foreign_ones(
            desired in prop::collection::btree_map("[a-f]", "[xy]", 0..6),
            owned in prop::collection::btree_map("[a-f]", "[xy]", 0..6),
            foreign in prop::collection::btree_set("[a-f]", 0..4),
        ) {
            // ZooKeeper holds each path once: ours or someone else's.
            let foreign: BTreeSet<String> = foreign.into_iter().filter(|p| !owned.contains_key(p)).collect();
            let desired: BTreeMap<String, Arc<[u8]>> = desired.into_iter().map(|(k, v)| (k, data(&v))).collect();
            let owned: BTreeMap<String, OwnedNode> = owned.into_iter().map(|(k, v)| (k, OwnedNode { data: data(&v), version: 3 })).collect();
            let plan = diff(&desired, &owned, &foreign);
            let mut state: BTreeMap<String, Arc<[u8]>> = owned.iter().map(|(k, v)| (k.clone(), v.data.clone())).collect();
            for op in &plan.ops {
                prop_assert!(!foreign.contains(op.path()), "touched a foreign node: {:?}", op);
                match op {
                    NodeOp::Create { path, data } => { prop_assert!(state.insert(path.clone(), data.clone()).is_none()); }
                    NodeOp::Update { path, data, version } => { prop_assert_eq!(*version, 3); prop_assert!(state.insert(path.clone(), data.clone()).is_some()); }
                    NodeOp::Delete { path, .. } => { prop_assert!(state.remove(path).is_some()); }
                }
            }
            let wanted: BTreeMap<String, Arc<[u8]>> = desired.iter().filter(|(k, _)| !foreign.contains(*k)).map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(&state, &wanted);
            let clashes: Vec<String> = desired.keys().filter(|k| foreign.contains(*k)).cloned().collect();
            prop_assert_eq!(plan.clashes, clashes);
        }
    }
}

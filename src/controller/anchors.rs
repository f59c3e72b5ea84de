//! One namespace's pods and resources by the label their selectors anchor on
//! ([`Selector::anchor`](crate::model::selector::Selector::anchor)): a full build visits the pods
//! a resource may select, and a pod change tests the resources that may select it, instead of
//! the whole namespace either way. Names only: the index owns the pods and the registrations.

use std::collections::{BTreeSet, HashMap, HashSet};

use smol_str::SmolStr;

use crate::model::pod::Labels;

/// A label key and the values a selected pod may have there.
pub type Anchor<'a> = (&'a str, Vec<&'a str>);

/// Pods and resources of one namespace by anchor label.
#[derive(Debug, Default)]
pub struct Anchors {
    /// Keys some resource anchors on. Only these are indexed, for every pod that has them.
    keys: HashMap<SmolStr, Key>,
    /// Resources whose selectors anchor nowhere: every pod change tests them.
    unanchored: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Key {
    /// Resources anchored on this key.
    resources: usize,
    values: HashMap<SmolStr, Names>,
}

#[derive(Debug, Default)]
struct Names {
    /// Pods (tombstones included) whose label has this value.
    pods: HashSet<SmolStr>,
    /// Resources whose anchor lists this value.
    resources: Vec<String>,
}

impl Names {
    fn is_empty(&self) -> bool {
        self.pods.is_empty() && self.resources.is_empty()
    }
}

impl Anchors {
    /// A resource starts routing by `anchor`. The first resource anchored on a key indexes the
    /// namespace's `pods` by it.
    pub fn add_resource<'p>(
        &mut self,
        name: &str,
        anchor: Option<Anchor<'_>>,
        pods: impl IntoIterator<Item = (&'p SmolStr, &'p Labels)>,
    ) {
        let Some((key, values)) = anchor else {
            self.unanchored.insert(name.to_string());
            return;
        };
        let indexed = self.keys.entry(SmolStr::new(key)).or_default();
        if indexed.resources == 0 {
            for (pod, labels) in pods {
                if let Some(v) = labels.get(key) {
                    let names = indexed.values.entry(SmolStr::new(v)).or_default();
                    names.pods.insert(pod.clone());
                }
            }
        }
        indexed.resources += 1;
        for v in values {
            let names = indexed.values.entry(SmolStr::new(v)).or_default();
            names.resources.push(name.to_string());
        }
    }

    /// A resource added with `anchor` stops routing. The last one anchored on a key drops the
    /// pods' index by it.
    pub fn remove_resource(&mut self, name: &str, anchor: Option<Anchor<'_>>) {
        let Some((key, values)) = anchor else {
            self.unanchored.remove(name);
            return;
        };
        let Some(indexed) = self.keys.get_mut(key) else {
            return;
        };
        indexed.resources = indexed.resources.saturating_sub(1);
        if indexed.resources == 0 {
            self.keys.remove(key);
            return;
        }
        for v in values {
            if let Some(names) = indexed.values.get_mut(v) {
                names.resources.retain(|r| r != name);
                if names.is_empty() {
                    indexed.values.remove(v);
                }
            }
        }
    }

    /// A pod's labels went from `old` to `new` (`None`: it was not, or is no longer, held).
    pub fn pod_moved(&mut self, pod: &SmolStr, old: Option<&Labels>, new: Option<&Labels>) {
        for (key, indexed) in &mut self.keys {
            let before = old.and_then(|l| l.get(key));
            let after = new.and_then(|l| l.get(key));
            if before == after {
                continue;
            }
            if let Some(v) = before
                && let Some(names) = indexed.values.get_mut(v)
            {
                names.pods.remove(pod);
                if names.is_empty() {
                    indexed.values.remove(v);
                }
            }
            if let Some(v) = after {
                let names = indexed.values.entry(SmolStr::new(v)).or_default();
                names.pods.insert(pod.clone());
            }
        }
    }

    /// The pods that may match a selector with this anchor; `None` when no resource anchors on
    /// its key (then the pods are not indexed by it).
    pub fn pods<'s>(&'s self, anchor: &Anchor<'_>) -> Option<impl Iterator<Item = &'s SmolStr>> {
        let indexed = self.keys.get(anchor.0)?;
        let mut values: Vec<&str> = anchor.1.clone();
        values.sort_unstable();
        values.dedup();
        Some(
            values
                .into_iter()
                .filter_map(|v| indexed.values.get(v))
                .flat_map(|names| names.pods.iter()),
        )
    }

    /// The resources that may select a pod with these labels: those anchored on one of its
    /// labels, and the unanchored ones. Each at most once.
    pub fn resources<'s>(&'s self, labels: &'s Labels) -> impl Iterator<Item = &'s String> {
        let anchored = labels.iter().flat_map(|(k, v)| {
            self.keys
                .get(k)
                .and_then(|indexed| indexed.values.get(v))
                .into_iter()
                .flat_map(|names| names.resources.iter())
        });
        self.unanchored.iter().chain(anchored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().copied().collect()
    }

    fn pods_of(a: &Anchors, key: &str, values: &[&str]) -> Option<BTreeSet<String>> {
        a.pods(&(key, values.to_vec()))
            .map(|it| it.map(|p| p.to_string()).collect())
    }

    fn resources_of(a: &Anchors, pod: &[(&str, &str)]) -> Vec<String> {
        let l = labels(pod);
        let mut v: Vec<String> = a.resources(&l).cloned().collect();
        v.sort();
        v
    }

    fn set(names: &[&str]) -> Option<BTreeSet<String>> {
        Some(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn the_first_resource_on_a_key_indexes_the_pods_and_the_last_drops_them() {
        let (p1, p2, p3) = ("p1".into(), "p2".into(), "p3".into());
        let (l1, l2, l3) = (
            labels(&[("app", "web")]),
            labels(&[("app", "api")]),
            labels(&[("tier", "x")]),
        );
        let pods = [(&p1, &l1), (&p2, &l2), (&p3, &l3)];
        let mut a = Anchors::default();
        assert_eq!(pods_of(&a, "app", &["web"]), None, "nothing anchors on app");
        a.add_resource("web", Some(("app", vec!["web"])), pods);
        a.add_resource("both", Some(("app", vec!["web", "api", "web"])), pods);
        assert_eq!(pods_of(&a, "app", &["web"]), set(&["p1"]));
        assert_eq!(
            pods_of(&a, "app", &["api", "web", "none"]),
            set(&["p1", "p2"])
        );
        assert_eq!(pods_of(&a, "app", &["none"]), set(&[]));
        a.remove_resource("web", Some(("app", vec!["web"])));
        assert_eq!(
            pods_of(&a, "app", &["web"]),
            set(&["p1"]),
            "both still anchors"
        );
        a.remove_resource("both", Some(("app", vec!["web", "api", "web"])));
        assert_eq!(pods_of(&a, "app", &["web"]), None);
        assert!(a.keys.is_empty());
    }

    #[test]
    fn pods_follow_their_labels_and_changes_reach_the_anchored_resources() {
        let mut a = Anchors::default();
        a.add_resource("web", Some(("app", vec!["web"])), []);
        a.add_resource("api", Some(("app", vec!["api"])), []);
        a.add_resource("any", None, []);
        let p = SmolStr::new("p");
        let (web, api) = (labels(&[("app", "web")]), labels(&[("app", "api")]));
        a.pod_moved(&p, None, Some(&web));
        assert_eq!(pods_of(&a, "app", &["web"]), set(&["p"]));
        assert_eq!(
            resources_of(&a, &[("app", "web"), ("x", "y")]),
            ["any", "web"]
        );
        a.pod_moved(&p, Some(&web), Some(&api));
        assert_eq!(pods_of(&a, "app", &["web"]), set(&[]));
        assert_eq!(pods_of(&a, "app", &["api"]), set(&["p"]));
        a.pod_moved(&p, Some(&api), None);
        assert_eq!(pods_of(&a, "app", &["api"]), set(&[]));
        assert_eq!(resources_of(&a, &[("tier", "db")]), ["any"]);
        a.remove_resource("any", None);
        assert!(resources_of(&a, &[("tier", "db")]).is_empty());
        // A value with neither pods nor resources left takes no room.
        a.remove_resource("api", Some(("app", vec!["api"])));
        assert!(!a.keys["app"].values.contains_key("api"));
    }
}

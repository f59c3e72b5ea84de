//! Tests of the index: the pod store, the routing, and the anchors against a plain scan.

use std::collections::BTreeSet;

use super::*;

#[cfg(test)]
mod store_tests {
    use super::*;

    /// The change-level view the routing is built on.
    impl Index {
        fn applied(&self, ns: &str, info: PodInfo, now: Instant) -> Option<PodChange> {
            Self::pod_applied(&mut self.write(), ns, info, now)
        }
        fn deleted(&self, ns: &str, info: PodInfo, now: Instant, ms: i64) -> Option<PodChange> {
            Self::pod_deleted(&mut self.write(), ns, info, now, ms)
        }
        fn take_purged(&self) -> Vec<PodChange> {
            std::mem::take(&mut self.write().purged)
        }
    }

    pub(super) fn info(name: &str, ready: bool, terminating: Option<i64>) -> PodInfo {
        PodInfo {
            name: name.into(),
            labels: Labels::default(),
            annotations: Labels::default(),
            ip: Some("10.0.0.1".into()),
            ports: [].into(),
            node: None,
            ready,
            registered: None,
            host_network: false,
            host_ports: Box::new([]),
            terminating_since_ms: terminating,
            ready_at_termination: false,
            ready_since_ms: 0,
        }
    }

    #[test]
    fn gated_pods_are_counted_per_namespace_while_they_live() {
        let idx = Index::default();
        let now = Instant::now();
        let gated = |name: &str, ready: bool, t: Option<i64>| PodInfo {
            registered: Some(false),
            ..info(name, ready, t)
        };
        assert!(!idx.has_gated_pods("ns"));
        idx.applied("ns", info("plain", true, None), now);
        assert!(!idx.has_gated_pods("ns"));
        idx.applied("ns", gated("g", true, None), now);
        idx.applied("ns", gated("g", false, None), now);
        assert!(idx.has_gated_pods("ns") && !idx.has_gated_pods("other"));
        idx.applied("ns", info("g", true, None), now);
        assert!(
            !idx.has_gated_pods("ns"),
            "the gate was dropped from the spec"
        );
        idx.applied("ns", gated("g", true, None), now);
        // Deleted while ready: it drains as a tombstone, which the gate pass skips.
        idx.deleted("ns", gated("g", true, Some(1_000)), now, 2_000);
        assert_eq!(idx.size().0, 2);
        assert!(!idx.has_gated_pods("ns"));
        // The same name again (a StatefulSet pod) counts anew.
        idx.applied("ns", gated("g", true, None), now);
        assert!(idx.has_gated_pods("ns"));
    }

    #[test]
    fn unchanged_projections_are_not_changes() {
        let idx = Index::default();
        let now = Instant::now();
        assert!(idx.applied("ns", info("a", true, None), now).is_some());
        assert!(idx.applied("ns", info("a", true, None), now).is_none());
        assert!(idx.applied("ns", info("a", false, None), now).is_some());
    }

    #[test]
    fn readiness_at_termination_is_carried_over_and_deleted_pods_drain_as_tombstones() {
        let idx = Index::default();
        let now = Instant::now();
        idx.applied("ns", info("a", true, None), now);
        // kubelet turns the terminating pod not ready; it still drains.
        let c = idx
            .applied("ns", info("a", false, Some(1_000)), now)
            .unwrap();
        assert!(c.new.unwrap().ready_at_termination);
        let c = idx
            .deleted("ns", info("a", false, Some(1_000)), now, 2_000)
            .unwrap();
        assert!(
            c.new.as_ref().unwrap().ready_at_termination,
            "tombstone kept for draining"
        );
        assert_eq!(idx.size().0, 1);
        // A pod that was never ready just goes.
        idx.applied("ns", info("b", false, None), now);
        let c = idx
            .deleted("ns", info("b", false, Some(1_000)), now, 2_000)
            .unwrap();
        assert!(c.new.is_none());
        // Tombstones are collected after the longest drain.
        idx.deleted("ns", info("zz", false, None), now, 1_000 + MAX_DRAIN_MS + 1);
        idx.applied("ns", info("c", true, None), now);
        idx.deleted("ns", info("c", true, None), now, 1_000 + MAX_DRAIN_MS + 1);
        assert_eq!(idx.size().0, 0);
        // The resources that counted the dropped tombstone hear of it.
        let purged = idx.take_purged();
        assert_eq!(purged.len(), 1);
        assert_eq!(&*purged[0].old.as_ref().unwrap().name, "a");
        assert!(purged[0].new.is_none());
        assert!(idx.take_purged().is_empty());
    }

    #[test]
    fn relist_removes_pods_that_disappeared_while_the_watch_was_down() {
        let idx = Index::default();
        let now = Instant::now();
        idx.applied("ns", info("a", true, None), now);
        idx.applied("ns", info("b", true, None), now);
        assert!(!idx.synced());
        idx.pods_relist_started(None);
        idx.applied("ns", info("a", true, None), now);
        let gone = idx.relist_done(None, now, 0);
        assert_eq!(gone.len(), 1);
        assert_eq!(&*gone[0].old.as_ref().unwrap().name, "b");
        idx.nodes_relist_started();
        idx.nodes_relist_done();
        assert!(!idx.synced(), "services not listed yet");
        idx.services_relist_started(None);
        idx.services_relist_done(None);
        assert!(idx.synced());
    }

    #[test]
    fn watchers_of_several_namespaces_relist_independently() {
        let idx = Index::default();
        idx.expect_pod_scopes(2);
        idx.nodes_relist_started();
        idx.nodes_relist_done();
        for ns in ["a", "b"] {
            idx.services_relist_started(Some(ns));
            idx.services_relist_done(Some(ns));
        }
        let now = Instant::now();
        // Both watchers list at once; "a" finishes first.
        idx.pods_relist_started(Some("a"));
        idx.pods_relist_started(Some("b"));
        idx.applied("a", info("a1", true, None), now);
        idx.applied("b", info("b1", true, None), now);
        assert!(idx.relist_done(Some("a"), now, 0).is_empty());
        assert!(!idx.synced(), "namespace b is not listed yet");
        idx.applied("b", info("b2", true, None), now);
        assert!(
            idx.relist_done(Some("b"), now, 0).is_empty(),
            "nothing is gone: each relist judges only its own namespace"
        );
        assert!(idx.synced());
        // Later "b" relists alone and "b1" vanished meanwhile; "a1" is untouched.
        idx.pods_relist_started(Some("b"));
        idx.applied("b", info("b2", true, None), now);
        let gone = idx.relist_done(Some("b"), now, 0);
        assert_eq!(gone.len(), 1);
        assert_eq!(&*gone[0].old.as_ref().unwrap().name, "b1");
        assert_eq!(idx.size().0, 2);
    }
}

#[cfg(test)]
mod routing_tests {
    use super::*;

    fn registration(app: &str, annotations: &[&str]) -> Arc<Registration> {
        let spec = serde_yaml::from_str(&format!(
            "selector: {{matchLabels: {{app: {app}}}}}\nport: 80\nmetadata: {{annotations: {annotations:?}}}"
        ))
        .unwrap();
        Arc::new(Registration::compile("ns", &spec).unwrap())
    }

    fn pod(name: &str, app: &str, ready: bool) -> PodInfo {
        PodInfo {
            labels: [("app".to_string(), app.to_string())].into_iter().collect(),
            ..super::store_tests::info(name, ready, None)
        }
    }

    fn key(name: &str) -> Key {
        ("ns".into(), name.into())
    }

    #[test]
    fn a_pod_change_wakes_exactly_the_resources_that_select_it_and_marks_it_dirty() {
        let idx = Index::default();
        idx.register("ns", "web", Some(registration("web", &[])));
        idx.register("ns", "api", Some(registration("api", &[])));
        let now = Instant::now();
        assert_eq!(
            idx.apply_pod("ns", pod("w1", "web", true), now),
            vec![key("web")]
        );
        assert_eq!(
            idx.apply_pod("other", pod("w1", "web", true), now),
            Vec::<Key>::new()
        );
        // Unchanged: nobody wakes.
        assert!(idx.apply_pod("ns", pod("w1", "web", true), now).is_empty());
        // Relabelled from web to api: both resources must look at it.
        assert_eq!(
            idx.apply_pod("ns", pod("w1", "api", true), now),
            vec![key("api"), key("web")]
        );
        assert_eq!(idx.take_dirty(&key("web")), ["w1".to_string()].into());
        assert!(idx.take_dirty(&key("web")).is_empty(), "taken once");
        assert_eq!(
            idx.delete_pod("ns", pod("w1", "api", false), now, 0),
            vec![key("api")]
        );
        // A removed registration no longer routes.
        idx.register("ns", "api", None);
        assert!(idx.apply_pod("ns", pod("a2", "api", true), now).is_empty());
    }

    #[test]
    fn new_annotation_keys_ask_for_a_relist_and_node_changes_move_the_epoch() {
        let idx = Index::default();
        let relist = idx.relist_wanted();
        tokio::pin!(relist);
        relist.as_mut().enable();
        idx.register("ns", "web", Some(registration("web", &["team"])));
        assert!(idx.annotation_keys().contains("team"));
        assert!(
            futures::FutureExt::now_or_never(relist).is_some(),
            "a new key wakes the pod watchers"
        );
        let again = idx.relist_wanted();
        tokio::pin!(again);
        again.as_mut().enable();
        idx.register("ns", "api", Some(registration("api", &["team"])));
        assert!(
            futures::FutureExt::now_or_never(again).is_none(),
            "known keys need no relist"
        );
        let e0 = idx.node_epoch();
        let node = NodeInfo {
            zone: None,
            ready: true,
            ..Default::default()
        };
        assert!(idx.apply_node("n1", node.clone()));
        assert!(!idx.apply_node("n1", node));
        assert_eq!(idx.node_epoch(), e0 + 1);
        assert!(idx.delete_node("n1"));
        assert_eq!(idx.node_epoch(), e0 + 2);
    }
}

#[cfg(test)]
mod anchor_tests {
    //! The anchors are an optimisation: routing through them and building from the pods they
    //! give must agree with testing every resource and visiting every pod.
    use super::*;
    use proptest::prelude::*;

    const SELECTORS: [&str; 6] = [
        "{matchLabels: {a: '1'}}",
        "{matchLabels: {a: '1', b: '2'}}",
        "{matchExpressions: [{key: a, operator: In, values: ['1', '2']}]}",
        "{matchExpressions: [{key: b, operator: In, values: ['2']}, {key: a, operator: NotIn, values: ['1']}]}",
        "{matchExpressions: [{key: a, operator: Exists}]}",
        "{matchExpressions: [{key: b, operator: DoesNotExist}]}",
    ];

    #[derive(Debug, Clone)]
    enum Op {
        Register(u8, usize),
        Unregister(u8),
        Apply(u8, Vec<(u8, u8)>, bool),
        Delete(u8, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        let labels = prop::collection::vec((0u8..3, 1u8..3), 0..3);
        prop_oneof![
            (0u8..4, 0..SELECTORS.len()).prop_map(|(r, s)| Op::Register(r, s)),
            (0u8..4).prop_map(Op::Unregister),
            (0u8..6, labels, any::<bool>()).prop_map(|(p, l, r)| Op::Apply(p, l, r)),
            (0u8..6, any::<bool>()).prop_map(|(p, t)| Op::Delete(p, t)),
        ]
    }

    fn registration(selector: usize) -> Arc<Registration> {
        let yaml = format!("selector: {}\nport: 80", SELECTORS[selector]);
        let spec = serde_yaml::from_str(&yaml).unwrap();
        Arc::new(Registration::compile("ns", &spec).unwrap())
    }

    fn pod(p: u8, labels: &[(u8, u8)], ready: bool, terminating: bool) -> PodInfo {
        let key = |k: u8| ["a", "b", "c"][k as usize].to_string();
        PodInfo {
            labels: labels
                .iter()
                .map(|(k, v)| (key(*k), v.to_string()))
                .collect(),
            ..super::store_tests::info(&format!("p{p}"), ready, terminating.then_some(1_000))
        }
    }

    fn registered(idx: &Index) -> Vec<(String, Arc<Registration>)> {
        let inner = idx.inner.read().unwrap();
        let in_ns = inner.routes.registrations.get("ns").into_iter().flatten();
        in_ns.map(|(n, r)| (n.clone(), r.clone())).collect()
    }

    /// The resources that select a pod of the changes (tombstones purged meanwhile included),
    /// by testing each one.
    fn selecting(idx: &Index, change: &Option<PodChange>) -> Vec<Key> {
        let purged = idx.inner.read().unwrap().purged.clone();
        let pods: Vec<PodInfo> = change
            .iter()
            .chain(&purged)
            .flat_map(|c| c.old.iter().chain(&c.new))
            .cloned()
            .collect();
        let mut v: Vec<Key> = registered(idx)
            .into_iter()
            .filter(|(_, r)| pods.iter().any(|p| r.selects(p)))
            .map(|(n, _)| ("ns".to_string(), n))
            .collect();
        v.sort();
        v
    }

    fn names(it: &mut dyn Iterator<Item = &PodEntry>, reg: &Registration) -> BTreeSet<String> {
        it.filter(|e| reg.selects(&e.info))
            .map(|e| e.info.name.to_string())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn anchors_agree_with_testing_everything(ops in prop::collection::vec(op(), 1..40)) {
            let idx = Index::default();
            let now = Instant::now();
            for op in ops {
                let change = match &op {
                    Op::Register(r, s) => {
                        idx.register("ns", &format!("r{r}"), Some(registration(*s)));
                        None
                    }
                    Op::Unregister(r) => {
                        idx.register("ns", &format!("r{r}"), None);
                        None
                    }
                    Op::Apply(p, labels, ready) => {
                        Index::pod_applied(&mut idx.write(), "ns", pod(*p, labels, *ready, false), now)
                    }
                    Op::Delete(p, drains) => {
                        // A ready pod deleted within its drain stays as a tombstone.
                        let info = pod(*p, &[], true, true);
                        let now_ms = if *drains { 2_000 } else { 1_000 + MAX_DRAIN_MS + 1 };
                        Index::pod_deleted(&mut idx.write(), "ns", info, now, now_ms)
                    }
                };
                let expected = selecting(&idx, &change);
                prop_assert_eq!(idx.route(change), expected, "routing after {:?}", op);
                for (name, reg) in registered(&idx) {
                    let anchored = idx.with_selectable("ns", &reg, |pods, _| names(pods, &reg));
                    let all = idx.with_namespace_map("ns", |pods, _| {
                        names(&mut pods.into_iter().flat_map(|p| p.values()).map(|e| &**e), &reg)
                    });
                    prop_assert_eq!(anchored, all, "pods of {} after {:?}", name, op);
                }
            }
        }
    }
}

//! The `podkeeper.io/registered` readiness gate: which gated pods should have the condition
//! True (their endpoint is serving in every registry) or False, and which of those need a
//! write. Pure; the controller patches pods/status.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::pod::PodInfo;
use smol_str::SmolStr;

use super::record::{EndpointStatus, PublishedRecord};

/// The condition a gated pod should carry after a write that put `endpoints` in ZooKeeper.
/// `every_registry` is false when some registry of the resource could not take the endpoints
/// (an encoder refusal, a node held by another writer): then no pod counts as registered.
pub fn wanted(
    pod: &str,
    endpoints: &BTreeMap<SmolStr, Arc<PublishedRecord>>,
    every_registry: bool,
) -> bool {
    every_registry
        && endpoints
            .get(pod)
            .is_some_and(|r| r.status == EndpointStatus::Up)
}

/// The condition writes to make: `(pod, status)` for each gated pod whose condition differs
/// from the wanted one and was not already sent. An absent condition counts as False (no
/// write for it). `sent` remembers writes in flight; entries the pods now show are dropped.
pub fn changes<'a>(
    pods: impl IntoIterator<Item = &'a PodInfo>,
    endpoints: &BTreeMap<SmolStr, Arc<PublishedRecord>>,
    every_registry: bool,
    sent: &mut HashMap<String, bool>,
) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for pod in pods {
        let Some(current) = pod.registered else {
            continue;
        };
        let want = wanted(&pod.name, endpoints, every_registry);
        seen.insert(&*pod.name);
        if current == want {
            sent.remove(&*pod.name);
            continue;
        }
        if sent.get(&*pod.name) == Some(&want) {
            continue;
        }
        sent.insert(pod.name.to_string(), want);
        out.push((pod.name.to_string(), want));
    }
    sent.retain(|name, _| seen.contains(name.as_str()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pod::{Labels, Readiness};
    use proptest::prelude::*;

    fn pod(name: &str, registered: Option<bool>) -> PodInfo {
        PodInfo {
            name: name.into(),
            labels: Labels::default(),
            annotations: Labels::default(),
            ip: Some("10.0.0.1".into()),
            ports: [].into(),
            node: None,
            ready: true,
            registered,
            host_network: false,
            host_ports: Box::new([]),
            ready_since_ms: 0,
            terminating_since_ms: None,
            ready_at_termination: false,
        }
    }

    fn endpoint(pod: &str, status: EndpointStatus) -> (SmolStr, Arc<PublishedRecord>) {
        let json = serde_json::json!({
            "host": "10.0.0.1", "port": 80, "weight": 1, "group": "default",
            "pod": pod, "namespace": "ns", "status": status,
        });
        (pod.into(), Arc::new(serde_json::from_value(json).unwrap()))
    }

    #[test]
    fn registered_means_serving_in_every_registry() {
        let eps: BTreeMap<_, _> = [
            endpoint("up", EndpointStatus::Up),
            endpoint("drain", EndpointStatus::Draining),
        ]
        .into();
        assert!(wanted("up", &eps, true));
        assert!(!wanted("up", &eps, false), "a registry refused it");
        assert!(!wanted("drain", &eps, true), "draining clears the gate");
        assert!(!wanted("gone", &eps, true));
    }

    #[test]
    fn writes_are_coalesced_and_only_for_gated_pods_that_differ() {
        let eps: BTreeMap<_, _> = [endpoint("a", EndpointStatus::Up)].into();
        let mut sent = HashMap::new();
        let pods = [
            pod("a", Some(false)),
            pod("b", Some(false)),
            pod("c", None),
            pod("d", Some(true)),
        ];
        let got = changes(&pods, &eps, true, &mut sent);
        assert_eq!(got, vec![("a".into(), true), ("d".into(), false)]);
        assert!(
            changes(&pods, &eps, true, &mut sent).is_empty(),
            "in flight: not sent again"
        );
        // The watch shows a's condition: it leaves the in-flight set; d's patch failed.
        sent.remove("d");
        let pods = [pod("a", Some(true)), pod("d", Some(true))];
        assert_eq!(
            changes(&pods, &eps, true, &mut sent),
            vec![("d".into(), false)]
        );
        assert_eq!(sent, [("d".to_string(), false)].into());
        // Pods that are gone leave the in-flight set.
        assert!(changes(&[], &eps, true, &mut sent).is_empty());
        assert!(sent.is_empty());
    }

    fn readiness(ready: bool, containers: bool, others: bool, ours: Option<bool>) -> Readiness {
        Readiness {
            ready,
            containers_ready: containers,
            other_gates_true: others,
            registered: ours,
        }
    }

    #[test]
    fn a_gated_pod_is_published_when_only_the_gate_is_pending() {
        assert!(readiness(false, true, true, Some(false)).counts_ready());
        assert!(!readiness(false, false, true, Some(false)).counts_ready());
        assert!(
            !readiness(false, true, false, Some(false)).counts_ready(),
            "another gate is pending"
        );
        assert!(
            !readiness(false, true, true, None).counts_ready(),
            "without our gate only Ready counts"
        );
        assert!(readiness(true, true, true, None).counts_ready());
    }

    proptest! {
        /// Applying the writes makes every gated pod show the wanted condition, and a second
        /// pass with the writes applied asks for nothing.
        #[test]
        fn writes_converge(
            states in prop::collection::vec((prop::option::of(any::<bool>()), 0u8..3), 0..12),
            every in any::<bool>(),
        ) {
            let mut eps = BTreeMap::new();
            let mut pods = Vec::new();
            for (i, (reg, ep)) in states.iter().enumerate() {
                let name = format!("p{i}");
                match ep {
                    1 => { eps.insert(endpoint(&name, EndpointStatus::Up).0, endpoint(&name, EndpointStatus::Up).1); }
                    2 => { eps.insert(name.as_str().into(), endpoint(&name, EndpointStatus::Draining).1); }
                    _ => {}
                }
                pods.push(pod(&name, *reg));
            }
            let mut sent = HashMap::new();
            for (name, status) in changes(&pods, &eps, every, &mut sent) {
                let p = pods.iter_mut().find(|p| *p.name == *name).unwrap();
                prop_assert!(p.registered.is_some(), "ungated pod written");
                prop_assert_ne!(p.registered, Some(status));
                p.registered = Some(status);
            }
            for p in &pods {
                if let Some(r) = p.registered {
                    prop_assert_eq!(r, wanted(&p.name, &eps, every));
                }
            }
            prop_assert!(changes(&pods, &eps, every, &mut sent).is_empty());
            prop_assert!(sent.is_empty());
        }
    }
}

//! Tests of the desired-state computation from YAML specs and slim pods.

use std::collections::HashMap;

use super::desired::desired;
use super::pod::{Labels, NodeInfo, PodInfo};
use super::record::EndpointStatus;
use super::registration::{MAX_GROUPS, Registration, SpecError};
use crate::crd::ServiceRegistrationSpec;

fn spec(y: &str) -> ServiceRegistrationSpec {
    serde_yaml::from_str(y).unwrap()
}

fn pod(name: &str, labels: &[(&str, &str)], ready: bool) -> PodInfo {
    PodInfo {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: Labels::default(),
        ip: Some(
            format!(
                "10.0.0.{}",
                name.len() + name.bytes().map(u32::from).sum::<u32>() as usize % 200
            )
            .into(),
        ),
        ports: vec![("http".into(), 8080), ("metrics".into(), 9100)].into(),
        node: Some("n1".into()),
        ready,
        registered: None,
        host_network: false,
        host_ports: Box::new([]),
        terminating_since_ms: None,
        ready_at_termination: false,
        ready_since_ms: 0,
    }
}

const CANARY: &str = r#"
selector: {matchLabels: {app: web}}
port: http
extraPorts: [metrics]
weights:
  groups:
  - {name: stable, selector: {matchLabels: {track: stable}}, share: 90}
  - {name: canary, selector: {matchLabels: {track: canary}}, share: 10}
metadata:
  labels: [track]
  static: {env: prod}
"#;

/// `stable` ready pods `web-s<i>` of track stable, then one ready canary `web-c0`.
fn stable_and_canary(stable: usize) -> Vec<PodInfo> {
    let mut pods: Vec<PodInfo> = (0..stable)
        .map(|i| {
            let labels = [("app", "web"), ("track", "stable")];
            pod(&format!("web-s{i}"), &labels, true)
        })
        .collect();
    pods.push(pod("web-c0", &[("app", "web"), ("track", "canary")], true));
    pods
}

fn nodes() -> HashMap<String, NodeInfo> {
    [(
        "n1".to_string(),
        NodeInfo {
            zone: Some("z1".into()),
            ready: true,
            ..Default::default()
        },
    )]
    .into()
}

#[test]
fn ready_pods_become_endpoints_with_ports_metadata_zone_and_group_weights() {
    let reg = Registration::compile("shop", &spec(CANARY)).unwrap();
    let pods = vec![
        pod("web-s1", &[("app", "web"), ("track", "stable")], true),
        pod("web-s2", &[("app", "web"), ("track", "stable")], true),
        pod("web-c1", &[("app", "web"), ("track", "canary")], true),
        pod("web-s3", &[("app", "web"), ("track", "stable")], false),
        pod("api-1", &[("app", "api")], true),
    ];
    let nodes = nodes();
    let d = desired(&reg, &pods, &nodes, 0);
    assert_eq!((d.matched, d.ready, d.draining), (4, 3, 0));
    assert_eq!(d.endpoints.len(), 3);
    let s1 = &d.endpoints["web-s1"];
    assert_eq!(s1.port, 8080);
    assert_eq!(s1.ports.get("metrics"), Some(&9100));
    assert_eq!(s1.metadata.get("track").map(|v| v.as_str()), Some("stable"));
    assert_eq!(s1.metadata.get("env").map(|v| v.as_str()), Some("prod"));
    assert_eq!(s1.zone.as_deref(), Some("z1"));
    assert_eq!(s1.group, "stable");
    assert_eq!(s1.namespace, "shop");
    assert_eq!(s1.weight + d.endpoints["web-s2"].weight, 900_000);
    assert_eq!(d.endpoints["web-c1"].weight, 100_000);
    let groups: Vec<_> = d
        .groups
        .iter()
        .map(|g| (g.name.as_str(), g.ready, g.weight))
        .collect();
    assert_eq!(groups, vec![("stable", 2, 900_000), ("canary", 1, 100_000)]);
}

#[test]
fn the_ready_time_is_published_and_survives_rebalance_and_drain() {
    let reg = Registration::compile("shop", &spec(CANARY)).unwrap();
    let mut s1 = pod("web-s1", &[("app", "web"), ("track", "stable")], true);
    s1.ready_since_ms = 1_767_225_600_000;
    let s2 = pod("web-s2", &[("app", "web"), ("track", "stable")], true);
    let nodes = nodes();
    let alone = desired(&reg, [&s1], &nodes, 0);
    let pair = desired(&reg, [&s1, &s2], &nodes, 0);
    assert_ne!(
        alone.endpoints["web-s1"].weight,
        pair.endpoints["web-s1"].weight
    );
    for d in [&alone, &pair] {
        assert_eq!(d.endpoints["web-s1"].ready_since_ms, 1_767_225_600_000);
    }
    assert_eq!(
        pair.endpoints["web-s2"].ready_since_ms, 0,
        "unknown stays 0"
    );
    // Draining (the index carried the time over from the ready pod).
    s1.terminating_since_ms = Some(1_000);
    s1.ready_at_termination = true;
    let draining = desired(&reg, [&s1, &s2], &nodes, 2_000);
    assert_eq!(
        draining.endpoints["web-s1"].status,
        EndpointStatus::Draining
    );
    assert_eq!(
        draining.endpoints["web-s1"].ready_since_ms,
        1_767_225_600_000
    );
}

#[test]
fn pods_on_a_not_ready_node_leave() {
    let reg = Registration::compile("shop", &spec(CANARY)).unwrap();
    let pods = vec![pod("web-s1", &[("app", "web"), ("track", "stable")], true)];
    let mut nodes = nodes();
    nodes.get_mut("n1").unwrap().ready = false;
    let d = desired(&reg, &pods, &nodes, 0);
    assert!(d.endpoints.is_empty());
    assert_eq!(d.ready, 0);
}

#[test]
fn terminating_pods_drain_with_weight_zero_until_the_deadline() {
    let reg = Registration::compile(
        "shop",
        &spec("selector: {matchLabels: {app: web}}\nport: 8080\ndrainSeconds: 10"),
    )
    .unwrap();
    let mut p = pod("web-1", &[("app", "web")], true);
    p.terminating_since_ms = Some(1_000);
    p.ready_at_termination = true;
    let q = pod("web-2", &[("app", "web")], true);
    let nodes = nodes();
    let d = desired(&reg, [&p, &q], &nodes, 5_000);
    assert_eq!(d.endpoints["web-1"].status, EndpointStatus::Draining);
    assert_eq!(d.endpoints["web-1"].weight, 0);
    assert_eq!(d.endpoints["web-2"].weight, 100);
    assert_eq!((d.ready, d.draining), (1, 1));
    assert_eq!(d.next_deadline_ms, Some(11_000));
    let d = desired(&reg, [&p, &q], &nodes, 11_000);
    assert!(!d.endpoints.contains_key("web-1"));
    p.ready_at_termination = false;
    let d = desired(&reg, [&p, &q], &nodes, 5_000);
    assert!(
        !d.endpoints.contains_key("web-1"),
        "a pod that was not ready does not drain"
    );
}

#[test]
fn weight_annotation_and_bad_values_are_reported() {
    let reg = Registration::compile(
        "shop",
        &spec("selector: {matchLabels: {app: web}}\nport: 8080"),
    )
    .unwrap();
    let mut a = pod("a", &[("app", "web")], true);
    a.annotations = [("podkeeper.io/weight".to_string(), "250".to_string())]
        .into_iter()
        .collect();
    let mut b = pod("b", &[("app", "web")], true);
    b.annotations = [("podkeeper.io/weight".to_string(), "heavy".to_string())]
        .into_iter()
        .collect();
    let d = desired(&reg, [&a, &b], &HashMap::new(), 0);
    assert_eq!(d.endpoints["a"].weight, 250);
    assert_eq!(d.endpoints["b"].weight, 100);
    assert_eq!(d.warnings.len(), 1);
    assert!(
        d.warnings[0].contains("podkeeper.io/weight"),
        "{:?}",
        d.warnings
    );
}

#[test]
fn missing_named_port_is_a_warning_not_an_endpoint() {
    let reg = Registration::compile(
        "shop",
        &spec("selector: {matchLabels: {app: web}}\nport: grpc"),
    )
    .unwrap();
    let d = desired(
        &reg,
        [&pod("a", &[("app", "web")], true)],
        &HashMap::new(),
        0,
    );
    assert!(d.endpoints.is_empty());
    assert!(d.warnings[0].contains("grpc"));
}

#[test]
fn invalid_specs_are_errors_with_the_field_name() {
    assert_eq!(
        Registration::compile("x", &spec("selector: {}\nport: 80")).unwrap_err(),
        SpecError::EmptySelector
    );
    let e =
        Registration::compile("x", &spec("selector: {matchLabels: {a: b}}\nport: 0")).unwrap_err();
    assert!(e.to_string().contains("spec.port"));
    let e = Registration::compile(
        "x",
        &spec("selector: {matchLabels: {a: b}}\nport: 80\nweights: {groups: [{name: g, share: 1, selector: {matchExpressions: [{key: k, operator: Bogus}]}}]}"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("groups[0]"), "{e}");
    let groups = |n: usize| {
        let g: Vec<String> = (0..n)
            .map(|i| format!("{{name: g{i}, share: 1, selector: {{matchLabels: {{g: '{i}'}}}}}}"))
            .collect();
        spec(&format!(
            "selector: {{matchLabels: {{a: b}}}}\nport: 80\nweights: {{groups: [{}]}}",
            g.join(", ")
        ))
    };
    assert!(Registration::compile("x", &groups(MAX_GROUPS)).is_ok());
    let e = Registration::compile("x", &groups(MAX_GROUPS + 1)).unwrap_err();
    assert_eq!(e, SpecError::TooManyGroups(MAX_GROUPS + 1));
    assert!(e.to_string().contains("at most 32"), "{e}");
}

#[test]
fn pods_in_no_group_fall_into_the_implicit_default_group() {
    let reg = Registration::compile("shop", &spec(CANARY)).unwrap();
    let pods = vec![
        pod("web-s1", &[("app", "web"), ("track", "stable")], true),
        pod("web-x", &[("app", "web")], true),
    ];
    let d = desired(&reg, &pods, &HashMap::new(), 0);
    assert_eq!(d.endpoints["web-x"].group, "default");
    assert_eq!(d.endpoints["web-x"].weight, 10_000);
    assert!(d.groups.iter().any(|g| g.name == "default" && g.ready == 1));
}

#[test]
fn an_update_gives_the_same_result_and_shares_unchanged_records() {
    use super::tracker::Tracker;
    use std::sync::Arc;
    let reg = Registration::compile("shop", &spec(CANARY)).unwrap();
    let mut pods = stable_and_canary(20);
    let nodes = nodes();
    let mut t = Tracker::build(&reg, &pods, &nodes, 0);
    let before = t.desired().clone();
    // One stable pod fails: its group is re-weighted, canary untouched.
    pods[3].ready = false;
    t.update(&reg, [("web-s3", Some(&pods[3]))], &nodes, 0);
    let after = t.desired().clone();
    assert_eq!(
        after,
        desired(&reg, &pods, &nodes, 0),
        "same result as a full recompute"
    );
    assert!(
        Arc::ptr_eq(&after.endpoints["web-c0"], &before.endpoints["web-c0"]),
        "unchanged record shared"
    );
    for (name, rec) in &after.endpoints {
        let shared = Arc::ptr_eq(rec, &before.endpoints[name]);
        assert_eq!(
            shared,
            before.endpoints[name].weight == rec.weight,
            "{name}: rebuilt exactly when its weight moved"
        );
    }
    // A pod event that changes nothing published keeps the record; a pod gone leaves.
    t.update(
        &reg,
        [("web-c0", Some(&pods[20])), ("web-s0", None)],
        &nodes,
        0,
    );
    assert!(Arc::ptr_eq(
        &t.desired().endpoints["web-c0"],
        &after.endpoints["web-c0"]
    ));
    // A change that shows in the record rebuilds it.
    pods[20].ip = Some("10.9.9.9".into());
    t.update(&reg, [("web-c0", Some(&pods[20]))], &nodes, 0);
    assert_eq!(t.desired().endpoints["web-c0"].host, "10.9.9.9");
    assert_eq!(*t.desired(), desired(&reg, &pods[1..], &nodes, 0));
}

#[test]
fn records_of_pods_alike_hold_one_copy_of_their_ports_and_metadata() {
    use super::tracker::Tracker;
    let reg = Registration::compile("shop", &spec(CANARY)).unwrap();
    let stable = [("app", "web"), ("track", "stable")];
    let mut pods: Vec<PodInfo> = (0..4)
        .map(|i| pod(&format!("web-s{i}"), &stable, true))
        .collect();
    pods.push(pod("web-c0", &[("app", "web"), ("track", "canary")], true));
    let nodes = nodes();
    let mut t = Tracker::build(&reg, &pods, &nodes, 0);
    let d = t.desired();
    let (s0, s3, c0) = (
        &d.endpoints["web-s0"],
        &d.endpoints["web-s3"],
        &d.endpoints["web-c0"],
    );
    assert!(s0.ports.shares_with(&s3.ports) && s0.ports.shares_with(&c0.ports));
    assert!(s0.metadata.shares_with(&s3.metadata), "both stable");
    assert!(!s0.metadata.shares_with(&c0.metadata), "track differs");
    // A pod added later shares with the records already there; one with other ports does not.
    pods.push(pod("web-s4", &stable, true));
    let mut other = pod("web-s5", &stable, true);
    other.ports = vec![("http".into(), 8081), ("metrics".into(), 9100)].into();
    pods.push(other);
    t.update(
        &reg,
        [("web-s4", Some(&pods[5])), ("web-s5", Some(&pods[6]))],
        &nodes,
        0,
    );
    let d = t.desired();
    assert!(
        d.endpoints["web-s4"]
            .ports
            .shares_with(&d.endpoints["web-s0"].ports)
    );
    assert!(
        d.endpoints["web-s4"]
            .metadata
            .shares_with(&d.endpoints["web-s0"].metadata)
    );
    assert_eq!(d.endpoints["web-s5"].ports.get("http"), Some(&8081));
    assert!(
        !d.endpoints["web-s5"]
            .ports
            .shares_with(&d.endpoints["web-s0"].ports)
    );
    assert_eq!(
        *d,
        desired(&reg, &pods, &nodes, 0),
        "sharing changes no value"
    );
}

mod incremental {
    use super::*;
    use crate::model::tracker::Tracker;
    use proptest::prelude::*;

    /// One pod's state, small enough for proptest to explore.
    #[derive(Debug, Clone)]
    struct P {
        track: u8,
        ready: bool,
        terminating: Option<i64>,
        ready_at_termination: bool,
        ip: bool,
        named_port: bool,
        weight: u8,
        node: u8,
    }

    fn p() -> impl Strategy<Value = P> {
        (
            0u8..4,
            any::<bool>(),
            prop_oneof![Just(None), (0i64..3_000).prop_map(Some)],
            any::<bool>(),
            prop::bool::weighted(0.9),
            prop::bool::weighted(0.9),
            0u8..4,
            0u8..3,
        )
            .prop_map(
                |(
                    track,
                    ready,
                    terminating,
                    ready_at_termination,
                    ip,
                    named_port,
                    weight,
                    node,
                )| P {
                    track,
                    ready,
                    terminating,
                    ready_at_termination,
                    ip,
                    named_port,
                    weight,
                    node,
                },
            )
    }

    fn info(i: usize, s: &P) -> PodInfo {
        let track = ["stable", "canary", "other", "none"][s.track as usize];
        let mut labels = vec![("app", "web")];
        if track != "none" {
            labels.push(("track", track));
        }
        let mut pod = pod(&format!("web-{i:02}"), &labels, s.ready);
        if s.track == 2 && i.is_multiple_of(2) {
            // Not selected at all.
            pod.labels = [("app".to_string(), "api".to_string())]
                .into_iter()
                .collect();
        }
        pod.terminating_since_ms = s.terminating;
        pod.ready_at_termination = s.ready_at_termination && s.terminating.is_some();
        if !s.ip {
            pod.ip = None;
        }
        if !s.named_port {
            pod.ports = [].into();
        }
        let w = ["", "250", "bogus", "1"][s.weight as usize];
        if !w.is_empty() {
            pod.annotations = [("podkeeper.io/weight".to_string(), w.to_string())]
                .into_iter()
                .collect();
        }
        pod.node = Some(["n1", "n2", "gone"][s.node as usize].into());
        pod
    }

    fn cluster_nodes() -> HashMap<String, NodeInfo> {
        [
            (
                "n1".to_string(),
                NodeInfo {
                    zone: Some("z1".into()),
                    ready: true,
                    ..Default::default()
                },
            ),
            (
                "n2".to_string(),
                NodeInfo {
                    zone: None,
                    ready: false,
                    ..Default::default()
                },
            ),
        ]
        .into()
    }

    const SPECS: [&str; 2] = [
        CANARY,
        "selector: {matchLabels: {app: web}}\nport: http\ndrainSeconds: 1\nmetadata: {labels: [track]}",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Applying changes one batch at a time gives exactly what a full recompute gives.
        #[test]
        fn updates_equal_a_full_recompute(
            spec_i in 0usize..2,
            start in prop::collection::vec(prop::option::of(p()), 1..16),
            steps in prop::collection::vec(
                (prop::collection::vec((0usize..16, prop::option::of(p())), 0..5), 0i64..1_500),
                1..8,
            ),
        ) {
            let reg = Registration::compile("shop", &spec(SPECS[spec_i])).unwrap();
            let nodes = cluster_nodes();
            let mut state: Vec<Option<P>> = start;
            state.resize(16, None);
            let pods_of = |state: &[Option<P>]| -> Vec<PodInfo> {
                state.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| info(i, s))).collect()
            };
            let mut now = 0;
            let mut t = Tracker::build(&reg, &pods_of(&state), &nodes, now);
            prop_assert!(t.unpublished().is_none(), "a new tracker has published nothing");
            t.published();
            let mut published = t.desired().endpoints.clone();
            for (changes, advance) in steps {
                now += advance;
                for (i, s) in &changes {
                    state[*i] = s.clone();
                }
                let pods: Vec<Option<PodInfo>> =
                    state.iter().enumerate().map(|(i, s)| s.as_ref().map(|s| info(i, s))).collect();
                let names: Vec<String> = changes.iter().map(|(i, _)| format!("web-{i:02}")).collect();
                t.update(
                    &reg,
                    changes.iter().zip(&names).map(|((i, _), n)| (n.as_str(), pods[*i].as_ref())),
                    &nodes,
                    now,
                );
                let full = desired(&reg, &pods_of(&state), &nodes, now);
                prop_assert_eq!(t.desired(), &full);
                // The counts kept change by change equal the counts walked from the slots.
                prop_assert_eq!(t.desired(), &t.recounted(&reg));
                // Every endpoint that differs from what was published is among the unpublished
                // names, so a diff of those names alone brings ZooKeeper to the desired state.
                let unpublished = t.unpublished().expect("published before");
                let names = published.keys().chain(t.desired().endpoints.keys());
                for name in names {
                    if published.get(name) != t.desired().endpoints.get(name) {
                        prop_assert!(unpublished.contains(name), "{} changed unnoticed", name);
                    }
                }
                // Publish every other step, so changes also accumulate across updates.
                if advance % 2 == 0 {
                    t.published();
                    published = t.desired().endpoints.clone();
                }
            }
        }
    }
}

#[test]
fn load_figures_ride_along_with_factor_changes_only() {
    use super::load::{Factors, PodWeight};
    use super::record::{EndpointRecord, LoadFigures, Milli};
    use super::tracker::Tracker;
    use std::sync::Arc;
    let reg = Registration::compile("shop", &spec(CANARY)).unwrap();
    let mut pods = stable_and_canary(4);
    let nodes = nodes();
    let weight = |factor: f32, cpu: i64| PodWeight {
        factor,
        figures: Some(Arc::new(LoadFigures {
            cpu_utilization: Some(Milli(cpu)),
            ..LoadFigures::default()
        })),
    };
    let factors = |s1: PodWeight, s3: PodWeight| -> Arc<Factors> {
        Arc::new([("web-s1".into(), s1), ("web-s3".into(), s3)].into())
    };
    let mut t = Tracker::build_weighed(&reg, &pods, &nodes, 0, Arc::default());
    assert_eq!(
        *t.desired(),
        desired(&reg, &pods, &nodes, 0),
        "no load: as before"
    );
    let json = serde_json::to_value(&*t.desired().endpoints["web-s1"]).unwrap();
    assert!(json.get("load").is_none(), "no figures, no field: {json}");
    // web-s1's factor moves; web-s3 is measured but stays at its declared weight.
    let moved = t.set_factors(factors(weight(0.8, 900), weight(1.0, 300)));
    assert_eq!(moved, ["web-s1"]);
    t.update(
        &reg,
        moved
            .iter()
            .map(|n| (n.as_str(), pods.iter().find(|p| p.name == *n))),
        &nodes,
        0,
    );
    let s1 = t.desired().endpoints["web-s1"].clone();
    assert_eq!(s1.load.as_ref().unwrap().cpu_utilization, Some(Milli(900)));
    assert!(s1.declared_weight.is_some());
    assert!(
        t.desired().endpoints["web-c0"].load.is_none(),
        "another group: untouched"
    );
    // New figures under the same factors: no pod changes, no record is rebuilt.
    let before = t.desired().clone();
    assert!(
        t.set_factors(factors(weight(0.8, 950), weight(1.0, 400)))
            .is_empty()
    );
    t.update(&reg, std::iter::empty(), &nodes, 0);
    assert_eq!(*t.desired(), before);
    // A record rebuilt for another reason takes the latest figures.
    pods[1].ip = Some("10.9.9.9".into());
    t.update(&reg, [("web-s1", Some(&pods[1]))], &nodes, 0);
    let s1 = t.desired().endpoints["web-s1"].clone();
    assert_eq!(s1.load.as_ref().unwrap().cpu_utilization, Some(Milli(950)));
    // The field as a reader parses it, and back.
    let json = serde_json::to_string(&*s1).unwrap();
    assert!(json.contains(r#""load":{"cpuUtilization":0.95}"#), "{json}");
    let read: EndpointRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_json::to_string(&read).unwrap(), json);
    assert_eq!(read.load, s1.load);
}

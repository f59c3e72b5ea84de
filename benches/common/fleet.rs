//! A synthetic fleet of slim pods on three zoned nodes, shared by `benches/reconcile.rs` and
//! `examples/memory.rs` (each includes this file as a module).

use std::collections::HashMap;

use podkeeper::model::pod::{Labels, NodeInfo, PodInfo};

/// Pod `i` of a Deployment `web`: four labels (every tenth pod on the canary track), an IP,
/// ports `http` and `metrics`, on node `node-{i % 3}`.
pub fn pod(i: usize, ready: bool) -> PodInfo {
    let track = if i.is_multiple_of(10) {
        "canary"
    } else {
        "stable"
    };
    PodInfo {
        name: format!("web-7d9f8c6b5-{i:05}").into(),
        labels: [
            ("app", "web"),
            ("track", track),
            ("pod-template-hash", "7d9f8c6b5"),
            ("team", "shop"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        annotations: Labels::default(),
        ip: Some(format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256).into()),
        ports: vec![("http".into(), 8080), ("metrics".into(), 9100)].into(),
        node: Some(format!("node-{}", i % 3).into()),
        ready,
        registered: None,
        host_network: false,
        host_ports: Box::new([]),
        terminating_since_ms: None,
        ready_at_termination: false,
        ready_since_ms: 0,
    }
}

/// Gives pods with equal labels one shared copy, as the operator's index does (it interns the
/// label sets of the pods it keeps).
#[allow(dead_code)]
pub fn share_labels(pods: &mut [PodInfo]) {
    let mut seen: std::collections::HashSet<Labels> = Default::default();
    for p in pods {
        match seen.get(&p.labels) {
            Some(copy) => p.labels = copy.clone(),
            None => {
                seen.insert(p.labels.clone());
            }
        }
    }
}

/// Nodes `node-0..2`, ready, in zones `z0..z2`.
pub fn nodes() -> HashMap<String, NodeInfo> {
    (0..3)
        .map(|i| {
            (
                format!("node-{i}"),
                NodeInfo {
                    zone: Some(format!("z{i}").into()),
                    ready: true,
                    ..Default::default()
                },
            )
        })
        .collect()
}

//! Test fixtures for the printouts: a service `web` with two UP endpoints and one DRAINING.

use podkeeper::discovery::Registry;
use podkeeper::model::record::{EndpointRecord, EndpointStatus};

/// Endpoint `web-<i>` at 10.0.0.<i>:8080, in zone z1 when `i` is even.
pub fn endpoint(i: u8, weight: u32, status: EndpointStatus) -> EndpointRecord {
    EndpointRecord {
        host: format!("10.0.0.{i}"),
        port: 8080,
        ports: Default::default(),
        weight,
        declared_weight: None,
        load: None,
        group: "default".into(),
        zone: i.is_multiple_of(2).then(|| "z1".to_string()),
        node: None,
        pod: format!("web-{i}"),
        namespace: "shop".into(),
        metadata: Default::default(),
        status,
        ready_since_ms: 0,
    }
}

/// `web`'s service record (WeightedRoundRobin, owner c1/shop/web) and endpoints web-1 (weight 3),
/// web-2 (weight 1) and web-3 (DRAINING, weight 0).
pub fn registry() -> Registry {
    Registry {
        service: Some(
            serde_json::from_value(serde_json::json!({
                "serviceName": "web",
                "policy": "WeightedRoundRobin",
                "owner": {"clusterId": "c1", "namespace": "shop", "name": "web", "uid": "u-1"},
                "generation": 4,
            }))
            .unwrap(),
        ),
        endpoints: [
            ("web-1".to_string(), endpoint(1, 3, EndpointStatus::Up)),
            ("web-2".to_string(), endpoint(2, 1, EndpointStatus::Up)),
            (
                "web-3".to_string(),
                endpoint(3, 0, EndpointStatus::Draining),
            ),
        ]
        .into(),
    }
}

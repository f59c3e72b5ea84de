//! The native ZooKeeper records: the service record at `<path>` and one endpoint record per pod
//! at `<path>/endpoints/<pod>`. Plain data shared by the writer and the discovery client.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smol_str::SmolStr;

use super::policy::Policy;
use super::small_map::SmallMap;

/// Child folder of a service path that holds the endpoints.
pub const ENDPOINTS: &str = "endpoints";

/// Who owns a service path: the operator never touches a path owned by someone else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// The operator's `--cluster-id`.
    pub cluster_id: String,
    /// The resource's namespace.
    pub namespace: String,
    /// The resource's name.
    pub name: String,
    /// The resource's UID.
    pub uid: String,
}

impl Owner {
    /// Same cluster, namespace and name: the same resource, possibly recreated with a new UID.
    pub fn same_resource(&self, other: &Owner) -> bool {
        self.cluster_id == other.cluster_id
            && self.namespace == other.namespace
            && self.name == other.name
    }
}

/// The record at `<path>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRecord {
    /// The registry name.
    pub service_name: String,
    /// The policy clients follow.
    pub policy: Policy,
    /// The resource that owns this path.
    pub owner: Owner,
    /// The resource generation this record reflects.
    pub generation: i64,
    /// The endpoints are the last known ones, kept because the service would otherwise have
    /// dropped to none in one step (opt-in guard `spec.keepLastEndpoints`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
    /// Clients ramp a new endpoint's weight up over this many seconds from its `readySinceMs`
    /// (`spec.warmupSeconds`); 0: no warm-up.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub warmup_seconds: u32,
    /// The load weighting in force (`spec.load`), rewritten as a heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadMark>,
}

/// What a service record says about its load weighting: why the policy is what it is, and when
/// the operator last vouched for the effective weights. A client that sees `updatedMs` older
/// than `expireSeconds` uses the declared weights (the operator may be gone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadMark {
    /// Why the policy is what it is (Declared, HighUtilization, UnevenCapacity,
    /// ConsistentHashKept).
    pub reason: String,
    /// When the operator last confirmed the weights, Unix ms.
    pub updated_ms: i64,
    /// After how long without a confirmation the weights are stale.
    pub expire_seconds: u32,
}

impl LoadMark {
    /// The effective weights are no longer vouched for at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        now_ms - self.updated_ms > i64::from(self.expire_seconds) * 1000
    }
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// Whether clients may send new requests to an endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EndpointStatus {
    /// Ready: pick it.
    #[default]
    Up,
    /// The pod is terminating: finish in-flight requests, pick it no more.
    Draining,
}

/// The record at `<path>/endpoints/<pod>`, with its strings as `S`: `String` for readers (the
/// default), [`SmolStr`] in the operator ([`PublishedRecord`]). Both serialise the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(serialize = "S: Serialize", deserialize = "S: Deserialize<'de> + Ord")
)]
pub struct EndpointRecord<S = String> {
    /// Pod IP.
    pub host: S,
    /// The published port.
    pub port: u16,
    /// All published ports by name (the main one included when it has a name).
    #[serde(default)]
    pub ports: SmallMap<S, u16>,
    /// Weight; 0 only while draining.
    pub weight: u32,
    /// The weight the spec declares, when load moved `weight` away from it (`spec.load`);
    /// clients fall back to it when the service record's load heartbeat is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_weight: Option<u32>,
    /// The load figures `weight` was computed from (`spec.load`), when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<Arc<LoadFigures>>,
    /// Weight group.
    pub group: S,
    /// The node's `topology.kubernetes.io/zone`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<S>,
    /// Node name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<S>,
    /// Pod name.
    pub pod: S,
    /// Pod namespace.
    pub namespace: S,
    /// Copied labels and annotations plus static entries.
    #[serde(default)]
    pub metadata: SmallMap<S, S>,
    /// UP or DRAINING.
    pub status: EndpointStatus,
    /// When the pod began to serve (its Ready condition's transition), Unix milliseconds; left
    /// out when unknown. Stays the same through a drain and any weight change.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ready_since_ms: i64,
}

/// A pod's load figures as an endpoint record carries them, named as in ORCA's load report.
/// Utilizations are fractions of the pod's request summed over its containers, as the
/// HorizontalPodAutoscaler computes them (ORCA's `cpu_utilization` is a fraction of the CPU).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadFigures {
    /// CPU usage ÷ CPU request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_utilization: Option<Milli>,
    /// Memory usage ÷ memory request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_utilization: Option<Milli>,
    /// Per-pod custom metrics (custom.metrics.k8s.io) by name.
    #[serde(default, skip_serializing_if = "SmallMap::is_empty")]
    pub named_metrics: SmallMap<SmolStr, Milli>,
}

impl LoadFigures {
    /// Nothing was measured.
    pub fn is_empty(&self) -> bool {
        self.cpu_utilization.is_none()
            && self.mem_utilization.is_none()
            && self.named_metrics.is_empty()
    }
}

/// A figure in thousandths, so records stay `Eq`: a JSON number with at most 3 decimals, read
/// from any JSON number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Milli(pub i64);

impl Milli {
    /// The nearest thousandth of `v` (saturating; NaN: 0).
    pub fn from_f64(v: f64) -> Milli {
        Milli((v * 1000.0).round() as i64)
    }

    /// As a number.
    pub fn get(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

impl Serialize for Milli {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        if self.0 % 1000 == 0 {
            s.serialize_i64(self.0 / 1000)
        } else {
            // Division rounds correctly: the shortest decimal that reads back is ≤ 3 places.
            s.serialize_f64(self.get())
        }
    }
}

impl<'de> Deserialize<'de> for Milli {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Milli, D::Error> {
        f64::deserialize(d).map(Milli::from_f64)
    }
}

/// The record as the operator holds it, one per published pod. Its strings are mostly short
/// (inline, no allocation) or the same in every record (namespace, group, zone, node, port
/// names and metadata keys: clones of one shared value), so a record is about three
/// allocations (itself, its ports, its metadata) instead of one per string.
pub type PublishedRecord = EndpointRecord<SmolStr>;

impl<S> EndpointRecord<S> {
    /// May a client send a new request here?
    pub fn pickable(&self) -> bool {
        self.status == EndpointStatus::Up && self.weight > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_json_uses_the_documented_field_names() {
        let rec = EndpointRecord {
            host: "10.0.0.1".into(),
            port: 8080,
            ports: [("http".to_string(), 8080)].into(),
            weight: 100,
            declared_weight: None,
            load: None,
            group: "default".into(),
            zone: Some("z1".into()),
            node: None,
            pod: "web-1".into(),
            namespace: "shop".into(),
            metadata: SmallMap::new(),
            status: EndpointStatus::Draining,
            ready_since_ms: 1_767_225_600_000,
        };
        let json = serde_json::to_value(&rec).unwrap();
        assert_eq!(json["status"], "DRAINING");
        assert_eq!(json["ports"]["http"], 8080);
        assert!(json.get("node").is_none());
        assert_eq!(json["readySinceMs"], 1_767_225_600_000_i64);
        let back: EndpointRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, rec);
        assert!(!back.pickable());
    }

    #[test]
    fn the_operators_records_serialise_as_the_readers_do() {
        let json = r#"{"host":"fd00::1","port":8080,"ports":{"http":8080,"metrics":9100},"weight":3,"group":"a-group-name-longer-than-23-bytes","zone":"z1","node":"node-a","pod":"web-7d9f8c6b5-00001","namespace":"shop","metadata":{"track":"stable","version":"1.4.2"},"status":"UP","readySinceMs":1767225600000}"#;
        let read: EndpointRecord = serde_json::from_str(json).unwrap();
        let held: PublishedRecord = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&read).unwrap(), json);
        assert_eq!(serde_json::to_string(&held).unwrap(), json);
        assert!(held.group.is_heap_allocated() && !held.pod.is_heap_allocated());
    }

    #[test]
    fn load_figures_are_numbers_with_at_most_three_decimals() {
        let json = r#"{"host":"10.0.0.1","port":8080,"ports":{},"weight":7000,"declaredWeight":10000,"load":{"cpuUtilization":0.43,"memUtilization":0.21,"namedMetrics":{"requests_in_flight":50}},"group":"default","pod":"web-1","namespace":"shop","metadata":{},"status":"UP"}"#;
        let read: EndpointRecord = serde_json::from_str(json).unwrap();
        let held: PublishedRecord = serde_json::from_str(json).unwrap();
        let load = read.load.as_deref().unwrap();
        assert_eq!(load.cpu_utilization, Some(Milli(430)));
        assert_eq!(load.named_metrics["requests_in_flight"], Milli(50_000));
        assert_eq!(serde_json::to_string(&read).unwrap(), json);
        assert_eq!(serde_json::to_string(&held).unwrap(), json);
        let cases = [
            (1, "0.001"),
            (-1500, "-1.5"),
            (2_000, "2"),
            (123_456, "123.456"),
        ];
        for (milli, text) in cases {
            assert_eq!(serde_json::to_string(&Milli(milli)).unwrap(), text);
            assert_eq!(serde_json::from_str::<Milli>(text).unwrap(), Milli(milli));
        }
        assert_eq!(serde_json::from_str::<Milli>("0.4306").unwrap(), Milli(431));
        assert_eq!(
            serde_json::from_str::<Milli>("7e2").unwrap(),
            Milli(700_000)
        );
    }
}

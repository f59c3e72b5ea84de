//! What the operator reads of a Pod object: the fields [`PodInfo`](super::pod::PodInfo) is
//! projected from, and nothing else. The pod watch deserializes into this type instead of
//! `k8s_openapi`'s `Pod`, so the rest of each object (managed fields, volumes, container
//! statuses, images, resources, tolerations) is skipped by the JSON parser, never allocated.
//! Fewer and smaller transient allocations make the initial list of 100,000 pods cheaper in
//! CPU and leave less freed memory interleaved with the long-lived projections
//! (docs/performance-history.md, round 4).
//!
//! The field names and types follow `k8s_openapi` (so the projection reads the same either
//! way); every field is optional and `null` reads as absent, as there.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Deserializer};

/// A Pod as the pod watch reads it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct PodWire {
    /// Only name, namespace, uid, resourceVersion, labels, annotations and the deletion
    /// fields are kept (the watcher needs the resourceVersion; managedFields is skipped).
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    pub spec: Option<PodSpecWire>,
    pub status: Option<PodStatusWire>,
}

/// `spec`, the fields the projection reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecWire {
    pub containers: Option<Vec<ContainerWire>>,
    pub node_name: Option<String>,
    pub host_network: Option<bool>,
    pub readiness_gates: Option<Vec<ReadinessGateWire>>,
}

/// A container: only its ports.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct ContainerWire {
    pub ports: Option<Vec<ContainerPortWire>>,
}

/// A container port.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPortWire {
    pub name: Option<String>,
    #[serde(default)]
    pub container_port: i32,
    pub host_port: Option<i32>,
}

/// A readiness gate.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessGateWire {
    #[serde(default)]
    pub condition_type: String,
}

/// `status`, the fields the projection reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatusWire {
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    pub conditions: Option<Vec<PodConditionWire>>,
}

/// A pod condition.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodConditionWire {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub status: String,
    pub last_transition_time: Option<Time>,
}

/// The metadata fields kept; the rest of `metadata` is skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaWire {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    deletion_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
}

fn slim_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let Some(m) = Option::<MetaWire>::deserialize(d)? else {
        return Ok(ObjectMeta::default());
    };
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        labels: m.labels,
        annotations: m.annotations,
        deletion_timestamp: m.deletion_timestamp,
        deletion_grace_period_seconds: m.deletion_grace_period_seconds,
        ..ObjectMeta::default()
    })
}

impl k8s_openapi::Resource for PodWire {
    const API_VERSION: &'static str =
        <k8s_openapi::api::core::v1::Pod as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <k8s_openapi::api::core::v1::Pod as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <k8s_openapi::api::core::v1::Pod as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str =
        <k8s_openapi::api::core::v1::Pod as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str =
        <k8s_openapi::api::core::v1::Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::ListableResource for PodWire {
    const LIST_KIND: &'static str = "PodList";
}

impl k8s_openapi::Metadata for PodWire {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pod::PodInfo;
    use k8s_openapi::api::core::v1::Pod;

    /// A pod as the API server returns it after kubelet (or kwok) reported on it: managed
    /// fields, a projected token volume, container statuses, nulls.
    const FULL_POD: &str = r#"{
      "apiVersion": "v1", "kind": "Pod",
      "metadata": {
        "name": "web-7d9f8-abcde", "generateName": "web-7d9f8-", "namespace": "shop",
        "uid": "0b7c5f5e-1111-2222-3333-444455556666", "resourceVersion": "123456",
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": {"app": "web", "pod-template-hash": "7d9f8"},
        "annotations": {"podkeeper.io/weight": "50", "kubectl.kubernetes.io/restartedAt": "x"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8",
          "uid": "9", "controller": true, "blockOwnerDeletion": true}],
        "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
          "apiVersion": "v1", "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
          "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}},
          {"manager": "kwok", "operation": "Update", "apiVersion": "v1", "subresource": "status",
          "fieldsV1": {"f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}}}}}}]
      },
      "spec": {
        "volumes": [{"name": "kube-api-access-x", "projected": {"sources": [
          {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
        "containers": [{"name": "app", "image": "web:1",
          "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                    {"containerPort": 9000, "hostPort": 39000, "protocol": "TCP"}],
          "resources": {"limits": {"cpu": "1"}}, "terminationMessagePath": "/dev/termination-log",
          "imagePullPolicy": "IfNotPresent"},
          {"name": "sidecar", "image": "s:1", "ports": null}],
        "restartPolicy": "Always", "nodeName": "kwok-node-1", "hostNetwork": null,
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
          "effect": "NoExecute", "tolerationSeconds": 300}],
        "readinessGates": [{"conditionType": "podkeeper.io/registered"}]
      },
      "status": {
        "phase": "Running",
        "conditions": [
          {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-01-01T00:00:01Z"},
          {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"},
          {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-01-01T00:00:04Z"},
          {"type": "podkeeper.io/registered", "status": "True", "lastProbeTime": null}],
        "hostIP": "10.0.0.1", "podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}],
        "startTime": "2026-01-01T00:00:01Z", "qosClass": "Burstable",
        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "web:1",
          "imageID": "", "started": true, "state": {"running": {"startedAt": "2026-01-01T00:00:02Z"}}}]
      }
    }"#;

    /// Parses `json` both ways and checks that every field the projection reads is the same.
    fn agree(json: &str) -> PodWire {
        let full: Pod = serde_json::from_str(json).unwrap();
        let wire: PodWire = serde_json::from_str(json).unwrap();
        let (fm, wm) = (&full.metadata, &wire.metadata);
        assert_eq!(
            (&fm.name, &fm.namespace, &fm.uid, &fm.resource_version),
            (&wm.name, &wm.namespace, &wm.uid, &wm.resource_version),
            "{json}"
        );
        assert_eq!((&fm.labels, &fm.annotations), (&wm.labels, &wm.annotations));
        assert_eq!(
            (&fm.deletion_timestamp, fm.deletion_grace_period_seconds),
            (&wm.deletion_timestamp, wm.deletion_grace_period_seconds)
        );
        let (fs, ws) = (full.spec.as_ref(), wire.spec.as_ref());
        assert_eq!(fs.is_some(), ws.is_some());
        if let (Some(f), Some(w)) = (fs, ws) {
            assert_eq!(
                (&f.node_name, f.host_network),
                (&w.node_name, w.host_network)
            );
            let gates = |g: Option<Vec<String>>| g.unwrap_or_default();
            assert_eq!(
                gates(
                    f.readiness_gates
                        .as_ref()
                        .map(|g| g.iter().map(|g| g.condition_type.clone()).collect())
                ),
                gates(
                    w.readiness_gates
                        .as_ref()
                        .map(|g| g.iter().map(|g| g.condition_type.clone()).collect())
                )
            );
            let fp: Vec<_> = f
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .map(|p| (p.name.clone(), p.container_port, p.host_port))
                .collect();
            let wp: Vec<_> = w
                .containers
                .iter()
                .flatten()
                .flat_map(|c| c.ports.iter().flatten())
                .map(|p| (p.name.clone(), p.container_port, p.host_port))
                .collect();
            assert_eq!(fp, wp);
        }
        let (fs, ws) = (full.status.as_ref(), wire.status.as_ref());
        assert_eq!(fs.is_some(), ws.is_some());
        if let (Some(f), Some(w)) = (fs, ws) {
            assert_eq!(f.pod_ip, w.pod_ip);
            let fc: Vec<_> = f
                .conditions
                .iter()
                .flatten()
                .map(|c| {
                    (
                        c.type_.clone(),
                        c.status.clone(),
                        c.last_transition_time.clone(),
                    )
                })
                .collect();
            let wc: Vec<_> = w
                .conditions
                .iter()
                .flatten()
                .map(|c| {
                    (
                        c.type_.clone(),
                        c.status.clone(),
                        c.last_transition_time.clone(),
                    )
                })
                .collect();
            assert_eq!(fc, wc);
        }
        wire
    }

    #[test]
    fn the_wire_pod_reads_what_the_full_pod_reads() {
        let keep = |k: &str| k.starts_with("podkeeper.io/");
        let wire = PodInfo::from_pod(&agree(FULL_POD), &keep);
        assert_eq!(&*wire.name, "web-7d9f8-abcde");
        assert_eq!(wire.ip.as_deref(), Some("10.244.1.7"));
        assert_eq!(wire.named_port("http"), Some(8080));
        assert_eq!(&*wire.host_ports, &[(9000, 39000)]);
        assert_eq!(wire.registered, Some(true));
        assert!(wire.ready);
        assert_eq!(
            wire.annotations.len(),
            1,
            "only podkeeper's annotations are kept"
        );
        assert_eq!(
            wire.ready_since_ms, 1_767_225_604_000,
            "ContainersReady came first"
        );
    }

    #[test]
    fn the_watcher_keeps_what_it_needs_of_the_metadata() {
        let wire: PodWire = serde_json::from_str(FULL_POD).unwrap();
        let m = &wire.metadata;
        assert_eq!(m.resource_version.as_deref(), Some("123456"));
        assert_eq!(
            m.uid.as_deref(),
            Some("0b7c5f5e-1111-2222-3333-444455556666")
        );
        assert_eq!(m.namespace.as_deref(), Some("shop"));
        assert!(m.managed_fields.is_none(), "managed fields are skipped");
    }

    #[test]
    fn nulls_and_missing_sections_read_as_absent_as_in_the_full_pod() {
        for json in [
            r#"{"metadata": {"name": "a"}}"#,
            r#"{"metadata": null, "spec": null, "status": null}"#,
            r#"{"metadata": {"name": "a", "labels": null}, "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}], "readinessGates": null}, "status": {"conditions": null, "podIP": null}}"#,
            r#"{"metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:30Z", "deletionGracePeriodSeconds": 30}, "status": {"podIP": "", "conditions": [{"type": "Ready", "status": "False"}]}}"#,
        ] {
            agree(json);
        }
    }

    #[test]
    fn a_malformed_pod_is_refused_as_the_full_pod_is() {
        for json in [
            r#"{"spec": {"containers": [{"ports": [{"containerPort": "http"}]}]}}"#,
            r#"{"status": {"conditions": {"type": "Ready"}}}"#,
            r#"{"metadata": {"deletionTimestamp": "yesterday"}}"#,
        ] {
            assert!(serde_json::from_str::<Pod>(json).is_err(), "{json}");
            assert!(serde_json::from_str::<PodWire>(json).is_err(), "{json}");
        }
    }
}

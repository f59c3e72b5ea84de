//! The Kubernetes objects of an import: its Service and EndpointSlices built from the model,
//! and existing slices read back into the model. Pure conversions; no API calls here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::RegistryImport;
use crate::model::import::{self, Conditions, Family, Slice, SliceKey};

/// `endpointslice.kubernetes.io/managed-by` of our slices: kube-controller-manager's
/// EndpointSlice controller leaves slices with another value alone.
pub const MANAGED_BY: &str = "podkeeper.io";
/// Label naming the RegistryImport a Service or slice belongs to; a Service without it is not
/// podkeeper's and is never touched.
pub const IMPORT_LABEL: &str = "podkeeper.io/import";
/// The field manager of our server-side applies.
pub const FIELD_MANAGER: &str = "podkeeper-import";

/// The label selector of an import's slices (of its Service now, or of one it named before).
pub fn slice_selector(import: &str) -> String {
    format!("endpointslice.kubernetes.io/managed-by={MANAGED_BY},{IMPORT_LABEL}={import}")
}

/// The Service a slice belongs to.
pub fn service_of(s: &EndpointSlice) -> Option<&str> {
    s.metadata
        .labels
        .as_ref()?
        .get("kubernetes.io/service-name")
        .map(String::as_str)
}

fn owner(ri: &RegistryImport) -> OwnerReference {
    ri.controller_owner_ref(&())
        .expect("a listed RegistryImport has a name and uid")
}

fn labels(ri: &RegistryImport) -> BTreeMap<String, String> {
    [
        (
            "app.kubernetes.io/managed-by".to_string(),
            "podkeeper".to_string(),
        ),
        (
            IMPORT_LABEL.to_string(),
            ri.metadata.name.clone().unwrap_or_default(),
        ),
    ]
    .into()
}

/// The selector-less ClusterIP Service of `ri`.
pub fn service(ri: &RegistryImport) -> Service {
    let ports = ri
        .spec
        .service
        .ports
        .iter()
        .map(|p| ServicePort {
            name: Some(p.name.clone()),
            port: p.port,
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        })
        .collect();
    Service {
        metadata: ObjectMeta {
            name: Some(ri.spec.service.name.clone()),
            namespace: ri.metadata.namespace.clone(),
            labels: Some(labels(ri)),
            owner_references: Some(vec![owner(ri)]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            // Providers may be of either family: a dual-stack cluster gives the Service an
            // address of each (kube-proxy routes each to its family's slices), a single-stack
            // one its own.
            ip_family_policy: Some("PreferDualStack".into()),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Whether the existing Service is `ri`'s to keep: created by it, or labelled for it.
pub fn service_is_ours(existing: &Service, ri: &RegistryImport) -> bool {
    existing
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(IMPORT_LABEL))
        .is_some_and(|v| Some(v) == ri.metadata.name.as_ref())
}

/// Whether `existing` is a Service `ri` created: labelled for it and owned by it. Only such a
/// Service is deleted when the spec names another.
pub fn service_is_former(existing: &Service, ri: &RegistryImport) -> bool {
    service_is_ours(existing, ri) && owned_by(existing, ri)
}

fn owned_by(existing: &Service, ri: &RegistryImport) -> bool {
    existing
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == ri.metadata.uid.as_ref())
}

/// Whether the existing Service already is what `service(ri)` would write.
pub fn service_current(existing: &Service, ri: &RegistryImport) -> bool {
    let want = service(ri);
    let ports = |s: &Service| {
        s.spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .map(|ps| {
                ps.iter()
                    .map(|p| (p.name.clone(), p.port))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    owned_by(existing, ri) && ports(existing) == ports(&want)
}

/// The EndpointSlice object for `slice`.
pub fn endpoint_slice(ri: &RegistryImport, slice: &Slice) -> EndpointSlice {
    let mut labels = labels(ri);
    labels.insert(
        "kubernetes.io/service-name".into(),
        ri.spec.service.name.clone(),
    );
    labels.insert(
        "endpointslice.kubernetes.io/managed-by".into(),
        MANAGED_BY.into(),
    );
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice.name.clone()),
            namespace: ri.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owner(ri)]),
            ..ObjectMeta::default()
        },
        address_type: slice.key.family.address_type().into(),
        endpoints: Some(slice.endpoints.iter().map(endpoint).collect()),
        ports: Some(
            slice
                .key
                .ports
                .iter()
                .map(|(name, port)| EndpointPort {
                    name: Some(name.clone()),
                    port: Some(i32::from(*port)),
                    protocol: Some("TCP".into()),
                    app_protocol: None,
                })
                .collect(),
        ),
    }
}

fn endpoint(e: &import::Endpoint) -> Endpoint {
    Endpoint {
        addresses: vec![e.address.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(e.conditions.ready),
            serving: Some(e.conditions.serving),
            terminating: Some(e.conditions.terminating),
        }),
        zone: e.zone.clone(),
        ..Endpoint::default()
    }
}

/// An existing slice in the model's terms; `None` when it holds what podkeeper never writes
/// (it is then rewritten or deleted).
pub fn read_slice(s: &EndpointSlice) -> Option<Slice> {
    let family = match s.address_type.as_str() {
        "IPv4" => Family::V4,
        "IPv6" => Family::V6,
        _ => return None,
    };
    let ports = s
        .ports
        .iter()
        .flatten()
        .map(|p| Some((p.name.clone()?, u16::try_from(p.port?).ok()?)))
        .collect::<Option<Vec<_>>>()?;
    let mut endpoints = Vec::new();
    for e in s.endpoints.iter().flatten() {
        let [address] = e.addresses.as_slice() else {
            return None;
        };
        let c = e.conditions.clone().unwrap_or_default();
        endpoints.push(import::Endpoint {
            address: address.parse().ok()?,
            ports: ports.clone(),
            conditions: Conditions {
                ready: c.ready.unwrap_or(false),
                serving: c.serving.unwrap_or(false),
                terminating: c.terminating.unwrap_or(false),
            },
            zone: e.zone.clone(),
        });
    }
    endpoints.sort_by_key(|e| e.address);
    Some(Slice {
        name: s.metadata.name.clone()?,
        key: SliceKey { family, ports },
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ri() -> RegistryImport {
        serde_yaml::from_str(
            "apiVersion: podkeeper.io/v1alpha1\nkind: RegistryImport\n\
             metadata: {name: orders, namespace: shop, uid: u-1}\n\
             spec: {source: {dubbo: {interface: com.acme.Orders}},\n\
               service: {name: orders, ports: [{name: rpc, port: 20880}]}}\n",
        )
        .unwrap()
    }

    #[test]
    fn a_slice_round_trips_through_the_api_object_with_its_labels_and_owner() {
        let slice = Slice {
            name: "orders-1234abcd-0".into(),
            key: SliceKey {
                family: Family::V4,
                ports: vec![("rpc".into(), 20880)],
            },
            endpoints: vec![import::Endpoint {
                address: "10.0.0.1".parse().unwrap(),
                ports: vec![("rpc".into(), 20880)],
                conditions: Conditions::DOWN,
                zone: Some("z1".into()),
            }],
        };
        let obj = endpoint_slice(&ri(), &slice);
        let l = obj.metadata.labels.clone().unwrap();
        assert_eq!(l["kubernetes.io/service-name"], "orders");
        assert_eq!(l["endpointslice.kubernetes.io/managed-by"], "podkeeper.io");
        assert_eq!(
            obj.metadata.owner_references.as_ref().unwrap()[0].uid,
            "u-1"
        );
        let c = obj.endpoints.as_ref().unwrap()[0]
            .conditions
            .clone()
            .unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(false), Some(false)),
            "every condition explicit"
        );
        assert_eq!(read_slice(&obj), Some(slice));
    }

    #[test]
    fn only_a_service_labelled_for_this_import_is_ours_and_it_has_no_selector() {
        let ri = ri();
        let mut svc = service(&ri);
        assert!(svc.spec.as_ref().unwrap().selector.is_none());
        let policy = svc.spec.as_ref().unwrap().ip_family_policy.as_deref();
        assert_eq!(policy, Some("PreferDualStack"));
        assert!(service_is_ours(&svc, &ri));
        assert!(service_current(&svc, &ri));
        svc.metadata.labels = None;
        assert!(!service_is_ours(&svc, &ri), "someone else's Service");
    }

    #[test]
    fn a_former_service_is_one_labelled_for_this_import_and_owned_by_it() {
        let ri = ri();
        let svc = service(&ri);
        assert!(service_is_former(&svc, &ri));
        let mut copy = svc.clone();
        copy.metadata.owner_references = None;
        assert!(
            !service_is_former(&copy, &ri),
            "labelled by hand, not owned"
        );
        let mut other = svc.clone();
        other.metadata.labels = None;
        assert!(!service_is_former(&other, &ri), "owned but not labelled");
        let mut recreated = ri.clone();
        recreated.metadata.uid = Some("u-2".into());
        assert!(
            !service_is_former(&svc, &recreated),
            "owned by an earlier import of the name"
        );
    }
}

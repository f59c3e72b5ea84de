//! The RegistryPolicy resource: what the namespaces it names may publish beyond their own
//! native folder. Cluster-scoped, so only who holds cluster RBAC (the platform team) shapes
//! it; what a namespace may do is evaluated in `model::tenancy`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Grants the namespaces it names the right to publish what it lists. Every grant is explicit:
/// without one, a namespace publishes native records under `<home prefix>/<namespace>/` on the
/// operator's own ensemble, and nothing else. Two namespaces may share a Dubbo interface or a
/// Curator service only when policies grant it to both.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "podkeeper.io",
    version = "v1alpha1",
    kind = "RegistryPolicy",
    plural = "registrypolicies",
    shortname = "regpol",
    category = "podkeeper",
    printcolumn(name = "Namespaces", type_ = "string", json_path = ".spec.namespaces"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.namespaces) && size(self.namespaces) > 0) || has(self.namespaceSelector)").message("name the namespaces granted: namespaces, namespaceSelector or both"))]
pub struct RegistryPolicySpec {
    /// Namespaces granted, by name or glob (`shop`, `team-a-*`; `*` matches any run of
    /// characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces granted by their labels (as a Deployment selects pods), beside `namespaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Native service paths beyond the namespace's own folder (globs: `*` within one path
    /// segment, `**` across segments, e.g. `/podkeeper/shared/**`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub native_paths: Vec<String>,
    /// Dubbo interfaces, each with the groups and versions allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dubbo: Vec<DubboGrant>,
    /// Curator / Spring Cloud ZooKeeper service folders (`<basePath>/<serviceName>`, globs as
    /// for paths, e.g. `/services/shop-*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub curator_services: Vec<String>,
    /// ServerSet member folders (globs as for paths, e.g. `/serversets/shop-*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_set_paths: Vec<String>,
    /// Hosts `address.mode: Template` may name (globs over the host, e.g. `*.shop.example.com`),
    /// beyond the cluster's own domain, which is always allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub template_hosts: Vec<String>,
    /// Ensembles `spec.zookeeper` may name beyond the operator's own: `host:port` patterns,
    /// comma-separated, optionally followed by a chroot pattern (`zk-*.team-a.svc:2181/team-a`).
    /// Every host of the resource's connect string must match one of the patterns (`*` does
    /// not cross `.` or `:`), and its chroot the chroot pattern (none when the grant has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ensembles: Vec<String>,
}

/// One Dubbo interface pattern, the registry root it may be written under, and the groups
/// and versions it may carry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DubboGrant {
    /// The registry root (`/dubbo`, the default; a path glob as for native paths).
    #[serde(default = "dubbo_root")]
    pub root: String,
    /// Interface name or glob (`com.acme.shop.*`).
    pub interface: String,
    /// Group glob; `*` (the default) allows any, `""` only none.
    #[serde(default = "any")]
    pub group: String,
    /// Version glob; `*` (the default) allows any, `""` only none.
    #[serde(default = "any")]
    pub version: String,
}

fn dubbo_root() -> String {
    "/dubbo".into()
}

fn any() -> String {
    "*".into()
}

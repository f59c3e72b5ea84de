//! The RegistryImport resource (podkeeper.io/v1alpha1): the reverse mirror, one ZooKeeper
//! folder of providers kept as a selector-less Service with EndpointSlices. Types only; no I/O.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{Condition, ZooKeeperTarget};

/// Keeps the providers registered in one ZooKeeper folder (by VMs, other clusters, anything
/// but this cluster's podkeeper) as the endpoints of a selector-less ClusterIP Service, so pods
/// reach them by Service DNS. The Service and its EndpointSlices are owned by this resource
/// and go with it.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "podkeeper.io",
    version = "v1alpha1",
    kind = "RegistryImport",
    plural = "registryimports",
    shortname = "regimport",
    category = "podkeeper",
    namespaced,
    status = "RegistryImportStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Service", type_ = "string", json_path = ".spec.service.name"),
    printcolumn(name = "Imported", type_ = "integer", json_path = ".status.imported"),
    printcolumn(name = "LeftOut", type_ = "integer", json_path = ".status.leftOut"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RegistryImportSpec {
    /// The ensemble to read; defaults to the operator's. Another ensemble must be granted to
    /// the namespace by a RegistryPolicy (`ensembles`), as for a ServiceRegistration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zookeeper: Option<ZooKeeperTarget>,
    /// The folder to read and its format.
    pub source: ImportSource,
    /// The Service to maintain.
    pub service: ImportedService,
}

/// One folder of providers, in one of the formats podkeeper reads. Set exactly one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.dubbo), has(self.curator), has(self.serverSet), has(self.native)].filter(x, x).size() == 1").message("source: set exactly one of dubbo, curator, serverSet, native"))]
pub struct ImportSource {
    /// Dubbo interface-level providers (`/<root>/<interface>/providers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dubbo: Option<DubboSource>,
    /// Curator x-discovery / Spring Cloud ZooKeeper instances (`<basePath>/<serviceName>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curator: Option<CuratorSource>,
    /// Finagle / Aurora ServerSet members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_set: Option<PathSource>,
    /// podkeeper's native records (the service path; endpoints are read below it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<PathSource>,
}

/// A Dubbo interface, as a consumer names it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DubboSource {
    /// The Java interface (`com.acme.OrderService`).
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 255 && self.matches('^[A-Za-z0-9._$-]+$')").message("dubbo.interface must be a Java type name"))]
    #[schemars(length(max = 255))]
    pub interface: String,
    /// Only providers of this group; absent: only providers without a group (as a Dubbo
    /// consumer without `group` sees them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub group: Option<String>,
    /// Only providers of this version; absent: only providers without a version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub version: Option<String>,
    /// The registry root, `/dubbo` unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) <= 256 && self.matches('^/?[A-Za-z0-9._:@-]+(/[A-Za-z0-9._:@-]+)*$')").message("dubbo.root must be a znode path like /dubbo"))]
    #[schemars(length(max = 256))]
    pub root: Option<String>,
}

/// A Curator / Spring Cloud ZooKeeper service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CuratorSource {
    /// The base path, `/services` unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) <= 512 && self.matches('^(/[A-Za-z0-9._:@-]+)+$')").message("curator.basePath must be an absolute znode path"))]
    #[schemars(length(max = 512))]
    pub base_path: Option<String>,
    /// The service name (the folder below the base path).
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 253 && self.matches('^[A-Za-z0-9._:@-]+$') && self != '.' && self != '..'").message("curator.serviceName must be one znode name"))]
    #[schemars(length(max = 253))]
    pub service_name: String,
}

/// A folder given by its path.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PathSource {
    /// Absolute znode path.
    #[x_kube(validation = Rule::new("size(self) <= 512 && self.matches('^(/[A-Za-z0-9._:@-]+)+$') && !self.matches('/[.][.]?(/|$)')").message("path must be an absolute znode path without '.' or '..' segments"))]
    #[schemars(length(max = 512))]
    pub path: String,
}

/// The Service podkeeper keeps: created by it, or an existing one carrying its label.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImportedService {
    /// The Service name (a DNS label: Dubbo interface names are not).
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 63 && self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("service.name must be a DNS label: lowercase letters, digits and '-', starting with a letter, at most 63 characters"))]
    #[schemars(length(max = 63))]
    pub name: String,
    /// The Service's ports; every endpoint of a slice serves all of them.
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 16").message("service.ports: 1 to 16 ports"))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.name == p.name))").message("service.ports: names must be unique"))]
    #[schemars(length(max = 16))]
    pub ports: Vec<ImportedPort>,
}

/// One Service port and where on the provider it lands.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImportedPort {
    /// Port name (also the EndpointSlice port name).
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 15 && self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("port name must be lowercase letters, digits and '-', at most 15 characters"))]
    #[schemars(length(max = 15))]
    pub name: String,
    /// The Service's port.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("port must be between 1 and 65535"))]
    pub port: i32,
    /// Absent: the provider's registered port. A name: the provider's extra port of that name
    /// (native `ports`, ServerSet `additionalEndpoints`); a provider without it is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 63 && self.matches('^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')").message("targetPort must name an extra port of the provider"))]
    #[schemars(length(max = 63))]
    pub target_port: Option<String>,
}

/// What the import holds now.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryImportStatus {
    /// The generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready (the Service and slices match the folder) and ZooKeeperAvailable.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The folder read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Provider nodes in the folder, this cluster's own included.
    #[serde(default)]
    pub seen: u32,
    /// Endpoints in the slices.
    #[serde(default)]
    pub imported: u32,
    /// Providers left out (this cluster's own, no IP address, loopback, other group...).
    #[serde(default)]
    pub left_out: u32,
    /// The first few providers left out, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out_providers: Vec<LeftOutProvider>,
    /// EndpointSlices kept.
    #[serde(default)]
    pub slices: u32,
    /// Since when the slices show the last state read, because ZooKeeper cannot be read
    /// (RFC 3339); absent while it can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_since: Option<String>,
    /// When the slices last matched the folder (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
}

/// A provider that is not imported, and why.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeftOutProvider {
    /// `host:port` as registered.
    pub provider: String,
    /// Why.
    pub reason: String,
}

//! The `ServiceRegistration` custom resource (podkeeper.io/v1alpha1): spec, status and schema.
//! Types only: validation the API server can do lives here as schema and CEL; nothing here does I/O.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use crate::model::policy::Policy;

/// Finalizer that makes the operator remove the resource's znodes before it goes.
pub const FINALIZER: &str = "podkeeper.io/cleanup";
pub mod load;
pub mod registry_import;
pub mod registry_policy;

pub use load::{AutoSpec, LoadSpec, LoadStatus, UnweighedPod};
pub use registry_import::{RegistryImport, RegistryImportSpec, RegistryImportStatus};
pub use registry_policy::{DubboGrant, RegistryPolicy, RegistryPolicySpec};

/// Pod annotation with the pod's relative weight inside its group.
pub const WEIGHT_ANNOTATION: &str = "podkeeper.io/weight";

/// Publishes the ready pods matched by `selector` into ZooKeeper as endpoints of one service.
// The derive's `printcolumn(...)` lists repeat `type_ = ...`; clippy takes them for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "podkeeper.io",
    version = "v1alpha1",
    kind = "ServiceRegistration",
    plural = "serviceregistrations",
    shortname = "svcreg",
    category = "podkeeper",
    namespaced,
    status = "ServiceRegistrationStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Published", type_ = "integer", json_path = ".status.published"),
    printcolumn(name = "Policy", type_ = "string", json_path = ".status.policy"),
    printcolumn(name = "Path", type_ = "string", json_path = ".status.path"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRegistrationSpec {
    /// Pods in this resource's namespace to publish. Must not be empty.
    #[x_kube(validation = Rule::new("(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)").message("selector must not be empty: set matchLabels or matchExpressions"))]
    pub selector: LabelSelector,

    /// The container port to publish, by name (e.g. `http`) or number (1-65535).
    #[x_kube(validation = Rule::new("type(self) == int ? (self >= 1 && self <= 65535) : (size(self) >= 1 && size(self) <= 15 && self.matches('^[a-z0-9]([a-z0-9-]*[a-z0-9])?$'))").message("port must be a number from 1 to 65535 or a container port name (lowercase letters, digits and '-', at most 15 characters)"))]
    pub port: IntOrString,

    /// Further named container ports published with the main one (in each endpoint's `ports`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("size(self) <= 16").message("at most 16 extraPorts"))]
    #[x_kube(validation = Rule::new("self.all(p, size(p) >= 1 && size(p) <= 15 && p.matches('^[a-z0-9]([a-z0-9-]*[a-z0-9])?$'))").message("extraPorts must be container port names (lowercase letters, digits and '-', at most 15 characters)"))]
    #[schemars(length(max = 16), inner(length(max = 15)))]
    pub extra_ports: Vec<String>,

    /// Name in the registry; defaults to `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 253 && self.matches('^[A-Za-z0-9][A-Za-z0-9._:-]*$') && self != '.' && self != '..'").message("serviceName must be 1-253 characters of letters, digits, '.', '_', ':' and '-', starting with a letter or digit"))]
    #[schemars(length(max = 253))]
    pub service_name: Option<String>,

    /// Base znode; defaults to `/podkeeper/<namespace>/<serviceName>`. Must lie under the
    /// operator's `--allowed-path-prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) <= 512 && self.matches('^(/[A-Za-z0-9._:@-]+)+$') && !self.matches('/[.][.]?(/|$)') && !self.startsWith('/zookeeper')").message("path must be an absolute znode path like /podkeeper/team/service: segments of letters, digits, '.', '_', ':', '@' and '-', no '.' or '..' segment, no trailing '/', not under /zookeeper, at most 512 characters"))]
    #[schemars(length(max = 512))]
    pub path: Option<String>,

    /// A ZooKeeper ensemble for this resource only; defaults to the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zookeeper: Option<ZooKeeperTarget>,

    /// How weights are assigned to ready endpoints.
    #[serde(default)]
    pub weights: Weights,

    /// The policy clients use to pick an endpoint; published in the service record.
    #[serde(default)]
    pub load_balancer: LoadBalancer,

    /// What goes into each endpoint record's `metadata`.
    #[serde(default)]
    pub metadata: MetadataSpec,

    /// Seconds a terminating pod stays published with weight 0 and status DRAINING.
    #[serde(default = "default_drain_seconds")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 3600").message("drainSeconds must be between 0 and 3600"))]
    pub drain_seconds: u32,

    /// Seconds over which clients ramp a newly ready pod's weight up linearly from 1 to its full
    /// weight, counted from the pod's ready time (published in every format). 0 (default): no
    /// warm-up. Dubbo's `warmup` parameter carries it unless the registry sets its own.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 3600").message("warmupSeconds must be between 0 and 3600"))]
    pub warmup_seconds: u32,

    /// Stop writing to ZooKeeper and keep what is there.
    #[serde(default)]
    pub suspend: bool,

    /// Opt-in guard: when the service would drop from some ready endpoints to none in one step,
    /// keep the last published endpoints and mark the service record `stale` (with an Event).
    #[serde(default)]
    pub keep_last_endpoints: bool,

    /// Which host and port each endpoint carries: the pod IP (default), the node's address,
    /// a NodePort Service, or a host template. Every registry publishes the same address.
    #[serde(default)]
    pub address: AddressSpec,

    /// Where the endpoints are published, in which layouts; all of them change in the same
    /// transaction. Without it: one `Native` registry at `path` (podkeeper's own records).
    /// The service record at `path` (ownership and fencing) is written in every case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("size(self) <= 8").message("at most 8 registries"))]
    #[x_kube(validation = Rule::new("self.filter(r, r.format == 'Native').size() <= 1").message("at most one Native registry (its place is spec.path)"))]
    #[schemars(length(max = 8))]
    pub registries: Vec<Registry>,

    /// Weighs pods by their load (metrics.k8s.io): see `LoadSpec`. Absent: weights as declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadSpec>,
}

/// How an endpoint's host and port are chosen. A pod whose address cannot be resolved is left
/// out and named on the status (`unresolvedAddresses`), never published with another address.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.mode == 'NodePort') == has(self.service)").message("address: set `service` exactly when mode is NodePort"))]
#[x_kube(validation = Rule::new("(self.mode == 'Template') == has(self.host)").message("address: set `host` exactly when mode is Template"))]
#[x_kube(validation = Rule::new("!has(self.port) || self.mode == 'Template'").message("address.port is only for mode Template"))]
#[x_kube(validation = Rule::new("!has(self.nodeAddressType) || self.mode == 'HostIP' || self.mode == 'NodePort'").message("address.nodeAddressType is only for modes HostIP and NodePort"))]
pub struct AddressSpec {
    /// PodIP (default): the pod IP and container port. HostIP: the node's address and the
    /// port's `hostPort` (the container port for `hostNetwork` pods). NodePort: the node's
    /// address and the node port of `service`, whose `externalTrafficPolicy` must be `Local`.
    /// Template: `host` with placeholders, and `port` or the container port.
    #[serde(default)]
    pub mode: AddressMode,
    /// Which node address HostIP and NodePort publish: InternalIP (default) or ExternalIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_address_type: Option<NodeAddressType>,
    /// NodePort: the Service (in the resource's namespace) whose node port is published: its
    /// port whose `targetPort` is `spec.port` (or named like it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 63 && self.matches('^[a-z]([a-z0-9-]*[a-z0-9])?$')").message("address.service must be a Service name"))]
    #[schemars(length(max = 63))]
    pub service: Option<String>,
    /// Template: the host, with `{pod}`, `{namespace}`, `{node}` and `{podIP}` replaced per
    /// pod, e.g. `{pod}.web-headless.{namespace}.svc.cluster.local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 253 && self.matches('^([a-zA-Z0-9.:-]|[{](pod|namespace|node|podIP)[}])+$')").message("address.host may hold letters, digits, '.', ':', '-' and the placeholders {pod}, {namespace}, {node}, {podIP}"))]
    #[schemars(length(max = 253))]
    pub host: Option<String>,
    /// Template: a fixed port; defaults to the container port of `spec.port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("address.port must be between 1 and 65535"))]
    pub port: Option<i32>,
}

/// Where an endpoint's address comes from.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum AddressMode {
    /// The pod IP and container port.
    #[default]
    #[serde(rename = "PodIP")]
    PodIp,
    /// The node's address and the `hostPort`.
    #[serde(rename = "HostIP")]
    HostIp,
    /// The node's address and a Service's node port.
    NodePort,
    /// A host template and a fixed or container port.
    Template,
}

/// Which of a node's `status.addresses` is published.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum NodeAddressType {
    /// The node's InternalIP.
    #[default]
    InternalIP,
    /// The node's ExternalIP.
    ExternalIP,
}

/// One place the endpoints are published, in the layout a client library reads.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.format == 'Dubbo') == has(self.dubbo)").message("registries: set `dubbo` exactly when format is Dubbo"))]
#[x_kube(validation = Rule::new("(self.format == 'Curator') == has(self.curator)").message("registries: set `curator` exactly when format is Curator"))]
#[x_kube(validation = Rule::new("(self.format == 'ServerSet') == has(self.serverSet)").message("registries: set `serverSet` exactly when format is ServerSet"))]
#[x_kube(validation = Rule::new("!has(self.dubbo) || (size(self.dubbo.interfaces) >= 1 && size(self.dubbo.interfaces) <= 32)").message("dubbo.interfaces must list 1 to 32 Java interfaces"))]
pub struct Registry {
    /// Native (podkeeper's JSON at `spec.path`), Dubbo, Curator (Curator x-discovery and
    /// Spring Cloud ZooKeeper) or ServerSet (Finagle, Aurora).
    pub format: RegistryFormat,
    /// Dubbo interface-level provider URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dubbo: Option<crate::zk::format::dubbo::Options>,
    /// Curator `ServiceInstance` nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curator: Option<crate::zk::format::curator::Options>,
    /// ServerSet members and weight vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_set: Option<crate::zk::format::serverset::Options>,
}

/// The layouts podkeeper writes.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    schemars::JsonSchema,
)]
pub enum RegistryFormat {
    /// podkeeper's own JSON records.
    #[default]
    Native,
    /// Dubbo 2.7 / 3.x interface-level registry.
    Dubbo,
    /// Curator x-discovery / Spring Cloud ZooKeeper.
    Curator,
    /// Finagle / Aurora ServerSet.
    ServerSet,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn default_drain_seconds() -> u32 {
    10
}

/// A ZooKeeper ensemble.
#[derive(
    KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub struct ZooKeeperTarget {
    /// Comma-separated `host:port` list.
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 1024 && self.matches('^[A-Za-z0-9.:\\\\[\\\\]-]+(,[A-Za-z0-9.:\\\\[\\\\]-]+)*$')").message("connect must be a comma-separated list of host:port"))]
    #[schemars(length(max = 1024))]
    pub connect: String,
    /// Optional chroot applied to every path of this resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) <= 512 && self.matches('^(/[A-Za-z0-9._:@-]+)+$')").message("chroot must be an absolute znode path"))]
    #[schemars(length(max = 512))]
    pub chroot: Option<String>,
}

/// Weight assignment. See the README for the semantics and a worked example.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.groups) || self.groups.all(g, self.groups.exists_one(h, h.name == g.name))").message("weight group names must be unique"))]
pub struct Weights {
    /// Relative weight of a pod without the `podkeeper.io/weight` annotation.
    #[serde(default = "default_weight")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10000").message("weights.default must be between 1 and 10000"))]
    pub default: u32,
    /// Share of the implicit `default` group (pods matching no group) when groups are declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10000").message("weights.defaultShare must be between 1 and 10000"))]
    pub default_share: Option<u32>,
    /// Groups with a constant share of the total; a pod belongs to the first group that selects it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("size(self) <= 32").message("at most 32 weight groups"))]
    #[schemars(length(max = 32))]
    pub groups: Vec<WeightGroup>,
}

fn default_weight() -> u32 {
    100
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            default: default_weight(),
            default_share: None,
            groups: Vec::new(),
        }
    }
}

/// A set of pods with a constant share of the total weight.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WeightGroup {
    /// Group name, written into each endpoint's `group`.
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 63 && self.matches('^[a-z0-9]([a-z0-9-]*[a-z0-9])?$') && self != 'default'").message("group name must be 1-63 lowercase letters, digits and '-', and not 'default' (reserved for the implicit group)"))]
    #[schemars(length(max = 63))]
    pub name: String,
    /// Pods of this group (within the resource's selection).
    pub selector: LabelSelector,
    /// Relative share of the total weight while the group has a ready endpoint.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10000").message("share must be between 1 and 10000"))]
    pub share: u32,
}

/// Client-side load balancing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    /// RoundRobin, Random, WeightedRandom, WeightedRoundRobin, LeastRequest or ConsistentHash.
    #[serde(default)]
    pub policy: Policy,
    /// Switch the published policy from load (needs `spec.load`); `auto: {}` takes the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoSpec>,
}

/// Pod labels and annotations copied into endpoint metadata, plus static entries.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetadataSpec {
    /// Pod label keys to copy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("size(self) <= 32 && self.all(k, size(k) >= 1 && size(k) <= 317)").message("at most 32 label keys, each 1-317 characters"))]
    #[schemars(length(max = 32), inner(length(max = 317)))]
    pub labels: Vec<String>,
    /// Pod annotation keys to copy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("size(self) <= 32 && self.all(k, size(k) >= 1 && size(k) <= 317)").message("at most 32 annotation keys, each 1-317 characters"))]
    #[schemars(length(max = 32), inner(length(max = 317)))]
    pub annotations: Vec<String>,
    /// Static key/values added to every endpoint.
    #[serde(default, rename = "static", skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("size(self) <= 32 && self.all(k, size(k) <= 253 && size(self[k]) <= 1024)").message("at most 32 static entries, keys up to 253 and values up to 1024 characters"))]
    #[schemars(extend("maxProperties" = 32))]
    pub r#static: BTreeMap<String, String>,
}

/// What the operator observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRegistrationStatus {
    /// The generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Synced, ZooKeeperAvailable and Conflict.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Pods matched by the selector.
    #[serde(default)]
    pub matched: u32,
    /// Matched pods that are ready.
    #[serde(default)]
    pub ready: u32,
    /// Endpoints in ZooKeeper, draining ones included.
    #[serde(default)]
    pub published: u32,
    /// Endpoints published with weight 0 while their pods terminate.
    #[serde(default)]
    pub draining: u32,
    /// Ready count and total weight per group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupStatus>,
    /// The resolved base znode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// When ZooKeeper last matched the desired state (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    /// One entry per registry of `spec.registries` (absent for the default native one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registries: Vec<RegistryStatus>,
    /// Ready pods left out because their address (`spec.address`) cannot be resolved.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unresolved: u32,
    /// The first few of them, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved_addresses: Vec<UnresolvedAddress>,
    /// Where this resource's nodes are, as last confirmed in ZooKeeper: what an edit of the
    /// path, the ensemble or the registries moves away from, and what deletion removes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Places about to be written and not yet confirmed: recorded before the first write
    /// there, emptied once that place is `placement`. After a crash in the middle of a move,
    /// an edit back still removes what was written there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_intents: Vec<Placement>,
    /// The load-balancing policy published (the declared one, or the automatic switch's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// The load weighting, when `spec.load` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadStatus>,
}

/// Where a registration's nodes live: the ensemble, the native service path and every
/// client-format folder. Kept on the status so that an edit, even across an operator restart,
/// removes exactly what the resource no longer wants, after the new place is written.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// The resource's own ensemble (`spec.zookeeper`); null: the operator's.
    // Every field is serialized, null and empty included: the status is merge-patched, and an
    // omitted field would keep the ensemble or chroot a resource moved away from.
    #[serde(default)]
    pub zookeeper: Option<PlacedEnsemble>,
    /// The service record's path.
    pub path: String,
    /// The client-format folders written, with their format.
    #[serde(default)]
    pub folders: Vec<PlacedFolder>,
}

/// The ensemble of a placement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacedEnsemble {
    /// Comma-separated `host:port` list.
    pub connect: String,
    /// Its chroot, if any.
    #[serde(default)]
    pub chroot: Option<String>,
}

/// One client-format folder a resource writes into.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct PlacedFolder {
    /// Dubbo, Curator or ServerSet.
    pub format: RegistryFormat,
    /// The folder.
    pub path: String,
}

/// A ready pod that is not published because its address cannot be resolved.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnresolvedAddress {
    /// Pod name.
    pub pod: String,
    /// Why.
    pub reason: String,
}

/// What one registry holds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatus {
    /// The format.
    pub format: RegistryFormat,
    /// Where its nodes live (the folder of each Dubbo interface, the Curator service, ...).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Endpoints published there.
    #[serde(default)]
    pub published: u32,
    /// Why it is not (fully) published, if it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A condition in the Kubernetes style.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Ready, Synced, ZooKeeperAvailable or Conflict.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The generation the condition refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Status of one weight group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    /// Group name (`default` for the implicit one).
    pub name: String,
    /// Ready endpoints in the group.
    pub ready: u32,
    /// Sum of the group's endpoint weights.
    pub weight: u64,
}

impl ServiceRegistration {
    /// The registry name: `spec.serviceName` or `metadata.name`.
    pub fn service_name(&self) -> String {
        self.spec
            .service_name
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}

/// The CRD as YAML, exactly as committed in `crds/`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let mut crd = serde_json::to_value(ServiceRegistration::crd()).expect("CRD serializes");
    drop_unknown_formats(&mut crd);
    let body = serde_yaml::to_string(&crd).expect("CRD serializes");
    format!("# Generated by `podkeeper crd`; do not edit.\n{body}")
}

/// The RegistryPolicy CRD as YAML, exactly as committed in `crds/`.
pub fn policy_crd_yaml() -> String {
    use kube::CustomResourceExt;
    let mut crd = serde_json::to_value(RegistryPolicy::crd()).expect("CRD serializes");
    drop_unknown_formats(&mut crd);
    let body = serde_yaml::to_string(&crd).expect("CRD serializes");
    format!("# Generated by `podkeeper crd`; do not edit.\n{body}")
}

/// The RegistryImport CRD as YAML, exactly as committed in `crds/`.
pub fn import_crd_yaml() -> String {
    use kube::CustomResourceExt;
    let mut crd = serde_json::to_value(RegistryImport::crd()).expect("CRD serializes");
    drop_unknown_formats(&mut crd);
    let body = serde_yaml::to_string(&crd).expect("CRD serializes");
    format!("# Generated by `podkeeper crd`; do not edit.\n{body}")
}

/// schemars marks unsigned integers `format: uint32`; Kubernetes knows no such format and
/// warns on every apply. The bounds stay as `minimum` and CEL rules.
fn drop_unknown_formats(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if map
                .get("format")
                .and_then(|f| f.as_str())
                .is_some_and(|f| f.starts_with("uint"))
            {
                map.remove("format");
            }
            map.values_mut().for_each(drop_unknown_formats);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_unknown_formats),
        _ => {}
    }
}

//! A ServiceRegistration's spec compiled once for the pods it is applied to: its selector,
//! ports, address mode, weight groups and metadata. Pure; knows nothing of pods' state.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use smol_str::SmolStr;

use super::address::{self, AddressError, Mode, NodePorts};
use super::pod::PodInfo;
use super::selector::{Selector, SelectorError};
use crate::crd::{MetadataSpec, ServiceRegistrationSpec, WEIGHT_ANNOTATION};

pub const DEFAULT_GROUP: &str = "default";
/// Share of the implicit group when groups are declared and `weights.defaultShare` is unset.
pub const DEFAULT_GROUP_SHARE: u32 = 1;

/// A spec the operator cannot act on; reported on the resource's status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The selector would match every pod.
    #[error("spec.selector is empty: it would publish every pod in the namespace")]
    EmptySelector,
    /// The selector does not compile.
    #[error("spec.selector: {0}")]
    Selector(SelectorError),
    /// A group selector does not compile.
    #[error("spec.weights.groups[{index}].selector: {source}")]
    GroupSelector {
        /// Group index.
        index: usize,
        /// Why.
        source: SelectorError,
    },
    /// A numeric port outside 1-65535 or an empty name.
    #[error("spec.port {0:?} is not a port number (1-65535) or a port name")]
    Port(String),
    /// `spec.address` does not compile.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// More weight groups than the API allows.
    #[error("spec.weights.groups has {0} groups; at most {MAX_GROUPS} are allowed")]
    TooManyGroups(usize),
}

/// Weight groups a resource may declare (the CRD's limit, checked again for specs that did not
/// come through the API server).
pub const MAX_GROUPS: usize = 32;

/// Which container port to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// A fixed number.
    Number(u16),
    /// A container port name.
    Name(SmolStr),
}

/// A resource's spec compiled for repeated evaluation. Its strings that go into every endpoint
/// record (namespace, group names, port names, metadata keys and static values) are
/// [`SmolStr`]s the records clone: one shared copy each, not one per record.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The resource's namespace (pods come from there).
    pub namespace: SmolStr,
    pub(super) selector: Selector,
    pub(super) port: PortRef,
    pub(super) extra_ports: Vec<SmolStr>,
    pub(super) groups: Vec<(SmolStr, Selector)>,
    /// Shares of the declared groups followed by the implicit group's; `None` without groups.
    pub(super) shares: Option<Vec<u32>>,
    /// `weights.default`: the weight of a pod without the weight annotation.
    pub default_weight: u32,
    pub(super) metadata: Metadata,
    pub(super) drain_ms: i64,
    pub(super) address: Mode,
}

impl Registration {
    /// Compiles a spec; errors name the field.
    pub fn compile(
        namespace: &str,
        spec: &ServiceRegistrationSpec,
    ) -> Result<Registration, SpecError> {
        let selector = Selector::compile(&spec.selector).map_err(SpecError::Selector)?;
        if selector.is_empty() {
            return Err(SpecError::EmptySelector);
        }
        let port = match &spec.port {
            IntOrString::Int(n) => PortRef::Number(
                u16::try_from(*n)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| SpecError::Port(n.to_string()))?,
            ),
            IntOrString::String(s) if s.is_empty() => return Err(SpecError::Port(s.clone())),
            IntOrString::String(s) => match s.parse::<u16>() {
                Ok(n) if n > 0 => PortRef::Number(n),
                _ => PortRef::Name(SmolStr::new(s)),
            },
        };
        if spec.weights.groups.len() > MAX_GROUPS {
            return Err(SpecError::TooManyGroups(spec.weights.groups.len()));
        }
        let groups = spec
            .weights
            .groups
            .iter()
            .enumerate()
            .map(|(index, g)| {
                Selector::compile(&g.selector)
                    .map(|s| (SmolStr::new(&g.name), s))
                    .map_err(|source| SpecError::GroupSelector { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let shares = (!groups.is_empty()).then(|| {
            let mut s: Vec<u32> = spec.weights.groups.iter().map(|g| g.share.max(1)).collect();
            s.push(
                spec.weights
                    .default_share
                    .unwrap_or(DEFAULT_GROUP_SHARE)
                    .max(1),
            );
            s
        });
        Ok(Registration {
            namespace: SmolStr::new(namespace),
            selector,
            port,
            extra_ports: spec.extra_ports.iter().map(SmolStr::new).collect(),
            groups,
            shares,
            default_weight: spec.weights.default.max(1),
            metadata: Metadata::compile(&spec.metadata),
            drain_ms: i64::from(spec.drain_seconds) * 1000,
            address: Mode::compile(&spec.address)?,
        })
    }

    /// The Service whose node ports are published (NodePort mode).
    pub fn node_port_service(&self) -> Option<&str> {
        self.address.node_port_service()
    }

    /// The node ports bound so far (NodePort mode).
    pub fn node_ports(&self) -> Option<&NodePorts> {
        self.address.node_ports()
    }

    /// Finds the node ports of the NodePort Service for the spec's ports; the error says why
    /// the Service cannot be used.
    pub fn node_ports_of(
        &self,
        service: Option<&address::ServiceInfo>,
    ) -> Result<NodePorts, String> {
        let name = self.node_port_service().unwrap_or_default();
        let (port_name, port_number) = match &self.port {
            PortRef::Name(n) => (Some(n.as_str()), None),
            PortRef::Number(n) => (None, Some(*n)),
        };
        let extra: Vec<String> = self.extra_ports.iter().map(SmolStr::to_string).collect();
        address::bind(name, service, port_name, port_number, &extra)
    }

    /// This registration with its NodePort mode bound to `ports`.
    pub fn with_node_ports(&self, ports: NodePorts) -> Registration {
        let mut reg = self.clone();
        if let Mode::NodePort { ports: bound, .. } = &mut reg.address {
            *bound = Some(ports);
        }
        reg
    }

    /// Does the resource select this pod?
    pub fn selects(&self, pod: &PodInfo) -> bool {
        self.selector.matches(&pod.labels)
    }

    /// A label every pod the resource selects carries, and the values it may take
    /// ([`Selector::anchor`](super::selector::Selector::anchor)).
    pub fn anchor(&self) -> Option<(&str, Vec<&str>)> {
        self.selector.anchor()
    }

    /// Annotation keys this resource reads from pods.
    pub fn annotation_keys(&self) -> impl Iterator<Item = &str> {
        self.metadata.annotations.iter().map(SmolStr::as_str)
    }

    /// The pod's declared relative weight: its weight annotation, or `weights.default`; an
    /// annotation that is not an integer from 1 to 10000 is an error saying so.
    pub fn declared_weight(&self, pod: &PodInfo) -> Result<u32, String> {
        let Some(v) = pod.annotations.get(WEIGHT_ANNOTATION) else {
            return Ok(self.default_weight);
        };
        match v.trim().parse::<u32>() {
            Ok(w) if (1..=10_000).contains(&w) => Ok(w),
            _ => Err(format!(
                "pod {} has {WEIGHT_ANNOTATION}={v:?}; expected an integer from 1 to 10000, using {}",
                pod.name, self.default_weight
            )),
        }
    }

    /// The weight group of a pod this resource selects (the implicit group is the last).
    pub fn group_of(&self, pod: &PodInfo) -> usize {
        self.groups
            .iter()
            .position(|(_, s)| s.matches(&pod.labels))
            .unwrap_or(self.groups.len())
    }

    pub(super) fn group_name(&self, g: usize) -> SmolStr {
        self.groups
            .get(g)
            .map_or(SmolStr::new_static(DEFAULT_GROUP), |(n, _)| n.clone())
    }
}

/// `spec.metadata` as the records use it: keys and static entries as shared strings.
#[derive(Debug, Clone)]
pub(super) struct Metadata {
    pub(super) labels: Vec<SmolStr>,
    pub(super) annotations: Vec<SmolStr>,
    pub(super) r#static: Vec<(SmolStr, SmolStr)>,
}

impl Metadata {
    fn compile(spec: &MetadataSpec) -> Metadata {
        Metadata {
            labels: spec.labels.iter().map(SmolStr::new).collect(),
            annotations: spec.annotations.iter().map(SmolStr::new).collect(),
            r#static: spec
                .r#static
                .iter()
                .map(|(k, v)| (SmolStr::new(k), SmolStr::new(v)))
                .collect(),
        }
    }
}

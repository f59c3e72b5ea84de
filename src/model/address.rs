//! Where an endpoint's host and port come from (`spec.address`): the pod IP, the node's address
//! with a hostPort or a Service's node port, or a host template. Pure: pods, nodes and the
//! Service projection come in as arguments; nothing here reads the API.

use std::collections::HashMap;

use crate::crd::{AddressMode, AddressSpec, NodeAddressType};

use super::pod::{NodeInfo, PodInfo};

/// A `spec.address` the operator cannot act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// A mode without its field, or a field of another mode (CEL refuses these too).
    #[error("spec.address: {0}")]
    Spec(String),
    /// An unknown `{placeholder}` or an unclosed brace in `spec.address.host`.
    #[error("spec.address.host: {0}")]
    Template(String),
}

/// Why a ready pod has no address in the chosen mode; shown on the status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    /// The pod has no IP yet (not reported: a pod is only briefly ready without one).
    #[error("the pod has no IP")]
    NoPodIp,
    /// The pod is not scheduled, or its node is unknown.
    #[error("node {0:?} is unknown")]
    NoNode(String),
    /// The node has no address of the chosen type.
    #[error("node {node} has no {kind:?} address")]
    NoNodeAddress {
        /// Node name.
        node: String,
        /// The address type asked for.
        kind: NodeAddressType,
    },
    /// HostIP mode and the container port has no hostPort (and the pod is not hostNetwork).
    #[error("container port {0} has no hostPort")]
    NoHostPort(u16),
    /// NodePort mode before the Service is bound (the resource is refused meanwhile).
    #[error("the Service's node port is not known")]
    NoNodePort,
}

impl Unresolved {
    /// Worth showing on the status.
    pub fn reported(&self) -> bool {
        !matches!(self, Unresolved::NoPodIp)
    }
}

/// One piece of a host template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// `{pod}`.
    Pod,
    /// `{namespace}`.
    Namespace,
    /// `{node}`.
    Node,
    /// `{podIP}`.
    PodIp,
}

/// The node ports a NodePort Service gives the main port and the extra ports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodePorts {
    /// The node port of the main port.
    pub main: u16,
    /// (extra port name, node port) for the extra ports the Service exposes.
    pub extra: Vec<(String, u16)>,
}

/// `spec.address` compiled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    /// Pod IP and container port.
    #[default]
    PodIp,
    /// Node address and hostPort.
    HostIp(NodeAddressType),
    /// Node address and the Service's node port (`ports` once bound to the Service).
    NodePort {
        /// Which node address.
        kind: NodeAddressType,
        /// The Service's name.
        service: String,
        /// Its node ports, once bound.
        ports: Option<NodePorts>,
    },
    /// A host template and a fixed port (or the container port).
    Template {
        /// The host.
        host: Vec<Piece>,
        /// A fixed port.
        port: Option<u16>,
    },
}

impl Mode {
    /// Compiles `spec.address`.
    pub fn compile(spec: &AddressSpec) -> Result<Mode, AddressError> {
        let kind = spec.node_address_type.unwrap_or_default();
        let stray = |what: &str| {
            Err(AddressError::Spec(format!(
                "{what} is not used by mode {:?}",
                spec.mode
            )))
        };
        match spec.mode {
            AddressMode::PodIp | AddressMode::HostIp | AddressMode::NodePort
                if spec.host.is_some() || spec.port.is_some() =>
            {
                stray("host/port")
            }
            AddressMode::PodIp | AddressMode::Template if spec.node_address_type.is_some() => {
                stray("nodeAddressType")
            }
            AddressMode::PodIp | AddressMode::HostIp | AddressMode::Template
                if spec.service.is_some() =>
            {
                stray("service")
            }
            AddressMode::PodIp => Ok(Mode::PodIp),
            AddressMode::HostIp => Ok(Mode::HostIp(kind)),
            AddressMode::NodePort => match &spec.service {
                Some(s) if !s.is_empty() => Ok(Mode::NodePort {
                    kind,
                    service: s.clone(),
                    ports: None,
                }),
                _ => Err(AddressError::Spec("mode NodePort needs `service`".into())),
            },
            AddressMode::Template => {
                let host = spec
                    .host
                    .as_deref()
                    .ok_or_else(|| AddressError::Spec("mode Template needs `host`".into()))?;
                let port = match spec.port {
                    None => None,
                    Some(p) => {
                        Some(u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                            AddressError::Spec(format!("port {p} is not 1-65535"))
                        })?)
                    }
                };
                Ok(Mode::Template {
                    host: parse_template(host)?,
                    port,
                })
            }
        }
    }

    /// The Service a NodePort mode reads.
    pub fn node_port_service(&self) -> Option<&str> {
        match self {
            Mode::NodePort { service, .. } => Some(service),
            _ => None,
        }
    }

    /// The node ports bound, in NodePort mode.
    pub fn node_ports(&self) -> Option<&NodePorts> {
        match self {
            Mode::NodePort { ports, .. } => ports.as_ref(),
            _ => None,
        }
    }

    /// The host and port of `pod`, whose `spec.port` is container port `container_port`.
    pub fn resolve(
        &self,
        namespace: &str,
        pod: &PodInfo,
        nodes: &HashMap<String, NodeInfo>,
        container_port: u16,
    ) -> Result<(String, u16), Unresolved> {
        let port = self.port(pod, nodes, container_port)?;
        let host = match self {
            Mode::PodIp => pod_ip(pod)?.to_string(),
            Mode::HostIp(kind) | Mode::NodePort { kind, .. } => {
                node_address(pod, nodes, *kind)?.to_string()
            }
            Mode::Template { host, .. } => render(host, namespace, pod)?,
        };
        Ok((host, port))
    }

    /// The published port, or why the address cannot be resolved: [`Mode::resolve`] without
    /// building the host (the desired-state pass asks this of every pod).
    pub fn port(
        &self,
        pod: &PodInfo,
        nodes: &HashMap<String, NodeInfo>,
        container_port: u16,
    ) -> Result<u16, Unresolved> {
        match self {
            Mode::PodIp => pod_ip(pod).map(|_| container_port),
            Mode::HostIp(kind) => {
                node_address(pod, nodes, *kind)?;
                host_port(pod, container_port)
            }
            Mode::NodePort { kind, ports, .. } => {
                let port = ports.as_ref().ok_or(Unresolved::NoNodePort)?.main;
                node_address(pod, nodes, *kind).map(|_| port)
            }
            Mode::Template { host, port } => {
                for piece in host {
                    match piece {
                        Piece::Node if pod.node.is_none() => {
                            return Err(Unresolved::NoNode(String::new()));
                        }
                        Piece::PodIp => {
                            pod_ip(pod)?;
                        }
                        _ => {}
                    }
                }
                Ok(port.unwrap_or(container_port))
            }
        }
    }

    /// The published number of an extra port whose container port is `container_port`:
    /// `None` when this mode does not expose it.
    pub fn extra_port(&self, name: &str, pod: &PodInfo, container_port: u16) -> Option<u16> {
        match self {
            Mode::PodIp | Mode::Template { .. } => Some(container_port),
            Mode::HostIp(_) => host_port(pod, container_port).ok(),
            Mode::NodePort { ports, .. } => ports
                .as_ref()?
                .extra
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| *p),
        }
    }
}

fn pod_ip(pod: &PodInfo) -> Result<&str, Unresolved> {
    pod.ip.as_deref().ok_or(Unresolved::NoPodIp)
}

fn node_address<'a>(
    pod: &PodInfo,
    nodes: &'a HashMap<String, NodeInfo>,
    kind: NodeAddressType,
) -> Result<&'a str, Unresolved> {
    let name = pod.node.as_deref().unwrap_or_default();
    let node = nodes
        .get(name)
        .ok_or_else(|| Unresolved::NoNode(name.to_string()))?;
    let address = match kind {
        NodeAddressType::InternalIP => node.internal_ip.as_deref(),
        NodeAddressType::ExternalIP => node.external_ip.as_deref(),
    };
    address.ok_or(Unresolved::NoNodeAddress {
        node: name.to_string(),
        kind,
    })
}

fn host_port(pod: &PodInfo, container_port: u16) -> Result<u16, Unresolved> {
    if pod.host_network {
        return Ok(container_port);
    }
    pod.host_ports
        .iter()
        .find(|(c, _)| *c == container_port)
        .map(|(_, h)| *h)
        .ok_or(Unresolved::NoHostPort(container_port))
}

fn render(host: &[Piece], namespace: &str, pod: &PodInfo) -> Result<String, Unresolved> {
    let mut out = String::new();
    for piece in host {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Pod => out.push_str(&pod.name),
            Piece::Namespace => out.push_str(namespace),
            Piece::Node => out.push_str(
                pod.node
                    .as_deref()
                    .ok_or_else(|| Unresolved::NoNode(String::new()))?,
            ),
            Piece::PodIp => out.push_str(pod_ip(pod)?),
        }
    }
    Ok(out)
}

/// Splits a host template into text and placeholders.
pub fn parse_template(host: &str) -> Result<Vec<Piece>, AddressError> {
    let mut pieces = Vec::new();
    let mut rest = host;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_string()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| AddressError::Template(format!("unclosed '{{' in {host:?}")))?;
        pieces.push(match &rest[open + 1..open + close] {
            "pod" => Piece::Pod,
            "namespace" => Piece::Namespace,
            "node" => Piece::Node,
            "podIP" => Piece::PodIp,
            other => {
                return Err(AddressError::Template(format!(
                    "unknown placeholder {{{other}}}; use {{pod}}, {{namespace}}, {{node}} or {{podIP}}"
                )));
            }
        });
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return Err(AddressError::Template(format!("stray '}}' in {host:?}")));
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    if pieces.is_empty() {
        return Err(AddressError::Template("empty host".into()));
    }
    Ok(pieces)
}

/// What the operator remembers of a Service: enough to find node ports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceInfo {
    /// `spec.type` is NodePort or LoadBalancer (node ports allocated).
    pub has_node_ports: bool,
    /// `spec.externalTrafficPolicy` is Local.
    pub local: bool,
    /// Its ports.
    pub ports: Vec<ServicePortInfo>,
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServicePortInfo {
    /// Port name (empty when unnamed).
    pub name: String,
    /// Service port.
    pub port: u16,
    /// `targetPort` as given: a number or a container port name; `None` when unset.
    pub target: Option<Target>,
    /// Allocated node port.
    pub node_port: Option<u16>,
}

/// A Service port's `targetPort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A container port number.
    Number(u16),
    /// A container port name.
    Name(String),
}

impl ServiceInfo {
    /// Projects a Service.
    pub fn from_service(svc: &k8s_openapi::api::core::v1::Service) -> ServiceInfo {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let spec = svc.spec.as_ref();
        let ports = spec
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .map(|p| ServicePortInfo {
                name: p.name.clone().unwrap_or_default(),
                port: u16::try_from(p.port).unwrap_or(0),
                target: p.target_port.as_ref().and_then(|t| match t {
                    IntOrString::Int(n) => u16::try_from(*n).ok().map(Target::Number),
                    IntOrString::String(s) => match s.parse::<u16>() {
                        Ok(n) => Some(Target::Number(n)),
                        Err(_) => Some(Target::Name(s.clone())),
                    },
                }),
                node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
            })
            .collect();
        let type_ = spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP");
        ServiceInfo {
            has_node_ports: matches!(type_, "NodePort" | "LoadBalancer"),
            local: spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local"),
            ports,
        }
    }
}

impl ServicePortInfo {
    /// Does this Service port lead to container port `name` / `number`?
    fn leads_to(&self, name: Option<&str>, number: Option<u16>) -> bool {
        match &self.target {
            Some(Target::Name(t)) => Some(t.as_str()) == name,
            Some(Target::Number(t)) => Some(*t) == number,
            None => Some(self.port) == number,
        }
    }
}

/// The node ports of `service` for the main port (`port_name` / `port_number`, whichever the
/// spec gives) and the extra ports; an error names why the Service cannot be used. NodePort
/// only keeps the client on the pod's node with `externalTrafficPolicy: Local`: otherwise
/// kube-proxy sends it anywhere and the published node says nothing.
pub fn bind(
    service: &str,
    info: Option<&ServiceInfo>,
    port_name: Option<&str>,
    port_number: Option<u16>,
    extra: &[String],
) -> Result<NodePorts, String> {
    let info = info.ok_or_else(|| format!("Service {service:?} does not exist"))?;
    if !info.has_node_ports {
        return Err(format!(
            "Service {service:?} is not of type NodePort or LoadBalancer"
        ));
    }
    if !info.local {
        return Err(format!(
            "Service {service:?} must set externalTrafficPolicy: Local (otherwise the published node does not serve the pod)"
        ));
    }
    let main = info
        .ports
        .iter()
        .find(|p| p.leads_to(port_name, port_number))
        .or_else(|| {
            info.ports
                .iter()
                .find(|p| port_name.is_some_and(|n| p.name == n))
        })
        .or_else(|| (info.ports.len() == 1).then(|| &info.ports[0]))
        .ok_or_else(|| format!("Service {service:?} has no port leading to spec.port"))?;
    let main = main.node_port.ok_or_else(|| {
        format!(
            "Service {service:?} has no node port for port {}",
            main.port
        )
    })?;
    let extra = extra
        .iter()
        .filter_map(|name| {
            let p = info
                .ports
                .iter()
                .find(|p| p.leads_to(Some(name), None) || p.name == *name)?;
            Some((name.clone(), p.node_port?))
        })
        .collect();
    Ok(NodePorts { main, extra })
}

#[cfg(test)]
mod tests;

//! The desired registry content of one resource: which pods are endpoints, with which record.
//! Pure: pods, nodes and the current time come in as arguments.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::pod::{NodeInfo, PodInfo};
use super::record::{EndpointRecord, EndpointStatus};
use super::selector::{Selector, SelectorError};
use super::weights::{self, Member};
use crate::crd::{GroupStatus, MetadataSpec, ServiceRegistrationSpec, WEIGHT_ANNOTATION};

/// Name of the implicit group of pods that match no declared group.
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
}

/// Which container port to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// A fixed number.
    Number(u16),
    /// A container port name.
    Name(String),
}

/// A resource's spec compiled for repeated evaluation.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The resource's namespace (pods come from there).
    pub namespace: String,
    selector: Selector,
    port: PortRef,
    extra_ports: Vec<String>,
    groups: Vec<(String, Selector)>,
    /// Shares of the declared groups followed by the implicit group's; `None` without groups.
    shares: Option<Vec<u32>>,
    default_weight: u32,
    metadata: MetadataSpec,
    drain_ms: i64,
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
                _ => PortRef::Name(s.clone()),
            },
        };
        let groups = spec
            .weights
            .groups
            .iter()
            .enumerate()
            .map(|(index, g)| {
                Selector::compile(&g.selector)
                    .map(|s| (g.name.clone(), s))
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
            namespace: namespace.to_string(),
            selector,
            port,
            extra_ports: spec.extra_ports.clone(),
            groups,
            shares,
            default_weight: spec.weights.default.max(1),
            metadata: spec.metadata.clone(),
            drain_ms: i64::from(spec.drain_seconds) * 1000,
        })
    }

    /// Does the resource select this pod?
    pub fn selects(&self, pod: &PodInfo) -> bool {
        self.selector.matches(&pod.labels)
    }

    /// Annotation keys this resource reads from pods.
    pub fn annotation_keys(&self) -> impl Iterator<Item = &str> {
        self.metadata.annotations.iter().map(String::as_str)
    }

    fn group_of(&self, pod: &PodInfo) -> usize {
        self.groups
            .iter()
            .position(|(_, s)| s.matches(&pod.labels))
            .unwrap_or(self.groups.len())
    }

    fn group_name(&self, g: usize) -> &str {
        self.groups
            .get(g)
            .map_or(DEFAULT_GROUP, |(n, _)| n.as_str())
    }
}

/// What ZooKeeper should hold for one resource, and the counts for its status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    /// Endpoint records by pod name. Shared, so an unchanged record is reused, not rebuilt.
    pub endpoints: BTreeMap<String, Arc<EndpointRecord>>,
    /// Pods the selector matches.
    pub matched: u32,
    /// Matched pods that are ready.
    pub ready: u32,
    /// Endpoints published as DRAINING.
    pub draining: u32,
    /// Per-group ready count and total weight.
    pub groups: Vec<GroupStatus>,
    /// Earliest time (Unix ms) a draining endpoint must go: reconcile again then.
    pub next_deadline_ms: Option<i64>,
    /// Pods left out for a reason the user should see (at most a few, with a total).
    pub warnings: Vec<String>,
}

const MAX_WARNINGS: usize = 5;

/// The previous result and the pods changed since, so unchanged records are reused.
pub struct Reuse<'r> {
    /// Records of the previous computation (same spec generation, same nodes).
    pub previous: &'r BTreeMap<String, Arc<EndpointRecord>>,
    /// Pods whose projection changed since.
    pub changed: &'r HashSet<String>,
}

/// Computes the desired endpoints from the pods of the resource's namespace.
pub fn desired<'a>(
    reg: &Registration,
    pods: impl IntoIterator<Item = &'a PodInfo>,
    nodes: &HashMap<String, NodeInfo>,
    now_ms: i64,
) -> Desired {
    desired_reusing(reg, pods, nodes, now_ms, None)
}

/// Like [`desired`], but a pod that did not change keeps its previous record (the same `Arc`)
/// when its weight and status are unchanged: a one-pod change costs a scan, not a rebuild.
pub fn desired_reusing<'a>(
    reg: &Registration,
    pods: impl IntoIterator<Item = &'a PodInfo>,
    nodes: &HashMap<String, NodeInfo>,
    now_ms: i64,
    reuse: Option<&Reuse<'_>>,
) -> Desired {
    struct Candidate<'p> {
        pod: &'p PodInfo,
        group: usize,
        port: u16,
        draining_until: Option<i64>,
        relative: u32,
    }
    let mut out = Desired::default();
    let mut warnings = Vec::new();
    let mut cands = Vec::new();
    for pod in pods {
        if !reg.selects(pod) {
            continue;
        }
        out.matched += 1;
        let node_info = pod.node.as_deref().and_then(|n| nodes.get(n));
        let node_ready = node_info.is_none_or(|n| n.ready);
        let draining_until = match pod.terminating_since_ms {
            Some(since) => {
                let until = since + reg.drain_ms;
                if !pod.ready_at_termination || until <= now_ms {
                    continue;
                }
                Some(until)
            }
            None => {
                if !(pod.ready && node_ready) {
                    continue;
                }
                out.ready += 1;
                None
            }
        };
        if pod.ip.is_none() {
            continue;
        }
        let port = match &reg.port {
            PortRef::Number(n) => Some(*n),
            PortRef::Name(name) => pod.named_port(name),
        };
        let Some(port) = port else {
            if let PortRef::Name(name) = &reg.port {
                warnings.push(format!(
                    "pod {} has no container port named {name:?}",
                    pod.name
                ));
            }
            continue;
        };
        let relative = match pod.annotations.get(WEIGHT_ANNOTATION) {
            None => reg.default_weight,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(w) if (1..=10_000).contains(&w) => w,
                _ => {
                    warnings.push(format!(
                        "pod {} has {WEIGHT_ANNOTATION}={v:?}; expected an integer from 1 to 10000, using {}",
                        pod.name, reg.default_weight
                    ));
                    reg.default_weight
                }
            },
        };
        cands.push(Candidate {
            pod,
            group: reg.group_of(pod),
            port,
            draining_until,
            relative,
        });
    }

    let serving: Vec<usize> = (0..cands.len())
        .filter(|&i| cands[i].draining_until.is_none())
        .collect();
    let members: Vec<Member> = serving
        .iter()
        .map(|&i| Member {
            group: cands[i].group,
            name: &cands[i].pod.name,
            relative: cands[i].relative,
        })
        .collect();
    let solved = weights::solve(reg.shares.as_deref(), &members);
    let mut weight_of = vec![0u32; cands.len()];
    for (k, &i) in serving.iter().enumerate() {
        weight_of[i] = solved[k];
    }

    let group_count = reg.groups.len() + 1;
    let mut group_ready = vec![0u32; group_count];
    let mut group_weight = vec![0u64; group_count];
    for (i, c) in cands.iter().enumerate() {
        let status = if c.draining_until.is_some() {
            EndpointStatus::Draining
        } else {
            EndpointStatus::Up
        };
        if let Some(until) = c.draining_until {
            out.draining += 1;
            out.next_deadline_ms = Some(out.next_deadline_ms.map_or(until, |d| d.min(until)));
        } else {
            group_ready[c.group] += 1;
            group_weight[c.group] += u64::from(weight_of[i]);
        }
        let name = &*c.pod.name;
        let kept = reuse.and_then(|r| {
            if r.changed.contains(name) {
                return None;
            }
            r.previous
                .get(name)
                .filter(|p| p.weight == weight_of[i] && p.status == status)
                .cloned()
        });
        let record = kept.unwrap_or_else(|| {
            Arc::new(endpoint_record(
                reg,
                c.pod,
                c.port,
                weight_of[i],
                reg.group_name(c.group),
                status,
                nodes,
            ))
        });
        out.endpoints.insert(name.to_string(), record);
    }
    for g in 0..group_count {
        let implicit = g == reg.groups.len();
        if implicit && !reg.groups.is_empty() && group_ready[g] == 0 {
            continue;
        }
        out.groups.push(GroupStatus {
            name: reg.group_name(g).to_string(),
            ready: group_ready[g],
            weight: group_weight[g],
        });
    }
    if warnings.len() > MAX_WARNINGS {
        let more = warnings.len() - MAX_WARNINGS;
        warnings.truncate(MAX_WARNINGS);
        warnings.push(format!("and {more} more"));
    }
    out.warnings = warnings;
    out
}

fn endpoint_record(
    reg: &Registration,
    pod: &PodInfo,
    port: u16,
    weight: u32,
    group: &str,
    status: EndpointStatus,
    nodes: &HashMap<String, NodeInfo>,
) -> EndpointRecord {
    let mut ports = BTreeMap::new();
    if let PortRef::Name(name) = &reg.port {
        ports.insert(name.clone(), port);
    }
    for name in &reg.extra_ports {
        if let Some(p) = pod.named_port(name) {
            ports.insert(name.clone(), p);
        }
    }
    let mut metadata = reg.metadata.r#static.clone();
    for key in &reg.metadata.labels {
        if let Some(v) = pod.labels.get(key) {
            metadata.insert(key.clone(), v.to_string());
        }
    }
    for key in &reg.metadata.annotations {
        if let Some(v) = pod.annotations.get(key) {
            metadata.insert(key.clone(), v.to_string());
        }
    }
    EndpointRecord {
        host: pod.ip.as_deref().unwrap_or_default().to_string(),
        port,
        ports,
        weight,
        group: group.to_string(),
        zone: pod
            .node
            .as_deref()
            .and_then(|n| nodes.get(n))
            .and_then(|n| n.zone.as_deref())
            .map(str::to_string),
        node: pod.node.as_deref().map(str::to_string),
        pod: pod.name.to_string(),
        namespace: reg.namespace.clone(),
        metadata,
        status,
    }
}

//! The desired registry content of one resource: which pods are endpoints, with which record.
//! Pure: pods, nodes and the current time come in as arguments.

use std::collections::btree_map;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use indexmap::IndexMap;
use indexmap::map::Entry as SlotEntry;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use smol_str::SmolStr;

use super::address::{self, AddressError, Mode, NodePorts};
use super::pod::{Labels, NodeInfo, PodInfo};
use super::record::{EndpointStatus, PublishedRecord};
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
    selector: Selector,
    port: PortRef,
    extra_ports: Vec<SmolStr>,
    groups: Vec<(SmolStr, Selector)>,
    /// Shares of the declared groups followed by the implicit group's; `None` without groups.
    shares: Option<Vec<u32>>,
    default_weight: u32,
    metadata: Metadata,
    drain_ms: i64,
    address: Mode,
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

    fn group_of(&self, pod: &PodInfo) -> usize {
        self.groups
            .iter()
            .position(|(_, s)| s.matches(&pod.labels))
            .unwrap_or(self.groups.len())
    }

    fn group_name(&self, g: usize) -> SmolStr {
        self.groups
            .get(g)
            .map_or(SmolStr::new_static(DEFAULT_GROUP), |(n, _)| n.clone())
    }
}

/// `spec.metadata` as the records use it: keys and static entries as shared strings.
#[derive(Debug, Clone)]
struct Metadata {
    labels: Vec<SmolStr>,
    annotations: Vec<SmolStr>,
    r#static: Vec<(SmolStr, SmolStr)>,
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

/// What ZooKeeper should hold for one resource, and the counts for its status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    /// Endpoint records by pod name. Shared, so an unchanged record is reused, not rebuilt.
    pub endpoints: BTreeMap<SmolStr, Arc<PublishedRecord>>,
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
    /// Ready pods left out because their address cannot be resolved.
    pub unresolved: u32,
    /// The first few of them: (pod, why).
    pub unresolved_pods: Vec<(String, String)>,
}

const MAX_WARNINGS: usize = 5;

/// How one selected pod counts; kept between reconciles so a change costs O(changed pods).
/// One per selected pod for the resource's life: kept small (its note is rare, boxed).
#[derive(Debug, Clone)]
struct Slot {
    /// Counts as ready (not terminating, Ready, on a ready node).
    ready: bool,
    /// Published as an endpoint (serving or draining).
    cand: Option<Cand>,
    /// What the status says about the pod, if anything.
    note: Option<Box<Note>>,
    /// The pod's drain ends then (Unix ms): it must be looked at again.
    expires: Option<i64>,
}

/// A slot has one note at most: `slot` stops at a missing port or an unresolved address, and
/// reads the weight annotation (the other warning) only once the address resolved.
#[derive(Debug, Clone)]
enum Note {
    /// Why the pod is left out or published with a fallback.
    Warning(String),
    /// Why the pod's address cannot be resolved, if that is why it is left out.
    Unresolved(String),
}

impl Slot {
    fn warning(&self) -> Option<&str> {
        match self.note.as_deref() {
            Some(Note::Warning(w)) => Some(w),
            _ => None,
        }
    }

    fn unresolved(&self) -> Option<&str> {
        match self.note.as_deref() {
            Some(Note::Unresolved(w)) => Some(w),
            _ => None,
        }
    }
}

/// 16 bytes: one per published pod, in every resource that selects it.
#[derive(Debug, Clone, Copy)]
struct Cand {
    /// The weight group's index (at most [`MAX_GROUPS`]).
    group: u16,
    /// The container port of `spec.port`.
    container_port: u16,
    /// The published port (`spec.address`).
    port: u16,
    /// Draining (until the slot's `expires`) rather than serving.
    draining: bool,
    relative: u32,
    /// The solved weight while serving; 0 while draining.
    weight: u32,
}

impl Cand {
    fn serving(&self) -> bool {
        !self.draining
    }

    fn group(&self) -> usize {
        usize::from(self.group)
    }
}

/// How a pod the resource selects, in weight group `group`, counts at `now`.
fn slot(
    reg: &Registration,
    pod: &PodInfo,
    group: usize,
    nodes: &HashMap<String, NodeInfo>,
    now_ms: i64,
) -> Slot {
    let mut out = Slot {
        ready: false,
        cand: None,
        note: None,
        expires: None,
    };
    let node_ready = pod
        .node
        .as_deref()
        .and_then(|n| nodes.get(n))
        .is_none_or(|n| n.ready);
    let draining = match pod.terminating_since_ms {
        Some(since) => {
            let until = since + reg.drain_ms;
            if !pod.ready_at_termination || until <= now_ms {
                return out;
            }
            out.expires = Some(until);
            true
        }
        None => {
            if !(pod.ready && node_ready) {
                return out;
            }
            out.ready = true;
            false
        }
    };
    let port = match &reg.port {
        PortRef::Number(n) => Some(*n),
        PortRef::Name(name) => pod.named_port(name),
    };
    let Some(port) = port else {
        if let PortRef::Name(name) = &reg.port {
            let why = format!("pod {} has no container port named {name:?}", pod.name);
            out.note = Some(Box::new(Note::Warning(why)));
        }
        return out;
    };
    let container_port = port;
    let port = match reg.address.port(pod, nodes, port) {
        Ok(port) => port,
        Err(why) => {
            if why.reported() {
                out.note = Some(Box::new(Note::Unresolved(why.to_string())));
            }
            return out;
        }
    };
    let relative = match pod.annotations.get(WEIGHT_ANNOTATION) {
        None => reg.default_weight,
        Some(v) => match v.trim().parse::<u32>() {
            Ok(w) if (1..=10_000).contains(&w) => w,
            _ => {
                out.note = Some(Box::new(Note::Warning(format!(
                    "pod {} has {WEIGHT_ANNOTATION}={v:?}; expected an integer from 1 to 10000, using {}",
                    pod.name, reg.default_weight
                ))));
                reg.default_weight
            }
        },
    };
    out.cand = Some(Cand {
        // `Registration::compile` allows at most `MAX_GROUPS`.
        group: group as u16,
        container_port,
        port,
        draining,
        relative,
        // Without groups the relative weight is published as it is; with groups the solver
        // sets it (see `Tracker::solve`).
        weight: if draining { 0 } else { relative.max(1) },
    });
    out
}

/// The desired state of one resource, kept up to date pod by pod.
///
/// [`Tracker::build`] computes it from all pods; [`Tracker::update`] applies the pods changed
/// since, re-solving only the weight groups they touch and rebuilding only the records whose
/// pod or weight changed (the others keep their `Arc`, so the diff skips them by pointer).
/// Both give the same result as [`desired`] over the same pods (property-tested).
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// By pod name. Hashed: a change looks its pod up here first, and a B-tree search compares
    /// a dozen long names sharing a prefix, each read from its own allocation (round 10 of
    /// docs/PERFORMANCE.md). The entries sit in one vector beside a table of their indices: a
    /// table of whole entries, at the half load a doubling table can have, took 45 B per pod
    /// more than a B-tree. Where an order shows, it is the names': the weight solver breaks
    /// ties by name and [`Tracker::recounted`] sorts what it lists.
    slots: IndexMap<SmolStr, Slot>,
    desired: Desired,
    /// The earliest drain end among the slots.
    next_expiry: Option<i64>,
    /// Endpoints whose record may differ from what was last published (see
    /// [`Tracker::published`]); `None` until the first publish: all of them.
    unpublished: Option<BTreeSet<SmolStr>>,
    /// The status counts over the slots, kept as they change.
    totals: Totals,
}

/// What the status counts over all slots, kept slot by slot so a change costs O(log n).
#[derive(Debug, Clone, Default)]
struct Totals {
    ready: u32,
    draining: u32,
    group_ready: Vec<u32>,
    group_weight: Vec<u64>,
    /// Drain ends of the draining endpoints, and how many end then.
    drain_ends: BTreeMap<i64, u32>,
    /// Drain ends of every draining pod, published or not.
    expiries: BTreeMap<i64, u32>,
    /// Pods with a warning, by name.
    warned: BTreeSet<SmolStr>,
    /// Ready pods whose address cannot be resolved, by name.
    unresolved: BTreeSet<SmolStr>,
}

impl Totals {
    /// Counts slot `s` of pod `name` in (`add`) or out.
    fn apply(&mut self, name: &SmolStr, s: &Slot, add: bool) {
        let step = |n: &mut u32| if add { *n += 1 } else { *n -= 1 };
        if s.ready {
            step(&mut self.ready);
        }
        if let Some(u) = s.expires {
            count_in(&mut self.expiries, u, add);
        }
        if s.warning().is_some() {
            name_in(&mut self.warned, name, add);
        }
        if s.unresolved().is_some() {
            name_in(&mut self.unresolved, name, add);
        }
        let Some(c) = s.cand else { return };
        // A draining candidate's slot holds its drain's end (`slot` sets both).
        match s.expires.filter(|_| c.draining) {
            Some(until) => {
                step(&mut self.draining);
                count_in(&mut self.drain_ends, until, add);
            }
            None => {
                let g = c.group();
                if self.group_ready.len() <= g {
                    self.group_ready.resize(g + 1, 0);
                    self.group_weight.resize(g + 1, 0);
                }
                step(&mut self.group_ready[g]);
                self.reweigh(g, 0, c.weight, add);
            }
        }
    }

    /// A serving endpoint of group `g` moved from weight `from` to `to` (`add`), or the
    /// reverse.
    fn reweigh(&mut self, g: usize, from: u32, to: u32, add: bool) {
        let w = &mut self.group_weight[g];
        let (plus, minus) = if add { (to, from) } else { (from, to) };
        *w = *w + u64::from(plus) - u64::from(minus);
    }
}

fn count_in(set: &mut BTreeMap<i64, u32>, key: i64, add: bool) {
    if add {
        *set.entry(key).or_default() += 1;
    } else if let Some(n) = set.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            set.remove(&key);
        }
    }
}

fn name_in(set: &mut BTreeSet<SmolStr>, name: &SmolStr, add: bool) {
    if add {
        set.insert(name.clone());
    } else {
        set.remove(name);
    }
}

impl Tracker {
    /// The desired state over `pods`.
    pub fn build<'a>(
        reg: &Registration,
        pods: impl IntoIterator<Item = &'a PodInfo>,
        nodes: &HashMap<String, NodeInfo>,
        now_ms: i64,
    ) -> Tracker {
        let mut t = Tracker::default();
        // A pod the resource does not select changes nothing in an empty tracker: skipping it
        // here makes a resource of 100 pods in a namespace of 100,000 cheap to build
        // (`cargo bench --bench reconcile -- reconcile_sparse`).
        let selected = pods.into_iter().filter(|p| reg.selects(p));
        t.update(reg, selected.map(|p| (&*p.name, Some(p))), nodes, now_ms);
        // The slots grew by doubling: as small as holds them.
        t.slots.shrink_to_fit();
        // Inserted in name order, a B-tree splits every full node in two and keeps its nodes
        // about half full; built from sorted entries, they are full. Half the nodes: about
        // 100 B per pod less (examples/memory).
        t.desired.endpoints = std::mem::take(&mut t.desired.endpoints)
            .into_iter()
            .collect();
        t
    }

    /// What ZooKeeper should hold.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// When the result changes with no pod changing (the earliest end of a drain), Unix ms.
    pub fn next_wakeup_ms(&self) -> Option<i64> {
        self.next_expiry
    }

    /// Gives up the tracking state.
    pub fn into_desired(self) -> Desired {
        self.desired
    }

    /// The endpoints whose record may have changed since [`Tracker::published`] was last
    /// called (a superset: added, removed, rebuilt or re-weighed); `None` when it never was, or
    /// when the whole state must be compared.
    pub fn unpublished(&self) -> Option<&BTreeSet<SmolStr>> {
        self.unpublished.as_ref()
    }

    /// ZooKeeper now holds exactly [`Tracker::desired`]: later changes are tracked from here.
    pub fn published(&mut self) {
        self.unpublished = Some(BTreeSet::new());
    }

    /// ZooKeeper holds something else than [`Tracker::desired`] (the keep-last guard's
    /// endpoints): the next write compares everything.
    pub fn unpublished_all(&mut self) {
        self.unpublished = None;
    }

    /// Applies changed pods: `(name, Some(pod))` for a pod added or changed, `(name, None)` for
    /// one gone. Unchanged pods must be the ones seen before, under the same `reg` and `nodes`.
    /// Drains that ended by `now_ms` are applied too. Returns how many records were rebuilt.
    pub fn update<'a>(
        &mut self,
        reg: &Registration,
        changed: impl IntoIterator<Item = (&'a str, Option<&'a PodInfo>)>,
        nodes: &HashMap<String, NodeInfo>,
        now_ms: i64,
    ) -> usize {
        let mut touched = vec![false; reg.groups.len() + 1];
        // Names are clones of the pod's own (`PodInfo::name`): one copy of a long name, shared.
        let mut rebuild: Vec<Rebuild<'a>> = self.expire(now_ms);
        let mut selection = Selection::default();
        for (name, pod) in changed {
            let shared = pod.map_or_else(|| SmolStr::new(name), |p| p.name.clone());
            let new = pod.and_then(|p| {
                let group = selection.group_of(reg, p)?;
                Some(slot(reg, p, group, nodes, now_ms))
            });
            let cand = new.as_ref().and_then(|s| s.cand);
            for c in [self.replace_slot(&shared, new), cand]
                .into_iter()
                .flatten()
            {
                if c.serving() {
                    touched[c.group()] = true;
                }
            }
            rebuild.push((shared, pod, cand));
        }
        let mut reweighed: Vec<(SmolStr, u32)> = Vec::new();
        if let Some(shares) = reg.shares.as_deref() {
            for (g, _) in touched.iter().enumerate().filter(|(_, t)| **t) {
                self.solve(shares, g, &mut reweighed);
            }
        }
        if let Some(unpublished) = self.unpublished.as_mut() {
            let names = rebuild
                .iter()
                .map(|(n, ..)| n)
                .chain(reweighed.iter().map(|(n, _)| n));
            unpublished.extend(names.cloned());
        }
        let mut rebuilt = self.rebuild(reg, &rebuild, nodes);
        let endpoints = &mut self.desired.endpoints;
        for (name, weight) in reweighed {
            if let Some(rec) = endpoints.get_mut(&name)
                && rec.weight != weight
            {
                *rec = Arc::new(PublishedRecord {
                    weight,
                    ..(**rec).clone()
                });
                rebuilt += 1;
            }
        }
        self.count(reg);
        rebuilt
    }

    /// Slots whose drain ended by `now_ms` count nothing any more: the endpoints to remove.
    fn expire<'a>(&mut self, now_ms: i64) -> Vec<Rebuild<'a>> {
        let mut gone = Vec::new();
        if self.next_expiry.is_none_or(|d| d > now_ms) {
            return gone;
        }
        for (name, slot) in self.slots.iter_mut() {
            if slot.expires.is_some_and(|u| u <= now_ms) {
                self.totals.apply(name, slot, false);
                // Exactly what `slot` gives for a pod whose drain ended (it counts nothing).
                *slot = Slot {
                    ready: false,
                    cand: None,
                    note: None,
                    expires: None,
                };
                gone.push((name.clone(), None, None));
            }
        }
        gone
    }

    /// Puts pod `name`'s new slot in (`None`: it has none now), moving the totals; returns the
    /// old slot's candidate. One search of the slots.
    fn replace_slot(&mut self, name: &SmolStr, new: Option<Slot>) -> Option<Cand> {
        let old = match (self.slots.entry(name.clone()), new) {
            (SlotEntry::Occupied(mut o), new) => {
                self.totals.apply(name, o.get(), false);
                match new {
                    Some(new) => {
                        self.totals.apply(name, &new, true);
                        Some(o.insert(new))
                    }
                    None => Some(o.swap_remove()),
                }
            }
            (SlotEntry::Vacant(v), Some(new)) => {
                self.totals.apply(name, &new, true);
                v.insert(new);
                None
            }
            (SlotEntry::Vacant(_), None) => None,
        };
        old.and_then(|o| o.cand)
    }

    /// Builds the records of the pods in `rebuild` again (removing those with no candidate);
    /// returns how many changed.
    fn rebuild(
        &mut self,
        reg: &Registration,
        rebuild: &[Rebuild<'_>],
        nodes: &HashMap<String, NodeInfo>,
    ) -> usize {
        let endpoints = &mut self.desired.endpoints;
        let mut rebuilt = 0;
        // The record built last, to share its ports and metadata with the next equal ones.
        let mut last: Option<Arc<PublishedRecord>> = None;
        for (name, pod, cand) in rebuild {
            // With weight groups the solve may have moved the weight since: read it again.
            let cand = match reg.shares {
                Some(_) => self.slots.get(name).and_then(|s| s.cand),
                None => *cand,
            };
            let (Some(pod), Some(c)) = (pod, cand) else {
                endpoints.remove(name);
                continue;
            };
            let status = if c.serving() {
                EndpointStatus::Up
            } else {
                EndpointStatus::Draining
            };
            let ports = (c.container_port, c.port);
            let group = reg.group_name(c.group());
            let record = endpoint_record(reg, pod, ports, c.weight, group, status, nodes);
            if let Some(record) = place(endpoints, name, record, last.as_ref()) {
                last = Some(record);
                rebuilt += 1;
            }
        }
        rebuilt
    }

    /// Re-solves group `g`; records the members whose weight moved.
    fn solve(&mut self, shares: &[u32], g: usize, moved: &mut Vec<(SmolStr, u32)>) {
        // One pass over the slots: the group's serving members, each with its candidate.
        let serving: Vec<(&SmolStr, &mut Cand)> = self
            .slots
            .iter_mut()
            .filter_map(|(name, s)| s.cand.as_mut().map(|c| (name, c)))
            .filter(|(_, c)| c.serving() && c.group() == g)
            .collect();
        let members: Vec<Member> = serving
            .iter()
            .map(|(name, c)| Member {
                group: g,
                name,
                relative: c.relative,
            })
            .collect();
        let solved = weights::solve(Some(shares), &members);
        drop(members);
        for ((name, c), w) in serving.into_iter().zip(solved) {
            if c.weight != w {
                self.totals.reweigh(g, c.weight, w, true);
                c.weight = w;
                moved.push((name.clone(), w));
            }
        }
    }

    /// Counts, group totals, the next drain deadline and warnings, from the totals.
    fn count(&mut self, reg: &Registration) {
        let (d, t) = (&mut self.desired, &self.totals);
        let why = |name: &SmolStr, f: fn(&Slot) -> Option<&str>| {
            self.slots
                .get(name)
                .and_then(f)
                .map(str::to_string)
                .unwrap_or_default()
        };
        d.warnings = t
            .warned
            .iter()
            .take(MAX_WARNINGS)
            .map(|n| why(n, Slot::warning))
            .collect();
        if t.warned.len() > MAX_WARNINGS {
            let more = t.warned.len() - MAX_WARNINGS;
            d.warnings.push(format!("and {more} more"));
        }
        d.unresolved = t.unresolved.len() as u32;
        d.unresolved_pods = t
            .unresolved
            .iter()
            .take(MAX_WARNINGS)
            .map(|n| (n.to_string(), why(n, Slot::unresolved)))
            .collect();
        d.matched = self.slots.len() as u32;
        d.ready = t.ready;
        d.draining = t.draining;
        d.next_deadline_ms = t.drain_ends.keys().next().copied();
        self.next_expiry = t.expiries.keys().next().copied();
        let ready = |g: usize| t.group_ready.get(g).copied().unwrap_or(0);
        d.groups = (0..=reg.groups.len())
            .filter(|&g| !(g == reg.groups.len() && !reg.groups.is_empty() && ready(g) == 0))
            .map(|g| GroupStatus {
                name: reg.group_name(g).to_string(),
                ready: ready(g),
                weight: t.group_weight.get(g).copied().unwrap_or(0),
            })
            .collect();
    }

    /// The counts of [`Tracker::count`] walked from the slots: the oracle for the totals.
    #[cfg(test)]
    pub(crate) fn recounted(&self, reg: &Registration) -> Desired {
        let mut d = self.desired.clone();
        let group_count = reg.groups.len() + 1;
        let (mut ready, mut weight) = (vec![0u32; group_count], vec![0u64; group_count]);
        let (mut warnings, mut unresolved) = (Vec::new(), Vec::new());
        let (mut n_ready, mut draining, mut next) = (0, 0, None::<i64>);
        let mut slots: Vec<_> = self.slots.iter().collect();
        slots.sort_unstable_by_key(|(name, _)| *name);
        for (name, s) in slots {
            n_ready += u32::from(s.ready);
            warnings.extend(s.warning().map(str::to_string));
            unresolved.extend(s.unresolved().map(|w| (name.to_string(), w.to_string())));
            match s.cand.map(|c| (c, s.expires.filter(|_| c.draining))) {
                Some((_, Some(until))) => {
                    draining += 1;
                    next = Some(next.map_or(until, |n: i64| n.min(until)));
                }
                Some((c, None)) => {
                    ready[c.group()] += 1;
                    weight[c.group()] += u64::from(c.weight);
                }
                None => {}
            }
        }
        let more = warnings.len().saturating_sub(MAX_WARNINGS);
        warnings.truncate(MAX_WARNINGS);
        if more > 0 {
            warnings.push(format!("and {more} more"));
        }
        (d.ready, d.draining, d.next_deadline_ms) = (n_ready, draining, next);
        (d.matched, d.warnings) = (self.slots.len() as u32, warnings);
        d.unresolved = unresolved.len() as u32;
        unresolved.truncate(MAX_WARNINGS);
        d.unresolved_pods = unresolved;
        d.groups = (0..group_count)
            .filter(|&g| !(g == reg.groups.len() && !reg.groups.is_empty() && ready[g] == 0))
            .map(|g| GroupStatus {
                name: reg.group_name(g).to_string(),
                ready: ready[g],
                weight: weight[g],
            })
            .collect();
        d
    }
}

/// Computes the desired endpoints from the pods of the resource's namespace.
pub fn desired<'a>(
    reg: &Registration,
    pods: impl IntoIterator<Item = &'a PodInfo>,
    nodes: &HashMap<String, NodeInfo>,
    now_ms: i64,
) -> Desired {
    Tracker::build(reg, pods, nodes, now_ms).into_desired()
}

/// A pod to build the record of again: its name, the pod (`None`: gone) and its candidate
/// (`None`: not published).
type Rebuild<'a> = (SmolStr, Option<&'a PodInfo>, Option<Cand>);

/// Which weight group a pod is in, `None` when the resource does not select it; remembered
/// for the label set seen last. The index holds one copy of equal label sets (a ReplicaSet's
/// pods share one), so the pods of one update mostly hit.
#[derive(Default)]
struct Selection {
    last: Option<(Labels, Option<usize>)>,
}

impl Selection {
    fn group_of(&mut self, reg: &Registration, pod: &PodInfo) -> Option<usize> {
        if let Some((labels, group)) = &self.last
            && labels.shares_with(&pod.labels)
        {
            return *group;
        }
        let group = reg.selects(pod).then(|| reg.group_of(pod));
        self.last = Some((pod.labels.clone(), group));
        group
    }
}

/// Puts `record` in as `name`'s: `None` when the one there is equal (it stays, and its `Arc`
/// still matches what was published). The new record shares its ports and metadata, where
/// equal, with the record built last, the pod's earlier one, or the one before it by name
/// (pods of one ReplicaSet sort together); one search of `endpoints` unless that last one is
/// needed.
fn place(
    endpoints: &mut BTreeMap<SmolStr, Arc<PublishedRecord>>,
    name: &SmolStr,
    mut record: PublishedRecord,
    last: Option<&Arc<PublishedRecord>>,
) -> Option<Arc<PublishedRecord>> {
    if let Some(last) = last {
        share_parts(&mut record, last);
    }
    let shared = |r: &PublishedRecord| last.is_some_and(|l| shares_parts(r, l));
    match endpoints.entry(name.clone()) {
        btree_map::Entry::Occupied(o) if **o.get() == record => None,
        btree_map::Entry::Occupied(mut o) => {
            share_parts(&mut record, o.get());
            let record = Arc::new(record);
            o.insert(record.clone());
            Some(record)
        }
        btree_map::Entry::Vacant(v) if shared(&record) => Some(v.insert(Arc::new(record)).clone()),
        btree_map::Entry::Vacant(v) => {
            drop(v);
            let below = (Bound::Unbounded, Bound::Excluded(name.as_str()));
            let before = endpoints.range::<str, _>(below).next_back();
            if let Some((_, previous)) = before {
                share_parts(&mut record, previous);
            }
            let record = Arc::new(record);
            endpoints.insert(name.clone(), record.clone());
            Some(record)
        }
    }
}

fn shares_parts(record: &PublishedRecord, like: &PublishedRecord) -> bool {
    record.ports.shares_with(&like.ports) && record.metadata.shares_with(&like.metadata)
}

/// Makes `record` hold `like`'s copy of the ports and metadata where they are equal: the pods
/// of one deployment mostly publish the same ones, and a copy per record is 50-250 bytes.
fn share_parts(record: &mut PublishedRecord, like: &PublishedRecord) {
    record.ports.share_if_equal(&like.ports);
    record.metadata.share_if_equal(&like.metadata);
}

/// The record of one published pod. Every string is a clone of one the pod, the node map or
/// the registration already holds (shared, or inline when short), except the host and the
/// metadata values read from labels and annotations.
fn endpoint_record(
    reg: &Registration,
    pod: &PodInfo,
    (container_port, port): (u16, u16),
    weight: u32,
    group: SmolStr,
    status: EndpointStatus,
    nodes: &HashMap<String, NodeInfo>,
) -> PublishedRecord {
    let mut ports = Vec::with_capacity(1 + reg.extra_ports.len());
    if let PortRef::Name(name) = &reg.port {
        ports.push((name.clone(), port));
    }
    for name in &reg.extra_ports {
        if let Some(p) = pod
            .named_port(name)
            .and_then(|p| reg.address.extra_port(name, pod, p))
        {
            ports.push((name.clone(), p));
        }
    }
    // `slot` resolved the same pod against the same nodes, so this succeeds.
    let host = reg
        .address
        .resolve(&reg.namespace, pod, nodes, container_port)
        .map(|(host, _)| SmolStr::from(host))
        .unwrap_or_default();
    // Later entries win: labels over static entries, annotations over both.
    let static_entries = reg.metadata.r#static.iter().cloned();
    let labels = reg
        .metadata
        .labels
        .iter()
        .filter_map(|key| pod.labels.get(key).map(|v| (key.clone(), SmolStr::new(v))));
    let annotations = reg.metadata.annotations.iter().filter_map(|key| {
        pod.annotations
            .get(key)
            .map(|v| (key.clone(), SmolStr::new(v)))
    });
    PublishedRecord {
        host,
        port,
        ports: ports.into_iter().collect(),
        weight,
        group,
        zone: pod
            .node
            .as_deref()
            .and_then(|n| nodes.get(n))
            .and_then(|n| n.zone.clone()),
        node: pod.node.clone(),
        pod: pod.name.clone(),
        namespace: reg.namespace.clone(),
        metadata: static_entries.chain(labels).chain(annotations).collect(),
        status,
        ready_since_ms: pod.ready_since_ms,
    }
}

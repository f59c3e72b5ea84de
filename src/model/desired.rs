//! The desired registry content of one resource: which pods are endpoints, with which record.
//! Pure: pods, nodes and the current time come in as arguments.

use std::collections::btree_map;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use smol_str::SmolStr;

use super::load::effective;
use super::pod::{Labels, NodeInfo, PodInfo};
use super::record::{EndpointStatus, PublishedRecord};
use super::registration::{PortRef, Registration};
use super::tracker::Tracker;
use crate::crd::GroupStatus;

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

pub(super) const MAX_WARNINGS: usize = 5;

/// How one selected pod counts; kept between reconciles so a change costs O(changed pods).
/// One per selected pod for the resource's life: kept small (its note is rare, boxed).
#[derive(Debug, Clone)]
pub(super) struct Slot {
    /// Counts as ready (not terminating, Ready, on a ready node).
    pub(super) ready: bool,
    /// Published as an endpoint (serving or draining).
    pub(super) cand: Option<Cand>,
    /// What the status says about the pod, if anything.
    pub(super) note: Option<Box<Note>>,
    /// The pod's drain ends then (Unix ms): it must be looked at again.
    pub(super) expires: Option<i64>,
}

/// A slot has one note at most: `slot` stops at a missing port or an unresolved address, and
/// reads the weight annotation (the other warning) only once the address resolved.
#[derive(Debug, Clone)]
pub(super) enum Note {
    /// Why the pod is left out or published with a fallback.
    Warning(String),
    /// Why the pod's address cannot be resolved, if that is why it is left out.
    Unresolved(String),
}

impl Slot {
    pub(super) fn warning(&self) -> Option<&str> {
        match self.note.as_deref() {
            Some(Note::Warning(w)) => Some(w),
            _ => None,
        }
    }

    pub(super) fn unresolved(&self) -> Option<&str> {
        match self.note.as_deref() {
            Some(Note::Unresolved(w)) => Some(w),
            _ => None,
        }
    }
}

/// 16 bytes: one per published pod, in every resource that selects it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cand {
    /// The weight group's index (at most [`MAX_GROUPS`]).
    pub(super) group: u16,
    /// The container port of `spec.port`.
    pub(super) container_port: u16,
    /// The published port (`spec.address`).
    pub(super) port: u16,
    /// Draining (until the slot's `expires`) rather than serving.
    pub(super) draining: bool,
    /// The declared relative weight (annotation or default); load factors apply on top.
    pub(super) relative: u32,
    /// The solved weight while serving; 0 while draining.
    pub(super) weight: u32,
}

impl Cand {
    pub(super) fn serving(&self) -> bool {
        !self.draining
    }

    pub(super) fn group(&self) -> usize {
        usize::from(self.group)
    }
}

/// How a pod the resource selects, in weight group `group`, counts at `now`.
pub(super) fn slot(
    reg: &Registration,
    pod: &PodInfo,
    group: usize,
    nodes: &HashMap<String, NodeInfo>,
    now_ms: i64,
    factor: f64,
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
    let relative = reg.declared_weight(pod).unwrap_or_else(|why| {
        out.note = Some(Box::new(Note::Warning(why)));
        reg.default_weight
    });
    out.cand = Some(Cand {
        // `Registration::compile` allows at most `MAX_GROUPS`.
        group: group as u16,
        container_port,
        port,
        draining,
        relative,
        // Without groups the relative weight (under its load factor) is published as it is;
        // with groups the solver sets it (see `Tracker::solve`).
        weight: if draining {
            0
        } else {
            effective(relative, factor)
        },
    });
    out
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
pub(super) type Rebuild<'a> = (SmolStr, Option<&'a PodInfo>, Option<Cand>);

/// Which weight group a pod is in, `None` when the resource does not select it; remembered
/// for the label set seen last. The index holds one copy of equal label sets (a ReplicaSet's
/// pods share one), so the pods of one update mostly hit.
#[derive(Default)]
pub(super) struct Selection {
    pub(super) last: Option<(Labels, Option<usize>)>,
}

impl Selection {
    pub(super) fn group_of(&mut self, reg: &Registration, pod: &PodInfo) -> Option<usize> {
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
pub(super) fn place(
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
pub(super) fn endpoint_record(
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
        declared_weight: None,
        load: None,
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

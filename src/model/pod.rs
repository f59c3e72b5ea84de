//! The slim projection of a Pod (and Node) that the operator keeps in memory instead of the
//! full object: only what endpoints, selectors and weights need. Pure; no clocks read here.

use k8s_openapi::api::core::v1::Node;
use std::sync::Arc;

use smol_str::SmolStr;

use super::pod_wire::PodWire;

/// A sorted, compact label (or annotation) set: every key and value in one buffer plus one
/// table of offsets (per-string boxes cost more in allocator overhead than the strings
/// themselves), behind one shared pointer: the pods of a ReplicaSet have equal labels, and the
/// index keeps one copy for all of them (`controller::intern`). Empty sets allocate nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels(Option<Arc<LabelSet>>);

#[derive(Debug, PartialEq, Eq, Hash)]
struct LabelSet {
    buf: Box<str>,
    /// For entry i: its key ends at `.0`, its value at `.1`; it starts where entry i-1 ends.
    ends: Box<[(u32, u32)]>,
}

impl Labels {
    fn entry(&self, i: usize) -> (&str, &str) {
        let set = self.0.as_deref().expect("entry of an empty label set");
        let start = if i == 0 {
            0
        } else {
            set.ends[i - 1].1 as usize
        };
        let (k, v) = set.ends[i];
        (
            &set.buf[start..k as usize],
            &set.buf[k as usize..v as usize],
        )
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (k, v) = self.entry(mid);
            match k.cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(v),
            }
        }
        None
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.ends.len())
    }

    /// No entries?
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        (0..self.len()).map(|i| self.entry(i))
    }

    /// Heap bytes of the one copy (the shared pointer's counters included), for memory
    /// accounting.
    pub fn heap_bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |s| {
            2 * std::mem::size_of::<usize>()
                + std::mem::size_of::<LabelSet>()
                + s.buf.len()
                + s.ends.len() * std::mem::size_of::<(u32, u32)>()
        })
    }

    /// Held by no one but this value (and its clones not yet made)?
    pub fn is_sole_copy(&self) -> bool {
        self.0.as_ref().is_none_or(|s| Arc::strong_count(s) == 1)
    }

    /// Do the two hold the same copy (or are both empty)?
    pub fn shares_with(&self, other: &Labels) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        }
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut v: Vec<(String, String)> = iter.into_iter().collect();
        // Stable, so of two equal keys the first given wins.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        let mut buf = String::with_capacity(v.iter().map(|(k, v)| k.len() + v.len()).sum());
        let mut ends = Vec::with_capacity(v.len());
        for (k, val) in &v {
            buf.push_str(k);
            let k_end = buf.len() as u32;
            buf.push_str(val);
            ends.push((k_end, buf.len() as u32));
        }
        if ends.is_empty() {
            return Labels(None);
        }
        Labels(Some(Arc::new(LabelSet {
            buf: buf.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        })))
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Labels {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(iter: I) -> Self {
        iter.into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// Which annotations are worth keeping: the podkeeper ones and those resources copy.
pub trait AnnotationFilter {
    /// Keep this key?
    fn keep(&self, key: &str) -> bool;
}

impl<F: Fn(&str) -> bool> AnnotationFilter for F {
    fn keep(&self, key: &str) -> bool {
        self(key)
    }
}

/// What the operator remembers of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Pod name. The index key, the desired state, the writer's cache and the endpoint record
    /// hold clones of this one: a name over 23 bytes is one allocation, shared.
    pub name: SmolStr,
    /// Labels (all of them: any may be selected).
    pub labels: Labels,
    /// Annotations the filter kept.
    pub annotations: Labels,
    /// Pod IP, once assigned.
    pub ip: Option<SmolStr>,
    /// Named container ports (name, port) and unnamed ones with an empty name.
    pub ports: Arc<[(SmolStr, u16)]>,
    /// Node name.
    pub node: Option<SmolStr>,
    /// Counts as ready: the Ready condition is True, or the pod lists the
    /// `podkeeper.io/registered` gate, its containers are ready and that gate is the only one
    /// pending (it waits for the registration itself).
    pub ready: bool,
    /// `Some(condition is True)` when the pod lists the `podkeeper.io/registered` gate.
    pub registered: Option<bool>,
    /// `hostNetwork: true`: the pod's ports are its node's.
    pub host_network: bool,
    /// (container port, host port) of the ports that have a `hostPort`.
    pub host_ports: Box<[(u16, u16)]>,
    /// When the pod began to serve, Unix milliseconds; 0 when unknown. See
    /// [`serving_since_ms`]. Kept through a drain by [`PodInfo::carry_termination_readiness`].
    pub ready_since_ms: i64,
    /// When termination began (deletionTimestamp minus grace period), Unix milliseconds.
    pub terminating_since_ms: Option<i64>,
    /// The pod was ready when termination began, so it drains instead of vanishing.
    /// Set from the pod itself; the index carries it over from the pod's earlier state.
    pub ready_at_termination: bool,
}

impl PodInfo {
    /// Projects a Pod (as the pod watch reads it), keeping only annotations the filter wants.
    pub fn from_pod(pod: &PodWire, filter: &dyn AnnotationFilter) -> PodInfo {
        let meta = &pod.metadata;
        let labels = meta
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let annotations = meta
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| filter.keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let spec = pod.spec.as_ref();
        let mut ports: Vec<(SmolStr, u16)> = spec
            .into_iter()
            .flat_map(|s| s.containers.iter().flatten())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let port = u16::try_from(p.container_port).ok()?;
                Some((SmolStr::new(p.name.as_deref().unwrap_or_default()), port))
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        let mut host_ports: Vec<(u16, u16)> = spec
            .into_iter()
            .flat_map(|s| s.containers.iter().flatten())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let host = u16::try_from(p.host_port?).ok().filter(|h| *h > 0)?;
                Some((u16::try_from(p.container_port).ok()?, host))
            })
            .collect();
        host_ports.sort_unstable();
        host_ports.dedup_by_key(|(c, _)| *c);
        let readiness = Readiness::of(pod);
        let status = pod.status.as_ref();
        let ready_since_ms = serving_since_ms(pod);
        let ip = status
            .and_then(|s| s.pod_ip.as_deref())
            .filter(|ip| !ip.is_empty())
            .map(SmolStr::new);
        let terminating_since_ms = meta.deletion_timestamp.as_ref().map(|ts| {
            let grace = meta.deletion_grace_period_seconds.unwrap_or(0).max(0);
            ts.0.as_millisecond() - grace * 1000
        });
        PodInfo {
            name: SmolStr::new(meta.name.as_deref().unwrap_or_default()),
            labels,
            annotations,
            ip,
            ports: ports.into(),
            node: spec.and_then(|s| s.node_name.as_deref()).map(SmolStr::new),
            ready: readiness.counts_ready(),
            registered: readiness.registered,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            host_ports: host_ports.into_boxed_slice(),
            ready_at_termination: terminating_since_ms.is_some() && readiness.counts_ready(),
            ready_since_ms,
            terminating_since_ms,
        }
    }

    /// Carries the drain decision over from the pod's previous projection: what counts is
    /// whether the pod was ready at the moment termination began, not what kubelet says after
    /// (it turns a terminating pod NotReady before the pod object goes).
    pub fn carry_termination_readiness(&mut self, previous: &PodInfo) {
        let was_ready = previous.ready_at_termination
            || (previous.terminating_since_ms.is_none() && previous.ready);
        if was_ready && self.terminating_since_ms.is_some() {
            self.ready_at_termination = true;
        }
        // kubelet turns Ready False when termination begins, which would make the serving time
        // unknown (or move it): a draining endpoint keeps the time it served from, so its
        // Dubbo URL keeps its `timestamp` and consumers do not restart a warm-up.
        if self.ready_at_termination && previous.ready_since_ms != 0 {
            self.ready_since_ms = previous.ready_since_ms;
        }
    }

    /// The port with this name.
    pub fn named_port(&self, name: &str) -> Option<u16> {
        self.ports
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, p)| *p)
    }

    /// Approximate bytes this projection costs in the index: the struct, its own heap data, the
    /// index's key (a clone of the name), and about 16 bytes of allocator overhead per
    /// allocation. A string up to 23 bytes is inline; a longer one is one `Arc<str>` (two
    /// counters and the bytes), counted once however many clones share it. The label sets and
    /// the port list are left out: the index keeps one copy of each distinct one and counts
    /// those ([`Labels::heap_bytes`]).
    pub fn memory_bytes(&self) -> usize {
        const PER_ALLOCATION: usize = 16;
        const ARC_COUNTERS: usize = 16;
        let strings = || {
            std::iter::once(&self.name)
                .chain(&self.ip)
                .chain(&self.node)
                .filter(|s| s.is_heap_allocated())
        };
        let allocations = usize::from(!self.host_ports.is_empty()) + strings().count();
        std::mem::size_of::<Self>()
            + std::mem::size_of::<SmolStr>()
            + strings().map(|s| ARC_COUNTERS + s.len()).sum::<usize>()
            + std::mem::size_of_val(&*self.host_ports)
            + allocations * PER_ALLOCATION
    }
}

/// Heap bytes of a pod's port list (one copy, counters included), for memory accounting.
pub fn ports_heap_bytes(ports: &Arc<[(SmolStr, u16)]>) -> usize {
    let names = ports
        .iter()
        .filter(|(n, _)| n.is_heap_allocated())
        .map(|(n, _)| 2 * std::mem::size_of::<usize>() + n.len())
        .sum::<usize>();
    2 * std::mem::size_of::<usize>() + std::mem::size_of_val(&**ports) + names
}

/// The readiness gate podkeeper sets once a pod's endpoint is in ZooKeeper.
pub const REGISTERED_GATE: &str = "podkeeper.io/registered";

/// The pod conditions readiness is decided from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Readiness {
    /// Ready is True.
    pub ready: bool,
    /// ContainersReady is True.
    pub containers_ready: bool,
    /// Every readiness gate other than ours is True.
    pub other_gates_true: bool,
    /// `Some(condition is True)` when the pod lists our gate.
    pub registered: Option<bool>,
}

impl Readiness {
    /// Reads the conditions and readiness gates of a pod.
    pub fn of(pod: &PodWire) -> Readiness {
        let conditions = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default();
        let is_true = |t: &str| {
            conditions
                .iter()
                .any(|c| c.type_ == t && c.status == "True")
        };
        let gates = pod
            .spec
            .as_ref()
            .and_then(|s| s.readiness_gates.as_deref())
            .unwrap_or_default();
        let ours = gates.iter().any(|g| g.condition_type == REGISTERED_GATE);
        Readiness {
            ready: is_true("Ready"),
            containers_ready: is_true("ContainersReady"),
            other_gates_true: gates
                .iter()
                .filter(|g| g.condition_type != REGISTERED_GATE)
                .all(|g| is_true(&g.condition_type)),
            registered: ours.then(|| is_true(REGISTERED_GATE)),
        }
    }

    /// Whether podkeeper publishes the pod: Ready, or gated by `podkeeper.io/registered` with
    /// everything else satisfied. Without the exception the gate would wait for itself.
    pub fn counts_ready(&self) -> bool {
        self.ready || (self.registered.is_some() && self.containers_ready && self.other_gates_true)
    }
}

/// When the pod began to serve, Unix milliseconds: the earliest `lastTransitionTime` of its
/// `Ready` and `ContainersReady` conditions among those that are True (ContainersReady is the
/// earlier one when a readiness gate turned True after the containers were ready, so a gate
/// flip does not restart a warm-up). 0 when neither is True or neither carries a time: an
/// unknown time reads as "long ago" everywhere (no warm-up), never as "just now".
pub fn serving_since_ms(pod: &PodWire) -> i64 {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| (c.type_ == "Ready" || c.type_ == "ContainersReady") && c.status == "True")
        .filter_map(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.as_millisecond())
        .filter(|&ms| ms > 0)
        .min()
        .unwrap_or(0)
}

/// What the operator remembers of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// `topology.kubernetes.io/zone`.
    pub zone: Option<SmolStr>,
    /// Ready condition is True (a node without conditions yet counts as ready).
    pub ready: bool,
    /// The first `InternalIP` of `status.addresses`.
    pub internal_ip: Option<Box<str>>,
    /// The first `ExternalIP` of `status.addresses`.
    pub external_ip: Option<Box<str>>,
}

impl Default for NodeInfo {
    /// A ready node with no zone and no addresses.
    fn default() -> Self {
        NodeInfo {
            zone: None,
            ready: true,
            internal_ip: None,
            external_ip: None,
        }
    }
}

impl NodeInfo {
    /// Projects a Node.
    pub fn from_node(node: &Node) -> NodeInfo {
        let zone = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("topology.kubernetes.io/zone"))
            .map(SmolStr::new);
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .is_none_or(|c| c.status == "True");
        let address = |kind: &str| {
            node.status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .and_then(|a| a.iter().find(|a| a.type_ == kind && !a.address.is_empty()))
                .map(|a| a.address.clone().into_boxed_str())
        };
        NodeInfo {
            zone,
            ready,
            internal_ip: address("InternalIP"),
            external_ip: address("ExternalIP"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_yaml(y: &str) -> PodWire {
        serde_yaml::from_str(y).unwrap()
    }

    const READY_POD: &str = r#"
metadata:
  name: web-1
  namespace: shop
  labels: {app: web, track: stable}
  annotations:
    podkeeper.io/weight: "50"
    kubectl.kubernetes.io/last-applied-configuration: "{...a large blob...}"
spec:
  nodeName: node-a
  containers:
  - name: app
    image: x
    ports: [{name: http, containerPort: 8080}, {containerPort: 9000}]
  - name: sidecar
    image: y
    ports: [{name: metrics, containerPort: 9100}]
status:
  podIP: 10.1.2.3
  conditions: [{type: Ready, status: "True"}]
"#;

    #[test]
    fn projection_keeps_what_endpoints_need_and_drops_the_rest() {
        let keep = |k: &str| k.starts_with("podkeeper.io/");
        let p = PodInfo::from_pod(&pod_yaml(READY_POD), &keep);
        assert_eq!(&*p.name, "web-1");
        assert_eq!(p.labels.get("track"), Some("stable"));
        assert_eq!(p.annotations.get("podkeeper.io/weight"), Some("50"));
        assert_eq!(p.annotations.len(), 1, "the last-applied blob is dropped");
        assert_eq!(p.ip.as_deref(), Some("10.1.2.3"));
        assert_eq!(p.named_port("http"), Some(8080));
        assert_eq!(p.named_port("metrics"), Some(9100));
        assert_eq!(p.node.as_deref(), Some("node-a"));
        assert!(p.ready);
        assert_eq!(p.terminating_since_ms, None);
        assert!(
            p.memory_bytes() < 1024,
            "slim projection is {} bytes",
            p.memory_bytes()
        );
    }

    #[test]
    fn not_ready_and_terminating_pods_are_recognised() {
        let keep = |_: &str| false;
        let y = READY_POD.replace("status: \"True\"", "status: \"False\"");
        assert!(!PodInfo::from_pod(&pod_yaml(&y), &keep).ready);
        let y = READY_POD.replace(
            "  name: web-1\n",
            "  name: web-1\n  deletionTimestamp: \"2026-01-01T00:00:30Z\"\n  deletionGracePeriodSeconds: 30\n",
        );
        let p = PodInfo::from_pod(&pod_yaml(&y), &keep);
        assert_eq!(p.terminating_since_ms, Some(1_767_225_600_000));
        let y = READY_POD.replace("  podIP: 10.1.2.3\n", "");
        assert_eq!(PodInfo::from_pod(&pod_yaml(&y), &keep).ip, None);
    }

    const READY_AT: &str = "2026-01-01T00:00:00Z";
    const READY_MS: i64 = 1_767_225_600_000;

    fn with_conditions(conditions: &str) -> PodWire {
        let y = READY_POD.replace(
            "  conditions: [{type: Ready, status: \"True\"}]\n",
            &format!("  conditions: {conditions}\n"),
        );
        pod_yaml(&y)
    }

    #[test]
    fn the_serving_time_is_the_ready_transition_and_survives_a_later_gate() {
        let keep = |_: &str| false;
        let ready = with_conditions(&format!(
            "[{{type: Ready, status: \"True\", lastTransitionTime: \"{READY_AT}\"}}]"
        ));
        assert_eq!(PodInfo::from_pod(&ready, &keep).ready_since_ms, READY_MS);
        // A readiness gate turned True 20 s after the containers: the containers' time counts.
        let gated = with_conditions(&format!(
            "[{{type: Ready, status: \"True\", lastTransitionTime: \"2026-01-01T00:00:20Z\"}}, \
             {{type: ContainersReady, status: \"True\", lastTransitionTime: \"{READY_AT}\"}}]"
        ));
        assert_eq!(PodInfo::from_pod(&gated, &keep).ready_since_ms, READY_MS);
        // Not serving, or no time given: unknown (0), never "now".
        let not_ready = with_conditions(&format!(
            "[{{type: Ready, status: \"False\", lastTransitionTime: \"{READY_AT}\"}}]"
        ));
        assert_eq!(PodInfo::from_pod(&not_ready, &keep).ready_since_ms, 0);
        assert_eq!(
            PodInfo::from_pod(&pod_yaml(READY_POD), &keep).ready_since_ms,
            0
        );
        assert_eq!(
            PodInfo::from_pod(&with_conditions("[]"), &keep).ready_since_ms,
            0
        );
    }

    #[test]
    fn a_draining_pod_keeps_its_serving_time_when_kubelet_turns_it_not_ready() {
        let keep = |_: &str| false;
        let ready = with_conditions(&format!(
            "[{{type: Ready, status: \"True\", lastTransitionTime: \"{READY_AT}\"}}]"
        ));
        let before = PodInfo::from_pod(&ready, &keep);
        let mut terminating = ready.clone();
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T01:00:30Z".parse().unwrap(),
            ));
        terminating.metadata.deletion_grace_period_seconds = Some(30);
        // kubelet: Ready False from the moment termination began.
        let status = terminating.status.as_mut().unwrap();
        let cond = &mut status.conditions.as_mut().unwrap()[0];
        cond.status = "False".into();
        cond.last_transition_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T01:00:00Z".parse().unwrap(),
        ));
        let mut draining = PodInfo::from_pod(&terminating, &keep);
        assert_eq!(draining.ready_since_ms, 0);
        draining.carry_termination_readiness(&before);
        assert!(draining.ready_at_termination);
        assert_eq!(
            draining.ready_since_ms, READY_MS,
            "the drain keeps the time"
        );
        // A pod that was never ready when termination began carries nothing.
        let mut never = PodInfo::from_pod(&terminating, &keep);
        never.carry_termination_readiness(&never.clone());
        assert_eq!(never.ready_since_ms, 0);
    }

    #[test]
    fn packed_labels_find_every_key_and_only_those() {
        let l: Labels = [("b", "2"), ("a", "1"), ("ccc", ""), ("a", "dup")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(l.len(), 3);
        assert_eq!(l.get("a"), Some("1"));
        assert_eq!(l.get("b"), Some("2"));
        assert_eq!(l.get("ccc"), Some(""));
        assert_eq!(l.get("c"), None);
        assert_eq!(l.get(""), None);
        assert_eq!(
            l.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            vec!["a", "b", "ccc"]
        );
        assert!(Labels::default().get("a").is_none());
    }

    #[test]
    fn node_projection_reads_zone_and_readiness() {
        let n: Node = serde_yaml::from_str(
            "metadata: {name: a, labels: {topology.kubernetes.io/zone: z1}}\nstatus: {conditions: [{type: Ready, status: \"False\"}]}",
        )
        .unwrap();
        let info = NodeInfo::from_node(&n);
        assert_eq!(info.zone.as_deref(), Some("z1"));
        assert!(!info.ready);
        assert!(NodeInfo::from_node(&Node::default()).ready);
    }
}

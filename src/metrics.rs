//! The Prometheus registry and every metric the operator exports.
//! One process-wide instance; modules record into it, the server encodes it.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels naming a resource.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Label of an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// ok, or an error kind.
    pub result: String,
}

/// Labels of a ZooKeeper operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ZkOpLabels {
    /// multi, read, claim, remove.
    pub op: String,
    /// ok, or an error kind.
    pub result: String,
}

/// Label of a ZooKeeper operation kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// multi, read, claim, remove.
    pub op: String,
}

/// Labels of a readiness-gate write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateLabels {
    /// The condition status written: True or False.
    pub status: String,
    /// ok, gone (the pod went first), forbidden or error.
    pub result: String,
}

/// All metrics.
pub struct Metrics {
    registry: Registry,
    /// Reconciles by result.
    pub reconciles: Family<ResultLabels, Counter>,
    /// Reconcile durations.
    pub reconcile_duration: Histogram,
    /// ZooKeeper operations by kind and result.
    pub zk_operations: Family<ZkOpLabels, Counter>,
    /// ZooKeeper operation latency by kind.
    pub zk_latency: Family<OpLabels, Histogram>,
    /// Znodes written (created, updated, deleted).
    pub znodes_written: Counter,
    /// Endpoints published per resource.
    pub endpoints_published: Family<ResourceLabels, Gauge>,
    /// From a pod event reaching the operator to its ZooKeeper write.
    pub readiness_to_zk: Histogram,
    /// Pods held in the in-memory index.
    pub pods_indexed: Gauge,
    /// Bytes held by the slim pod projections.
    pub pod_index_bytes: Gauge,
    /// Bytes glibc's malloc had in use after memory was last returned after a peak.
    pub heap_in_use_bytes: Gauge,
    /// ZooKeeper sessions established (a new one forces a full resync).
    pub zk_sessions: Counter,
    /// Completed pod lists (initial and re-lists), over all watchers.
    pub pod_lists_completed: Counter,
    /// Times this replica stopped leading because a write was fenced.
    pub leader_step_downs: Counter,
    /// ACLs of owned znodes found changed and set back.
    pub acl_repairs: Counter,
    /// Owned znodes changed behind podkeeper's back, seen by the tamper watch.
    pub tamper_events: Counter,
    /// Persistent watches set again after a reconnect (tamper watches, discovery watches).
    pub watch_rearms: Counter,
    /// Credential files re-read with a change.
    pub credential_reloads: Counter,
    /// Credential files found unusable (the last good ones stay in use).
    pub credential_reload_errors: Counter,
    /// `podkeeper.io/registered` condition patches by status written and result.
    pub gate_patches: Family<GateLabels, Counter>,
    /// RegistryImports with a folder watch.
    pub imports: Gauge,
    /// Endpoints in the slices per RegistryImport.
    pub providers_imported: Family<ResourceLabels, Gauge>,
    /// EndpointSlice writes by the import controller, by operation (apply, delete) and result.
    pub slice_writes: Family<ZkOpLabels, Counter>,
    /// From a ZooKeeper change reaching the import controller to its EndpointSlice write.
    pub zk_to_slice: Histogram,
    /// Pods measured for `spec.load` (samples read from the metrics APIs).
    pub load_samples: Counter,
    /// Load metric reads that failed.
    pub load_errors: Counter,
    /// Load factors changed (each rewrites the pod's records).
    pub load_weight_updates: Counter,
    /// Load factor changes left out because they were inside the dead band.
    pub load_suppressed: Counter,
    /// Automatic policy switches.
    pub load_policy_switches: Counter,
}

/// A counter registered under `name`.
fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let c = Counter::default();
    registry.register(name, help, c.clone());
    c
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        2.5, 5.0, 10.0,
    ]
    .into_iter()
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("podkeeper");
        let reconciles = Family::<ResultLabels, Counter>::default();
        // At 0 from the start: a scrape before the first reconcile sees the series, not a gap.
        drop(reconciles.get_or_create(&ResultLabels {
            result: "ok".into(),
        }));
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        let reconcile_duration = Histogram::new(latency_buckets());
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            reconcile_duration.clone(),
        );
        let zk_operations = Family::<ZkOpLabels, Counter>::default();
        registry.register(
            "zookeeper_operations",
            "ZooKeeper operations by kind and result",
            zk_operations.clone(),
        );
        let zk_latency = Family::<OpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "zookeeper_operation_duration_seconds",
            "ZooKeeper operation latency",
            zk_latency.clone(),
        );
        let znodes_written = Counter::default();
        registry.register(
            "znodes_written",
            "Endpoint znodes created, updated or deleted",
            znodes_written.clone(),
        );
        let endpoints_published = Family::<ResourceLabels, Gauge>::default();
        registry.register(
            "endpoints_published",
            "Endpoints in ZooKeeper per resource",
            endpoints_published.clone(),
        );
        let readiness_to_zk = Histogram::new(latency_buckets());
        registry.register(
            "readiness_to_zookeeper_seconds",
            "Time from a pod change reaching the operator to its ZooKeeper write",
            readiness_to_zk.clone(),
        );
        let pods_indexed = Gauge::default();
        registry.register(
            "pods_indexed",
            "Pods held in the slim in-memory index",
            pods_indexed.clone(),
        );
        let pod_index_bytes = Gauge::default();
        registry.register(
            "pod_index_bytes",
            "Approximate bytes held by the slim pod index",
            pod_index_bytes.clone(),
        );
        let heap_in_use_bytes = Gauge::default();
        registry.register(
            "heap_in_use_bytes",
            "Bytes the allocator had in use (live data, glibc only) after free memory was last returned",
            heap_in_use_bytes.clone(),
        );
        let zk_sessions = Counter::default();
        registry.register(
            "zookeeper_sessions",
            "ZooKeeper sessions established",
            zk_sessions.clone(),
        );
        let pod_lists_completed = Counter::default();
        registry.register(
            "pod_lists_completed",
            "Pod lists (initial and re-lists) completed by the pod watchers",
            pod_lists_completed.clone(),
        );
        let leader_step_downs = Counter::default();
        registry.register(
            "leader_step_downs",
            "Times this replica stepped down because a newer leader fenced its write",
            leader_step_downs.clone(),
        );
        let acl_repairs = Counter::default();
        registry.register(
            "acl_repairs",
            "ACLs of znodes podkeeper owns found changed and set back",
            acl_repairs.clone(),
        );
        let tamper_events = Counter::default();
        registry.register(
            "tamper_events",
            "Owned znodes changed by another client, seen by the tamper watch",
            tamper_events.clone(),
        );
        let watch_rearms = Counter::default();
        registry.register(
            "watch_rearms",
            "Persistent ZooKeeper watches set again after a reconnect within the session",
            watch_rearms.clone(),
        );
        let credential_reloads = Counter::default();
        registry.register(
            "credential_reloads",
            "ZooKeeper credential files re-read after a change",
            credential_reloads.clone(),
        );
        let credential_reload_errors = Counter::default();
        registry.register(
            "credential_reload_errors",
            "ZooKeeper credential files found unusable on re-read",
            credential_reload_errors.clone(),
        );
        let gate_patches = Family::<GateLabels, Counter>::default();
        registry.register(
            "readiness_gate_patches",
            "podkeeper.io/registered pod condition patches (pods/status) by status and result",
            gate_patches.clone(),
        );
        let load_samples = counter(
            &mut registry,
            "load_samples",
            "Pods measured for spec.load (samples read from the metrics APIs)",
        );
        let load_errors = counter(
            &mut registry,
            "load_errors",
            "Load metric reads that failed",
        );
        let load_weight_updates = counter(
            &mut registry,
            "load_weight_updates",
            "Load factors changed; each rewrites the pod's records",
        );
        let load_suppressed = counter(
            &mut registry,
            "load_suppressed",
            "Load factor changes left out because they were inside the dead band",
        );
        let load_policy_switches = counter(
            &mut registry,
            "load_policy_switches",
            "Load-balancing policies switched automatically from load",
        );
        let imports = Gauge::default();
        registry.register(
            "imports",
            "RegistryImports with a ZooKeeper folder watch",
            imports.clone(),
        );
        let providers_imported = Family::<ResourceLabels, Gauge>::default();
        registry.register(
            "providers_imported",
            "Endpoints in the EndpointSlices per RegistryImport",
            providers_imported.clone(),
        );
        let slice_writes = Family::<ZkOpLabels, Counter>::default();
        registry.register(
            "endpointslice_writes",
            "EndpointSlice writes of the import controller by operation and result",
            slice_writes.clone(),
        );
        let zk_to_slice = Histogram::new(latency_buckets());
        registry.register(
            "zookeeper_to_endpointslice_seconds",
            "Time from a ZooKeeper change reaching the import controller to its EndpointSlice write",
            zk_to_slice.clone(),
        );
        Metrics {
            registry,
            load_samples,
            load_errors,
            load_weight_updates,
            load_suppressed,
            load_policy_switches,
            imports,
            providers_imported,
            slice_writes,
            zk_to_slice,
            acl_repairs,
            tamper_events,
            watch_rearms,
            credential_reloads,
            credential_reload_errors,
            gate_patches,
            pod_lists_completed,
            leader_step_downs,
            reconciles,
            reconcile_duration,
            zk_operations,
            zk_latency,
            znodes_written,
            endpoints_published,
            readiness_to_zk,
            pods_indexed,
            pod_index_bytes,
            heap_in_use_bytes,
            zk_sessions,
        }
    }

    /// Records one ZooKeeper operation.
    pub fn zk_op(&self, op: &str, result: &str, elapsed: Duration) {
        self.zk_operations
            .get_or_create(&ZkOpLabels {
                op: op.into(),
                result: result.into(),
            })
            .inc();
        self.zk_latency
            .get_or_create(&OpLabels { op: op.into() })
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding into a String");
        out
    }
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

//! Cost of the pure part of a reconcile at 1,000 and 10,000 pods: computing the desired
//! endpoints from scratch, recomputing them after one pod changed (reusing unchanged records),
//! and diffing them against what ZooKeeper holds; and, for one resource among 1,000, its first
//! build and the routing of a pod change through the index.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use podkeeper::controller::index::Index;
use podkeeper::crd::ServiceRegistrationSpec;
use podkeeper::model::desired::desired;
use podkeeper::model::plan::{Current, Op, diff, diff_names};
use podkeeper::model::pod::PodInfo;
use podkeeper::model::record::PublishedRecord;
use podkeeper::model::registration::Registration;
use podkeeper::model::tracker::Tracker;
use podkeeper::zk::format::Format;
use podkeeper::zk::layout::endpoint_path;
use smol_str::SmolStr;

#[path = "common/fleet.rs"]
mod fleet;

const SPEC: &str = r#"
selector: {matchLabels: {app: web}}
port: http
extraPorts: [metrics]
weights:
  groups:
  - {name: stable, selector: {matchLabels: {track: stable}}, share: 90}
  - {name: canary, selector: {matchLabels: {track: canary}}, share: 10}
metadata:
  labels: [track]
"#;

const PLAIN: &str = r#"
selector: {matchLabels: {app: web}}
port: http
extraPorts: [metrics]
metadata:
  labels: [track]
"#;

fn bench(c: &mut Criterion) {
    let nodes = fleet::nodes();
    for (label, yaml) in [("groups", SPEC), ("plain", PLAIN)] {
        let spec: ServiceRegistrationSpec = serde_yaml::from_str(yaml).unwrap();
        let reg = Registration::compile("shop", &spec).unwrap();
        let mut g = c.benchmark_group(format!("reconcile_{label}"));
        for n in [1_000usize, 10_000] {
            let pods: Vec<PodInfo> = (0..n).map(|i| fleet::pod(i, true)).collect();
            g.bench_with_input(BenchmarkId::new("desired_full", n), &n, |b, _| {
                b.iter(|| black_box(desired(&reg, &pods, &nodes, 0)))
            });
            // One stable pod turns NotReady: its group is re-weighted, the rest is reused.
            let tracker = Tracker::build(&reg, &pods, &nodes, 0);
            let mut flipped = pods[1].clone();
            flipped.ready = false;
            let name = flipped.name.to_string();
            g.bench_with_input(BenchmarkId::new("update_one_changed", n), &n, |b, _| {
                b.iter_batched(
                    || tracker.clone(),
                    |mut t| {
                        t.update(&reg, [(name.as_str(), Some(&flipped))], &nodes, 0);
                        t
                    },
                    criterion::BatchSize::LargeInput,
                )
            });
            let mut after_t = tracker.clone();
            after_t.update(&reg, [(name.as_str(), Some(&flipped))], &nodes, 0);
            let after = after_t.desired().clone();
            let current = as_written(&tracker);
            g.bench_with_input(BenchmarkId::new("diff_one_changed", n), &n, |b, _| {
                b.iter(|| black_box(diff(&after.endpoints, &current)))
            });
            let plan = diff(&after.endpoints, &current);
            eprintln!(
                "{label} n={n}: one NotReady pod → {} znode operations",
                plan.ops.len()
            );
        }
        g.finish();
    }
}

/// What ZooKeeper holds after the writer wrote `tracker`'s records and adopted them.
fn as_written(tracker: &Tracker) -> BTreeMap<SmolStr, Current> {
    let current = |r: &Arc<PublishedRecord>| Current {
        record: Some(r.clone()),
        version: 0,
    };
    let endpoints = &tracker.desired().endpoints;
    endpoints
        .iter()
        .map(|(k, v)| (k.clone(), current(v)))
        .collect()
}

/// One resource of 100 pods among 1,000 in a namespace of 10,000 or 100,000 pods (the
/// 1,000 × 100 configuration of the 100,000-pod run): its first reconcile's tracker build,
/// through the index's anchor labels (`index_build`) and by visiting every pod of the namespace
/// as before (`scan_build`, still the way for a selector without an `In` or equality); and the
/// routing of one pod change to the resources that select it.
fn bench_sparse(c: &mut Criterion) {
    let registration = |app: &str| {
        let yaml = PLAIN.replace("app: web", &format!("app: {app}"));
        let spec: ServiceRegistrationSpec = serde_yaml::from_str(&yaml).unwrap();
        Arc::new(Registration::compile("shop", &spec).unwrap())
    };
    let reg = registration("web");
    let mut g = c.benchmark_group("reconcile_sparse");
    for n in [10_000usize, 100_000] {
        // 100 pods labelled app=web, the rest app=other-<i / 100>, one resource per app value.
        let pods: Vec<PodInfo> = (0..n).map(sparse_pod).collect();
        let index = Index::default();
        index.register("shop", "web", Some(reg.clone()));
        for r in 1..1_000.min(n / 100) {
            let other = format!("other-{r}");
            index.register("shop", &other, Some(registration(&other)));
        }
        let now = Instant::now();
        for p in &pods {
            index.apply_pod("shop", p.clone(), now);
        }
        let build = || {
            index.with_selectable("shop", &reg, |pods, nodes| {
                Tracker::build(&reg, pods.map(|e| &e.info), nodes, 0)
            })
        };
        assert_eq!(build().desired().endpoints.len(), 100, "selects 100 pods");
        g.bench_with_input(BenchmarkId::new("index_build_100_of", n), &n, |b, _| {
            b.iter(|| black_box(build()))
        });
        let scan = || {
            index.with_namespace_map("shop", |pods, nodes| {
                let all = pods.into_iter().flat_map(|p| p.values()).map(|e| &e.info);
                Tracker::build(&reg, all, nodes, 0)
            })
        };
        assert_eq!(scan().desired().endpoints.len(), 100, "selects 100 pods");
        g.bench_with_input(BenchmarkId::new("scan_build_100_of", n), &n, |b, _| {
            b.iter(|| black_box(scan()))
        });
        let mut flip = pods[150].clone();
        g.bench_with_input(BenchmarkId::new("route_one_change", n), &n, |b, _| {
            b.iter(|| {
                flip.ready = !flip.ready;
                let woken = index.apply_pod("shop", flip.clone(), now);
                assert_eq!(woken.len(), 1, "one resource selects the pod");
                black_box(woken)
            })
        });
    }
    g.finish();
}

/// Pod `i` of the sparse namespace: app=web for the first 100, app=other-<i / 100> after.
fn sparse_pod(i: usize) -> PodInfo {
    let mut p = fleet::pod(i, true);
    if i >= 100 {
        let other = format!("other-{}", i / 100);
        p.labels = p
            .labels
            .iter()
            .map(|(k, v)| {
                let v = if k == "app" { other.as_str() } else { v };
                (k.to_string(), v.to_string())
            })
            .collect();
    }
    p
}

/// The CPU of one sync of the churn in `zk_writer_bench` (`churn_k*`), without ZooKeeper:
/// `k` pods of 10,000 flip readiness, the tracker applies them, the changed names are diffed
/// against what the writer's cache holds, each write's path and bytes are encoded, and the
/// cache takes the result. The gap between the churn and the raw `multi()` ceiling is this.
fn bench_churn(c: &mut Criterion) {
    let nodes = fleet::nodes();
    let spec: ServiceRegistrationSpec = serde_yaml::from_str(PLAIN).unwrap();
    let reg = Registration::compile("shop", &spec).unwrap();
    let codec = Format::Native.codec();
    let mut pods: Vec<PodInfo> = (0..10_000).map(|i| fleet::pod(i, true)).collect();
    fleet::share_labels(&mut pods);
    let mut tracker = Tracker::build(&reg, &pods, &nodes, 0);
    let mut current = as_written(&tracker);
    tracker.published();
    let mut g = c.benchmark_group("churn_cpu");
    let mut next = 0usize;
    for k in [1usize, 10, 100] {
        g.bench_with_input(BenchmarkId::new("sync_of_10000", k), &k, |b, &k| {
            b.iter(|| {
                // k distinct pods, spread over the fleet (a stride coprime with 10,000).
                let picked: Vec<usize> = (0..k).map(|j| (next + j * 7_919) % pods.len()).collect();
                next += 1;
                for &i in &picked {
                    pods[i].ready = !pods[i].ready;
                }
                let changed = picked.iter().map(|&i| (&*pods[i].name, Some(&pods[i])));
                tracker.update(&reg, changed, &nodes, 0);
                let names = tracker.unpublished().expect("published before");
                let plan = diff_names(&tracker.desired().endpoints, &current, names);
                let mut bytes = 0;
                for op in &plan.ops {
                    bytes += endpoint_path("/services/shop/web", op.name()).len();
                    match op {
                        Op::Create { name, record } | Op::Update { name, record, .. } => {
                            bytes += codec.encode_endpoint(record).len();
                            let cur = Current {
                                record: Some(record.clone()),
                                version: 0,
                            };
                            current.insert(name.clone(), cur);
                        }
                        Op::Delete { name, .. } => {
                            current.remove(name);
                        }
                    }
                }
                tracker.published();
                black_box(bytes)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, bench_sparse, bench_churn);
criterion_main!(benches);

//! Cost of the pure part of a reconcile at 1,000 and 10,000 pods: computing the desired
//! endpoints from scratch, recomputing them after one pod changed (reusing unchanged records),
//! and diffing them against what ZooKeeper holds.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use podkeeper::crd::ServiceRegistrationSpec;
use podkeeper::model::desired::{Registration, Tracker, desired};
use podkeeper::model::plan::{Current, diff};
use podkeeper::model::pod::PodInfo;

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
            // What ZooKeeper holds after the writer adopted the records it wrote.
            let current: BTreeMap<smol_str::SmolStr, Current> = tracker
                .desired()
                .endpoints
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        Current {
                            record: Some(v.clone()),
                            version: 0,
                        },
                    )
                })
                .collect();
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

/// A resource's first reconcile visits every pod of its namespace: the cost of building the
/// tracker of one resource of 100 pods in a namespace of 100,000 (the 1,000 × 100 configuration
/// of the 100,000-pod run does this 1,000 times at each start).
fn bench_sparse(c: &mut Criterion) {
    let nodes = fleet::nodes();
    let spec: ServiceRegistrationSpec = serde_yaml::from_str(PLAIN).unwrap();
    let reg = Registration::compile("shop", &spec).unwrap();
    let mut g = c.benchmark_group("reconcile_sparse");
    for n in [10_000usize, 100_000] {
        // 100 pods labelled app=web, the rest app=other-<i / 100>, in a map as the index holds them.
        let pods: std::collections::HashMap<String, PodInfo> = (0..n)
            .map(|i| {
                let mut p = fleet::pod(i, true);
                if i >= 100 {
                    let other = format!("other-{}", i / 100);
                    p.labels = p
                        .labels
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.to_string(),
                                if k == "app" {
                                    other.clone()
                                } else {
                                    v.to_string()
                                },
                            )
                        })
                        .collect();
                }
                (p.name.to_string(), p)
            })
            .collect();
        let built = Tracker::build(&reg, pods.values(), &nodes, 0);
        assert_eq!(
            built.desired().endpoints.len(),
            100,
            "the resource selects 100 pods"
        );
        g.bench_with_input(BenchmarkId::new("build_100_of", n), &n, |b, _| {
            b.iter(|| black_box(Tracker::build(&reg, pods.values(), &nodes, 0)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench, bench_sparse);
criterion_main!(benches);

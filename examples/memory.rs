//! Live heap bytes per pod of the operator's pure state, counted by a global allocator that
//! tracks every allocation: the slim pod projection, the desired-state tracker, and the
//! endpoint records alone, and the ZooKeeper writer's cache; with the number of live
//! allocations (each costs malloc a header and rounding on top of its bytes).
//! `cargo run --release --example memory`.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
struct Counting;
static BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        BYTES.fetch_add(l.size(), Ordering::Relaxed);
        LIVE.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        BYTES.fetch_sub(l.size(), Ordering::Relaxed);
        LIVE.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}
#[global_allocator]
static A: Counting = Counting;
use std::collections::BTreeMap;

use podkeeper::model::plan::Current;
use podkeeper::model::pod::PodInfo;
use podkeeper::model::registration::Registration;
use podkeeper::model::tracker::Tracker;

#[path = "../benches/common/fleet.rs"]
mod fleet;
fn main() {
    let spec = serde_yaml::from_str("selector: {matchLabels: {app: web}}\nport: http\nextraPorts: [metrics]\nmetadata: {labels: [track]}\n").unwrap();
    let reg = Registration::compile("shop", &spec).unwrap();
    let nodes = fleet::nodes();
    let n = 10_000;
    let at = || (BYTES.load(Ordering::Relaxed), LIVE.load(Ordering::Relaxed));
    let per = |(b1, l1): (usize, usize), (b0, l0): (usize, usize)| {
        format!(
            "{} B in {:.1} allocations",
            (b1 - b0) / n,
            (l1 - l0) as f64 / n as f64
        )
    };
    let a0 = at();
    let pods: Vec<PodInfo> = (0..n).map(|i| fleet::pod(i, true)).collect();
    let a1 = at();
    let t = Tracker::build(&reg, &pods, &nodes, 0);
    let a2 = at();
    // The writer's cache as after a sync: name -> (the same record `Arc`, version).
    let cache: BTreeMap<smol_str::SmolStr, Current> = t
        .desired()
        .endpoints
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                Current {
                    record: Some(r.clone()),
                    version: 1,
                },
            )
        })
        .collect();
    let a3 = at();
    drop(cache);
    let recs: Vec<_> = t.desired().endpoints.values().cloned().collect();
    drop(t);
    let a4 = at();
    println!(
        "per pod: pod projection {}; tracker total {}; writer cache (sharing the records) {}; records alone {}",
        per(a1, a0),
        per(a2, a1),
        per(a3, a2),
        per(a4, a1),
    );
    drop(recs);
    println!(
        "struct sizes: PodInfo {} B, the index's PodEntry {} B, PublishedRecord {} B",
        size_of::<PodInfo>(),
        size_of::<podkeeper::controller::index::PodEntry>(),
        size_of::<podkeeper::model::record::PublishedRecord>(),
    );
    weighed(&reg, &pods, &nodes);
    index(&reg);
    maps_vs_litemap();
}

/// What `spec.load` adds per pod: a factor and figures (CPU, memory, one custom metric) for
/// every pod, the figures shared by the factor map and the records.
fn weighed(
    reg: &Registration,
    pods: &[PodInfo],
    nodes: &std::collections::HashMap<String, podkeeper::model::pod::NodeInfo>,
) {
    use podkeeper::model::load::{Factors, PodWeight};
    use podkeeper::model::record::{LoadFigures, Milli};
    let at = || BYTES.load(Ordering::Relaxed);
    let a0 = at();
    let plain = Tracker::build(reg, pods, nodes, 0);
    let a1 = at();
    drop(plain);
    let a2 = at();
    let factors: Factors = (pods.iter().enumerate())
        .map(|(i, p)| {
            let figures = LoadFigures {
                cpu_utilization: Some(Milli(i as i64 % 1000)),
                mem_utilization: Some(Milli(500)),
                named_metrics: [("requests_in_flight".into(), Milli(50_000))].into(),
            };
            let factor = 0.5 + (i % 10) as f32 / 10.0;
            let figures = Some(std::sync::Arc::new(figures));
            (p.name.clone(), PodWeight { factor, figures })
        })
        .collect();
    let t = Tracker::build_weighed(reg, pods, nodes, 0, std::sync::Arc::new(factors));
    let a3 = at();
    let n = pods.len();
    println!(
        "with spec.load (every pod weighed, with figures): tracker and factors {} B per pod, {} B more",
        (a3 - a2) / n,
        (a3 - a2 - (a1 - a0)) / n
    );
    drop(t);
}

/// The operator's index of pods as the pod watch fills it (one resource registered, so the
/// anchor sets are there too), hash table included, at 10,000 and 100,000 pods.
fn index(reg: &Registration) {
    use podkeeper::controller::index::Index;
    let reg = std::sync::Arc::new(reg.clone());
    for n in [10_000, 100_000] {
        let before = (BYTES.load(Ordering::Relaxed), LIVE.load(Ordering::Relaxed));
        let index = Index::default();
        index.register("shop", "web", Some(reg.clone()));
        let now = std::time::Instant::now();
        for i in 0..n {
            index.apply_pod("shop", fleet::pod(i, true), now);
        }
        let (b, l) = (BYTES.load(Ordering::Relaxed), LIVE.load(Ordering::Relaxed));
        println!(
            "index of {n} pods, hash tables included: {} B in {:.1} allocations per pod",
            (b - before.0) / n,
            (l - before.1) as f64 / n as f64
        );
        drop(index);
    }
}

/// Bytes per map, inline part included (it lives inside every record), for `SmallMap` and
/// `litemap::LiteMap`: the fleet's two ports built by collecting, and four metadata entries
/// parsed from JSON as the discovery client does.
fn maps_vs_litemap() {
    use litemap::LiteMap;
    use podkeeper::model::small_map::SmallMap;
    let n = 10_000;
    fn per_map<T>(n: usize, make: impl Fn(usize) -> T) -> usize {
        let before = BYTES.load(Ordering::Relaxed);
        let maps: Vec<T> = (0..n).map(make).collect();
        let heap = BYTES.load(Ordering::Relaxed) - before - maps.capacity() * size_of::<T>();
        drop(maps);
        heap / n + size_of::<T>()
    }
    let ports = |i: usize| {
        [
            ("http".to_string(), 8080u16),
            ("metrics".to_string(), 9100 + (i % 2) as u16),
        ]
    };
    let json = r#"{"protocol":"http","team":"shop","track":"stable","version":"1.4.2"}"#;
    println!(
        "ports (2, collected): SmallMap {} B/map, LiteMap {} B/map",
        per_map(n, |i| ports(i).into_iter().collect::<SmallMap<_, _>>()),
        per_map(n, |i| ports(i).into_iter().collect::<LiteMap<_, _>>()),
    );
    println!(
        "metadata (4, from JSON): SmallMap {} B/map, LiteMap {} B/map",
        per_map(n, |_| serde_json::from_str::<SmallMap<String, String>>(
            json
        )
        .unwrap()),
        per_map(n, |_| serde_json::from_str::<LiteMap<String, String>>(json)
            .unwrap()),
    );
}

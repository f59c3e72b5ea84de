//! Live heap bytes per pod of the operator's pure state, counted by a global allocator that
//! tracks every allocation: the slim pod projection, the desired-state tracker, and the
//! endpoint records alone. `cargo run --release --example memory`.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
struct Counting;
static BYTES: AtomicUsize = AtomicUsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        BYTES.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        BYTES.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}
#[global_allocator]
static A: Counting = Counting;
use podkeeper::model::desired::{Registration, Tracker};
use podkeeper::model::pod::PodInfo;

#[path = "../benches/common/fleet.rs"]
mod fleet;
fn main() {
    let spec = serde_yaml::from_str("selector: {matchLabels: {app: web}}\nport: http\nextraPorts: [metrics]\nmetadata: {labels: [track]}\n").unwrap();
    let reg = Registration::compile("shop", &spec).unwrap();
    let nodes = fleet::nodes();
    let n = 10_000;
    let b0 = BYTES.load(Ordering::Relaxed);
    let pods: Vec<PodInfo> = (0..n).map(|i| fleet::pod(i, true)).collect();
    let b1 = BYTES.load(Ordering::Relaxed);
    let t = Tracker::build(&reg, &pods, &nodes, 0);
    let b2 = BYTES.load(Ordering::Relaxed);
    let recs: Vec<_> = t.desired().endpoints.values().cloned().collect();
    drop(t);
    let b3 = BYTES.load(Ordering::Relaxed);
    println!(
        "pods {} B/pod; tracker total {} B/pod; records alone {} B/pod",
        (b1 - b0) / n,
        (b2 - b1) / n,
        (b3 - b1) / n
    );
    drop(recs);
    maps_vs_litemap();
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

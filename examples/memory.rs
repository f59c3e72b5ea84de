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
}

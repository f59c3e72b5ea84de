//! Our small structures against the crates that do the same job, on the operations the hot
//! paths use: the index reduction (against `fastrand::usize`; our own generator lost to
//! fastrand's, which is the same wyrand, and went), WeightedRandom's alias table
//! (`rand_distr::WeightedAliasIndex`) and the records' map (`litemap::LiteMap`).
//!
//! Benchmarks here share two cores with other builds, so each pair is measured interleaved:
//! short rounds of A and B alternate (ABBA), load from other processes falls on both alike, and
//! the table shows each side's fastest round (the machine's best case), its median, and the
//! 90th percentile as the noise. `cargo bench --no-default-features --bench vs_crates`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use litemap::LiteMap;
use podkeeper::discovery::Endpoint;
use podkeeper::discovery::balance::alias::AliasTable;
use podkeeper::discovery::balance::rng::{Rng, below, thread_u64};
use podkeeper::model::record::EndpointRecord;
use podkeeper::model::small_map::SmallMap;
use rand_distr::Distribution as _;
use rand_distr::weighted::WeightedAliasIndex;

/// Rounds per pair under `cargo bench`; `cargo test --all-targets` runs two, as a smoke test.
fn rounds() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        400
    } else {
        2
    }
}

/// Nanoseconds per call of `f`, over `iters` calls.
#[inline(never)]
fn round<R>(iters: u32, f: &mut impl FnMut() -> R) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        black_box(f());
    }
    start.elapsed().as_nanos() as f64 / f64::from(iters)
}

/// Fastest, median and 90th percentile of the rounds.
fn stats(mut ns: Vec<f64>) -> [f64; 3] {
    ns.sort_by(f64::total_cmp);
    [ns[0], ns[ns.len() / 2], ns[ns.len() * 9 / 10]]
}

fn compare<A, B>(
    name: &str,
    theirs: &str,
    iters: u32,
    mut ours: impl FnMut() -> A,
    mut other: impl FnMut() -> B,
) {
    let rounds = rounds();
    // Warm both up before measuring.
    for _ in 0..rounds.min(20) {
        round(iters, &mut ours);
        round(iters, &mut other);
    }
    let (mut a, mut b) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for i in 0..rounds {
        if i % 2 == 0 {
            a.push(round(iters, &mut ours));
            b.push(round(iters, &mut other));
        } else {
            b.push(round(iters, &mut other));
            a.push(round(iters, &mut ours));
        }
    }
    let (a, b) = (stats(a), stats(b));
    let unit = |ns: f64| {
        if ns >= 1000.0 {
            format!("{:.2} µs", ns / 1000.0)
        } else {
            format!("{ns:.2} ns")
        }
    };
    for (who, [min, median, p90]) in [("ours", a), (theirs, b)] {
        println!(
            "| {name} | {who} | {} | {} | {} |",
            unit(min),
            unit(median),
            unit(p90)
        );
    }
}

/// Endpoint `i` from the golden wire-format record the tests share.
fn record(i: usize) -> EndpointRecord {
    let mut record: EndpointRecord =
        serde_json::from_str(include_str!("../tests/common/golden/endpoint.json")).unwrap();
    record.host = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
    record.weight = 10 * (1 + i as u32 % 10);
    record.pod = format!("web-{i}");
    record
}

/// The balancer's generator behind rand's traits, so that both alias tables draw from it.
struct BenchRng(Rng);

impl rand::TryRng for BenchRng {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.0.u32(..))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(self.0.u64(..))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in dst.chunks_mut(8) {
            chunk.copy_from_slice(&self.0.u64(..).to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

fn generators() {
    // A Random pick as the balancer makes it: an index, then a reference-count increment.
    let n = 1000;
    let targets: Vec<Arc<Endpoint>> = (0..n)
        .map(|i| Arc::new(Endpoint::new(format!("web-{i:04}"), record(i))))
        .collect();
    compare(
        "Random pick, 1000 endpoints",
        "fastrand::usize",
        100_000,
        || Arc::clone(&targets[below(thread_u64() as u32, n)]),
        || Arc::clone(&targets[fastrand::usize(..n)]),
    );
}

fn alias_tables() {
    // WeightedRandom over 1000 published weights. The crate needs u64 weights: with u32 it
    // refuses any weight above u32::MAX / n (4.3 million at 1000 endpoints), and a group's
    // budget is share × 10,000.
    let weights: Vec<u32> = (0..1000u32).map(|i| 1000 * (10 + i % 10 * 10)).collect();
    let wide: Vec<u64> = weights.iter().map(|&w| u64::from(w)).collect();
    let ours = AliasTable::new(&weights).unwrap();
    let theirs = WeightedAliasIndex::new(wide.clone()).unwrap();
    let mut r1 = Rng::with_seed(7);
    let mut r2 = BenchRng(Rng::with_seed(7));
    compare(
        "WeightedRandom pick, 1000 weights",
        "rand_distr",
        100_000,
        || ours.pick(r1.u64(..)),
        || theirs.sample(&mut r2),
    );
    compare(
        "WeightedRandom build, 1000 weights",
        "rand_distr",
        50,
        || AliasTable::new(&weights),
        || WeightedAliasIndex::new(wide.clone()),
    );
}

fn maps() {
    let metadata: Vec<(String, String)> = [
        ("track", "stable"),
        ("version", "1.4.2"),
        ("protocol", "http"),
        ("team", "shop"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let json =
        serde_json::to_string(&metadata.iter().cloned().collect::<BTreeMap<_, _>>()).unwrap();
    compare(
        "map of 4 strings: collect",
        "litemap",
        10_000,
        || metadata.iter().cloned().collect::<SmallMap<_, _>>(),
        || metadata.iter().cloned().collect::<LiteMap<_, _>>(),
    );
    compare(
        "map of 4 strings: from JSON",
        "litemap",
        10_000,
        || serde_json::from_str::<SmallMap<String, String>>(&json).unwrap(),
        || serde_json::from_str::<LiteMap<String, String>>(&json).unwrap(),
    );
    let ours: SmallMap<String, String> = metadata.iter().cloned().collect();
    let theirs: LiteMap<String, String> = metadata.iter().cloned().collect();
    compare(
        "map of 4 strings: get",
        "litemap",
        100_000,
        || ours.get(black_box("team")).is_some(),
        || theirs.get(black_box("team")).is_some(),
    );
    let (ours2, theirs2) = (ours.clone(), theirs.clone());
    compare(
        "map of 4 strings: equal",
        "litemap",
        100_000,
        || black_box(&ours) == black_box(&ours2),
        || black_box(&theirs) == black_box(&theirs2),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter is not supported, everything runs (~1 min).
    if rounds() < 400 {
        println!("vs_crates: smoke run under cargo test (two rounds, not a measurement)");
    }
    println!("| operation | implementation | fastest round | median | p90 |");
    println!("|---|---|---:|---:|---:|");
    generators();
    alias_tables();
    maps();
}

//! Cost of a pick for each policy at 10, 100 and 1000 endpoints, on one thread and with one or
//! three more threads picking from the same snapshot; and the cost of building and swapping one.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use podkeeper::discovery::{Balancer, Endpoint, PickContext, Registry, Snapshot, ZonePreference};
use podkeeper::model::policy::Policy;
use podkeeper::model::record::{EndpointRecord, ServiceRecord};

const SIZES: [usize; 3] = [10, 100, 1000];

/// The operator's wire format, from the golden records the tests share.
const GOLDEN_ENDPOINT: &str = include_str!("../tests/common/golden/endpoint.json");
const GOLDEN_SERVICE: &str = include_str!("../tests/common/golden/service.json");

fn record(i: usize) -> EndpointRecord {
    let mut record: EndpointRecord = serde_json::from_str(GOLDEN_ENDPOINT).unwrap();
    record.host = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
    // Ten distinct weights, as weight groups produce: 10, 20, ..., 100.
    record.weight = 10 * (1 + i as u32 % 10);
    record.group = "default".into();
    record.zone = Some(format!("z{}", i % 3));
    record.pod = format!("web-{i}");
    // The maps as small as the figures in BENCHMARKS.md were measured with.
    record.ports = [("http".to_string(), 8080)].into();
    record.metadata = [("app".to_string(), "web".to_string())].into();
    record
}

fn registry(n: usize, policy: Policy) -> Registry {
    Registry {
        service: Some(ServiceRecord {
            policy,
            ..serde_json::from_str(GOLDEN_SERVICE).unwrap()
        }),
        endpoints: (0..n)
            .map(|i| (format!("web-{i:04}"), record(i)))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn balancer(policy: Policy, n: usize) -> Balancer {
    let endpoints: Vec<Arc<Endpoint>> = (0..n)
        .map(|i| Arc::new(Endpoint::new(format!("web-{i:04}"), record(i))))
        .collect();
    Balancer::new(policy, &endpoints)
}

/// Affinity keys for ConsistentHash, shaped like session ids; other policies ignore them.
fn keys() -> Vec<Vec<u8>> {
    (0..1024)
        .map(|i| format!("session-{i:08x}").into_bytes())
        .collect()
}

#[inline]
fn pick(balancer: &Balancer, keys: &[Vec<u8>], i: usize) {
    let ctx = PickContext {
        key: Some(&keys[i & 1023]),
    };
    black_box(balancer.pick(&ctx));
}

/// CPU time this thread has run, from the kernel's per-thread clock: with more picking threads
/// than cores, or other processes on the machine, wall time would count the slices this thread
/// spent waiting for a core, while what is measured here is what a pick costs when it runs.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Keeps the calling thread on `cpu` (modulo the CPUs there are), so that picking threads run
/// on different cores rather than taking turns on one while other processes hold the rest,
/// which would hide the contention measured here.
fn pin_to_cpu(cpu: usize) {
    // Not `available_parallelism`: it counts the CPUs this thread may use, one once pinned.
    // SAFETY: sysconf reads a system constant; `set` is a plain bit set that lives across
    // the call, and 0 names this thread.
    unsafe {
        let cpus = libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % cpus, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Per-pick CPU time on this thread while `threads - 1` others pick from the same balancer
/// without pause: what shared counters and reference counts cost under contention. One thread
/// is timed the same way, so the three groups compare.
fn picks_threads(c: &mut Criterion, threads: usize) {
    let keys = keys();
    let name = match threads {
        1 => "pick_1_thread".to_string(),
        _ => format!("pick_{threads}_threads"),
    };
    let mut group = c.benchmark_group(name);
    pin_to_cpu(0);
    for policy in Policy::ALL {
        for n in SIZES {
            let balancer = balancer(policy, n);
            let stop = AtomicBool::new(false);
            let running = AtomicUsize::new(0);
            // The others pick through every sample, warm-up included, so that each sample
            // is taken under the same steady contention.
            std::thread::scope(|scope| {
                for t in 1..threads {
                    let (balancer, keys, stop, running) = (&balancer, &keys, &stop, &running);
                    scope.spawn(move || {
                        pin_to_cpu(t);
                        running.fetch_add(1, Ordering::Release);
                        let mut i = t;
                        while !stop.load(Ordering::Relaxed) {
                            i = i.wrapping_add(7);
                            pick(balancer, keys, i);
                        }
                    });
                }
                while running.load(Ordering::Acquire) < threads - 1 {
                    std::thread::yield_now();
                }
                group.bench_function(BenchmarkId::new(policy.as_str(), n), |b| {
                    b.iter_custom(|iters| {
                        let start = thread_cpu_time();
                        for i in 0..iters as usize {
                            pick(&balancer, &keys, i);
                        }
                        thread_cpu_time() - start
                    })
                });
                stop.store(true, Ordering::Relaxed);
            });
        }
    }
    group.finish();
}

fn picks_one_thread(c: &mut Criterion) {
    picks_threads(c, 1);
}

fn picks_two_threads(c: &mut Criterion) {
    picks_threads(c, 2);
}

fn picks_four_threads(c: &mut Criterion) {
    picks_threads(c, 4);
}

/// What a `Discovery::pick` adds on top of the balancer: loading the current snapshot.
fn pick_through_arc_swap(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("pick_via_arc_swap");
    for policy in [Policy::RoundRobin, Policy::WeightedRandom] {
        let current = ArcSwap::from_pointee(Snapshot::build(&registry(1000, policy), None, None));
        let mut i = 0usize;
        group.bench_function(BenchmarkId::new(policy.as_str(), 1000), |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let ctx = PickContext {
                    key: Some(&keys[i & 1023]),
                };
                black_box(current.load().pick(&ctx));
            })
        });
    }
    group.finish();
}

/// A rebuild after one endpoint changed its weight, reusing the previous snapshot's endpoints,
/// then the swap; and, for the ring, a rebuild after one endpoint left or came back.
fn build_and_swap(c: &mut Criterion) {
    let mut group = c.benchmark_group("build_and_swap");
    for policy in Policy::ALL {
        let mut registry = registry(1000, policy);
        let current = ArcSwap::from_pointee(Snapshot::build(&registry, None, None));
        let mut flip = 0u32;
        group.bench_function(BenchmarkId::new(policy.as_str(), 1000), |b| {
            b.iter(|| {
                flip ^= 1;
                registry.endpoints.get_mut("web-0500").unwrap().weight = 50 + flip;
                let previous = current.load_full();
                current.store(Arc::new(Snapshot::build(&registry, None, Some(&previous))));
            })
        });
    }
    let mut registry = registry(1000, Policy::ConsistentHash);
    let current = ArcSwap::from_pointee(Snapshot::build(&registry, None, None));
    let mut away = Some(record(500));
    group.bench_function(BenchmarkId::new("ConsistentHash-membership", 1000), |b| {
        b.iter(|| {
            match away.take() {
                Some(back) => drop(registry.endpoints.insert("web-0500".into(), back)),
                None => away = registry.endpoints.remove("web-0500"),
            }
            let previous = current.load_full();
            current.store(Arc::new(Snapshot::build(&registry, None, Some(&previous))));
        })
    });
    group.finish();
}

/// A 1000-endpoint registry with a 10-minute warm-up in which every tenth endpoint became
/// ready a minute ago (still warming) and the rest long ago, as after a partial rollout.
fn warming_registry(policy: Policy, now_ms: i64) -> Registry {
    let mut registry = registry(1000, policy);
    registry.service.as_mut().unwrap().warmup_seconds = 600;
    for (i, record) in registry.endpoints.values_mut().enumerate() {
        if i % 10 == 0 {
            record.ready_since_ms = now_ms - 60_000;
        }
    }
    registry
}

/// Picks while endpoints warm up, and with the caller's zone preferred: the ramp and the zone
/// are decided when the snapshot is built, so these should match `pick_1_thread` at 1000.
fn picks_shaped(c: &mut Criterion) {
    let keys = keys();
    let now = podkeeper::now_ms();
    let mut group = c.benchmark_group("pick_shaped");
    for policy in Policy::ALL {
        let warming =
            Snapshot::build_at(&warming_registry(policy, now), None, None, 160, None, now);
        assert!(warming.next_step_ms().is_some(), "endpoints are warming");
        let zone = Some(Arc::new(ZonePreference::new("z0")));
        let zoned = Snapshot::build_at(&registry(1000, policy), None, None, 160, zone, now);
        assert_eq!(zoned.pickable().len(), 334, "zone z0 only");
        for (name, snapshot) in [("warming", &warming), ("zone", &zoned)] {
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new(format!("{policy}-{name}"), 1000), |b| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    let ctx = PickContext {
                        key: Some(&keys[i & 1023]),
                    };
                    black_box(snapshot.pick(&ctx));
                })
            });
        }
    }
    group.finish();
}

/// The rebuild a warm-up step costs (once per step, at most every 500 ms, while any endpoint
/// warms): the same endpoints, new tables.
fn warmup_step(c: &mut Criterion) {
    let now = podkeeper::now_ms();
    let mut group = c.benchmark_group("warmup_step");
    for policy in [Policy::WeightedRandom, Policy::WeightedRoundRobin] {
        let snapshot =
            Snapshot::build_at(&warming_registry(policy, now), None, None, 160, None, now);
        let mut t = now;
        group.bench_function(BenchmarkId::new(policy.as_str(), 1000), |b| {
            b.iter(|| {
                t += 30_000;
                black_box(snapshot.restepped(t));
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = picks_one_thread, picks_two_threads, picks_four_threads, pick_through_arc_swap, build_and_swap, picks_shaped, warmup_step
}
criterion_main!(benches);

//! End-to-end readiness latency: a pod's Ready condition changes in Kubernetes, and a ZooKeeper
//! client holding a persistent recursive watch sees the endpoint znode change.
//!
//! Needs a running control plane (KUBECONFIG), ZooKeeper and the operator (see scripts/bench,
//! which starts all three). The program creates `--pods` bare pods (the scheduler places them
//! on the kwok nodes, kwok makes them Running+Ready), then, for each configuration in
//! `--configs` (e.g. `10,1`: 10 resources selecting 1/10 of the pods each, then 1 resource
//! selecting all), creates the ServiceRegistrations, waits until every endpoint is in
//! ZooKeeper, flips the Ready condition of pods through the status subresource (paced, then
//! in a burst), measures, and deletes the resources again (waiting for the operator's cleanup).
//!
//! Each flip has four timestamps: patch sent, patch answered (the status is committed),
//! seen by this program's own pod watch, seen by the ZooKeeper watch. The reported latency is
//! ZooKeeper-seen minus patch-answered ("from commit") and minus pod-watch-seen ("from event").
//! The same flips are compared, in the same run, with what a user would compare podkeeper
//! with: headless Services selecting the same pods, whose EndpointSlices kube-controller-manager
//! writes (`slices.rs`), and the floor, three ways: this program's own pod watch (commit -> watch
//! event) plus one bare `multi()` of the same shape (issued -> ZooKeeper watch event), each
//! measured apart; the bare bridge, end to end: a few pods nothing selects ([`FLOOR_PODS`])
//! flip between the paced flips, and this program's pod watch issues one bare `multi()` the
//! moment it sees each (commit -> ZooKeeper watch event, as podkeeper is timed); and the same
//! bridge on every other paced flip itself ([`Shadow`]), podkeeper compared on the others.
//!
//! With `--operator-bin` the program runs the operator itself (`operator.rs`): it can then
//! restart it cold (a fresh ZooKeeper chroot: operator start -> everything published, RSS all
//! in, per allocator `--variant`, interleaved A/B/A/B) and warm (a full resync of what is there).
//! Every wait has a deadline; every loop a bound.

mod operator;
mod slices;
mod timeline;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use podkeeper::crd::ServiceRegistration;
use rand::seq::SliceRandom;
use tokio::sync::Notify;
use zookeeper_client::{Acls, AddWatchMode, Client as ZkClient, CreateMode, EventType};

use operator::{Operator, Variant, anon_kib, cpu_seconds, rss_kib};

struct Args {
    zk: String,
    metrics: String,
    operator_pid: Option<u32>,
    namespace: String,
    pods: usize,
    configs: Vec<usize>,
    flips: usize,
    interval_ms: u64,
    burst: usize,
    create_concurrency: usize,
    timeout: Duration,
    /// Create the pods bound to these nodes (spec.nodeName): no scheduler in the way.
    bind_nodes: Vec<String>,
    /// Run the operator from this program (else `--operator-pid` names a running one).
    operator_bin: Option<PathBuf>,
    operator_log: PathBuf,
    operator_pidfile: Option<PathBuf>,
    /// Cold starts, each in a fresh chroot, interleaved `rounds` times.
    variants: Vec<Variant>,
    variant_rounds: usize,
    /// Compare with the EndpointSlice controller (headless Services on the same pods).
    slices: bool,
    /// Sustained churn after the bursts: flips per second, for this long (0: none).
    churn_rate: f64,
    churn_seconds: f64,
    /// Restart phases (cold and warm) after each configuration's flips.
    restarts: bool,
    /// Every paced, burst and churn flip's timestamps as CSV, and the split of podkeeper's part
    /// by the operator's `podkeeper::timeline` trace in `operator_log` (`timeline.rs`).
    timeline: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        zk: std::env::var("PODKEEPER_ZK_CONNECT").unwrap_or_else(|_| "127.0.0.1:2181".into()),
        metrics: "127.0.0.1:8080".into(),
        operator_pid: None,
        namespace: "pk-latency".into(),
        pods: 10_000,
        configs: vec![10, 1],
        flips: 200,
        interval_ms: 20,
        burst: 100,
        create_concurrency: 64,
        timeout: Duration::from_secs(600),
        bind_nodes: Vec::new(),
        operator_bin: None,
        operator_log: PathBuf::from("operator.log"),
        operator_pidfile: None,
        variants: Vec::new(),
        variant_rounds: 2,
        slices: true,
        churn_rate: 0.0,
        churn_seconds: 60.0,
        restarts: false,
        timeline: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--zk" => a.zk = val()?,
            "--metrics" => a.metrics = val()?,
            "--operator-pid" => a.operator_pid = Some(val()?.parse()?),
            "--namespace" => a.namespace = val()?,
            "--pods" => a.pods = val()?.parse()?,
            "--configs" => {
                a.configs = val()?
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()?
            }
            "--flips" => a.flips = val()?.parse()?,
            "--interval-ms" => a.interval_ms = val()?.parse()?,
            "--burst" => a.burst = val()?.parse()?,
            "--create-concurrency" => a.create_concurrency = val()?.parse()?,
            "--timeout" => a.timeout = Duration::from_secs(val()?.parse()?),
            "--bind-nodes" => a.bind_nodes = val()?.split(',').map(str::to_string).collect(),
            "--operator-bin" => a.operator_bin = Some(val()?.into()),
            "--operator-log" => a.operator_log = val()?.into(),
            "--operator-pidfile" => a.operator_pidfile = Some(val()?.into()),
            "--variant" => a.variants.push(Variant::parse(&val()?)?),
            "--variant-rounds" => a.variant_rounds = val()?.parse()?,
            "--no-slices" => a.slices = false,
            "--churn-rate" => a.churn_rate = val()?.parse()?,
            "--churn-seconds" => a.churn_seconds = val()?.parse()?,
            "--restarts" => a.restarts = true,
            "--timeline" => a.timeline = Some(val()?.into()),
            "-h" | "--help" => {
                println!(
                    "latency [--zk host:port] [--metrics host:port] [--operator-pid PID] \
                     [--namespace NS] [--pods N] [--configs 10,1] [--flips N] [--interval-ms MS] \
                     [--burst B] [--create-concurrency C] [--timeout SECONDS] \
                     [--bind-nodes n1,n2] [--operator-bin PATH [--operator-log F] [--operator-pidfile F] \
                     [--restarts] [--variant 'name=path[ K=V..]']... [--variant-rounds N]] \
                     [--no-slices] [--churn-rate FLIPS_PER_S --churn-seconds S] [--timeline FILE.csv]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if a.configs
        .iter()
        .any(|&r| r == 0 || !a.pods.is_multiple_of(r))
    {
        bail!("every --configs entry must divide --pods");
    }
    Ok(a)
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn result(name: &str, value: f64, unit: &str, detail: &str) {
    println!(
        "RESULT {name} {value:.3} {unit} ({detail}; load {})",
        load_avg()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * q).round() as usize]
}

fn stats(mut v: Vec<f64>) -> (String, [f64; 4]) {
    v.sort_by(f64::total_cmp);
    let s = [
        percentile(&v, 0.5),
        percentile(&v, 0.9),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN),
    ];
    (
        format!(
            "n={} p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
            v.len(),
            s[0],
            s[1],
            s[2],
            s[3]
        ),
        s,
    )
}

/// GET /metrics over a plain TCP connection (HTTP/1.0: the server closes when done).
async fn scrape(addr: &str) -> anyhow::Result<String> {
    let addr = addr.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let sock: std::net::SocketAddr = addr.parse().context("--metrics host:port")?;
        let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        anyhow::Ok(body)
    })
    .await?
    .context("scraping /metrics")
}

/// Value of a sample line `name{labels} value` (labels matched as a substring).
fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let (key, _) = l.rsplit_once(' ').unwrap_or((l, ""));
            (key == name || key.starts_with(&format!("{name}{{"))) && key.contains(labels)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Cumulative buckets (le, count) of a histogram; `labels` picks one member of a family.
fn buckets(text: &str, name: &str, labels: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (set, value) = rest.split_once("} ")?;
            if !set.contains(labels) {
                return None;
            }
            let le = set.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, value.split(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// The operator's own histogram between two scrapes: count, mean and bucket bounds of quantiles.
fn histogram_delta(before: &str, after: &str, name: &str, labels: &str) -> String {
    let b = buckets(before, name, labels);
    let a = buckets(after, name, labels);
    let count = metric(after, &format!("{name}_count"), labels).unwrap_or(0.0)
        - metric(before, &format!("{name}_count"), labels).unwrap_or(0.0);
    let sum = metric(after, &format!("{name}_sum"), labels).unwrap_or(0.0)
        - metric(before, &format!("{name}_sum"), labels).unwrap_or(0.0);
    if count <= 0.0 || a.is_empty() {
        return format!("{name}{{{labels}}}: no observations");
    }
    let delta: Vec<(f64, f64)> = a
        .iter()
        .map(|(le, n)| {
            let prev = b.iter().find(|(l, _)| l == le).map_or(0.0, |(_, c)| *c);
            (*le, n - prev)
        })
        .collect();
    let q = |q: f64| {
        delta
            .iter()
            .find(|(_, c)| *c >= q * count)
            .map_or(f64::INFINITY, |(le, _)| *le * 1e3)
    };
    format!(
        "{name}{{{labels}}}: n={count} mean={:.2}ms p50<={}ms p90<={}ms p99<={}ms",
        sum / count * 1e3,
        q(0.5),
        q(0.9),
        q(0.99)
    )
}

/// What the two watches saw, with when.
#[derive(Default)]
struct Seen {
    /// Pod name -> (Ready, when this program's pod watch saw it become so).
    pod: HashMap<String, Vec<(bool, Instant)>>,
    /// Pod name -> current Ready as last seen, and whether it has an IP.
    ready_now: HashMap<String, (bool, bool)>,
    /// Endpoint (pod) name -> (created?, when the ZooKeeper watch saw it).
    zk: HashMap<String, Vec<(bool, Instant)>>,
    /// Pod name -> (ready in its EndpointSlice?, when the slice watch saw it change).
    slice: HashMap<String, Vec<(bool, Instant)>>,
    /// Pod name -> ready in its EndpointSlice, as last seen.
    slice_now: HashMap<String, bool>,
}

struct Shared {
    seen: Mutex<Seen>,
    changed: Notify,
}

impl Shared {
    /// Waits until `cond` holds, or fails at the deadline.
    async fn wait_for(
        &self,
        what: &str,
        deadline: Instant,
        mut cond: impl FnMut(&Seen) -> bool,
    ) -> anyhow::Result<()> {
        loop {
            let notified = self.changed.notified();
            if cond(&self.seen.lock().unwrap()) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("timed out waiting for {what}");
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), notified).await;
        }
    }
}

fn pod_ready(p: &Pod) -> (bool, bool) {
    let st = p.status.as_ref();
    let ready = st
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let ip = st
        .and_then(|s| s.pod_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty());
    (ready, ip)
}

fn watch_pods(pods: Api<Pod>, shared: Arc<Shared>) {
    tokio::spawn(async move {
        let mut stream = watcher::watcher(pods, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            let pod = match ev {
                Ok(Event::Apply(p)) | Ok(Event::InitApply(p)) => p,
                Ok(_) => continue,
                Err(err) => {
                    eprintln!("pod watch error (the watcher retries): {err}");
                    continue;
                }
            };
            let (ready, ip) = pod_ready(&pod);
            let name = pod.name_any();
            let mut seen = shared.seen.lock().unwrap();
            let prev = seen.ready_now.insert(name.clone(), (ready, ip));
            if prev.map(|p| p.0) != Some(ready) {
                seen.pod.entry(name).or_default().push((ready, now));
            }
            drop(seen);
            shared.changed.notify_waiters();
        }
    });
}

async fn watch_zk(zk: &ZkClient, root: &str, shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut w = zk
        .watch(root, AddWatchMode::PersistentRecursive)
        .await
        .with_context(|| format!("persistent watch on {root}"))?;
    tokio::spawn(async move {
        loop {
            let ev = w.changed().await;
            let now = Instant::now();
            let created = match ev.event_type {
                EventType::NodeCreated => true,
                EventType::NodeDeleted => false,
                EventType::Session => {
                    eprintln!("ZooKeeper watch: session event {:?}", ev.session_state);
                    if ev.session_state.is_terminated() {
                        return;
                    }
                    continue;
                }
                _ => continue,
            };
            let Some((_, pod)) = ev.path.rsplit_once("/endpoints/") else {
                continue;
            };
            let mut seen = shared.seen.lock().unwrap();
            seen.zk
                .entry(pod.to_string())
                .or_default()
                .push((created, now));
            drop(seen);
            shared.changed.notify_waiters();
        }
    });
    Ok(())
}

fn pod_name(i: usize) -> String {
    format!("lat-{i:05}")
}

/// Pods no resource and no Service selects, flipped by the bare bridge (the floor): besides
/// the benchmark's pods, indexed by the operator like any other pod of the namespace.
const FLOOR_PODS: usize = 10;

fn floor_pod_name(i: usize) -> String {
    format!("floor-{i:02}")
}

/// Floor pod `i`: only the label `bench=floor`.
fn floor_pod_object(ns: &str, i: usize, nodes: &[String]) -> anyhow::Result<Pod> {
    let mut pod = pod_object(ns, i, 1, &[], nodes)?;
    pod.metadata.name = Some(floor_pod_name(i));
    pod.metadata.labels = Some([("bench".to_string(), "floor".to_string())].into());
    Ok(pod)
}

/// Pod `i`: `app=svc-<i % services>`, and for each configuration of R resources the label
/// `bench-r<R>=<resource>` its Service selects; bound to a node when `nodes` is not empty.
fn pod_object(
    ns: &str,
    i: usize,
    services: usize,
    configs: &[usize],
    nodes: &[String],
) -> anyhow::Result<Pod> {
    let mut labels = serde_json::json!({
        "app": format!("svc-{}", i % services),
        "bench": "latency",
        "track": "stable",
        "version": "1.4.2",
    });
    for &r in configs {
        labels[slices::config_label(r)] = serde_json::json!(((i % services) % r).to_string());
    }
    let mut pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name(i), "namespace": ns, "labels": labels},
        "spec": {
            "containers": [{
                "name": "app",
                "image": "registry.invalid/fake:1",
                "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9100}],
            }],
            "terminationGracePeriodSeconds": 0,
        },
    });
    if !nodes.is_empty() {
        pod["spec"]["nodeName"] = serde_json::json!(nodes[i % nodes.len()]);
    }
    Ok(serde_json::from_value(pod)?)
}

/// A flip: pod `name` to `ready`, and the four timestamps.
#[derive(Clone)]
struct Flip {
    name: String,
    ready: bool,
    sent: Instant,
    answered: Option<Instant>,
}

async fn patch_ready(pods: &Api<Pod>, name: &str, ready: bool) -> anyhow::Result<()> {
    let status = if ready { "True" } else { "False" };
    let patch = serde_json::json!({
        "status": {"conditions": [{"type": "Ready", "status": status}]}
    });
    pods.patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .with_context(|| format!("patching status of {name}"))?;
    Ok(())
}

/// Latencies (ms) from each flip's patch answer to the first event in `events` showing it
/// (at or after the patch was sent), and how many flips have none.
fn from_commit(
    flips: &[Flip],
    events: &HashMap<String, Vec<(bool, Instant)>>,
) -> (Vec<f64>, usize) {
    let mut out = Vec::new();
    let mut missing = 0;
    for f in flips {
        match (first_event(events, f), f.answered) {
            (Some(t), Some(ta)) => out.push(ms(t.saturating_duration_since(ta))),
            _ => missing += 1,
        }
    }
    (out, missing)
}

/// When `events` first showed flip `f` (its pod at its readiness, at or after it was sent).
fn first_event(events: &HashMap<String, Vec<(bool, Instant)>>, f: &Flip) -> Option<Instant> {
    events
        .get(&f.name)?
        .iter()
        .find(|(c, t)| *c == f.ready && *t >= f.sent)
        .map(|(_, t)| *t)
}

/// Latencies (ms) from this program's pod watch event to the ZooKeeper watch event.
fn from_pod_event(flips: &[Flip], seen: &Seen) -> Vec<f64> {
    flips
        .iter()
        .filter_map(|f| {
            let (zk, pod) = (first_event(&seen.zk, f)?, first_event(&seen.pod, f)?);
            Some(ms(zk.saturating_duration_since(pod)))
        })
        .collect()
}

/// The flips as wall-clock rows for the timeline.
fn timeline_rows(
    flips: &[Flip],
    shadowed: &HashMap<(String, bool), Instant>,
    seen: &Seen,
) -> Vec<timeline::Row> {
    flips
        .iter()
        .map(|f| timeline::Row {
            pod: f.name.clone(),
            ready: f.ready,
            shadowed: shadowed.contains_key(&(f.name.clone(), f.ready)),
            sent: timeline::unix_us(f.sent),
            answered: f.answered.map(timeline::unix_us),
            pod_watch: first_event(&seen.pod, f).map(timeline::unix_us),
            zookeeper: first_event(&seen.zk, f).map(timeline::unix_us),
            slice: first_event(&seen.slice, f).map(timeline::unix_us),
            floor: shadowed
                .get(&(f.name.clone(), f.ready))
                .map(|t| timeline::unix_us(*t)),
        })
        .collect()
}

/// Appends the flips of `phase` to the timeline CSV and, when this program runs the operator,
/// splits podkeeper's part of each by the operator's own trace.
fn report_timeline(
    run: &Run,
    path: &std::path::Path,
    phase: &str,
    rows: &[timeline::Row],
) -> anyhow::Result<()> {
    timeline::append_csv(path, phase, rows)?;
    if run.args.operator_bin.is_none() {
        return Ok(());
    }
    let b = timeline::breakdown(rows, &timeline::read_trace(&run.args.operator_log)?);
    let n = b.own.len();
    let (lag, lag_q) = stats(b.watch_lag);
    let (own, own_q) = stats(b.own);
    let (multi, multi_q) = stats(b.multi);
    println!(
        "{phase}: podkeeper's flips split by its trace ({n}): its pod event after this program's {lag}; its pod event -> multi() sent {own}; multi() sent -> ZooKeeper watch event {multi}"
    );
    let detail = "podkeeper's flips, by the operator's podkeeper::timeline trace";
    for (name, q) in [("event_lag", lag_q), ("own", own_q)] {
        result(&format!("{phase}_operator_{name}_p50"), q[0], "ms", detail);
        result(&format!("{phase}_operator_{name}_p99"), q[2], "ms", detail);
    }
    result(
        &format!("{phase}_operator_multi_p50"),
        multi_q[0],
        "ms",
        detail,
    );
    Ok(())
}

/// Flips are done when each is visible in `events` (or the deadline passes).
fn all_landed(flips: &[Flip], events: &HashMap<String, Vec<(bool, Instant)>>) -> bool {
    flips.iter().all(|f| {
        events
            .get(&f.name)
            .is_some_and(|v| v.iter().any(|(c, t)| *c == f.ready && *t >= f.sent))
    })
}

/// Sum of every sample of a metric family (`name` and `name{...}` lines).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, v) = l.rsplit_once(' ')?;
            (key == name || key.starts_with(&format!("{name}{{"))).then(|| v.parse::<f64>().ok())?
        })
        .sum()
}

/// p50 and p99 of one phase, per observer.
struct Phase {
    zk: [f64; 4],
    pod_watch: [f64; 4],
}

/// Prints one phase: podkeeper (ZooKeeper watch), the bare pod watch, and, when measured, the
/// EndpointSlice controller, each from the status patch's commit; and the slice/podkeeper ratio.
fn report(label: &str, flips: &[Flip], seen: &Seen, extra: &str, with_slices: bool) -> Phase {
    let (commit, missing) = from_commit(flips, &seen.zk);
    let (c, cs) = stats(commit);
    let (e, _) = stats(from_pod_event(flips, seen));
    let (w, ws) = stats(from_commit(flips, &seen.pod).0);
    println!("{label}: from commit {c}; from pod event {e}; missing {missing}{extra}");
    println!("{label}: bare pod watch, from commit {w}");
    result(&format!("{label}_p50"), cs[0], "ms", "from status commit");
    result(&format!("{label}_p99"), cs[2], "ms", "from status commit");
    result(
        &format!("{label}_podwatch_p50"),
        ws[0],
        "ms",
        "bare pod watch, from status commit",
    );
    if with_slices {
        let (slice, slice_missing) = from_commit(flips, &seen.slice);
        let (k, ks) = stats(slice);
        println!("{label}: EndpointSlice from commit {k}; missing {slice_missing}");
        result(
            &format!("{label}_slice_p50"),
            ks[0],
            "ms",
            "EndpointSlice, from status commit",
        );
        result(
            &format!("{label}_slice_p99"),
            ks[2],
            "ms",
            "EndpointSlice, from status commit",
        );
        for (q, i) in [("p50", 0), ("p99", 2)] {
            result(
                &format!("{label}_slice_over_podkeeper_{q}"),
                ks[i] / cs[i],
                "x",
                &format!("EndpointSlice {q} / podkeeper {q}; target >= 10"),
            );
        }
    }
    Phase {
        zk: cs,
        pod_watch: ws,
    }
}

/// Everything a configuration's phases share.
struct Run {
    args: Args,
    ns: String,
    root: String,
    zk: ZkClient,
    shared: Arc<Shared>,
    pods: Api<Pod>,
    op: Operator,
    overall: Instant,
}

impl Run {
    fn operator_pid(&self) -> Option<u32> {
        self.op.pid().or(self.args.operator_pid)
    }

    fn deadline(&self, secs: u64) -> Instant {
        (Instant::now() + Duration::from_secs(secs)).min(self.overall)
    }

    /// Waits until /metrics answers and `cond` holds on it; returns the text and when.
    async fn wait_metrics(
        &self,
        what: &str,
        secs: u64,
        mut cond: impl FnMut(&str) -> bool,
    ) -> anyhow::Result<(String, Instant)> {
        let deadline = self.deadline(secs);
        loop {
            if let Ok(m) = scrape(&self.args.metrics).await
                && cond(&m)
            {
                return Ok((m, Instant::now()));
            }
            if Instant::now() > deadline {
                bail!("timed out after {secs}s waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let overall = Instant::now() + args.timeout;
    podkeeper::zk::security::install_crypto_provider();
    let client = kube::Client::try_default()
        .await
        .context("kube client (KUBECONFIG)")?;
    let ns = args.namespace.clone();
    let zk = ZkClient::connector()
        .with_session_timeout(Duration::from_secs(20))
        .connect(&args.zk)
        .await
        .with_context(|| format!("connecting to ZooKeeper {}", args.zk))?;
    let shared = Arc::new(Shared {
        seen: Mutex::new(Seen::default()),
        changed: Notify::new(),
    });
    let root = format!("/podkeeper/{ns}");
    watch_zk(&zk, &root, shared.clone()).await?;
    println!(
        "# latency: {} pods in namespace {ns}, configs {:?}, ZooKeeper {}, bound to {:?}, load {}",
        args.pods,
        args.configs,
        args.zk,
        args.bind_nodes,
        load_avg()
    );
    let op = Operator::new(args.operator_log.clone(), args.operator_pidfile.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut run = Run {
        args,
        ns,
        root,
        zk,
        shared,
        pods,
        op,
        overall,
    };
    if let Some(bin) = run.args.operator_bin.clone() {
        let base = Variant {
            name: "base".into(),
            bin,
            env: Vec::new(),
        };
        run.op.start(&base, &[])?;
        run.wait_metrics("the operator's /metrics", 60, |_| true)
            .await?;
    }
    let outcome = run_all(&mut run, &client).await;
    run.op.stop().await?;
    outcome
}

async fn run_all(run: &mut Run, client: &kube::Client) -> anyhow::Result<()> {
    let want = run.args.pods;
    let rss0 = rss_kib(run.operator_pid());
    let m0 = scrape(&run.args.metrics).await?;
    println!(
        "operator before pods: RSS {:?} KiB, pods_indexed {:?}",
        rss0,
        metric(&m0, "podkeeper_pods_indexed", "")
    );
    create_pods(run, client).await?;
    // The operator indexes every pod of the namespace, selected or not.
    let (m1, _) = run
        .wait_metrics("the operator to index every pod", 300, |m| {
            metric(m, "podkeeper_pods_indexed", "").unwrap_or(0.0) >= (want + FLOOR_PODS) as f64
        })
        .await?;
    let indexed = metric(&m1, "podkeeper_pods_indexed", "").unwrap_or(0.0);
    let index_bytes = metric(&m1, "podkeeper_pod_index_bytes", "").unwrap_or(0.0);
    let rss1 = rss_kib(run.operator_pid());
    println!(
        "operator with {indexed} pods indexed: pod_index_bytes {index_bytes} ({:.0} B/pod), RSS {:?} KiB (delta {:?} KiB = {:?} B/pod)",
        index_bytes / indexed.max(1.0),
        rss1,
        rss1.zip(rss0).map(|(a, b)| a as i64 - b as i64),
        rss1.zip(rss0)
            .map(|(a, b)| (a as i64 - b as i64) * 1024 / want as i64)
    );
    result(
        "index_bytes_per_pod",
        index_bytes / indexed.max(1.0),
        "B",
        "pod_index_bytes/pods_indexed",
    );
    if let (Some(a), Some(b)) = (rss1, rss0) {
        result(
            "rss_delta_per_pod_indexed",
            (a as f64 - b as f64) * 1024.0 / want as f64,
            "B",
            "operator RSS delta 0 -> N pods, no resource",
        );
    }
    for resources in run.args.configs.clone() {
        run_config(run, client, resources, rss0).await?;
        run.op.check_alive()?;
    }
    let m = scrape(&run.args.metrics).await?;
    println!(
        "final: pods_indexed {:?}, pod_index_bytes {:?}, RSS {:?} KiB",
        metric(&m, "podkeeper_pods_indexed", ""),
        metric(&m, "podkeeper_pod_index_bytes", ""),
        rss_kib(run.operator_pid())
    );
    Ok(())
}

async fn create_pods(run: &Run, client: &kube::Client) -> anyhow::Result<()> {
    let ns = &run.ns;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns_obj: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
    match namespaces.create(&PostParams::default(), &ns_obj).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).context("creating the namespace"),
    }
    watch_pods(run.pods.clone(), run.shared.clone());
    if run.args.slices {
        slices::watch_slices(Api::namespaced(client.clone(), ns), run.shared.clone());
    }
    let services_max = *run.args.configs.iter().max().unwrap_or(&1);
    let t = Instant::now();
    let created: Vec<anyhow::Result<()>> = futures::stream::iter(0..run.args.pods + FLOOR_PODS)
        .map(|i| {
            let pods = run.pods.clone();
            let (configs, nodes) = (&run.args.configs, &run.args.bind_nodes);
            async move {
                let p = match i.checked_sub(run.args.pods) {
                    None => pod_object(ns, i, services_max, configs, nodes)?,
                    Some(f) => floor_pod_object(ns, f, nodes)?,
                };
                match pods.create(&PostParams::default(), &p).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(anyhow::Error::new(e)
                        .context(format!("creating {}", p.metadata.name.unwrap_or_default()))),
                }
            }
        })
        .buffer_unordered(run.args.create_concurrency)
        .collect()
        .await;
    created.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let created_in = t.elapsed();
    let want = run.args.pods;
    println!(
        "{want} pods created (API) in {:.1}s ({:.0} pods/s), load {}",
        created_in.as_secs_f64(),
        want as f64 / created_in.as_secs_f64(),
        load_avg()
    );
    run.shared
        .wait_for("all pods Running+Ready with an IP", run.overall, |s| {
            s.ready_now.values().filter(|(r, ip)| *r && *ip).count() >= want + FLOOR_PODS
        })
        .await?;
    let ready_in = t.elapsed();
    let how = if run.args.bind_nodes.is_empty() {
        "scheduled"
    } else {
        "created bound to kwok nodes"
    };
    println!(
        "{want} pods: {how}, all Ready with an IP after {:.1}s ({:.0} pods/s)",
        ready_in.as_secs_f64(),
        want as f64 / ready_in.as_secs_f64()
    );
    result(
        "pods_created",
        created_in.as_secs_f64(),
        "s",
        &format!("{want} pods"),
    );
    result(
        "pods_ready",
        ready_in.as_secs_f64(),
        "s",
        &format!("{want} pods {how} and Ready"),
    );
    Ok(())
}

/// Creates the configuration's ServiceRegistrations (and Services), waits until all is
/// published, runs the phases, and deletes everything again.
async fn run_config(
    run: &mut Run,
    client: &kube::Client,
    resources: usize,
    rss0: Option<u64>,
) -> anyhow::Result<()> {
    let want = run.args.pods;
    let ns = run.ns.clone();
    let per = want / resources;
    let label = format!("r{resources}x{per}");
    let services_max = *run.args.configs.iter().max().unwrap_or(&1);
    println!(
        "## {resources} resource(s) x {per} pods, load {}",
        load_avg()
    );
    let mut members: Vec<String> = (0..want).map(pod_name).collect();
    let srs: Api<ServiceRegistration> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let t = Instant::now();
    for r in 0..resources {
        let values: Vec<String> = (0..services_max)
            .filter(|s| s % resources == r)
            .map(|s| format!("svc-{s}"))
            .collect();
        let sr: ServiceRegistration = serde_json::from_value(serde_json::json!({
            "apiVersion": "podkeeper.io/v1alpha1",
            "kind": "ServiceRegistration",
            "metadata": {"name": format!("{label}-{r}"), "namespace": ns},
            "spec": {
                "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": values}]},
                "port": "http",
                "extraPorts": ["metrics"],
                "drainSeconds": 0,
                "metadata": {"labels": ["version", "track"], "static": {"protocol": "http"}},
            },
        }))?;
        srs.create(&PostParams::default(), &sr)
            .await
            .with_context(|| format!("creating ServiceRegistration {label}-{r}"))?;
        if run.args.slices {
            slices::create_service(&services, &ns, &format!("{label}-{r}"), resources, r).await?;
        }
    }
    let (_, published) = run
        .wait_metrics("every endpoint published", 600, |m| {
            metric_sum(m, "podkeeper_endpoints_published") >= want as f64
        })
        .await?;
    let published_in = published - t;
    let rss2 = rss_kib(run.operator_pid());
    println!(
        "all {want} endpoints in ZooKeeper {:.2}s after creating the resources; RSS {:?} KiB (delta from 0 pods {:?} B/pod)",
        published_in.as_secs_f64(),
        rss2,
        rss2.zip(rss0)
            .map(|(a, b)| (a as i64 - b as i64) * 1024 / want as i64)
    );
    result(
        &format!("{label}_initial_publish"),
        published_in.as_secs_f64(),
        "s",
        &format!("{want} endpoints"),
    );
    if let (Some(a), Some(b)) = (rss2, rss0) {
        result(
            &format!("{label}_rss_delta_per_pod"),
            (a as f64 - b as f64) * 1024.0 / want as f64,
            "B",
            "operator RSS delta 0 pods -> N pods published",
        );
    }
    if let Some(a) = rss2 {
        result(
            &format!("{label}_rss_total_per_pod"),
            a as f64 * 1024.0 / want as f64,
            "B",
            "operator RSS / N pods published, all in",
        );
    }
    if run.args.slices {
        let deadline = run.deadline(300);
        let ok = run
            .shared
            .wait_for("every pod ready in an EndpointSlice", deadline, |s| {
                s.slice_now.values().filter(|r| **r).count() >= want
            })
            .await;
        match ok {
            Ok(()) => result(
                &format!("{label}_slices_initial"),
                t.elapsed().as_secs_f64(),
                "s",
                &format!("{want} pods ready in EndpointSlices after creating the Services"),
            ),
            Err(e) => eprintln!("{e}"),
        }
    }
    // Let the status/Event tail of the initial publish settle before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    members.shuffle(&mut rand::rng());
    let half = (run.args.flips / 2).min(members.len() / 2);
    let (paced_pods, rest) = members.split_at(half);
    let (burst_pods, rest) = rest.split_at(run.args.burst.min(rest.len()));
    // The floor's parts (bare multi()s a quarter of an interval after each paced flip) and the
    // bare bridge (a floor pod flipped half an interval after) run beside the paced flips, so
    // that the floor is measured under the same load as podkeeper.
    let (paced, bare, bridge) = tokio::join!(
        paced_phase(run, &label, paced_pods),
        bare_multis(run, &label),
        bare_bridge(run, &label)
    );
    floor_report(&label, &paced?, bare?, bridge?);
    tokio::time::sleep(Duration::from_secs(1)).await;
    burst_phase(run, &label, burst_pods).await?;
    if run.args.churn_rate > 0.0 {
        churn_phase(run, &label, rest).await?;
    }
    if run.args.restarts && run.args.operator_bin.is_some() {
        restart_phases(run, &label, resources).await?;
    }
    // Remove this configuration's resources; the operator's finalizer deletes their znodes.
    for r in 0..resources {
        srs.delete(&format!("{label}-{r}"), &DeleteParams::default())
            .await
            .with_context(|| format!("deleting {label}-{r}"))?;
        if run.args.slices {
            slices::delete_service(&services, &format!("{label}-{r}")).await?;
        }
    }
    let deadline = run.deadline(300);
    loop {
        let left = run
            .zk
            .list_children(&run.root)
            .await
            .map_or(0, |c| c.iter().filter(|c| c.starts_with(&label)).count());
        let crs = srs.list(&Default::default()).await?.items.len();
        if left == 0 && crs == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{left} service paths and {crs} resources left after deleting {label}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Waits (bounded) for the flips to show in ZooKeeper and, when compared, in the slices.
async fn wait_landed(run: &Run, flips: &[Flip], what: &str) {
    let deadline = run.deadline(30);
    if let Err(e) = run
        .shared
        .wait_for(&format!("{what} in ZooKeeper"), deadline, |s| {
            all_landed(flips, &s.zk)
        })
        .await
    {
        eprintln!("{e}");
    }
    if run.args.slices {
        let deadline = run.deadline(30);
        if let Err(e) = run
            .shared
            .wait_for(&format!("{what} in EndpointSlices"), deadline, |s| {
                all_landed(flips, &s.slice)
            })
            .await
        {
            eprintln!("{e}");
        }
    }
}

/// Half the pods to NotReady one every `interval_ms`, then back to Ready.
async fn paced_phase(run: &Run, label: &str, paced_pods: &[String]) -> anyhow::Result<Phase> {
    let before = scrape(&run.args.metrics).await?;
    let mut shadow = Shadow::new(run, label).await?;
    let mut all_paced = Vec::new();
    let mut unshadowed = Vec::new();
    let mut bridged_flips = HashMap::new();
    for ready in [false, true] {
        let mut flips = Vec::new();
        let start = Instant::now();
        for (k, name) in paced_pods.iter().enumerate() {
            let at = start + Duration::from_millis(run.args.interval_ms * k as u64);
            tokio::time::sleep_until(at.into()).await;
            let sent = Instant::now();
            let patched = async {
                patch_ready(&run.pods, name, ready).await?;
                anyhow::Ok(Instant::now())
            };
            let shadowed = k % 2 == 0;
            let bridged = shadow.bridge(run, shadowed.then_some((name.as_str(), ready)), sent);
            let (answered, zk) = tokio::join!(patched, bridged);
            let (answered, zk) = (answered?, zk?);
            let flip = Flip {
                name: name.clone(),
                ready,
                sent,
                answered: Some(answered),
            };
            match zk {
                Some(zk) => {
                    shadow.lat.push(ms(zk.saturating_duration_since(answered)));
                    bridged_flips.insert((name.clone(), ready), zk);
                }
                None => unshadowed.push(flip.clone()),
            }
            flips.push(flip);
        }
        wait_landed(run, &flips, "paced flips").await;
        all_paced.extend(flips);
    }
    shadow.remove(run).await?;
    let after = scrape(&run.args.metrics).await?;
    let (phase, rows) = {
        let seen = run.shared.seen.lock().unwrap();
        let phase = report(
            &format!("{label}_paced"),
            &all_paced,
            &seen,
            &format!(
                " ({} flips, one per {} ms)",
                all_paced.len(),
                run.args.interval_ms
            ),
            run.args.slices,
        );
        let reverted = all_paced
            .iter()
            .filter(|f| seen.ready_now.get(&f.name).is_some_and(|(r, _)| !*r))
            .count();
        println!(
            "pods not Ready after the paced flips (kwok fighting back would show here): {reverted}"
        );
        let from_event = from_pod_event(&unshadowed, &seen);
        shadow.report(label, &from_commit(&unshadowed, &seen.zk).0, &from_event);
        let rows = run
            .args
            .timeline
            .is_some()
            .then(|| timeline_rows(&all_paced, &bridged_flips, &seen));
        (phase, rows)
    };
    if let (Some(path), Some(rows)) = (&run.args.timeline, rows) {
        report_timeline(run, path, &format!("{label}_paced"), &rows)?;
    }
    for (name, labels) in [
        ("podkeeper_readiness_to_zookeeper_seconds", ""),
        ("podkeeper_reconcile_duration_seconds", ""),
        (
            "podkeeper_zookeeper_operation_duration_seconds",
            "op=\"multi\"",
        ),
    ] {
        println!(
            "operator, paced: {}",
            histogram_delta(&before, &after, name, labels)
        );
    }
    Ok(phase)
}

/// The bare bridge on the paced flips themselves: on every other paced flip, the moment this
/// program's pod watch sees it, one bare `multi()` of the operator's shape goes out, timed from
/// the patch's answer to its ZooKeeper watch event as podkeeper's flips are. It meets exactly
/// what podkeeper meets after those flips (the EndpointSlice controller's and etcd's work on a
/// selected pod); podkeeper is compared on the other flips, where no bare multi runs ahead of
/// its own in ZooKeeper.
struct Shadow {
    base: String,
    eps: String,
    payload: Vec<u8>,
    /// Bare multis issued: node `shadow-<n / 2>` is created, then deleted.
    issued: usize,
    /// From the patch's answer to the bare multi's watch event, ms.
    lat: Vec<f64>,
    /// From this program's pod event to the bare multi's watch event, ms.
    from_event: Vec<f64>,
}

impl Shadow {
    async fn new(run: &Run, label: &str) -> anyhow::Result<Shadow> {
        let (base, eps) = bare_folder(run, &format!("shadow-{label}")).await?;
        Ok(Shadow {
            base,
            eps,
            payload: vec![b'x'; 300],
            issued: 0,
            lat: Vec::new(),
            from_event: Vec::new(),
        })
    }

    /// For `flip` (a pod and the readiness it is patched to, at `sent`): waits for this
    /// program's pod watch to see it, issues the bare multi and returns its watch event.
    async fn bridge(
        &mut self,
        run: &Run,
        flip: Option<(&str, bool)>,
        sent: Instant,
    ) -> anyhow::Result<Option<Instant>> {
        let Some((pod, ready)) = flip else {
            return Ok(None);
        };
        run.shared
            .wait_for("the paced pod's watch event", run.deadline(10), |s| {
                s.pod
                    .get(pod)
                    .is_some_and(|v| v.iter().any(|(r, t)| *r == ready && *t >= sent))
            })
            .await?;
        let (node, create) = (
            format!("shadow-{}", self.issued / 2),
            self.issued.is_multiple_of(2),
        );
        let path = format!("{}/{node}", self.eps);
        let t0 = bare_multi(run, &self.base, &path, &self.payload, create).await?;
        self.issued += 1;
        let zk = first_seen(run, "the shadow bridge's watch event", &node, create, t0).await?;
        let event = first_seen_pod(run, pod, ready, sent);
        self.from_event
            .push(ms(zk.saturating_duration_since(event)));
        Ok(Some(zk))
    }

    /// Reports the bridge and podkeeper over it, on the flips without a bare multi (`podkeeper`,
    /// ms from the patch's answer; `podkeeper_from_event`, ms from this program's pod event).
    /// From the pod event, both start where the bare bridge starts: the flips' own delivery
    /// by the API server (which differs between the two halves of the flips) is left out.
    fn report(&self, label: &str, podkeeper: &[f64], podkeeper_from_event: &[f64]) {
        let (line, b) = stats(self.lat.clone());
        let (own, p) = stats(podkeeper.to_vec());
        println!(
            "{label}_paced: bare bridge on every other paced flip, from commit {line}; podkeeper on the others {own}"
        );
        for (q, i) in [("p50", 0), ("p99", 2)] {
            result(
                &format!("{label}_paced_shadow_{q}"),
                b[i],
                "ms",
                "bare bridge on the paced flips themselves, from status commit",
            );
            result(
                &format!("{label}_paced_over_shadow_{q}"),
                p[i] / b[i],
                "x",
                "podkeeper (flips without a bare multi) / bare bridge (the others); target <= 1.5 at p50",
            );
        }
        let (line, b) = stats(self.from_event.clone());
        let (own, p) = stats(podkeeper_from_event.to_vec());
        println!(
            "{label}_paced: from this program's pod event: bare bridge {line}; podkeeper {own}"
        );
        for (q, i) in [("p50", 0), ("p99", 2)] {
            result(
                &format!("{label}_paced_over_shadow_from_event_{q}"),
                p[i] / b[i],
                "x",
                "podkeeper / bare bridge, each from this program's pod event",
            );
        }
    }

    async fn remove(&self, run: &Run) -> anyhow::Result<()> {
        if !self.issued.is_multiple_of(2) {
            let last = format!("{}/shadow-{}", self.eps, self.issued / 2);
            run.zk.delete(&last, None).await?;
        }
        remove_bare_folder(run, &self.base, &self.eps).await
    }
}

/// The floor's ZooKeeper part: bare `multi()`s of the operator's shape (a version check and one
/// ~300-byte create or delete), issued -> seen by the same ZooKeeper watch, paced like the
/// flips and a quarter of an interval after each. Returns their latencies (ms).
async fn bare_multis(run: &Run, label: &str) -> anyhow::Result<Vec<f64>> {
    let (base, eps) = bare_folder(run, &format!("floor-{label}")).await?;
    let payload = vec![b'x'; 300];
    let n = run.args.flips.max(2);
    let mut lat = Vec::new();
    let start = Instant::now() + Duration::from_millis(run.args.interval_ms / 4);
    for k in 0..n {
        tokio::time::sleep_until(
            (start + Duration::from_millis(run.args.interval_ms * k as u64)).into(),
        )
        .await;
        let name = format!("floor-{}", k / 2);
        let path = format!("{eps}/{name}");
        let create = k % 2 == 0;
        let t0 = bare_multi(run, &base, &path, &payload, create).await?;
        let t = first_seen(run, "the bare multi's watch event", &name, create, t0).await?;
        lat.push(ms(t - t0));
    }
    remove_bare_folder(run, &base, &eps).await?;
    Ok(lat)
}

/// One flip of the bare bridge, in ms: from the patch's answer to the bare multi's ZooKeeper
/// watch event (podkeeper's measure), and its parts: the answer to this program's pod watch
/// event, and the multi issued to its watch event.
struct Bridged {
    from_answer: f64,
    pod_watch: f64,
    multi: f64,
}

/// The floor measured end to end: the thinnest bridge there is. A floor pod (selected by
/// nothing) flips half an interval after each paced flip; the moment this program's own pod
/// watch sees it, one bare `multi()` of the operator's shape goes out. Timed from the patch's
/// answer to that multi's ZooKeeper watch event, as podkeeper's flips are, so both meet the
/// API server's and etcd's work that follows a status patch.
async fn bare_bridge(run: &Run, label: &str) -> anyhow::Result<Vec<Bridged>> {
    let (base, eps) = bare_folder(run, &format!("bridge-{label}")).await?;
    let payload = vec![b'x'; 300];
    let mut ready = [true; FLOOR_PODS];
    let mut out = Vec::new();
    let start = Instant::now() + Duration::from_millis(run.args.interval_ms / 2);
    for k in 0..run.args.flips.max(2) {
        tokio::time::sleep_until(
            (start + Duration::from_millis(run.args.interval_ms * k as u64)).into(),
        )
        .await;
        let pod = floor_pod_name(k % FLOOR_PODS);
        ready[k % FLOOR_PODS] = !ready[k % FLOOR_PODS];
        let want = ready[k % FLOOR_PODS];
        let (name, create) = (format!("bridge-{}", k / 2), k % 2 == 0);
        let path = format!("{eps}/{name}");
        let sent = Instant::now();
        let patched = async {
            patch_ready(&run.pods, &pod, want).await?;
            anyhow::Ok(Instant::now())
        };
        let bridged = async {
            run.shared
                .wait_for("the floor pod's watch event", run.deadline(10), |s| {
                    s.pod
                        .get(&pod)
                        .is_some_and(|v| v.iter().any(|(r, t)| *r == want && *t >= sent))
                })
                .await?;
            let t0 = bare_multi(run, &base, &path, &payload, create).await?;
            let zk = first_seen(run, "the bare bridge's watch event", &name, create, t0).await?;
            let watched = first_seen_pod(run, &pod, want, sent);
            anyhow::Ok((watched, t0, zk))
        };
        let (answered, bridged) = tokio::join!(patched, bridged);
        let (answered, (watched, t0, zk)) = (answered?, bridged?);
        out.push(Bridged {
            from_answer: ms(zk.saturating_duration_since(answered)),
            pod_watch: ms(watched.saturating_duration_since(answered)),
            multi: ms(zk - t0),
        });
    }
    remove_bare_folder(run, &base, &eps).await?;
    Ok(out)
}

/// A service folder of the bare measurements, `<root>/<name>` and its `endpoints` below.
async fn bare_folder(run: &Run, name: &str) -> anyhow::Result<(String, String)> {
    let base = format!("{}/{name}", run.root);
    let eps = format!("{base}/endpoints");
    let opts = CreateMode::Persistent.with_acls(Acls::anyone_all());
    run.zk.mkdir(&eps, &opts).await?;
    Ok((base, eps))
}

/// Removes what [`bare_folder`] made (its endpoints are gone by then).
async fn remove_bare_folder(run: &Run, base: &str, eps: &str) -> anyhow::Result<()> {
    run.zk.delete(eps, None).await?;
    run.zk.delete(base, None).await?;
    Ok(())
}

/// One bare `multi()` of the operator's shape: `base`'s version checked, `path` created (or
/// deleted). Returns when it was issued.
async fn bare_multi(
    run: &Run,
    base: &str,
    path: &str,
    payload: &[u8],
    create: bool,
) -> anyhow::Result<Instant> {
    let opts = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let mut w = run.zk.new_multi_writer();
    w.add_check_version(base, 0)?;
    if create {
        w.add_create(path, payload, &opts)?;
    } else {
        w.add_delete(path, None)?;
    }
    let t0 = Instant::now();
    w.commit()
        .await
        .map_err(|e| anyhow::anyhow!("bare multi on {path}: {e:?}"))?;
    Ok(t0)
}

/// When the ZooKeeper watch first saw endpoint `name` created (or deleted) at or after `after`.
async fn first_seen(
    run: &Run,
    what: &str,
    name: &str,
    created: bool,
    after: Instant,
) -> anyhow::Result<Instant> {
    let hit = |s: &Seen| {
        s.zk.get(name)
            .and_then(|v| v.iter().find(|(c, t)| *c == created && *t >= after))
            .map(|(_, t)| *t)
    };
    run.shared
        .wait_for(what, run.deadline(5), |s| hit(s).is_some())
        .await?;
    Ok(hit(&run.shared.seen.lock().unwrap()).expect("waited for above"))
}

/// When this program's pod watch first saw `pod` become `ready` at or after `after` (it has).
fn first_seen_pod(run: &Run, pod: &str, ready: bool, after: Instant) -> Instant {
    let seen = run.shared.seen.lock().unwrap();
    seen.pod[pod]
        .iter()
        .find(|(r, t)| *r == ready && *t >= after)
        .map(|(_, t)| *t)
        .expect("waited for by the caller")
}

/// The floor: the bare pod watch (measured on the paced flips) plus the bare `multi()`s run
/// beside them, and the bare bridge measured end to end. Reports podkeeper's paced p50/p99
/// over both.
fn floor_report(label: &str, paced: &Phase, lat: Vec<f64>, bridge: Vec<Bridged>) {
    let parts = |f: fn(&Bridged) -> f64| stats(bridge.iter().map(f).collect());
    let (line, b) = parts(|b| b.from_answer);
    let (watch_line, _) = parts(|b| b.pod_watch);
    let (multi_line, _) = parts(|b| b.multi);
    println!(
        "{label}: bare bridge (floor pod flip -> own pod watch -> bare multi() -> ZooKeeper watch event), from commit {line}; parts: pod watch {watch_line}, multi {multi_line}"
    );
    for (q, i) in [("p50", 0), ("p99", 2)] {
        result(
            &format!("{label}_paced_bridge_{q}"),
            b[i],
            "ms",
            "bare bridge, from status commit to its ZooKeeper watch event",
        );
        result(
            &format!("{label}_paced_over_bridge_{q}"),
            paced.zk[i] / b[i],
            "x",
            "podkeeper / bare bridge; target <= 1.5 at p50",
        );
    }
    let (line, m) = stats(lat);
    println!("{label}: bare multi() -> ZooKeeper watch event {line}");
    result(
        &format!("{label}_bare_multi_p50"),
        m[0],
        "ms",
        "issued -> watch event",
    );
    for (q, i) in [("p50", 0), ("p99", 2)] {
        let floor = paced.pod_watch[i] + m[i];
        result(
            &format!("{label}_paced_floor_{q}"),
            floor,
            "ms",
            &format!("bare pod watch {q} + bare multi {q}"),
        );
        result(
            &format!("{label}_paced_over_floor_{q}"),
            paced.zk[i] / floor,
            "x",
            "podkeeper / floor; target <= 1.5 at p50",
        );
    }
}

/// All burst pods at once, NotReady then Ready.
async fn burst_phase(run: &Run, label: &str, burst_pods: &[String]) -> anyhow::Result<()> {
    for ready in [false, true] {
        let before = scrape(&run.args.metrics).await?;
        let start = Instant::now();
        let flips: Vec<Flip> = futures::stream::iter(burst_pods.iter())
            .map(|name| {
                let pods = run.pods.clone();
                async move {
                    let sent = Instant::now();
                    patch_ready(&pods, name, ready).await?;
                    anyhow::Ok(Flip {
                        name: name.clone(),
                        ready,
                        sent,
                        answered: Some(Instant::now()),
                    })
                }
            })
            .buffer_unordered(burst_pods.len().max(1))
            .try_collect()
            .await?;
        let patched = start.elapsed();
        wait_landed(run, &flips, "burst").await;
        let after = scrape(&run.args.metrics).await?;
        let seen = run.shared.seen.lock().unwrap();
        let last = flips
            .iter()
            .filter_map(|f| {
                seen.zk
                    .get(&f.name)?
                    .iter()
                    .find(|(c, t)| *c == f.ready && *t >= f.sent)
                    .map(|(_, t)| *t)
            })
            .max();
        let word = if ready { "ready" } else { "notready" };
        report(
            &format!("{label}_burst_{word}"),
            &flips,
            &seen,
            &format!(
                " ({} flips patched in {:.0} ms; last in ZooKeeper {:.0} ms after the first patch)",
                flips.len(),
                ms(patched),
                last.map_or(f64::NAN, |t| ms(t - start))
            ),
            run.args.slices,
        );
        let none = Default::default();
        let rows = (run.args.timeline.as_ref()).map(|_| timeline_rows(&flips, &none, &seen));
        drop(seen);
        if let (Some(path), Some(rows)) = (&run.args.timeline, rows) {
            report_timeline(run, path, &format!("{label}_burst_{word}"), &rows)?;
        }
        println!(
            "operator, burst {word}: {}",
            histogram_delta(
                &before,
                &after,
                "podkeeper_readiness_to_zookeeper_seconds",
                ""
            )
        );
    }
    Ok(())
}

/// `--churn-rate` flips per second for `--churn-seconds`, each patch on its own task at its
/// scheduled time: distinct pods to NotReady for the first half, back to Ready in the second.
/// Reports latency and the operator's CPU and RSS over the churn.
async fn churn_phase(run: &Run, label: &str, pool: &[String]) -> anyhow::Result<()> {
    let total = ((run.args.churn_rate * run.args.churn_seconds) as usize).min(pool.len() * 2);
    let half = total / 2;
    let every = Duration::from_secs_f64(1.0 / run.args.churn_rate);
    let pid = run.operator_pid();
    let (cpu0, before) = (cpu_seconds(pid), scrape(&run.args.metrics).await?);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for k in 0..total {
        let (name, ready) = (pool[k % half.max(1)].clone(), k >= half);
        let pods = run.pods.clone();
        let at = start + every * k as u32;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let sent = Instant::now();
            patch_ready(&pods, &name, ready).await?;
            anyhow::Ok(Flip {
                name,
                ready,
                sent,
                answered: Some(Instant::now()),
            })
        }));
    }
    let mut flips = Vec::with_capacity(total);
    for t in tasks {
        flips.push(t.await??);
    }
    let wall = start.elapsed();
    let (cpu1, rss) = (cpu_seconds(pid), rss_kib(pid));
    wait_landed(run, &flips, "churn").await;
    let after = scrape(&run.args.metrics).await?;
    let rows = {
        let seen = run.shared.seen.lock().unwrap();
        report(
            &format!("{label}_churn"),
            &flips,
            &seen,
            &format!(
                " ({} flips at {}/s over {:.1}s)",
                flips.len(),
                run.args.churn_rate,
                wall.as_secs_f64()
            ),
            run.args.slices,
        );
        let none = Default::default();
        (run.args.timeline.as_ref()).map(|_| timeline_rows(&flips, &none, &seen))
    };
    if let (Some(path), Some(rows)) = (&run.args.timeline, rows) {
        report_timeline(run, path, &format!("{label}_churn"), &rows)?;
    }
    if let (Some(a), Some(b)) = (cpu1, cpu0) {
        result(
            &format!("{label}_churn_cpu"),
            (a - b) / wall.as_secs_f64() * 100.0,
            "%",
            "operator CPU (user+sys) over the churn, of one core",
        );
    }
    if let Some(r) = rss {
        result(
            &format!("{label}_churn_rss"),
            r as f64 / 1024.0,
            "MiB",
            "operator RSS at the end of the churn",
        );
    }
    println!(
        "operator, churn: {}",
        histogram_delta(
            &before,
            &after,
            "podkeeper_readiness_to_zookeeper_seconds",
            ""
        )
    );
    Ok(())
}

/// Cold starts (each `--variant`, in a fresh chroot so everything is published anew; A/B/A/B
/// over `--variant-rounds`), each preceded by the same variant watching an empty namespace
/// (its 0-pod RSS), then a warm restart of the base binary on the real tree (a full resync).
async fn restart_phases(run: &mut Run, label: &str, resources: usize) -> anyhow::Result<()> {
    let want = run.args.pods;
    let base = Variant {
        name: "base".into(),
        bin: run
            .args
            .operator_bin
            .clone()
            .expect("checked by the caller"),
        env: Vec::new(),
    };
    // The allocator comparison runs in the last configuration only (it costs a cold start per
    // variant and round); the others get one cold start of the base binary.
    let last = run.args.configs.last() == Some(&resources);
    let (variants, rounds) = if run.args.variants.is_empty() || !last {
        (vec![base.clone()], 1)
    } else {
        (run.args.variants.clone(), run.args.variant_rounds)
    };
    for round in 0..rounds {
        for v in &variants {
            run.op.stop().await?;
            run.op
                .start(v, &[("PODKEEPER_NAMESPACES", format!("{}-empty", run.ns))])?;
            run.wait_metrics("the operator's /metrics", 60, |_| true)
                .await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let (idle, idle_anon) = (rss_kib(run.op.pid()), anon_kib(run.op.pid()));
            run.op.stop().await?;
            let chroot = format!("/cold-{label}-{}-{round}", v.name);
            let t0 = run.op.start(v, &[("PODKEEPER_ZK_CHROOT", chroot)])?;
            let (_, listed) = run
                .wait_metrics("the cold operator to index every pod", 600, |m| {
                    metric(m, "podkeeper_pods_indexed", "").unwrap_or(0.0)
                        >= (want + FLOOR_PODS) as f64
                })
                .await?;
            let (_, done) = run
                .wait_metrics("the cold operator to publish everything", 600, |m| {
                    metric_sum(m, "podkeeper_endpoints_published") >= want as f64
                })
                .await?;
            let rss_published = rss_kib(run.op.pid());
            tokio::time::sleep(Duration::from_secs(5)).await;
            let rss5 = rss_kib(run.op.pid());
            // jemalloc returns dirty pages after 10 s (its default decay): read again later.
            tokio::time::sleep(Duration::from_secs(10)).await;
            let (rss, anon) = (rss_kib(run.op.pid()), anon_kib(run.op.pid()));
            let m = scrape(&run.args.metrics).await?;
            let in_use = metric(&m, "podkeeper_heap_in_use_bytes", "");
            let name = format!("{label}_cold_{}", v.name);
            println!(
                "{name} round {round}: start -> pods listed {:.2}s -> all published {:.2}s; RSS idle {idle:?} KiB, at publish {rss_published:?} KiB, 5 s later {rss5:?} KiB, 15 s later {rss:?} KiB (of it anonymous: idle {idle_anon:?}, 15 s later {anon:?} KiB); load {}",
                ms(listed - t0) / 1e3,
                ms(done - t0) / 1e3,
                load_avg()
            );
            result(
                &format!("{name}_start_to_published"),
                ms(done - t0) / 1e3,
                "s",
                &format!("round {round}"),
            );
            result(
                &format!("{name}_list_to_published"),
                ms(done - listed) / 1e3,
                "s",
                &format!("round {round}"),
            );
            if let Some(r) = rss {
                result(
                    &format!("{name}_rss_per_pod"),
                    r as f64 * 1024.0 / want as f64,
                    "B",
                    &format!("round {round}: RSS 15 s after publishing / pods, all in"),
                );
                if let Some(i) = idle {
                    result(
                        &format!("{name}_rss_delta_per_pod"),
                        (r as f64 - i as f64) * 1024.0 / want as f64,
                        "B",
                        &format!("round {round}: RSS minus the same variant's 0-pod RSS, per pod"),
                    );
                }
            }
            if let Some(b) = in_use.filter(|b| *b > 0.0) {
                result(
                    &format!("{name}_heap_in_use_per_pod"),
                    b / want as f64,
                    "B",
                    &format!(
                        "round {round}: glibc's bytes in use after the release that follows the publish, all in, per pod"
                    ),
                );
            }
            if let (Some(a), Some(i)) = (anon, idle_anon) {
                result(
                    &format!("{name}_anon_delta_per_pod"),
                    (a as f64 - i as f64) * 1024.0 / want as f64,
                    "B",
                    &format!(
                        "round {round}: RssAnon (heap, stacks; no code pages) minus the 0-pod process's, per pod"
                    ),
                );
            }
        }
    }
    // Warm: the real tree is there; the restarted operator loads and diffs everything.
    run.op.stop().await?;
    let t0 = run.op.start(&base, &[])?;
    let (_, listed) = run
        .wait_metrics("the warm operator to index every pod", 600, |m| {
            metric(m, "podkeeper_pods_indexed", "").unwrap_or(0.0) >= (want + FLOOR_PODS) as f64
        })
        .await?;
    let (_, done) = run
        .wait_metrics("the warm operator to reconcile every resource", 600, |m| {
            metric_sum(m, "podkeeper_reconciles_total") >= resources as f64
                && metric_sum(m, "podkeeper_endpoints_published") >= want as f64
        })
        .await?;
    println!(
        "{label}_warm: start -> pods listed {:.2}s -> every resource resynced {:.2}s; RSS {:?} KiB",
        ms(listed - t0) / 1e3,
        ms(done - t0) / 1e3,
        rss_kib(run.op.pid())
    );
    result(
        &format!("{label}_warm_list_to_resynced"),
        ms(done - listed) / 1e3,
        "s",
        "restart on the existing tree",
    );
    result(
        &format!("{label}_warm_start_to_resynced"),
        ms(done - t0) / 1e3,
        "s",
        "restart on the existing tree",
    );
    Ok(())
}

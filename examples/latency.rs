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
//! Every wait has a deadline; every loop a bound.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use podkeeper::crd::ServiceRegistration;
use rand::seq::SliceRandom;
use tokio::sync::Notify;
use zookeeper_client::{AddWatchMode, Client as ZkClient, EventType};

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
            "-h" | "--help" => {
                println!(
                    "latency [--zk host:port] [--metrics host:port] [--operator-pid PID] \
                     [--namespace NS] [--pods N] [--configs 10,1] [--flips N] [--interval-ms MS] \
                     [--burst B] [--create-concurrency C] [--timeout SECONDS]"
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

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
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

fn pod_object(ns: &str, i: usize, services: usize) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(i),
            "namespace": ns,
            "labels": {
                "app": format!("svc-{}", i % services),
                "bench": "latency",
                "track": "stable",
                "version": "1.4.2",
            },
        },
        "spec": {
            "containers": [{
                "name": "app",
                "image": "registry.invalid/fake:1",
                "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9100}],
            }],
            "terminationGracePeriodSeconds": 0,
        },
    }))?)
}

/// A flip: pod `name` to `ready`, and the four timestamps.
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

/// Latencies (ms) of the flips: ZooKeeper-seen minus patch-answered, and minus pod-watch-seen.
fn measure(flips: &[Flip], seen: &Seen) -> (Vec<f64>, Vec<f64>, usize) {
    let mut from_commit = Vec::new();
    let mut from_event = Vec::new();
    let mut missing = 0;
    for f in flips {
        let zk = seen
            .zk
            .get(&f.name)
            .and_then(|v| v.iter().find(|(c, t)| *c == f.ready && *t >= f.sent));
        let ev = seen
            .pod
            .get(&f.name)
            .and_then(|v| v.iter().find(|(r, t)| *r == f.ready && *t >= f.sent));
        match (zk, f.answered) {
            (Some((_, tz)), Some(ta)) => {
                from_commit.push(ms(tz.saturating_duration_since(ta)));
                if let Some((_, te)) = ev {
                    from_event.push(ms(tz.saturating_duration_since(*te)));
                }
            }
            _ => missing += 1,
        }
    }
    (from_commit, from_event, missing)
}

/// Flips are done when each is visible in ZooKeeper (or the deadline passes).
fn all_landed(flips: &[Flip], seen: &Seen) -> bool {
    flips.iter().all(|f| {
        seen.zk
            .get(&f.name)
            .is_some_and(|v| v.iter().any(|(c, t)| *c == f.ready && *t >= f.sent))
    })
}

fn report(label: &str, flips: &[Flip], seen: &Seen, extra: &str) -> [f64; 4] {
    let (commit, event, missing) = measure(flips, seen);
    let (c, cs) = stats(commit);
    let (e, _) = stats(event);
    println!("{label}: from commit {c}; from pod event {e}; missing {missing}{extra}");
    result(&format!("{label}_p50"), cs[0], "ms", "from status commit");
    result(&format!("{label}_p99"), cs[2], "ms", "from status commit");
    cs
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
        "# latency: {} pods in namespace {ns}, configs {:?}, ZooKeeper {}, load {}",
        args.pods,
        args.configs,
        args.zk,
        load_avg()
    );

    // --- the pods ------------------------------------------------------------------------------
    let rss0 = rss_kib(args.operator_pid);
    let m0 = scrape(&args.metrics).await?;
    println!(
        "operator before pods: RSS {:?} KiB, pods_indexed {:?}",
        rss0,
        metric(&m0, "podkeeper_pods_indexed", "")
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns_obj: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
    match namespaces.create(&PostParams::default(), &ns_obj).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).context("creating the namespace"),
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    watch_pods(pods.clone(), shared.clone());
    let services_max = *args.configs.iter().max().unwrap_or(&1);
    let t = Instant::now();
    let created: Vec<anyhow::Result<()>> = futures::stream::iter(0..args.pods)
        .map(|i| {
            let pods = pods.clone();
            let ns = ns.clone();
            async move {
                let p = pod_object(&ns, i, services_max)?;
                match pods.create(&PostParams::default(), &p).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => {
                        Err(anyhow::Error::new(e).context(format!("creating {}", pod_name(i))))
                    }
                }
            }
        })
        .buffer_unordered(args.create_concurrency)
        .collect()
        .await;
    created.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let created_in = t.elapsed();
    let want = args.pods;
    shared
        .wait_for("all pods Running+Ready with an IP", overall, |s| {
            s.ready_now.values().filter(|(r, ip)| *r && *ip).count() >= want
        })
        .await?;
    let ready_in = t.elapsed();
    println!(
        "{want} pods: created (API) in {:.1}s, all scheduled+Ready with an IP after {:.1}s ({:.0} pods/s)",
        created_in.as_secs_f64(),
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
        &format!("{want} pods scheduled and Ready"),
    );

    // The operator indexes every pod of the namespace, selected or not.
    let deadline = Instant::now() + Duration::from_secs(120);
    let m1 = loop {
        let m = scrape(&args.metrics).await?;
        if metric(&m, "podkeeper_pods_indexed", "").unwrap_or(0.0) >= want as f64 {
            break m;
        }
        if Instant::now() > deadline {
            bail!("the operator did not index {want} pods within 120s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let indexed = metric(&m1, "podkeeper_pods_indexed", "").unwrap_or(0.0);
    let index_bytes = metric(&m1, "podkeeper_pod_index_bytes", "").unwrap_or(0.0);
    let rss1 = rss_kib(args.operator_pid);
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

    // --- each configuration --------------------------------------------------------------------
    let srs: Api<ServiceRegistration> = Api::namespaced(client.clone(), &ns);
    let mut rng = rand::rng();
    for &resources in &args.configs {
        let per = want / resources;
        let label = format!("r{resources}x{per}");
        println!(
            "## {resources} resource(s) x {per} pods, load {}",
            load_avg()
        );
        // Each resource selects the pods whose app label is one of its values.
        let mut members: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for i in 0..want {
            members
                .entry((i % services_max) % resources)
                .or_default()
                .push(pod_name(i));
        }
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
        }
        let paths: Vec<String> = (0..resources)
            .map(|r| format!("{root}/{label}-{r}/endpoints"))
            .collect();
        let deadline = (Instant::now() + Duration::from_secs(300)).min(overall);
        loop {
            let mut total = 0;
            for p in &paths {
                total += zk.list_children(p).await.map_or(0, |c| c.len());
            }
            if total == want {
                break;
            }
            if Instant::now() > deadline {
                bail!("only {total} of {want} endpoints in ZooKeeper after the deadline");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let published_in = t.elapsed();
        let rss2 = rss_kib(args.operator_pid);
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
        // Let the status/Event tail of the initial publish settle before measuring.
        tokio::time::sleep(Duration::from_secs(2)).await;

        // Paced: half the flips take distinct pods NotReady, the other half bring them back.
        let mut candidates: Vec<String> = members.values().flatten().cloned().collect();
        candidates.shuffle(&mut rng);
        let half = (args.flips / 2).min(candidates.len() / 2);
        let (paced_pods, rest) = candidates.split_at(half);
        let burst_pods: Vec<String> = rest.iter().take(args.burst).cloned().collect();
        let before = scrape(&args.metrics).await?;
        let mut all_paced = Vec::new();
        for ready in [false, true] {
            let mut flips = Vec::new();
            let start = Instant::now();
            for (k, name) in paced_pods.iter().enumerate() {
                let at = start + Duration::from_millis(args.interval_ms * k as u64);
                tokio::time::sleep_until(at.into()).await;
                let sent = Instant::now();
                patch_ready(&pods, name, ready).await?;
                flips.push(Flip {
                    name: name.clone(),
                    ready,
                    sent,
                    answered: Some(Instant::now()),
                });
            }
            let deadline = (Instant::now() + Duration::from_secs(30)).min(overall);
            let landed = shared
                .wait_for("paced flips in ZooKeeper", deadline, |s| {
                    all_landed(&flips, s)
                })
                .await;
            if let Err(e) = landed {
                eprintln!("{e}");
            }
            all_paced.extend(flips);
        }
        let after = scrape(&args.metrics).await?;
        {
            let seen = shared.seen.lock().unwrap();
            report(
                &format!("{label}_paced"),
                &all_paced,
                &seen,
                &format!(
                    " ({} flips, one per {} ms)",
                    all_paced.len(),
                    args.interval_ms
                ),
            );
            let reverted = all_paced
                .iter()
                .filter(|f| seen.ready_now.get(&f.name).is_some_and(|(r, _)| !*r))
                .count();
            println!(
                "pods not Ready after the paced flips (kwok fighting back would show here): {reverted}"
            );
        }
        println!(
            "operator, paced: {}",
            histogram_delta(
                &before,
                &after,
                "podkeeper_readiness_to_zookeeper_seconds",
                ""
            )
        );
        println!(
            "operator, paced: {}",
            histogram_delta(&before, &after, "podkeeper_reconcile_duration_seconds", "")
        );
        println!(
            "operator, paced: {}",
            histogram_delta(
                &before,
                &after,
                "podkeeper_zookeeper_operation_duration_seconds",
                "op=\"multi\"",
            )
        );

        // Burst: all at once, NotReady then Ready.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for ready in [false, true] {
            let before = scrape(&args.metrics).await?;
            let start = Instant::now();
            let flips: Vec<Flip> = futures::stream::iter(burst_pods.iter())
                .map(|name| {
                    let pods = pods.clone();
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
            let deadline = (Instant::now() + Duration::from_secs(30)).min(overall);
            if let Err(e) = shared
                .wait_for("burst in ZooKeeper", deadline, |s| all_landed(&flips, s))
                .await
            {
                eprintln!("{e}");
            }
            let after = scrape(&args.metrics).await?;
            let seen = shared.seen.lock().unwrap();
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
            );
            drop(seen);
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

        // Remove this configuration's resources; the operator's finalizer deletes their znodes.
        for r in 0..resources {
            srs.delete(&format!("{label}-{r}"), &DeleteParams::default())
                .await
                .with_context(|| format!("deleting {label}-{r}"))?;
        }
        let deadline = (Instant::now() + Duration::from_secs(120)).min(overall);
        loop {
            let mut left = 0;
            for r in 0..resources {
                if zk
                    .check_stat(&format!("{root}/{label}-{r}"))
                    .await?
                    .is_some()
                {
                    left += 1;
                }
            }
            let crs = srs.list(&Default::default()).await?.items.len();
            if left == 0 && crs == 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!("{left} service paths and {crs} resources left after deleting {label}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let m = scrape(&args.metrics).await?;
    println!(
        "final: pods_indexed {:?}, pod_index_bytes {:?}, RSS {:?} KiB",
        metric(&m, "podkeeper_pods_indexed", ""),
        metric(&m, "podkeeper_pod_index_bytes", ""),
        rss_kib(args.operator_pid)
    );
    Ok(())
}

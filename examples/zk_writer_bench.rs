//! Throughput and resync cost of the ZooKeeper writer against a real ZooKeeper (no Kubernetes):
//! first sync, no-op full resync, repairing resync, churn, and raw `multi()` for comparison.
//!
//! ```sh
//! PODKEEPER_ZK_PORT=2281 PODKEEPER_ZK_DIR=/tmp/pk-perf-zk scripts/zk up
//! cargo run --release --example zk_writer_bench -- --zk 127.0.0.1:2281 --pods 10000
//! ```
//!
//! Everything is written below `--root` (a fresh child per run) and removed at the end.
//! Every loop is bounded by a count and a deadline, so the program always ends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use podkeeper::crd::ServiceRegistrationSpec;
use podkeeper::model::desired::desired;
use podkeeper::model::plan::{diff, diff_names};
use podkeeper::model::pod::{NodeInfo, PodInfo};
use podkeeper::model::record::{PublishedRecord, ServiceRecord};
use podkeeper::model::registration::Registration;
use podkeeper::model::tracker::Tracker;
use podkeeper::zk::layout::{endpoint_path, endpoints_path};
use podkeeper::zk::writer::{self, Loaded, ServiceState, Synced, WriteOptions};
use rand::RngExt;
use zookeeper_client::{Acls, Client, CreateMode};

#[allow(dead_code)]
#[path = "../benches/common/fleet.rs"]
mod fleet;

/// One `writer::sync` to the full desired set, planned in full (`plan::diff`), the desired
/// records adopted into the cache after a write.
async fn sync_once(
    c: &Client,
    path: &str,
    record: &ServiceRecord,
    desired: &BTreeMap<smol_str::SmolStr, Arc<PublishedRecord>>,
    cache: &mut Option<ServiceState>,
    options: &WriteOptions,
) -> Result<Synced, podkeeper::zk::ZkError> {
    let no_nodes = |_: &ServiceState| Default::default();
    writer::sync_endpoints(c, path, record, cache, options, (desired, None), no_nodes).await
}

/// One sync of a tracker's desired state as the controller runs it: only the endpoints the
/// tracker changed since its last publish are compared with a warm cache.
async fn sync_tracked(
    c: &Client,
    path: &str,
    record: &ServiceRecord,
    tracker: &mut Tracker,
    cache: &mut Option<ServiceState>,
    options: &WriteOptions,
) -> Result<Synced, podkeeper::zk::ZkError> {
    let target = (&tracker.desired().endpoints, tracker.unpublished());
    let no_nodes = |_: &ServiceState| Default::default();
    let r = writer::sync_endpoints(c, path, record, cache, options, target, no_nodes).await;
    match &r {
        Ok(Synced::Applied { .. }) => tracker.published(),
        _ => tracker.unpublished_all(),
    }
    r
}

/// The spec the endpoints are computed with: what a typical registration copies.
const SPEC: &str = r#"
selector: {matchLabels: {app: bench}}
port: http
extraPorts: [metrics]
metadata:
  labels: [version, track]
  static: {protocol: http}
"#;

/// Same, with a 90/10 stable/canary split: a readiness change also moves rounding weights.
const SPEC_GROUPS: &str = r#"
selector: {matchLabels: {app: bench}}
port: http
extraPorts: [metrics]
metadata:
  labels: [version, track]
  static: {protocol: http}
weights:
  groups:
  - {name: stable, selector: {matchLabels: {track: stable}}, share: 90}
  - {name: canary, selector: {matchLabels: {track: canary}}, share: 10}
"#;

struct Args {
    zk: String,
    pods: usize,
    root: String,
    churn_seconds: f64,
    churn_rounds: usize,
    groups: bool,
    /// Resources churning at once in the pipelined churn (0: skip it).
    resources: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        zk: std::env::var("PODKEEPER_ZK_CONNECT").unwrap_or_else(|_| "127.0.0.1:2181".into()),
        pods: 10_000,
        root: "/podkeeper-bench".into(),
        churn_seconds: 5.0,
        churn_rounds: 2000,
        groups: false,
        resources: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--zk" => a.zk = val()?,
            "--pods" => a.pods = val()?.parse()?,
            "--root" => a.root = val()?,
            "--churn-seconds" => a.churn_seconds = val()?.parse()?,
            "--churn-rounds" => a.churn_rounds = val()?.parse()?,
            "--groups" => a.groups = true,
            "--resources" => a.resources = val()?.parse()?,
            "-h" | "--help" => {
                println!(
                    "zk_writer_bench [--zk host:port] [--pods N] [--root /znode] \
                     [--churn-seconds S] [--churn-rounds R] [--groups] [--resources R]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// A pod as the operator's index holds it: the labels a Deployment gives, two named ports.
fn pod(i: usize) -> PodInfo {
    let track = if i % 10 == 9 { "canary" } else { "stable" };
    PodInfo {
        name: format!("bench-{track}-7d9c6f5b8-{i:05}").into(),
        labels: [
            ("app", "bench"),
            ("track", track),
            ("version", "1.4.2"),
            ("pod-template-hash", "7d9c6f5b8"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        annotations: Default::default(),
        ip: Some(format!("10.244.{}.{}", i / 250, i % 250 + 1).into()),
        ports: [("http".into(), 8080), ("metrics".into(), 9100)].into(),
        node: Some(format!("kwok-node-{}", i % 3).into()),
        ready: true,
        registered: None,
        host_network: false,
        host_ports: Box::new([]),
        terminating_since_ms: None,
        ready_at_termination: false,
        ready_since_ms: 0,
    }
}

fn nodes() -> HashMap<String, NodeInfo> {
    (0..3)
        .map(|i| {
            (
                format!("kwok-node-{i}"),
                NodeInfo {
                    zone: Some(format!("zone-{}", ["a", "b", "c"][i]).into()),
                    ready: true,
                    ..Default::default()
                },
            )
        })
        .collect()
}

/// The service record, built from JSON so fields added later with defaults need no change here.
fn service_record() -> ServiceRecord {
    serde_json::from_value(serde_json::json!({
        "serviceName": "bench",
        "policy": "WeightedRoundRobin",
        "owner": {"clusterId": "bench", "namespace": "bench", "name": "bench", "uid": "bench-uid"},
        "generation": 1
    }))
    .expect("service record")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "n={} p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.9),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN)
    )
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One line per figure, `RESULT <name> <value> <unit> (<detail>)`, for docs/PERFORMANCE.md.
fn result(name: &str, value: f64, unit: &str, detail: &str) {
    println!(
        "RESULT {name} {value:.3} {unit} ({detail}; load {})",
        load_avg()
    );
}

async fn count_children(c: &Client, path: &str) -> anyhow::Result<usize> {
    Ok(c.list_children(&endpoints_path(path)).await?.len())
}

fn expect_applied(r: Synced) -> anyhow::Result<(usize, usize, usize, usize)> {
    match r {
        Synced::Applied { plan, applied, .. } => {
            let (c, u, d) = plan.counts();
            Ok((c, u, d, applied.transactions))
        }
        other => bail!("unexpected sync result {other:?}"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let n = args.pods;
    let spec_text = if args.groups { SPEC_GROUPS } else { SPEC };
    let spec: ServiceRegistrationSpec = serde_yaml::from_str(spec_text)?;
    let reg = Registration::compile("bench", &spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    let nodes = nodes();
    let mut pods: Vec<PodInfo> = (0..n).map(pod).collect();
    // One copy of equal label sets, as the operator's index keeps them.
    fleet::share_labels(&mut pods);
    let record = service_record();
    let opts = WriteOptions::default();

    let connect = |zk: String| async move {
        Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .connect(&zk)
            .await
            .with_context(|| format!("connecting to ZooKeeper at {zk}"))
    };
    let c = connect(args.zk.clone()).await?;
    let observer = connect(args.zk.clone()).await?;
    let run_id = format!(
        "run-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let base = format!("{}/{run_id}", args.root.trim_end_matches('/'));
    let path = format!("{base}/bench");
    println!(
        "# zk_writer_bench: {n} endpoints at {path} on {} (groups: {}), load {}",
        args.zk,
        args.groups,
        load_avg()
    );

    // --- pure CPU: what every reconcile of this resource computes before it writes ----------
    let t = Instant::now();
    let tracker0 = Tracker::build(&reg, &pods, &nodes, 0);
    let desired_cpu = t.elapsed();
    // The same records (same `Arc`s) as the tracker's, as in the operator.
    let want = tracker0.desired().endpoints.clone();
    let bytes: usize = want
        .values()
        .map(|r| serde_json::to_vec(&**r).expect("json").len())
        .sum::<usize>()
        / want.len().max(1);
    let current: BTreeMap<_, _> = want
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                podkeeper::model::plan::Current {
                    record: Some(r.clone()),
                    version: 0,
                },
            )
        })
        .collect();
    // Each part separately: what a reconcile of one pod event costs before any I/O.
    let (mut t_desired, mut t_clone, mut t_diff, mut cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(5);
    for _ in 0..50 {
        let t0 = Instant::now();
        let w = desired(&reg, &pods, &nodes, 0);
        let t1 = Instant::now();
        let cloned = w.endpoints.clone();
        let t2 = Instant::now();
        let plan = diff(&cloned, &current);
        let t3 = Instant::now();
        std::hint::black_box(&plan);
        t_desired.push(ms(t1 - t0));
        t_clone.push(ms(t2 - t1));
        t_diff.push(ms(t3 - t2));
        cpu.push(ms(t3 - t0));
        if Instant::now() > deadline {
            break;
        }
    }
    // What the operator's incremental path costs for a one-pod change: the tracker updates
    // that pod (and re-solves its group, if any), then a diff of the names it changed.
    let mut t_reuse = Vec::new();
    let mut tracker = tracker0.clone();
    tracker.published();
    let mut flipped = pods[0].clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    for _ in 0..50 {
        flipped.ready = !flipped.ready;
        let t0 = Instant::now();
        tracker.update(&reg, [(&*flipped.name, Some(&flipped))], &nodes, 0);
        let changed = tracker.unpublished().expect("published above");
        let plan = diff_names(&tracker.desired().endpoints, &current, changed);
        std::hint::black_box(&plan);
        t_reuse.push(ms(t0.elapsed()));
        if Instant::now() > deadline {
            break;
        }
    }
    let mut reuse_sorted = t_reuse.clone();
    reuse_sorted.sort_by(f64::total_cmp);
    println!(
        "per reconcile at {n} pods, one pod changed, incremental (Tracker::update + diff): {}",
        summary(t_reuse)
    );
    result(
        "reconcile_cpu_incremental_p50",
        percentile(&reuse_sorted, 0.5),
        "ms",
        &format!("Tracker::update+diff over {n} pods, one changed"),
    );
    println!(
        "per reconcile at {n} pods, nothing changed (first desired() {:.2}ms; record {bytes} B JSON):\n  desired(): {}\n  endpoints.clone(): {}\n  diff(): {}\n  total: {}",
        ms(desired_cpu),
        summary(t_desired),
        summary(t_clone),
        summary(t_diff),
        summary(cpu.clone())
    );
    cpu.sort_by(f64::total_cmp);
    result(
        "reconcile_cpu_p50",
        percentile(&cpu, 0.5),
        "ms",
        &format!("desired+clone+diff over {n} pods, nothing changed"),
    );

    // --- 1. first sync: claim + create every endpoint --------------------------------------
    let mut cache: Option<ServiceState> = None;
    let t = Instant::now();
    let r = sync_once(&c, &path, &record, &want, &mut cache, &opts).await?;
    let first = t.elapsed();
    let (cr, _, _, txns) = expect_applied(r)?;
    let seen = count_children(&observer, &path).await?;
    if seen != n || cr != n {
        bail!("first sync: created {cr}, observer sees {seen}, want {n}");
    }
    println!(
        "first sync: {n} creates in {txns} txns, {:.0} ms ({:.0} endpoints/s)",
        ms(first),
        n as f64 / first.as_secs_f64()
    );
    result(
        "first_sync",
        ms(first),
        "ms",
        &format!("{n} creates, {txns} txns"),
    );

    // --- 2. full resync, nothing changed: load + diff ----------------------------------------
    let mut resync = Vec::new();
    let mut loads = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let loaded = writer::load(&c, &path, &record.owner, &Default::default()).await?;
        loads.push(ms(t.elapsed()));
        let Loaded::Owned(state) = loaded else {
            bail!("bench path is not owned after the first sync")
        };
        if state.endpoints.len() != n {
            bail!("load returned {} endpoints", state.endpoints.len());
        }
        let mut cache = None;
        let t = Instant::now();
        let r = sync_once(&c, &path, &record, &want, &mut cache, &opts).await?;
        let d = t.elapsed();
        let (cr, up, de, _) = expect_applied(r)?;
        if cr + up + de != 0 {
            bail!("no-op resync wrote {cr}/{up}/{de}");
        }
        resync.push(ms(d));
    }
    println!(
        "full resync, empty cache, nothing changed: {}; load alone: {}",
        summary(resync.clone()),
        summary(loads.clone())
    );
    resync.sort_by(f64::total_cmp);
    result(
        "resync_noop_p50",
        percentile(&resync, 0.5),
        "ms",
        &format!("load {n} + diff, 3 runs"),
    );

    // --- 3. full resync repairing 1% tampered znodes ----------------------------------------
    let tampered = (n / 100).max(3);
    let mut rng = rand::rng();
    let names: Vec<smol_str::SmolStr> = want.keys().cloned().collect();
    let mut picked: Vec<usize> = Vec::new();
    while picked.len() < tampered {
        let i = rng.random_range(0..n);
        if !picked.contains(&i) {
            picked.push(i);
        }
    }
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let mut tamper = observer.new_multi_writer();
    for (k, &i) in picked.iter().enumerate() {
        let p = endpoint_path(&path, &names[i]);
        match k % 3 {
            0 => tamper.add_delete(&p, None)?,
            1 => tamper.add_set_data(&p, b"{\"garbage\":true}", None)?,
            _ => {
                let mut r: PublishedRecord = (*want[&names[i]]).clone();
                r.weight += 7;
                tamper.add_set_data(&p, &serde_json::to_vec(&r)?, None)?
            }
        }
    }
    for k in 0..tampered / 3 {
        tamper.add_create(
            &endpoint_path(&path, &format!("stray-{k}")),
            b"{}",
            &persistent,
        )?;
    }
    tamper
        .commit()
        .await
        .map_err(|e| anyhow::anyhow!("tampering: {e:?}"))?;
    let mut cache: Option<ServiceState> = None;
    let t = Instant::now();
    let r = sync_once(&c, &path, &record, &want, &mut cache, &opts).await?;
    let repair = t.elapsed();
    let (cr, up, de, txns) = expect_applied(r)?;
    let after = writer::load(&observer, &path, &record.owner, &Default::default()).await?;
    let Loaded::Owned(after) = after else {
        bail!("not owned after repair")
    };
    let repaired = after.endpoints.len() == n
        && after
            .endpoints
            .iter()
            .all(|(k, c)| c.record.as_ref() == want.get(k));
    if !repaired {
        bail!("repair left ZooKeeper different from desired");
    }
    println!(
        "full resync repairing {} tampered + {} stray znodes: {:.0} ms ({cr} creates, {up} updates, {de} deletes, {txns} txns)",
        tampered,
        tampered / 3,
        ms(repair)
    );
    result(
        "resync_repair",
        ms(repair),
        "ms",
        &format!(
            "{n} endpoints, {tampered} tampered + {} stray",
            tampered / 3
        ),
    );

    // --- 4. churn against the raw multi() ceiling, interleaved ---------------------------------
    // k readiness flips per sync (warm cache, incremental desired and diff, as the controller
    // runs it), in blocks alternating with blocks of bare multi()s of the same shape, so both
    // see the same disk and the same load.
    // The raw nodes' paths are as long as the endpoints' (`{base}/bench/endpoints/<pod>`):
    // ZooKeeper logs every path of a transaction, so shorter ones would make a faster ceiling.
    let raw_base = format!("{base}/multi/endpoints");
    let mut tracker = tracker0.clone();
    let mut bench = Churn {
        c: &c,
        path: &path,
        record: &record,
        reg: &reg,
        nodes: &nodes,
        opts: &opts,
        payload: vec![b'x'; bytes],
        raw_base: &raw_base,
        raw_names: pods.iter().map(|p| p.name.to_string()).collect(),
        raw_present: vec![true; n],
    };
    bench.populate_raw(n).await?;
    for k in [1usize, 10, 100] {
        let (ours, raw, flips) = bench
            .interleaved(k, &mut pods, &mut tracker, &mut cache, &args)
            .await?;
        let ratio = ours.rate() / raw.rate() * 100.0;
        let of_flips = ours.rate() / flips.rate() * 100.0;
        println!(
            "churn k={k}: raw multi() flipping k random nodes of {n} (deletes and creates mixed, \
             as the operator's): {:.0} znode changes/s ({}): ours {of_flips:.0} % of it",
            flips.rate(),
            summary(flips.lat.clone()),
        );
        result(
            &format!("raw_flips_k{k}_writes_per_s"),
            flips.rate(),
            "1/s",
            "bare multi(): version check + k random nodes of {n} deleted if present, else created",
        );
        result(
            &format!("churn_k{k}_of_raw_flips"),
            of_flips,
            "%",
            "target >= 80",
        );
        println!(
            "churn k={k}: {} syncs, {:.0} znode changes/s (update+diff CPU {}; sync {}); \
             raw multi() of the same shape: {:.0} znode changes/s ({}): {ratio:.0} %",
            ours.lat.len(),
            ours.rate(),
            summary(ours.cpu.clone()),
            summary(ours.lat.clone()),
            raw.rate(),
            summary(raw.lat.clone()),
        );
        result(
            &format!("churn_k{k}_changes_per_s"),
            ours.rate(),
            "1/s",
            &format!("{} syncs, {} znode changes", ours.lat.len(), ours.changes),
        );
        result(
            &format!("raw_multi_k{k}_writes_per_s"),
            raw.rate(),
            "1/s",
            "bare multi(): version check + k creates or deletes beside {n} nodes, interleaved",
        );
        result(&format!("churn_k{k}_of_raw"), ratio, "%", "target >= 80");
    }

    // --- 6. the same churn over several resources at once, fenced, as the operator runs it ----
    if args.resources > 0 {
        pipelined_churn(&c, &base, &reg, &nodes, n, args.resources, &args).await?;
    }

    // --- cleanup -------------------------------------------------------------------------------
    let state = match writer::load(&c, &path, &record.owner, &Default::default()).await? {
        Loaded::Owned(s) => s,
        other => bail!("cleanup: unexpected {other:?}"),
    };
    writer::remove_all(&c, &path, &state, None).await?;
    bench.remove_raw().await?;
    c.delete(&base, None).await?;
    println!("# removed {base}");
    Ok(())
}

/// Time spent and znodes changed in one side of the interleaved churn.
#[derive(Default)]
struct Side {
    lat: Vec<f64>,
    cpu: Vec<f64>,
    changes: usize,
    secs: f64,
}

impl Side {
    fn rate(&self) -> f64 {
        self.changes as f64 / self.secs.max(1e-9)
    }
}

/// The single-resource churn and its raw ceiling.
struct Churn<'a> {
    c: &'a Client,
    path: &'a str,
    record: &'a ServiceRecord,
    reg: &'a Registration,
    nodes: &'a HashMap<String, NodeInfo>,
    opts: &'a WriteOptions,
    payload: Vec<u8>,
    raw_base: &'a str,
    /// The raw nodes' names: the pods' names.
    raw_names: Vec<String>,
    /// Which of the raw nodes `n{i}` exist, for the flipping raw transactions.
    raw_present: Vec<bool>,
}

/// Syncs (and raw transactions) per block of the interleaving.
const BLOCK: usize = 25;

impl Churn<'_> {
    /// A folder with `n` children, as the endpoints folder has.
    async fn populate_raw(&mut self, n: usize) -> anyhow::Result<()> {
        let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        self.c.mkdir(self.raw_base, &persistent).await?;
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let mut w = self.c.new_multi_writer();
            for i in chunk {
                w.add_create(&self.raw_path(*i), &self.payload, &persistent)?;
            }
            w.commit()
                .await
                .map_err(|e| anyhow::anyhow!("raw setup: {e:?}"))?;
        }
        Ok(())
    }

    async fn remove_raw(&self) -> anyhow::Result<()> {
        for name in self.c.get_children(self.raw_base).await?.0 {
            self.c
                .delete(&format!("{}/{name}", self.raw_base), None)
                .await?;
        }
        self.c.delete(self.raw_base, None).await?;
        let folder = self.raw_base.trim_end_matches("/endpoints");
        self.c.delete(folder, None).await?;
        Ok(())
    }

    /// Raw node `i`: named as pod `i`.
    fn raw_path(&self, i: usize) -> String {
        format!("{}/{}", self.raw_base, self.raw_names[i])
    }

    /// The `j`th extra raw node: a name as long as the pods'.
    fn extra_path(&self, j: usize) -> String {
        let width = self.raw_names[0].len().saturating_sub(6);
        format!("{}/extra-{j:0>width$}", self.raw_base)
    }

    /// Blocks of [`BLOCK`] syncs of `k` flips, each followed by [`BLOCK`] raw transactions,
    /// until `--churn-rounds` syncs or `--churn-seconds` of ours.
    async fn interleaved(
        &mut self,
        k: usize,
        pods: &mut [PodInfo],
        tracker: &mut Tracker,
        cache: &mut Option<ServiceState>,
        args: &Args,
    ) -> anyhow::Result<(Side, Side, Side)> {
        let (mut ours, mut raw, mut flips) = (Side::default(), Side::default(), Side::default());
        let mut rng = rand::rng();
        let mut created = false;
        while ours.lat.len() < args.churn_rounds && ours.secs < args.churn_seconds {
            let started = Instant::now();
            for _ in 0..BLOCK {
                let mut changed = HashSet::new();
                for _ in 0..k {
                    let i = rng.random_range(0..pods.len());
                    pods[i].ready = !pods[i].ready;
                    changed.insert(i);
                }
                let t = Instant::now();
                let dirty = changed.iter().map(|&i| (&*pods[i].name, Some(&pods[i])));
                tracker.update(self.reg, dirty, self.nodes, 0);
                let t_sync = Instant::now();
                let r =
                    sync_tracked(self.c, self.path, self.record, tracker, cache, self.opts).await?;
                let (cr, up, de, _) = expect_applied(r)?;
                ours.changes += cr + up + de;
                ours.cpu.push(ms(t_sync - t));
                ours.lat.push(ms(t_sync.elapsed()));
            }
            ours.secs += started.elapsed().as_secs_f64();
            let started = Instant::now();
            for _ in 0..BLOCK {
                let t = Instant::now();
                self.raw_txn(k, !created).await?;
                created = !created;
                raw.lat.push(ms(t.elapsed()));
                raw.changes += k;
            }
            raw.secs += started.elapsed().as_secs_f64();
            let started = Instant::now();
            for _ in 0..BLOCK {
                let t = Instant::now();
                self.raw_flips(k, &mut rng).await?;
                flips.lat.push(ms(t.elapsed()));
                flips.changes += k;
            }
            flips.secs += started.elapsed().as_secs_f64();
        }
        if created {
            self.raw_txn(k, false).await?;
        }
        Ok((ours, raw, flips))
    }

    /// The service record's version check and `k` distinct random raw nodes flipped: deleted
    /// when present, created (same data size) when not, as readiness flips do to endpoints.
    async fn raw_flips(&mut self, k: usize, rng: &mut impl rand::Rng) -> anyhow::Result<()> {
        let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        let n = self.raw_present.len();
        let mut picked = HashSet::new();
        while picked.len() < k.min(n) {
            picked.insert(rng.random_range(0..n));
        }
        let mut w = self.c.new_multi_writer();
        w.add_check_version(self.path, 0)?;
        for &i in &picked {
            let p = self.raw_path(i);
            if self.raw_present[i] {
                w.add_delete(&p, None)?;
            } else {
                w.add_create(&p, &self.payload, &persistent)?;
            }
        }
        w.commit()
            .await
            .map_err(|e| anyhow::anyhow!("raw flips: {e:?}"))?;
        for i in picked {
            self.raw_present[i] = !self.raw_present[i];
        }
        Ok(())
    }

    /// The service record's version check and `k` creates (300-byte data) or deletes.
    async fn raw_txn(&self, k: usize, create: bool) -> anyhow::Result<()> {
        let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        let mut w = self.c.new_multi_writer();
        w.add_check_version(self.path, 0)?;
        for j in 0..k {
            let p = self.extra_path(j);
            if create {
                w.add_create(&p, &self.payload, &persistent)?;
            } else {
                w.add_delete(&p, None)?;
            }
        }
        w.commit()
            .await
            .map_err(|e| anyhow::anyhow!("raw multi: {e:?}"))?;
        Ok(())
    }
}

/// One resource of the pipelined churn: its pods, tracker and writer cache.
struct Resource {
    path: String,
    pods: Vec<PodInfo>,
    tracker: Tracker,
    cache: Option<ServiceState>,
}

/// `resources` resources of `n / resources` pods each, every write fenced on an epoch znode
/// (as with leader election). Each resource syncs one round at a time (the operator never runs
/// two reconciles of one resource at once); the resources run concurrently on one session, so
/// their transactions are pipelined, as the operator's concurrent reconciles are. Compared
/// with the raw `multi()` ceiling of the same shape, sequential and with `resources` in flight.
async fn pipelined_churn(
    c: &Client,
    base: &str,
    reg: &Registration,
    nodes: &HashMap<String, NodeInfo>,
    n: usize,
    resources: usize,
    args: &Args,
) -> anyhow::Result<()> {
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let epoch = format!("{base}/epoch");
    c.create(&epoch, b"bench", &persistent).await?;
    let opts = WriteOptions {
        fence: Some(writer::Fence {
            path: epoch.clone(),
            version: 0,
        }),
        ..Default::default()
    };
    let record = service_record();
    let per = n / resources;
    let mut rs = Vec::new();
    for r in 0..resources {
        let pods: Vec<PodInfo> = (r * per..(r + 1) * per).map(pod).collect();
        let mut tracker = Tracker::build(reg, &pods, nodes, 0);
        let path = format!("{base}/pipelined-{r}");
        let mut cache = None;
        sync_tracked(c, &path, &record, &mut tracker, &mut cache, &opts).await?;
        rs.push(Resource {
            path,
            pods,
            tracker,
            cache,
        });
    }
    for k in [1usize, 10, 100] {
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(args.churn_seconds);
        let rounds = args.churn_rounds;
        let work = rs.iter_mut().map(|res| {
            let (record, opts) = (&record, &opts);
            async move {
                let mut rng = rand::rng();
                let (mut syncs, mut changes) = (0usize, 0usize);
                while syncs < rounds && Instant::now() < deadline {
                    let mut changed = HashSet::new();
                    for _ in 0..k.min(res.pods.len()) {
                        let i = rng.random_range(0..res.pods.len());
                        res.pods[i].ready = !res.pods[i].ready;
                        changed.insert(i);
                    }
                    let pods = &res.pods;
                    let dirty = changed.iter().map(|&i| (&*pods[i].name, Some(&pods[i])));
                    res.tracker.update(reg, dirty, nodes, 0);
                    let (tracker, cache) = (&mut res.tracker, &mut res.cache);
                    let r = sync_tracked(c, &res.path, record, tracker, cache, opts).await?;
                    let (cr, up, de, _) = expect_applied(r)?;
                    changes += cr + up + de;
                    syncs += 1;
                }
                anyhow::Ok((syncs, changes))
            }
        });
        let done = futures::future::try_join_all(work).await?;
        let secs = started.elapsed().as_secs_f64();
        let (syncs, changes) = done
            .iter()
            .fold((0, 0), |(s, c), (s1, c1)| (s + s1, c + c1));
        let raw_seq = raw_rate(c, base, &epoch, k, 1, args).await?;
        let raw_par = raw_rate(c, base, &epoch, k, resources, args).await?;
        let rate = changes as f64 / secs;
        println!(
            "pipelined churn k={k}, {resources} resources x {per}: {syncs} syncs in {secs:.2}s, \
             {rate:.0} znode changes/s; raw multi() ceiling of the same shape: {raw_seq:.0}/s \
             sequential, {raw_par:.0}/s with {resources} in flight"
        );
        result(
            &format!("pipelined_churn_k{k}_changes_per_s"),
            rate,
            "1/s",
            &format!("{resources} resources, fenced, {syncs} syncs"),
        );
        result(
            &format!("pipelined_churn_k{k}_of_raw_sequential"),
            rate / raw_seq * 100.0,
            "%",
            "target >= 80",
        );
        result(
            &format!("pipelined_churn_k{k}_of_raw_pipelined"),
            rate / raw_par * 100.0,
            "%",
            &format!("raw multi() with {resources} in flight"),
        );
    }
    for res in &rs {
        if let Loaded::Owned(state) = writer::load(c, &res.path, &record.owner, &opts).await? {
            writer::remove_all(c, &res.path, &state, opts.fence.as_ref()).await?;
        }
    }
    c.delete(&epoch, None).await?;
    Ok(())
}

/// Znode writes/s of raw `multi()`s (epoch check, service check, k set_data of ~300 B) with
/// `in_flight` loops at once, each one transaction at a time, for `--churn-seconds`.
async fn raw_rate(
    c: &Client,
    base: &str,
    epoch: &str,
    k: usize,
    in_flight: usize,
    args: &Args,
) -> anyhow::Result<f64> {
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let dir = format!("{base}/raw-pipelined");
    c.create(&dir, b"", &persistent).await?;
    let payload = vec![b'x'; 300];
    for l in 0..in_flight {
        let mut w = c.new_multi_writer();
        for i in 0..k {
            w.add_create(&format!("{dir}/l{l}-n{i}"), &payload, &persistent)?;
        }
        w.commit()
            .await
            .map_err(|e| anyhow::anyhow!("raw setup: {e:?}"))?;
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.churn_seconds);
    let loops = (0..in_flight).map(|l| {
        let (dir, payload) = (&dir, &payload);
        async move {
            let mut writes = 0usize;
            for _ in 0..args.churn_rounds {
                if Instant::now() >= deadline {
                    break;
                }
                let mut w = c.new_multi_writer();
                w.add_check_version(epoch, 0)?;
                w.add_check_version(dir, 0)?;
                for i in 0..k {
                    w.add_set_data(&format!("{dir}/l{l}-n{i}"), payload, None)?;
                }
                w.commit()
                    .await
                    .map_err(|e| anyhow::anyhow!("raw multi: {e:?}"))?;
                writes += k;
            }
            anyhow::Ok(writes)
        }
    });
    let writes: usize = futures::future::try_join_all(loops)
        .await?
        .into_iter()
        .sum();
    let rate = writes as f64 / started.elapsed().as_secs_f64();
    for l in 0..in_flight {
        for i in 0..k {
            c.delete(&format!("{dir}/l{l}-n{i}"), None).await?;
        }
    }
    c.delete(&dir, None).await?;
    Ok(rate)
}

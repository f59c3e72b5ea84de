//! Fault suite: real operator processes, a real API server and real ZooKeeper servers, with
//! faults injected during pod churn. Each scenario checks that the registry converges to exactly
//! the desired state and appends a row to the report table (PODKEEPER_FAULT_REPORT).
//! Every fault window is checked to have overlapped the churn: the changes made inside it are
//! counted, and a scenario with none fails instead of trusting a sleep.
//! Run through `scripts/test` or `scripts/faults` (they start the control plane).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{self, Operator, TestNs, install_crd, kubectl, wait_until};
use common::zk::{Ensemble, SecureOptions, ZkServer, sessions_with_timeout};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use podkeeper::model::record::EndpointStatus;

/// Scenarios share the API server and send signals: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PODS: usize = 12;

/// Flips pod readiness through the kwok annotation contract until stopped, and remembers when
/// each flip was accepted by the API server.
struct Churn {
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Churn {
    fn start(pods: Api<Pod>, names: Vec<String>, every: Duration) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            let mut seed = 0x9e3779b97f4a7c15u64;
            let mut state: BTreeMap<String, bool> =
                names.iter().map(|n| (n.clone(), true)).collect();
            // Bounded: at most 2,000 flips.
            for _ in 0..2000 {
                if s.load(Ordering::Acquire) {
                    break;
                }
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let name = &names[(seed % names.len() as u64) as usize];
                let ready = !state[name];
                let v = if ready { "Ready" } else { "NotReady" };
                let patch = serde_json::json!({"metadata": {"annotations": {"podkeeper.io/test-state": v}}});
                if pods
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .is_ok()
                {
                    state.insert(name.clone(), ready);
                    a.lock().unwrap().push(Instant::now());
                }
                tokio::time::sleep(every).await;
            }
        });
        Churn {
            stop,
            accepted,
            task,
        }
    }

    /// Flips accepted at or after `since` (and before `until`, if given).
    fn count(&self, since: Instant, until: Option<Instant>) -> usize {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|&&t| t >= since && until.is_none_or(|u| t < u))
            .count()
    }

    /// Waits until at least `n` flips were accepted since `since`: the churn really runs in
    /// the window, however slow the machine.
    async fn wait_for(&self, n: usize, since: Instant, what: &str) {
        wait_until(Duration::from_secs(60), what, || async move {
            self.count(since, None) >= n
        })
        .await;
    }

    /// Stops flipping; returns the flips accepted inside `[since, until)`, failing when there
    /// were none: a fault that no change overlapped tests nothing.
    async fn finish(self, scenario: &str, since: Instant, until: Instant) -> usize {
        self.stop.store(true, Ordering::Release);
        let n = self.count(since, Some(until));
        let _ = self.task.await;
        assert!(
            n > 0,
            "{scenario}: no pod change was made inside the fault window"
        );
        n
    }
}

/// What the scenario measured.
struct Row {
    scenario: String,
    changes: usize,
    lost: usize,
    stale: usize,
    duplicated: usize,
    converge: Duration,
    failover: Option<Duration>,
}

fn report(row: &Row) {
    let line = format!(
        "| {} | {} | {} | {} | {} | {:.2} s | {} |",
        row.scenario,
        row.changes,
        row.lost,
        row.stale,
        row.duplicated,
        row.converge.as_secs_f64(),
        row.failover
            .map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
    );
    println!("{line}");
    if let Ok(path) = std::env::var("PODKEEPER_FAULT_REPORT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }
}

/// Pods whose readiness the API server reports settled: (ready set, all settled).
async fn desired_ready(pods: &Api<Pod>) -> (BTreeSet<String>, bool) {
    let list = pods.list(&ListParams::default()).await.unwrap();
    let mut ready = BTreeSet::new();
    let mut settled = true;
    for p in list.items {
        let name = p.metadata.name.clone().unwrap();
        let want = p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("podkeeper.io/test-state"))
            .is_none_or(|v| v == "Ready");
        let is = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        settled &= want == is;
        if is
            && p.metadata.deletion_timestamp.is_none()
            && p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some()
        {
            ready.insert(name);
        }
    }
    (ready, settled)
}

/// Waits until ZooKeeper holds exactly the ready pods; returns the row figures.
async fn converge(
    zk_connect: &str,
    path: &str,
    pods: &Api<Pod>,
    since: Instant,
) -> (Duration, usize, usize, usize) {
    let zk = zookeeper_client::Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .connect(zk_connect)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (want, settled) = desired_ready(pods).await;
        let eps = common::registry::read(&zk, path)
            .await
            .map(|(_, e)| e)
            .unwrap_or_default();
        let have: BTreeSet<String> = eps
            .iter()
            .filter(|(_, e)| e.status == EndpointStatus::Up)
            .map(|(k, _)| k.clone())
            .collect();
        let mut hosts: Vec<&str> = eps.values().map(|e| e.host.as_str()).collect();
        hosts.sort_unstable();
        let dup = hosts.windows(2).filter(|w| w[0] == w[1]).count();
        let lost = want.difference(&have).count();
        let stale = have.difference(&want).count();
        if settled && lost == 0 && stale == 0 && dup == 0 {
            return (since.elapsed(), 0, 0, 0);
        }
        if Instant::now() > deadline {
            return (since.elapsed(), lost, stale, dup);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn setup(ns: &TestNs) -> (Api<Pod>, Vec<String>) {
    setup_with(ns, "").await
}

/// The `web` registration with `extra` lines appended to its spec (indented by two).
fn registration(extra: &str) -> String {
    format!(
        "apiVersion: podkeeper.io/v1alpha1\nkind: ServiceRegistration\nmetadata: {{name: web}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  port: http\n  drainSeconds: 0\n{extra}"
    )
}

async fn setup_with(ns: &TestNs, extra: &str) -> (Api<Pod>, Vec<String>) {
    ns.apply(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: {PODS}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: [{{name: app, image: x, ports: [{{name: http, containerPort: 8080}}]}}]\n"
    ));
    ns.apply(&registration(extra));
    let pods: Api<Pod> = Api::namespaced(cluster::client().await, &ns.name);
    let p = pods.clone();
    wait_until(Duration::from_secs(60), "pods ready", || {
        let p = p.clone();
        async move { desired_ready(&p).await.0.len() == PODS }
    })
    .await;
    let names = desired_ready(&pods).await.0.into_iter().collect();
    (pods, names)
}

async fn wait_ready(op: &Operator) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !op.ready() {
        assert!(
            Instant::now() < deadline,
            "operator not ready; log:\n{}",
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn finish(row: Row) {
    report(&row);
    assert_eq!(
        (row.lost, row.stale, row.duplicated),
        (0, 0, 0),
        "{}: registry did not converge",
        row.scenario
    );
}

/// The convergence before any fault is checked like the one after: a scenario that starts from
/// a wrong registry proves nothing.
async fn converged_before_the_fault(zk_connect: &str, path: &str, pods: &Api<Pod>) {
    let (took, lost, stale, duplicated) = converge(zk_connect, path, pods, Instant::now()).await;
    assert_eq!(
        (lost, stale, duplicated),
        (0, 0, 0),
        "the registry at {path} did not converge before the fault (gave up after {took:?}): lost, stale, duplicated"
    );
}

/// The value of an unlabelled metric in a Prometheus text exposition.
fn metric(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// An operator's `/metrics`.
fn metrics_of(op: &Operator) -> String {
    let (code, body) = cluster::http_get(&op.health, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "GET /metrics answered {code}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_leader_killed_during_churn() {
    let _g = SERIAL.lock().await;
    install_crd();
    let mut ens = Ensemble::start();
    let op = Operator::start("op", &ens.connect_string(), &[]);
    wait_ready(&op).await;
    let ns = TestNs::new("zk-leader").await;
    let (pods, names) = setup(&ns).await;
    converged_before_the_fault(&ens.connect_string(), &ns.path("web"), &pods).await;
    let churn = Churn::start(pods.clone(), names, Duration::from_millis(50));
    churn
        .wait_for(10, Instant::now(), "churn under way before the kill")
        .await;
    let killed = tokio::task::block_in_place(|| ens.kill_leader());
    let fault = Instant::now();
    // The fault lasts until the two survivors have elected a new leader.
    tokio::task::block_in_place(|| ens.wait_quorum());
    churn
        .wait_for(20, fault, "changes while the ensemble lost its leader")
        .await;
    let end = Instant::now();
    let changes = churn.finish("ZooKeeper leader killed", fault, end).await;
    let (converge, lost, stale, duplicated) =
        converge(&ens.connect_string(), &ns.path("web"), &pods, end).await;
    tokio::task::block_in_place(|| ens.restart_server(killed));
    finish(Row {
        scenario: "ZooKeeper leader killed (3-server ensemble)".into(),
        changes,
        lost,
        stale,
        duplicated,
        converge,
        failover: None,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_down_during_churn_then_back() {
    let _g = SERIAL.lock().await;
    install_crd();
    let mut zk = ZkServer::start();
    let op = Operator::start(
        "op",
        &zk.connect_string(),
        &[("PODKEEPER_ZK_SESSION_TIMEOUT", "20s")],
    );
    wait_ready(&op).await;
    let ns = TestNs::new("zk-down").await;
    let (pods, names) = setup(&ns).await;
    converged_before_the_fault(&zk.connect_string(), &ns.path("web"), &pods).await;
    tokio::task::block_in_place(|| zk.stop());
    let fault = Instant::now();
    let churn = Churn::start(pods.clone(), names, Duration::from_millis(50));
    churn
        .wait_for(40, fault, "changes while ZooKeeper is down")
        .await;
    wait_until(
        Duration::from_secs(30),
        "ZooKeeperAvailable=False on the status",
        || async {
            ns.kubectl(&[
                "get",
                "svcreg",
                "web",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"ZooKeeperAvailable\")].status}",
            ]) == "False"
        },
    )
    .await;
    assert!(!op.ready(), "/readyz must say not ready without ZooKeeper");
    let end = Instant::now();
    let changes = churn.finish("ZooKeeper down", fault, end).await;
    tokio::task::block_in_place(|| zk.restart());
    let t = Instant::now();
    let (converge, lost, stale, duplicated) =
        converge(&zk.connect_string(), &ns.path("web"), &pods, t).await;
    finish(Row {
        scenario: format!(
            "ZooKeeper down {:.0} s during churn, then back",
            t.duration_since(fault).as_secs_f64()
        ),
        changes,
        lost,
        stale,
        duplicated,
        converge,
        failover: None,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_session_expiry_triggers_a_full_resync() {
    let _g = SERIAL.lock().await;
    install_crd();
    let zk = ZkServer::start();
    let port: u16 = zk
        .connect_string()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let op = Operator::start(
        "op",
        &zk.connect_string(),
        &[("PODKEEPER_ZK_SESSION_TIMEOUT", "2s")],
    );
    wait_ready(&op).await;
    let ns = TestNs::new("expiry").await;
    let (pods, _) = setup(&ns).await;
    let path = ns.path("web");
    converged_before_the_fault(&zk.connect_string(), &path, &pods).await;
    let raw = zookeeper_client::Client::connect(&zk.connect_string())
        .await
        .unwrap();
    // The operator is the only client with a 2 s session: follow its session id, not a count of
    // connections (another client's connection closing would lower a count too).
    let operator_sessions = sessions_with_timeout(port, 2000).expect("cons answers");
    assert_eq!(
        operator_sessions.len(),
        1,
        "one operator session before the fault: {operator_sessions:?}"
    );
    let operator_session = operator_sessions[0].clone();
    // Freeze the operator past its session timeout: the server expires the session and closes
    // its connection. Meanwhile someone tampers with the registry; only a full resync can notice.
    op.signal("STOP");
    let victims: Vec<String> = raw
        .list_children(&format!("{path}/endpoints"))
        .await
        .unwrap()
        .into_iter()
        .take(1)
        .collect();
    let mut changes = 0;
    for victim in &victims {
        raw.delete(&format!("{path}/endpoints/{victim}"), None)
            .await
            .unwrap();
        changes += 1;
    }
    let expired = &operator_session;
    wait_until(
        Duration::from_secs(30),
        "the frozen operator's session expired",
        || async move { sessions_with_timeout(port, 2000).is_some_and(|s| !s.contains(expired)) },
    )
    .await;
    let t = Instant::now();
    op.signal("CONT");
    let (converge, lost, stale, duplicated) = converge(&zk.connect_string(), &path, &pods, t).await;
    let metrics = metrics_of(&op);
    // At least two: on a loaded machine the new 2 s session may expire as well.
    let sessions = metric(&metrics, "podkeeper_zookeeper_sessions_total");
    assert!(
        sessions.is_some_and(|n| n >= 2.0),
        "a second session was built (sessions: {sessions:?}):\n{}",
        op.log_tail()
    );
    finish(Row {
        scenario: "forced session expiry (operator frozen past its 2 s timeout)".into(),
        changes,
        lost,
        stale,
        duplicated,
        converge,
        failover: None,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_during_heavy_churn_then_restarted() {
    let _g = SERIAL.lock().await;
    install_crd();
    let zk = ZkServer::start();
    let op = Operator::start("op", &zk.connect_string(), &[]);
    wait_ready(&op).await;
    let ns = TestNs::new("kill9").await;
    let (pods, names) = setup(&ns).await;
    converged_before_the_fault(&zk.connect_string(), &ns.path("web"), &pods).await;
    let churn = Churn::start(pods.clone(), names, Duration::from_millis(20));
    churn
        .wait_for(20, Instant::now(), "churn under way before the kill")
        .await;
    op.signal("KILL");
    let fault = Instant::now();
    drop(op);
    churn
        .wait_for(20, fault, "changes while no operator runs")
        .await;
    let op = Operator::start("op2", &zk.connect_string(), &[]);
    let restarted = Instant::now();
    churn
        .wait_for(20, restarted, "changes while the new operator starts")
        .await;
    let end = Instant::now();
    let changes = churn.finish("operator kill -9", fault, end).await;
    wait_ready(&op).await;
    let t = Instant::now();
    let (converge, lost, stale, duplicated) =
        converge(&zk.connect_string(), &ns.path("web"), &pods, t).await;
    finish(Row {
        scenario: "operator kill -9 during churn, restarted".into(),
        changes,
        lost,
        stale,
        duplicated,
        converge,
        failover: None,
    });
}

/// The Lease of an election scenario, in namespace default: deleted first, so the scenario
/// starts with no holder.
struct TestLease {
    name: &'static str,
    duration: &'static str,
}

impl TestLease {
    fn fresh(name: &'static str, duration: &'static str) -> TestLease {
        let delete = [
            "-n",
            "default",
            "delete",
            "lease",
            name,
            "--ignore-not-found",
        ];
        let _ = kubectl(&delete, None);
        TestLease { name, duration }
    }

    /// The operators' settings: leader election on this Lease.
    fn env(&self) -> [(&'static str, &'static str); 4] {
        [
            ("PODKEEPER_LEADER_ELECT", "true"),
            ("PODKEEPER_LEASE_DURATION", self.duration),
            ("PODKEEPER_LEASE_NAMESPACE", "default"),
            ("PODKEEPER_LEASE_NAME", self.name),
        ]
    }

    /// Who holds it now (empty: nobody).
    fn holder(&self) -> String {
        let get = ["-n", "default", "get", "lease", self.name];
        kubectl(
            &[&get[..], &["-o", "jsonpath={.spec.holderIdentity}"]].concat(),
            None,
        )
        .1
    }
}

/// The epoch node the scenarios' operators fence their writes with (cluster id `fault`).
const EPOCH: &str = "/podkeeper/.leader-epoch-fault";

/// How many terms have begun: the epoch node's version.
async fn epoch_version(zk: &zookeeper_client::Client) -> i32 {
    zk.get_data(EPOCH).await.unwrap().1.version
}

/// Two replicas on `lease`: `replica-a` leading, then `replica-b` ready as its standby.
async fn leader_and_standby(zk: &ZkServer, lease: &TestLease) -> (Operator, Operator) {
    let a = Operator::start("replica-a", &zk.connect_string(), &lease.env());
    wait_ready(&a).await;
    wait_until(Duration::from_secs(30), "replica-a leads", || async {
        lease.holder() == "replica-a"
    })
    .await;
    let b = Operator::start("replica-b", &zk.connect_string(), &lease.env());
    wait_ready(&b).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_is_fenced_and_steps_down() {
    let _g = SERIAL.lock().await;
    install_crd();
    let zk = ZkServer::start();
    let lease = TestLease::fresh("podkeeper-fault", "3s");
    let leader_of = || lease.holder();
    let (a, _b) = leader_and_standby(&zk, &lease).await;
    let ns = TestNs::new("fence").await;
    let (pods, names) = setup(&ns).await;
    let path = ns.path("web");
    converged_before_the_fault(&zk.connect_string(), &path, &pods).await;

    let raw = cluster::connect_zk(&zk.connect_string()).await;
    let epoch_before = epoch_version(&raw).await;
    let written_by_a = metric(&metrics_of(&a), "podkeeper_znodes_written_total");
    a.signal("STOP");
    let paused = Instant::now();
    let churn = Churn::start(pods.clone(), names, Duration::from_millis(100));
    wait_until(Duration::from_secs(30), "replica-b takes over", || async {
        leader_of() == "replica-b"
    })
    .await;
    wait_until(
        Duration::from_secs(30),
        "replica-b bumps the epoch",
        || async { epoch_version(&raw).await > epoch_before },
    )
    .await;
    let failover = paused.elapsed();
    churn
        .wait_for(5, paused, "changes while replica-a is paused")
        .await;
    a.signal("CONT");
    let resumed = Instant::now();
    // Keep changing pods after the old leader wakes, so it has something it would write.
    churn
        .wait_for(5, resumed, "changes after replica-a resumed")
        .await;
    let changes = churn.finish("leader paused", paused, Instant::now()).await;
    let t = Instant::now();
    let (converge, lost, stale, duplicated) = converge(&zk.connect_string(), &path, &pods, t).await;
    // Stepping down shows in state: the Lease stays with replica-b, and replica-a, whose writes
    // the epoch fences, has written no znode since it was paused.
    wait_until(
        Duration::from_secs(30),
        "replica-a answers /metrics again",
        || async { cluster::http_get(&a.health, "/metrics").is_some() },
    )
    .await;
    assert_eq!(
        leader_of(),
        "replica-b",
        "the old leader took the Lease back"
    );
    let after = metrics_of(&a);
    assert_eq!(
        metric(&after, "podkeeper_znodes_written_total"),
        written_by_a,
        "replica-a wrote to ZooKeeper after it lost the Lease; its metrics:\n{after}"
    );
    finish(Row {
        scenario: "leader SIGSTOPped, standby takes over, old leader fenced".into(),
        changes,
        lost,
        stale,
        duplicated,
        converge,
        failover: Some(failover),
    });
}

/// A leader stopped as Kubernetes stops a pod (SIGTERM: a rollout, a drain) hands the Lease
/// back on its way out, so the standby leads at once, not after the lease (15 s here) runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_terminated_hands_over_the_lease_at_once() {
    let _g = SERIAL.lock().await;
    install_crd();
    let zk = ZkServer::start();
    let lease = TestLease::fresh("podkeeper-handover", "15s");
    let (a, _b) = leader_and_standby(&zk, &lease).await;
    let ns = TestNs::new("handover").await;
    let (pods, names) = setup(&ns).await;
    let path = ns.path("web");
    converged_before_the_fault(&zk.connect_string(), &path, &pods).await;
    let raw = cluster::connect_zk(&zk.connect_string()).await;
    let before = epoch_version(&raw).await;
    let churn = Churn::start(pods.clone(), names, Duration::from_millis(50));
    churn
        .wait_for(5, Instant::now(), "churn before the stop")
        .await;
    a.signal("TERM");
    let stopped = Instant::now();
    wait_until(
        Duration::from_secs(30),
        "replica-b bumps the epoch",
        || async { epoch_version(&raw).await > before },
    )
    .await;
    let failover = stopped.elapsed();
    assert!(
        // The standby reads the Lease every quarter lease (3.75 s): within two reads.
        failover < Duration::from_secs(8),
        "took {failover:?}: the Lease ran out instead of being handed over; replica-a:\n{}",
        a.log_tail()
    );
    assert!(
        std::fs::read_to_string(&a.log)
            .unwrap()
            .contains("released the Lease")
    );
    churn
        .wait_for(5, stopped, "changes after the handover")
        .await;
    let changes = churn
        .finish("leader terminated", stopped, Instant::now())
        .await;
    let t = Instant::now();
    let (converge, lost, stale, duplicated) = converge(&zk.connect_string(), &path, &pods, t).await;
    finish(Row {
        scenario: "leader terminated (SIGTERM, 15 s lease): it hands the Lease back, the standby leads at once".into(),
        changes,
        lost,
        stale,
        duplicated,
        converge,
        failover: Some(failover),
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_restarted_during_churn() {
    let _g = SERIAL.lock().await;
    install_crd();
    let zk = ZkServer::start();
    let op = Operator::start("op", &zk.connect_string(), &[]);
    wait_ready(&op).await;
    let ns = TestNs::new("apiserver").await;
    let (pods, names) = setup(&ns).await;
    converged_before_the_fault(&zk.connect_string(), &ns.path("web"), &pods).await;
    let churn = Churn::start(pods.clone(), names, Duration::from_millis(50));
    churn
        .wait_for(10, Instant::now(), "churn under way before the kill")
        .await;
    let pid = component_pid("kube-apiserver");
    let pid = pid.as_str();
    assert!(
        Command::new("kill")
            .arg("-9")
            .arg(pid)
            .status()
            .unwrap()
            .success()
    );
    let fault = Instant::now();
    // SIGKILL is delivered asynchronously: `cluster up` must not find the old process alive.
    wait_until(
        Duration::from_secs(30),
        "the API server process is gone",
        || async {
            !Command::new("kill")
                .arg("-0")
                .arg(pid.trim())
                .status()
                .unwrap()
                .success()
        },
    )
    .await;
    cluster_up();
    // The fault lasts until the operator's watches are back: changes made while they resume
    // are the ones a careless relist would lose.
    churn
        .wait_for(20, fault, "changes while the operator's watches resume")
        .await;
    let end = Instant::now();
    let changes = churn.finish("API server restarted", fault, end).await;
    let (converge, lost, stale, duplicated) =
        converge(&zk.connect_string(), &ns.path("web"), &pods, end).await;
    finish(Row {
        scenario: "API server killed and restarted during churn".into(),
        changes,
        lost,
        stale,
        duplicated,
        converge,
        failover: None,
    });
}

/// What a secured operator is given: the TLS directory and login file of
/// `cluster::secure_env` (ACL neighbours as there), with a 20 s session.
struct Secrets {
    dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
}

impl Secrets {
    fn new(zk: &ZkServer) -> Secrets {
        let (dir, mut env) = cluster::secure_env(zk);
        env.push(("PODKEEPER_ZK_SESSION_TIMEOUT", "20s".into()));
        Secrets { dir, env }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        self.env.clone()
    }

    fn set_password(&self, user: &str, password: &str) {
        std::fs::write(self.dir.path().join("auth"), format!("{user}:{password}")).unwrap();
    }
}

fn secured_operator(zk: &ZkServer, secrets: &Secrets) -> Operator {
    let env = secrets.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Operator::start("op", &zk.secure_connect_string(), &env)
}

async fn superuser(zk: &ZkServer) -> zookeeper_client::Client {
    let su = zk.super_user();
    let c = zookeeper_client::Client::connector()
        .connect(&zk.connect_string())
        .await
        .unwrap();
    c.auth("digest", format!("{}:{}", su.user, su.password).as_bytes())
        .await
        .unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_rotated_during_churn() {
    let _g = SERIAL.lock().await;
    install_crd();
    let mut zk = ZkServer::start_secure(SecureOptions::default());
    let secrets = Secrets::new(&zk);
    let op = secured_operator(&zk, &secrets);
    wait_ready(&op).await;
    let ns = TestNs::new("rotate").await;
    let (pods, names) = setup(&ns).await;
    converged_before_the_fault(&zk.connect_string(), &ns.path("web"), &pods).await;
    let churn = Churn::start(pods.clone(), names, Duration::from_millis(50));
    churn
        .wait_for(10, Instant::now(), "churn under way before the rotation")
        .await;
    // A SASL password changes on the servers only with a restart; the Secret changes first.
    let fault = Instant::now();
    secrets.set_password("podkeeper", "rotated-secret");
    tokio::task::block_in_place(|| {
        zk.set_sasl_password("podkeeper", "rotated-secret");
        zk.restart();
    });
    churn
        .wait_for(20, fault, "changes while the credentials rotate")
        .await;
    wait_ready(&op).await;
    let back = fault.elapsed();
    let end = Instant::now();
    let changes = churn.finish("credentials rotated", fault, end).await;
    let (converge, lost, stale, duplicated) =
        converge(&zk.connect_string(), &ns.path("web"), &pods, end).await;
    let reloads = metric(&metrics_of(&op), "podkeeper_credential_reloads_total");
    assert!(
        reloads >= Some(1.0),
        "the new password file was read: {reloads:?}"
    );
    finish(Row {
        scenario:
            "TLS + SASL: password rotated in the Secret and on ZooKeeper (restart) during churn"
                .into(),
        changes,
        lost,
        stale,
        duplicated,
        converge,
        failover: Some(back),
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_rewritten_by_a_superuser_is_repaired_within_a_second() {
    let _g = SERIAL.lock().await;
    install_crd();
    let zk = ZkServer::start_secure(SecureOptions::default());
    let secrets = Secrets::new(&zk);
    let op = secured_operator(&zk, &secrets);
    wait_ready(&op).await;
    let ns = TestNs::new("tamper").await;
    let (pods, names) = setup(&ns).await;
    let path = ns.path("web");
    converged_before_the_fault(&zk.connect_string(), &path, &pods).await;
    let su = superuser(&zk).await;
    let churn = Churn::start(pods.clone(), names, Duration::from_millis(100));
    let fault = Instant::now();
    let (mut slowest, mut rewrites) = (Duration::ZERO, 0);
    for round in 0..5 {
        let eps = format!("{path}/endpoints");
        let children = su.list_children(&eps).await.unwrap();
        let victim = format!("{eps}/{}", children[round % children.len()]);
        let evil = serde_json::to_vec(
            &serde_json::json!({"host": "6.6.6.6", "port": 6666, "weight": 1000000}),
        )
        .unwrap();
        let Ok(_) = su.set_data(&victim, &evil, None).await else {
            continue; // churn removed it first
        };
        rewrites += 1;
        let t = Instant::now();
        loop {
            match su.get_data(&victim).await {
                Ok((data, _)) if data == evil => {}
                Ok(_) | Err(zookeeper_client::Error::NoNode) => break,
                Err(e) => panic!("reading {victim}: {e}"),
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{victim} still holds the superuser's data after 5 s; log:\n{}",
                op.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        slowest = slowest.max(t.elapsed());
    }
    churn
        .wait_for(3, fault, "changes while endpoints were rewritten")
        .await;
    let end = Instant::now();
    let changes = churn.finish("owned endpoint rewritten", fault, end).await;
    let (converge, lost, stale, duplicated) =
        converge(&zk.connect_string(), &path, &pods, end).await;
    let seen = metric(&metrics_of(&op), "podkeeper_tamper_events_total");
    assert!(rewrites >= 3, "only {rewrites} rewrites landed");
    // Not every rewrite need count: one that lands just before a write of ours is repaired by
    // that write failing its version check (and re-reading), not by the watch.
    assert!(
        seen >= Some(1.0),
        "the tamper watch saw none of {rewrites} rewrites: {seen:?}"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "slowest repair took {slowest:?}"
    );
    finish(Row {
        scenario: format!(
            "an owned endpoint rewritten by a ZooKeeper superuser, {rewrites} times during churn (failover: slowest repair)"
        ),
        changes,
        lost,
        stale,
        duplicated,
        converge,
        failover: Some(slowest),
    });
}

/// Registries for the edit scenarios: native, Curator (`/services/web`) and optionally a Dubbo
/// interface.
fn edit_registries(path: Option<&str>, dubbo: bool) -> String {
    let mut out = String::new();
    if let Some(p) = path {
        out += &format!("  path: {p}\n");
    }
    out += "  registries:\n  - format: Native\n  - format: Curator\n    curator: {}\n";
    if dubbo {
        out += "  - format: Dubbo\n    dubbo: {interfaces: [org.example.fault.Edited]}\n";
    }
    out
}

/// The path-edit scenarios' start: an operator (with `env`), the `web` registration with the
/// native and Curator registries converged, a persistent watch on the Curator folder (what
/// consumers see), churn under way, and then `spec.path` edited to `<path>-moved`.
struct PathEdit {
    zk: ZkServer,
    op: Operator,
    ns: TestNs,
    old: String,
    new: String,
    pods: Api<Pod>,
    zkc: zookeeper_client::Client,
    consumers: common::registry::FolderWatch,
    churn: Churn,
    /// When the edit was applied.
    fault: Instant,
}

impl PathEdit {
    async fn start(test: &str, env: &[(&str, &str)]) -> PathEdit {
        install_crd();
        let zk = ZkServer::start();
        let op = Operator::start("op", &zk.connect_string(), env);
        wait_ready(&op).await;
        let ns = TestNs::new(test).await;
        let (old, new) = (ns.path("web"), format!("{}-moved", ns.path("web")));
        let (pods, names) = setup_with(&ns, &edit_registries(None, false)).await;
        converged_before_the_fault(&zk.connect_string(), &old, &pods).await;
        let zkc = cluster::connect_zk(&zk.connect_string()).await;
        let consumers = common::registry::FolderWatch::start(&zkc, "/services/web").await;
        let churn = Churn::start(pods.clone(), names, Duration::from_millis(50));
        churn
            .wait_for(10, Instant::now(), "churn under way before the edit")
            .await;
        ns.apply(&registration(&edit_registries(Some(&new), false)));
        let fault = Instant::now();
        #[rustfmt::skip]
        return PathEdit { zk, op, ns, old, new, pods, zkc, consumers, churn, fault };
    }

    /// Ends the churn (`changes` in the fault window) and reports the row once `path` converged,
    /// with the Curator folder's fewest children while ready pods existed (never 0).
    async fn finish(self, scenario: &str, path: &str) {
        let PathEdit {
            zk,
            pods,
            consumers,
            churn,
            fault,
            ..
        } = self;
        let end = Instant::now();
        let changes = churn.finish(scenario, fault, end).await;
        let (converge, lost, stale, duplicated) =
            converge(&zk.connect_string(), path, &pods, end).await;
        let fewest = consumers.min_after_reaching(1);
        assert!(
            fewest >= Some(1),
            "the Curator folder was empty while ready pods existed: {:?}",
            consumers.sizes()
        );
        finish(Row {
            scenario: format!("{scenario} (Curator folder fewest {})", fewest.unwrap_or(0)),
            changes,
            lost,
            stale,
            duplicated,
            converge,
            failover: None,
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_path_edited_during_churn_moves_the_record_and_never_empties_a_client_folder() {
    let _g = SERIAL.lock().await;
    let t = PathEdit::start("path-edit", &[]).await;
    wait_until(
        Duration::from_secs(60),
        "the old record removed",
        || async { t.zkc.check_stat(&t.old).await.unwrap().is_none() },
    )
    .await;
    t.churn
        .wait_for(10, t.fault, "changes while the path moved")
        .await;
    let new = t.new.clone();
    t.finish(
        "spec.path edited during churn, Curator folder never empty",
        &new,
    )
    .await;
}

/// The operator crashes right after writing a moved registration, before it retires the old
/// place or confirms the new one on the status (a failpoint: exit at that exact step); the
/// user then edits the path back. The place written during the crash was recorded on the
/// status before the write (`placementIntents`), so the next operator removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_a_move_s_write_and_its_status_then_an_edit_back_leaves_nothing() {
    let _g = SERIAL.lock().await;
    let crashing = [("PODKEEPER_FAILPOINT", "exit-after-move-write")];
    let mut t = PathEdit::start("crash-move", &crashing).await;
    wait_until(
        Duration::from_secs(60),
        "the operator exits at the failpoint",
        || async { !t.op.running() },
    )
    .await;
    let exists = |p: &str| {
        let (zkc, p) = (&t.zkc, p.to_string());
        async move { zkc.check_stat(&p).await.unwrap().is_some() }
    };
    assert!(exists(&t.new).await, "the move was written");
    assert!(exists(&t.old).await, "the old place not retired");
    let status =
        t.ns.kubectl(&["get", "svcreg", "web", "-o", "jsonpath={.status}"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["placement"]["path"], t.old.as_str(), "{status}");
    let intent = &status["placementIntents"][0]["path"];
    assert_eq!(intent, t.new.as_str(), "{status}");
    t.ns.apply(&registration(&edit_registries(None, false)));
    t.op = Operator::start("op2", &t.zk.connect_string(), &[]);
    wait_until(
        Duration::from_secs(60),
        "the place written during the crash removed",
        || async { !exists(&t.new).await },
    )
    .await;
    t.churn
        .wait_for(10, t.fault, "changes through the crash")
        .await;
    wait_ready(&t.op).await;
    let old = t.old.clone();
    let scenario = "operator crashed between a path move's write and its status, edit reverted: moved record removed";
    t.finish(scenario, &old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_removed_during_churn_takes_its_nodes_and_leaves_the_others_alone() {
    let _g = SERIAL.lock().await;
    install_crd();
    let zk = ZkServer::start();
    let op = Operator::start("op", &zk.connect_string(), &[]);
    wait_ready(&op).await;
    let ns = TestNs::new("registry-removed").await;
    let path = ns.path("web");
    let (pods, names) = setup_with(&ns, &edit_registries(None, true)).await;
    converged_before_the_fault(&zk.connect_string(), &path, &pods).await;
    let zkc = cluster::connect_zk(&zk.connect_string()).await;
    let dubbo = "/dubbo/org.example.fault.Edited/providers";
    wait_until(
        Duration::from_secs(30),
        "Dubbo providers written",
        || async {
            !zkc.list_children(dubbo)
                .await
                .unwrap_or_default()
                .is_empty()
        },
    )
    .await;
    let consumers = common::registry::FolderWatch::start(&zkc, "/services/web").await;
    let churn = Churn::start(pods.clone(), names, Duration::from_millis(50));
    churn
        .wait_for(10, Instant::now(), "churn under way before the edit")
        .await;
    ns.apply(&registration(&edit_registries(None, false)));
    let fault = Instant::now();
    wait_until(
        Duration::from_secs(60),
        "the Dubbo providers removed",
        || async { zkc.list_children(dubbo).await.unwrap().is_empty() },
    )
    .await;
    churn
        .wait_for(10, fault, "changes while the registry went")
        .await;
    let end = Instant::now();
    let changes = churn.finish("registry removed", fault, end).await;
    let (converge, lost, stale, duplicated) =
        converge(&zk.connect_string(), &path, &pods, end).await;
    let fewest = consumers.min_after_reaching(1);
    assert!(fewest >= Some(1), "{:?}", consumers.sizes());
    finish(Row {
        scenario: format!(
            "a Dubbo registry removed during churn (its providers gone; Curator folder fewest {})",
            fewest.unwrap_or(0)
        ),
        changes,
        lost,
        stale,
        duplicated,
        converge,
        failover: None,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tamper_after_a_zookeeper_blip_within_the_session_is_repaired_at_once() {
    let _g = SERIAL.lock().await;
    install_crd();
    let mut zk = ZkServer::start();
    let op = Operator::start(
        "op",
        &zk.connect_string(),
        &[("PODKEEPER_ZK_SESSION_TIMEOUT", "20s")],
    );
    wait_ready(&op).await;
    let ns = TestNs::new("blip-tamper").await;
    let path = ns.path("web");
    let (pods, names) = setup(&ns).await;
    converged_before_the_fault(&zk.connect_string(), &path, &pods).await;
    let churn = Churn::start(pods.clone(), names, Duration::from_millis(100));
    churn
        .wait_for(5, Instant::now(), "churn under way before the blip")
        .await;
    let sessions = || metric(&metrics_of(&op), "podkeeper_zookeeper_sessions_total");
    let before = sessions();
    // The server goes away and comes back with its data, well inside the 20 s session.
    tokio::task::block_in_place(|| zk.restart());
    let fault = Instant::now();
    wait_until(
        Duration::from_secs(30),
        "the operator reconnected",
        || async { op.ready() },
    )
    .await;
    assert_eq!(
        sessions(),
        before,
        "the same session: the blip did not expire it"
    );
    churn.wait_for(3, fault, "changes during the blip").await;
    let end = Instant::now();
    let changes = churn.finish("blip", fault, end).await;
    let (converge, lost, stale, duplicated) =
        converge(&zk.connect_string(), &path, &pods, end).await;
    // Then a rewrite with nothing else going on: under churn every rebalance rewrites every
    // endpoint (and so repairs it), so only now is the tamper watch alone on duty.
    let zkc = cluster::connect_zk(&zk.connect_string()).await;
    let eps = format!("{path}/endpoints");
    let evil = br#"{"host":"6.6.6.6","port":6666,"weight":1000000}"#;
    let mut repaired = None;
    for _ in 0..10 {
        let children = zkc.list_children(&eps).await.unwrap();
        let victim = format!("{eps}/{}", children[0]);
        if zkc.set_data(&victim, evil, None).await.is_err() {
            continue; // churn removed it first
        }
        let t = Instant::now();
        loop {
            match zkc.get_data(&victim).await {
                Ok((data, _)) if data == evil => {}
                Ok(_) | Err(zookeeper_client::Error::NoNode) => break,
                Err(e) => panic!("reading {victim}: {e}"),
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{victim} still tampered after 5 s: the watch did not survive the reconnect; log:\n{}",
                op.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        repaired = Some(t.elapsed());
        break;
    }
    let repaired = repaired.expect("no rewrite landed");
    finish(Row {
        scenario: "ZooKeeper restarted inside the session during churn, then an endpoint rewritten by another client (failover: its repair)".into(),
        changes,
        lost,
        stale,
        duplicated,
        converge,
        failover: Some(repaired),
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ha_installations_on_one_ensemble_never_fence_each_other() {
    let _g = SERIAL.lock().await;
    install_crd();
    let zk = ZkServer::start();
    let (east, west) = (TestNs::new("ha-east").await, TestNs::new("ha-west").await);
    let install = |id: &'static str, ns: &TestNs| {
        let lease = format!("podkeeper-{id}");
        let _ = kubectl(
            &[
                "delete",
                "lease",
                "-n",
                "default",
                &lease,
                "--ignore-not-found",
            ],
            None,
        );
        let env = [
            ("PODKEEPER_CLUSTER_ID", id.to_string()),
            ("PODKEEPER_NAMESPACES", ns.name.clone()),
            ("PODKEEPER_LEADER_ELECT", "true".into()),
            ("PODKEEPER_LEASE_DURATION", "3s".into()),
            ("PODKEEPER_LEASE_NAMESPACE", "default".into()),
            ("PODKEEPER_LEASE_NAME", lease),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        (
            Operator::start(&format!("{id}-a"), &zk.connect_string(), &env),
            Operator::start(&format!("{id}-b"), &zk.connect_string(), &env),
        )
    };
    let (e1, e2) = install("east", &east);
    let (w1, w2) = install("west", &west);
    for op in [&e1, &e2, &w1, &w2] {
        wait_ready(op).await;
    }
    let (east_pods, east_names) = setup(&east).await;
    let (west_pods, west_names) = setup(&west).await;
    converged_before_the_fault(&zk.connect_string(), &east.path("web"), &east_pods).await;
    converged_before_the_fault(&zk.connect_string(), &west.path("web"), &west_pods).await;
    // Both churn while each installation's leader takes new terms: the east leader is killed,
    // its standby takes over and bumps its epoch; west must not notice.
    let east_churn = Churn::start(east_pods.clone(), east_names, Duration::from_millis(50));
    let west_churn = Churn::start(west_pods.clone(), west_names, Duration::from_millis(50));
    let fault = Instant::now();
    east_churn.wait_for(10, fault, "east churn under way").await;
    let leader = kubectl(
        &[
            "get",
            "lease",
            "-n",
            "default",
            "podkeeper-east",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    )
    .1;
    let (killed, survivor) = if leader.trim() == "east-a" {
        (e1, e2)
    } else {
        (e2, e1)
    };
    killed.signal("KILL");
    drop(killed);
    wait_until(
        Duration::from_secs(30),
        "the east standby leads",
        || async {
            let holder = kubectl(
                &[
                    "get",
                    "lease",
                    "-n",
                    "default",
                    "podkeeper-east",
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ],
                None,
            )
            .1;
            holder.trim() != leader.trim() && !holder.trim().is_empty()
        },
    )
    .await;
    east_churn
        .wait_for(10, fault, "east changes after the takeover")
        .await;
    west_churn
        .wait_for(20, fault, "west changes meanwhile")
        .await;
    let end = Instant::now();
    let changes =
        east_churn.finish("east", fault, end).await + west_churn.finish("west", fault, end).await;
    let (c1, l1, s1, d1) = converge(&zk.connect_string(), &east.path("web"), &east_pods, end).await;
    let (c2, l2, s2, d2) = converge(&zk.connect_string(), &west.path("web"), &west_pods, end).await;
    for op in [&survivor, &w1, &w2] {
        let steps = metric(&metrics_of(op), "podkeeper_leader_step_downs_total");
        assert_eq!(
            steps.unwrap_or(0.0),
            0.0,
            "a replica was fenced; log:\n{}",
            op.log_tail()
        );
    }
    let zkc = cluster::connect_zk(&zk.connect_string()).await;
    for epoch in [
        "/podkeeper/.leader-epoch-east",
        "/podkeeper/.leader-epoch-west",
    ] {
        assert!(zkc.check_stat(epoch).await.unwrap().is_some(), "{epoch}");
    }
    finish(Row {
        scenario: "two HA installations (cluster ids east, west) on one ensemble, east's leader killed during churn in both: no step-down".into(),
        changes,
        lost: l1 + l2,
        stale: s1 + s2,
        duplicated: d1 + d2,
        converge: c1.max(c2),
        failover: None,
    });
}

/// One Dubbo interface and one Curator service, shared by both clusters of the scenario below.
const SHARED_SERVICE: &str = "  serviceName: shared\n  registries:\n  - format: Native\n  - format: Dubbo\n    dubbo: {interfaces: [org.example.fault.Shared], group: g1, version: \"1.0.0\"}\n  - format: Curator\n    curator: {}\n";
const SHARED_FOLDERS: [&str; 2] = [
    "/dubbo/org.example.fault.Shared/providers",
    "/services/shared",
];

/// Whether a node of a shared folder (the Dubbo one, or else the Curator one) is `tag`'s: Dubbo
/// names carry the owner in the URL, Curator ids end in the owner tag's hash.
fn owned_by(
    dubbo_folder: bool,
    name: &str,
    tag: &podkeeper::zk::format::publish::OwnerTag,
) -> bool {
    use podkeeper::zk::format::{curator, dubbo};
    if dubbo_folder {
        let owner = dubbo::decode(name, b"").and_then(|d| d.owner);
        owner == Some(tag.to_string())
    } else {
        name.ends_with(&curator::instance_id(tag, ""))
    }
}

/// The nodes of the shared folders that are not `tag`'s.
async fn neighbours(
    zk: &zookeeper_client::Client,
    tag: &podkeeper::zk::format::publish::OwnerTag,
) -> [BTreeSet<String>; 2] {
    let mut out = [BTreeSet::new(), BTreeSet::new()];
    for (i, folder) in SHARED_FOLDERS.iter().enumerate() {
        let names = zk.list_children(folder).await.unwrap();
        out[i] = names
            .into_iter()
            .filter(|n| !owned_by(i == 0, n, tag))
            .collect();
    }
    out
}

/// Starts an operator of cluster `id` watching `ns` only.
fn cluster_operator(id: &str, ns: &TestNs, zk: &str, session: &str) -> Operator {
    let env = [
        ("PODKEEPER_CLUSTER_ID", id),
        ("PODKEEPER_NAMESPACES", ns.name.as_str()),
        ("PODKEEPER_ZK_SESSION_TIMEOUT", session),
    ];
    Operator::start(id, zk, &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_and_vms_in_one_service_never_touch_each_others_nodes() {
    let _g = SERIAL.lock().await;
    install_crd();
    let zk = ZkServer::start();
    let connect = zk.connect_string();
    let (east, west) = (
        TestNs::new("one-svc-east").await,
        TestNs::new("one-svc-west").await,
    );
    let vms = common::clients::register_vms(&connect, "org.example.fault.Shared", "shared");
    let east_op = cluster_operator("east", &east, &connect, "4s");
    let west_op = cluster_operator("west", &west, &connect, "2s");
    for op in [&east_op, &west_op] {
        wait_ready(op).await;
    }
    let (east_pods, east_names) = setup_with(&east, SHARED_SERVICE).await;
    let (west_pods, _) = setup_with(&west, SHARED_SERVICE).await;
    let (east_path, west_path) = (east.path("shared"), west.path("shared"));
    converged_before_the_fault(&connect, &east_path, &east_pods).await;
    converged_before_the_fault(&connect, &west_path, &west_pods).await;
    let zkc = cluster::connect_zk(&connect).await;
    let union = |n: usize| {
        let zkc = &zkc;
        move || async move {
            let mut sizes = Vec::new();
            for f in SHARED_FOLDERS {
                sizes.push(zkc.list_children(f).await.map_or(0, |c| c.len()));
            }
            sizes.iter().all(|&s| s == n)
        }
    };
    wait_until(
        Duration::from_secs(60),
        "both clusters and the VMs in both folders",
        union(2 * PODS + 1),
    )
    .await;
    let east_tag = podkeeper::zk::format::publish::OwnerTag::new("east", &east.name, "web");
    let kept = neighbours(&zkc, &east_tag).await;
    assert!(kept.iter().all(|k| k.len() == PODS + 1), "{kept:?}");
    let watches = [
        common::registry::FolderWatch::start(&zkc, SHARED_FOLDERS[0]).await,
        common::registry::FolderWatch::start(&zkc, SHARED_FOLDERS[1]).await,
    ];
    // East churns and is killed; west (steady) is frozen past its session meanwhile: every
    // node of west's and the VMs' must stay as it is, through east's restart and west's resync.
    let churn = Churn::start(east_pods.clone(), east_names, Duration::from_millis(20));
    churn
        .wait_for(10, Instant::now(), "east churn under way")
        .await;
    let port = zk.port();
    let west_session = sessions_with_timeout(port, 2000).expect("cons answers");
    assert_eq!(west_session.len(), 1, "{west_session:?}");
    west_op.signal("STOP");
    east_op.signal("KILL");
    let fault = Instant::now();
    drop(east_op);
    churn
        .wait_for(20, fault, "east changes while east is down")
        .await;
    wait_until(
        Duration::from_secs(30),
        "west's session expired",
        || async {
            sessions_with_timeout(port, 2000).is_some_and(|s| !s.contains(&west_session[0]))
        },
    )
    .await;
    let east_op = cluster_operator("east", &east, &connect, "4s");
    churn
        .wait_for(20, Instant::now(), "changes while east restarts")
        .await;
    west_op.signal("CONT");
    let end = Instant::now();
    let changes = churn.finish("two clusters, one service", fault, end).await;
    wait_ready(&east_op).await;
    let (c1, l1, s1, d1) = converge(&connect, &east_path, &east_pods, end).await;
    let (c2, l2, s2, d2) = converge(&connect, &west_path, &west_pods, end).await;
    let east_ready = desired_ready(&east_pods).await.0.len();
    wait_until(
        Duration::from_secs(60),
        "the folders hold exactly the union",
        union(east_ready + PODS + 1),
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "west built a new session",
        || async {
            metric(&metrics_of(&west_op), "podkeeper_zookeeper_sessions_total") >= Some(2.0)
        },
    )
    .await;
    let touched: usize = (0..2)
        .map(|i| {
            watches[i]
                .touched()
                .iter()
                .filter(|n| kept[i].contains(*n))
                .count()
        })
        .sum();
    let east_touched: usize = watches.iter().map(|w| w.touched().len()).sum();
    assert!(east_touched > 0, "the watches saw east's own changes");
    assert_eq!(
        touched, 0,
        "west's or the VMs' nodes were deleted or rewritten"
    );
    assert_eq!(neighbours(&zkc, &east_tag).await, kept);
    drop(vms);
    finish(Row {
        scenario: format!(
            "two clusters (east, west) and two VMs (Dubbo, Curator libraries) in one Dubbo interface and Curator service: east kill -9 during its churn while west is frozen past its session; {} neighbour nodes, {touched} deleted or rewritten",
            2 * (PODS + 1)
        ),
        changes,
        lost: l1 + l2,
        stale: s1 + s2,
        duplicated: d1 + d2,
        converge: c1.max(c2),
        failover: None,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_from_one_replica_to_two_during_churn_never_runs_two_writers() {
    let _g = SERIAL.lock().await;
    install_crd();
    let zk = ZkServer::start();
    // The chart's default: leader election on with one replica too.
    let lease = TestLease::fresh("podkeeper-scale", "3s").env();
    let first = Operator::start("replica-1", &zk.connect_string(), &lease);
    wait_ready(&first).await;
    let ns = TestNs::new("scale-up").await;
    let path = ns.path("web");
    let (pods, names) = setup(&ns).await;
    converged_before_the_fault(&zk.connect_string(), &path, &pods).await;
    let zkc = cluster::connect_zk(&zk.connect_string()).await;
    let before = epoch_version(&zkc).await;
    let churn = Churn::start(pods.clone(), names, Duration::from_millis(50));
    churn
        .wait_for(10, Instant::now(), "churn under way before the scale-up")
        .await;
    let second = Operator::start("replica-2", &zk.connect_string(), &lease);
    let fault = Instant::now();
    wait_ready(&second).await;
    churn
        .wait_for(30, fault, "changes while two replicas run")
        .await;
    let end = Instant::now();
    let changes = churn.finish("scaled to two replicas", fault, end).await;
    let (converge, lost, stale, duplicated) =
        converge(&zk.connect_string(), &path, &pods, end).await;
    let written = |op: &Operator| metric(&metrics_of(op), "podkeeper_znodes_written_total");
    assert!(written(&first) > Some(0.0), "the leader kept writing");
    assert_eq!(
        written(&second).unwrap_or(0.0),
        0.0,
        "the new replica wrote: two writers"
    );
    let steps = metric(&metrics_of(&first), "podkeeper_leader_step_downs_total");
    assert_eq!(steps.unwrap_or(0.0), 0.0, "the leader was fenced");
    assert_eq!(epoch_version(&zkc).await, before, "no new term began");
    finish(Row {
        scenario: "scaled from one replica to two during churn (leader election on by default): the new replica wrote 0 znodes".into(),
        changes,
        lost,
        stale,
        duplicated,
        converge,
        failover: None,
    });
}

/// The addresses in the EndpointSlices of Service `svc`.
async fn slice_addresses(ns: &str, svc: &str) -> BTreeSet<String> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let api: Api<EndpointSlice> = Api::namespaced(cluster::client().await, ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
    api.list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .flat_map(|s| s.endpoints.unwrap_or_default())
        .flat_map(|e| e.addresses)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_session_expiry_keeps_the_slices_then_reads_the_folder_again() {
    use zookeeper_client::{Acls, CreateMode};
    let _g = SERIAL.lock().await;
    install_crd();
    let zk = ZkServer::start();
    let port: u16 = zk.port();
    let ns = TestNs::new("import-expiry").await;
    let op = Operator::start(
        "op",
        &zk.connect_string(),
        &[
            ("PODKEEPER_ZK_SESSION_TIMEOUT", "2s"),
            ("PODKEEPER_IMPORT", "true"),
            ("PODKEEPER_NAMESPACES", &ns.name),
        ],
    );
    wait_ready(&op).await;
    let raw = zookeeper_client::Client::connect(&zk.connect_string())
        .await
        .unwrap();
    let open = CreateMode::Persistent.with_acls(Acls::anyone_all());
    for dir in ["/services", "/services/vms"] {
        raw.create(dir, b"", &open).await.unwrap();
    }
    let node = |i: u8| {
        let v = serde_json::json!({"name": "vms", "id": format!("vm{i}"), "address": format!("10.55.0.{i}"), "port": 80});
        serde_json::to_vec(&v).unwrap()
    };
    raw.create("/services/vms/vm1", &node(1), &open)
        .await
        .unwrap();
    raw.create("/services/vms/vm2", &node(2), &open)
        .await
        .unwrap();
    kubectl(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(
            "apiVersion: podkeeper.io/v1alpha1\nkind: RegistryImport\nmetadata: {name: vms}\n\
             spec: {source: {curator: {serviceName: vms}}, service: {name: vms, ports: [{name: http, port: 80}]}}\n",
        ),
    );
    let want = |ips: &[&str]| ips.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    wait_until(Duration::from_secs(30), "both VMs imported", || async {
        slice_addresses(&ns.name, "vms").await == want(&["10.55.0.1", "10.55.0.2"])
    })
    .await;
    let operator_session = sessions_with_timeout(port, 2000).expect("cons answers");
    assert_eq!(operator_session.len(), 1, "{operator_session:?}");
    // Frozen past its session timeout; meanwhile one VM leaves and another registers: only a
    // new session's new watch and read can see it.
    op.signal("STOP");
    raw.delete("/services/vms/vm1", None).await.unwrap();
    raw.create("/services/vms/vm3", &node(3), &open)
        .await
        .unwrap();
    let expired = &operator_session[0];
    wait_until(
        Duration::from_secs(30),
        "the frozen operator's session expired",
        || async move { sessions_with_timeout(port, 2000).is_some_and(|s| !s.contains(expired)) },
    )
    .await;
    assert_eq!(
        slice_addresses(&ns.name, "vms").await,
        want(&["10.55.0.1", "10.55.0.2"]),
        "the slices are kept while the operator cannot read"
    );
    let t = Instant::now();
    op.signal("CONT");
    let target = want(&["10.55.0.2", "10.55.0.3"]);
    wait_until(
        Duration::from_secs(30),
        "the folder read again on a new session",
        || async { slice_addresses(&ns.name, "vms").await == target },
    )
    .await;
    let converge = t.elapsed();
    let got = slice_addresses(&ns.name, "vms").await;
    finish(Row {
        scenario: "import: operator frozen past its 2 s session, folder changed meanwhile".into(),
        changes: 2,
        lost: target.difference(&got).count(),
        stale: got.difference(&target).count(),
        duplicated: 0,
        converge,
        failover: None,
    });
}

/// Pods that request CPU, the kwok usage of each set by annotation, weighed by load (30 s expiry).
async fn setup_loaded(ns: &TestNs) -> (Api<Pod>, Vec<String>) {
    ns.apply(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: {PODS}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}, annotations: {{kwok.x-k8s.io/usage-cpu: 250m}}}}\n    spec:\n      containers: [{{name: app, image: x, ports: [{{name: http, containerPort: 8080}}], resources: {{requests: {{cpu: 500m}}}}}}]\n"
    ));
    let load = "  load:\n    metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 100}}}]\n    periodSeconds: 10\n    expireSeconds: 30\n    blackoutSeconds: 0\n";
    ns.apply(&registration(load));
    let pods: Api<Pod> = Api::namespaced(cluster::client().await, &ns.name);
    let p = pods.clone();
    wait_until(Duration::from_secs(60), "pods ready", || {
        let p = p.clone();
        async move { desired_ready(&p).await.0.len() == PODS }
    })
    .await;
    let names: Vec<String> = desired_ready(&pods).await.0.into_iter().collect();
    for name in names.iter().step_by(2) {
        ns.kubectl(&[
            "annotate",
            "pod",
            name,
            "kwok.x-k8s.io/usage-cpu=450m",
            "--overwrite",
        ]);
    }
    (pods, names)
}

/// Endpoints whose weight load moved away from the declared one.
async fn load_weighed(zk: &zookeeper_client::Client, path: &str) -> usize {
    let eps = common::registry::read(zk, path)
        .await
        .map(|(_, e)| e)
        .unwrap_or_default();
    eps.values().filter(|e| e.declared_weight.is_some()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_api_down_during_churn_falls_back_to_declared_weights() {
    let _g = SERIAL.lock().await;
    install_crd();
    let zk = ZkServer::start();
    let op = Operator::start("op", &zk.connect_string(), &[]);
    wait_ready(&op).await;
    let ns = TestNs::new("metricsdown").await;
    let (pods, names) = setup_loaded(&ns).await;
    let path = ns.path("web");
    let client = cluster::connect_zk(&zk.connect_string()).await;
    wait_until(
        Duration::from_secs(120),
        "weights moved by load",
        || async { load_weighed(&client, &path).await > 0 },
    )
    .await;
    converged_before_the_fault(&zk.connect_string(), &path, &pods).await;
    let churn = Churn::start(pods.clone(), names, Duration::from_millis(100));
    churn
        .wait_for(5, Instant::now(), "churn under way before the fault")
        .await;
    let pid = component_pid("metrics-server");
    assert!(
        Command::new("kill")
            .arg("-9")
            .arg(&pid)
            .status()
            .unwrap()
            .success()
    );
    let fault = Instant::now();
    // No fresh samples: after expireSeconds every pod is weighed as declared again.
    let deadline = Instant::now() + Duration::from_secs(90);
    while load_weighed(&client, &path).await > 0 {
        assert!(
            Instant::now() < deadline,
            "no declared weights after the expiry; log:\n{}",
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fell_back = fault.elapsed();
    assert!(
        fell_back >= Duration::from_secs(15),
        "fell back after {fell_back:?}, before the expiry"
    );
    let end = Instant::now();
    let changes = churn.finish("metrics API down", fault, end).await;
    let last_error = || {
        ns.kubectl(&[
            "get",
            "svcreg",
            "web",
            "-o=jsonpath={.status.load.lastError}",
        ])
    };
    let said = last_error();
    assert!(
        !said.is_empty(),
        "status.load.lastError while the metrics API is down"
    );
    cluster_up();
    let (converge, lost, stale, duplicated) =
        converge(&zk.connect_string(), &path, &pods, end).await;
    // A merge patch keeps what it does not mention: the error must be cleared explicitly.
    wait_until(Duration::from_secs(60), "lastError cleared", || async {
        last_error().is_empty()
    })
    .await;
    finish(Row {
        scenario: format!(
            "metrics API down during churn (declared weights after {:.0} s)",
            fell_back.as_secs_f64()
        ),
        changes,
        lost,
        stale,
        duplicated,
        converge,
        failover: None,
    });
}

/// The pid of a control-plane component: its pid file holds "<pid> <start time>"
/// (scripts/lib.sh pk_start).
fn component_pid(name: &str) -> String {
    let state = std::env::var("PODKEEPER_CLUSTER_DIR")
        .expect("PODKEEPER_CLUSTER_DIR (set by scripts/test)");
    let file = std::fs::read_to_string(format!("{state}/pids/{name}.pid"))
        .unwrap_or_else(|e| panic!("{name} runs: {e}"));
    file.split_whitespace().next().expect("a pid").to_string()
}

/// `scripts/cluster up`: starts the components that are not running.
fn cluster_up() {
    let up = tokio::task::block_in_place(|| {
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster"))
            .arg("up")
            .output()
            .unwrap()
    });
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
}

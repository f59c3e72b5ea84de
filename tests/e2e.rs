//! End-to-end: the operator binary against a real API server (kwok plays kubelet) and a real
//! ZooKeeper. Run through `scripts/test`, which starts the control plane.

mod common;
mod multi_cluster;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::{self as harness, TestNs, env, kubectl, wait_until, zk_client};
use common::registry::wait_for as wait_registry;
use podkeeper::crd::ServiceRegistration;
use podkeeper::model::record::{EndpointRecord, EndpointStatus};

fn deployment(name: &str, track: &str, replicas: u32, extra_pod_annotations: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web, track: {track}}}}}
  template:
    metadata:
      labels: {{app: web, track: {track}}}
      annotations: {{version: "1"{extra_pod_annotations}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: app
        image: example.invalid/web:1
        ports: [{{name: http, containerPort: 8080}}, {{name: admin, containerPort: 9090}}]
"#
    )
}

const REGISTRATION: &str = r#"apiVersion: podkeeper.io/v1alpha1
kind: ServiceRegistration
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  port: http
  extraPorts: [admin]
  drainSeconds: 3
  loadBalancer: {policy: WeightedRoundRobin}
  weights:
    groups:
    - {name: stable, selector: {matchLabels: {track: stable}}, share: 90}
    - {name: canary, selector: {matchLabels: {track: canary}}, share: 10}
  metadata:
    labels: [track]
    static: {env: e2e}
"#;

async fn svcreg(ns: &TestNs, name: &str) -> ServiceRegistration {
    let api: kube::Api<ServiceRegistration> =
        kube::Api::namespaced(harness::client().await, &ns.name);
    api.get(name).await.unwrap()
}

fn condition(sr: &ServiceRegistration, t: &str) -> Option<(String, String)> {
    sr.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn group_sum(
    eps: &std::collections::BTreeMap<String, podkeeper::model::record::EndpointRecord>,
    g: &str,
) -> u64 {
    eps.values()
        .filter(|e| e.group == g && e.status == EndpointStatus::Up)
        .map(|e| u64::from(e.weight))
        .sum()
}

fn up(eps: &std::collections::BTreeMap<String, podkeeper::model::record::EndpointRecord>) -> usize {
    eps.values()
        .filter(|e| e.status == EndpointStatus::Up)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_pods_are_published_with_addresses_ports_metadata_weights_status_and_events() {
    env();
    let ns = TestNs::new("publish").await;
    ns.apply(&deployment("web-stable", "stable", 3, ""));
    ns.apply(&deployment("web-canary", "canary", 1, ""));
    ns.apply(REGISTRATION);
    let zk = zk_client().await;
    let (svc, eps) =
        wait_registry(&zk, &ns.path("web"), "4 ready endpoints", |_, e| up(e) == 4).await;
    assert_eq!(svc.policy.as_str(), "WeightedRoundRobin");
    assert_eq!(svc.owner.namespace, ns.name);
    assert_eq!(svc.owner.cluster_id, "e2e");
    let pods = ns.kubectl(&[
        "get",
        "pods",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.status.podIP}{\"\\n\"}{end}",
    ]);
    for line in pods.lines().filter(|l| !l.is_empty()) {
        let (pod, ip) = line.split_once('=').unwrap();
        let ep = &eps[pod];
        assert_eq!(ep.host, ip, "host is the pod IP");
        assert_eq!(ep.port, 8080);
        assert_eq!(ep.ports.get("admin"), Some(&9090));
        assert_eq!(ep.metadata.get("env").map(String::as_str), Some("e2e"));
        assert_eq!(ep.metadata.get("track"), Some(&ep.group));
        assert!(
            ep.zone.as_deref().is_some_and(|z| z.starts_with("zone-")),
            "zone from the node: {ep:?}"
        );
        assert_eq!(ep.namespace, ns.name);
    }
    assert_eq!(group_sum(&eps, "stable"), 900_000);
    assert_eq!(group_sum(&eps, "canary"), 100_000);
    // Over TLS + SASL the endpoints are the operator's alone: this anonymous client reads them
    // (above) but may not change them. In plaintext they are open, as before.
    let ep = format!(
        "{}/endpoints/{}",
        ns.path("web"),
        eps.keys().next().unwrap()
    );
    let rewrite = zk.set_data(&ep, b"{}", Some(i32::MAX)).await.unwrap_err();
    let want = match common::cluster::secure_mode() {
        true => zookeeper_client::Error::NoAuth,
        false => zookeeper_client::Error::BadVersion,
    };
    assert_eq!(rewrite, want, "an anonymous rewrite of {ep}");

    wait_until(
        Duration::from_secs(30),
        "status Ready with counts",
        || async {
            let sr = svcreg(&ns, "web").await;
            let st = sr.status.clone().unwrap_or_default();
            condition(&sr, "Ready").is_some_and(|(s, _)| s == "True")
                && st.published == 4
                && st.ready == 4
                && st.matched == 4
        },
    )
    .await;
    let sr = svcreg(&ns, "web").await;
    assert_eq!(condition(&sr, "Synced").unwrap().0, "True");
    assert_eq!(condition(&sr, "ZooKeeperAvailable").unwrap().0, "True");
    assert_eq!(condition(&sr, "Conflict").unwrap().0, "False");
    let st = sr.status.unwrap();
    assert_eq!(st.path.as_deref(), Some(ns.path("web").as_str()));
    assert!(
        st.groups
            .iter()
            .any(|g| g.name == "stable" && g.ready == 3 && g.weight == 900_000),
        "{:?}",
        st.groups
    );
    assert_eq!(st.observed_generation, sr.metadata.generation);

    let table = ns.kubectl(&["get", "svcreg"]);
    let header = table.lines().next().unwrap();
    for col in ["READY", "PUBLISHED", "PATH", "AGE"] {
        assert!(
            header.contains(col),
            "printer column {col} missing: {table}"
        );
    }
    assert!(
        table.contains(&ns.path("web")) && table.contains("True"),
        "{table}"
    );
    wait_until(Duration::from_secs(30), "Registered event", || async {
        ns.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=ServiceRegistration",
        ])
        .contains("Registered")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_and_a_not_ready_pod_rebalance_the_group() {
    env();
    let ns = TestNs::new("scale").await;
    ns.apply(&deployment("web-stable", "stable", 2, ""));
    ns.apply(&deployment("web-canary", "canary", 1, ""));
    ns.apply(REGISTRATION);
    let zk = zk_client().await;
    let path = ns.path("web");
    wait_registry(&zk, &path, "3 endpoints", |_, e| up(e) == 3).await;
    ns.kubectl(&["scale", "deploy/web-stable", "--replicas=5"]);
    let (_, eps) = wait_registry(&zk, &path, "6 endpoints", |_, e| up(e) == 6).await;
    assert_eq!(group_sum(&eps, "stable"), 900_000);
    assert!(
        eps.values()
            .filter(|e| e.group == "stable")
            .all(|e| e.weight == 180_000)
    );

    // A pod turns NotReady: it leaves and its group is re-weighted; canary keeps its share.
    let victim = eps
        .values()
        .find(|e| e.group == "stable")
        .unwrap()
        .pod
        .clone();
    ns.kubectl(&[
        "annotate",
        "pod",
        &victim,
        "podkeeper.io/test-state=NotReady",
        "--overwrite",
    ]);
    let (_, eps) = wait_registry(&zk, &path, "victim removed", |_, e| {
        !e.contains_key(&victim)
    })
    .await;
    assert_eq!(up(&eps), 5);
    assert_eq!(group_sum(&eps, "stable"), 900_000);
    assert_eq!(group_sum(&eps, "canary"), 100_000);
    ns.kubectl(&[
        "annotate",
        "pod",
        &victim,
        "podkeeper.io/test-state=Ready",
        "--overwrite",
    ]);
    wait_registry(&zk, &path, "victim back", |_, e| e.contains_key(&victim)).await;

    ns.kubectl(&["scale", "deploy/web-stable", "--replicas=1"]);
    let (_, eps) =
        wait_registry(&zk, &path, "scaled down", |_, e| up(e) == 2 && e.len() == 2).await;
    assert_eq!(group_sum(&eps, "stable"), 900_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pods_drain_with_weight_zero_then_leave_and_rolling_updates_join_first() {
    env();
    let ns = TestNs::new("drain").await;
    ns.apply(&deployment("web-stable", "stable", 2, ""));
    ns.apply(REGISTRATION);
    let zk = zk_client().await;
    let path = ns.path("web");
    let (_, eps) = wait_registry(&zk, &path, "2 endpoints", |_, e| up(e) == 2).await;
    let victim = eps.keys().next().unwrap().clone();
    let ready_since = eps[&victim].ready_since_ms;
    assert_ne!(ready_since, 0, "the pod's ready time is published");
    ns.kubectl(&["delete", "pod", &victim, "--wait=false"]);
    let (_, eps) = wait_registry(&zk, &path, "victim draining", |_, e| {
        e.get(&victim)
            .is_some_and(|v| v.status == EndpointStatus::Draining && v.weight == 0)
    })
    .await;
    assert!(
        eps.values()
            .filter(|e| e.pod != victim)
            .all(|e| e.weight > 0)
    );
    // What kubelet does to a terminating pod (kwok does not): Ready and ContainersReady turn
    // False, with a new
    // transition time. The draining record keeps the time the pod served from, so Dubbo
    // consumers do not restart a warm-up. (The patch fails only if the pod is already gone.)
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let _ = kubectl(
        &[
            "-n",
            &ns.name,
            "patch",
            "pod",
            &victim,
            "--subresource=status",
            "-p",
            &format!(
                r#"{{"status":{{"conditions":[{{"type":"Ready","status":"False","lastTransitionTime":"{now}"}},{{"type":"ContainersReady","status":"False","lastTransitionTime":"{now}"}}]}}}}"#
            ),
        ],
        None,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, eps) = common::registry::read(&zk, &path).await.unwrap();
        match eps.get(&victim) {
            None => break,
            Some(v) => assert_eq!(v.ready_since_ms, ready_since, "{v:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "victim not removed after drainSeconds"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Rolling update: new pods are published before the old ones stop serving.
    let old: Vec<String> = wait_registry(&zk, &path, "2 up", |_, e| up(e) == 2)
        .await
        .1
        .into_keys()
        .collect();
    // Every state a watching client passes through, not polls that could miss an empty one.
    let seen = common::registry::RecordWatch::start(&zk, &path).await;
    ns.kubectl(&[
        "patch",
        "deploy/web-stable",
        "-p",
        r#"{"spec":{"template":{"metadata":{"annotations":{"version":"2"}}}}}"#,
    ]);
    wait_registry(&zk, &path, "the rollout done", |_, eps| {
        let new_up = eps
            .values()
            .filter(|e| !old.contains(&e.pod) && e.status == EndpointStatus::Up)
            .count();
        new_up == 2 && !eps.keys().any(|k| old.contains(k))
    })
    .await;
    let states = seen.states();
    let serving = |s: &BTreeMap<String, EndpointStatus>| {
        s.values().filter(|st| **st == EndpointStatus::Up).count()
    };
    assert!(
        states.iter().all(|s| serving(s) >= 1),
        "never without a serving endpoint during the rollout: {states:?}"
    );
    assert!(
        states.iter().any(|s| {
            let new_up = s
                .iter()
                .any(|(p, st)| !old.contains(p) && *st == EndpointStatus::Up);
            new_up && s.keys().any(|p| old.contains(p))
        }),
        "new pods joined before the old ones left: {states:?}"
    );
    assert!(states.len() >= 4, "the watch saw the rollout: {states:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_ready_node_takes_its_pods_out() {
    env();
    let ns = TestNs::new("node").await;
    // A node of its own (tainted, so only this test's pods land there): marking it NotReady
    // must not disturb the tests running beside this one.
    let node = format!("e2e-isolated-{}", std::process::id());
    let node_yaml = format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  annotations: {{kwok.x-k8s.io/node: fake, podkeeper.io/node-ip: 127.0.0.20}}\n  labels: {{type: kwok, kubernetes.io/hostname: {node}, topology.kubernetes.io/zone: zone-d, podkeeper.io/isolated: {node}}}\nspec:\n  taints: [{{key: podkeeper.io/isolated, value: {node}, effect: NoSchedule}}]\n"
    );
    let (ok, out) = kubectl(&["apply", "-f", "-"], Some(&node_yaml));
    assert!(ok, "{out}");
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = kubectl(&["delete", "node", &self.0, "--wait=false"], None);
        }
    }
    let _cleanup = Cleanup(node.clone());
    let pinned = deployment("web-pinned", "stable", 2, "").replace(
        "      terminationGracePeriodSeconds: 2\n",
        &format!(
            "      terminationGracePeriodSeconds: 2\n      nodeSelector: {{podkeeper.io/isolated: {node}}}\n      tolerations: [{{key: podkeeper.io/isolated, operator: Exists}}]\n"
        ),
    );
    ns.apply(&pinned);
    ns.apply(&deployment("web-canary", "canary", 2, ""));
    ns.apply(REGISTRATION);
    let zk = zk_client().await;
    let path = ns.path("web");
    let (_, eps) = wait_registry(&zk, &path, "4 endpoints", |_, e| up(e) == 4).await;
    let on_node: Vec<String> = eps
        .values()
        .filter(|e| e.node.as_deref() == Some(node.as_str()))
        .map(|e| e.pod.clone())
        .collect();
    assert_eq!(on_node.len(), 2, "{eps:#?}");
    let (ok, out) = kubectl(
        &[
            "annotate",
            "node",
            &node,
            "podkeeper.io/test-state=NotReady",
            "--overwrite",
        ],
        None,
    );
    assert!(ok, "{out}");
    let (_, eps) = wait_registry(&zk, &path, "pods of the NotReady node gone", |_, e| {
        on_node.iter().all(|p| !e.contains_key(p))
    })
    .await;
    assert_eq!(up(&eps), 2, "the canary pods elsewhere stay");
    assert_eq!(group_sum(&eps, "canary"), 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_resource_is_followed_and_deleting_it_removes_its_znodes() {
    env();
    let ns = TestNs::new("edit").await;
    ns.apply(&deployment("web-stable", "stable", 2, ""));
    ns.apply(&deployment("web-canary", "canary", 1, ""));
    ns.apply(REGISTRATION);
    let zk = zk_client().await;
    let path = ns.path("web");
    wait_registry(&zk, &path, "3 endpoints", |_, e| up(e) == 3).await;

    let edited = REGISTRATION
        .replace("policy: WeightedRoundRobin", "policy: ConsistentHash")
        .replace("port: http", "port: admin")
        .replace("share: 10}", "share: 30}")
        .replace(
            "selector: {matchLabels: {app: web}}",
            "selector: {matchLabels: {app: web, track: canary}}",
        );
    ns.apply(&edited);
    let (svc, eps) = wait_registry(
        &zk,
        &path,
        "policy, port, selector and weights follow",
        |s, e| {
            s.policy.as_str() == "ConsistentHash"
                && e.len() == 1
                && e.values().all(|x| x.port == 9090)
        },
    )
    .await;
    assert!(svc.generation >= 2);
    assert_eq!(group_sum(&eps, "canary"), 300_000);

    let (ok, out) = kubectl(
        &["delete", "-n", &ns.name, "svcreg/web", "--timeout=60s"],
        None,
    );
    assert!(ok, "{out}");
    wait_until(Duration::from_secs(30), "znodes removed", || async {
        zk.check_stat(&path).await.unwrap().is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_resources_are_rejected_at_admission_with_readable_messages() {
    env();
    let ns = TestNs::new("invalid").await;
    let base = "apiVersion: podkeeper.io/v1alpha1\nkind: ServiceRegistration\nmetadata: {name: bad}\nspec:\n";
    let cases = [
        ("  selector: {}\n  port: 80\n", "selector must not be empty"),
        (
            "  selector: {matchLabels: {a: b}}\n  port: 70000\n",
            "port must be a number from 1 to 65535",
        ),
        (
            "  selector: {matchLabels: {a: b}}\n  port: Bad_Name\n",
            "port must be a number from 1 to 65535 or a container port name",
        ),
        (
            "  selector: {matchLabels: {a: b}}\n  port: 80\n  path: /podkeeper/a/../b\n",
            "path must be an absolute znode path",
        ),
        (
            "  selector: {matchLabels: {a: b}}\n  port: 80\n  weights: {groups: [{name: g, share: 0, selector: {matchLabels: {a: b}}}]}\n",
            "share must be between 1 and 10000",
        ),
        (
            "  selector: {matchLabels: {a: b}}\n  port: 80\n  weights: {groups: [{name: g, share: 1, selector: {}}, {name: g, share: 2, selector: {}}]}\n",
            "weight group names must be unique",
        ),
        (
            "  selector: {matchLabels: {a: b}}\n  port: 80\n  loadBalancer: {policy: Fastest}\n",
            "Unsupported value: \"Fastest\"",
        ),
        (
            &format!(
                "  selector: {{matchLabels: {{a: b}}}}\n  port: 80\n  registries: [{{format: Dubbo, dubbo: {{interfaces: [a.B], group: {}}}}}]\n",
                "g".repeat(65)
            ),
            "spec.registries[0].dubbo.group: Too long: may not be more than 64",
        ),
    ];
    for (spec, message) in cases {
        let out = ns.apply_rejected(&format!("{base}{spec}"));
        assert!(out.contains(message), "expected {message:?} in:\n{out}");
    }
    assert!(
        ns.kubectl(&["get", "svcreg", "-o", "name"])
            .trim()
            .is_empty(),
        "nothing was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_resource_on_the_same_path_gets_conflict_and_writes_nothing() {
    env();
    let ns = TestNs::new("conflict").await;
    ns.apply(&deployment("web-stable", "stable", 2, ""));
    ns.apply(REGISTRATION);
    let zk = zk_client().await;
    let path = ns.path("web");
    let (_, before) = wait_registry(&zk, &path, "2 endpoints", |_, e| up(e) == 2).await;
    let (_, stat) = zk.get_data(&path).await.unwrap();
    ns.apply(&format!(
        "apiVersion: podkeeper.io/v1alpha1\nkind: ServiceRegistration\nmetadata: {{name: web-copy}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  port: 8080\n  path: {path}\n"
    ));
    wait_until(Duration::from_secs(30), "Conflict condition", || async {
        let sr = svcreg(&ns, "web-copy").await;
        condition(&sr, "Conflict").is_some_and(|(s, _)| s == "True")
            && condition(&sr, "Ready").is_some_and(|(s, _)| s == "False")
    })
    .await;
    let (_, stat_after) = zk.get_data(&path).await.unwrap();
    assert_eq!(stat.mzxid, stat_after.mzxid, "service record untouched");
    let (_, after) = common::registry::read(&zk, &path).await.unwrap();
    assert_eq!(before, after, "endpoints untouched");
    // Deleting the loser removes nothing of the winner's.
    let (ok, out) = kubectl(
        &["delete", "-n", &ns.name, "svcreg/web-copy", "--timeout=60s"],
        None,
    );
    assert!(ok, "{out}");
    assert_eq!(common::registry::read(&zk, &path).await.unwrap().1, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_and_metrics_tell_the_truth() {
    let s = env();
    let (code, body) = harness::http_get(&s.health, "/healthz").unwrap();
    assert_eq!((code, body.trim()), (200, "ok"));
    // Ready means every ensemble in use has a session: a test that stops its own ensemble (the
    // readiness-gate rollout) makes it 503 for a while, so wait for 200 rather than sample it.
    wait_until(Duration::from_secs(60), "/readyz 200", || async {
        harness::http_get(&s.health, "/readyz").is_some_and(|(code, _)| code == 200)
    })
    .await;
    let (code, body) = harness::http_get(&s.health, "/metrics").unwrap();
    assert_eq!(code, 200);
    for m in [
        "podkeeper_reconciles_total",
        "podkeeper_pods_indexed",
        "podkeeper_zookeeper_sessions_total",
        "podkeeper_readiness_to_zookeeper_seconds_bucket",
        "podkeeper_pod_lists_completed_total",
        "podkeeper_leader_step_downs_total",
    ] {
        assert!(body.contains(m), "{m} missing from /metrics");
    }
}

/// Installs the chart as `release` (its ServiceAccount's name too: it contains "podkeeper") in
/// `ops` (namespaced RBAC for `app`, plus `sets`) and returns a kubeconfig holding that
/// ServiceAccount's token instead of admin credentials (in `dir`). Releases of tests that may
/// run at once need their own names: their ClusterRoles are cluster-wide.
fn chart_sa_kubeconfig(
    release: &str,
    ops: &TestNs,
    app: &TestNs,
    sets: &[&str],
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let kubeconfig = harness::kubeconfig();
    let mut args = vec![
        "install".to_string(),
        release.into(),
        format!("{root}/charts/podkeeper"),
        "-n".into(),
        ops.name.clone(),
        "--set".into(),
        "rbac.scope=namespaced".into(),
        "--set".into(),
        format!("watchNamespaces={{{}}}", app.name),
        "--set".into(),
        "zookeeper.connect=127.0.0.1:2181".into(),
    ];
    for set in sets {
        args.extend(["--set".to_string(), set.to_string()]);
    }
    let out = std::process::Command::new(helm())
        .args(&args)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = ops
        .kubectl(&["create", "token", release, "--duration=1h"])
        .trim()
        .to_string();
    let sa_config = dir.join("kubeconfig");
    std::fs::copy(&kubeconfig, &sa_config).unwrap();
    let kc = |args: &[&str]| {
        let ok = std::process::Command::new(
            std::env::var("PODKEEPER_KUBECTL").unwrap_or_else(|_| "kubectl".into()),
        )
        .arg("--kubeconfig")
        .arg(&sa_config)
        .args(args)
        .output()
        .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
    };
    kc(&[
        "config",
        "set-credentials",
        "chart-sa",
        &format!("--token={token}"),
    ]);
    kc(&["config", "set-context", "--current", "--user=chart-sa"]);
    sa_config
}

fn helm() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    std::env::var("PODKEEPER_HELM").unwrap_or_else(|_| format!("{root}/.cache/tools/bin/helm"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_works_with_only_the_charts_namespaced_rbac() {
    let shared = env();
    let ops = TestNs::new("rbac-ops").await;
    let app = TestNs::new("rbac-app").await;
    let helm = helm();
    let kubeconfig = harness::kubeconfig();
    let dir = tempfile::tempdir().unwrap();
    let sa_config = chart_sa_kubeconfig("podkeeper", &ops, &app, &[], dir.path());
    for (verb, what, want) in [
        ("get", "secrets", "no"),
        ("create", "pods", "no"),
        ("delete", "pods", "no"),
        ("watch", "pods", "yes"),
        ("watch", "services", "yes"),
        ("patch", "services", "no"),
        ("patch", "pods/status", "yes"),
        ("update", "pods/status", "no"),
    ] {
        // `pods/status` would read as the pod named "status": ask for the subresource.
        let (resource, sub) = what.split_once('/').unwrap_or((what, ""));
        let sub = format!("--subresource={sub}");
        let mut args = vec!["auth", "can-i", verb, resource, "-n", &app.name];
        let who = format!("--as=system:serviceaccount:{}:podkeeper", ops.name);
        args.push(&who);
        if what.contains('/') {
            args.push(&sub);
        }
        let (_, got) = kubectl(&args, None);
        assert_eq!(got.trim(), want, "can-i {verb} {what}");
    }

    let chroot = format!("/rbac-{}", std::process::id());
    let op = harness::Operator::start(
        "chart-sa",
        &shared.zk.connect_string(),
        &[
            ("KUBECONFIG", sa_config.to_str().unwrap()),
            ("PODKEEPER_NAMESPACES", &app.name),
            ("PODKEEPER_ZK_CHROOT", &chroot),
            ("PODKEEPER_CLUSTER_ID", "e2e"),
        ],
    );
    wait_until(
        Duration::from_secs(60),
        "operator with the chart's RBAC ready",
        || async { op.ready() },
    )
    .await;
    app.apply(&deployment("web-stable", "stable", 2, ""));
    app.apply(REGISTRATION);
    let zk = zk_client().await;
    let path = format!("{chroot}{}", app.path("web"));
    wait_registry(
        &zk,
        &path,
        "2 endpoints written with the chart's RBAC",
        |_, e| up(e) == 2,
    )
    .await;
    let log = std::fs::read_to_string(&op.log).unwrap();
    assert!(
        !log.contains("Forbidden") && !log.contains("forbidden"),
        "RBAC denied something:\n{}",
        op.log_tail()
    );
    let _ = std::process::Command::new(&helm)
        .args(["uninstall", "podkeeper", "-n", &ops.name, "--kubeconfig"])
        .arg(&kubeconfig)
        .output();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opt_in_guard_keeps_the_last_endpoints_when_all_would_vanish() {
    env();
    let ns = TestNs::new("guard").await;
    ns.apply(&deployment("web-stable", "stable", 2, ""));
    ns.apply(&REGISTRATION.replace(
        "  drainSeconds: 3\n",
        "  drainSeconds: 3\n  keepLastEndpoints: true\n",
    ));
    let zk = zk_client().await;
    let path = ns.path("web");
    let (_, eps) = wait_registry(&zk, &path, "2 endpoints", |_, e| up(e) == 2).await;
    let pods: Vec<String> = eps.keys().cloned().collect();
    for p in &pods {
        ns.kubectl(&[
            "annotate",
            "pod",
            p,
            "podkeeper.io/test-state=NotReady",
            "--overwrite",
        ]);
    }
    let (_, kept) = wait_registry(&zk, &path, "service marked stale", |s, _| s.stale).await;
    // The pods fail one after the other: the first is removed as usual, the last one standing
    // is kept, still pickable, instead of leaving the service empty.
    assert!(
        !kept.is_empty() && kept.keys().all(|k| pods.contains(k)),
        "{kept:?}"
    );
    assert!(
        kept.values()
            .all(|e| e.status == EndpointStatus::Up && e.weight > 0),
        "{kept:?}"
    );
    wait_until(
        Duration::from_secs(30),
        "KeptLastEndpoints event",
        || async {
            ns.kubectl(&[
                "get",
                "events",
                "--field-selector",
                "reason=KeptLastEndpoints",
            ])
            .contains("keeping the last")
        },
    )
    .await;
    ns.kubectl(&[
        "annotate",
        "pod",
        &pods[0],
        "podkeeper.io/test-state=Ready",
        "--overwrite",
    ]);
    let (_, eps) = wait_registry(&zk, &path, "back to the ready pods, not stale", |s, e| {
        !s.stale && e.len() == 1
    })
    .await;
    assert!(eps.contains_key(&pods[0]));
}

/// The operator limited to two namespaces runs one pod watcher per namespace. When both re-list
/// at once (at start, and whenever a resource asks for a new pod annotation), each re-list must
/// judge only its own namespace: no endpoint may be drained or removed by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_of_two_namespaces_relist_without_touching_endpoints() {
    use zookeeper_client::{AddWatchMode, EventType};
    let shared = env();
    let a = TestNs::new("relist-a").await;
    let b = TestNs::new("relist-b").await;
    let plain = "apiVersion: podkeeper.io/v1alpha1\nkind: ServiceRegistration\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  port: http\n";
    for ns in [&a, &b] {
        ns.apply(&deployment("web-stable", "stable", 2, ""));
        ns.apply(plain);
    }
    let chroot = format!("/relist-{}", std::process::id());
    let op = harness::Operator::start(
        "two-namespaces",
        &shared.zk.connect_string(),
        &[
            ("PODKEEPER_NAMESPACES", &format!("{},{}", a.name, b.name)),
            ("PODKEEPER_ZK_CHROOT", &chroot),
            ("PODKEEPER_CLUSTER_ID", "e2e"),
        ],
    );
    let zk = zk_client().await;
    for ns in [&a, &b] {
        let path = format!("{chroot}{}", ns.path("web"));
        wait_registry(&zk, &path, "2 endpoints in each namespace", |_, e| {
            up(e) == 2
        })
        .await;
    }
    // Completed pod lists, as the operator counts them on /metrics.
    let lists = || {
        let (_, body) = harness::http_get(&op.health, "/metrics").unwrap_or_default();
        body.lines()
            .find_map(|l| l.strip_prefix("podkeeper_pod_lists_completed_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as usize
    };
    let before = lists();
    // From here on, every change under the chroot is recorded.
    let mut watcher = zk
        .watch(&chroot, AddWatchMode::PersistentRecursive)
        .await
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = {
        let seen = seen.clone();
        tokio::spawn(async move {
            loop {
                let ev = watcher.changed().await;
                seen.lock().unwrap().push((ev.event_type, ev.path.clone()));
            }
        })
    };
    // A resource asking for a pod annotation makes both watchers re-list at once.
    a.apply(
        "apiVersion: podkeeper.io/v1alpha1\nkind: ServiceRegistration\nmetadata: {name: other}\nspec:\n  selector: {matchLabels: {app: other}}\n  port: http\n  metadata: {annotations: [example.com/relist-trigger]}\n",
    );
    wait_until(
        Duration::from_secs(60),
        "both watchers re-listed",
        || async { lists() >= before + 2 },
    )
    .await;
    // A change made after the re-lists: once it is in ZooKeeper, anything the re-lists
    // wrongly wrote before it has been seen too.
    b.kubectl(&["scale", "deploy/web-stable", "--replicas=3"]);
    let path_b = format!("{chroot}{}", b.path("web"));
    wait_registry(&zk, &path_b, "the third endpoint in b", |_, e| up(e) == 3).await;
    recorder.abort();
    let events = seen.lock().unwrap().clone();
    let touched: Vec<_> = events
        .iter()
        .filter(|(t, p)| {
            p.contains("/endpoints/")
                && matches!(t, EventType::NodeDeleted | EventType::NodeDataChanged)
        })
        .collect();
    assert!(
        touched.is_empty(),
        "the re-lists changed endpoints: {touched:?}\n{}",
        op.log_tail()
    );
    let path_a = format!("{chroot}{}", a.path("web"));
    let (_, eps) = common::registry::read(&zk, &path_a).await.unwrap();
    assert_eq!(up(&eps), 2, "{eps:?}");
}

/// Providers a Dubbo consumer's line lists, by host.
fn dubbo_providers(line: &serde_json::Value) -> Option<std::collections::BTreeMap<String, i64>> {
    let list = line.get("providers")?.as_array()?;
    Some(
        list.iter()
            .map(|p| {
                (
                    p["host"].as_str().unwrap().to_string(),
                    p["weight"].as_i64().unwrap(),
                )
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dubbo_and_spring_consumers_read_what_the_operator_publishes_beside_a_vm_provider() {
    use common::clients::{self, Client as Java};
    let shared = env();
    let ns = TestNs::new("formats").await;
    let zk = shared.zk.connect_string();
    let iface = format!("org.example.{}.Greeter", ns.name.replace('-', "_"));
    let service = format!("greeter-{}", ns.name);
    const LIMIT: Duration = Duration::from_secs(120);
    // A provider on a VM registered itself through Dubbo's own registry, as before the move.
    let vm_url = format!(
        "dubbo://127.0.0.9:20880/{iface}?application=vm-app&group=g1&version=1.0.0\
         &interface={iface}&side=provider&weight=100"
    );
    let vm = clients::spawn(Java::Dubbo, &["provide", &zk, "dubbo", &vm_url]);
    vm.wait_for(0, LIMIT, "the VM registration", |l| {
        l.get("registered").is_some()
    });
    let consumer = clients::spawn(
        Java::Dubbo,
        &["consume", &zk, "dubbo", &iface, "g1", "1.0.0"],
    );

    ns.apply(&deployment("web-stable", "stable", 3, ""));
    ns.apply(&format!(
        r#"apiVersion: podkeeper.io/v1alpha1
kind: ServiceRegistration
metadata: {{name: web}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  port: http
  serviceName: {service}
  registries:
  - format: Native
  - format: Dubbo
    dubbo: {{interfaces: ["{iface}"], group: g1, version: "1.0.0", application: web}}
  - format: Curator
    curator: {{}}
"#
    ));
    let pods_and_vm = |n: usize| {
        move |l: &serde_json::Value| {
            dubbo_providers(l).is_some_and(|p| {
                p.len() == n + 1
                    && p.get("127.0.0.9") == Some(&100)
                    && p.iter()
                        .filter(|(h, _)| *h != "127.0.0.9")
                        .all(|(_, w)| *w > 0)
            })
        }
    };
    let (three, _) = consumer.wait_for(0, LIMIT, "3 pods and the VM", pods_and_vm(3));
    let query = clients::run(Java::Curator, &["query", &zk, "/services", &service], b"");
    let instances = query[0]["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("Spring's queryForInstances failed: {}", query[0]));
    assert_eq!(instances.len(), 3, "{}", query[0]);
    for i in instances {
        assert_eq!(i["port"], 8080);
        assert_eq!(i["metadata"]["instance_status"], "UP", "{i}");
    }

    // Scale down: the consumer's next view has one pod fewer, the VM still there.
    ns.kubectl(&["scale", "deploy/web-stable", "--replicas=2"]);
    let (two, _) = consumer.wait_for(three + 1, LIMIT, "2 pods and the VM", pods_and_vm(2));
    // The resource goes: ours go, the VM stays.
    ns.kubectl(&["delete", "serviceregistration", "web", "--wait=true"]);
    consumer.wait_for(two + 1, LIMIT, "only the VM", pods_and_vm(0));
    assert!(
        consumer
            .lines()
            .iter()
            .skip(three)
            .filter_map(dubbo_providers)
            .all(|p| p.get("127.0.0.9") == Some(&100)),
        "the VM provider was visible in every notification"
    );
    let query = clients::run(Java::Curator, &["query", &zk, "/services", &service], b"");
    assert_eq!(
        query[0]["instances"].as_array().map(Vec::len),
        Some(0),
        "{}",
        query[0]
    );
}

/// Two kwok nodes of this test only (tainted, so other tests' pods stay off; ours name them):
/// the first with an ExternalIP, the second without. Deleted on drop.
struct AddressNodes {
    names: [String; 2],
    internal: [String; 2],
}

impl AddressNodes {
    async fn create() -> AddressNodes {
        let id = std::process::id() % 10_000;
        let names = [format!("e2e-addr-a-{id}"), format!("e2e-addr-b-{id}")];
        let internal = ["127.0.0.21".to_string(), "127.0.0.22".to_string()];
        for (name, ip) in names.iter().zip(&internal) {
            let yaml = format!(
                r#"apiVersion: v1
kind: Node
metadata:
  name: {name}
  annotations: {{kwok.x-k8s.io/node: fake, podkeeper.io/node-ip: "{ip}"}}
  labels: {{type: kwok, kubernetes.io/hostname: {name}}}
spec:
  taints: [{{key: podkeeper.io/e2e, value: addresses, effect: NoSchedule}}]
"#
            );
            let (ok, out) = kubectl(&["apply", "-f", "-"], Some(&yaml));
            assert!(ok, "{out}");
        }
        let (ok, out) = kubectl(
            &[
                "patch",
                "node",
                &names[0],
                "--subresource=status",
                "--type=strategic",
                "-p",
                r#"{"status":{"addresses":[{"type":"ExternalIP","address":"203.0.113.21"}]}}"#,
            ],
            None,
        );
        assert!(ok, "{out}");
        let nodes = AddressNodes { names, internal };
        for name in &nodes.names {
            wait_until(
                Duration::from_secs(30),
                "test node initialised by kwok",
                || async {
                    let jp = "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}";
                    let (_, out) = kubectl(&["get", "node", name, "-o", jp], None);
                    !out.trim().is_empty()
                },
            )
            .await;
        }
        nodes
    }
}

impl Drop for AddressNodes {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = kubectl(&["delete", "node", n, "--wait=false"], None);
        }
    }
}

fn address_pod(name: &str, node: &str, host_port: bool) -> String {
    let hp = if host_port { ", hostPort: 30080" } else { "" };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: addr, hp: "{host_port}"}}
spec:
  nodeName: {node}
  tolerations: [{{key: podkeeper.io/e2e, operator: Exists}}]
  terminationGracePeriodSeconds: 0
  containers:
  - name: app
    image: example.invalid/web:1
    ports: [{{name: http, containerPort: 8080{hp}}}, {{name: admin, containerPort: 9090}}]
"#
    )
}

fn address_registration(name: &str, selector: &str, address: &str) -> String {
    format!(
        r#"apiVersion: podkeeper.io/v1alpha1
kind: ServiceRegistration
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {selector}}}
  port: http
  address: {address}
"#
    )
}

/// (host, port) of each endpoint at `path`, once `n` are published.
async fn addresses(
    zk: &zookeeper_client::Client,
    path: &str,
    n: usize,
) -> std::collections::BTreeMap<String, (String, u16)> {
    let (_, eps) = wait_registry(zk, path, &format!("{n} endpoints"), |_, e| e.len() == n).await;
    eps.into_iter()
        .map(|(k, e)| (k, (e.host, e.port)))
        .collect()
}

/// The unresolved pods on a resource's status, once there are `n`.
async fn unresolved(ns: &TestNs, name: &str, n: usize) -> Vec<(String, String)> {
    wait_until(
        Duration::from_secs(30),
        "unresolved pods on the status",
        || async {
            let st = svcreg(ns, name).await.status.unwrap_or_default();
            st.unresolved as usize == n && st.unresolved_addresses.len() == n
        },
    )
    .await;
    let st = svcreg(ns, name).await.status.unwrap_or_default();
    st.unresolved_addresses
        .into_iter()
        .map(|u| (u.pod, u.reason))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_address_mode_publishes_the_chosen_address_and_reports_what_it_cannot_resolve() {
    env();
    let nodes = AddressNodes::create().await;
    let ns = TestNs::new("addresses").await;
    let [a, b] = &nodes.names;
    ns.apply(&address_pod("on-a", a, true));
    ns.apply(&address_pod("on-b", b, true));
    ns.apply(&address_pod("no-hostport", a, false));
    let pod_ip = |pod: &str| {
        ns.kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"])
            .trim()
            .to_string()
    };
    ns.apply(
        r#"apiVersion: v1
kind: Service
metadata: {name: local}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: addr}
  ports: [{name: web, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: cluster}
spec:
  type: NodePort
  selector: {app: addr}
  ports: [{name: web, port: 80, targetPort: http}]
"#,
    );
    let node_port: u16 = ns
        .kubectl(&[
            "get",
            "svc",
            "local",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .trim()
        .parse()
        .unwrap();
    let every = "{app: addr}";
    let with_hp = "{app: addr, hp: \"true\"}";
    for (name, selector, address) in [
        ("podip", every, "{}"),
        ("hostip", every, "{mode: HostIP}"),
        (
            "external",
            with_hp,
            "{mode: HostIP, nodeAddressType: ExternalIP}",
        ),
        ("nodeport", every, "{mode: NodePort, service: local}"),
        ("refused", every, "{mode: NodePort, service: cluster}"),
        (
            "template",
            every,
            "{mode: Template, host: '{pod}.addr.{namespace}.svc', port: 7000}",
        ),
    ] {
        ns.apply(&address_registration(name, selector, address));
    }
    let zk = zk_client().await;
    let (ia, ib) = (nodes.internal[0].clone(), nodes.internal[1].clone());

    let got = addresses(&zk, &ns.path("podip"), 3).await;
    for pod in ["on-a", "on-b", "no-hostport"] {
        assert_eq!(got[pod], (pod_ip(pod), 8080), "PodIP: {pod}");
    }
    let got = addresses(&zk, &ns.path("hostip"), 2).await;
    assert_eq!(got["on-a"], (ia.clone(), 30080));
    assert_eq!(got["on-b"], (ib.clone(), 30080));
    assert!(
        !got.contains_key("no-hostport"),
        "never published with another address"
    );
    assert_eq!(
        unresolved(&ns, "hostip", 1).await,
        vec![(
            "no-hostport".to_string(),
            "container port 8080 has no hostPort".to_string()
        )]
    );
    let got = addresses(&zk, &ns.path("external"), 1).await;
    assert_eq!(got["on-a"], ("203.0.113.21".to_string(), 30080));
    assert_eq!(
        unresolved(&ns, "external", 1).await,
        vec![(
            "on-b".to_string(),
            format!("node {b} has no ExternalIP address")
        )]
    );
    let got = addresses(&zk, &ns.path("nodeport"), 3).await;
    assert_eq!(got["on-a"], (ia.clone(), node_port));
    assert_eq!(got["no-hostport"], (ia.clone(), node_port));
    assert_eq!(got["on-b"], (ib.clone(), node_port));
    let got = addresses(&zk, &ns.path("template"), 3).await;
    assert_eq!(got["on-a"], (format!("on-a.addr.{}.svc", ns.name), 7000));

    // Every format publishes the chosen address, not the pod IP.
    let service = format!("addr-{}", ns.name);
    ns.apply(&format!(
        r#"apiVersion: podkeeper.io/v1alpha1
kind: ServiceRegistration
metadata: {{name: formats}}
spec:
  selector: {{matchLabels: {with_hp}}}
  port: http
  serviceName: {service}
  address: {{mode: HostIP}}
  registries:
  - format: Native
  - format: Dubbo
    dubbo: {{interfaces: ["e2e.Addr{pid}"], application: addr}}
  - format: Curator
    curator: {{}}
  - format: ServerSet
    serverSet: {{basePath: /services/serversets}}
"#,
        pid = std::process::id()
    ));
    wait_until(
        Duration::from_secs(30),
        "4 registries with 2 endpoints each",
        || async {
            let st = svcreg(&ns, "formats").await.status.unwrap_or_default();
            st.registries.len() == 4 && st.registries.iter().all(|r| r.published == 2)
        },
    )
    .await;
    let st = svcreg(&ns, "formats").await.status.unwrap();
    for reg in st.registries.iter().skip(1) {
        let mut leaves = Vec::new();
        let mut todo: Vec<(String, usize)> = reg.paths.iter().map(|p| (p.clone(), 0)).collect();
        while let Some((path, depth)) = todo.pop() {
            let children = zk.list_children(&path).await.unwrap_or_default();
            if children.is_empty() || depth == 2 {
                let data = zk.get_data(&path).await.map(|(d, _)| d).unwrap_or_default();
                let name = path.replace("%3A", ":").replace("%2F", "/");
                leaves.push(format!("{name} {}", String::from_utf8_lossy(&data)));
            }
            todo.extend(
                children
                    .into_iter()
                    .map(|c| (format!("{path}/{c}"), depth + 1)),
            );
        }
        for (node_ip, pod) in [(&ia, "on-a"), (&ib, "on-b")] {
            let pod_ip = pod_ip(pod);
            assert!(
                leaves
                    .iter()
                    .any(|l| l.contains(node_ip.as_str()) && l.contains("30080")),
                "{:?}: no node with {node_ip}:30080 in {leaves:#?}",
                reg.format
            );
            assert!(
                leaves.iter().all(|l| !l.contains(&pod_ip)),
                "{:?}: the pod IP {pod_ip} is published: {leaves:#?}",
                reg.format
            );
        }
    }

    // Without externalTrafficPolicy: Local the node port may land on any node: refused.
    wait_until(
        Duration::from_secs(30),
        "NodePort without Local refused on the status",
        || async {
            let sr = svcreg(&ns, "refused").await;
            condition(&sr, "Synced").is_some_and(|(s, r)| s == "False" && r == "AddressRefused")
        },
    )
    .await;
    let sr = svcreg(&ns, "refused").await;
    let msg = &sr.status.unwrap().conditions[1].message;
    assert!(msg.contains("externalTrafficPolicy: Local"), "{msg}");
    assert!(
        common::registry::read(&zk, &ns.path("refused"))
            .await
            .is_none(),
        "nothing published for a refused address"
    );
    // Fixing the Service is picked up from the Service watch.
    ns.kubectl(&[
        "patch",
        "svc",
        "cluster",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
    ]);
    addresses(&zk, &ns.path("refused"), 3).await;

    // A hostNetwork pod is reached on its node at its container port.
    ns.apply(
        &address_pod("host-net", a, false)
            .replace("app: addr,", "app: addr-hn,")
            .replace("  nodeName:", "  hostNetwork: true\n  nodeName:"),
    );
    ns.apply(&address_registration(
        "hostnet",
        "{app: addr-hn}",
        "{mode: HostIP}",
    ));
    let got = addresses(&zk, &ns.path("hostnet"), 1).await;
    assert_eq!(got["host-net"], (ia.clone(), 8080));

    // The API server refuses a mode without its field, another mode's field, unknown placeholders.
    for (address, why) in [
        (
            "{mode: HostIP, port: 80}",
            "address.port is only for mode Template",
        ),
        (
            "{mode: Template, host: '{ip}.x'}",
            "the placeholders {pod}, {namespace}, {node}, {podIP}",
        ),
        (
            "{mode: PodIP, nodeAddressType: ExternalIP}",
            "nodeAddressType is only for modes HostIP and NodePort",
        ),
    ] {
        let out = ns.apply_rejected(&address_registration("bad", every, address));
        assert!(out.contains(why), "{address}: {out}");
    }
    let out = ns.apply_rejected(&address_registration("bad", every, "{mode: NodePort}"));
    assert!(
        out.contains("set `service` exactly when mode is NodePort"),
        "{out}"
    );
    drop(nodes);
}

fn gated_deployment(version: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: gated}}
spec:
  replicas: 3
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  selector: {{matchLabels: {{app: gated}}}}
  template:
    metadata:
      labels: {{app: gated}}
      annotations: {{version: "{version}"}}
    spec:
      terminationGracePeriodSeconds: 2
      readinessGates: [{{conditionType: podkeeper.io/registered}}]
      containers:
      - name: app
        image: example.invalid/web:{version}
        ports: [{{name: http, containerPort: 8080}}]
"#
    )
}

/// Pod name → (Ready, ContainersReady, podkeeper.io/registered, terminating, version).
async fn gated_pods(
    ns: &TestNs,
) -> std::collections::BTreeMap<String, (bool, bool, Option<bool>, bool, String)> {
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(harness::client().await, &ns.name);
    let pods = api
        .list(&kube::api::ListParams::default().labels("app=gated"))
        .await
        .unwrap();
    pods.items
        .into_iter()
        .map(|p| {
            let conds = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let get = |t: &str| {
                conds
                    .iter()
                    .find(|c| c.type_ == t)
                    .map(|c| c.status == "True")
            };
            let version = p
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("version").cloned())
                .unwrap_or_default();
            (
                p.metadata.name.clone().unwrap_or_default(),
                (
                    get("Ready").unwrap_or(false),
                    get("ContainersReady").unwrap_or(false),
                    get("podkeeper.io/registered"),
                    p.metadata.deletion_timestamp.is_some(),
                    version,
                ),
            )
        })
        .collect()
}

/// Reads the registry every 50 ms from its own client (reconnecting after failures) and keeps
/// the fewest serving endpoints seen and when reads failed.
struct RegistryWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<RegistrySeen>,
}

#[derive(Debug, Default)]
struct RegistrySeen {
    reads: usize,
    min_up: Option<usize>,
    failed: Vec<std::time::Instant>,
}

impl RegistryWatch {
    fn start(connect: String, path: String) -> RegistryWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen = RegistrySeen::default();
            let mut client: Option<zookeeper_client::Client> = None;
            let limit = Duration::from_millis(500);
            while !flag.load(std::sync::atomic::Ordering::Acquire) {
                if client.is_none() {
                    let connect = zookeeper_client::Client::connector()
                        .with_session_timeout(Duration::from_secs(4))
                        .connect(&connect);
                    client = tokio::time::timeout(limit, connect)
                        .await
                        .ok()
                        .and_then(Result::ok);
                }
                let read = match &client {
                    Some(c) => tokio::time::timeout(limit, common::registry::read(c, &path))
                        .await
                        .ok()
                        .flatten(),
                    None => None,
                };
                match read {
                    Some((_, eps)) => {
                        seen.reads += 1;
                        let n = up(&eps);
                        seen.min_up = Some(seen.min_up.map_or(n, |m| m.min(n)));
                    }
                    None => {
                        seen.failed.push(std::time::Instant::now());
                        client = None;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        });
        RegistryWatch { stop, task }
    }

    async fn finish(self) -> RegistrySeen {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.task.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registered_gate_holds_a_rolling_update_while_zookeeper_is_down() {
    use std::time::Instant;
    env();
    let mut zk = common::zk::ZkServer::start();
    let ns = TestNs::new("gate").await;
    // Dropped before the private ZooKeeper: a resource left behind on a stopped ensemble would
    // keep its finalizer (and the shared operator's readiness) forever.
    struct Unfinalize(String);
    impl Drop for Unfinalize {
        fn drop(&mut self) {
            // Deleted first, or the operator would put the finalizer back.
            let _ = kubectl(
                &["-n", &self.0, "delete", "svcreg", "gated", "--wait=false"],
                None,
            );
            let _ = kubectl(
                &[
                    "-n",
                    &self.0,
                    "patch",
                    "svcreg",
                    "gated",
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ],
                None,
            );
        }
    }
    let _unfinalize = Unfinalize(ns.name.clone());
    ns.apply(&gated_deployment(1));
    ns.apply(&format!(
        r#"apiVersion: podkeeper.io/v1alpha1
kind: ServiceRegistration
metadata: {{name: gated}}
spec:
  selector: {{matchLabels: {{app: gated}}}}
  port: http
  drainSeconds: 1
  zookeeper: {{connect: "{}"}}
"#,
        zk.connect_string()
    ));
    let path = ns.path("gated");
    let zkc = zookeeper_client::Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .connect(&zk.connect_string())
        .await
        .unwrap();
    wait_registry(&zkc, &path, "3 gated pods published", |_, e| up(e) == 3).await;
    // Set: every pod's gate True, and Ready follows (kwok plays the kubelet's part).
    wait_until(
        Duration::from_secs(30),
        "gates True and pods Ready",
        || async {
            let pods = gated_pods(&ns).await;
            pods.len() == 3
                && pods
                    .values()
                    .all(|(ready, _, gate, _, _)| *ready && *gate == Some(true))
        },
    )
    .await;

    // Cleared: a pod whose containers stop being ready leaves the registry and its gate goes
    // False; it comes back once they are ready again.
    let victim = gated_pods(&ns).await.into_keys().next().unwrap();
    ns.kubectl(&[
        "annotate",
        "pod",
        &victim,
        "podkeeper.io/test-state=NotReady",
    ]);
    wait_registry(&zkc, &path, "the not-ready pod removed", |_, e| {
        up(e) == 2 && !e.contains_key(&victim)
    })
    .await;
    wait_until(Duration::from_secs(30), "its gate False", || async {
        gated_pods(&ns).await[&victim].2 == Some(false)
    })
    .await;
    ns.kubectl(&[
        "annotate",
        "pod",
        &victim,
        "--overwrite",
        "podkeeper.io/test-state=Ready",
    ]);
    wait_registry(&zkc, &path, "it is back", |_, e| up(e) == 3).await;
    wait_until(Duration::from_secs(30), "its gate True again", || async {
        let p = &gated_pods(&ns).await[&victim];
        p.0 && p.2 == Some(true)
    })
    .await;
    wait_until(Duration::from_secs(60), "deployment available", || async {
        let out = ns.kubectl(&[
            "get",
            "deploy",
            "gated",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ]);
        out.trim() == "3"
    })
    .await;

    // Rolling update with ZooKeeper down: it must not advance.
    let watch = RegistryWatch::start(zk.connect_string(), path.clone());
    wait_until(Duration::from_secs(10), "the poller reads", || async {
        zkc.get_data(&path).await.is_ok()
    })
    .await;
    let before: Vec<String> = gated_pods(&ns).await.into_keys().collect();
    tokio::task::block_in_place(|| zk.stop());
    let down_at = Instant::now();
    ns.apply(&gated_deployment(2));
    wait_until(
        Duration::from_secs(30),
        "a new pod with ready containers",
        || async {
            gated_pods(&ns)
                .await
                .values()
                .any(|(_, containers, _, _, v)| *containers && v == "2")
        },
    )
    .await;
    let new_pod_seen = Instant::now();
    let hold = Instant::now() + Duration::from_secs(8);
    while Instant::now() < hold {
        let pods = gated_pods(&ns).await;
        for (name, (ready, _, gate, terminating, v)) in &pods {
            if v == "2" {
                assert!(
                    !ready && *gate != Some(true),
                    "new pod {name} Ready while ZooKeeper is down: {pods:?}"
                );
            } else {
                assert!(
                    !terminating,
                    "old pod {name} deleted while ZooKeeper is down: {pods:?}"
                );
            }
        }
        assert!(
            before.iter().all(|p| pods.contains_key(p)),
            "an old pod went: {pods:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::task::block_in_place(|| zk.restart());
    let up_at = Instant::now();
    wait_until(Duration::from_secs(120), "rollout complete", || async {
        let pods = gated_pods(&ns).await;
        pods.len() == 3
            && pods
                .values()
                .all(|(ready, _, gate, t, v)| *ready && *gate == Some(true) && !t && v == "2")
    })
    .await;
    let rolled_in = up_at.elapsed();
    let (_, eps) = wait_registry(&zkc, &path, "exactly the new pods", |_, e| {
        e.len() == 3 && up(e) == 3
    })
    .await;
    let now: Vec<String> = gated_pods(&ns).await.into_keys().collect();
    assert_eq!(eps.keys().cloned().collect::<Vec<_>>(), now);
    let seen = watch.finish().await;
    let down_reads = seen
        .failed
        .iter()
        .filter(|t| **t >= down_at && **t <= up_at)
        .count();
    eprintln!(
        "registry reads: {} ok, {} failed ({down_reads} while ZooKeeper was down for {:?}); fewest serving endpoints: {:?}; rollout done {rolled_in:?} after ZooKeeper came back",
        seen.reads,
        seen.failed.len(),
        up_at - down_at,
        seen.min_up
    );
    assert!(
        down_at < new_pod_seen && new_pod_seen < up_at,
        "the new pod came up while ZooKeeper was down"
    );
    assert!(
        down_reads > 10,
        "the outage overlapped the rollout: {seen:?}"
    );
    assert!(seen.reads > 10, "{seen:?}");
    assert!(
        seen.min_up.is_some_and(|m| m >= 1),
        "the registry emptied: {seen:?}"
    );
    // Only this test has gated pods: the shared operator's counters are its writes.
    let (_, metrics) = harness::http_get(&env().health, "/metrics").unwrap();
    let patches: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("podkeeper_readiness_gate_patches_total{"))
        .collect();
    eprintln!("gate patches: {patches:?}");
    assert!(
        patches.iter().all(|l| !l.contains("result=\"error\"")),
        "{patches:?}"
    );
    // Deregister while the ensemble still runs.
    ns.kubectl(&["delete", "svcreg", "gated", "--wait=true", "--timeout=60s"]);
    assert!(common::registry::read(&zkc, &path).await.is_none());
}

/// The children of `dir` with their data and modification zxid; empty when `dir` is absent.
async fn children(
    zk: &zookeeper_client::Client,
    dir: &str,
) -> std::collections::BTreeMap<String, (Vec<u8>, i64)> {
    let mut out = std::collections::BTreeMap::new();
    for name in zk.list_children(dir).await.unwrap_or_default() {
        if let Ok((data, stat)) = zk.get_data(&format!("{dir}/{name}")).await {
            out.insert(name, (data, stat.mzxid));
        }
    }
    out
}

/// Each Ready pod's Ready condition `lastTransitionTime` (Unix ms), by pod IP. (kwok turns
/// ContainersReady True at the same moment, so this is the time the operator publishes.)
async fn ready_times(ns: &TestNs) -> std::collections::BTreeMap<String, i64> {
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(harness::client().await, &ns.name);
    let list = pods.list(&Default::default()).await.unwrap();
    list.items
        .iter()
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            let ready = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Ready" && c.status == "True")?;
            let at = ready.last_transition_time.as_ref()?.0.as_millisecond();
            Some((status.pod_ip.clone()?, at))
        })
        .collect()
}

/// Issue 9's leftover, end to end: a provider a VM registered itself (a Dubbo URL) and a
/// Spring/Curator instance beside podkeeper's nodes survive an operator restart untouched (same
/// bytes, same modification zxid), while podkeeper's own nodes converge on a scale-up made
/// while it was down. Every format carries each pod's ready time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_nodes_survive_an_operator_restart_and_ours_converge() {
    use podkeeper::zk::format::curator;
    use podkeeper::zk::format::dubbo;
    use podkeeper::zk::format::publish::OwnerTag;
    use zookeeper_client::{Acls, CreateMode};
    const LIMIT: Duration = Duration::from_secs(120);
    let shared = env();
    let ns = TestNs::new("restart-foreign").await;
    let chroot = format!("/restart-{}", std::process::id());
    let iface = format!("org.example.{}.Greeter", ns.name.replace('-', "_"));
    let service = format!("greeter-{}", ns.name);
    ns.apply(&deployment("web-stable", "stable", 2, ""));
    ns.apply(&format!(
        r#"apiVersion: podkeeper.io/v1alpha1
kind: ServiceRegistration
metadata: {{name: web}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  port: http
  serviceName: {service}
  warmupSeconds: 60
  registries:
  - format: Native
  - format: Dubbo
    dubbo: {{interfaces: ["{iface}"], group: g1, version: "1.0.0"}}
  - format: Curator
    curator: {{}}
"#
    ));
    // An operator of our own, on a chroot: it can be restarted without touching the shared one.
    let zk_connect = shared.zk.connect_string();
    let settings = [
        ("PODKEEPER_NAMESPACES", ns.name.as_str()),
        ("PODKEEPER_ZK_CHROOT", chroot.as_str()),
        ("PODKEEPER_CLUSTER_ID", "e2e"),
    ];
    let op = harness::Operator::start("restart-first", &zk_connect, &settings);
    let zk = zk_client().await;
    let owner = OwnerTag::new("e2e", &ns.name, "web");
    let providers = format!("{chroot}/dubbo/{iface}/providers");
    let instances = format!("{chroot}/services/{service}");
    let ours = |dir: &str, nodes: &std::collections::BTreeMap<String, (Vec<u8>, i64)>| {
        let dubbo_dir = dir.contains("/dubbo/");
        nodes
            .iter()
            .filter(|(name, (data, _))| {
                if dubbo_dir {
                    dubbo::is_ours(name, data, &owner)
                } else {
                    curator::is_ours(name, data, &owner)
                }
            })
            .count()
    };
    for dir in [&providers, &instances] {
        wait_until(LIMIT, "2 pods in each format", || async {
            ours(dir, &children(&zk, dir).await) == 2
        })
        .await;
    }

    // The VM registers itself as Dubbo and Spring do: ephemeral nodes of its own session.
    let vm_url = format!(
        "dubbo://127.0.0.9:20880/{iface}?application=vm-app&dynamic=true&group=g1\
         &interface={iface}&side=provider&timestamp=1767225000000&version=1.0.0&weight=100"
    );
    let vm_provider = format!("{providers}/{}", dubbo::java_url_encode(&vm_url));
    let vm_instance = format!("{instances}/1d2c6a9e-6d3f-4a7b-9c52-0f3c2b1a9e77");
    let instance_json = format!(
        r#"{{"name":"{service}","id":"1d2c6a9e-6d3f-4a7b-9c52-0f3c2b1a9e77","address":"192.168.7.9","port":8080,"sslPort":null,"payload":{{"@class":"{}","id":"vm-app-1","name":"{service}","metadata":{{"instance_status":"UP"}}}},"registrationTimeUTC":1767225000000,"serviceType":"DYNAMIC","uriSpec":{{"parts":[{{"value":"scheme","variable":true}},{{"value":"://","variable":false}},{{"value":"address","variable":true}},{{"value":":","variable":false}},{{"value":"port","variable":true}}]}}}}"#,
        curator::SPRING_PAYLOAD_CLASS
    );
    let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
    for (path, data) in [
        (&vm_provider, b"127.0.0.9".to_vec()),
        (&vm_instance, instance_json.into_bytes()),
    ] {
        zk.create(path, &data, &ephemeral).await.unwrap();
    }
    let foreign = || async {
        let mut out = Vec::new();
        for path in [&vm_provider, &vm_instance] {
            let (data, stat) = zk.get_data(path).await.expect("the foreign node is there");
            out.push((data, stat.mzxid, stat.version));
        }
        out
    };
    let before = foreign().await;

    // Restart, with a scale-up while the operator is down.
    drop(op);
    ns.kubectl(&["scale", "deploy/web-stable", "--replicas=3"]);
    let op = harness::Operator::start("restart-second", &zk_connect, &settings);
    for dir in [&providers, &instances] {
        wait_until(LIMIT, "3 pods in each format after the restart", || async {
            ours(dir, &children(&zk, dir).await) == 3
        })
        .await;
    }
    let native = format!("{chroot}{}", ns.path(&service));
    wait_registry(&zk, &native, "3 native endpoints", |_, e| up(e) == 3).await;
    assert_eq!(
        foreign().await,
        before,
        "the VM's nodes were rewritten\n{}",
        op.log_tail()
    );
    assert_eq!(
        children(&zk, &providers).await.len(),
        4,
        "3 pods and the VM"
    );
    assert_eq!(
        children(&zk, &instances).await.len(),
        4,
        "3 pods and the VM"
    );

    // The ready time, in every format, is each pod's.
    let ready = ready_times(&ns).await;
    let (service_record, endpoints) = common::registry::read(&zk, &native).await.unwrap();
    assert_eq!(service_record.warmup_seconds, 60);
    for e in endpoints.values() {
        assert_ne!(e.ready_since_ms, 0, "{e:?}");
        assert_eq!(Some(&e.ready_since_ms), ready.get(&e.host), "{e:?}");
    }
    for (name, (data, _)) in children(&zk, &providers).await {
        let d = dubbo::decode(&name, &data).unwrap();
        if d.owner.is_some() {
            assert_eq!(
                d.metadata["timestamp"],
                ready[&d.host].to_string(),
                "{name}"
            );
            assert_eq!(d.metadata["warmup"], "60000");
        }
    }
    for (name, (data, _)) in children(&zk, &instances).await {
        let json: serde_json::Value = serde_json::from_slice(&data).unwrap();
        if name != "1d2c6a9e-6d3f-4a7b-9c52-0f3c2b1a9e77" {
            let host = json["address"].as_str().unwrap();
            assert_eq!(json["registrationTimeUTC"], ready[host], "{name}");
        }
    }
}

/// A resource publishing natively, in Dubbo (two interfaces) and in Curator, with `path`.
fn moving_registration(service: &str, ifaces: &[&str], curator: bool, path: &str) -> String {
    let ifaces = ifaces
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let curator = if curator {
        "  - format: Curator\n    curator: {}\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: podkeeper.io/v1alpha1
kind: ServiceRegistration
metadata: {{name: web}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  port: http
  serviceName: {service}
  path: {path}
  registries:
  - format: Native
  - format: Dubbo
    dubbo: {{interfaces: [{ifaces}], group: g1, version: "1.0.0", application: web}}
{curator}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_and_registry_edits_never_empty_a_consumer_s_list_and_leave_nothing_behind() {
    use common::clients::{self, Client as Java};
    use common::registry::FolderWatch;
    let shared = env();
    let ns = TestNs::new("move").await;
    let connect = shared.zk.connect_string();
    let iface = |n: &str| format!("org.example.{}.{n}", ns.name.replace('-', "_"));
    let (kept, dropped) = (iface("Kept"), iface("Dropped"));
    let service = format!("mover-{}", ns.name);
    const LIMIT: Duration = Duration::from_secs(120);
    let vm_url = format!(
        "dubbo://127.0.0.9:20880/{kept}?application=vm-app&group=g1&version=1.0.0\
         &interface={kept}&side=provider&weight=100"
    );
    let vm = clients::spawn(Java::Dubbo, &["provide", &connect, "dubbo", &vm_url]);
    vm.wait_for(0, LIMIT, "the VM registration", |l| {
        l.get("registered").is_some()
    });
    let consumer = clients::spawn(
        Java::Dubbo,
        &["consume", &connect, "dubbo", &kept, "g1", "1.0.0"],
    );
    ns.apply(&deployment("web-stable", "stable", 3, ""));
    let (old_path, new_path) = (ns.path("web"), format!("{}-moved", ns.path("web")));
    let both = [kept.as_str(), dropped.as_str()];
    ns.apply(&moving_registration(&service, &both, true, &old_path));
    let (three, _) = consumer.wait_for(0, LIMIT, "3 pods and the VM", |l| {
        dubbo_providers(l).is_some_and(|p| p.len() == 4)
    });
    let zk = zk_client().await;
    let (kept_dir, dropped_dir) = (
        format!("/dubbo/{kept}/providers"),
        format!("/dubbo/{dropped}/providers"),
    );
    let curator_dir = format!("/services/{service}");
    let watches = [
        FolderWatch::start(&zk, &kept_dir).await,
        FolderWatch::start(&zk, &dropped_dir).await,
        FolderWatch::start(&zk, &curator_dir).await,
    ];
    wait_until(LIMIT, "the folders hold 4, 3 and 3", || async {
        watches
            .iter()
            .map(|w| *w.sizes().last().unwrap())
            .collect::<Vec<_>>()
            == [4, 3, 3]
    })
    .await;

    // 1. The path moves: the record goes to the new path, the old one is removed afterwards,
    // and the client folders (which do not depend on the path) are never emptied.
    ns.apply(&moving_registration(&service, &both, true, &new_path));
    wait_until(LIMIT, "the record moved", || async {
        let moved = common::registry::read(&zk, &new_path)
            .await
            .is_some_and(|(_, e)| up(&e) == 3);
        moved && zk.check_stat(&old_path).await.unwrap().is_none()
    })
    .await;
    let mins: Vec<Option<usize>> = watches.iter().map(|w| w.min_after_reaching(3)).collect();
    assert_eq!(
        mins,
        [Some(4), Some(3), Some(3)],
        "a client folder lost nodes while the path moved: {:?}",
        watches.iter().map(FolderWatch::sizes).collect::<Vec<_>>()
    );
    // The status follows (patched at most every 500 ms).
    wait_until(
        Duration::from_secs(10),
        "the placement on the status",
        || async {
            let placed = svcreg(&ns, "web").await.status.and_then(|s| s.placement);
            placed.is_some_and(|p| p.path == new_path)
        },
    )
    .await;

    // 2. An interface and the Curator registry are dropped: their nodes go (none orphaned),
    // the kept interface's folder never shrinks.
    ns.apply(&moving_registration(&service, &[&kept], false, &new_path));
    wait_until(LIMIT, "the dropped folders emptied", || async {
        let dropped = zk.list_children(&dropped_dir).await.unwrap();
        let curator = zk.list_children(&curator_dir).await.unwrap();
        dropped.is_empty() && curator.is_empty()
    })
    .await;
    assert_eq!(
        watches[0].min_after_reaching(4),
        Some(4),
        "{:?}",
        watches[0].sizes()
    );
    wait_until(
        Duration::from_secs(10),
        "the status forgets the dropped folders",
        || async {
            let placed = svcreg(&ns, "web").await.status.and_then(|s| s.placement);
            placed.is_some_and(|p| p.folders.len() == 1 && p.folders[0].path == kept_dir)
        },
    )
    .await;

    // Every notification the real Dubbo consumer had since it first saw all four kept them.
    let lines = consumer.lines();
    let seen: Vec<usize> = lines
        .iter()
        .skip(three)
        .filter_map(dubbo_providers)
        .map(|p| p.len())
        .collect();
    assert!(
        seen.iter().all(|&n| n == 4),
        "the consumer saw a shorter provider list: {seen:?}"
    );

    // 3. Deleted: its nodes go from every folder, the VM provider stays.
    ns.kubectl(&["delete", "serviceregistration", "web", "--wait=true"]);
    let left = zk.list_children(&kept_dir).await.unwrap();
    assert_eq!(left.len(), 1, "only the VM provider stays: {left:?}");
    assert!(zk.check_stat(&new_path).await.unwrap().is_none());
}

/// The Synced condition's message of `name`, once its reason is `reason` (60 s at most).
async fn refused(ns: &TestNs, name: &str, reason: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let sr = svcreg(ns, name).await;
        let synced = sr.status.as_ref().and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Synced" && c.reason == reason)
        });
        if let Some(c) = synced {
            return c.message.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: no Synced={reason} within 60 s: {:?}",
            sr.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_publishes_only_what_a_registry_policy_grants_it() {
    use common::clients::{self, Client as Java};
    let shared = env();
    let victim = TestNs::new("victim").await;
    let evil = TestNs::tenant("acc-evil").await;
    let connect = shared.zk.connect_string();
    let iface = format!("com.acme.{}.OrderService", victim.name.replace('-', "_"));
    const LIMIT: Duration = Duration::from_secs(120);
    let dubbo = |ns: &TestNs, extra: &str| {
        format!(
            r#"apiVersion: podkeeper.io/v1alpha1
kind: ServiceRegistration
metadata: {{name: orders}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  port: http
  registries:
  - format: Dubbo
    dubbo: {{interfaces: ["{iface}"], group: g1, version: "1.0.0", application: {}}}
{extra}"#,
            ns.name
        )
    };
    victim.apply(&deployment("web-stable", "stable", 2, ""));
    victim.apply(&dubbo(&victim, ""));
    let consumer = clients::spawn(
        Java::Dubbo,
        &["consume", &connect, "dubbo", &iface, "g1", "1.0.0"],
    );
    let (two, _) = consumer.wait_for(0, LIMIT, "the owners' two pods", |l| {
        dubbo_providers(l).is_some_and(|p| p.len() == 2)
    });

    // The attempts from a namespace no policy names, each its own resource.
    evil.apply(&deployment("web-stable", "stable", 1, ""));
    evil.apply(&dubbo(
        &evil,
        "  address: {mode: Template, host: attacker.example.net}\n",
    ));
    let squat = format!(
        "apiVersion: podkeeper.io/v1alpha1\nkind: ServiceRegistration\nmetadata: {{name: squat}}\n\
         spec:\n  selector: {{matchLabels: {{app: web}}}}\n  port: http\n  path: /podkeeper/{}/squat\n",
        victim.name
    );
    evil.apply(&squat);
    let foreign_zk = "apiVersion: podkeeper.io/v1alpha1\nkind: ServiceRegistration\nmetadata: {name: away}\n\
         spec:\n  selector: {matchLabels: {app: web}}\n  port: http\n  zookeeper: {connect: \"127.0.0.1:1\"}\n";
    evil.apply(foreign_zk);
    let why = refused(&evil, "orders", "PolicyRefused").await;
    assert!(why.contains(&format!("Dubbo interface {iface}")), "{why}");
    assert!(why.contains(&format!("namespace {}", evil.name)), "{why}");
    let why = refused(&evil, "squat", "PolicyRefused").await;
    assert!(
        why.contains(&format!("native path /podkeeper/{}/squat", victim.name)),
        "{why}"
    );
    let why = refused(&evil, "away", "PolicyRefused").await;
    assert!(why.contains("ZooKeeper ensemble \"127.0.0.1:1\""), "{why}");
    // Nothing of the tenant reached ZooKeeper.
    let zk = zk_client().await;
    assert!(zk.check_stat(&evil.path("orders")).await.unwrap().is_none());
    let squatted = common::registry::read(&zk, &format!("/podkeeper/{}/squat", victim.name)).await;
    assert!(squatted.is_none(), "{squatted:?}");
    let providers = zk
        .list_children(&format!("/dubbo/{iface}/providers"))
        .await
        .unwrap();
    assert_eq!(providers.len(), 2, "{providers:?}");

    // With a policy that grants the interface and the host (to the namespaces labelled as the
    // tenant's, by a selector): it publishes, beside the owners.
    let label = format!("podkeeper-e2e-team={}", evil.name);
    let (ok, out) = kubectl(&["label", "namespace", &evil.name, &label], None);
    assert!(ok, "{out}");
    let grant = format!(
        "apiVersion: podkeeper.io/v1alpha1\nkind: RegistryPolicy\nmetadata: {{name: {0}}}\n\
         spec:\n  namespaceSelector: {{matchLabels: {{podkeeper-e2e-team: {0}}}}}\n  dubbo: [{{interface: \"{iface}\", group: g1}}]\n  templateHosts: [\"*.example.net\"]\n",
        evil.name
    );
    let (ok, out) = kubectl(&["apply", "-f", "-"], Some(&grant));
    assert!(ok, "{out}");
    let (three, _) = consumer.wait_for(two, LIMIT, "the granted tenant's provider", |l| {
        dubbo_providers(l).is_some_and(|p| p.len() == 3 && p.contains_key("attacker.example.net"))
    });
    // Revoked: what it published is withdrawn (the documented choice), the owners' stays.
    let (ok, out) = kubectl(&["delete", "registrypolicy", &evil.name], None);
    assert!(ok, "{out}");
    consumer.wait_for(three, LIMIT, "the tenant withdrawn", |l| {
        dubbo_providers(l).is_some_and(|p| p.len() == 2 && !p.contains_key("attacker.example.net"))
    });
    refused(&evil, "orders", "PolicyRefused").await;
    let before_grant: Vec<_> = consumer.lines().into_iter().take(three).collect();
    assert!(
        before_grant
            .iter()
            .filter_map(dubbo_providers)
            .all(|p| !p.contains_key("attacker.example.net")),
        "the consumer saw the tenant's provider before any policy granted it"
    );
    // Granted again (a policy deleted and re-created, as `kubectl replace` does): published
    // again at once, not at the next resync.
    let (ok, out) = kubectl(&["apply", "-f", "-"], Some(&grant));
    assert!(ok, "{out}");
    let lines = consumer.lines().len();
    consumer.wait_for(lines, LIMIT, "the tenant granted again", |l| {
        dubbo_providers(l).is_some_and(|p| p.len() == 3 && p.contains_key("attacker.example.net"))
    });
    let (ok, out) = kubectl(&["delete", "registrypolicy", &evil.name], None);
    assert!(ok, "{out}");
    // Deleting the refused resources completes: a place they never wrote (the unreachable
    // ensemble) does not hold their finalizer.
    evil.kubectl(&["delete", "svcreg", "--all", "--timeout=60s"]);
}

/// Pods with a CPU request (or none) whose usage kwok reports from their annotation.
fn loaded_deployment(track: &str, replicas: u32, request: Option<&str>) -> String {
    let resources = request.map_or(String::new(), |r| {
        format!("\n        resources: {{requests: {{cpu: {r}}}}}")
    });
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web-{track}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web, track: {track}}}}}
  template:
    metadata:
      labels: {{app: web, track: {track}}}
      annotations: {{kwok.x-k8s.io/usage-cpu: 250m}}
    spec:
      containers:
      - name: app
        image: example.invalid/web:1
        ports: [{{name: http, containerPort: 8080}}]{resources}
"#
    )
}

const LOADED: &str = r#"apiVersion: podkeeper.io/v1alpha1
kind: ServiceRegistration
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  port: http
  loadBalancer: {policy: RoundRobin, auto: {minDwellSeconds: 0}}
  weights:
    groups:
    - {name: stable, selector: {matchLabels: {track: stable}}, share: 90}
    - {name: canary, selector: {matchLabels: {track: canary}}, share: 10}
  registries:
  - {format: Native}
  - {format: Dubbo, dubbo: {interfaces: [com.acme.LoadService], group: GROUP}}
  load:
    metrics:
    - {type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 100}}}
    periodSeconds: 10
    blackoutSeconds: 0
"#;

/// Waits until the configurator rule for `group` tells consumers to use `loadbalance`.
async fn wait_for_rule(zk: &zookeeper_client::Client, group: &str, loadbalance: &str) {
    let want = format!("loadbalance: {loadbalance}");
    let what = format!("a {loadbalance} rule for Dubbo consumers");
    wait_until(Duration::from_secs(30), &what, || async {
        dubbo_rule(zk, group)
            .await
            .is_some_and(|r| r.contains(&want))
    })
    .await;
}

/// The configurator rule podkeeper keeps for the Dubbo consumers of `group`, if any.
async fn dubbo_rule(zk: &zookeeper_client::Client, group: &str) -> Option<String> {
    let path = format!("/dubbo/config/dubbo/com.acme.LoadService::{group}.configurators");
    let (data, _) = zk.get_data(&path).await.ok()?;
    Some(String::from_utf8_lossy(&data).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_moves_weights_inside_groups_and_switches_the_policy() {
    env();
    let ns = TestNs::new("load").await;
    let bad = LOADED
        .replace("type: Resource, resource", "type: External, resource")
        .replace("GROUP", "g");
    let out = ns.apply_rejected(&bad);
    assert!(out.contains("only Resource and Pods metrics"), "{out}");
    ns.apply(&loaded_deployment("stable", 3, Some("500m")));
    ns.apply(&loaded_deployment("canary", 1, None));
    let loaded = LOADED.replace("GROUP", &ns.name);
    ns.apply(&loaded);
    let zk = zk_client().await;
    let path = ns.path("web");
    let (_, eps) = wait_registry(&zk, &path, "4 endpoints", |_, e| up(e) == 4).await;
    let mut stable: Vec<String> = eps
        .values()
        .filter(|e| e.group == "stable")
        .map(|e| e.pod.clone())
        .collect();
    stable.sort();
    // 90 %, 30 % and 50 % of the request: capacities 3× apart, the mean below the hot mark.
    for (pod, usage) in stable.iter().zip(["450m", "150m", "250m"]) {
        let arg = format!("kwok.x-k8s.io/usage-cpu={usage}");
        ns.kubectl(&["annotate", "pod", pod, &arg, "--overwrite"]);
    }
    let (hot, cold, mid) = (&stable[0], &stable[1], &stable[2]);
    let within = Duration::from_secs(150);
    let (svc, eps) =
        common::registry::wait_for_within(&zk, &path, "load-derived weights", within, |s, e| {
            let w = |p: &String| e.get(p).map_or(0, |r| r.weight);
            w(hot) < w(mid)
                && w(mid) < w(cold)
                && s.policy == podkeeper::crd::Policy::WeightedRoundRobin
        })
        .await;
    assert_eq!(
        group_sum(&eps, "stable"),
        900_000,
        "the stable group keeps its share"
    );
    assert_eq!(
        group_sum(&eps, "canary"),
        100_000,
        "the canary keeps its share"
    );
    assert_eq!(svc.policy, podkeeper::crd::Policy::WeightedRoundRobin);
    let mark = svc
        .load
        .as_ref()
        .expect("the service record vouches for the load weights");
    assert_eq!(
        (mark.reason.as_str(), mark.expire_seconds),
        ("UnevenCapacity", 180)
    );
    assert_eq!(
        eps[hot].declared_weight,
        Some(100),
        "the declared weight beside the effective"
    );
    // The record carries the figures its weight came from: 450m of a 500m request (a figure
    // taken while the new usage was still averaging in is replaced with the next weight).
    let cpu = |e: &BTreeMap<String, EndpointRecord>| {
        let load = e.get(hot)?.load.clone()?;
        load.cpu_utilization.map(|m| m.get())
    };
    let near = Duration::from_secs(60);
    let what = "the hot pod's load.cpuUtilization near 0.9";
    common::registry::wait_for_within(&zk, &path, what, near, |_, e| {
        cpu(e).is_some_and(|u| (u - 0.9).abs() <= 0.05)
    })
    .await;
    wait_until(
        Duration::from_secs(30),
        "a PolicySwitched event",
        || async {
            ns.kubectl(&["get", "events", "--field-selector", "reason=PolicySwitched"])
                .contains("to WeightedRoundRobin (UnevenCapacity)")
        },
    )
    .await;
    // Dubbo consumers get the policy through Dubbo's own configurator rule.
    wait_for_rule(&zk, &ns.name, "roundrobin").await;
    let canary = eps
        .values()
        .find(|e| e.group == "canary")
        .unwrap()
        .pod
        .clone();
    wait_until(Duration::from_secs(30), "status.load", || async {
        let sr = svcreg(&ns, "web").await;
        let Some(st) = sr.status else { return false };
        let Some(load) = st.load else { return false };
        st.policy == Some(podkeeper::crd::Policy::WeightedRoundRobin)
            && load.reason == "UnevenCapacity"
            && load.weighed == 3
            && load
                .unweighed
                .iter()
                .any(|u| u.pod == canary && u.reason == "NoRequest")
    })
    .await;
    // Every pod near its request: requests go where fewest are in flight.
    for pod in &stable {
        ns.kubectl(&[
            "annotate",
            "pod",
            pod,
            "kwok.x-k8s.io/usage-cpu=480m",
            "--overwrite",
        ]);
    }
    let (_, eps) = common::registry::wait_for_within(&zk, &path, "LeastRequest", within, |s, _| {
        s.policy == podkeeper::crd::Policy::LeastRequest
    })
    .await;
    assert_eq!(
        group_sum(&eps, "stable"),
        900_000,
        "the stable group keeps its share"
    );
    wait_for_rule(&zk, &ns.name, "leastactive").await;
    // Switching auto off takes the rule away and leaves the providers.
    let off = r#"[{"op": "remove", "path": "/spec/loadBalancer/auto"}]"#;
    ns.kubectl(&["patch", "svcreg", "web", "--type=json", "-p", off]);
    wait_until(
        Duration::from_secs(30),
        "the rule removed with loadBalancer.auto",
        || async { dubbo_rule(&zk, &ns.name).await.is_none() },
    )
    .await;
    wait_registry(&zk, &path, "the providers kept", |_, e| up(e) == 4).await;
    ns.apply(&loaded);
    wait_for_rule(&zk, &ns.name, "leastactive").await;
    ns.kubectl(&["delete", "svcreg", "web", "--wait=true"]);
    wait_until(
        Duration::from_secs(30),
        "the rule removed with the resource",
        || async { dubbo_rule(&zk, &ns.name).await.is_none() },
    )
    .await;
}

/// A custom.metrics.k8s.io backend (tests/common/custom_metrics.py, in the role of Prometheus
/// Adapter or KEDA) registered with the aggregator; unregistered when dropped, for an
/// APIService without a backend breaks discovery for everyone.
struct CustomMetrics {
    child: std::process::Child,
    dir: tempfile::TempDir,
    metric: String,
}

const CUSTOM_APISERVICE: &str = "v1beta2.custom.metrics.k8s.io";

impl CustomMetrics {
    fn start(metric: &str) -> CustomMetrics {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=e2e-custom-metrics", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let port = common::zk::free_port();
        let m = CustomMetrics {
            child: std::process::Command::new("python3")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/common/custom_metrics.py"
                ))
                .arg(port.to_string())
                .args([&crt, &key, &dir.path().join("values.json")])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("python3"),
            dir,
            metric: metric.into(),
        };
        m.set(&[]);
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: e2e-custom-metrics, namespace: kube-system}}\nspec: {{type: ExternalName, externalName: 127.0.0.1}}\n---\napiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {{name: {CUSTOM_APISERVICE}}}\nspec:\n  group: custom.metrics.k8s.io\n  version: v1beta2\n  groupPriorityMinimum: 100\n  versionPriority: 100\n  insecureSkipTLSVerify: true\n  service: {{name: e2e-custom-metrics, namespace: kube-system, port: {port}}}\n"
        );
        let (ok, out) = kubectl(&["apply", "-f", "-"], Some(&yaml));
        assert!(ok, "{out}");
        m
    }

    /// The metric's value for each pod from now on (pods not named have none).
    fn set(&self, pods: &[(&str, f64)]) {
        let pods: serde_json::Map<String, serde_json::Value> = pods
            .iter()
            .map(|(p, v)| (p.to_string(), (*v).into()))
            .collect();
        let body = serde_json::json!({"metric": self.metric, "pods": pods});
        let tmp = self.dir.path().join("values.tmp");
        std::fs::write(&tmp, body.to_string()).unwrap();
        std::fs::rename(tmp, self.dir.path().join("values.json")).unwrap();
    }
}

impl Drop for CustomMetrics {
    fn drop(&mut self) {
        let _ = kubectl(
            &[
                "delete",
                "apiservice",
                CUSTOM_APISERVICE,
                "--ignore-not-found",
            ],
            None,
        );
        let svc = [
            "-n",
            "kube-system",
            "delete",
            "service",
            "e2e-custom-metrics",
        ];
        let _ = kubectl(&[&svc[..], &["--ignore-not-found"]].concat(), None);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `Pods` metric from custom.metrics.k8s.io (`AverageValue`) weighs pods like CPU does: the
/// pod with the highest value per unit of weight loses share, the total stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_from_a_custom_pods_metric_moves_weights() {
    env();
    let metrics = CustomMetrics::start("requests_in_flight");
    let ns = TestNs::new("load-custom").await;
    ns.apply(&loaded_deployment("stable", 3, None));
    ns.apply(
        r#"apiVersion: podkeeper.io/v1alpha1
kind: ServiceRegistration
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  port: http
  load:
    metrics:
    - type: Pods
      pods:
        metric: {name: requests_in_flight}
        target: {type: AverageValue, averageValue: "100"}
    periodSeconds: 10
    blackoutSeconds: 0
"#,
    );
    let zk = zk_client().await;
    let path = ns.path("web");
    let (_, eps) = wait_registry(&zk, &path, "3 endpoints", |_, e| up(e) == 3).await;
    let total = group_sum(&eps, "default");
    let mut pods: Vec<String> = eps.keys().cloned().collect();
    pods.sort();
    let (hot, cold, mid) = (&pods[0], &pods[1], &pods[2]);
    metrics.set(&[(hot, 90.0), (cold, 30.0), (mid, 50.0)]);
    let within = Duration::from_secs(150);
    let (_, eps) =
        common::registry::wait_for_within(&zk, &path, "custom-metric weights", within, |_, e| {
            let w = |p: &String| e.get(p).map_or(0, |r| r.weight);
            w(hot) < w(mid) && w(mid) < w(cold)
        })
        .await;
    assert_eq!(group_sum(&eps, "default"), total, "the total is kept");
    let figures = eps[hot]
        .load
        .as_deref()
        .expect("the hot pod's load figures");
    assert_eq!(
        figures.named_metrics["requests_in_flight"].get(),
        90.0,
        "the custom metric by its name"
    );
    wait_until(
        Duration::from_secs(30),
        "status.load: 3 pods weighed",
        || async {
            let sr = svcreg(&ns, "web").await;
            sr.status
                .and_then(|s| s.load)
                .is_some_and(|l| l.weighed == 3)
        },
    )
    .await;
}

/// `(slice, managed-by, address, ready, serving, terminating)` of every EndpointSlice of
/// Service `svc`, whoever manages it.
async fn import_slices(ns: &TestNs, svc: &str) -> Vec<(String, String, String, bool, bool, bool)> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let api: kube::Api<EndpointSlice> = kube::Api::namespaced(harness::client().await, &ns.name);
    let lp = kube::api::ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
    let mut out = Vec::new();
    for s in api.list(&lp).await.unwrap().items {
        let name = s.metadata.name.clone().unwrap_or_default();
        let by = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("endpointslice.kubernetes.io/managed-by").cloned())
            .unwrap_or_default();
        // An empty slice shows as one empty row: podkeeper leaves none.
        if s.endpoints.as_ref().is_none_or(|e| e.is_empty()) {
            out.push((name.clone(), by.clone(), String::new(), false, false, false));
        }
        for e in s.endpoints.iter().flatten() {
            let c = e.conditions.clone().unwrap_or_default();
            let flag = |b: Option<bool>| b.unwrap_or(false);
            out.push((
                name.clone(),
                by.clone(),
                e.addresses.join(","),
                flag(c.ready),
                flag(c.serving),
                flag(c.terminating),
            ));
        }
    }
    out.sort();
    out
}

async fn registry_import(ns: &TestNs, name: &str) -> Option<podkeeper::crd::RegistryImport> {
    let api: kube::Api<podkeeper::crd::RegistryImport> =
        kube::Api::namespaced(harness::client().await, &ns.name);
    api.get_opt(name).await.unwrap()
}

fn import_condition(ri: &podkeeper::crd::RegistryImport, t: &str) -> Option<(String, String)> {
    ri.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_registered_by_dubbo_on_vms_are_endpoints_of_a_service_through_every_state() {
    use common::clients::{self, Client as Java};
    use k8s_openapi::api::core::v1::Service;
    use zookeeper_client::{Acls, CreateMode};
    const LIMIT: Duration = Duration::from_secs(20);
    env();
    // A ZooKeeper and an operator of its own: this test stops the ZooKeeper. In the secure run
    // the operator reads over TLS with its SASL login; the VMs register on the plaintext port.
    let mut zk = match harness::secure_mode() {
        true => common::zk::ZkServer::start_secure(Default::default()),
        false => common::zk::ZkServer::start(),
    };
    let ns = TestNs::new("import").await;
    // A namespace no RegistryPolicy names: it may not read another ensemble.
    let tenant = TestNs::tenant("import").await;
    let connect = zk.connect_string();
    let (_secrets, op_connect, mut op_env) = match harness::secure_mode() {
        true => {
            let (dir, env) = harness::secure_env(&zk);
            (Some(dir), zk.secure_connect_string(), env)
        }
        false => (None, connect.clone(), Vec::new()),
    };
    op_env.push(("PODKEEPER_IMPORT", "true".into()));
    op_env.push(("PODKEEPER_CLUSTER_ID", "east".into()));
    op_env.push((
        "PODKEEPER_NAMESPACES",
        format!("{},{}", ns.name, tenant.name),
    ));
    let op_env: Vec<(&str, &str)> = op_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let op = harness::Operator::start("import", &op_connect, &op_env);
    let iface = "com.acme.imported.Orders";
    let url = |host: &str, weight: u32| {
        format!(
            "dubbo://{host}:20880/{iface}?application=vm-app&interface={iface}&side=provider&weight={weight}"
        )
    };
    let import = |name: &str, service: &str| {
        format!(
            r#"apiVersion: podkeeper.io/v1alpha1
kind: RegistryImport
metadata: {{name: {name}}}
spec:
  source: {{dubbo: {{interface: {iface}}}}}
  service: {{name: {service}, ports: [{{name: dubbo, port: 20880}}]}}
"#
        )
    };
    // A Service podkeeper did not create is never touched, even when an import names it.
    ns.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: legacy}\n\
         spec: {selector: {app: legacy}, ports: [{port: 80}]}\n",
    );
    ns.apply(&import("legacy", "legacy"));
    // Imported before any provider registers: the folder does not exist yet.
    ns.apply(&import("orders", "orders"));
    wait_until(LIMIT, "both imports reconciled", || async {
        let legacy = registry_import(&ns, "legacy").await.unwrap();
        let orders = registry_import(&ns, "orders").await.unwrap();
        import_condition(&legacy, "Ready")
            .is_some_and(|c| c.0 == "False" && c.1.contains("left alone"))
            && import_condition(&orders, "Ready").is_some_and(|c| c.0 == "True")
    })
    .await;
    tenant.apply(
        "apiVersion: podkeeper.io/v1alpha1\nkind: RegistryImport\nmetadata: {name: elsewhere}\n\
         spec: {zookeeper: {connect: 'zk.elsewhere.example:2181'}, source: {curator: {serviceName: x}},\n\
           service: {name: elsewhere, ports: [{name: http, port: 80}]}}\n",
    );
    wait_until(
        LIMIT,
        "another ensemble refused without a grant",
        || async {
            registry_import(&tenant, "elsewhere")
                .await
                .and_then(|ri| import_condition(&ri, "Ready"))
                .is_some_and(|(s, m)| s == "False" && m.contains("ZooKeeper ensemble"))
        },
    )
    .await;
    let svc: kube::Api<Service> = kube::Api::namespaced(harness::client().await, &ns.name);
    let legacy = svc.get("legacy").await.unwrap();
    assert!(legacy.metadata.owner_references.is_none() && legacy.metadata.labels.is_none());
    let legacy_slices = import_slices(&ns, "legacy").await;
    assert!(
        legacy_slices.iter().all(|s| s.1 != "podkeeper.io"),
        "only kube-controller-manager's own slices: {legacy_slices:?}"
    );

    // The VM provider registers itself through Dubbo's own registry.
    let vm = clients::spawn(
        Java::Dubbo,
        &["provide", &connect, "dubbo", &url("10.77.0.5", 100)],
    );
    vm.wait_for(0, Duration::from_secs(120), "the VM registration", |l| {
        l.get("registered").is_some()
    });
    let registered = std::time::Instant::now();
    wait_until(LIMIT, "the registered VM in a slice", || async {
        import_slices(&ns, "orders")
            .await
            .iter()
            .any(|s| s.2 == "10.77.0.5")
    })
    .await;
    // Polled every 50 ms: an upper bound.
    eprintln!(
        "import latency: Dubbo registration -> EndpointSlice within {} ms",
        registered.elapsed().as_millis()
    );
    // Beside it: a second VM written as a plain node, this cluster's own node (the loop guard)
    // and a provider on loopback.
    let zkc = harness::connect_zk(&connect).await;
    let dir = format!("/dubbo/{iface}/providers");
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    for extra in [
        url("10.77.0.7", 100),
        format!("{}&podkeeper.owner=east/shop/orders", url("10.77.0.6", 100)),
        url("127.0.0.1", 100),
    ] {
        let node = format!(
            "{dir}/{}",
            podkeeper::zk::format::dubbo::java_url_encode(&extra)
        );
        zkc.create(&node, b"", &persistent).await.unwrap();
    }
    let up = |a: &str| (a.to_string(), true, true, false);
    let states = |slices: Vec<(String, String, String, bool, bool, bool)>| {
        slices
            .into_iter()
            .map(|(_, _, a, r, s, t)| (a, r, s, t))
            .collect::<Vec<_>>()
    };
    wait_until(LIMIT, "the VM providers as ready endpoints", || async {
        states(import_slices(&ns, "orders").await) == [up("10.77.0.5"), up("10.77.0.7")]
    })
    .await;
    let s = svc.get("orders").await.unwrap();
    let spec = s.spec.unwrap();
    assert!(spec.selector.is_none(), "a selector-less Service");
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert!(spec.cluster_ip.is_some_and(|ip| ip != "None"));
    wait_until(
        LIMIT,
        "the status counts the providers left out",
        || async {
            let ri = registry_import(&ns, "orders").await.unwrap();
            let st = ri.status.clone().unwrap_or_default();
            let reasons: Vec<String> = st
                .left_out_providers
                .iter()
                .map(|p| format!("{} {}", p.provider, p.reason))
                .collect();
            st.seen == 4
                && st.imported == 2
                && st.left_out == 2
                && reasons
                    .iter()
                    .any(|r| r.starts_with("10.77.0.6:20880 published by this cluster"))
                && reasons
                    .iter()
                    .any(|r| r.starts_with("127.0.0.1:20880 loopback"))
                && import_condition(&ri, "Ready").is_some_and(|c| c.0 == "True")
        },
    )
    .await;
    let reasons = || {
        let (_, out) = kubectl(
            &[
                "-n",
                &ns.name,
                "get",
                "events",
                "--field-selector",
                "involvedObject.kind=RegistryImport,involvedObject.name=orders",
                "-o",
                "jsonpath={.items[*].reason}",
            ],
            None,
        );
        out
    };
    wait_until(LIMIT, "a SlicesUpdated Event on the import", || async {
        reasons().contains("SlicesUpdated")
    })
    .await;
    let first = import_slices(&ns, "orders").await;
    let slice_name = first[0].0.clone();

    // weight=0: Dubbo re-registers the provider under a new URL; the old one goes.
    let drained = clients::spawn(
        Java::Dubbo,
        &["provide", &connect, "dubbo", &url("10.77.0.5", 0)],
    );
    drained.wait_for(
        0,
        Duration::from_secs(120),
        "the weight-0 registration",
        |l| l.get("registered").is_some(),
    );
    vm.close();
    wait_until(LIMIT, "weight 0: not serving", || async {
        states(import_slices(&ns, "orders").await)
            == [("10.77.0.5".into(), false, false, false), up("10.77.0.7")]
    })
    .await;
    // Still the one slice, ours, untouched by kube-controller-manager's slice controller.
    let now = import_slices(&ns, "orders").await;
    assert!(
        now.iter()
            .all(|s| s.0 == slice_name && s.1 == "podkeeper.io"),
        "{now:?}"
    );

    // ZooKeeper stopped: the slices stay, the status says since when they are stale.
    tokio::task::block_in_place(|| zk.stop());
    wait_until(
        LIMIT,
        "ZooKeeperAvailable=False with stale-since",
        || async {
            let ri = registry_import(&ns, "orders").await.unwrap();
            import_condition(&ri, "ZooKeeperAvailable")
                .is_some_and(|(s, m)| s == "False" && m.contains("stale since"))
                && ri.status.is_some_and(|s| s.stale_since.is_some())
        },
    )
    .await;
    assert_eq!(
        states(import_slices(&ns, "orders").await).len(),
        2,
        "slices kept"
    );
    wait_until(LIMIT, "a ZooKeeperUnavailable Event", || async {
        reasons().contains("ZooKeeperUnavailable")
    })
    .await;
    tokio::task::block_in_place(|| zk.restart());
    wait_until(
        Duration::from_secs(30),
        "ZooKeeperAvailable=True again",
        || async {
            let ri = registry_import(&ns, "orders").await.unwrap();
            import_condition(&ri, "ZooKeeperAvailable").is_some_and(|(s, _)| s == "True")
        },
    )
    .await;

    // The provider leaves: its endpoint goes.
    drained.close();
    wait_until(LIMIT, "the departed provider gone", || async {
        states(import_slices(&ns, "orders").await) == [up("10.77.0.7")]
    })
    .await;

    // The resource deleted: its Service and slices go with it.
    ns.kubectl(&["delete", "regimport", "orders"]);
    wait_until(
        Duration::from_secs(30),
        "Service and slices garbage-collected",
        || async {
            svc.get_opt("orders").await.unwrap().is_none()
                && import_slices(&ns, "orders").await.is_empty()
        },
    )
    .await;
    drop(op);
}

/// Every address in the EndpointSlices of Service `svc`, kept current by a watch (not polled).
fn watch_slice_addresses(
    client: kube::Client,
    ns: &str,
    svc: &str,
) -> tokio::sync::watch::Receiver<std::collections::BTreeSet<String>> {
    use futures::StreamExt;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::runtime::watcher;
    let api: kube::Api<EndpointSlice> = kube::Api::namespaced(client, ns);
    let cfg = watcher::Config::default().labels(&format!("kubernetes.io/service-name={svc}"));
    let (tx, rx) = tokio::sync::watch::channel(Default::default());
    let (reader, writer) = kube::runtime::reflector::store();
    tokio::spawn(async move {
        // Every event, deletions included (the last endpoint's slice is deleted).
        let mut events = kube::runtime::reflector(writer, watcher(api, cfg)).boxed();
        while events.next().await.is_some() {
            let all = reader
                .state()
                .iter()
                .flat_map(|s| s.endpoints.clone().unwrap_or_default())
                .flat_map(|e| e.addresses)
                .collect();
            tx.send_replace(all);
        }
    });
    rx
}

/// ZooKeeper change → EndpointSlice latency, p50/p99, for providers joining and leaving one at
/// a time (a Curator folder written directly). A measure, not a check of a bound; run with
/// `cargo test --features e2e --test e2e -- --ignored import_latency --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measure: run on demand"]
async fn import_latency_from_zookeeper_to_endpointslices() {
    use std::time::Instant;
    use zookeeper_client::{Acls, CreateMode};
    const N: usize = 100;
    env();
    let zk = common::zk::ZkServer::start();
    let ns = TestNs::new("import-latency").await;
    let connect = zk.connect_string();
    let op = harness::Operator::start(
        "import-latency",
        &connect,
        &[
            ("PODKEEPER_IMPORT", "true"),
            ("PODKEEPER_NAMESPACES", &ns.name),
        ],
    );
    ns.apply(
        "apiVersion: podkeeper.io/v1alpha1\nkind: RegistryImport\nmetadata: {name: lat}\n\
         spec: {source: {curator: {serviceName: lat}}, service: {name: lat, ports: [{name: http, port: 8080}]}}\n",
    );
    let mut seen = watch_slice_addresses(harness::client().await, &ns.name, "lat");
    let zkc = harness::connect_zk(&connect).await;
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    for dir in ["/services", "/services/lat"] {
        let _ = zkc.create(dir, b"", &persistent).await;
    }
    let addr = |i: usize| format!("10.88.{}.{}", i / 200, 1 + i % 200);
    let (mut joins, mut leaves) = (Vec::new(), Vec::new());
    for i in 0..N {
        let data = serde_json::json!({"name": "lat", "id": format!("i{i}"), "address": addr(i), "port": 8080});
        let t0 = Instant::now();
        zkc.create(
            &format!("/services/lat/i{i}"),
            &serde_json::to_vec(&data).unwrap(),
            &persistent,
        )
        .await
        .unwrap();
        let a = addr(i);
        tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|s| s.contains(&a)))
            .await
            .expect("joined within 10 s")
            .unwrap();
        joins.push(t0.elapsed());
    }
    for i in 0..N {
        let t0 = Instant::now();
        zkc.delete(&format!("/services/lat/i{i}"), None)
            .await
            .unwrap();
        let a = addr(i);
        tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|s| !s.contains(&a)))
            .await
            .expect("left within 10 s")
            .unwrap();
        leaves.push(t0.elapsed());
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 * p).ceil() as usize).saturating_sub(1)].as_secs_f64() * 1000.0
    };
    // In scripts/bench's RESULT shape (name value unit (details)), which it collects.
    for (what, v) in [("join", &mut joins), ("leave", &mut leaves)] {
        for (q, p) in [("p50", 0.5), ("p99", 0.99)] {
            eprintln!(
                "RESULT import_{what}_{q} {:.1} ms (a provider's {what} in ZooKeeper -> its EndpointSlice, {N} providers one at a time)",
                pct(v, p)
            );
        }
    }
    // The operator's own share: ZooKeeper event received -> slice written.
    let (_, metrics) = harness::http_get(&op.health, "/metrics").unwrap();
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("podkeeper_zookeeper_to_endpointslice_seconds"))
    {
        eprintln!("{l}");
    }
}

/// The import controller with nothing but the chart's namespaced RBAC and `import.enabled`:
/// it creates the Service and a slice (with owner references that block deletion), and they go
/// with the resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_import_works_with_only_the_charts_rbac() {
    use k8s_openapi::api::core::v1::Service;
    use zookeeper_client::{Acls, CreateMode};
    let shared = env();
    let ops = TestNs::new("imp-rbac-ops").await;
    let app = TestNs::new("imp-rbac-app").await;
    let dir = tempfile::tempdir().unwrap();
    const RELEASE: &str = "podkeeper-import";
    // Uninstalled however the test ends: its ClusterRole would block the next install.
    struct Uninstall(String);
    impl Drop for Uninstall {
        fn drop(&mut self) {
            let _ = std::process::Command::new(helm())
                .args(["uninstall", RELEASE, "-n", &self.0, "--kubeconfig"])
                .arg(harness::kubeconfig())
                .output();
        }
    }
    let _uninstall = Uninstall(ops.name.clone());
    let sa_config = chart_sa_kubeconfig(RELEASE, &ops, &app, &["import.enabled=true"], dir.path());
    let who = format!("--as=system:serviceaccount:{}:{RELEASE}", ops.name);
    for (verb, what, want) in [
        ("create", "services", "yes"),
        ("delete", "services", "yes"),
        ("update", "endpointslices.discovery.k8s.io", "yes"),
        ("delete", "endpoints", "no"),
    ] {
        let (_, got) = kubectl(&["auth", "can-i", verb, what, "-n", &app.name, &who], None);
        assert_eq!(got.trim(), want, "can-i {verb} {what}");
    }
    let chroot = format!("/imp-rbac-{}", std::process::id());
    let zk = zk_client().await;
    let open = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let mut path = String::new();
    for part in [chroot.as_str(), "/services", "/vm-api"] {
        path.push_str(part);
        let _ = zk.create(&path, b"", &open).await;
    }
    let vm =
        serde_json::json!({"name": "vm-api", "id": "vm-1", "address": "10.66.0.1", "port": 8080});
    zk.create(
        &format!("{path}/vm-1"),
        &serde_json::to_vec(&vm).unwrap(),
        &open,
    )
    .await
    .unwrap();
    let op = harness::Operator::start(
        "import-sa",
        &shared.zk.connect_string(),
        &[
            ("KUBECONFIG", sa_config.to_str().unwrap()),
            ("PODKEEPER_NAMESPACES", &app.name),
            ("PODKEEPER_ZK_CHROOT", &chroot),
            ("PODKEEPER_IMPORT", "true"),
        ],
    );
    app.apply(
        "apiVersion: podkeeper.io/v1alpha1\nkind: RegistryImport\nmetadata: {name: vm-api}\n\
         spec: {source: {curator: {serviceName: vm-api}}, service: {name: vm-api, ports: [{name: http, port: 80}]}}\n",
    );
    wait_until(
        Duration::from_secs(30),
        "the VM in the slice, written with the chart's RBAC",
        || async {
            import_slices(&app, "vm-api")
                .await
                .iter()
                .any(|s| s.2 == "10.66.0.1" && s.3)
        },
    )
    .await;
    // A second VM: the slice is replaced (update), not created.
    let vm2 =
        serde_json::json!({"name": "vm-api", "id": "vm-2", "address": "10.66.0.2", "port": 8080});
    zk.create(
        &format!("{path}/vm-2"),
        &serde_json::to_vec(&vm2).unwrap(),
        &open,
    )
    .await
    .unwrap();
    wait_until(Duration::from_secs(30), "both VMs in one slice", || async {
        let s = import_slices(&app, "vm-api").await;
        s.len() == 2 && s[0].0 == s[1].0
    })
    .await;
    let svc: kube::Api<Service> = kube::Api::namespaced(harness::client().await, &app.name);
    rename_the_imported_service(&app, &svc).await;
    app.kubectl(&["delete", "regimport", "vm-api"]);
    wait_until(
        Duration::from_secs(30),
        "Service and slice gone with the resource",
        || async {
            svc.get_opt("vm-api-v2").await.unwrap().is_none()
                && import_slices(&app, "vm-api-v2").await.is_empty()
        },
    )
    .await;
    assert!(svc.get_opt("vm-api-copy").await.unwrap().is_some());
    let log = std::fs::read_to_string(&op.log).unwrap();
    assert!(
        !log.contains("Forbidden") && !log.contains("forbidden"),
        "RBAC denied something:\n{}",
        op.log_tail()
    );
}

/// `spec.service.name` of the `vm-api` import edited to `vm-api-v2`: the new Service gets both
/// VMs, then the old Service and its slice go; a Service someone labelled for the import by
/// hand (no owner reference) stays.
async fn rename_the_imported_service(
    app: &TestNs,
    svc: &kube::Api<k8s_openapi::api::core::v1::Service>,
) {
    app.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: vm-api-copy, labels: {podkeeper.io/import: vm-api}}\n\
         spec: {ports: [{name: http, port: 80}]}\n",
    );
    app.apply(
        "apiVersion: podkeeper.io/v1alpha1\nkind: RegistryImport\nmetadata: {name: vm-api}\n\
         spec: {source: {curator: {serviceName: vm-api}}, service: {name: vm-api-v2, ports: [{name: http, port: 80}]}}\n",
    );
    wait_until(
        Duration::from_secs(30),
        "the old Service and slice gone",
        || async {
            svc.get_opt("vm-api").await.unwrap().is_none()
                && import_slices(app, "vm-api").await.is_empty()
        },
    )
    .await;
    let moved = import_slices(app, "vm-api-v2").await;
    assert_eq!(
        moved.len(),
        2,
        "both VMs in the new Service's slice: {moved:?}"
    );
    assert!(svc.get_opt("vm-api-v2").await.unwrap().is_some());
    assert!(
        svc.get_opt("vm-api-copy").await.unwrap().is_some(),
        "the hand-made copy stays"
    );
}

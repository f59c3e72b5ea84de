//! Reconcile paths the end-to-end suite cannot reach cheaply, against kube's mocked API
//! (tower-test) and, where the path writes, a real ZooKeeper started by `scripts/zk`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::events::{Recorder, Reporter};
use http::{Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::{Context, Events, Fencer, Index, Settings, Wake, leader};
use crate::crd::ServiceRegistration;
use crate::model::pod::{Labels, PodInfo};
use crate::zk::session::{SessionOptions, Sessions, Target};

/// One request the operator sent to the API server.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: Value,
}

impl Seen {
    /// A status patch of the report (conditions), not one of the place steps' own.
    fn is_status_patch(&self) -> bool {
        self.is_any_status_patch() && self.body["status"]["conditions"].is_array()
    }
    fn is_any_status_patch(&self) -> bool {
        self.method == "PATCH" && self.path.ends_with("/status")
    }
    fn event_reason(&self) -> Option<&str> {
        (self.method == "POST" && self.path.contains("/events"))
            .then(|| self.body["reason"].as_str())
            .flatten()
    }
    fn condition(&self, type_: &str) -> Option<&Value> {
        self.body["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)
    }
}

/// Answers every request like an API server that accepts it, and records it. Ends when every
/// client clone is dropped; returns what it saw.
fn api_server(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    sr: ServiceRegistration,
) -> JoinHandle<Vec<Seen>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            // Events echo what was posted; everything else answers with the resource.
            let answer = if path.contains("/events") {
                body.clone()
            } else if path.contains("/pods/") {
                serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})
            } else {
                serde_json::to_value(&sr).unwrap()
            };
            seen.push(Seen { method, path, body });
            let resp = Response::builder()
                .status(if seen.last().unwrap().method == "POST" {
                    201
                } else {
                    200
                })
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap();
            send.send_response(resp);
        }
        seen
    })
}

fn settings() -> Settings {
    Settings {
        allowed_path_prefixes: vec!["/podkeeper".into(), "/dubbo".into(), "/services".into()],
        cluster_id: "unit".into(),
        resync_interval: Duration::from_secs(300),
        dry_run: false,
        max_deletes_per_txn: 0,
        identity: "unit-test".into(),
        cluster_domain: "cluster.local".into(),
    }
}

/// A context on the mocked API server and the ZooKeeper at `zk`, with complete pod and node
/// lists holding `pods` (namespace "shop").
fn context(client: kube::Client, zk: &str, pods: Vec<PodInfo>) -> Arc<Context> {
    let (changes, _) = tokio::sync::mpsc::unbounded_channel();
    let sessions = Sessions::new(
        Target {
            connect: zk.into(),
            chroot: None,
        },
        SessionOptions::anonymous(Duration::from_secs(5)),
        changes,
    );
    let index = Index::default();
    index.pods_relist_started(None);
    for pod in pods {
        index.apply_pod("shop", pod, std::time::Instant::now());
    }
    index.pods_relist_done(None, std::time::Instant::now(), crate::now_ms());
    index.nodes_relist_started();
    index.nodes_relist_done();
    index.services_relist_started(None);
    index.services_relist_done(None);
    let reporter = Reporter {
        controller: "podkeeper".into(),
        instance: None,
    };
    let s = settings();
    let api_writes = Arc::new(tokio::sync::Semaphore::new(super::API_WRITES_IN_FLIGHT));
    Arc::new(Context {
        events: Events::new(Recorder::new(client.clone(), reporter), api_writes.clone()),
        api_writes,
        policies: super::tenancy::Policies::listed(Vec::new()),
        last_not_ready: Mutex::default(),
        home_audited: Mutex::default(),
        load: super::load::LoadBook::default(),
        fencer: Fencer::new(s.home_prefix(), &s.cluster_id, &s.identity),
        client,
        settings: s,
        sessions,
        index,
        leadership: Arc::new(leader::Leadership::always()),
        entries: Mutex::default(),
        wake: Wake {
            one: Vec::new(),
            all: Vec::new(),
        },
        resync_epoch: Default::default(),
        watch_errors: Mutex::default(),
        tamper: crate::zk::tamper::Tamper::new(tokio::sync::mpsc::unbounded_channel().0),
        tampered: Mutex::default(),
        fast: Default::default(),
    })
}

fn resource(extra_spec: &str) -> ServiceRegistration {
    let yaml = format!(
        r#"
apiVersion: podkeeper.io/v1alpha1
kind: ServiceRegistration
metadata:
  name: web
  namespace: shop
  uid: 11111111-2222
  generation: 1
  finalizers: [podkeeper.io/cleanup]
spec:
  selector: {{matchLabels: {{app: web}}}}
  port: 8080
{extra_spec}
"#
    );
    serde_yaml::from_str(&yaml).unwrap()
}

fn pod(name: &str, weight: Option<&str>) -> PodInfo {
    let annotations: Labels = weight
        .map(|w| ("podkeeper.io/weight".to_string(), w.to_string()))
        .into_iter()
        .collect();
    PodInfo {
        name: name.into(),
        labels: [("app".to_string(), "web".to_string())]
            .into_iter()
            .collect(),
        annotations,
        ip: Some("10.0.0.7".into()),
        ports: [].into(),
        node: None,
        ready: true,
        registered: None,
        host_network: false,
        host_ports: Box::new([]),
        terminating_since_ms: None,
        ready_at_termination: false,
        ready_since_ms: 0,
    }
}

/// Runs `reconciles` reconciles of `sr` (one after another) and returns their results and
/// every API request they caused, once the operator's tasks have all let go of the client.
async fn run(
    sr: ServiceRegistration,
    zk: &str,
    pods: Vec<PodInfo>,
    reconciles: usize,
) -> (Vec<Result<Action, super::Error>>, Vec<Seen>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = api_server(handle, sr.clone());
    let ctx = context(kube::Client::new(service, "default"), zk, pods);
    if zk != NO_ZK {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while ctx.sessions.unavailable().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no ZooKeeper session to {zk}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut results = Vec::new();
    for _ in 0..reconciles {
        results.push(super::reconcile::reconcile(Arc::new(sr.clone()), ctx.clone()).await);
    }
    drop(ctx);
    let seen = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the operator lets go of the API client")
        .unwrap();
    (results, seen)
}

/// No ZooKeeper listens here.
const NO_ZK: &str = "127.0.0.1:1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_outside_the_prefix_is_refused_on_status_and_in_an_event() {
    let sr = resource("  path: /elsewhere/web");
    let (results, seen) = run(sr, NO_ZK, vec![pod("web-1", None)], 1).await;
    assert!(results[0].is_ok());
    let status: Vec<&Seen> = seen.iter().filter(|s| s.is_status_patch()).collect();
    assert_eq!(status.len(), 1, "{seen:#?}");
    let synced = status[0].condition("Synced").unwrap();
    assert_eq!(synced["reason"], "PathRefused");
    assert!(
        synced["message"]
            .as_str()
            .unwrap()
            .contains("outside the allowed prefix"),
        "{synced}"
    );
    assert!(seen.iter().any(|s| s.event_reason() == Some("PathRefused")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_resource_patches_its_status_once_however_often_it_is_reconciled() {
    let sr = resource("  suspend: true");
    let (results, seen) = run(sr, NO_ZK, vec![pod("web-1", None)], 3).await;
    assert!(results.iter().all(Result::is_ok));
    let status: Vec<&Seen> = seen.iter().filter(|s| s.is_status_patch()).collect();
    assert_eq!(
        status.len(),
        1,
        "unchanged status is not patched again: {seen:#?}"
    );
    assert_eq!(
        status[0].condition("Synced").unwrap()["reason"],
        "Suspended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_zookeeper_the_status_says_so_and_the_reconcile_retries() {
    let (results, seen) = run(resource(""), NO_ZK, vec![pod("web-1", None)], 1).await;
    let action = results[0].as_ref().unwrap();
    assert_eq!(*action, Action::requeue(Duration::from_secs(5)));
    let status = seen.iter().find(|s| s.is_status_patch()).unwrap();
    assert_eq!(
        status.condition("ZooKeeperAvailable").unwrap()["status"],
        "False"
    );
}

/// A standalone ZooKeeper from Debian's package on a free loopback port, stopped on drop.
struct LocalZk {
    dir: tempfile::TempDir,
    port: u16,
}

impl LocalZk {
    fn start() -> LocalZk {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let zk = LocalZk { dir, port };
        let out = zk.script("up");
        assert!(out.status.success(), "scripts/zk up: {out:?}");
        zk
    }

    fn script(&self, cmd: &str) -> std::process::Output {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        std::process::Command::new("bash")
            .arg(root.join("scripts/zk"))
            .arg(cmd)
            .env("PODKEEPER_ZK_PORT", self.port.to_string())
            .env("PODKEEPER_ZK_DIR", self.dir.path())
            .output()
            .unwrap()
    }

    fn connect(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn client(&self) -> zookeeper_client::Client {
        zookeeper_client::Client::connect(&self.connect())
            .await
            .unwrap()
    }
}

impl Drop for LocalZk {
    fn drop(&mut self) {
        let _ = self.script("down");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_owned_by_another_resource_is_a_conflict_and_nothing_is_written() {
    let zk = LocalZk::start();
    let c = zk.client().await;
    let foreign = br#"{"serviceName":"web","policy":"RoundRobin","owner":{"clusterId":"other","namespace":"shop","name":"web","uid":"x"},"generation":1}"#;
    let opts =
        zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    c.mkdir("/podkeeper/shop", &opts).await.unwrap();
    c.create("/podkeeper/shop/web", foreign, &opts)
        .await
        .unwrap();
    let (_, before) = c.get_data("/podkeeper/shop/web").await.unwrap();
    let (results, seen) = run(resource(""), &zk.connect(), vec![pod("web-1", None)], 1).await;
    assert!(results[0].is_ok());
    let status = seen.iter().find(|s| s.is_status_patch()).unwrap();
    assert_eq!(status.condition("Conflict").unwrap()["status"], "True");
    assert!(seen.iter().any(|s| s.event_reason() == Some("Conflict")));
    let (data, after) = c.get_data("/podkeeper/shop/web").await.unwrap();
    assert_eq!(data, foreign);
    assert_eq!(after.mzxid, before.mzxid, "the foreign record is untouched");
    assert!(
        c.list_children("/podkeeper/shop/web")
            .await
            .unwrap()
            .is_empty()
    );
}

/// The place is on the status before ZooKeeper is first written there (an intent), and
/// confirmed after: a crash between the two leaves the intent, which a later edit retires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_write_records_its_place_before_and_confirms_it_after() {
    let zk = LocalZk::start();
    let (results, seen) = run(resource(""), &zk.connect(), vec![pod("web-1", None)], 1).await;
    assert!(results[0].is_ok(), "{results:?}");
    let patches: Vec<&Value> = seen
        .iter()
        .filter(|s| s.is_any_status_patch())
        .map(|s| &s.body["status"])
        .collect();
    let intents = &patches[0]["placementIntents"];
    assert_eq!(intents[0]["path"], "/podkeeper/shop/web", "{patches:#?}");
    assert_eq!(intents.as_array().map(Vec::len), Some(1));
    let confirmed = patches
        .iter()
        .position(|p| p.get("placementIntents").is_some_and(Value::is_null))
        .expect("the intent emptied");
    assert_eq!(
        patches[confirmed]["placement"]["path"],
        "/podkeeper/shop/web"
    );
    assert!(
        patches[1..]
            .iter()
            .all(|p| !p["placementIntents"].is_array())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_weight_annotation_is_a_warning_and_the_pod_gets_the_default_weight() {
    let zk = LocalZk::start();
    let pods = vec![pod("web-1", Some("lots")), pod("web-2", Some("300"))];
    let (results, seen) = run(resource(""), &zk.connect(), pods, 1).await;
    assert!(results[0].is_ok(), "{results:?}");
    let status = seen.iter().find(|s| s.is_status_patch()).unwrap();
    let ready = status.condition("Ready").unwrap();
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("web-1 has podkeeper.io/weight"),
        "{ready}"
    );
    let c = zk.client().await;
    let weights: BTreeMap<String, u64> = {
        let mut w = BTreeMap::new();
        for name in c
            .list_children("/podkeeper/shop/web/endpoints")
            .await
            .unwrap()
        {
            let path = format!("/podkeeper/shop/web/endpoints/{name}");
            let (data, _) = c.get_data(&path).await.unwrap();
            let v: Value = serde_json::from_slice(&data).unwrap();
            w.insert(name, v["weight"].as_u64().unwrap());
        }
        w
    };
    assert_eq!(
        weights,
        [("web-1".into(), 100), ("web-2".into(), 300)].into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_resource_removes_its_znodes_and_then_its_finalizer() {
    let zk = LocalZk::start();
    let (results, _) = run(resource(""), &zk.connect(), vec![pod("web-1", None)], 1).await;
    assert!(results[0].is_ok());
    let c = zk.client().await;
    assert_eq!(
        c.list_children("/podkeeper/shop/web/endpoints")
            .await
            .unwrap(),
        vec!["web-1".to_string()]
    );
    let mut deleted = resource("");
    deleted.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let (results, seen) = run(deleted, &zk.connect(), vec![pod("web-1", None)], 1).await;
    assert!(results[0].is_ok(), "{results:?}");
    assert!(matches!(
        c.get_data("/podkeeper/shop/web").await,
        Err(zookeeper_client::Error::NoNode)
    ));
    assert!(
        seen.iter()
            .any(|s| s.event_reason() == Some("Deregistered"))
    );
    let finalizer_patch = seen
        .iter()
        .find(|s| s.method == "PATCH" && !s.path.ends_with("/status"))
        .expect("the finalizer is removed");
    assert!(
        finalizer_patch
            .body
            .to_string()
            .contains("/metadata/finalizers"),
        "{finalizer_patch:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_pods_get_their_condition_patched_once_and_only_when_it_differs() {
    let zk = LocalZk::start();
    let gated = |name: &str, ready: bool, registered: bool| PodInfo {
        ready,
        registered: Some(registered),
        ..pod(name, None)
    };
    let pods = vec![
        gated("web-1", true, false), // published now: True
        gated("web-2", true, true),  // already True
        gated("web-3", false, true), // not published: False
        pod("web-4", None),          // no gate: never patched
    ];
    let (results, seen) = run(resource(""), &zk.connect(), pods, 2).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut patches: Vec<(&str, &Value)> = seen
        .iter()
        .filter(|s| s.method == "PATCH" && s.path.contains("/pods/"))
        .map(|s| {
            let c = s.condition(crate::model::pod::REGISTERED_GATE).unwrap();
            (s.path.as_str(), &c["status"])
        })
        .collect();
    // Each patch runs in its own task: arrival order is free.
    patches.sort_by_key(|(path, _)| *path);
    assert_eq!(
        patches,
        vec![
            (
                "/api/v1/namespaces/shop/pods/web-1/status",
                &Value::from("True")
            ),
            (
                "/api/v1/namespaces/shop/pods/web-3/status",
                &Value::from("False")
            ),
        ],
        "{seen:#?}"
    );
    let c = zk.client().await;
    let mut published = c
        .list_children("/podkeeper/shop/web/endpoints")
        .await
        .unwrap();
    published.sort();
    assert_eq!(published, ["web-1", "web-2", "web-4"]);
}

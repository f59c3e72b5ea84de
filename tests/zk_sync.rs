//! The registry write path against a real ZooKeeper: desired state from slim pods, diffed and
//! written by `zk::writer::sync`, observed by an independent ZooKeeper client.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use common::zk::ZkServer;
use podkeeper::crd::ServiceRegistrationSpec;
use podkeeper::model::desired::desired;
use podkeeper::model::pod::{Labels, PodInfo};
use podkeeper::model::record::{Owner, PublishedRecord, ServiceRecord};
use podkeeper::model::registration::Registration;
use podkeeper::zk::layout::{endpoint_path, endpoints_path};
use podkeeper::zk::session::{Session, SessionOptions, Target};
use podkeeper::zk::writer::{self, ServiceState, Synced, WriteOptions};
use smol_str::SmolStr;
use zookeeper_client::{Acls, AddWatchMode, Client, CreateMode, EventType};

/// One `writer::sync` to the full desired set, planned with `plan::diff` as the controller
/// plans, and the desired records adopted into the cache after a write.
async fn sync_once(
    c: &Client,
    path: &str,
    record: &ServiceRecord,
    desired: &BTreeMap<SmolStr, Arc<PublishedRecord>>,
    cache: &mut Option<ServiceState>,
    options: &WriteOptions,
) -> Result<Synced, podkeeper::zk::ZkError> {
    let planned = |s: &ServiceState| {
        (
            podkeeper::model::plan::diff(desired, &s.endpoints),
            Default::default(),
        )
    };
    let synced = writer::sync(c, path, record, cache, options, planned).await?;
    if let (Synced::Applied { .. }, Some(state)) = (&synced, cache.as_mut()) {
        writer::adopt(state, desired);
    }
    Ok(synced)
}

const SPEC: &str = r#"
selector: {matchLabels: {app: web}}
port: 8080
weights:
  groups:
  - {name: stable, selector: {matchLabels: {track: stable}}, share: 90}
  - {name: canary, selector: {matchLabels: {track: canary}}, share: 10}
"#;

fn pod(i: usize, track: &str, ready: bool) -> PodInfo {
    PodInfo {
        name: format!("web-{track}-{i}").into(),
        labels: [
            ("app".to_string(), "web".to_string()),
            ("track".to_string(), track.to_string()),
        ]
        .into_iter()
        .collect(),
        annotations: Labels::default(),
        ip: Some(format!("10.1.{}.{}", i / 250, i % 250).into()),
        ports: [].into(),
        node: None,
        ready,
        registered: None,
        host_network: false,
        host_ports: Box::new([]),
        terminating_since_ms: None,
        ready_at_termination: false,
        ready_since_ms: 0,
    }
}

fn want(pods: &[PodInfo]) -> BTreeMap<SmolStr, Arc<PublishedRecord>> {
    let spec: ServiceRegistrationSpec = serde_yaml::from_str(SPEC).unwrap();
    let reg = Registration::compile("shop", &spec).unwrap();
    desired(&reg, pods, &HashMap::new(), 0).endpoints
}

fn record(name: &str, uid: &str) -> ServiceRecord {
    ServiceRecord {
        service_name: "web".into(),
        policy: Default::default(),
        owner: Owner {
            cluster_id: "test".into(),
            namespace: "shop".into(),
            name: name.into(),
            uid: uid.into(),
        },
        generation: 1,
        stale: false,
        warmup_seconds: 0,
        load: None,
    }
}

async fn connect(zk: &ZkServer) -> Client {
    Client::connector()
        .with_session_timeout(Duration::from_secs(5))
        .connect(&zk.connect_string())
        .await
        .unwrap()
}

/// The write options of a leader that has just bumped `epoch` as `who`.
async fn leader(c: &Client, epoch: &str, who: &str) -> WriteOptions {
    let fence = podkeeper::zk::fence::bump_epoch(c, epoch, who, &Default::default())
        .await
        .unwrap();
    WriteOptions {
        fence: Some(fence),
        ..Default::default()
    }
}

fn assert_fenced(err: &podkeeper::zk::ZkError) {
    assert!(
        matches!(err, podkeeper::zk::ZkError::Fenced { .. }),
        "{err:?}"
    );
}

async fn read_endpoints(c: &Client, path: &str) -> BTreeMap<SmolStr, Arc<PublishedRecord>> {
    let mut out = BTreeMap::new();
    for child in c.list_children(&endpoints_path(path)).await.unwrap() {
        let (data, _) = c.get_data(&endpoint_path(path, &child)).await.unwrap();
        out.insert(
            child.into(),
            Arc::new(serde_json::from_slice(&data).unwrap()),
        );
    }
    out
}

/// What `path` holds for `rec`'s owner, read afresh.
async fn loaded(c: &Client, path: &str, rec: &ServiceRecord) -> ServiceState {
    match writer::load(c, path, &rec.owner, &Default::default()).await {
        Ok(writer::Loaded::Owned(s)) => s,
        other => panic!("{path}: {other:?}"),
    }
}

fn fleet() -> Vec<PodInfo> {
    let mut pods: Vec<PodInfo> = (0..6).map(|i| pod(i, "stable", true)).collect();
    pods.extend((0..2).map(|i| pod(i, "canary", true)));
    pods
}

#[tokio::test]
async fn first_sync_publishes_the_service_record_and_every_ready_endpoint() {
    let zk = ZkServer::shared();
    let c = connect(zk).await;
    let path = "/podkeeper/shop/first-sync";
    let mut pods = fleet();
    pods.push(pod(9, "stable", false));
    let mut cache = None;
    let r = sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&pods),
        &mut cache,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let Synced::Applied { applied, .. } = r else {
        panic!("expected Applied, got {r:?}")
    };
    assert_eq!(applied.znodes, 8);
    assert_eq!(applied.transactions, 1);
    let (data, _) = c.get_data(path).await.unwrap();
    let svc: ServiceRecord = serde_json::from_slice(&data).unwrap();
    assert_eq!(svc, record("web", "u1"));
    let eps = read_endpoints(&c, path).await;
    assert_eq!(eps, want(&pods));
    assert!(
        !eps.contains_key("web-stable-9"),
        "not-ready pod is not published"
    );
    let stable: u64 = eps
        .values()
        .filter(|e| e.group == "stable")
        .map(|e| u64::from(e.weight))
        .sum();
    assert_eq!(stable, 900_000);
    // A second sync with nothing changed writes nothing, and the cache takes the new (equal)
    // records, so the next diff compares pointers only.
    let again = want(&pods);
    let r = sync_once(
        &c,
        path,
        &record("web", "u1"),
        &again,
        &mut cache,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    assert!(
        matches!(r, Synced::Applied { applied, .. } if applied.znodes == 0),
        "{r:?}"
    );
    let state = cache.as_ref().unwrap();
    for (name, rec) in &again {
        let cached = state.endpoints[name].record.as_ref().unwrap();
        assert!(Arc::ptr_eq(cached, rec), "{name}: cache adopted the record");
    }
}

#[tokio::test]
async fn a_pod_failure_removes_and_rebalances_in_one_transaction_seen_whole_by_a_watcher() {
    let zk = ZkServer::shared();
    let c = connect(zk).await;
    let path = "/podkeeper/shop/failover";
    let mut pods = fleet();
    let mut cache = None;
    sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&pods),
        &mut cache,
        &WriteOptions::default(),
    )
    .await
    .unwrap();

    let observer = connect(zk).await;
    let mut watcher = observer
        .watch(path, AddWatchMode::PersistentRecursive)
        .await
        .unwrap();

    pods[0].ready = false; // web-stable-0 fails
    let r = sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&pods),
        &mut cache,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let Synced::Applied { plan, applied, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(applied.transactions, 1);
    assert_eq!(
        plan.counts(),
        (0, 5, 1),
        "five stable peers re-weighted, one removed"
    );

    // Every event of the write, as the observer's watch delivers them, up to a marker written
    // after it (events come in order, so nothing of the write can follow the marker): all of
    // them from one transaction, so no client could see a state between its parts.
    let marker = format!("{path}/zz-marker");
    c.create(
        &marker,
        &[],
        &CreateMode::Persistent.with_acls(Acls::anyone_all()),
    )
    .await
    .unwrap();
    let mut events = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), watcher.changed())
            .await
            .expect("watch event");
        if ev.path == marker {
            break;
        }
        events.push((ev.event_type, ev.path, ev.zxid));
    }
    let kinds: Vec<_> = events.iter().map(|(k, _, _)| *k).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventType::NodeDataChanged)
            .count(),
        5,
        "five stable peers re-weighted: {events:?}"
    );
    assert_eq!(
        kinds,
        kinds
            .iter()
            .filter(|k| matches!(k, EventType::NodeDataChanged | EventType::NodeDeleted))
            .copied()
            .collect::<Vec<_>>(),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(k, p, _)| *k == EventType::NodeDeleted && p.ends_with("/web-stable-0")),
        "{events:?}"
    );
    assert!(
        events.windows(2).all(|w| w[0].2 == w[1].2),
        "one transaction: {events:?}"
    );
    let eps = read_endpoints(&observer, path).await;
    let stable: u64 = eps
        .values()
        .filter(|e| e.group == "stable")
        .map(|e| u64::from(e.weight))
        .sum();
    assert_eq!(stable, 900_000, "the group's share is intact");
    c.delete(&marker, None).await.unwrap();
}

#[tokio::test]
async fn a_full_resync_repairs_tampering() {
    let zk = ZkServer::shared();
    let c = connect(zk).await;
    let path = "/podkeeper/shop/tamper";
    let pods = fleet();
    let mut cache = None;
    sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&pods),
        &mut cache,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let opts = CreateMode::Persistent.with_acls(Acls::anyone_all());
    c.delete(&endpoint_path(path, "web-stable-1"), None)
        .await
        .unwrap();
    c.set_data(&endpoint_path(path, "web-stable-2"), b"garbage", None)
        .await
        .unwrap();
    c.create(&endpoint_path(path, "intruder"), b"{}", &opts)
        .await
        .unwrap();

    // Between resyncs the operator trusts its cache and writes nothing for unchanged pods...
    let r = sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&pods),
        &mut cache,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    assert!(
        matches!(r, Synced::Applied { applied, .. } if applied.znodes == 0),
        "{r:?}"
    );
    // ...and the full resync (an empty cache) reads everything back and repairs it.
    let mut cache = None;
    let r = sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&pods),
        &mut cache,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let Synced::Applied { plan, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        plan.counts(),
        (1, 1, 1),
        "recreate, rewrite, remove the intruder"
    );
    assert_eq!(read_endpoints(&c, path).await, want(&pods));
    // A pod change planned from a cache that tampering made stale fails its version check,
    // re-reads and still lands.
    c.set_data(&endpoint_path(path, "web-stable-3"), b"garbage", None)
        .await
        .unwrap();
    let mut changed = pods.clone();
    changed[3].ip = Some("10.9.9.9".into());
    let r = sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&changed),
        &mut cache,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    assert!(matches!(r, Synced::Applied { .. }), "{r:?}");
    assert_eq!(read_endpoints(&c, path).await, want(&changed));

    // Deleting the whole endpoints folder is repaired by a resync (empty cache) too.
    for child in c.list_children(&endpoints_path(path)).await.unwrap() {
        c.delete(&endpoint_path(path, &child), None).await.unwrap();
    }
    c.delete(&endpoints_path(path), None).await.unwrap();
    let mut fresh: Option<ServiceState> = None;
    sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&pods),
        &mut fresh,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(read_endpoints(&c, path).await, want(&pods));
}

#[tokio::test]
async fn a_second_resource_on_the_same_path_gets_a_conflict_and_writes_nothing() {
    let zk = ZkServer::shared();
    let c = connect(zk).await;
    let path = "/podkeeper/shop/contested";
    let pods = fleet();
    sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&pods),
        &mut None,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let (before, stat) = c.get_data(path).await.unwrap();
    let eps_before = read_endpoints(&c, path).await;

    let other = record("web-copy", "u2");
    let r = sync_once(
        &c,
        path,
        &other,
        &want(&pods[..1]),
        &mut None,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let Synced::Conflict(msg) = r else {
        panic!("expected Conflict, got {r:?}")
    };
    assert!(msg.contains("shop/web"), "{msg}");
    let (after, stat_after) = c.get_data(path).await.unwrap();
    assert_eq!(
        (before, stat.version, stat.mzxid),
        (after, stat_after.version, stat_after.mzxid)
    );
    assert_eq!(read_endpoints(&c, path).await, eps_before);

    // A znode that is not a podkeeper record is never taken over either.
    c.create(
        "/podkeeper/shop/foreign",
        b"not json",
        &CreateMode::Persistent.with_acls(Acls::anyone_all()),
    )
    .await
    .unwrap();
    let r = sync_once(
        &c,
        "/podkeeper/shop/foreign",
        &record("web", "u1"),
        &want(&pods),
        &mut None,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    assert!(matches!(r, Synced::Conflict(_)));
    assert!(
        c.list_children("/podkeeper/shop/foreign")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn removing_a_registration_deletes_all_its_znodes_and_nothing_else() {
    let zk = ZkServer::shared();
    let c = connect(zk).await;
    let path = "/podkeeper/shop/doomed";
    let neighbour = "/podkeeper/shop/neighbour";
    let pods = fleet();
    sync_once(
        &c,
        neighbour,
        &record("nb", "u9"),
        &want(&pods),
        &mut None,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let mut cache = None;
    sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&pods),
        &mut cache,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    writer::remove_all(&c, path, cache.as_ref().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(c.check_stat(path).await.unwrap(), None);
    assert_eq!(read_endpoints(&c, neighbour).await.len(), 8);
}

#[tokio::test]
async fn a_large_plan_is_split_into_transactions_under_the_packet_limit() {
    let zk = ZkServer::shared();
    let c = connect(zk).await;
    let path = "/podkeeper/shop/large";
    let pods: Vec<PodInfo> = (0..3000).map(|i| pod(i, "stable", true)).collect();
    let r = sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&pods),
        &mut None,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let Synced::Applied { applied, .. } = r else {
        panic!()
    };
    assert_eq!(applied.znodes, 3000);
    assert!(applied.transactions > 1, "{applied:?}");
    assert_eq!(
        c.list_children(&endpoints_path(path)).await.unwrap().len(),
        3000
    );
    // Read back in many multi-reads: every record under its own name, and nothing to write.
    let state = loaded(&c, path, &record("web", "u1")).await;
    let read: BTreeMap<_, _> = state
        .endpoints
        .iter()
        .map(|(k, cur)| (k.clone(), cur.record.clone().expect("a readable record")))
        .collect();
    assert_eq!(read, want(&pods));
    let r = sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&pods),
        &mut Some(state),
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let Synced::Applied { plan, applied, .. } = r else {
        panic!("{r:?}")
    };
    assert!(plan.ops.is_empty() && applied.znodes == 0, "{applied:?}");
}

#[tokio::test]
async fn after_a_zookeeper_restart_the_session_reconnects_and_sync_converges() {
    let mut zk = ZkServer::start();
    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let session = Session::start(
        Target {
            connect: zk.connect_string(),
            chroot: Some("/chrooted".into()),
        },
        SessionOptions::anonymous(Duration::from_secs(10)),
        tx,
    );
    // The session announces every state change on `changes`; wait for the one we need.
    async fn wait_until(
        session: &Session,
        changes: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
        available: bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while session.is_available() != available {
            tokio::time::timeout_at(deadline, changes.recv())
                .await
                .unwrap_or_else(|_| panic!("session available={available} within 30s"))
                .expect("the session task runs");
        }
    }
    wait_until(&session, &mut changes, true).await;
    let path = "/podkeeper/shop/restart";
    let mut pods = fleet();
    let (client, _) = session.client().unwrap();
    let mut cache = None;
    sync_once(
        &client,
        path,
        &record("web", "u1"),
        &want(&pods),
        &mut cache,
        &WriteOptions::default(),
    )
    .await
    .unwrap();

    zk.stop();
    wait_until(&session, &mut changes, false).await;
    pods[1].ready = false;
    assert!(session.client().is_err(), "no client while disconnected");
    zk.restart();
    // Waiting on `changes` proves that session changes are announced for a resync.
    wait_until(&session, &mut changes, true).await;
    let (client, _) = session.client().unwrap();
    sync_once(
        &client,
        path,
        &record("web", "u1"),
        &want(&pods),
        &mut None,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let raw = connect(&zk).await;
    assert_eq!(
        read_endpoints(&raw, &format!("/chrooted{path}")).await,
        want(&pods)
    );
}

#[tokio::test]
async fn a_fenced_former_leader_cannot_write_and_nothing_it_held_back_lands() {
    let zk = ZkServer::shared();
    let c = connect(zk).await;
    let path = "/podkeeper/shop/fenced";
    let epoch = "/podkeeper/.leader-epoch-test";
    let old_leader = leader(&c, epoch, "replica-a").await;
    let mut pods = fleet();
    let mut cache = None;
    sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&pods),
        &mut cache,
        &old_leader,
    )
    .await
    .unwrap();
    let before = read_endpoints(&c, path).await;

    // A new leader takes over and bumps the epoch; the old one wakes up and tries to write.
    let new_leader = leader(&c, epoch, "replica-b").await;
    pods[0].ready = false;
    let err = sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&pods),
        &mut cache,
        &old_leader,
    )
    .await
    .unwrap_err();
    assert_fenced(&err);
    assert_eq!(
        read_endpoints(&c, path).await,
        before,
        "nothing the old leader held back landed"
    );
    let err = writer::remove_all(
        &c,
        path,
        &writer::load(&c, path, &record("web", "u1").owner, &Default::default())
            .await
            .map(|l| match l {
                writer::Loaded::Owned(s) => s,
                other => panic!("{other:?}"),
            })
            .unwrap(),
        old_leader.fence.as_ref(),
    )
    .await
    .unwrap_err();
    assert_fenced(&err);

    // The new leader writes.
    sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&pods),
        &mut None,
        &new_leader,
    )
    .await
    .unwrap();
    assert_eq!(read_endpoints(&c, path).await, want(&pods));
}

/// A former leader creates no folder either: each missing parent is created in a `multi()`
/// that checks the fence, so nothing it does lands after the new leader's bump.
#[tokio::test]
async fn a_fenced_former_leader_creates_no_folder() {
    let zk = ZkServer::shared();
    let c = connect(zk).await;
    let epoch = "/podkeeper/.leader-epoch-mkdir";
    let old_leader = leader(&c, epoch, "replica-a").await;
    leader(&c, epoch, "replica-b").await;
    let top = "/podkeeper/fenced-mkdir";
    let path = format!("{top}/team/web");
    let err = sync_once(
        &c,
        &path,
        &record("web", "u1"),
        &want(&fleet()),
        &mut None,
        &old_leader,
    )
    .await
    .unwrap_err();
    assert_fenced(&err);
    assert_eq!(c.check_stat(top).await.unwrap(), None, "no folder created");
}

#[tokio::test]
async fn a_dry_run_plans_but_writes_nothing() {
    let zk = ZkServer::shared();
    let c = connect(zk).await;
    let path = "/podkeeper/shop/dry";
    let dry = WriteOptions {
        dry_run: true,
        ..Default::default()
    };
    let r = sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&fleet()),
        &mut None,
        &dry,
    )
    .await
    .unwrap();
    let Synced::DryRun { plan, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(plan.counts(), (8, 0, 0));
    assert_eq!(c.check_stat(path).await.unwrap(), None, "nothing written");
    sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&fleet()),
        &mut None,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let mut pods = fleet();
    pods.truncate(3);
    let r = sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&pods),
        &mut None,
        &dry,
    )
    .await
    .unwrap();
    assert!(
        matches!(r, Synced::DryRun { ref plan, .. } if plan.counts().2 == 5),
        "{r:?}"
    );
    assert_eq!(read_endpoints(&c, path).await.len(), 8, "nothing removed");
}

#[tokio::test]
async fn the_deletion_cap_splits_mass_removals_into_small_transactions() {
    let zk = ZkServer::shared();
    let c = connect(zk).await;
    let path = "/podkeeper/shop/capped";
    let pods: Vec<PodInfo> = (0..40).map(|i| pod(i, "stable", true)).collect();
    sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&pods),
        &mut None,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let capped = WriteOptions {
        max_deletes_per_txn: 10,
        ..Default::default()
    };
    let r = sync_once(
        &c,
        path,
        &record("web", "u1"),
        &want(&pods[..5]),
        &mut None,
        &capped,
    )
    .await
    .unwrap();
    let Synced::Applied { applied, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        applied.transactions, 4,
        "35 deletions at most 10 per transaction"
    );
    assert_eq!(read_endpoints(&c, path).await, want(&pods[..5]));
}

/// The writer with client registries, as a reconcile runs it: native endpoints and the client
/// formats' nodes from one desired state, one plan, one `writer::sync`.
async fn sync_clients(
    c: &Client,
    path: &str,
    want: &BTreeMap<SmolStr, Arc<PublishedRecord>>,
    clients: &Arc<podkeeper::zk::clients::ClientRegistries>,
    cache: &mut Option<ServiceState>,
) -> Synced {
    let options = WriteOptions {
        clients: Some(clients.clone()),
        ..Default::default()
    };
    let desired = clients.desired(want.values());
    let planned = |s: &ServiceState| {
        (
            podkeeper::model::plan::diff(want, &s.endpoints),
            podkeeper::model::nodes::diff_holding(
                &desired.nodes,
                &s.nodes,
                &s.foreign,
                &desired.held,
            ),
        )
    };
    writer::sync(c, path, &record("web", "u1"), cache, &options, planned)
        .await
        .unwrap()
}

#[tokio::test]
async fn client_formats_are_written_with_the_endpoints_and_foreign_nodes_beside_them_stay() {
    use podkeeper::zk::clients::{ClientRegistries, ClientRegistry};
    use podkeeper::zk::format::publish::OwnerTag;
    use podkeeper::zk::format::{curator, dubbo};
    let zk = ZkServer::shared();
    let c = connect(zk).await;
    let iface = format!("org.example.Zk{}", std::process::id());
    let prefixes = ["/podkeeper", "/dubbo", "/services"].map(String::from);
    let owner = OwnerTag::new("test", "shop", "web");
    let clients = Arc::new(
        ClientRegistries::compile(
            vec![
                ClientRegistry::Dubbo(dubbo::Options::new(&[iface.as_str()])),
                ClientRegistry::Curator(curator::Options {
                    base_path: format!("/services/zk-sync-{}", std::process::id()),
                    ..Default::default()
                }),
            ],
            "web",
            owner,
            &prefixes,
        )
        .unwrap(),
    );
    let dirs = podkeeper::zk::writer::ClientNodes::dirs(clients.as_ref());
    let providers = dirs[0].clone();
    // A provider on a VM registered itself (ephemeral, as Dubbo does) before podkeeper came.
    let vm = format!(
        "{providers}/{}",
        dubbo::java_url_encode(&format!(
            "dubbo://192.168.0.9:20880/{iface}?interface={iface}&side=provider&weight=100"
        ))
    );
    c.mkdir(
        &providers,
        &CreateMode::Persistent.with_acls(Acls::anyone_all()),
    )
    .await
    .unwrap();
    c.create(
        &vm,
        b"",
        &CreateMode::Ephemeral.with_acls(Acls::anyone_all()),
    )
    .await
    .unwrap();
    let path = "/podkeeper/shop/client-formats";
    let mut pods = fleet();
    let mut cache = None;
    let r = sync_clients(&c, path, &want(&pods), &clients, &mut cache).await;
    let Synced::Applied { applied, nodes, .. } = r else {
        panic!("expected Applied, got {r:?}")
    };
    assert_eq!(
        applied.transactions, 1,
        "endpoints and every format in one transaction"
    );
    assert!(nodes.clashes.is_empty());
    let dubbo_children = c.list_children(&providers).await.unwrap();
    assert_eq!(dubbo_children.len(), 8 + 1, "8 pods and the VM provider");
    assert_eq!(c.list_children(&dirs[1]).await.unwrap().len(), 8);
    // A pod fails: its Dubbo node goes and the group's other weights are renamed, in one
    // transaction with the native change; the VM's node is untouched.
    let (_, vm_before) = c.get_data(&vm).await.unwrap();
    pods[0].ready = false;
    let r = sync_clients(&c, path, &want(&pods), &clients, &mut cache).await;
    let Synced::Applied { applied, .. } = r else {
        panic!("expected Applied, got {r:?}")
    };
    assert_eq!(applied.transactions, 1);
    assert_eq!(c.list_children(&providers).await.unwrap().len(), 7 + 1);
    let (_, vm_after) = c.get_data(&vm).await.unwrap();
    assert_eq!(vm_after.mzxid, vm_before.mzxid);
    // A fresh load (as after a restart) finds the same nodes ours and the VM's foreign.
    let mut reloaded = None;
    let r = sync_clients(&c, path, &want(&pods), &clients, &mut reloaded).await;
    assert!(
        matches!(&r, Synced::Applied { plan, nodes, .. } if plan.is_empty() && nodes.ops.is_empty()),
        "{r:?}"
    );
    assert!(reloaded.as_ref().unwrap().foreign.contains(&vm));
    // Removal deletes ours and nothing else.
    writer::remove_owned(
        &c,
        path,
        &record("web", "u1").owner,
        &WriteOptions {
            clients: Some(clients.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let left = c.list_children(&providers).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(format!("{providers}/{}", left[0]), vm);
    assert!(c.list_children(&dirs[1]).await.unwrap().is_empty());
}

/// The controller's incremental path: a tracker updated pod by pod, each change written by
/// `sync_endpoints` from only the names the tracker changed, against a warm cache. After every
/// step an independent reader sees exactly the desired endpoints (the re-weighed peers of the
/// changed pod's group included); a node deleted behind the writer's back is not seen by an
/// incremental step and is put back by the next write from a cold cache.
#[tokio::test]
async fn incremental_syncs_of_the_changed_names_keep_zookeeper_equal_to_the_desired_state() {
    use podkeeper::model::tracker::Tracker;
    let zk = ZkServer::shared();
    let c = connect(zk).await;
    let reader = connect(zk).await;
    let path = "/podkeeper/shop/incremental";
    let spec: ServiceRegistrationSpec = serde_yaml::from_str(SPEC).unwrap();
    let reg = Registration::compile("shop", &spec).unwrap();
    let nodes = HashMap::new();
    let mut pods: Vec<PodInfo> = (0..12).map(|i| pod(i, "stable", true)).collect();
    pods.extend((0..4).map(|i| pod(i, "canary", i % 2 == 0)));
    let mut tracker = Tracker::build(&reg, &pods, &nodes, 0);
    let (rec, opts) = (record("web", "u1"), WriteOptions::default());
    let mut cache = None;
    let full = (&tracker.desired().endpoints, tracker.unpublished());
    writer::sync_endpoints(&c, path, &rec, &mut cache, &opts, full, |_| {
        Default::default()
    })
    .await
    .unwrap();
    tracker.published();
    // Flips across both groups, a pod gone and one come back.
    let steps: [(usize, Option<bool>); 7] = [
        (0, Some(false)),
        (13, Some(true)),
        (12, Some(false)),
        (5, None),
        (0, Some(true)),
        (14, Some(false)),
        (5, Some(true)),
    ];
    for (k, (i, change)) in steps.into_iter().enumerate() {
        if let Some(ready) = change {
            pods[i].ready = ready;
        }
        let name = pods[i].name.clone();
        let changed = [(name.as_str(), change.map(|_| &pods[i]))];
        tracker.update(&reg, changed, &nodes, 0);
        let names = tracker.unpublished().expect("published before: tracked");
        assert!(names.contains(&name), "step {k}: the changed pod is listed");
        let target = (&tracker.desired().endpoints, Some(names));
        let synced = writer::sync_endpoints(&c, path, &rec, &mut cache, &opts, target, |_| {
            Default::default()
        })
        .await
        .unwrap();
        assert!(
            matches!(synced, Synced::Applied { .. }),
            "step {k}: {synced:?}"
        );
        tracker.published();
        assert_eq!(
            read_endpoints(&reader, path).await,
            tracker.desired().endpoints,
            "step {k}: ZooKeeper holds the desired state"
        );
        // The writer records a transaction's effects while it is in flight: the cache it
        // keeps is what a fresh read finds, znode versions included (a wrong version would
        // make the next write fail as stale and read everything again).
        assert_eq!(
            cache.as_ref(),
            Some(&loaded(&reader, path, &rec).await),
            "step {k}: the warm cache is what ZooKeeper holds"
        );
    }
    // Tampering: a node deleted behind the writer's back. A step that does not touch it
    // trusts the warm cache (dropping it is the tamper watch's job)...
    let victim = pods[1].name.clone();
    reader
        .delete(&endpoint_path(path, &victim), None)
        .await
        .unwrap();
    pods[15].ready = true; // a canary: re-weighs the canaries only
    tracker.update(&reg, [(pods[15].name.as_str(), Some(&pods[15]))], &nodes, 0);
    let target = (&tracker.desired().endpoints, tracker.unpublished());
    writer::sync_endpoints(&c, path, &rec, &mut cache, &opts, target, |_| {
        Default::default()
    })
    .await
    .unwrap();
    tracker.published();
    let held = read_endpoints(&reader, path).await;
    assert!(!held.contains_key(&victim), "not looked at, not repaired");
    assert_eq!(held.len() + 1, tracker.desired().endpoints.len());
    // ...one that re-weighs it finds it gone: the write fails whole as stale, and its retry
    // reads everything again, diffs in full and repairs.
    pods[2].ready = false;
    tracker.update(&reg, [(pods[2].name.as_str(), Some(&pods[2]))], &nodes, 0);
    let target = (&tracker.desired().endpoints, tracker.unpublished());
    writer::sync_endpoints(&c, path, &rec, &mut cache, &opts, target, |_| {
        Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        read_endpoints(&reader, path).await,
        tracker.desired().endpoints,
        "the retry after a stale write compares everything"
    );
}

#[tokio::test]
async fn retiring_client_folders_removes_only_this_resource_s_nodes_and_creates_no_folder() {
    use podkeeper::zk::clients::{ClientRegistries, ClientRegistry, PlacedNodes};
    use podkeeper::zk::format::dubbo;
    use podkeeper::zk::format::publish::OwnerTag;
    use podkeeper::zk::format::registry::Kind;
    let zk = ZkServer::shared();
    let c = connect(zk).await;
    let iface = format!("org.example.Retire{}", std::process::id());
    let prefixes = ["/podkeeper", "/dubbo"].map(String::from);
    let owner = OwnerTag::new("test", "shop", "web");
    let clients = Arc::new(
        ClientRegistries::compile(
            vec![ClientRegistry::Dubbo(dubbo::Options::new(
                &[iface.as_str()],
            ))],
            "web",
            owner.clone(),
            &prefixes,
        )
        .unwrap(),
    );
    let providers = podkeeper::zk::writer::ClientNodes::dirs(clients.as_ref())[0].clone();
    let path = "/podkeeper/shop/retire-folders";
    sync_clients(&c, path, &want(&fleet()), &clients, &mut None).await;
    let vm = format!(
        "{providers}/{}",
        dubbo::java_url_encode(&format!(
            "dubbo://192.168.0.9:20880/{iface}?interface={iface}&side=provider&weight=100"
        ))
    );
    let open = CreateMode::Persistent.with_acls(Acls::anyone_all());
    c.create(&vm, b"", &open).await.unwrap();
    // Another resource of the same cluster wrote into the same folder: its nodes stay too.
    let other = format!(
        "{providers}/{}",
        dubbo::java_url_encode(&format!(
            "dubbo://10.9.9.9:8080/{iface}?interface={iface}&side=provider&weight=100\
             &podkeeper.owner=test/shop/other"
        ))
    );
    c.create(&other, b"", &open).await.unwrap();
    assert_eq!(c.list_children(&providers).await.unwrap().len(), 8 + 2);

    let placed = PlacedNodes::new(vec![(Kind::Dubbo, providers.clone())], owner.clone());
    let removed = writer::remove_nodes(&c, &placed, &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(removed, 8, "the 8 endpoints' provider URLs");
    let mut left = c.list_children(&providers).await.unwrap();
    left.sort();
    let mut want_left = vec![
        vm.rsplit('/').next().unwrap().to_string(),
        other.rsplit('/').next().unwrap().to_string(),
    ];
    want_left.sort();
    assert_eq!(
        left, want_left,
        "the VM's and the other resource's nodes stay"
    );
    // The native record was not touched: retiring folders is not retiring the path.
    assert_eq!(read_endpoints(&c, path).await.len(), 8);

    // A folder that is gone is skipped, never created (a retired folder must not reappear).
    let gone = format!("/dubbo/org.example.Gone{}/providers", std::process::id());
    let placed = PlacedNodes::new(vec![(Kind::Dubbo, gone.clone())], owner);
    let removed = writer::remove_nodes(&c, &placed, &WriteOptions::default()).await;
    assert_eq!(removed.unwrap(), 0);
    assert!(c.check_stat(&gone).await.unwrap().is_none());
}

/// Waits for `state` on `states`, with a deadline.
async fn state_reached(
    states: &mut zookeeper_client::StateWatcher,
    state: zookeeper_client::SessionState,
) {
    let reached = async {
        loop {
            if states.changed().await == state {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), reached)
        .await
        .unwrap_or_else(|_| panic!("no {state:?} within 30 s"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tamper_watch_is_set_again_after_a_reconnect_within_the_session() {
    use podkeeper::zk::tamper::{Change, Tamper};
    use zookeeper_client::SessionState;
    let mut zk = ZkServer::start();
    let session = session_on(&zk, Duration::from_secs(30));
    let (c, generation) = wait_for_client(&session).await;
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let tamper = Tamper::new(tx);
    let options = WriteOptions {
        ledger: Some(tamper.ledger("")),
        ..Default::default()
    };
    let path = "/podkeeper/shop/rearm";
    let rec = record("web", "u1");
    let pods = fleet();
    sync_once(&c, path, &rec, &want(&pods), &mut None, &options)
        .await
        .unwrap();
    tamper
        .watch(&c, generation, "", path, "shop/web")
        .await
        .unwrap();
    let other = connect(&zk).await;
    let ep = endpoint_path(path, "web-stable-0");
    other
        .set_data(&ep, b"{\"host\":\"6.6.6.6\"}", None)
        .await
        .unwrap();
    let t = next(&mut events).await.expect("reported before");
    assert_eq!((t.path.as_str(), t.kind), (ep.as_str(), Change::Changed));

    // The server goes away and comes back with its data: the client reconnects inside its
    // session (no expiry), the case where persistent watches were lost.
    let mut states = c.state_watcher();
    drop(other);
    zk.restart();
    // The restart drops the connection; the watcher may fold Disconnected into the reconnect
    // when it is quick, so the reconnect is the state to wait for.
    state_reached(&mut states, SessionState::SyncConnected).await;
    let (_, same) = wait_for_client(&session).await;
    assert_eq!(
        same, generation,
        "the same session: no expiry in this window"
    );

    // Our own writes after the reconnect are still recognised, someone else's still reported.
    let mut cache = None;
    sync_once(&c, path, &rec, &want(&pods[1..]), &mut cache, &options)
        .await
        .unwrap();
    let other = connect(&zk).await;
    let ep = endpoint_path(path, "web-stable-1");
    other
        .set_data(&ep, b"{\"host\":\"6.6.6.7\"}", None)
        .await
        .unwrap();
    let t = next(&mut events)
        .await
        .expect("reported after the reconnect");
    assert_eq!((t.path.as_str(), t.kind), (ep.as_str(), Change::Changed));
    assert_eq!(
        tamper.ledger("").pending(),
        0,
        "every write of ours raised its event"
    );
}

/// The next tampering reported within 10 s.
async fn next(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<podkeeper::zk::tamper::Tampered>,
) -> Option<podkeeper::zk::tamper::Tampered> {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .ok()
        .flatten()
}

/// The target of `zk`'s plain port, without a chroot.
fn target_of(zk: &ZkServer) -> Target {
    Target {
        connect: zk.connect_string(),
        chroot: None,
    }
}

/// An operator session on `zk` (its change notices dropped).
fn session_on(zk: &ZkServer, timeout: Duration) -> Arc<Session> {
    let (changed, _) = tokio::sync::mpsc::unbounded_channel();
    Session::start(target_of(zk), SessionOptions::anonymous(timeout), changed)
}

/// The session's client once it is connected.
async fn wait_for_client(session: &Session) -> (Client, u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(c) = session.client() {
            return c;
        }
        assert!(std::time::Instant::now() < deadline, "no session in 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_installations_on_one_ensemble_keep_their_own_epochs_and_never_fence_each_other() {
    use podkeeper::zk::fence::Fencer;
    let zk = ZkServer::shared();
    let session = session_on(zk, Duration::from_secs(10));
    let (c, _) = wait_for_client(&session).await;
    let prefix = format!("/podkeeper-epochs-{}", std::process::id());
    let east = Fencer::new(&prefix, "east", "east-0");
    let west = Fencer::new(&prefix, "west", "west-0");
    let pods = fleet();
    // Each cluster's leader starts a term, then the other starts one, then each writes: with
    // one shared epoch the first of them would be fenced.
    let mut terms = Vec::new();
    for (term, fencer) in [(1, &east), (1, &west), (2, &east), (2, &west)] {
        terms.push(
            fencer
                .fence(&session, &c, 1, Some(term))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_ne!(terms[0].path, terms[1].path, "one epoch per installation");
    for (i, fence) in [(0, &terms[2]), (1, &terms[3])] {
        let options = WriteOptions {
            fence: Some(fence.clone()),
            ..Default::default()
        };
        let path = format!("/podkeeper/shop/epoch-{i}");
        let synced = sync_once(
            &c,
            &path,
            &record("web", "u1"),
            &want(&pods),
            &mut None,
            &options,
        )
        .await
        .unwrap_or_else(|e| panic!("installation {i} was fenced by the other: {e}"));
        assert!(matches!(synced, Synced::Applied { .. }), "{synced:?}");
    }
}

#[tokio::test]
async fn a_registry_whose_encoder_refuses_keeps_what_it_published_while_the_others_follow() {
    use podkeeper::zk::clients::{ClientRegistries, ClientRegistry};
    use podkeeper::zk::format::publish::OwnerTag;
    use podkeeper::zk::format::{curator, dubbo};
    let zk = ZkServer::shared();
    let c = connect(zk).await;
    let iface = format!("org.example.Held{}", std::process::id());
    let base = format!("/services/held-{}", std::process::id());
    let prefixes = ["/podkeeper", "/dubbo", "/services"].map(String::from);
    let clients = Arc::new(
        ClientRegistries::compile(
            vec![
                ClientRegistry::Dubbo(dubbo::Options::new(&[iface.as_str()])),
                ClientRegistry::Curator(curator::Options {
                    base_path: base.clone(),
                    ..Default::default()
                }),
            ],
            "web",
            OwnerTag::new("test", "shop", "web"),
            &prefixes,
        )
        .unwrap(),
    );
    let dirs = podkeeper::zk::writer::ClientNodes::dirs(clients.as_ref());
    let path = "/podkeeper/shop/held";
    let mut cache = None;
    let pods = fleet();
    sync_clients(&c, path, &want(&pods), &clients, &mut cache).await;
    let before = c.list_children(&dirs[0]).await.unwrap();
    assert_eq!(before.len(), 8);
    // A new pod whose zone Dubbo's URL syntax cannot carry: Dubbo refuses the new state.
    let mut bad = want(&pods[1..]);
    let mut odd = (*bad.values().next().unwrap()).as_ref().clone();
    odd.pod = "web-odd".into();
    odd.zone = Some("a&b".into());
    bad.insert("web-odd".into(), Arc::new(odd));
    let synced = sync_clients(&c, path, &bad, &clients, &mut cache).await;
    assert!(matches!(synced, Synced::Applied { .. }), "{synced:?}");
    // Dubbo publishes every pod it can encode: web-stable-0 left, the odd one stays out.
    let dubbo_hosts = |names: &[String]| -> Vec<String> {
        let mut hosts: Vec<String> = names
            .iter()
            .map(|n| dubbo::decode(n, &[]).expect("a provider URL").host)
            .collect();
        hosts.sort();
        hosts
    };
    let after = c.list_children(&dirs[0]).await.unwrap();
    assert_eq!(after.len(), 7, "{after:?}");
    let odd_host = bad["web-odd"].host.to_string();
    assert_eq!(
        dubbo_hosts(&after)
            .iter()
            .filter(|h| **h == odd_host)
            .count(),
        1,
        "web-odd shares its host with another pod, whose provider is listed once"
    );
    // Curator and the native records follow the new state.
    assert_eq!(c.list_children(&dirs[1]).await.unwrap().len(), 8);
    assert!(read_endpoints(&c, path).await.contains_key("web-odd"));
    assert!(!read_endpoints(&c, path).await.contains_key("web-stable-0"));

    // When no pod can be encoded, the folder is held as it was: nothing is deleted.
    let all_bad: BTreeMap<SmolStr, Arc<PublishedRecord>> = bad
        .iter()
        .map(|(k, v)| {
            let mut r = v.as_ref().clone();
            r.zone = Some("a&b".into());
            (k.clone(), Arc::new(r))
        })
        .collect();
    sync_clients(&c, path, &all_bad, &clients, &mut cache).await;
    let mut held = c.list_children(&dirs[0]).await.unwrap();
    held.sort();
    let mut after = after;
    after.sort();
    assert_eq!(
        held, after,
        "the Dubbo providers stay as they were, none deleted"
    );
}

#[tokio::test]
async fn nodes_another_client_created_below_an_endpoint_do_not_wedge_its_removal() {
    let zk = ZkServer::shared();
    let c = connect(zk).await;
    let path = "/podkeeper/shop/occupied";
    let rec = record("web", "u1");
    let pods = fleet();
    sync_once(&c, path, &rec, &want(&pods), &mut None, &Default::default())
        .await
        .unwrap();
    let ep = endpoint_path(path, "web-stable-0");
    let open = CreateMode::Persistent.with_acls(Acls::anyone_all());
    c.create(&format!("{ep}/note"), b"", &open).await.unwrap();
    c.create(&format!("{ep}/note/deeper"), b"", &open)
        .await
        .unwrap();
    // The pod goes: its endpoint must go, children and all, and the rest follow.
    let synced = sync_once(
        &c,
        path,
        &rec,
        &want(&pods[1..]),
        &mut None,
        &Default::default(),
    )
    .await
    .expect("the removal is not wedged by the foreign children");
    assert!(matches!(synced, Synced::Applied { .. }), "{synced:?}");
    assert!(c.check_stat(&ep).await.unwrap().is_none());
    assert_eq!(read_endpoints(&c, path).await, want(&pods[1..]));
}

/// Deleting the resource is not wedged either: children others created below an endpoint,
/// below the endpoints folder's entries or beside `endpoints` under the record go with it.
#[tokio::test]
async fn nodes_another_client_created_below_a_registration_do_not_wedge_its_deletion() {
    let zk = ZkServer::shared();
    let c = connect(zk).await;
    let path = "/podkeeper/shop/occupied-whole";
    let rec = record("web", "u1");
    let mut cache = None;
    sync_once(
        &c,
        path,
        &rec,
        &want(&fleet()),
        &mut cache,
        &Default::default(),
    )
    .await
    .unwrap();
    let ep = endpoint_path(path, "web-stable-0");
    let open = CreateMode::Persistent.with_acls(Acls::anyone_all());
    for node in [
        format!("{ep}/note"),
        format!("{ep}/note/deeper"),
        format!("{path}/config"),
    ] {
        c.create(&node, b"", &open).await.unwrap();
    }
    writer::remove_all(&c, path, cache.as_ref().unwrap(), None)
        .await
        .expect("the deletion is not wedged by the foreign children");
    assert_eq!(c.check_stat(path).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_per_resource_ensemble_nobody_uses_is_closed_and_never_makes_the_operator_unready() {
    use podkeeper::zk::session::Sessions;
    let zk = ZkServer::start();
    let (changed, _changes) = tokio::sync::mpsc::unbounded_channel();
    let own = target_of(&zk);
    let sessions = Sessions::new(
        own,
        SessionOptions::anonymous(Duration::from_secs(10)),
        changed,
    );
    let connections = || {
        common::zk::four_letter(zk.port(), "cons").map_or(0, |out| {
            out.lines().filter(|l| l.contains("queued=")).count()
        })
    };
    wait_for_client(&sessions.get(None)).await;
    // A resource names a wrong ensemble: its session never connects...
    let wrong = Target {
        connect: format!("127.0.0.1:{}", common::zk::free_port()),
        chroot: None,
    };
    let _ = sessions.get(Some(&wrong));
    // ...and another one a chroot of the same server: a second, working session.
    let chrooted = Target {
        connect: zk.connect_string(),
        chroot: Some("/team-b".into()),
    };
    wait_for_client(&sessions.get(Some(&chrooted))).await;
    assert_eq!(sessions.open_others(), 2);
    assert_eq!(
        sessions.unavailable(),
        None,
        "only the operator's own ensemble counts"
    );
    let before = connections();
    assert!(before >= 2, "{before} connections");
    // Nothing asks for them any more (the resources were fixed or deleted).
    assert_eq!(sessions.close_idle(Duration::ZERO), 2);
    assert_eq!(sessions.open_others(), 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while connections() >= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the closed session's connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_client(&sessions.get(None)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_ensemble_holds_up_only_its_own_fence() {
    use podkeeper::zk::fence::Fencer;
    let (healthy, hung) = (ZkServer::start(), ZkServer::start());
    let (a, b) = (
        session_on(&healthy, Duration::from_secs(30)),
        session_on(&hung, Duration::from_secs(30)),
    );
    let (client_a, _) = wait_for_client(&a).await;
    let (client_b, _) = wait_for_client(&b).await;
    let fencer = Arc::new(Fencer::new("/podkeeper", "hung-test", "replica-0"));
    hung.signal_java("STOP");
    let stuck = {
        let (fencer, b) = (fencer.clone(), b.clone());
        tokio::spawn(async move { fencer.fence(&b, &client_b, 1, Some(1)).await })
    };
    // Let the bump on the hung ensemble get under way, holding its lock.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!stuck.is_finished(), "the hung ensemble answered");
    let healthy_fence = tokio::time::timeout(
        Duration::from_secs(5),
        fencer.fence(&a, &client_a, 1, Some(1)),
    )
    .await
    .expect("the healthy ensemble's fence waited for the hung one");
    assert!(healthy_fence.unwrap().is_some());
    hung.signal_java("CONT");
    let _ = tokio::time::timeout(Duration::from_secs(30), stuck).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tamper_watches_are_per_ensemble_and_unwatched_only_by_their_resource() {
    use podkeeper::zk::tamper::Tamper;
    let zk = ZkServer::shared();
    let c = connect(zk).await;
    let (tx, _events) = tokio::sync::mpsc::unbounded_channel();
    let tamper = Tamper::new(tx);
    let path = "/podkeeper/shop/keyed";
    // The same path on two ensembles (a move that kept the path): two watches.
    tamper.watch(&c, 1, "", path, "shop/web").await.unwrap();
    tamper
        .watch(&c, 1, "zk-b:2181", path, "shop/web")
        .await
        .unwrap();
    assert_eq!(tamper.watched().len(), 2);
    // Another resource moving away from that path does not take this one's watch.
    tamper.unwatch_root("", path, "shop/other");
    assert_eq!(tamper.watched().len(), 2);
    tamper.unwatch_root("", path, "shop/web");
    assert_eq!(
        tamper.watched(),
        [("zk-b:2181".to_string(), path.to_string())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_cluster_left_at_the_same_cluster_id_is_refused_not_silently_merged() {
    use podkeeper::zk::fence::Fencer;
    let zk = ZkServer::shared();
    let session = session_on(zk, Duration::from_secs(10));
    let (c, generation) = wait_for_client(&session).await;
    let prefix = format!("/podkeeper-marker-{}", std::process::id());
    let first = Fencer::new(&prefix, "default", "a-0");
    first.set_marker("uid-of-cluster-a");
    first.fence(&session, &c, generation, None).await.unwrap();
    // The same cluster again (a restart, another replica): fine.
    let again = Fencer::new(&prefix, "default", "a-1");
    again.set_marker("uid-of-cluster-a");
    again
        .fence(&session, &c, generation, Some(1))
        .await
        .unwrap();
    // Another cluster that kept the default id: refused, saying what to do.
    let second = Fencer::new(&prefix, "default", "b-0");
    second.set_marker("uid-of-cluster-b");
    let err = second
        .fence(&session, &c, generation, Some(1))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("uid-of-cluster-a") && msg.contains("--cluster-id"),
        "{msg}"
    );
    assert!(!err.is_transient());
    // With an id of its own it writes.
    let own = Fencer::new(&prefix, "cluster-b", "b-0");
    own.set_marker("uid-of-cluster-b");
    own.fence(&session, &c, generation, Some(1)).await.unwrap();
}

//! The discovery client against a real ZooKeeper: records written here exactly as the operator
//! writes them (JSON at `<path>` and `<path>/endpoints/<pod>`), changes seen live, fail-static.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::records;
use common::zk::ZkServer;
use podkeeper::discovery::{Discovery, PickContext, Snapshot, Staleness};
use podkeeper::model::policy::Policy;
use serde_json::json;
use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError};

/// Long enough for a loaded 2-core machine, short enough to fail a hung test quickly.
const DEADLINE: Duration = Duration::from_secs(30);

async fn client(zk: &ZkServer) -> Client {
    Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .connect(&zk.connect_string())
        .await
        .expect("connect to the test ZooKeeper")
}

fn service_json(name: &str, policy: Policy) -> Vec<u8> {
    serde_json::to_vec(&records::service(json!({
        "serviceName": name,
        "policy": policy,
        "owner": {"clusterId": "test", "namespace": "shop", "name": name, "uid": "uid-1"},
    })))
    .unwrap()
}

fn endpoint_json(pod: &str, ip: &str, weight: u32, status: &str) -> Vec<u8> {
    serde_json::to_vec(&records::endpoint(json!({
        "host": ip, "weight": weight, "group": "default", "zone": "z1", "pod": pod,
        "namespace": "shop", "status": status,
    })))
    .unwrap()
}

/// Creates or overwrites a persistent node, creating parents as needed.
async fn put(client: &Client, path: &str, data: &[u8]) {
    let options = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let parent = &path[..path.rfind('/').unwrap()];
    if !parent.is_empty() {
        client.mkdir(parent, &options).await.unwrap();
    }
    match client.create(path, data, &options).await {
        Ok(_) => {}
        Err(ZkError::NodeExists) => client.set_data(path, data, None).await.map(drop).unwrap(),
        Err(err) => panic!("create {path}: {err}"),
    }
}

/// A service with endpoints `web-0..n`, all UP with weight 100.
async fn register(client: &Client, path: &str, policy: Policy, n: usize) {
    put(client, path, &service_json("web", policy)).await;
    put(client, &format!("{path}/endpoints"), b"").await;
    for i in 0..n {
        let pod = format!("web-{i}");
        put(
            client,
            &format!("{path}/endpoints/{pod}"),
            &endpoint_json(&pod, &format!("10.0.0.{i}"), 100, "UP"),
        )
        .await;
    }
}

/// Deletes every endpoint in one transaction, the way a broken writer or a manual
/// `deleteall` would.
async fn delete_all_endpoints(client: &Client, path: &str) {
    let folder = format!("{path}/endpoints");
    let children = client.list_children(&folder).await.unwrap();
    let mut multi = client.new_multi_writer();
    for child in &children {
        multi
            .add_delete(&format!("{folder}/{child}"), None)
            .unwrap();
    }
    multi.commit().await.unwrap();
}

/// Waits on the subscription, never on a timer, until `ok` holds.
async fn wait_for(
    discovery: &Discovery,
    what: &str,
    mut ok: impl FnMut(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let mut updates = discovery.subscribe();
    match tokio::time::timeout(DEADLINE, updates.wait_for(|s| ok(s))).await {
        Ok(Ok(snapshot)) => Arc::clone(&snapshot),
        Ok(Err(_)) => panic!("the discovery task ended while waiting for {what}"),
        Err(_) => panic!(
            "no snapshot with {what} within {DEADLINE:?}; last: {:#?}",
            discovery.snapshot()
        ),
    }
}

fn names(snapshot: &Snapshot) -> Vec<&str> {
    snapshot.endpoints().iter().map(|e| e.name()).collect()
}

fn pickable(snapshot: &Snapshot) -> Vec<&str> {
    snapshot.pickable().iter().map(|e| e.name()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_matches_the_registry_and_picks_skip_draining() {
    let zk = ZkServer::shared();
    let client = client(zk).await;
    let path = "/discovery-tests/initial/web";
    register(&client, path, Policy::WeightedRandom, 3).await;
    put(
        &client,
        &format!("{path}/endpoints/web-9"),
        &endpoint_json("web-9", "10.0.0.9", 100, "DRAINING"),
    )
    .await;

    let discovery = Discovery::builder(zk.connect_string(), path)
        .start()
        .await
        .unwrap();
    let snapshot = discovery.snapshot();
    assert_eq!(snapshot.service().unwrap().service_name, "web");
    assert_eq!(snapshot.policy(), Policy::WeightedRandom);
    assert_eq!(names(&snapshot), ["web-0", "web-1", "web-2", "web-9"]);
    assert_eq!(pickable(&snapshot), ["web-0", "web-1", "web-2"]);
    assert!(!snapshot.is_stale());
    let first = &snapshot.endpoints()[0];
    assert_eq!(first.address(), "10.0.0.0:8080");
    assert_eq!(first.record().ports["http"], 8080);
    for _ in 0..1000 {
        assert_ne!(
            discovery.pick(&PickContext::default()).unwrap().name(),
            "web-9"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_switches_live_unless_pinned() {
    let zk = ZkServer::shared();
    let client = client(zk).await;
    let path = "/discovery-tests/policy/web";
    register(&client, path, Policy::RoundRobin, 4).await;
    let following = Discovery::builder(zk.connect_string(), path)
        .start()
        .await
        .unwrap();
    let pinned = Discovery::builder(zk.connect_string(), path)
        .policy(Policy::Random)
        .start()
        .await
        .unwrap();
    assert_eq!(following.snapshot().policy(), Policy::RoundRobin);

    for policy in [
        Policy::ConsistentHash,
        Policy::WeightedRoundRobin,
        Policy::LeastRequest,
    ] {
        put(&client, path, &service_json("web", policy)).await;
        let seen = wait_for(&following, &format!("policy {policy}"), |s| {
            s.policy() == policy
        })
        .await;
        assert_eq!(seen.service().unwrap().policy, policy);
        assert_eq!(
            pickable(&seen).len(),
            4,
            "a policy change keeps the endpoints"
        );
    }
    // The pinned client saw the same records but kept its own policy.
    wait_for(&pinned, "the last record", |s| {
        s.service()
            .is_some_and(|r| r.policy == Policy::LeastRequest)
    })
    .await;
    assert_eq!(pinned.snapshot().policy(), Policy::Random);

    // LeastRequest is live: picks carry in-flight guards.
    let picked = following.pick(&PickContext::default()).unwrap();
    assert!(picked.guard.is_some());
    assert_eq!(picked.in_flight(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_removed_and_drained_endpoints_are_seen() {
    let zk = ZkServer::shared();
    let client = client(zk).await;
    let path = "/discovery-tests/changes/web";
    register(&client, path, Policy::RoundRobin, 2).await;
    let discovery = Discovery::builder(zk.connect_string(), path)
        .start()
        .await
        .unwrap();
    assert_eq!(pickable(&discovery.snapshot()), ["web-0", "web-1"]);

    put(
        &client,
        &format!("{path}/endpoints/web-2"),
        &endpoint_json("web-2", "10.0.0.2", 100, "UP"),
    )
    .await;
    wait_for(&discovery, "web-2 added", |s| {
        pickable(s) == ["web-0", "web-1", "web-2"]
    })
    .await;

    put(
        &client,
        &format!("{path}/endpoints/web-0"),
        &endpoint_json("web-0", "10.0.0.0", 0, "DRAINING"),
    )
    .await;
    let drained = wait_for(&discovery, "web-0 draining", |s| {
        pickable(s) == ["web-1", "web-2"]
    })
    .await;
    assert_eq!(
        names(&drained),
        ["web-0", "web-1", "web-2"],
        "a draining endpoint is listed, not picked"
    );

    client
        .delete(&format!("{path}/endpoints/web-0"), None)
        .await
        .unwrap();
    wait_for(&discovery, "web-0 removed", |s| {
        names(s) == ["web-1", "web-2"]
    })
    .await;

    // A weight change is a new record for the same pod.
    put(
        &client,
        &format!("{path}/endpoints/web-1"),
        &endpoint_json("web-1", "10.0.0.1", 7, "UP"),
    )
    .await;
    wait_for(&discovery, "web-1 weight 7", |s| {
        s.endpoints()[0].record().weight == 7
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_writes_is_read_in_few_rounds() {
    let zk = ZkServer::shared();
    let client = client(zk).await;
    let path = "/discovery-tests/burst/web";
    register(&client, path, Policy::RoundRobin, 1).await;
    // The window is the only clock in this test, and it is set far above any scheduling stall
    // of a loaded runner: the server sends the transaction's 200 events back to back, so they
    // all land in the window the first one opens. What is asserted is the property, the burst
    // seen whole, never as a partial snapshot, not how fast it was read.
    let discovery = Discovery::builder(zk.connect_string(), path)
        .coalesce(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let before = discovery.snapshot().revision();
    let mut updates = discovery.subscribe();
    let seen = tokio::spawn(async move {
        let mut sizes = Vec::new();
        while updates.changed().await.is_ok() {
            let size = updates.borrow_and_update().pickable().len();
            sizes.push(size);
            if size == 201 {
                break;
            }
        }
        sizes
    });

    // One transaction, 200 new endpoints: 200 watch events.
    let mut multi = client.new_multi_writer();
    let options = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let records: Vec<(String, Vec<u8>)> = (1..=200)
        .map(|i| {
            let pod = format!("web-{i}");
            let data = endpoint_json(&pod, &format!("10.0.{}.{}", i / 250, i % 250), 100, "UP");
            (format!("{path}/endpoints/{pod}"), data)
        })
        .collect();
    for (node, data) in &records {
        multi.add_create(node, data, &options).unwrap();
    }
    multi.commit().await.unwrap();

    let after = wait_for(&discovery, "201 endpoints", |s| s.pickable().len() == 201).await;
    let sizes = tokio::time::timeout(DEADLINE, seen).await.unwrap().unwrap();
    assert_eq!(
        sizes,
        vec![201],
        "the 200 events of one transaction were published as these snapshot sizes; they should coalesce into one"
    );
    assert_eq!(after.revision() - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_path_is_empty_until_written() {
    let zk = ZkServer::shared();
    let client = client(zk).await;
    let path = "/discovery-tests/later/web";
    let discovery = Discovery::builder(zk.connect_string(), path)
        .start()
        .await
        .unwrap();
    let snapshot = discovery.snapshot();
    assert!(snapshot.service().is_none());
    assert!(discovery.pick(&PickContext::default()).is_none());

    register(&client, path, Policy::WeightedRoundRobin, 2).await;
    let seen = wait_for(&discovery, "the service written", |s| {
        s.pickable().len() == 2
    })
    .await;
    assert_eq!(seen.policy(), Policy::WeightedRoundRobin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_static_keeps_the_last_endpoints_when_all_vanish_at_once() {
    let zk = ZkServer::shared();
    let client = client(zk).await;
    let path = "/discovery-tests/fail-static-on/web";
    register(&client, path, Policy::RoundRobin, 3).await;
    // One transaction deletes all three; with the default 10 ms window a loaded runner can
    // read its events in two rounds (one endpoint left, then none), and fail-static then keeps
    // two. The window is set far above any stall: the property is what is kept, not the speed.
    let discovery = Discovery::builder(zk.connect_string(), path)
        .coalesce(Duration::from_secs(1))
        .start()
        .await
        .unwrap();

    delete_all_endpoints(&client, path).await;
    let kept = wait_for(&discovery, "the emptied mark", |s| {
        s.staleness() == Staleness::Emptied
    })
    .await;
    assert_eq!(pickable(&kept), ["web-0", "web-1", "web-2"]);
    assert!(discovery.is_stale());
    assert!(discovery.pick(&PickContext::default()).is_some());

    // The registry recovering replaces the kept view with the real one.
    put(
        &client,
        &format!("{path}/endpoints/web-7"),
        &endpoint_json("web-7", "10.0.0.7", 100, "UP"),
    )
    .await;
    let fresh = wait_for(&discovery, "web-7 alone", |s| pickable(s) == ["web-7"]).await;
    assert!(!fresh.is_stale());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_stale_flag_is_exposed() {
    let zk = ZkServer::shared();
    let client = client(zk).await;
    let path = "/discovery-tests/operator-stale/web";
    register(&client, path, Policy::RoundRobin, 2).await;
    let discovery = Discovery::builder(zk.connect_string(), path)
        .start()
        .await
        .unwrap();
    assert!(!discovery.is_stale());

    let mut record: serde_json::Value =
        serde_json::from_slice(&service_json("web", Policy::RoundRobin)).unwrap();
    record["stale"] = json!(true);
    put(&client, path, &serde_json::to_vec(&record).unwrap()).await;
    let kept = wait_for(&discovery, "the operator's stale flag", |s| {
        s.staleness() == Staleness::KeptByOperator
    })
    .await;
    assert_eq!(pickable(&kept), ["web-0", "web-1"]);

    put(&client, path, &service_json("web", Policy::RoundRobin)).await;
    wait_for(&discovery, "the flag cleared", |s| !s.is_stale()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fail_static_an_emptied_registry_empties_the_snapshot() {
    let zk = ZkServer::shared();
    let client = client(zk).await;
    let path = "/discovery-tests/fail-static-off/web";
    register(&client, path, Policy::RoundRobin, 3).await;
    let discovery = Discovery::builder(zk.connect_string(), path)
        .fail_static(false)
        .start()
        .await
        .unwrap();

    delete_all_endpoints(&client, path).await;
    let empty = wait_for(&discovery, "no endpoints", |s| s.endpoints().is_empty()).await;
    assert!(!empty.is_stale());
    assert!(discovery.pick(&PickContext::default()).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_down_keeps_the_snapshot_and_changes_after_restart_are_seen() {
    let mut zk = ZkServer::start();
    let client_before = client(&zk).await;
    let path = "/discovery-tests/restart/web";
    register(&client_before, path, Policy::WeightedRandom, 3).await;
    drop(client_before);
    let discovery = Discovery::builder(zk.connect_string(), path)
        .session_timeout(Duration::from_secs(15))
        .start()
        .await
        .unwrap();

    // The session outlives the restart, so the client resumes it: the path where events are
    // lost and the persistent watch must be set again.
    tokio::task::block_in_place(|| zk.stop());
    let kept = wait_for(&discovery, "the unreachable mark", |s| {
        s.staleness() == Staleness::Unreachable
    })
    .await;
    assert_eq!(pickable(&kept), ["web-0", "web-1", "web-2"]);
    assert_eq!(kept.policy(), Policy::WeightedRandom);
    for _ in 0..100 {
        assert!(
            discovery.pick(&PickContext::default()).is_some(),
            "fail-static must keep picking"
        );
    }

    tokio::task::block_in_place(|| zk.restart());
    let client_after = client(&zk).await;
    put(
        &client_after,
        &format!("{path}/endpoints/web-1"),
        &endpoint_json("web-1", "10.0.0.1", 100, "DRAINING"),
    )
    .await;
    put(
        &client_after,
        path,
        &service_json("web", Policy::ConsistentHash),
    )
    .await;
    let seen = wait_for(&discovery, "the changes made after the restart", |s| {
        !s.is_stale() && pickable(s) == ["web-0", "web-2"] && s.policy() == Policy::ConsistentHash
    })
    .await;
    assert_eq!(names(&seen), ["web-0", "web-1", "web-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fail_static_a_lost_session_empties_the_snapshot() {
    let mut zk = ZkServer::start();
    let client_before = client(&zk).await;
    let path = "/discovery-tests/expiry/web";
    register(&client_before, path, Policy::RoundRobin, 2).await;
    drop(client_before);
    let discovery = Discovery::builder(zk.connect_string(), path)
        .session_timeout(Duration::from_secs(2))
        .fail_static(false)
        .start()
        .await
        .unwrap();

    tokio::task::block_in_place(|| zk.stop());
    // First the disconnect (kept: the session may resume), then, past the session timeout,
    // the loss (emptied: nothing vouches for the endpoints any more).
    let lost = wait_for(&discovery, "an empty unreachable snapshot", |s| {
        s.staleness() == Staleness::Unreachable && s.endpoints().is_empty()
    })
    .await;
    assert!(lost.service().is_none());

    tokio::task::block_in_place(|| zk.restart());
    wait_for(&discovery, "the endpoints back", |s| {
        !s.is_stale() && s.pickable().len() == 2
    })
    .await;
}

#[tokio::test]
async fn bad_paths_and_unreachable_servers_fail_start() {
    let err = Discovery::builder("127.0.0.1:1", "no-slash")
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must start with /"), "{err}");
    let port = common::zk::free_port();
    let err = Discovery::builder(format!("127.0.0.1:{port}"), "/x")
        .session_timeout(Duration::from_secs(1))
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

/// The golden records decode into the library's types and encode back byte for byte, and the
/// README shows them as they are.
#[test]
fn golden_records_round_trip_and_match_the_readme() {
    use podkeeper::model::record::{EndpointRecord, ServiceRecord};
    let service: ServiceRecord = serde_json::from_str(records::SERVICE).unwrap();
    assert_eq!(
        serde_json::to_string(&service).unwrap(),
        records::SERVICE.trim_end()
    );
    let endpoint: EndpointRecord = serde_json::from_str(records::ENDPOINT).unwrap();
    assert_eq!(
        serde_json::to_string(&endpoint).unwrap(),
        records::ENDPOINT.trim_end()
    );
    let readme = include_str!("../README.md");
    for golden in [records::SERVICE, records::ENDPOINT] {
        assert!(
            readme.contains(&format!("`{}`", golden.trim_end())),
            "README.md does not show the golden record {golden}"
        );
    }
}

/// A warm-up ramps on the client's own clock: the snapshot says when the next step is due, the
/// client rebuilds its tables then (a new revision, the same endpoints), nothing is written to
/// ZooKeeper, and the stepping stops once the warm-up is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_up_is_stepped_by_the_client_without_writes() {
    let zk = ZkServer::start();
    let c = client(&zk).await;
    let path = "/podkeeper/shop/warm";
    let service = records::service(json!({
        "serviceName": "warm", "policy": Policy::WeightedRandom, "warmupSeconds": 3,
        "owner": {"clusterId": "test", "namespace": "shop", "name": "warm", "uid": "uid-1"},
    }));
    put(&c, path, &serde_json::to_vec(&service).unwrap()).await;
    put(&c, &format!("{path}/endpoints"), b"").await;
    // web-0 has been ready for long (the golden record's time); web-1 turns ready now.
    put(
        &c,
        &format!("{path}/endpoints/web-0"),
        &endpoint_json("web-0", "10.0.0.1", 100, "UP"),
    )
    .await;
    let fresh = records::endpoint(json!({
        "host": "10.0.0.2", "weight": 100, "group": "default", "pod": "web-1",
        "namespace": "shop", "status": "UP", "readySinceMs": podkeeper::now_ms(),
    }));
    put(
        &c,
        &format!("{path}/endpoints/web-1"),
        &serde_json::to_vec(&fresh).unwrap(),
    )
    .await;
    let (_, written) = c
        .get_data(&format!("{path}/endpoints/web-1"))
        .await
        .unwrap();

    let discovery = Discovery::builder(zk.connect_string(), path)
        .start()
        .await
        .unwrap();
    let first = discovery.snapshot();
    assert_eq!(first.pickable().len(), 2);
    assert!(first.next_step_ms().is_some(), "web-1 is warming");
    let mut updates = discovery.subscribe();
    let mut steps = 0;
    tokio::time::timeout(DEADLINE, async {
        loop {
            let s = updates.borrow_and_update().clone();
            if s.next_step_ms().is_none() {
                break;
            }
            assert!(
                Arc::ptr_eq(&s.endpoints()[1], &first.endpoints()[1]),
                "a step reuses the endpoints"
            );
            updates.changed().await.unwrap();
            steps += 1;
        }
    })
    .await
    .expect("the warm-up ends within the deadline");
    // 3 s in steps of 500 ms: about six rebuilds, at least the five after the first read.
    assert!(steps >= 5, "{steps} steps");
    let last = discovery.snapshot();
    assert!(last.revision() >= first.revision() + 5);
    let (_, now) = c
        .get_data(&format!("{path}/endpoints/web-1"))
        .await
        .unwrap();
    assert_eq!(now.mzxid, written.mzxid, "nothing was written");
}

/// Records as the operator would hold them, for laying out client-format nodes.
fn records_for_formats() -> Vec<Arc<podkeeper::model::record::PublishedRecord>> {
    [
        ("web-0", "10.2.0.1", 100, "UP"),
        ("web-1", "10.2.0.2", 300, "UP"),
        ("web-2", "10.2.0.3", 0, "DRAINING"),
    ]
    .into_iter()
    .map(|(pod, ip, w, st)| {
        Arc::new(serde_json::from_slice(&endpoint_json(pod, ip, w, st)).unwrap())
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_format_folders_are_read_with_providers_that_registered_themselves() {
    use podkeeper::discovery::ClientFormat;
    use podkeeper::zk::clients::{ClientRegistries, ClientRegistry};
    use podkeeper::zk::format::publish::OwnerTag;
    use podkeeper::zk::format::{curator, dubbo};
    let zk = ZkServer::shared();
    let c = client(zk).await;
    let iface = format!("org.example.Disc{}", std::process::id());
    let base = format!("/services/disc-{}", std::process::id());
    let prefixes = ["/podkeeper", "/dubbo", "/services"].map(String::from);
    let registries = ClientRegistries::compile(
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
    .unwrap();
    let records = records_for_formats();
    for (path, data) in registries.desired(records.iter()).nodes {
        put(&c, &path, &data).await;
    }
    let providers = format!("/dubbo/{iface}/providers");
    // A provider on a VM registered itself beside the pods, as Dubbo does.
    let vm = format!(
        "{providers}/{}",
        dubbo::java_url_encode(&format!(
            "dubbo://192.168.0.9:20880/{iface}?interface={iface}&side=provider&weight=100"
        ))
    );
    put(&c, &vm, b"").await;

    let dubbo = Discovery::builder(zk.connect_string(), &providers)
        .format(Some(ClientFormat::Dubbo))
        .start()
        .await
        .unwrap();
    let s = wait_for(&dubbo, "3 pods and the VM provider", |s| {
        s.endpoints().len() == 4
    })
    .await;
    let mut hosts: Vec<String> = s.pickable().iter().map(|e| e.address()).collect();
    hosts.sort();
    assert_eq!(
        hosts,
        ["10.2.0.1:8080", "10.2.0.2:8080", "192.168.0.9:20880"],
        "the draining pod is not pickable"
    );
    let weight = |host: &str| {
        s.endpoints()
            .iter()
            .find(|e| e.record().host == host)
            .map(|e| e.record().weight)
            .unwrap()
    };
    assert_eq!(
        weight("10.2.0.2"),
        3 * weight("10.2.0.1"),
        "the shares survive the format"
    );
    // Changes are followed: the VM provider leaves.
    c.delete(&vm, None).await.unwrap();
    wait_for(&dubbo, "the VM provider gone", |s| s.endpoints().len() == 3).await;

    let spring = Discovery::builder(zk.connect_string(), format!("{base}/web"))
        .format(Some(ClientFormat::Curator))
        .start()
        .await
        .unwrap();
    let s = wait_for(&spring, "3 Curator instances", |s| s.endpoints().len() == 3).await;
    assert_eq!(s.pickable().len(), 2, "the draining instance is disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_static_never_keeps_endpoints_that_turned_draining() {
    let zk = ZkServer::shared();
    let client = client(zk).await;
    let path = "/discovery-tests/fail-static-draining/web";
    register(&client, path, Policy::RoundRobin, 2).await;
    let discovery = Discovery::builder(zk.connect_string(), path)
        .coalesce(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    wait_for(&discovery, "two pickable", |s| pickable(s).len() == 2).await;
    // Both drain in one transaction (a rolling update's last old pods): listed, not pickable.
    let mut multi = client.new_multi_writer();
    let paths: Vec<String> = (0..2)
        .map(|i| format!("{path}/endpoints/web-{i}"))
        .collect();
    let data: Vec<Vec<u8>> = (0..2)
        .map(|i| endpoint_json(&format!("web-{i}"), &format!("10.0.0.{i}"), 0, "DRAINING"))
        .collect();
    for (p, d) in paths.iter().zip(&data) {
        multi.add_set_data(p, d, None).unwrap();
    }
    multi.commit().await.unwrap();
    let drained = wait_for(&discovery, "both listed as draining", |s| {
        s.endpoints().len() == 2 && s.endpoints().iter().all(|e| !e.pickable())
    })
    .await;
    assert!(pickable(&drained).is_empty(), "{:?}", pickable(&drained));
    assert_ne!(drained.staleness(), Staleness::Emptied);
    assert!(discovery.pick(&PickContext::default()).is_none());
}

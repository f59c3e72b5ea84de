//! `podkeeper resolve` and `podkeeper tree`, run as the binary against a real ZooKeeper.

mod common;

use std::process::Command;
use std::time::Duration;

use common::records;
use common::zk::ZkServer;
use serde_json::json;
use zookeeper_client::{Acls, Client, CreateMode};

async fn put(client: &Client, path: &str, data: serde_json::Value) {
    let options = CreateMode::Persistent.with_acls(Acls::anyone_all());
    client
        .mkdir(&path[..path.rfind('/').unwrap()], &options)
        .await
        .unwrap();
    let bytes = if data.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&data).unwrap()
    };
    client.create(path, &bytes, &options).await.unwrap();
}

fn endpoint(pod: &str, ip: &str, weight: u32, status: &str) -> serde_json::Value {
    records::endpoint(json!({
        "host": ip, "port": 8080, "weight": weight, "group": "default", "zone": "z1",
        "pod": pod, "namespace": "shop", "status": status,
    }))
}

async fn register(zk: &ZkServer) {
    let client = Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .connect(&zk.connect_string())
        .await
        .unwrap();
    let owner = json!({"clusterId": "c1", "namespace": "shop", "name": "web", "uid": "u-1"});
    let web = "/cli-tests/shop/web";
    put(
        &client,
        web,
        records::service(json!({"serviceName": "web", "policy": "WeightedRoundRobin", "owner": owner, "generation": 2})),
    )
    .await;
    put(
        &client,
        &format!("{web}/endpoints/web-a"),
        endpoint("web-a", "10.0.0.1", 3, "UP"),
    )
    .await;
    put(
        &client,
        &format!("{web}/endpoints/web-b"),
        endpoint("web-b", "10.0.0.2", 1, "UP"),
    )
    .await;
    put(
        &client,
        &format!("{web}/endpoints/web-c"),
        endpoint("web-c", "10.0.0.3", 0, "DRAINING"),
    )
    .await;
    put(
        &client,
        "/cli-tests/shop/api",
        records::service(
            json!({"serviceName": "api", "policy": "Random", "owner": owner, "generation": 1}),
        ),
    )
    .await;
}

fn podkeeper(zk: &ZkServer, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_podkeeper"))
        .args(args)
        .env("PODKEEPER_ZK_CONNECT", zk.connect_string())
        .output()
        .expect("run podkeeper");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "podkeeper {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_and_tree_show_what_is_registered() {
    let zk = ZkServer::shared();
    register(zk).await;

    let resolved = podkeeper(zk, &["resolve", "/cli-tests/shop/web", "--picks", "400"]);
    for line in [
        "policy   WeightedRoundRobin (from the service record)",
        "POD    ADDRESS        WEIGHT  GROUP    ZONE  STATUS",
        "web-a  10.0.0.1:8080  3       default  z1    UP",
        "web-c  10.0.0.3:8080  0       default  z1    DRAINING",
        // Smooth WRR is exact over whole cycles: 400 picks are 100 cycles of {3, 1}.
        "web-a  300    75.0%",
        "web-b  100    25.0%",
    ] {
        assert!(resolved.contains(line), "missing {line:?} in:\n{resolved}");
    }
    let sample = resolved.split("picks with").nth(1).unwrap();
    assert!(
        !sample.contains("web-c"),
        "a draining endpoint was picked:\n{resolved}"
    );

    let hashed = podkeeper(
        zk,
        &[
            "resolve",
            "/cli-tests/shop/web",
            "--policy",
            "ConsistentHash",
            "--key",
            "user-7",
            "--picks",
            "50",
        ],
    );
    assert!(hashed.contains("(pinned by --policy)"), "{hashed}");
    assert!(
        hashed.contains("  50     100.0%"),
        "one key must land on one endpoint:\n{hashed}"
    );

    let tree = podkeeper(zk, &["tree", "/cli-tests"]);
    let want = "\
/cli-tests/
└── shop/
    ├── api  [service api · Random · owner c1/shop/web · generation 1]
    │   └── (no endpoints)
    └── web  [service web · WeightedRoundRobin · owner c1/shop/web · generation 2]
        ├── web-a  10.0.0.1:8080  weight 3  UP
        ├── web-b  10.0.0.2:8080  weight 1  UP
        └── web-c  10.0.0.3:8080  weight 0  DRAINING
";
    assert_eq!(tree, want);

    // The same ZooKeeper flags as `run`: below a chroot, paths are relative to it.
    let chrooted = podkeeper(zk, &["tree", "--zk-chroot", "/cli-tests", "/shop"]);
    assert_eq!(
        chrooted,
        want.replace("/cli-tests/\n└── shop/\n    ", "/shop/\n")
            .replace("\n    ", "\n")
    );
    let resolved = podkeeper(
        zk,
        &[
            "resolve",
            "--zk-chroot",
            "/cli-tests",
            "/shop/web",
            "--picks",
            "4",
        ],
    );
    assert!(
        resolved.contains("web-a  10.0.0.1:8080  3       default  z1    UP"),
        "{resolved}"
    );
}

#[test]
fn resolve_fails_clearly_without_zookeeper() {
    let port = common::zk::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_podkeeper"))
        .args(["resolve", "/x", "--zk-session-timeout", "1s"])
        .env("PODKEEPER_ZK_CONNECT", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("resolving /x") && stderr.contains(&port.to_string()),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_reads_a_dubbo_providers_folder() {
    let zk = ZkServer::shared();
    let c = Client::connector()
        .connect(&zk.connect_string())
        .await
        .unwrap();
    let iface = format!("org.example.Cli{}", std::process::id());
    let providers = format!("/dubbo/{iface}/providers");
    for (host, weight) in [("10.9.0.1", 100), ("10.9.0.2", 0)] {
        let url =
            format!("dubbo://{host}:20880/{iface}?interface={iface}&side=provider&weight={weight}");
        let node = podkeeper::zk::format::dubbo::java_url_encode(&url);
        put(&c, &format!("{providers}/{node}"), serde_json::Value::Null).await;
    }
    let out = podkeeper(
        zk,
        &["resolve", &providers, "--format", "dubbo", "--picks", "50"],
    );
    assert!(out.contains("Dubbo folder"), "{out}");
    assert!(
        out.contains("10.9.0.1:20880") && out.contains("10.9.0.2:20880"),
        "{out}"
    );
    let sample = out.split("picks with").nth(1).unwrap_or_default();
    assert!(
        !sample.contains("10.9.0.2"),
        "a weight-0 provider was picked:\n{out}"
    );
    let err = Command::new(env!("CARGO_BIN_EXE_podkeeper"))
        .args(["resolve", &providers, "--format", "eureka"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&err.stderr).contains("use dubbo, curator or serverset"));
}

//! Issue 30, several clusters, one service: two operators (cluster ids east and west, each
//! watching its own namespace) publish pods into one Dubbo interface and one Curator service,
//! beside a provider registered by the Dubbo library and an instance registered by Curator, as
//! VMs do. Through scale to zero, deletion, kill -9, full resyncs and a session expiry, each
//! operator deletes only its own nodes, and a real Dubbo consumer and a Curator ServiceCache see
//! every neighbour in every notification.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::common::clients::{self, Client as Java, Running};
use super::common::cluster::{Operator, TestNs, install_crd, wait_until};
use super::common::registry::FolderWatch;
use super::common::zk::{ZkServer, sessions_with_timeout};
use podkeeper::zk::format::publish::{OWNER_KEY, OwnerTag};
use podkeeper::zk::format::{curator, dubbo};

const LIMIT: Duration = Duration::from_secs(120);

/// Who wrote a node, or an entry a consumer lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    East,
    West,
    Vm,
}

const ALL: [Who; 3] = [Who::East, Who::West, Who::Vm];

fn who_by_owner(owner: Option<&str>) -> Who {
    match owner {
        Some(o) if o.starts_with("east/") => Who::East,
        Some(o) if o.starts_with("west/") => Who::West,
        _ => Who::Vm,
    }
}

/// Entries of one consumer line by writer: Dubbo lists `providers` with the `owner` parameter,
/// the Curator cache a `snapshot` with the payload's owner metadata.
fn census(line: &Value) -> Option<BTreeMap<Who, usize>> {
    let owners: Vec<Option<&str>> = match (line.get("providers"), line.get("snapshot")) {
        (Some(p), _) => p.as_array()?.iter().map(|e| e["owner"].as_str()).collect(),
        (_, Some(s)) => s
            .as_array()?
            .iter()
            .map(|e| e["metadata"][OWNER_KEY].as_str())
            .collect(),
        _ => return None,
    };
    let mut out: BTreeMap<Who, usize> = ALL.iter().map(|w| (*w, 0)).collect();
    for owner in owners {
        *out.get_mut(&who_by_owner(owner)).unwrap() += 1;
    }
    Some(out)
}

/// The writer of a node of the Dubbo folder (its URL's owner parameter) or the Curator folder
/// (the id ends in the owner tag's hash).
fn node_owner(dubbo_folder: bool, name: &str, ns: &[&TestNs; 2]) -> Who {
    if dubbo_folder {
        return who_by_owner(dubbo::decode(name, b"").and_then(|d| d.owner).as_deref());
    }
    let suffix =
        |id: &str, ns: &TestNs| curator::instance_id(&OwnerTag::new(id, &ns.name, "web"), "");
    if name.ends_with(&suffix("east", ns[0])) {
        Who::East
    } else if name.ends_with(&suffix("west", ns[1])) {
        Who::West
    } else {
        Who::Vm
    }
}

/// Where a phase starts in each consumer's lines and in the nodes each folder saw deleted or
/// rewritten.
#[derive(Debug, Clone, Copy)]
struct Mark {
    lines: [usize; 2],
    touched: [usize; 2],
}

/// What the clients see: a Dubbo consumer and a Curator ServiceCache, and a persistent watch
/// on each folder.
struct Views {
    consumers: [Running; 2],
    folders: [FolderWatch; 2],
    zk: zookeeper_client::Client,
}

impl Views {
    /// Nodes deleted or rewritten in each folder since `from`.
    fn touched_since(&self, from: Mark) -> [usize; 2] {
        let now = self.mark().touched;
        [now[0] - from.touched[0], now[1] - from.touched[1]]
    }

    fn mark(&self) -> Mark {
        Mark {
            lines: self.consumers.each_ref().map(|c| c.lines().len()),
            touched: self.folders.each_ref().map(|f| f.touched().len()),
        }
    }

    /// Waits until both consumers list `want` (East, West, VM entries). Then checks the phase
    /// since `from`: every line listed the writers not in `acting` at their `want` counts, and
    /// every node deleted or rewritten was an acting writer's. Returns the next phase's mark.
    fn settle(&self, from: Mark, want: [usize; 3], acting: &[Who], ns: &[&TestNs; 2]) -> Mark {
        let want: BTreeMap<Who, usize> = ALL.into_iter().zip(want).collect();
        for (c, from) in self.consumers.iter().zip(from.lines) {
            let what = format!("{want:?} after {acting:?} acted");
            // From the last line of the previous phase: a phase that changes nothing adds none.
            let from = from.saturating_sub(1);
            tokio::task::block_in_place(|| {
                c.wait_for(from, LIMIT, &what, |l| census(l).as_ref() == Some(&want))
            });
        }
        // The folder watches may trail the Java clients: the phase ends once they hold as many
        // nodes as the clients list, so its deletions are not counted in the next phase.
        let total: usize = want.values().sum();
        for (f, dir) in self.folders.iter().zip(["Dubbo", "Curator"]) {
            let deadline = std::time::Instant::now() + LIMIT;
            while f.sizes().last() != Some(&total) {
                let sizes = f.sizes();
                assert!(
                    std::time::Instant::now() < deadline,
                    "the {dir} folder watch never held {total} nodes: {sizes:?}"
                );
                tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(10)));
            }
        }
        let next = self.mark();
        for (c, range) in self
            .consumers
            .iter()
            .zip(from.lines.into_iter().zip(next.lines))
        {
            for line in &c.lines()[range.0..range.1] {
                let seen = census(line).unwrap_or_else(|| panic!("not a listing: {line}"));
                for w in ALL.iter().filter(|w| !acting.contains(w)) {
                    assert_eq!(
                        seen[w], want[w],
                        "{w:?} missing while {acting:?} acted: {line}"
                    );
                }
            }
        }
        for (i, f) in self.folders.iter().enumerate() {
            for name in &f.touched()[from.touched[i]..next.touched[i]] {
                let owner = node_owner(i == 0, name, ns);
                let msg = format!("{owner:?}'s {name} deleted or rewritten while {acting:?} acted");
                assert!(acting.contains(&owner), "{msg}");
            }
        }
        next
    }
}

/// The Dubbo interface and Curator service both clusters and the VMs share.
struct Shared {
    iface: String,
    service: String,
}

impl Shared {
    fn folders(&self) -> [String; 2] {
        [
            format!("/dubbo/{}/providers", self.iface),
            format!("/services/{}", self.service),
        ]
    }

    fn registration(&self) -> String {
        format!(
            r#"apiVersion: podkeeper.io/v1alpha1
kind: ServiceRegistration
metadata: {{name: web}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  port: http
  drainSeconds: 0
  serviceName: {}
  registries:
  - format: Native
  - format: Dubbo
    dubbo: {{interfaces: ["{}"], group: g1, version: "1.0.0", application: web}}
  - format: Curator
    curator: {{}}
"#,
            self.service, self.iface
        )
    }

    async fn views(&self, zk: &str) -> Views {
        let consumers = [
            clients::spawn(
                Java::Dubbo,
                &["consume", zk, "dubbo", &self.iface, "g1", "1.0.0"],
            ),
            clients::spawn(Java::Curator, &["cache", zk, "/services", &self.service]),
        ];
        let zkc = super::common::cluster::connect_zk(zk).await;
        let [d, c] = self.folders();
        let folders = [
            FolderWatch::start(&zkc, &d).await,
            FolderWatch::start(&zkc, &c).await,
        ];
        Views {
            consumers,
            folders,
            zk: zkc,
        }
    }
}

/// An operator of cluster `id` that watches `ns` only, with full resyncs every 5 s.
fn operator(id: &str, ns: &TestNs, zk: &str, session: &str) -> Operator {
    let env = [
        ("PODKEEPER_CLUSTER_ID", id),
        ("PODKEEPER_NAMESPACES", ns.name.as_str()),
        ("PODKEEPER_RESYNC_INTERVAL", "5s"),
        ("PODKEEPER_ZK_SESSION_TIMEOUT", session),
    ];
    Operator::start(id, zk, &env)
}

/// Ready pods of `ns` (by IP), as the API server reports them.
async fn ready_pods(ns: &TestNs) -> usize {
    super::ready_times(ns).await.len()
}

async fn wait_pods(ns: &TestNs, n: usize) {
    let what = format!("{n} ready pods in {}", ns.name);
    wait_until(LIMIT, &what, || async { ready_pods(ns).await == n }).await;
}

/// Lines of the operator's log that say a periodic full resync started.
fn resyncs(op: &Operator) -> usize {
    let log = std::fs::read_to_string(&op.log).unwrap_or_default();
    log.matches("periodic full resync").count()
}

/// The last line of each consumer, by writer.
fn latest(views: &Views) -> Vec<BTreeMap<Who, usize>> {
    views
        .consumers
        .iter()
        .map(|c| c.lines().last().and_then(census).expect("a listing"))
        .collect()
}

/// The VMs' nodes in both folders with their modification zxids.
async fn vm_nodes(views: &Views, shared: &Shared, ns: &[&TestNs; 2]) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for (i, folder) in shared.folders().iter().enumerate() {
        for name in views.zk.list_children(folder).await.unwrap() {
            if node_owner(i == 0, &name, ns) == Who::Vm {
                let stat = views
                    .zk
                    .check_stat(&format!("{folder}/{name}"))
                    .await
                    .unwrap();
                out.push((name, stat.expect("listed").mzxid));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_and_vms_share_one_dubbo_interface_and_curator_service_through_every_fault() {
    install_crd();
    let zk = ZkServer::start();
    let connect = zk.connect_string();
    let (east, west) = (
        TestNs::new("multi-east").await,
        TestNs::new("multi-west").await,
    );
    let ns = [&east, &west];
    let id = std::process::id();
    let shared = Shared {
        iface: format!("org.example.multi{id}.Greeter"),
        service: format!("multi-{id}"),
    };
    let vms = clients::register_vms(&connect, &shared.iface, &shared.service);
    let views = shared.views(&connect).await;
    let east_op = operator("east", &east, &connect, "4s");
    let west_op = operator("west", &west, &connect, "2s");
    for n in ns {
        n.apply(&super::deployment("web", "stable", 3, ""));
        n.apply(&shared.registration());
    }
    let both = [Who::East, Who::West];
    let mark = views.settle(views.mark(), [3, 3, 1], &both, &ns);
    let vm_before = vm_nodes(&views, &shared, &ns).await;
    assert_eq!(vm_before.len(), 2, "{vm_before:?}");
    let mark = scale_east_to_zero_and_back(&views, mark, &ns).await;
    let mark = delete_west_and_recreate(&views, mark, &shared, &ns).await;
    let (mark, east_op) = kill_east_and_restart(&views, mark, east_op, &connect, &ns).await;
    let mark = full_resyncs(&views, mark, [&east_op, &west_op], &ns).await;
    let mark = west_session_expires(&views, mark, &west_op, zk.port(), &ns).await;
    for n in ns {
        n.kubectl(&["delete", "svcreg", "web", "--wait=true", "--timeout=60s"]);
    }
    views.settle(mark, [0, 0, 1], &both, &ns);
    assert_eq!(
        vm_nodes(&views, &shared, &ns).await,
        vm_before,
        "the VMs' nodes were rewritten"
    );
    for vm in vms {
        vm.close();
    }
}

async fn scale_east_to_zero_and_back(views: &Views, mark: Mark, ns: &[&TestNs; 2]) -> Mark {
    ns[0].kubectl(&["scale", "deploy/web", "--replicas=0"]);
    let from = mark;
    let mark = views.settle(mark, [0, 3, 1], &[Who::East], ns);
    // The watches saw east's three leave from each folder: they see what they check.
    assert!(views.touched_since(from).iter().all(|&n| n >= 3));
    ns[0].kubectl(&["scale", "deploy/web", "--replicas=3"]);
    views.settle(mark, [3, 3, 1], &[Who::East], ns)
}

async fn delete_west_and_recreate(
    views: &Views,
    mark: Mark,
    s: &Shared,
    ns: &[&TestNs; 2],
) -> Mark {
    ns[1].kubectl(&["delete", "svcreg", "web", "--wait=true", "--timeout=60s"]);
    let mark = views.settle(mark, [3, 0, 1], &[Who::West], ns);
    ns[1].apply(&s.registration());
    views.settle(mark, [3, 3, 1], &[Who::West], ns)
}

/// East is killed; one of its pods goes while no east operator runs (the consumers still list
/// three then: the change fell inside the window); the new operator converges on two.
async fn kill_east_and_restart(
    views: &Views,
    mark: Mark,
    op: Operator,
    connect: &str,
    ns: &[&TestNs; 2],
) -> (Mark, Operator) {
    op.signal("KILL");
    drop(op);
    ns[0].kubectl(&["scale", "deploy/web", "--replicas=2"]);
    wait_pods(ns[0], 2).await;
    for seen in latest(views) {
        assert_eq!(
            seen[&Who::East],
            3,
            "east's nodes stay while it is down: {seen:?}"
        );
    }
    let op = operator("east", ns[0], connect, "4s");
    (views.settle(mark, [2, 3, 1], &[Who::East], ns), op)
}

/// Two periodic full resyncs of each operator re-read both folders: nothing of anyone's moves.
async fn full_resyncs(views: &Views, mark: Mark, ops: [&Operator; 2], ns: &[&TestNs; 2]) -> Mark {
    let before = ops.map(resyncs);
    for (op, n) in ops.iter().zip(before) {
        wait_until(LIMIT, "two periodic full resyncs", || async {
            resyncs(op) >= n + 2
        })
        .await;
    }
    // Nobody acted: any node deleted or rewritten, any listing short of anyone, fails.
    views.settle(mark, [2, 3, 1], &[], ns)
}

/// West is frozen past its 2 s session; one of its pods goes meanwhile. After SIGCONT it builds
/// a new session, resyncs, and removes that pod's nodes, and nothing else.
async fn west_session_expires(
    views: &Views,
    mark: Mark,
    op: &Operator,
    zk_port: u16,
    ns: &[&TestNs; 2],
) -> Mark {
    let sessions = sessions_with_timeout(zk_port, 2000).expect("cons answers");
    assert_eq!(sessions.len(), 1, "west's one 2 s session: {sessions:?}");
    op.signal("STOP");
    ns[1].kubectl(&["scale", "deploy/web", "--replicas=2"]);
    wait_pods(ns[1], 2).await;
    wait_until(LIMIT, "west's session expired", || async {
        sessions_with_timeout(zk_port, 2000).is_some_and(|s| !s.contains(&sessions[0]))
    })
    .await;
    for seen in latest(views) {
        assert_eq!(
            seen[&Who::West],
            3,
            "west's nodes stay while it is frozen: {seen:?}"
        );
    }
    op.signal("CONT");
    let mark = views.settle(mark, [2, 2, 1], &[Who::West], ns);
    let metrics = super::common::cluster::http_get(&op.health, "/metrics")
        .unwrap()
        .1;
    let sessions: Option<f64> = metrics.lines().find_map(|l| {
        let v = l.strip_prefix("podkeeper_zookeeper_sessions_total ")?;
        v.trim().parse().ok()
    });
    let log = op.log_tail();
    assert!(
        sessions >= Some(2.0),
        "west built a new session ({sessions:?}):\n{log}"
    );
    mark
}

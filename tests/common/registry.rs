//! Reads a service path the way a test must: ZooKeeper has no snapshot read, so one pass of
//! `list_children` and `get_data` calls can mix two states; read until two passes agree.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use podkeeper::model::record::{EndpointRecord, EndpointStatus, ServiceRecord};

/// A service record and its endpoints by name.
pub type Registry = (ServiceRecord, BTreeMap<String, EndpointRecord>);

/// The service record and endpoints at `path`; `None` if the path is absent, a record does not
/// parse, or fifty passes in a row never agreed.
pub async fn read(zk: &zookeeper_client::Client, path: &str) -> Option<Registry> {
    // A transaction landing between the listing and the reads would show a mix of two states
    // (or skip a node deleted meanwhile): two consecutive passes that agree on every znode's
    // modification zxid saw one state.
    let mut previous = read_once(zk, path).await?;
    for _ in 0..50 {
        let next = read_once(zk, path).await?;
        if next.0 == previous.0 {
            let (_, svc, eps) = next;
            return Some((svc, eps));
        }
        previous = next;
    }
    None
}

/// One pass, and the zxids that identify the versions it read.
async fn read_once(
    zk: &zookeeper_client::Client,
    path: &str,
) -> Option<(
    Vec<(String, i64)>,
    ServiceRecord,
    BTreeMap<String, EndpointRecord>,
)> {
    let (data, stat) = zk.get_data(path).await.ok()?;
    let svc = serde_json::from_slice(&data).ok()?;
    let mut seen = vec![(String::new(), stat.mzxid)];
    let mut eps = BTreeMap::new();
    for child in zk.list_children(&format!("{path}/endpoints")).await.ok()? {
        match zk.get_data(&format!("{path}/endpoints/{child}")).await {
            Ok((d, stat)) => {
                seen.push((child.clone(), stat.mzxid));
                eps.insert(child, serde_json::from_slice(&d).ok()?);
            }
            // Deleted after the listing: this pass is torn, the caller reads again.
            Err(_) => seen.push((child, -1)),
        }
    }
    seen.sort();
    Some((seen, svc, eps))
}

/// Waits up to 60 s until the registry at `path` satisfies `pred`; returns what it saw.
pub async fn wait_for(
    zk: &zookeeper_client::Client,
    path: &str,
    what: &str,
    pred: impl Fn(&ServiceRecord, &BTreeMap<String, EndpointRecord>) -> bool,
) -> Registry {
    wait_for_within(zk, path, what, Duration::from_secs(60), pred).await
}

/// Like [`wait_for`], with its own deadline (for what takes several metric periods).
pub async fn wait_for_within(
    zk: &zookeeper_client::Client,
    path: &str,
    what: &str,
    within: Duration,
    pred: impl Fn(&ServiceRecord, &BTreeMap<String, EndpointRecord>) -> bool,
) -> Registry {
    let deadline = Instant::now() + within;
    loop {
        if let Some((svc, eps)) = read(zk, path).await {
            if pred(&svc, &eps) {
                return (svc, eps);
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what} at {path}; last seen: {svc:?}\n{eps:#?}");
            }
        } else if Instant::now() > deadline {
            panic!("timed out waiting for {what}: {path} does not exist");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The children of one folder as a client that watches every change sees them: a persistent
/// recursive watch, applied event by event, so a moment with fewer children cannot slip
/// between two polls. Records every size it passes through, and every child deleted or rewritten.
pub struct FolderWatch {
    sizes: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    touched: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FolderWatch {
    /// Starts watching `folder` (which must exist) through `zk`.
    pub async fn start(zk: &zookeeper_client::Client, folder: &str) -> FolderWatch {
        use zookeeper_client::{AddWatchMode, EventType};
        let mut watcher = zk
            .watch(folder, AddWatchMode::PersistentRecursive)
            .await
            .expect("watch the folder");
        // Listed after the watch is set: a change in between is applied again, harmlessly (a
        // set of names).
        let mut names: std::collections::BTreeSet<String> = zk
            .list_children(folder)
            .await
            .expect("list the folder")
            .into_iter()
            .collect();
        let sizes = std::sync::Arc::new(std::sync::Mutex::new(vec![names.len()]));
        let touched = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (out, touch, prefix) = (sizes.clone(), touched.clone(), format!("{folder}/"));
        let task = tokio::spawn(async move {
            loop {
                let e = watcher.changed().await;
                let Some(name) = e.path.strip_prefix(&prefix).filter(|n| !n.contains('/')) else {
                    if e.event_type == EventType::Session && e.session_state.is_terminated() {
                        return;
                    }
                    continue;
                };
                if matches!(
                    e.event_type,
                    EventType::NodeDeleted | EventType::NodeDataChanged
                ) {
                    touch.lock().unwrap().push(name.to_string());
                }
                let changed = match e.event_type {
                    EventType::NodeCreated => names.insert(name.to_string()),
                    EventType::NodeDeleted => names.remove(name),
                    _ => false,
                };
                if changed {
                    out.lock().unwrap().push(names.len());
                }
            }
        });
        FolderWatch {
            sizes,
            touched,
            task,
        }
    }

    /// The names of the children deleted or rewritten so far, in order.
    pub fn touched(&self) -> Vec<String> {
        self.touched.lock().unwrap().clone()
    }

    /// Every size so far, oldest first.
    pub fn sizes(&self) -> Vec<usize> {
        self.sizes.lock().unwrap().clone()
    }

    /// The smallest size once the folder first held `n` children (None: it never did).
    pub fn min_after_reaching(&self, n: usize) -> Option<usize> {
        let sizes = self.sizes();
        let from = sizes.iter().position(|&s| s >= n)?;
        sizes[from..].iter().copied().min()
    }
}

impl Drop for FolderWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The endpoints of one service path as a watching client sees them: a persistent recursive
/// watch on its endpoints folder, each created or changed node read at once (as Curator's and
/// Dubbo's caches do), each deletion applied. Keeps every state it passes through (pod →
/// status), so an empty moment cannot fall between two polls.
pub struct RecordWatch {
    states: std::sync::Arc<std::sync::Mutex<Vec<BTreeMap<String, EndpointStatus>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordWatch {
    /// Starts watching `{path}/endpoints` (which must exist) through `zk`.
    pub async fn start(zk: &zookeeper_client::Client, path: &str) -> RecordWatch {
        use zookeeper_client::{AddWatchMode, EventType};
        let folder = format!("{path}/endpoints");
        let mut watcher = zk
            .watch(&folder, AddWatchMode::PersistentRecursive)
            .await
            .expect("watch the endpoints");
        let mut now = BTreeMap::new();
        for child in zk.list_children(&folder).await.expect("list the endpoints") {
            if let Some(status) = status_of(zk, &format!("{folder}/{child}")).await {
                now.insert(child, status);
            }
        }
        let states = std::sync::Arc::new(std::sync::Mutex::new(vec![now.clone()]));
        let (out, zk, prefix) = (states.clone(), zk.clone(), format!("{folder}/"));
        let task = tokio::spawn(async move {
            loop {
                let e = watcher.changed().await;
                let Some(name) = e.path.strip_prefix(&prefix).filter(|n| !n.contains('/')) else {
                    if e.event_type == EventType::Session && e.session_state.is_terminated() {
                        return;
                    }
                    continue;
                };
                let changed = match e.event_type {
                    EventType::NodeDeleted => now.remove(name).is_some(),
                    EventType::NodeCreated | EventType::NodeDataChanged => {
                        match status_of(&zk, &e.path).await {
                            Some(s) => now.insert(name.to_string(), s) != Some(s),
                            None => now.remove(name).is_some(),
                        }
                    }
                    _ => false,
                };
                if changed {
                    out.lock().unwrap().push(now.clone());
                }
            }
        });
        RecordWatch { states, task }
    }

    /// Every state so far, oldest first.
    pub fn states(&self) -> Vec<BTreeMap<String, EndpointStatus>> {
        self.states.lock().unwrap().clone()
    }
}

/// The status in the endpoint record at `path` (None: gone or not a record).
async fn status_of(zk: &zookeeper_client::Client, path: &str) -> Option<EndpointStatus> {
    let (data, _) = zk.get_data(path).await.ok()?;
    serde_json::from_slice::<EndpointRecord>(&data)
        .ok()
        .map(|r| r.status)
}

impl Drop for RecordWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! Reads a service's znodes and applies plans as `multi()` transactions, each guarded by the
//! service record's version so nothing is written once someone else owns the path.
//! The only module that writes znodes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use smol_str::SmolStr;
use zookeeper_client::{
    Acls, Client, CreateMode, CreateOptions, MultiReadResult, MultiWriteError, MultiWriteResult,
};

use super::ZkError;
use super::acl::{NodeAcls, NodeKind};
pub use super::fence::Fence;
use super::format::{Codec, Format};
use super::layout::{endpoint_path, endpoints_path};
use crate::model::nodes::{NodeOp, NodePlan, OwnedNode};
use crate::model::plan::{self, Current, Op, Plan};
use crate::model::record::{Owner, PublishedRecord, ServiceRecord};

/// Bytes of operations per transaction; ZooKeeper's packet limit (jute.maxbuffer) is 1 MiB.
pub const MAX_TXN_BYTES: usize = 512 * 1024;
/// Per-operation framing overhead counted against the budget.
const OP_OVERHEAD: usize = 64;

/// A persistent node with the ACL of its kind.
pub(super) fn persistent(acls: &NodeAcls, kind: NodeKind) -> CreateOptions<'_> {
    CreateMode::Persistent.with_acls(Acls::new(acls.of(kind)))
}

/// Creates the parents of `path` that are missing: podkeeper's alone at and below the home
/// prefix, ancestors others may create beside elsewhere ([`NodeAcls::parent_kind`]).
pub(super) async fn mkdir_parent(
    client: &Client,
    path: &str,
    acls: &NodeAcls,
) -> Result<(), ZkError> {
    let Some(parent) = path
        .rsplit_once('/')
        .map(|(p, _)| p)
        .filter(|p| !p.is_empty())
    else {
        return Ok(());
    };
    let mut missing = Vec::new();
    let mut at = parent;
    // Deepest first, down to the first that exists; then created top-down, each with its kind.
    loop {
        match client.check_stat(at).await.map_err(server("stat", at))? {
            Some(_) => break,
            None => missing.push(at),
        }
        match at.rsplit_once('/') {
            Some((up, _)) if !up.is_empty() => at = up,
            _ => break,
        }
    }
    for dir in missing.into_iter().rev() {
        let kind = acls.parent_kind(dir);
        match client.create(dir, &[], &persistent(acls, kind)).await {
            Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
            Err(e) => return Err(server("create", dir)(e)),
        }
    }
    Ok(())
}

/// Sets the ACL of the existing folders above `path` at and below the home prefix to
/// podkeeper's alone, where an older version or another client left them looser; returns
/// how many were repaired.
pub async fn repair_home_parents(
    client: &Client,
    path: &str,
    acls: &NodeAcls,
) -> Result<usize, ZkError> {
    let mut repaired = 0;
    let mut at = path;
    while let Some((up, _)) = at.rsplit_once('/').filter(|(up, _)| !up.is_empty()) {
        at = up;
        if acls.parent_kind(at) != NodeKind::Owned {
            break;
        }
        match repair_acl(client, at, NodeKind::Owned, acls).await {
            Ok(fixed) => repaired += usize::from(fixed),
            Err(ZkError::Server {
                source: zookeeper_client::Error::NoNode,
                ..
            }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(repaired)
}

/// Creates a client-format folder (its parents as ancestors); one that exists is left as is.
async fn mkdir_folder(client: &Client, dir: &str, acls: &NodeAcls) -> Result<(), ZkError> {
    mkdir_parent(client, dir, acls).await?;
    match client
        .create(dir, &[], &persistent(acls, NodeKind::Folder))
        .await
    {
        Ok(_) | Err(zookeeper_client::Error::NodeExists) => Ok(()),
        Err(e) => Err(server("create", dir)(e)),
    }
}

/// The client-format znodes a resource keeps beside its native records (Dubbo providers,
/// Curator instances, ServerSet members): where they live and which of them are its own.
pub trait ClientNodes: Send + Sync + std::fmt::Debug {
    /// Folders that hold them (created when missing); other writers' nodes live there too.
    fn dirs(&self) -> Vec<String>;
    /// Did this resource write the node at `path` holding `data`?
    fn owns(&self, path: &str, data: &[u8]) -> bool;
}

/// How the writer writes.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Checked by every transaction when set.
    pub fence: Option<Fence>,
    /// Log the plan, write nothing.
    pub dry_run: bool,
    /// At most this many deletions per transaction (0: no cap).
    pub max_deletes_per_txn: usize,
    /// The registry format written and read.
    pub format: Format,
    /// The resource's client-format nodes, when it publishes any.
    pub clients: Option<Arc<dyn ClientNodes>>,
    /// The ACLs of the nodes created (the session's identity and the policy).
    pub acls: Arc<NodeAcls>,
    /// Where the writes' own watch events are announced, so the tamper watch ignores them.
    pub ledger: Option<Arc<super::tamper::Ledger>>,
}

/// A service path this resource owns, as last read or written.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceState {
    /// The service record.
    pub record: ServiceRecord,
    /// Its znode version; every transaction checks it.
    pub version: i32,
    /// Endpoint znodes by name (after the first write or [`adopt`], the desired state's name:
    /// one shared copy).
    pub endpoints: BTreeMap<SmolStr, Current>,
    /// `<path>/endpoints` is missing (someone deleted it) and is recreated by the next apply.
    pub endpoints_missing: bool,
    /// Client-format znodes this resource owns, by path.
    pub nodes: BTreeMap<String, OwnedNode>,
    /// Client-format znodes in the same folders that others wrote: never touched.
    pub foreign: BTreeSet<String>,
    /// Owned nodes below the record whose ACL was set after they were created (`aversion`
    /// above 0 when read): the ones [`audit_acls`] reads when the record's ACL is as wanted.
    pub acl_set: Vec<String>,
}

impl ServiceState {
    /// A path nothing was written to yet, as `record` would claim it.
    pub fn empty(record: &ServiceRecord) -> ServiceState {
        ServiceState {
            record: record.clone(),
            version: 0,
            endpoints: BTreeMap::new(),
            endpoints_missing: false,
            nodes: BTreeMap::new(),
            foreign: BTreeSet::new(),
            acl_set: Vec::new(),
        }
    }
}

/// What is at a service path.
// A transient return value, matched at once: boxing the state would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    /// Nothing: free to claim.
    Absent,
    /// Ours (or an earlier incarnation of the same resource).
    Owned(ServiceState),
    /// Somebody else's: never touched.
    Foreign(String),
}

/// Runs one writer operation and records its duration and outcome in the metrics.
async fn timed<T>(
    op: &'static str,
    work: impl std::future::Future<Output = Result<T, ZkError>>,
) -> Result<T, ZkError> {
    let started = Instant::now();
    let r = work.await;
    let result = match &r {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    crate::metrics::get().zk_op(op, result, started.elapsed());
    r
}

pub(super) fn server<'p>(
    op: &'static str,
    path: &'p str,
) -> impl FnOnce(zookeeper_client::Error) -> ZkError + 'p {
    move |source| ZkError::Server {
        op,
        path: path.to_string(),
        source,
    }
}

/// Reads the service record and endpoints at `path` in the options' format, and the
/// resource's client-format nodes.
pub async fn load(
    client: &Client,
    path: &str,
    owner: &Owner,
    options: &WriteOptions,
) -> Result<Loaded, ZkError> {
    timed("read", load_inner(client, path, owner, options)).await
}

async fn load_inner(
    client: &Client,
    path: &str,
    owner: &Owner,
    options: &WriteOptions,
) -> Result<Loaded, ZkError> {
    let codec = options.format.codec();
    let eps = endpoints_path(path);
    let (head, children) = record_and_children(client, path, &eps).await?;
    let Some((data, stat)) = head else {
        return Ok(Loaded::Absent);
    };
    let record: ServiceRecord = match codec.decode_service(&data) {
        Some(r) => r,
        None => {
            return Ok(Loaded::Foreign(format!(
                "{path} holds a znode that is not a podkeeper service record"
            )));
        }
    };
    if !(record.owner == *owner || record.owner.same_resource(owner)) {
        let o = &record.owner;
        return Ok(Loaded::Foreign(format!(
            "{path} is owned by ServiceRegistration {}/{} (uid {}) of cluster {:?}",
            o.namespace, o.name, o.uid, o.cluster_id
        )));
    }
    let endpoints_missing = children.is_none();
    let children = children.unwrap_or_default();
    let paths: Vec<String> = children.iter().map(|c| endpoint_path(path, c)).collect();
    let results = get_many(client, &paths).await?;
    let mut endpoints = BTreeMap::new();
    let mut acl_set = Vec::new();
    for ((name, path), r) in children.into_iter().zip(paths).zip(results) {
        let Some((data, stat)) = r else { continue };
        if stat.aversion != 0 {
            acl_set.push(path);
        }
        endpoints.insert(
            SmolStr::from(name),
            Current {
                record: codec.decode_endpoint(&data).map(std::sync::Arc::new),
                version: stat.version,
            },
        );
    }
    let (nodes, foreign) = match &options.clients {
        Some(clients) => {
            let (owned, others, set) =
                load_clients(client, clients.as_ref(), Some(&options.acls)).await?;
            acl_set.extend(set);
            (owned, others)
        }
        None => Default::default(),
    };
    Ok(Loaded::Owned(ServiceState {
        record,
        version: stat.version,
        endpoints,
        endpoints_missing,
        nodes,
        foreign,
        acl_set,
    }))
}

/// Reads the client-format folders: the nodes this resource owns, the paths of the others, and
/// the owned ones whose ACL was set after their creation. Missing folders are created with
/// `acls` (empty folders are harmless to every client), or skipped without.
async fn load_clients(
    client: &Client,
    clients: &dyn ClientNodes,
    acls: Option<&NodeAcls>,
) -> Result<ClientState, ZkError> {
    let (mut owned, mut foreign, mut acl_set) = (BTreeMap::new(), BTreeSet::new(), Vec::new());
    for dir in clients.dirs() {
        let children = match client.list_children(&dir).await {
            Ok(c) => c,
            Err(zookeeper_client::Error::NoNode) => {
                if let Some(acls) = acls {
                    mkdir_folder(client, &dir, acls).await?;
                }
                continue;
            }
            Err(e) => return Err(server("list", &dir)(e)),
        };
        let paths: Vec<String> = children
            .iter()
            .map(|c| super::layout::child(&dir, c))
            .collect();
        let results = get_many(client, &paths).await?;
        for (path, r) in paths.into_iter().zip(results) {
            match r {
                Some((data, stat)) if clients.owns(&path, &data) => {
                    if stat.aversion != 0 {
                        acl_set.push(path.clone());
                    }
                    let data = Arc::from(data);
                    owned.insert(
                        path,
                        OwnedNode {
                            data,
                            version: stat.version,
                        },
                    );
                }
                Some(_) => {
                    foreign.insert(path);
                }
                None => {}
            }
        }
    }
    Ok((owned, foreign, acl_set))
}

/// A node's data and stat; `None` when there is no such node.
type Read = Option<(Vec<u8>, zookeeper_client::Stat)>;

/// The data at `path` and the children of `folder`, in one request, so both come from one
/// moment (`None`: missing).
async fn record_and_children(
    client: &Client,
    path: &str,
    folder: &str,
) -> Result<(Read, Option<Vec<String>>), ZkError> {
    let mut head = client.new_multi_reader();
    head.add_get_data(path).map_err(server("get", path))?;
    head.add_get_children(folder)
        .map_err(server("list", folder))?;
    let mut results = head.commit().await.map_err(multi_read(path))?.into_iter();
    let record = read_of(results.next(), path)?;
    let children = match results.next() {
        Some(MultiReadResult::Children { children }) => Some(children),
        Some(MultiReadResult::Error {
            err: zookeeper_client::Error::NoNode,
        }) => None,
        Some(MultiReadResult::Error { err }) => return Err(server("list", folder)(err)),
        other => return Err(unexpected("list", folder, other)),
    };
    Ok((record, children))
}

/// The data and stat of every path, in order, read in pipelined multi-reads.
async fn get_many(client: &Client, paths: &[String]) -> Result<Vec<Read>, ZkError> {
    let batches = paths
        .chunks(super::READS_PER_MULTI)
        .map(|batch| async move {
            let mut reader = client.new_multi_reader();
            for p in batch {
                reader.add_get_data(p).map_err(server("get", p))?;
            }
            let results = reader.commit().await.map_err(multi_read(&batch[0]))?;
            let results = results
                .into_iter()
                .map(Some)
                .chain(std::iter::repeat_with(|| None));
            batch
                .iter()
                .zip(results)
                .map(|(p, r)| read_of(r, p))
                .collect::<Result<Vec<_>, _>>()
        });
    let read = futures::future::try_join_all(batches).await?;
    Ok(read.into_iter().flatten().collect())
}

/// A failed multi-read (of `path` and others). A server before ZooKeeper 3.6 does not know the
/// request: it answers "unimplemented" and closes the session, so the error says what is needed.
fn multi_read(path: &str) -> impl FnOnce(zookeeper_client::Error) -> ZkError + '_ {
    move |source| ZkError::Server {
        op: match source {
            zookeeper_client::Error::Unimplemented => "multi-read (needs ZooKeeper 3.6 or later)",
            _ => "multi-read",
        },
        path: path.to_string(),
        source,
    }
}

/// One multi-read result of a `get_data` of `path`.
fn read_of(r: Option<MultiReadResult>, path: &str) -> Result<Read, ZkError> {
    match r {
        Some(MultiReadResult::Data { data, stat }) => Ok(Some((data, stat))),
        Some(MultiReadResult::Error {
            err: zookeeper_client::Error::NoNode,
        }) => Ok(None),
        Some(MultiReadResult::Error { err }) => Err(server("get", path)(err)),
        other => Err(unexpected("get", path, other)),
    }
}

/// A multi-read answered with a result of the wrong kind, or too few.
fn unexpected(op: &'static str, path: &str, r: Option<MultiReadResult>) -> ZkError {
    let what = match r {
        None => "no result".to_string(),
        Some(r) => format!("a result of the wrong kind: {r:?}"),
    };
    ZkError::Server {
        op,
        path: path.to_string(),
        source: zookeeper_client::Error::UnexpectedError(format!("multi-read gave {what}")),
    }
}

/// What [`load_clients`] read.
type ClientState = (BTreeMap<String, OwnedNode>, BTreeSet<String>, Vec<String>);

/// Sets the ACL of the node at `path` to what `kind` gets, if it differs; true when repaired.
pub(super) async fn repair_acl(
    client: &Client,
    path: &str,
    kind: NodeKind,
    acls: &NodeAcls,
) -> Result<bool, ZkError> {
    let (have, stat) = client.get_acl(path).await.map_err(server("getAcl", path))?;
    if !acls.differs(kind, &have) {
        return Ok(false);
    }
    set_acl(client, path, kind, acls, stat.aversion).await
}

async fn set_acl(
    client: &Client,
    path: &str,
    kind: NodeKind,
    acls: &NodeAcls,
    aversion: i32,
) -> Result<bool, ZkError> {
    match client
        .set_acl(path, &Acls::new(acls.of(kind)), Some(aversion))
        .await
    {
        Ok(_) => {
            crate::metrics::get().acl_repairs.inc();
            tracing::warn!(path, "repaired the ACL of a node podkeeper owns");
            Ok(true)
        }
        // Changed again meanwhile, or gone: the next audit looks again.
        Err(zookeeper_client::Error::BadVersion | zookeeper_client::Error::NoNode) => Ok(false),
        Err(e) => Err(server("setAcl", path)(e)),
    }
}

/// Checks the ACLs of what `state` says this resource owns and repairs those that differ;
/// returns how many were repaired. The record and the endpoints folder are read every time.
/// Below them a node's ACL can only have drifted if it was set after its creation (ZooKeeper
/// counts that in `aversion`, see [`ServiceState::acl_set`]), so only those are read, unless
/// the record's own ACL is not as wanted (the operator's identity or policy changed): then
/// every node is, and the record is repaired last, so that a record with the wanted ACL means
/// every node below was created or repaired under it. Reads are pipelined.
pub async fn audit_acls(
    client: &Client,
    path: &str,
    state: &ServiceState,
    acls: &NodeAcls,
) -> Result<usize, ZkError> {
    let eps = endpoints_path(path);
    let folder = (!state.endpoints_missing).then(|| eps.clone());
    let (record_ok, mut repaired) = audit_paths(client, [path.to_string()], acls, true).await?;
    let (_, n) = audit_paths(client, folder, acls, false).await?;
    repaired += n;
    let below: Vec<String> = if record_ok {
        state.acl_set.clone()
    } else {
        let endpoints = state.endpoints.keys().map(|n| endpoint_path(path, n));
        endpoints.chain(state.nodes.keys().cloned()).collect()
    };
    repaired += audit_paths(client, below, acls, false).await?.1;
    if !record_ok {
        repaired += audit_paths(client, [path.to_string()], acls, false)
            .await?
            .1;
    }
    Ok(repaired)
}

/// Reads the ACLs of `paths` (pipelined) and repairs those that differ, unless `check_only`.
/// Returns whether all were as wanted, and how many were repaired.
async fn audit_paths(
    client: &Client,
    paths: impl IntoIterator<Item = String>,
    acls: &NodeAcls,
    check_only: bool,
) -> Result<(bool, usize), ZkError> {
    let paths: Vec<String> = paths.into_iter().collect();
    let reads: Vec<_> = paths.iter().map(|p| client.get_acl(p)).collect();
    let (mut all_ok, mut repaired) = (true, 0);
    for (p, r) in paths.iter().zip(futures::future::join_all(reads).await) {
        match r {
            Ok((have, stat)) if acls.differs(NodeKind::Owned, &have) => {
                all_ok = false;
                if !check_only {
                    let fixed = set_acl(client, p, NodeKind::Owned, acls, stat.aversion).await?;
                    repaired += usize::from(fixed);
                }
            }
            Ok(_) | Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(server("getAcl", p)(e)),
        }
    }
    Ok((all_ok, repaired))
}

/// Creates the service record and its endpoints folder in one transaction.
pub async fn claim(
    client: &Client,
    path: &str,
    record: &ServiceRecord,
    options: &WriteOptions,
) -> Result<ServiceState, ZkError> {
    timed("claim", claim_inner(client, path, record, options)).await
}

async fn claim_inner(
    client: &Client,
    path: &str,
    record: &ServiceRecord,
    options: &WriteOptions,
) -> Result<ServiceState, ZkError> {
    let fence = options.fence.as_ref();
    let acls = &options.acls;
    mkdir_parent(client, path, acls).await?;
    let data = options.format.codec().encode_service(record);
    let mut w = client.new_multi_writer();
    if let Some(f) = fence {
        w.add_check_version(&f.path, f.version)
            .map_err(server("check", &f.path))?;
    }
    let eps = endpoints_path(path);
    w.add_create(path, &data, &persistent(acls, NodeKind::Owned))
        .map_err(server("create", path))?;
    w.add_create(&eps, &[], &persistent(acls, NodeKind::Owned))
        .map_err(server("create", &eps))?;
    match w.commit().await {
        Ok(_) => {
            let (nodes, foreign, _) = match &options.clients {
                Some(clients) => load_clients(client, clients.as_ref(), Some(acls)).await?,
                None => Default::default(),
            };
            Ok(ServiceState {
                record: record.clone(),
                version: 0,
                endpoints: BTreeMap::new(),
                endpoints_missing: false,
                nodes,
                foreign,
                acl_set: Vec::new(),
            })
        }
        Err(e) => Err(multi_error(path, fence.is_some(), e)),
    }
}

fn multi_error(path: &str, fenced: bool, e: MultiWriteError) -> ZkError {
    match e {
        MultiWriteError::OperationFailed {
            index: 0,
            source: zookeeper_client::Error::BadVersion | zookeeper_client::Error::NoNode,
        } if fenced => ZkError::Fenced {
            path: path.to_string(),
        },
        MultiWriteError::OperationFailed { source, .. }
            if matches!(
                source,
                zookeeper_client::Error::BadVersion
                    | zookeeper_client::Error::NoNode
                    | zookeeper_client::Error::NodeExists
            ) =>
        {
            ZkError::Stale {
                path: path.to_string(),
                source,
            }
        }
        MultiWriteError::OperationFailed { source, .. }
        | MultiWriteError::RequestFailed { source } => ZkError::Server {
            op: "multi",
            path: path.to_string(),
            source,
        },
    }
}

/// The delete in `batch` that ZooKeeper refused because the node has children, if that is why
/// the transaction failed (`before`: operations ahead of the batch's).
fn occupied(e: &MultiWriteError, before: usize, batch: &[Write<'_>]) -> Option<ZkError> {
    let MultiWriteError::OperationFailed {
        index,
        source: zookeeper_client::Error::NotEmpty,
    } = e
    else {
        return None;
    };
    let write = index.checked_sub(before).and_then(|i| batch.get(i))?;
    Some(ZkError::Occupied {
        path: write.path().to_string(),
    })
}

/// Deletes what other clients created below `path`, a node of this resource that is to be
/// deleted: deepest first, each delete fenced like every write.
async fn clear_below(client: &Client, path: &str, options: &WriteOptions) -> Result<(), ZkError> {
    let (mut stack, mut found) = (vec![path.to_string()], Vec::new());
    while let Some(p) = stack.pop() {
        let children = match client.list_children(&p).await {
            Ok(c) => c,
            Err(zookeeper_client::Error::NoNode) => continue,
            Err(e) => return Err(server("list", &p)(e)),
        };
        for c in children {
            let child = super::layout::child(&p, &c);
            found.push(child.clone());
            stack.push(child);
        }
    }
    // Found parents before their children: in reverse, children go first.
    for p in found.iter().rev() {
        let mut w = client.new_multi_writer();
        if let Some(f) = &options.fence {
            w.add_check_version(&f.path, f.version)
                .map_err(server("check", &f.path))?;
        }
        w.add_delete(p, None).map_err(server("delete", p))?;
        match w.commit().await {
            Ok(_) => {}
            // Gone meanwhile (the delete is after the fence's check).
            Err(MultiWriteError::OperationFailed {
                index,
                source: zookeeper_client::Error::NoNode,
            }) if index == usize::from(options.fence.is_some()) => {}
            Err(e) => return Err(multi_error(path, options.fence.is_some(), e)),
        }
    }
    tracing::warn!(
        path,
        removed = found.len(),
        "removed nodes another client created below a node podkeeper deletes"
    );
    Ok(())
}

/// One operation of a transaction, encoded.
enum Write<'a> {
    /// A native endpoint record; `data` is `None` for a delete.
    Endpoint {
        op: &'a Op,
        path: String,
        data: Option<Vec<u8>>,
    },
    /// A client-format node.
    Node(&'a NodeOp),
}

impl Write<'_> {
    fn bytes(&self) -> usize {
        OP_OVERHEAD
            + match self {
                Write::Endpoint { path, data, .. } => {
                    path.len() + data.as_ref().map_or(0, Vec::len)
                }
                Write::Node(NodeOp::Create { path, data } | NodeOp::Update { path, data, .. }) => {
                    path.len() + data.len()
                }
                Write::Node(NodeOp::Delete { path, .. }) => path.len(),
            }
    }

    fn path(&self) -> &str {
        match self {
            Write::Endpoint { path, .. } => path,
            Write::Node(op) => op.path(),
        }
    }

    fn is_delete(&self) -> bool {
        matches!(
            self,
            Write::Endpoint { data: None, .. } | Write::Node(NodeOp::Delete { .. })
        )
    }

    fn add(
        &self,
        w: &mut zookeeper_client::MultiWriter<'_>,
        acls: &NodeAcls,
    ) -> Result<(), ZkError> {
        let create = persistent(acls, NodeKind::Owned);
        match self {
            Write::Endpoint { op, path, data } => match (op, data) {
                (Op::Create { .. }, Some(data)) => w.add_create(path, data, &create),
                (Op::Update { version, .. }, Some(data)) => {
                    w.add_set_data(path, data, Some(*version))
                }
                (Op::Delete { version, .. }, None) => w.add_delete(path, Some(*version)),
                _ => unreachable!("endpoint writes keep their kind"),
            }
            .map_err(server("multi", path)),
            Write::Node(NodeOp::Create { path, data }) => w
                .add_create(path, data, &create)
                .map_err(server("multi", path)),
            Write::Node(NodeOp::Update {
                path,
                data,
                version,
            }) => w
                .add_set_data(path, data, Some(*version))
                .map_err(server("multi", path)),
            Write::Node(NodeOp::Delete { path, version }) => w
                .add_delete(path, Some(*version))
                .map_err(server("multi", path)),
        }
    }

    /// The version the node has once the operation commits: a conditional `setData` moves it
    /// from the one it checks to the next, a create starts at 0.
    fn version_after(&self) -> i32 {
        match self {
            Write::Endpoint {
                op: Op::Update { version, .. },
                ..
            }
            | Write::Node(NodeOp::Update { version, .. }) => version.wrapping_add(1),
            _ => 0,
        }
    }

    /// Records in `state` what the operation does once it commits.
    fn record(&self, state: &mut ServiceState) {
        let version = self.version_after();
        match self {
            Write::Endpoint { op, .. } => match op {
                Op::Create { name, record } | Op::Update { name, record, .. } => {
                    let current = Current {
                        record: Some(record.clone()),
                        version,
                    };
                    state.endpoints.insert(name.clone(), current);
                }
                Op::Delete { name, .. } => {
                    state.endpoints.remove(name);
                }
            },
            Write::Node(NodeOp::Create { path, data } | NodeOp::Update { path, data, .. }) => {
                let node = OwnedNode {
                    data: data.clone(),
                    version,
                };
                state.nodes.insert(path.clone(), node);
            }
            Write::Node(NodeOp::Delete { path, .. }) => {
                state.nodes.remove(path);
            }
        }
    }

    /// Corrects the version [`record`](Self::record) assumed when ZooKeeper answered another.
    fn confirm(&self, state: &mut ServiceState, result: &MultiWriteResult) {
        let MultiWriteResult::SetData { stat } = result else {
            return;
        };
        if stat.version == self.version_after() {
            return;
        }
        let version = match self {
            Write::Endpoint { op, .. } => {
                state.endpoints.get_mut(op.name()).map(|c| &mut c.version)
            }
            Write::Node(op) => state.nodes.get_mut(op.path()).map(|n| &mut n.version),
        };
        if let Some(v) = version {
            *v = stat.version;
        }
    }
}

/// What an apply did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Transactions committed.
    pub transactions: usize,
    /// Endpoint and client-format znodes written.
    pub znodes: usize,
}

/// Applies `plan` (native endpoints), `nodes` (client formats) and the service record, updating
/// `state` to what ZooKeeper now holds.
///
/// Plans that fit the budget are one transaction, so clients never see half of them (a pod's
/// removal and its group's re-weighting land together, in every format). Larger plans are
/// split; each part still checks the service record's version. On error `state` holds what
/// the failed transaction would have done: the caller discards it ([`sync`] clears its cache).
async fn apply(
    client: &Client,
    path: &str,
    state: &mut ServiceState,
    plan: &Plan,
    nodes: &NodePlan,
    record: &ServiceRecord,
    options: &WriteOptions,
) -> Result<Applied, ZkError> {
    let work = apply_inner(client, path, state, plan, nodes, record, options);
    timed("multi", work).await
}

/// The writes of a plan, encoded one transaction at a time: a first publish of many pods never
/// holds every record's bytes at once.
struct Writes<'a> {
    path: &'a str,
    codec: &'a dyn Codec,
    ops: std::slice::Iter<'a, Op>,
    nodes: std::slice::Iter<'a, NodeOp>,
    /// A write encoded but left for the next transaction.
    held: Option<Write<'a>>,
}

impl<'a> Writes<'a> {
    fn new(path: &'a str, plan: &'a Plan, nodes: &'a NodePlan, codec: &'a dyn Codec) -> Self {
        Writes {
            path,
            codec,
            ops: plan.ops.iter(),
            nodes: nodes.ops.iter(),
            held: None,
        }
    }

    /// Whether every write went into a batch.
    fn done(&self) -> bool {
        self.held.is_none() && self.ops.len() == 0 && self.nodes.len() == 0
    }

    fn pull(&mut self) -> Result<Option<Write<'a>>, ZkError> {
        if let Some(w) = self.held.take() {
            return Ok(Some(w));
        }
        let write = if let Some(op) = self.ops.next() {
            let data = match op {
                Op::Create { record, .. } | Op::Update { record, .. } => {
                    Some(self.codec.encode_endpoint(record))
                }
                Op::Delete { .. } => None,
            };
            let path = endpoint_path(self.path, op.name());
            Write::Endpoint { op, path, data }
        } else if let Some(op) = self.nodes.next() {
            Write::Node(op)
        } else {
            return Ok(None);
        };
        if write.bytes() > MAX_TXN_BYTES / 2 {
            let name = match &write {
                Write::Endpoint { op, .. } => op.name(),
                Write::Node(op) => op.path(),
            };
            return Err(ZkError::TooLarge {
                name: name.to_string(),
                bytes: write.bytes(),
                limit: MAX_TXN_BYTES / 2,
            });
        }
        Ok(Some(write))
    }

    /// The next transaction's writes: as many as fit the byte budget after `size` bytes of
    /// checks and the service record, and the deletion cap. A plan that fits one transaction
    /// is wholly encoded (and refused, if a record is too large) before anything is sent.
    fn batch(&mut self, mut size: usize, max_deletes: usize) -> Result<Vec<Write<'a>>, ZkError> {
        let (mut batch, mut deletes) = (Vec::new(), 0);
        while let Some(w) = self.pull()? {
            let over_cap = w.is_delete() && max_deletes > 0 && deletes >= max_deletes;
            if (size + w.bytes() > MAX_TXN_BYTES || over_cap) && !batch.is_empty() {
                self.held = Some(w);
                break;
            }
            size += w.bytes();
            deletes += usize::from(w.is_delete());
            batch.push(w);
        }
        Ok(batch)
    }
}

#[allow(clippy::too_many_arguments)]
async fn apply_inner(
    client: &Client,
    path: &str,
    state: &mut ServiceState,
    plan: &Plan,
    nodes: &NodePlan,
    record: &ServiceRecord,
    options: &WriteOptions,
) -> Result<Applied, ZkError> {
    let fence = options.fence.as_ref();
    let codec = options.format.codec();
    let record_changed = state.record != *record;
    if plan.is_empty() && nodes.ops.is_empty() && !record_changed && !state.endpoints_missing {
        return Ok(Applied::default());
    }
    let mut writes = Writes::new(path, plan, nodes, codec);
    let record_data = codec.encode_service(record);
    let first_size = record_data.len() + path.len() + OP_OVERHEAD * 3;
    let next_size = path.len() + OP_OVERHEAD * 2;
    let mut applied = Applied::default();
    let eps = endpoints_path(path);
    while applied.transactions == 0 || !writes.done() {
        let first = applied.transactions == 0;
        let size = if first { first_size } else { next_size };
        let batch = writes.batch(size, options.max_deletes_per_txn)?;
        let missing = first && state.endpoints_missing;
        let mut w = client.new_multi_writer();
        if let Some(f) = fence {
            w.add_check_version(&f.path, f.version)
                .map_err(server("check", &f.path))?;
        }
        if first && record_changed {
            w.add_set_data(path, &record_data, Some(state.version))
                .map_err(server("set", path))?;
        } else {
            w.add_check_version(path, state.version)
                .map_err(server("check", path))?;
        }
        if missing {
            w.add_create(&eps, &[], &persistent(&options.acls, NodeKind::Owned))
                .map_err(server("create", &eps))?;
        }
        for write in &batch {
            write.add(&mut w, &options.acls)?;
        }
        let mut touched: Vec<&str> = batch.iter().map(Write::path).collect();
        if first && record_changed {
            touched.push(path);
        }
        if missing {
            touched.push(&eps);
        }
        if let Some(l) = &options.ledger {
            l.expect(touched.iter().copied());
        }
        // The request is on its way: while ZooKeeper commits it, record what it does. A
        // failure clears the whole cache (`sync`), so nothing recorded here outlives one.
        let commit = w.commit();
        tracing::trace!(target: "podkeeper::timeline", paths = ?touched, "multi sent");
        if first && record_changed {
            state.version = state.version.wrapping_add(1);
            state.record = record.clone();
        }
        state.endpoints_missing &= !missing;
        for write in &batch {
            write.record(state);
        }
        let results = match commit.await {
            Ok(r) => r,
            Err(e) => {
                if let Some(l) = &options.ledger {
                    l.cancel(touched.iter().copied());
                }
                // The checks before the batch: the fence, the record, a recreated folder.
                let before = usize::from(fence.is_some()) + 1 + usize::from(missing);
                return Err(occupied(&e, before, &batch)
                    .unwrap_or_else(|| multi_error(path, fence.is_some(), e)));
            }
        };
        let mut results = results.iter().skip(usize::from(fence.is_some()));
        if let Some(MultiWriteResult::SetData { stat }) = results.next() {
            state.version = stat.version;
        }
        if missing {
            results.next();
        }
        for (write, result) in batch.iter().zip(results) {
            write.confirm(state, result);
        }
        applied.transactions += 1;
        applied.znodes += batch.len();
    }
    crate::metrics::get()
        .znodes_written
        .inc_by(applied.znodes as u64);
    Ok(applied)
}

/// Deletes every endpoint, every owned client-format node, the endpoints folder and the service
/// record, checking ownership.
pub async fn remove_all(
    client: &Client,
    path: &str,
    state: &ServiceState,
    fence: Option<&Fence>,
) -> Result<(), ZkError> {
    timed("remove", remove_inner(client, path, state, fence)).await
}

async fn remove_inner(
    client: &Client,
    path: &str,
    state: &ServiceState,
    fence: Option<&Fence>,
) -> Result<(), ZkError> {
    let paths: Vec<String> = state
        .endpoints
        .keys()
        .map(|name| endpoint_path(path, name))
        .chain(state.nodes.keys().cloned())
        .collect();
    let longest = paths.iter().map(String::len).max().unwrap_or(0);
    let per_txn = MAX_TXN_BYTES / (longest + OP_OVERHEAD);
    let mut chunks = paths.chunks(per_txn.max(1)).peekable();
    let eps = endpoints_path(path);
    loop {
        let chunk = chunks.next().unwrap_or(&[]);
        let last = chunks.peek().is_none();
        let mut w = client.new_multi_writer();
        if let Some(f) = fence {
            w.add_check_version(&f.path, f.version)
                .map_err(server("check", &f.path))?;
        }
        w.add_check_version(path, state.version)
            .map_err(server("check", path))?;
        for p in chunk {
            w.add_delete(p, None).map_err(server("delete", p))?;
        }
        if last {
            if !state.endpoints_missing {
                w.add_delete(&eps, None).map_err(server("delete", &eps))?;
            }
            w.add_delete(path, Some(state.version))
                .map_err(server("delete", path))?;
        }
        w.commit()
            .await
            .map_err(|e| multi_error(path, fence.is_some(), e))?;
        if last {
            return Ok(());
        }
    }
}

/// The result of bringing one service path to a desired state.
#[derive(Debug, Clone, PartialEq)]
pub enum Synced {
    /// ZooKeeper now holds the desired state; these operations were written.
    Applied {
        /// What was written.
        plan: Plan,
        /// What was written in the client formats (and the paths others hold).
        nodes: NodePlan,
        /// Transactions and znodes.
        applied: Applied,
    },
    /// The path belongs to someone else; nothing was written.
    Conflict(String),
    /// Dry run: what would have been written.
    DryRun {
        /// The plan.
        plan: Plan,
        /// The client formats' plan.
        nodes: NodePlan,
    },
}

/// Brings `path` to what the caller plans: loads it (when `cache` is empty), claims a free
/// path, refuses a foreign one, applies `plan_for(current state)`, and re-reads and re-plans
/// once if ZooKeeper changed under the cache. On success `cache` holds what ZooKeeper holds
/// (the caller may then [`adopt`] its records); on error it is cleared.
pub async fn sync(
    client: &Client,
    path: &str,
    record: &ServiceRecord,
    cache: &mut Option<ServiceState>,
    options: &WriteOptions,
    mut plan_for: impl FnMut(&ServiceState) -> (Plan, NodePlan),
) -> Result<Synced, ZkError> {
    let mut retried = false;
    loop {
        if cache.is_none() {
            *cache = Some(match load(client, path, &record.owner, options).await? {
                Loaded::Owned(state) if options.dry_run => state,
                Loaded::Owned(state) => {
                    timed("audit", audit_acls(client, path, &state, &options.acls)).await?;
                    state
                }
                Loaded::Absent if options.dry_run => {
                    let (plan, nodes) = plan_for(&ServiceState::empty(record));
                    return Ok(Synced::DryRun { plan, nodes });
                }
                Loaded::Absent => claim(client, path, record, options).await?,
                Loaded::Foreign(who) => return Ok(Synced::Conflict(who)),
            });
        }
        let state = cache.as_mut().expect("loaded above");
        let (plan, nodes) = plan_for(state);
        if options.dry_run {
            *cache = None;
            return Ok(Synced::DryRun { plan, nodes });
        }
        match apply(client, path, state, &plan, &nodes, record, options).await {
            Ok(applied) => {
                return Ok(Synced::Applied {
                    plan,
                    nodes,
                    applied,
                });
            }
            Err(ZkError::Stale { .. }) if !retried => {
                retried = true;
                *cache = None;
            }
            Err(ZkError::Occupied { path: node }) if !retried => {
                retried = true;
                *cache = None;
                clear_below(client, &node, options).await?;
            }
            Err(e) => {
                *cache = None;
                return Err(e);
            }
        }
    }
}

/// [`sync`] of native endpoints to `desired`, planned as the controller plans. With `changed`
/// (the names that may differ since `cache` last matched `desired`) and a warm cache, only
/// those names are compared; a load or a retry compares everything and then shares the
/// desired records with the cache ([`adopt`]), so later diffs compare pointers.
pub async fn sync_endpoints(
    client: &Client,
    path: &str,
    record: &ServiceRecord,
    cache: &mut Option<ServiceState>,
    options: &WriteOptions,
    (desired, changed): (
        &BTreeMap<SmolStr, Arc<PublishedRecord>>,
        Option<&BTreeSet<SmolStr>>,
    ),
    mut nodes: impl FnMut(&ServiceState) -> NodePlan,
) -> Result<Synced, ZkError> {
    let mut changed = changed.filter(|_| cache.is_some());
    let mut in_full = false;
    let planned = |s: &ServiceState| {
        let plan = match changed.take() {
            Some(names) => plan::diff_names(desired, &s.endpoints, names),
            None => {
                in_full = true;
                plan::diff(desired, &s.endpoints)
            }
        };
        (plan, nodes(s))
    };
    let synced = sync(client, path, record, cache, options, planned).await?;
    if let (Synced::Applied { .. }, Some(state), true) = (&synced, cache.as_mut(), in_full) {
        adopt(state, desired);
    }
    Ok(synced)
}

/// Removes what `owner` has at `path`, if anything: returns how many endpoints went.
pub async fn remove_owned(
    client: &Client,
    path: &str,
    owner: &Owner,
    options: &WriteOptions,
) -> Result<Option<usize>, ZkError> {
    match load(client, path, owner, options).await? {
        Loaded::Owned(state) => {
            remove_all(client, path, &state, options.fence.as_ref()).await?;
            Ok(Some(state.endpoints.len()))
        }
        Loaded::Absent | Loaded::Foreign(_) => Ok(None),
    }
}

/// Deletes the nodes `clients` says are this resource's in its folders, leaving every other
/// writer's; a missing folder is skipped, never created. Each transaction checks the fence,
/// and each delete the version read, so a node rewritten meanwhile waits for the next pass.
/// Returns how many went.
pub async fn remove_nodes(
    client: &Client,
    clients: &dyn ClientNodes,
    options: &WriteOptions,
) -> Result<usize, ZkError> {
    timed("remove", remove_nodes_inner(client, clients, options)).await
}

async fn remove_nodes_inner(
    client: &Client,
    clients: &dyn ClientNodes,
    options: &WriteOptions,
) -> Result<usize, ZkError> {
    let (owned, _, _) = load_clients(client, clients, None).await?;
    if options.dry_run || owned.is_empty() {
        return Ok(0);
    }
    let fence = options.fence.as_ref();
    let mut budget = MAX_TXN_BYTES;
    let mut batches: Vec<Vec<(&String, i32)>> = vec![Vec::new()];
    for (path, node) in &owned {
        let bytes = path.len() + OP_OVERHEAD;
        if bytes > budget {
            batches.push(Vec::new());
            budget = MAX_TXN_BYTES;
        }
        budget -= bytes;
        batches.last_mut().expect("one").push((path, node.version));
    }
    for batch in &batches {
        let mut w = client.new_multi_writer();
        if let Some(f) = fence {
            w.add_check_version(&f.path, f.version)
                .map_err(server("check", &f.path))?;
        }
        for (path, version) in batch {
            w.add_delete(path, Some(*version))
                .map_err(server("delete", path))?;
        }
        let paths = batch.iter().map(|(p, _)| p.as_str());
        if let Some(l) = &options.ledger {
            l.expect(paths.clone());
        }
        if let Err(e) = w.commit().await {
            if let Some(l) = &options.ledger {
                l.cancel(paths);
            }
            return Err(multi_error(batch[0].0, fence.is_some(), e));
        }
    }
    Ok(owned.len())
}

/// The endpoints clients may pick that `path` holds now (from `cache`, loaded if empty): what
/// the keep-last guard keeps when no pod is ready any more.
pub async fn pickable(
    client: &Client,
    path: &str,
    owner: &Owner,
    cache: &mut Option<ServiceState>,
    options: &WriteOptions,
) -> Result<BTreeMap<SmolStr, Arc<PublishedRecord>>, ZkError> {
    if cache.is_none()
        && let Loaded::Owned(state) = load(client, path, owner, options).await?
    {
        *cache = Some(state);
    }
    Ok(cache
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter_map(|(k, c)| {
            c.record
                .clone()
                .filter(|r| r.pickable())
                .map(|r| (k.clone(), r))
        })
        .collect())
}

/// Where the cache holds a record equal to the desired one but not the same `Arc` (after a
/// load, or after the desired state was rebuilt from scratch), keep the desired `Arc`, so later
/// diffs compare pointers, not contents; and the desired name with it, so a long name is held
/// once. Both maps are sorted: one merge pass, and a content comparison only where the pointers
/// differ.
pub fn adopt(state: &mut ServiceState, desired: &BTreeMap<SmolStr, Arc<PublishedRecord>>) {
    let mut want = desired.iter().peekable();
    let mut renamed = Vec::new();
    for (name, cur) in state.endpoints.iter_mut() {
        while want.next_if(|(w, _)| w.as_str() < name.as_str()).is_some() {}
        let Some((wanted_name, wanted)) = want.next_if(|(w, _)| *w == name) else {
            continue;
        };
        if let Some(have) = cur.record.as_mut()
            && !Arc::ptr_eq(have, wanted)
            && **have == **wanted
        {
            *have = wanted.clone();
            renamed.push(wanted_name.clone());
        }
    }
    // A map's key cannot be swapped in place; this is rare (the pointers differed).
    for name in renamed {
        if let Some(cur) = state.endpoints.remove(&name) {
            state.endpoints.insert(name, cur);
        }
    }
    compact(&mut state.endpoints);
}

/// Maps at least this large are rebuilt after a full comparison: more than one B-tree leaf
/// (11 entries). A map of 100 endpoints grown in key order took 80 B per endpoint instead of
/// 46 (heaptrack, 100 resources x 100 pods).
const COMPACT_FROM: usize = 12;

/// Rebuilds `map` with full nodes. A `BTreeMap` grown by inserts in key order, as a first
/// publish records its creates, splits every node in two and leaves them little more than
/// half full: 78 bytes per endpoint instead of about 40 (heaptrack, 10,000 endpoints).
fn compact<K: Ord, V>(map: &mut BTreeMap<K, V>) {
    if map.len() >= COMPACT_FROM {
        *map = std::mem::take(map).into_iter().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pod: &str, meta_bytes: usize) -> Arc<PublishedRecord> {
        Arc::new(PublishedRecord {
            host: "10.0.0.1".into(),
            port: 80,
            ports: Default::default(),
            weight: 1,
            group: "default".into(),
            zone: None,
            node: None,
            pod: pod.into(),
            namespace: "n".into(),
            metadata: [("k".into(), "v".repeat(meta_bytes).into())]
                .into_iter()
                .collect(),
            status: crate::model::record::EndpointStatus::Up,
            ready_since_ms: 0,
        })
    }

    fn creates(n: usize, meta_bytes: usize) -> Plan {
        let ops = (0..n)
            .map(|i| {
                let name = SmolStr::from(format!("pod-{i:05}"));
                Op::Create {
                    record: record(&name, meta_bytes),
                    name,
                }
            })
            .collect();
        Plan { ops }
    }

    /// Every batch of a plan: the paths and bytes of its writes.
    fn split(plan: &Plan, nodes: &NodePlan, max_deletes: usize) -> Vec<Vec<(String, usize)>> {
        let codec = Format::Native.codec();
        let mut writes = Writes::new("/svc", plan, nodes, codec);
        let mut out = Vec::new();
        while out.is_empty() || !writes.done() {
            let batch = writes
                .batch(1000, max_deletes)
                .expect("no record too large");
            let size: usize = 1000 + batch.iter().map(Write::bytes).sum::<usize>();
            assert!(size <= MAX_TXN_BYTES, "{size} bytes");
            out.push(
                batch
                    .iter()
                    .map(|w| (w.path().to_string(), w.bytes()))
                    .collect(),
            );
        }
        out
    }

    fn paths(batches: &[Vec<(String, usize)>]) -> Vec<Vec<String>> {
        let names = |b: &Vec<(String, usize)>| b.iter().map(|(p, _)| p.clone()).collect();
        batches.iter().map(names).collect()
    }

    #[test]
    fn writes_are_encoded_one_transaction_at_a_time_in_plan_order() {
        let plan = creates(3000, 200);
        let nodes = NodePlan {
            ops: vec![NodeOp::Delete {
                path: "/other/x".into(),
                version: 0,
            }],
            clashes: Vec::new(),
        };
        let batches = split(&plan, &nodes, 0);
        assert!(batches.len() >= 3, "{} batches", batches.len());
        let mut want: Vec<String> = plan
            .ops
            .iter()
            .map(|op| endpoint_path("/svc", op.name()))
            .collect();
        want.push("/other/x".into());
        assert_eq!(paths(&batches).concat(), want);
        // Each batch is full: the next write would not have fitted.
        for pair in batches.windows(2) {
            let used = 1000 + pair[0].iter().map(|(_, b)| b).sum::<usize>();
            assert!(
                used + pair[1][0].1 > MAX_TXN_BYTES,
                "{used} bytes, then more"
            );
        }
    }

    #[test]
    fn an_empty_plan_is_one_empty_transaction_and_deletes_respect_the_cap() {
        let empty = split(&Plan::default(), &NodePlan::default(), 0);
        assert_eq!(paths(&empty), vec![Vec::<String>::new()]);
        let ops = (0..10)
            .map(|i| Op::Delete {
                name: format!("p{i}").into(),
                version: 0,
            })
            .collect();
        let deletes = split(&Plan { ops }, &NodePlan::default(), 4);
        let sizes: Vec<usize> = deletes.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![4, 4, 2]);
    }

    #[test]
    fn a_too_large_record_is_refused_before_its_transaction_is_sent() {
        let mut plan = creates(5, 10);
        plan.ops.push(Op::Create {
            name: "huge".into(),
            record: record("huge", MAX_TXN_BYTES / 2),
        });
        let nodes = NodePlan::default();
        let mut writes = Writes::new("/svc", &plan, &nodes, Format::Native.codec());
        match writes.batch(1000, 0) {
            Err(ZkError::TooLarge { name, limit, .. }) => {
                assert_eq!((name.as_str(), limit), ("huge", MAX_TXN_BYTES / 2));
            }
            other => panic!("expected TooLarge, got {:?}", other.map(|b| b.len())),
        }
    }

    #[test]
    fn compacting_keeps_every_entry_in_order() {
        let mut map = BTreeMap::new();
        for k in 0..1000u32 {
            map.insert(k, k * 2);
        }
        let before: Vec<(u32, u32)> = map.clone().into_iter().collect();
        compact(&mut map);
        assert_eq!(map.into_iter().collect::<Vec<_>>(), before);
        let mut small = BTreeMap::from([(1, 1)]);
        compact(&mut small);
        assert_eq!(small, BTreeMap::from([(1, 1)]));
    }
}

//! Reads a service's znodes and applies plans as `multi()` transactions, each guarded by the
//! service record's version so nothing is written once someone else owns the path.
//! The only module that writes znodes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use zookeeper_client::{
    Acls, Client, CreateMode, CreateOptions, MultiWriteError, MultiWriteResult,
};

use super::ZkError;
pub use super::fence::Fence;
use super::format::{Codec, Format};
use super::layout::{endpoint_path, endpoints_path};
use crate::model::plan::{Current, Op, Plan};
use crate::model::record::{EndpointRecord, Owner, ServiceRecord};

/// Bytes of operations per transaction; ZooKeeper's packet limit (jute.maxbuffer) is 1 MiB.
pub const MAX_TXN_BYTES: usize = 512 * 1024;
/// Per-operation framing overhead counted against the budget.
const OP_OVERHEAD: usize = 64;

pub(super) fn persistent() -> CreateOptions<'static> {
    CreateMode::Persistent.with_acls(Acls::anyone_all())
}

/// Creates the parents of `path` that are missing.
pub(super) async fn mkdir_parent(client: &Client, path: &str) -> Result<(), ZkError> {
    let Some(parent) = path
        .rsplit_once('/')
        .map(|(p, _)| p)
        .filter(|p| !p.is_empty())
    else {
        return Ok(());
    };
    client
        .mkdir(parent, &persistent())
        .await
        .map_err(server("mkdir", parent))
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
}

/// A service path this resource owns, as last read or written.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceState {
    /// The service record.
    pub record: ServiceRecord,
    /// Its znode version; every transaction checks it.
    pub version: i32,
    /// Endpoint znodes by name.
    pub endpoints: BTreeMap<String, Current>,
    /// `<path>/endpoints` is missing (someone deleted it) and is recreated by the next apply.
    pub endpoints_missing: bool,
}

/// What is at a service path.
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

/// Reads the service record and endpoints at `path` in the given format.
pub async fn load(
    client: &Client,
    path: &str,
    owner: &Owner,
    format: Format,
) -> Result<Loaded, ZkError> {
    timed("read", load_inner(client, path, owner, format.codec())).await
}

async fn load_inner(
    client: &Client,
    path: &str,
    owner: &Owner,
    codec: &dyn Codec,
) -> Result<Loaded, ZkError> {
    let (data, stat) = match client.get_data(path).await {
        Ok(x) => x,
        Err(zookeeper_client::Error::NoNode) => return Ok(Loaded::Absent),
        Err(e) => return Err(server("get", path)(e)),
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
    let eps = endpoints_path(path);
    let (children, endpoints_missing) = match client.list_children(&eps).await {
        Ok(c) => (c, false),
        Err(zookeeper_client::Error::NoNode) => (Vec::new(), true),
        Err(e) => return Err(server("list", &eps)(e)),
    };
    // All reads are issued before any is awaited: the client pipelines them on one connection.
    let reads: Vec<_> = children
        .iter()
        .map(|c| client.get_data(&endpoint_path(path, c)))
        .collect();
    let results = futures::future::join_all(reads).await;
    let mut endpoints = BTreeMap::new();
    for (name, r) in children.into_iter().zip(results) {
        match r {
            Ok((data, stat)) => {
                endpoints.insert(
                    name,
                    Current {
                        record: codec.decode_endpoint(&data).map(std::sync::Arc::new),
                        version: stat.version,
                    },
                );
            }
            Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(server("get", &endpoint_path(path, &name))(e)),
        }
    }
    Ok(Loaded::Owned(ServiceState {
        record,
        version: stat.version,
        endpoints,
        endpoints_missing,
    }))
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
    mkdir_parent(client, path).await?;
    let data = options.format.codec().encode_service(record);
    let mut w = client.new_multi_writer();
    if let Some(f) = fence {
        w.add_check_version(&f.path, f.version)
            .map_err(server("check", &f.path))?;
    }
    let eps = endpoints_path(path);
    w.add_create(path, &data, &persistent())
        .map_err(server("create", path))?;
    w.add_create(&eps, &[], &persistent())
        .map_err(server("create", &eps))?;
    match w.commit().await {
        Ok(_) => Ok(ServiceState {
            record: record.clone(),
            version: 0,
            endpoints: BTreeMap::new(),
            endpoints_missing: false,
        }),
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

enum Encoded<'a> {
    Put {
        op: &'a Op,
        path: String,
        data: Vec<u8>,
    },
    Delete {
        op: &'a Op,
        path: String,
    },
}

impl Encoded<'_> {
    fn bytes(&self) -> usize {
        match self {
            Encoded::Put { path, data, .. } => path.len() + data.len() + OP_OVERHEAD,
            Encoded::Delete { path, .. } => path.len() + OP_OVERHEAD,
        }
    }
}

/// What an apply did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Transactions committed.
    pub transactions: usize,
    /// Endpoint znodes written.
    pub znodes: usize,
}

/// Applies `plan` and the service record, updating `state` to what ZooKeeper now holds.
///
/// A plan that fits the budget is one transaction, so clients never see half of it (a pod's
/// removal and its group's re-weighting land together). Larger plans are split; each part still
/// checks the service record's version.
pub async fn apply(
    client: &Client,
    path: &str,
    state: &mut ServiceState,
    plan: &Plan,
    record: &ServiceRecord,
    options: &WriteOptions,
) -> Result<Applied, ZkError> {
    timed(
        "multi",
        apply_inner(client, path, state, plan, record, options),
    )
    .await
}

async fn apply_inner(
    client: &Client,
    path: &str,
    state: &mut ServiceState,
    plan: &Plan,
    record: &ServiceRecord,
    options: &WriteOptions,
) -> Result<Applied, ZkError> {
    let fence = options.fence.as_ref();
    let codec = options.format.codec();
    let record_changed = state.record != *record;
    if plan.is_empty() && !record_changed && !state.endpoints_missing {
        return Ok(Applied::default());
    }
    let mut encoded = Vec::with_capacity(plan.ops.len());
    for op in &plan.ops {
        let p = endpoint_path(path, op.name());
        encoded.push(match op {
            Op::Create { record, .. } | Op::Update { record, .. } => {
                let data = codec.encode_endpoint(record);
                if data.len() + p.len() + OP_OVERHEAD > MAX_TXN_BYTES / 2 {
                    return Err(ZkError::TooLarge {
                        name: op.name().to_string(),
                        bytes: data.len(),
                        limit: MAX_TXN_BYTES / 2,
                    });
                }
                Encoded::Put { op, path: p, data }
            }
            Op::Delete { .. } => Encoded::Delete { op, path: p },
        });
    }
    let record_data = codec.encode_service(record);
    let mut batches: Vec<&[Encoded]> = Vec::new();
    let mut start = 0;
    let mut size = record_data.len() + path.len() + OP_OVERHEAD * 3;
    let mut deletes = 0;
    for (i, e) in encoded.iter().enumerate() {
        let is_delete = matches!(e, Encoded::Delete { .. });
        let over_cap =
            is_delete && options.max_deletes_per_txn > 0 && deletes >= options.max_deletes_per_txn;
        if (size + e.bytes() > MAX_TXN_BYTES || over_cap) && i > start {
            batches.push(&encoded[start..i]);
            start = i;
            size = path.len() + OP_OVERHEAD * 2;
            deletes = 0;
        }
        size += e.bytes();
        deletes += usize::from(is_delete);
    }
    batches.push(&encoded[start..]);

    let mut applied = Applied::default();
    for (i, batch) in batches.into_iter().enumerate() {
        let first = i == 0;
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
        let eps = endpoints_path(path);
        if first && state.endpoints_missing {
            w.add_create(&eps, &[], &persistent())
                .map_err(server("create", &eps))?;
        }
        for e in batch {
            match e {
                Encoded::Put {
                    op: Op::Create { .. },
                    path,
                    data,
                } => w.add_create(path, data, &persistent()),
                Encoded::Put {
                    op: Op::Update { version, .. },
                    path,
                    data,
                } => w.add_set_data(path, data, Some(*version)),
                Encoded::Delete {
                    op: Op::Delete { version, .. },
                    path,
                } => w.add_delete(path, Some(*version)),
                _ => unreachable!("encoded ops keep their kind"),
            }
            .map_err(server("multi", path))?;
        }
        let results = w
            .commit()
            .await
            .map_err(|e| multi_error(path, fence.is_some(), e))?;
        let mut results = results.into_iter();
        if fence.is_some() {
            results.next();
        }
        if let Some(MultiWriteResult::SetData { stat }) = results.next() {
            state.version = stat.version;
            state.record = record.clone();
        }
        if first && state.endpoints_missing {
            results.next();
            state.endpoints_missing = false;
        }
        for (e, r) in batch.iter().zip(results) {
            match (e, r) {
                (
                    Encoded::Put {
                        op: Op::Create { name, record },
                        ..
                    },
                    _,
                ) => {
                    state.endpoints.insert(
                        name.clone(),
                        Current {
                            record: Some(record.clone()),
                            version: 0,
                        },
                    );
                }
                (
                    Encoded::Put {
                        op: Op::Update { name, record, .. },
                        ..
                    },
                    MultiWriteResult::SetData { stat },
                ) => {
                    state.endpoints.insert(
                        name.clone(),
                        Current {
                            record: Some(record.clone()),
                            version: stat.version,
                        },
                    );
                }
                (
                    Encoded::Delete {
                        op: Op::Delete { name, .. },
                        ..
                    },
                    _,
                ) => {
                    state.endpoints.remove(name);
                }
                _ => {}
            }
        }
        applied.transactions += 1;
        applied.znodes += batch.len();
    }
    crate::metrics::get()
        .znodes_written
        .inc_by(applied.znodes as u64);
    Ok(applied)
}

/// Deletes every endpoint, the endpoints folder and the service record, checking ownership.
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
    let names: Vec<&String> = state.endpoints.keys().collect();
    let per_txn = MAX_TXN_BYTES / (path.len() + 300 + OP_OVERHEAD);
    let mut chunks = names.chunks(per_txn.max(1)).peekable();
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
        for name in chunk {
            let p = endpoint_path(path, name);
            w.add_delete(&p, None).map_err(server("delete", &p))?;
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
        /// Transactions and znodes.
        applied: Applied,
    },
    /// The path belongs to someone else; nothing was written.
    Conflict(String),
    /// Dry run: what would have been written.
    DryRun {
        /// The plan.
        plan: Plan,
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
    mut plan_for: impl FnMut(&BTreeMap<String, Current>) -> Plan,
) -> Result<Synced, ZkError> {
    let mut retried = false;
    loop {
        if cache.is_none() {
            *cache = Some(
                match load(client, path, &record.owner, options.format).await? {
                    Loaded::Owned(state) => state,
                    Loaded::Absent if options.dry_run => {
                        let plan = plan_for(&BTreeMap::new());
                        return Ok(Synced::DryRun { plan });
                    }
                    Loaded::Absent => claim(client, path, record, options).await?,
                    Loaded::Foreign(who) => return Ok(Synced::Conflict(who)),
                },
            );
        }
        let state = cache.as_mut().expect("loaded above");
        let plan = plan_for(&state.endpoints);
        if options.dry_run {
            *cache = None;
            return Ok(Synced::DryRun { plan });
        }
        match apply(client, path, state, &plan, record, options).await {
            Ok(applied) => return Ok(Synced::Applied { plan, applied }),
            Err(ZkError::Stale { .. }) if !retried => {
                retried = true;
                *cache = None;
            }
            Err(e) => {
                *cache = None;
                return Err(e);
            }
        }
    }
}

/// Removes what `owner` has at `path`, if anything: returns how many endpoints went.
pub async fn remove_owned(
    client: &Client,
    path: &str,
    owner: &Owner,
    options: &WriteOptions,
) -> Result<Option<usize>, ZkError> {
    match load(client, path, owner, options.format).await? {
        Loaded::Owned(state) => {
            remove_all(client, path, &state, options.fence.as_ref()).await?;
            Ok(Some(state.endpoints.len()))
        }
        Loaded::Absent | Loaded::Foreign(_) => Ok(None),
    }
}

/// The endpoints clients may pick that `path` holds now (from `cache`, loaded if empty): what
/// the keep-last guard keeps when no pod is ready any more.
pub async fn pickable(
    client: &Client,
    path: &str,
    owner: &Owner,
    cache: &mut Option<ServiceState>,
    options: &WriteOptions,
) -> Result<BTreeMap<String, Arc<EndpointRecord>>, ZkError> {
    if cache.is_none()
        && let Loaded::Owned(state) = load(client, path, owner, options.format).await?
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
/// diffs compare pointers, not contents. Both maps are sorted: one merge pass, and a content
/// comparison only where the pointers differ.
pub fn adopt(state: &mut ServiceState, desired: &BTreeMap<String, Arc<EndpointRecord>>) {
    let mut want = desired.iter().peekable();
    for (name, cur) in state.endpoints.iter_mut() {
        while want.next_if(|(w, _)| w.as_str() < name.as_str()).is_some() {}
        let Some((_, wanted)) = want.next_if(|(w, _)| *w == name) else {
            continue;
        };
        if let Some(have) = cur.record.as_mut()
            && !Arc::ptr_eq(have, wanted)
            && **have == **wanted
        {
            *have = wanted.clone();
        }
    }
}

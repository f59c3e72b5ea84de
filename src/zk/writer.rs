//! Reads a service's znodes and applies plans as `multi()` transactions, each guarded by the
//! service record's version so nothing is written once someone else owns the path.
//! The only module that writes znodes. Its parts: [`read`] (what a service path holds),
//! [`acls`] (ACL audits and repairs), [`transaction`] (plans applied as `multi()`s) and
//! [`remove`] (a registration or its nodes taken away).

mod acls;
mod read;
mod remove;
mod transaction;

pub(super) use acls::repair_acl;
pub use acls::{audit_acls, repair_home_parents};
pub use read::load;
use read::load_clients;
pub use remove::{remove_all, remove_nodes, remove_owned};
pub use transaction::Applied;
use transaction::{apply, clear_below};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use smol_str::SmolStr;
use zookeeper_client::{Acls, Client, CreateMode, CreateOptions, MultiWriteError};

use super::acl::{NodeAcls, NodeKind};
pub use super::fence::Fence;
use super::format::Format;
use super::layout::endpoints_path;
use super::{ZkError, server};
use crate::model::nodes::{NodePlan, OwnedNode};
use crate::model::plan::{self, Current, Plan};
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
/// prefix, ancestors others may create beside elsewhere ([`NodeAcls::parent_kind`]). With a
/// fence each folder is created in a `multi()` that checks it, so a former leader creates none.
pub(super) async fn mkdir_parent(
    client: &Client,
    path: &str,
    acls: &NodeAcls,
    fence: Option<&Fence>,
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
        mkdir(client, dir, &persistent(acls, acls.parent_kind(dir)), fence).await?;
    }
    Ok(())
}

/// Creates one folder (fenced when `fence` is given); one that exists is left as is.
async fn mkdir(
    client: &Client,
    dir: &str,
    options: &CreateOptions<'_>,
    fence: Option<&Fence>,
) -> Result<(), ZkError> {
    let Some(f) = fence else {
        return match client.create(dir, &[], options).await {
            Ok(_) | Err(zookeeper_client::Error::NodeExists) => Ok(()),
            Err(e) => Err(server("create", dir)(e)),
        };
    };
    let mut w = client.new_multi_writer();
    w.add_check_version(&f.path, f.version)
        .map_err(server("check", &f.path))?;
    w.add_create(dir, &[], options)
        .map_err(server("create", dir))?;
    match w.commit().await {
        Ok(_) => Ok(()),
        Err(MultiWriteError::OperationFailed {
            index: 1,
            source: zookeeper_client::Error::NodeExists,
        }) => Ok(()),
        Err(e) => Err(multi_error(dir, true, e)),
    }
}

/// Fails with [`ZkError::Fenced`] when `fence` no longer holds: the guard in front of what a
/// `multi()` cannot carry (setACL). Only the moment between this check and the call is open.
pub(super) async fn check_fence(client: &Client, fence: Option<&Fence>) -> Result<(), ZkError> {
    let Some(f) = fence else { return Ok(()) };
    let mut w = client.new_multi_writer();
    w.add_check_version(&f.path, f.version)
        .map_err(server("check", &f.path))?;
    w.commit()
        .await
        .map(drop)
        .map_err(|e| multi_error(&f.path, true, e))
}

/// Creates a client-format folder (its parents as ancestors); one that exists is left as is.
async fn mkdir_folder(
    client: &Client,
    dir: &str,
    acls: &NodeAcls,
    fence: Option<&Fence>,
) -> Result<(), ZkError> {
    mkdir_parent(client, dir, acls, fence).await?;
    mkdir(client, dir, &persistent(acls, NodeKind::Folder), fence).await
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
    mkdir_parent(client, path, acls, fence).await?;
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
                Some(clients) => load_clients(client, clients.as_ref(), Some(options)).await?,
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
                    let fence = options.fence.as_ref();
                    let audit = audit_acls(client, path, &state, &options.acls, fence);
                    timed("audit", audit).await?;
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
                clear_below(client, &node, options.fence.as_ref()).await?;
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

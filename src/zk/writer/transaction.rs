//! A plan applied as `multi()` transactions below the packet limit, each checking the fence
//! and the service record's version; what a transaction does is recorded in the cache as it
//! goes, and nodes others created below one being deleted are cleared first.

use zookeeper_client::{Client, MultiWriteError, MultiWriteResult};

use super::{
    Fence, MAX_TXN_BYTES, OP_OVERHEAD, ServiceState, WriteOptions, multi_error, persistent, timed,
};
use crate::model::nodes::{NodeOp, NodePlan, OwnedNode};
use crate::model::plan::{Current, Op, Plan};
use crate::model::record::ServiceRecord;
use crate::zk::acl::{NodeAcls, NodeKind};
use crate::zk::format::Codec;
use crate::zk::layout::{endpoint_path, endpoints_path};
use crate::zk::{ZkError, server};

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
pub(super) async fn clear_below(
    client: &Client,
    path: &str,
    fence: Option<&Fence>,
) -> Result<(), ZkError> {
    let (mut stack, mut found) = (vec![path.to_string()], Vec::new());
    while let Some(p) = stack.pop() {
        let children = match client.list_children(&p).await {
            Ok(c) => c,
            Err(zookeeper_client::Error::NoNode) => continue,
            Err(e) => return Err(server("list", &p)(e)),
        };
        for c in children {
            let child = crate::zk::layout::child(&p, &c);
            found.push(child.clone());
            stack.push(child);
        }
    }
    // Found parents before their children: in reverse, children go first.
    for p in found.iter().rev() {
        let mut w = client.new_multi_writer();
        if let Some(f) = fence {
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
            }) if index == usize::from(fence.is_some()) => {}
            Err(e) => return Err(multi_error(path, fence.is_some(), e)),
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
pub(super) async fn apply(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::PublishedRecord;
    use crate::zk::format::Format;
    use smol_str::SmolStr;
    use std::sync::Arc;

    fn record(pod: &str, meta_bytes: usize) -> Arc<PublishedRecord> {
        Arc::new(PublishedRecord {
            host: "10.0.0.1".into(),
            port: 80,
            ports: Default::default(),
            weight: 1,
            declared_weight: None,
            load: None,
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
}

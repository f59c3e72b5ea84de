//! The ACLs of what a resource owns, and of the home folders above it: read, compared with
//! what the session's identity and policy call for, and set back where they drifted.

use zookeeper_client::{Acls, Client};

use super::{Fence, ServiceState, check_fence};
use crate::zk::acl::{NodeAcls, NodeKind};
use crate::zk::layout::{endpoint_path, endpoints_path};
use crate::zk::{ZkError, server};

/// Sets the ACL of the existing folders above `path` at and below the home prefix to
/// podkeeper's alone, where an older version or another client left them looser; returns
/// how many were repaired. A former leader (its `fence` passed) repairs none.
pub async fn repair_home_parents(
    client: &Client,
    path: &str,
    acls: &NodeAcls,
    fence: Option<&Fence>,
) -> Result<usize, ZkError> {
    let mut repaired = 0;
    let mut at = path;
    while let Some((up, _)) = at.rsplit_once('/').filter(|(up, _)| !up.is_empty()) {
        at = up;
        if acls.parent_kind(at) != NodeKind::Owned {
            break;
        }
        match repair_acl(client, at, NodeKind::Owned, acls, fence).await {
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

/// Sets the ACL of the node at `path` to what `kind` gets, if it differs and `fence` holds;
/// true when repaired.
pub(crate) async fn repair_acl(
    client: &Client,
    path: &str,
    kind: NodeKind,
    acls: &NodeAcls,
    fence: Option<&Fence>,
) -> Result<bool, ZkError> {
    let (have, stat) = client.get_acl(path).await.map_err(server("getAcl", path))?;
    if !acls.differs(kind, &have) {
        return Ok(false);
    }
    check_fence(client, fence).await?;
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
    fence: Option<&Fence>,
) -> Result<usize, ZkError> {
    let eps = endpoints_path(path);
    let folder = (!state.endpoints_missing).then(|| eps.clone());
    let audit = |paths: Vec<String>, check_only: bool| async move {
        let repair = (!check_only).then_some(fence);
        audit_paths(client, paths, acls, repair).await
    };
    let (record_ok, mut repaired) = audit(vec![path.to_string()], true).await?;
    let (_, n) = audit(folder.into_iter().collect(), false).await?;
    repaired += n;
    let below: Vec<String> = if record_ok {
        state.acl_set.clone()
    } else {
        let endpoints = state.endpoints.keys().map(|n| endpoint_path(path, n));
        endpoints.chain(state.nodes.keys().cloned()).collect()
    };
    repaired += audit(below, false).await?.1;
    if !record_ok {
        repaired += audit(vec![path.to_string()], false).await?.1;
    }
    Ok(repaired)
}

/// Reads the ACLs of `paths` (pipelined) and repairs those that differ when `repair` is given
/// (with the fence, checked once before the first repair). Returns whether all were as
/// wanted, and how many were repaired.
async fn audit_paths(
    client: &Client,
    paths: Vec<String>,
    acls: &NodeAcls,
    repair: Option<Option<&Fence>>,
) -> Result<(bool, usize), ZkError> {
    let reads: Vec<_> = paths.iter().map(|p| client.get_acl(p)).collect();
    let (mut all_ok, mut repaired) = (true, 0);
    for (p, r) in paths.iter().zip(futures::future::join_all(reads).await) {
        match r {
            Ok((have, stat)) if acls.differs(NodeKind::Owned, &have) => {
                if let (true, Some(fence)) = (all_ok, repair) {
                    check_fence(client, fence).await?;
                }
                all_ok = false;
                if repair.is_some() {
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

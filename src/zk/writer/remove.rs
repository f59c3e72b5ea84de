//! A registration taken away: its record, endpoints and client-format nodes, or only its
//! nodes in folders it no longer writes; never a node someone else owns.

use zookeeper_client::Client;

use super::{
    ClientNodes, Fence, Loaded, MAX_TXN_BYTES, OP_OVERHEAD, ServiceState, WriteOptions, load,
    load_clients, multi_error, timed,
};
use crate::model::record::Owner;
use crate::zk::layout::endpoint_path;
use crate::zk::layout::endpoints_path;
use crate::zk::{ZkError, server};

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

//! A registration taken away: its record, endpoints and client-format nodes, or only its
//! nodes in folders it no longer writes; never a node someone else owns.

use zookeeper_client::{Client, MultiWriteError};

use super::{
    ClientNodes, Fence, Loaded, MAX_TXN_BYTES, OP_OVERHEAD, ServiceState, WriteOptions,
    clear_below, load, load_clients, multi_error, timed,
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
    let per_txn = (MAX_TXN_BYTES / (longest + OP_OVERHEAD)).max(1);
    let mut chunks: Vec<&[String]> = paths.chunks(per_txn).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let txn = Removal {
            path,
            version: state.version,
            fence,
            last: i == last,
        };
        txn.commit_clearing(client, chunk.to_vec(), !state.endpoints_missing)
            .await?;
    }
    Ok(())
}

/// One transaction of a removal: deletes of `chunk` and, in the last, of the endpoints folder
/// and the record, checking the fence and the record's version.
struct Removal<'a> {
    path: &'a str,
    version: i32,
    fence: Option<&'a Fence>,
    last: bool,
}

/// How often nodes others keep creating below ours are cleared before the removal gives up.
const CLEARS: usize = 3;

impl Removal<'_> {
    /// Commits; a delete refused because another client created nodes below it clears them
    /// (fenced) and commits again what still exists.
    async fn commit_clearing(
        &self,
        client: &Client,
        mut chunk: Vec<String>,
        mut folder: bool,
    ) -> Result<(), ZkError> {
        for _ in 0..CLEARS {
            match self.commit(client, &chunk, folder).await {
                Err(ZkError::Occupied { path }) => {
                    clear_below(client, &path, self.fence).await?;
                    chunk = existing(client, chunk).await?;
                    let eps = endpoints_path(self.path);
                    folder = folder && !existing(client, vec![eps]).await?.is_empty();
                }
                other => return other,
            }
        }
        self.commit(client, &chunk, folder).await
    }

    async fn commit(&self, client: &Client, chunk: &[String], folder: bool) -> Result<(), ZkError> {
        let (path, eps) = (self.path, endpoints_path(self.path));
        let mut ops: Vec<&str> = Vec::new();
        let mut w = client.new_multi_writer();
        if let Some(f) = self.fence {
            w.add_check_version(&f.path, f.version)
                .map_err(server("check", &f.path))?;
            ops.push(&f.path);
        }
        w.add_check_version(path, self.version)
            .map_err(server("check", path))?;
        ops.push(path);
        for p in chunk {
            w.add_delete(p, None).map_err(server("delete", p))?;
            ops.push(p);
        }
        if self.last {
            if folder {
                w.add_delete(&eps, None).map_err(server("delete", &eps))?;
                ops.push(&eps);
            }
            w.add_delete(path, Some(self.version))
                .map_err(server("delete", path))?;
            ops.push(path);
        }
        match w.commit().await {
            Ok(_) => Ok(()),
            Err(MultiWriteError::OperationFailed {
                index,
                source: zookeeper_client::Error::NotEmpty,
            }) if index < ops.len() => Err(ZkError::Occupied {
                path: ops[index].to_string(),
            }),
            Err(e) => Err(multi_error(path, self.fence.is_some(), e)),
        }
    }
}

/// The nodes of `paths` that exist (reads pipelined).
async fn existing(client: &Client, paths: Vec<String>) -> Result<Vec<String>, ZkError> {
    let reads: Vec<_> = paths.iter().map(|p| client.check_stat(p)).collect();
    let mut out = Vec::new();
    for (p, r) in paths.iter().zip(futures::future::join_all(reads).await) {
        if r.map_err(server("stat", p))?.is_some() {
            out.push(p.clone());
        }
    }
    Ok(out)
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

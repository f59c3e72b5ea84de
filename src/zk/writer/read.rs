//! What a service path holds: the record and endpoints read in multi-reads, and the
//! resource's client-format nodes beside others'. Reads only (a missing folder may be created).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use smol_str::SmolStr;
use zookeeper_client::{Client, MultiReadResult};

use super::super::layout::{endpoint_path, endpoints_path};
use super::{ClientNodes, Loaded, ServiceState, WriteOptions, mkdir_folder, timed};
use crate::model::nodes::OwnedNode;
use crate::model::plan::Current;
use crate::model::record::{Owner, ServiceRecord};
use crate::zk::{ZkError, server};

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
                load_clients(client, clients.as_ref(), Some(options)).await?;
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
/// the ACLs and fence of `create` (empty folders are harmless to every client), or skipped
/// without.
pub(super) async fn load_clients(
    client: &Client,
    clients: &dyn ClientNodes,
    create: Option<&WriteOptions>,
) -> Result<ClientState, ZkError> {
    let (mut owned, mut foreign, mut acl_set) = (BTreeMap::new(), BTreeSet::new(), Vec::new());
    for dir in clients.dirs() {
        let children = match client.list_children(&dir).await {
            Ok(c) => c,
            Err(zookeeper_client::Error::NoNode) => {
                if let Some(o) = create {
                    mkdir_folder(client, &dir, &o.acls, o.fence.as_ref()).await?;
                }
                continue;
            }
            Err(e) => return Err(server("list", &dir)(e)),
        };
        let paths: Vec<String> = children
            .iter()
            .map(|c| crate::zk::layout::child(&dir, c))
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
pub(super) async fn get_many(client: &Client, paths: &[String]) -> Result<Vec<Read>, ZkError> {
    let batches = paths
        .chunks(crate::zk::READS_PER_MULTI)
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
pub(super) type ClientState = (BTreeMap<String, OwnedNode>, BTreeSet<String>, Vec<String>);

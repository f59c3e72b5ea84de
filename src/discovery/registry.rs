//! Reads one service path's records from ZooKeeper and tells which part a watch event touched.
//! Read-only and the only discovery file that calls zookeeper-client's read API.

use std::collections::BTreeSet;

use futures::future::{BoxFuture, try_join_all};
use tokio::time::timeout;
use zookeeper_client::{Client, Error as ZkError, MultiReadResult};

use super::snapshot::Registry;
use super::{DiscoveryError, Ensemble};
use crate::model::record::{ENDPOINTS, EndpointRecord, ServiceRecord};
use crate::zk::security::Credentials;
use crate::zk::session::establish;

/// Reads per multi request: endpoint records are a few hundred bytes, so 128 of them stay far
/// below ZooKeeper's 1 MB packet limit even with generous metadata.
const READS_PER_MULTI: usize = 128;

/// Where a service's records live.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    service: String,
    endpoints: String,
}

/// The part of a service path an event touched.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Touched<'a> {
    /// The service record.
    Service,
    /// The endpoints folder itself (created or deleted): its children must be listed again.
    Folder,
    /// One endpoint record.
    Endpoint(&'a str),
    /// Something else below the path, which discovery does not read.
    Other,
}

impl Layout {
    /// Checks the path the way ZooKeeper will, so a typo fails here with a clear message.
    pub(crate) fn new(path: &str) -> Result<Layout, DiscoveryError> {
        let invalid = |reason| DiscoveryError::InvalidPath {
            path: path.to_string(),
            reason,
        };
        if !path.starts_with('/') {
            return Err(invalid("it must start with /"));
        }
        if path == "/" {
            return Err(invalid("the root cannot be a service path"));
        }
        if path.ends_with('/') {
            return Err(invalid("it must not end with /"));
        }
        if path[1..]
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        {
            return Err(invalid("it has an empty, . or .. segment"));
        }
        Ok(Layout::at(path))
    }

    /// A path ZooKeeper itself handed out, hence valid.
    fn at(path: &str) -> Layout {
        Layout {
            service: path.to_string(),
            endpoints: format!("{path}/{ENDPOINTS}"),
        }
    }

    /// The service path.
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    fn endpoint(&self, name: &str) -> String {
        format!("{}/{name}", self.endpoints)
    }

    /// Which record an event on `path` concerns.
    pub(crate) fn touched<'a>(&self, path: &'a str) -> Touched<'a> {
        if path == self.service {
            return Touched::Service;
        }
        match path.strip_prefix(self.endpoints.as_str()) {
            Some("") => Touched::Folder,
            Some(rest) => match rest.strip_prefix('/') {
                Some(name) if !name.is_empty() && !name.contains('/') => Touched::Endpoint(name),
                _ => Touched::Other,
            },
            None => Touched::Other,
        }
    }
}

/// Reads the service record and every endpoint. Children are read in pipelined multi requests,
/// so a thousand endpoints cost a handful of round trips, not a thousand.
pub(crate) async fn read_all(client: &Client, layout: &Layout) -> Result<Registry, ZkError> {
    let mut head = client.new_multi_reader();
    head.add_get_data(&layout.service)?;
    head.add_get_children(&layout.endpoints)?;
    let mut results = head.commit().await?.into_iter();
    let service = match results.next() {
        Some(result) => parse_service(layout, result)?,
        None => None,
    };
    let children = match results.next() {
        Some(MultiReadResult::Children { children }) => children,
        Some(MultiReadResult::Error {
            err: ZkError::NoNode,
        })
        | None => Vec::new(),
        Some(MultiReadResult::Error { err }) => return Err(err),
        Some(other) => return Err(unexpected(&other)),
    };
    let mut registry = Registry {
        service,
        ..Registry::default()
    };
    for (name, record) in read_endpoints(client, layout, children).await? {
        if let Some(record) = record {
            registry.endpoints.insert(name, record);
        }
    }
    Ok(registry)
}

/// Re-reads only what events named: the service record if `service`, and the endpoints in
/// `names`. An endpoint read as `None` is gone (or unreadable) and must be dropped.
pub(crate) async fn read_changed(
    client: &Client,
    layout: &Layout,
    service: bool,
    names: BTreeSet<String>,
) -> Result<
    (
        Option<Option<ServiceRecord>>,
        Vec<(String, Option<EndpointRecord>)>,
    ),
    ZkError,
> {
    let service = if service {
        match client.get_data(&layout.service).await {
            Ok((data, _)) => Some(decode_service(layout, &data)),
            Err(ZkError::NoNode) => Some(None),
            Err(err) => return Err(err),
        }
    } else {
        None
    };
    let endpoints = read_endpoints(client, layout, names.into_iter().collect()).await?;
    Ok((service, endpoints))
}

async fn read_endpoints(
    client: &Client,
    layout: &Layout,
    names: Vec<String>,
) -> Result<Vec<(String, Option<EndpointRecord>)>, ZkError> {
    let chunks = names.chunks(READS_PER_MULTI).map(|chunk| async move {
        let mut reader = client.new_multi_reader();
        for name in chunk {
            reader.add_get_data(&layout.endpoint(name))?;
        }
        let results = reader.commit().await?;
        let mut out = Vec::with_capacity(chunk.len());
        for (name, result) in chunk.iter().zip(results) {
            let record = match result {
                MultiReadResult::Data { data, .. } => decode_endpoint(layout, name, &data),
                MultiReadResult::Error {
                    err: ZkError::NoNode,
                } => None,
                MultiReadResult::Error { err } => return Err(err),
                other => return Err(unexpected(&other)),
            };
            out.push((name.clone(), record));
        }
        Ok(out)
    });
    Ok(try_join_all(chunks).await?.into_iter().flatten().collect())
}

/// The service record, `None` when the node is missing or does not parse.
fn parse_service(
    layout: &Layout,
    result: MultiReadResult,
) -> Result<Option<ServiceRecord>, ZkError> {
    match result {
        MultiReadResult::Data { data, .. } => Ok(decode_service(layout, &data)),
        MultiReadResult::Error {
            err: ZkError::NoNode,
        } => Ok(None),
        MultiReadResult::Error { err } => Err(err),
        other => Err(unexpected(&other)),
    }
}

/// A record that does not parse is left out with a warning rather than failing the whole read:
/// one bad node must not blind a client to all the good ones.
fn decode_service(layout: &Layout, data: &[u8]) -> Option<ServiceRecord> {
    serde_json::from_slice(data)
        .inspect_err(|err| tracing::warn!(path = layout.service(), %err, "service record does not parse; ignored"))
        .ok()
}

fn decode_endpoint(layout: &Layout, name: &str, data: &[u8]) -> Option<EndpointRecord> {
    serde_json::from_slice(data)
        .inspect_err(|err| tracing::warn!(path = %layout.endpoint(name), %err, "endpoint record does not parse; ignored"))
        .ok()
}

/// One node of what is registered under a path.
#[derive(Debug)]
pub enum Node {
    /// A service path: its record and endpoints (nothing below it is browsed further).
    Service {
        /// The last segment of its path.
        name: String,
        /// What a client reads there.
        registry: Registry,
    },
    /// Anything else: a folder, browsed into.
    Folder {
        /// The last segment of its path (`/` for the root).
        name: String,
        /// What is below it, sorted by name.
        children: Vec<Node>,
    },
}

/// Reads everything registered under `path` (e.g. `/podkeeper`) in one short session: each
/// service path as a client would read it, every other node as a folder.
pub async fn browse(ensemble: &Ensemble, path: &str) -> Result<Node, DiscoveryError> {
    let client = connect(ensemble).await?;
    walk(&client, path)
        .await
        .map_err(|source| DiscoveryError::ZooKeeper {
            connect: ensemble.connect.clone(),
            source,
        })
}

/// Walks the tree under `path`, reading each service path the way a client would.
fn walk<'a>(client: &'a Client, path: &'a str) -> BoxFuture<'a, Result<Node, ZkError>> {
    Box::pin(async move {
        let name = if path == "/" {
            "/"
        } else {
            path.rsplit('/').next().unwrap_or(path)
        }
        .to_string();
        let (data, _) = client.get_data(path).await?;
        // Most nodes are plain folders: a record that does not parse simply is not a service.
        if serde_json::from_slice::<ServiceRecord>(&data).is_ok() {
            return Ok(Node::Service {
                name,
                registry: read_all(client, &Layout::at(path)).await?,
            });
        }
        let mut names = match client.list_children(path).await {
            Ok(names) => names,
            Err(ZkError::NoNode) => Vec::new(),
            Err(err) => return Err(err),
        };
        names.sort();
        let mut children = Vec::with_capacity(names.len());
        for child in names {
            let child_path = if path == "/" {
                format!("/{child}")
            } else {
                format!("{path}/{child}")
            };
            match walk(client, &child_path).await {
                Ok(node) => children.push(node),
                // Deleted between the listing and the read: nothing to show.
                Err(ZkError::NoNode) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(Node::Folder { name, children })
    })
}

/// A session on `ensemble`, below its chroot; gives up after twice the session timeout.
pub(crate) async fn connect(ensemble: &Ensemble) -> Result<Client, DiscoveryError> {
    let connect = &ensemble.connect;
    let deadline = ensemble.session_timeout * 2;
    let creds = match ensemble.security.is_empty() {
        true => None,
        false => Some(Credentials::load(ensemble.security.clone())?),
    };
    let session = establish(connect, ensemble.session_timeout, creds.as_deref());
    match timeout(deadline, session).await {
        Ok(Ok(client)) => match &ensemble.chroot {
            None => Ok(client),
            Some(root) => client
                .chroot(root.as_str())
                .map_err(|_| DiscoveryError::InvalidPath {
                    path: root.clone(),
                    reason: "not a valid chroot",
                }),
        },
        Ok(Err(reason)) => Err(DiscoveryError::Connect {
            connect: connect.to_string(),
            reason,
        }),
        Err(_) => Err(DiscoveryError::Timeout {
            connect: connect.to_string(),
            after: deadline,
        }),
    }
}

fn unexpected(result: &MultiReadResult) -> ZkError {
    ZkError::UnexpectedError(format!("unexpected multi read result {result:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        assert!(Layout::new("/podkeeper/shop/web").is_ok());
        for bad in ["podkeeper", "/", "/a/", "/a//b", "/a/../b", ""] {
            assert!(Layout::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn events_are_classified() {
        let layout = Layout::new("/pk/web").unwrap();
        assert_eq!(layout.touched("/pk/web"), Touched::Service);
        assert_eq!(layout.touched("/pk/web/endpoints"), Touched::Folder);
        assert_eq!(
            layout.touched("/pk/web/endpoints/web-1"),
            Touched::Endpoint("web-1")
        );
        assert_eq!(layout.touched("/pk/web/endpoints/web-1/x"), Touched::Other);
        assert_eq!(layout.touched("/pk/web/endpointsx"), Touched::Other);
        assert_eq!(layout.touched("/pk/web/other"), Touched::Other);
        assert_eq!(layout.touched("/pk/webx"), Touched::Other);
    }
}

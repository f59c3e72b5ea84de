//! Reads one service path's records (through `zk::reader`) and tells which part a watch event
//! touched. Read-only; decodes the records, never talks to zookeeper-client itself.

use std::collections::BTreeSet;

use futures::future::BoxFuture;

use super::ClientFormat;
use super::snapshot::Registry;
use super::{DiscoveryError, Ensemble};
use crate::model::record::{ENDPOINTS, EndpointRecord, EndpointStatus, ServiceRecord};
use crate::zk::format::publish::Discovered;
use crate::zk::format::registry::discover_as;
use crate::zk::reader::{OpenError, ReadError, ReadSession};

/// Where a service's records live.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    service: String,
    endpoints: String,
    /// Another client's folder: every child is an endpoint, and there is no service record.
    format: Option<ClientFormat>,
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
            format: None,
        }
    }

    /// The same path read as another client's folder.
    pub(crate) fn with_format(mut self, format: Option<ClientFormat>) -> Layout {
        if format.is_some() {
            self.endpoints = self.service.clone();
        }
        self.format = format;
        self
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
        if self.format.is_some() {
            // Few nodes, and a ServerSet vector re-weighs every member: read the folder again.
            return match path.starts_with(self.service.as_str()) {
                true => Touched::Folder,
                false => Touched::Other,
            };
        }
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
pub(crate) async fn read_all(zk: &ReadSession, layout: &Layout) -> Result<Registry, ReadError> {
    if let Some(format) = layout.format {
        return read_folder(zk, layout, format).await;
    }
    let (service, children) = zk
        .node_and_children(&layout.service, &layout.endpoints)
        .await?;
    let mut registry = Registry {
        service: service.and_then(|data| decode_service(layout, &data)),
        ..Registry::default()
    };
    for (name, record) in read_endpoints(zk, layout, children.unwrap_or_default()).await? {
        if let Some(record) = record {
            registry.endpoints.insert(name, record);
        }
    }
    Ok(registry)
}

/// Reads another client's folder: every child decoded by its format, whoever wrote it.
async fn read_folder(
    zk: &ReadSession,
    layout: &Layout,
    format: ClientFormat,
) -> Result<Registry, ReadError> {
    let names = zk.children(&layout.service).await?.unwrap_or_default();
    let paths: Vec<String> = names.iter().map(|n| layout.endpoint(n)).collect();
    let data = zk.get_many(&paths).await?;
    let children = names
        .iter()
        .zip(&data)
        .filter_map(|(n, d)| d.as_deref().map(|d| (n.as_str(), d)));
    let endpoints = discover_as(format, children)
        .into_iter()
        .map(|d| (d.name.clone(), record_of(d)))
        .collect();
    Ok(Registry {
        service: None,
        endpoints,
    })
}

/// Weights of other formats are relative numbers of their own (Dubbo's 100, a ServerSet
/// share): scaled into podkeeper's integer weights, never to 0 for an endpoint in service.
const FORMAT_WEIGHT_SCALE: f64 = 1000.0;

/// An endpoint of another format as the snapshot holds endpoints.
fn record_of(d: Discovered) -> EndpointRecord {
    let weight = (d.weight * FORMAT_WEIGHT_SCALE)
        .round()
        .clamp(0.0, u32::MAX as f64) as u32;
    EndpointRecord {
        host: d.host,
        port: d.port,
        ports: Default::default(),
        weight: if d.draining { 0 } else { weight.max(1) },
        declared_weight: None,
        load: None,
        group: String::new(),
        zone: d.zone,
        node: None,
        pod: d.name,
        namespace: String::new(),
        metadata: d.metadata.into_iter().collect(),
        status: if d.draining {
            EndpointStatus::Draining
        } else {
            EndpointStatus::Up
        },
        ready_since_ms: 0,
    }
}

/// What a partial read found: the service record if it was asked for (`Some(None)`: gone or
/// unreadable), and each named endpoint (`None`: gone or unreadable).
pub(crate) type Changed = (
    Option<Option<ServiceRecord>>,
    Vec<(String, Option<EndpointRecord>)>,
);

/// Re-reads only what events named: the service record if `service`, and the endpoints in
/// `names`. An endpoint read as `None` is gone (or unreadable) and must be dropped.
pub(crate) async fn read_changed(
    zk: &ReadSession,
    layout: &Layout,
    service: bool,
    names: BTreeSet<String>,
) -> Result<Changed, ReadError> {
    let service = match service {
        true => Some(
            zk.get(&layout.service)
                .await?
                .and_then(|data| decode_service(layout, &data)),
        ),
        false => None,
    };
    let endpoints = read_endpoints(zk, layout, names.into_iter().collect()).await?;
    Ok((service, endpoints))
}

async fn read_endpoints(
    zk: &ReadSession,
    layout: &Layout,
    names: Vec<String>,
) -> Result<Vec<(String, Option<EndpointRecord>)>, ReadError> {
    let paths: Vec<String> = names.iter().map(|n| layout.endpoint(n)).collect();
    let data = zk.get_many(&paths).await?;
    Ok(names
        .into_iter()
        .zip(data)
        .map(|(name, d)| {
            let record = d.and_then(|d| decode_endpoint(layout, &name, &d));
            (name, record)
        })
        .collect())
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
    let zk = connect(ensemble).await?;
    let failed = |source| DiscoveryError::ZooKeeper {
        connect: ensemble.connect.clone(),
        source,
    };
    match walk(&zk, path).await {
        Ok(Some(node)) => Ok(node),
        Ok(None) => Err(failed(ReadError::Failed(format!(
            "there is no node {path}"
        )))),
        Err(e) => Err(failed(e)),
    }
}

fn last_segment(path: &str) -> &str {
    if path == "/" {
        "/"
    } else {
        path.rsplit('/').next().unwrap_or(path)
    }
}

/// Walks the tree under `path`, reading each service path the way a client would; `None` when
/// the node went away meanwhile.
fn walk<'a>(zk: &'a ReadSession, path: &'a str) -> BoxFuture<'a, Result<Option<Node>, ReadError>> {
    Box::pin(async move {
        let name = last_segment(path).to_string();
        let Some(data) = zk.get(path).await? else {
            return Ok(None);
        };
        // Most nodes are plain folders: a record that does not parse simply is not a service.
        if serde_json::from_slice::<ServiceRecord>(&data).is_ok() {
            return Ok(Some(Node::Service {
                name,
                registry: read_all(zk, &Layout::at(path)).await?,
            }));
        }
        let mut names = zk.children(path).await?.unwrap_or_default();
        names.sort();
        let mut children = Vec::with_capacity(names.len());
        for child in names {
            let child_path = if path == "/" {
                format!("/{child}")
            } else {
                format!("{path}/{child}")
            };
            children.extend(walk(zk, &child_path).await?);
        }
        Ok(Some(Node::Folder { name, children }))
    })
}

/// A read-only session on `ensemble`, below its chroot; gives up after twice the session timeout.
pub(crate) async fn connect(ensemble: &Ensemble) -> Result<ReadSession, DiscoveryError> {
    let connect = &ensemble.connect;
    let opened = ReadSession::open(
        connect,
        ensemble.chroot.as_deref(),
        ensemble.session_timeout,
        &ensemble.security,
    )
    .await;
    opened.map_err(|e| match e {
        OpenError::Credentials(e) => DiscoveryError::Credentials(e),
        OpenError::Refused(reason) => DiscoveryError::Connect {
            connect: connect.to_string(),
            reason,
        },
        OpenError::Timeout(after) => DiscoveryError::Timeout {
            connect: connect.to_string(),
            after,
        },
        OpenError::Chroot(root) => DiscoveryError::InvalidPath {
            path: root,
            reason: "not a valid chroot",
        },
    })
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

    #[test]
    fn endpoints_are_read_with_and_without_load_figures() {
        let layout = Layout::new("/pk/web").unwrap();
        let old = r#"{"host":"10.0.0.1","port":8080,"weight":100,"group":"default","pod":"web-1","namespace":"shop","status":"UP"}"#;
        let rec = decode_endpoint(&layout, "web-1", old.as_bytes()).expect("an old record");
        assert_eq!(
            (rec.weight, rec.declared_weight, rec.load),
            (100, None, None)
        );
        let weighed = r#"{"host":"10.0.0.2","port":8080,"weight":70,"declaredWeight":100,"load":{"cpuUtilization":0.9,"memUtilization":0.215,"namedMetrics":{"requests_in_flight":90}},"group":"default","pod":"web-2","namespace":"shop","status":"UP","future":1}"#;
        let rec = decode_endpoint(&layout, "web-2", weighed.as_bytes()).expect("a weighed record");
        let load = rec.load.as_deref().expect("its figures");
        assert_eq!(load.cpu_utilization.map(|m| m.get()), Some(0.9));
        assert_eq!(load.mem_utilization.map(|m| m.get()), Some(0.215));
        assert_eq!(load.named_metrics["requests_in_flight"].get(), 90.0);
        assert_eq!((rec.weight, rec.declared_weight), (70, Some(100)));
    }
}

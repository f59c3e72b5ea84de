//! A resource's client-format registries (Dubbo, Curator, ServerSet) as the writer needs them:
//! the folders their nodes live in, which nodes there are the resource's own, and the nodes
//! its endpoints call for. Pure: the formats' encoders, dispatched.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::format::publish::{FormatError, OwnerTag, Publish, PublishedEndpoint};
use super::format::registry::{Kind, is_ours_as};
use super::layout::{PathError, allowed};
use super::writer::ClientNodes;
use crate::model::record::PublishedRecord;

/// One client-format registry of a resource (the formats' own dispatch).
pub use super::format::registry::Registry as ClientRegistry;

/// Why a client registry cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Its options cannot produce nodes the client reads.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// One of its folders is outside the operator's allowed prefixes.
    #[error(transparent)]
    Path(#[from] PathError),
}

/// The client registries of one resource, checked against the allowed prefixes.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRegistries {
    service: String,
    owner: OwnerTag,
    list: Vec<(ClientRegistry, Vec<String>)>,
}

/// The nodes the endpoints call for, and how many endpoints each registry carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredNodes {
    /// Every registry's nodes by path.
    pub nodes: BTreeMap<String, Arc<[u8]>>,
    /// Per registry (in order): endpoints published, or why none are.
    pub per_registry: Vec<Result<u32, FormatError>>,
    /// The folders of the registries that refused: what they hold stays as it is.
    pub held: Vec<String>,
}

impl ClientRegistries {
    /// Checks each registry's options (by laying out one sample endpoint) and folders.
    pub fn compile(
        registries: Vec<ClientRegistry>,
        service: &str,
        owner: OwnerTag,
        prefixes: &[String],
    ) -> Result<ClientRegistries, RegistryError> {
        let mut list = Vec::with_capacity(registries.len());
        for registry in registries {
            let dirs = registry.dirs(service);
            for dir in &dirs {
                allowed(dir, prefixes)?;
            }
            let sample = Publish {
                service_name: service.to_string(),
                owner: owner.clone(),
                endpoints: Vec::new(),
            };
            registry.nodes(&sample)?;
            list.push((registry, dirs));
        }
        Ok(ClientRegistries {
            service: service.to_string(),
            owner,
            list,
        })
    }

    /// No client registries?
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The registries with their folders.
    pub fn iter(&self) -> impl Iterator<Item = &(ClientRegistry, Vec<String>)> {
        self.list.iter()
    }

    /// The nodes of every registry for `endpoints`. A registry whose encoder refuses some
    /// endpoints publishes the others; one that can encode none publishes nothing new and
    /// removes nothing (its folders are `held`). Either way its error is reported, and the
    /// other registries go on.
    pub fn desired<'a>(
        &self,
        endpoints: impl IntoIterator<Item = &'a Arc<PublishedRecord>>,
    ) -> DesiredNodes {
        let publish = Publish {
            service_name: self.service.clone(),
            owner: self.owner.clone(),
            endpoints: endpoints
                .into_iter()
                .map(|record| PublishedEndpoint {
                    ready_since_ms: record.ready_since_ms,
                    record: record.clone(),
                })
                .collect(),
        };
        let mut out = DesiredNodes::default();
        for (registry, dirs) in &self.list {
            // The error stays on the status (and keeps readiness gates shut) even when the
            // endpoints that can be encoded are published.
            let (nodes, result) = match registry.nodes(&publish) {
                Ok(nodes) => (Some(nodes), Ok(publish.endpoints.len() as u32)),
                Err(err) => (publishable(registry, &publish), Err(err)),
            };
            match nodes {
                Some(nodes) => {
                    for n in nodes {
                        out.nodes.insert(n.path, Arc::from(n.data));
                    }
                }
                None => out.held.extend(dirs.iter().cloned()),
            }
            out.per_registry.push(result);
        }
        out
    }
}

/// The nodes of the endpoints `registry` can encode, when only some of them fail (a pod whose
/// label or zone its syntax cannot carry): the others are published and the failing ones left
/// out, so one bad pod never freezes the list (a rollout's dead pods included). `None` when
/// none can be encoded, or when the failure is not an endpoint's (then the folders are held).
fn publishable(
    registry: &ClientRegistry,
    publish: &Publish,
) -> Option<Vec<super::format::publish::Node>> {
    let alone = |ep: &PublishedEndpoint| {
        let one = Publish {
            service_name: publish.service_name.clone(),
            owner: publish.owner.clone(),
            endpoints: vec![ep.clone()],
        };
        registry.nodes(&one).is_ok()
    };
    let good: Vec<PublishedEndpoint> = publish
        .endpoints
        .iter()
        .filter(|e| alone(e))
        .cloned()
        .collect();
    if good.is_empty() || good.len() == publish.endpoints.len() {
        return None;
    }
    let rest = Publish {
        service_name: publish.service_name.clone(),
        owner: publish.owner.clone(),
        endpoints: good,
    };
    registry.nodes(&rest).ok()
}

impl ClientNodes for ClientRegistries {
    fn dirs(&self) -> Vec<String> {
        self.list
            .iter()
            .flat_map(|(_, d)| d.iter().cloned())
            .collect()
    }

    fn owns(&self, path: &str, data: &[u8]) -> bool {
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
        self.list.iter().any(|(registry, dirs)| {
            dirs.iter().any(|d| d == parent) && registry.is_ours(path, data, &self.owner)
        })
    }
}

/// Folders a resource wrote into before, each with its format: enough to tell its own nodes
/// there from everyone else's, so an edit or a deletion removes exactly those.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedNodes {
    folders: Vec<(Kind, String)>,
    owner: OwnerTag,
}

impl PlacedNodes {
    /// The folders (`(format, path)`) and whose nodes are removed from them.
    pub fn new(folders: Vec<(Kind, String)>, owner: OwnerTag) -> PlacedNodes {
        PlacedNodes { folders, owner }
    }
}

impl ClientNodes for PlacedNodes {
    fn dirs(&self) -> Vec<String> {
        self.folders.iter().map(|(_, d)| d.clone()).collect()
    }

    fn owns(&self, path: &str, data: &[u8]) -> bool {
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
        self.folders
            .iter()
            .any(|(kind, d)| d == parent && is_ours_as(*kind, path, data, &self.owner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::EndpointStatus;
    use crate::zk::format::{curator, dubbo};

    #[test]
    fn every_node_carries_the_record_s_ready_time() {
        let registries = ClientRegistries::compile(
            vec![
                ClientRegistry::Dubbo(dubbo::Options::new(&["a.B"])),
                ClientRegistry::Curator(curator::Options::default()),
            ],
            "web",
            OwnerTag::new("c", "shop", "web"),
            &["/".to_string()],
        )
        .unwrap();
        let record = Arc::new(PublishedRecord {
            host: "10.0.0.1".into(),
            port: 80,
            ports: Default::default(),
            weight: 7,
            declared_weight: None,
            load: None,
            group: "default".into(),
            zone: None,
            node: None,
            pod: "web-1".into(),
            namespace: "shop".into(),
            metadata: Default::default(),
            status: EndpointStatus::Up,
            ready_since_ms: 1_767_225_600_123,
        });
        let out = registries.desired([&record]);
        assert_eq!(out.per_registry, vec![Ok(1), Ok(1)]);
        let dubbo = out.nodes.keys().find(|p| p.starts_with("/dubbo/")).unwrap();
        assert!(dubbo.contains("timestamp%3D1767225600123%26"), "{dubbo}");
        let (_, curator) = out
            .nodes
            .iter()
            .find(|(p, _)| p.starts_with("/services/"))
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(curator).unwrap();
        assert_eq!(json["registrationTimeUTC"], 1_767_225_600_123_i64);
    }
}

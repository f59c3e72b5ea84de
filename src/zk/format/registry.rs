//! One registry format chosen at run time: dispatches to the Dubbo, Curator and ServerSet
//! modules so the writer and the discovery client handle them alike. Pure; no I/O.

use super::publish::{Discovered, FormatError, Node, OwnerTag, Publish};
use super::{curator, dubbo, serverset};

/// A client format without its options: enough to read and decode a folder of its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Dubbo interface-level providers (`/<root>/<interface>/providers`).
    Dubbo,
    /// Curator x-discovery / Spring Cloud ZooKeeper instances (`<base>/<service>`).
    Curator,
    /// ServerSet members and weight vectors.
    ServerSet,
}

/// Every endpoint in one folder's children (`(name, data)`), whoever wrote them; unreadable
/// children are skipped. ServerSet members get their vector weights applied.
pub fn discover_as<'a>(
    kind: Kind,
    children: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Vec<Discovered> {
    match kind {
        Kind::Dubbo => children
            .into_iter()
            .filter_map(|(n, d)| dubbo::decode(n, d))
            .collect(),
        Kind::Curator => children
            .into_iter()
            .filter_map(|(n, d)| curator::decode(n, d))
            .collect(),
        Kind::ServerSet => {
            let mut members = Vec::new();
            let mut vectors = Vec::new();
            for (n, d) in children {
                if let Some(m) = serverset::decode(n, d) {
                    members.push(m);
                } else if let Some(v) = serverset::decode_vector(n, d) {
                    vectors.push(v);
                }
            }
            serverset::weigh(&mut members, &vectors);
            members
        }
    }
}

/// Does this node of a `kind` folder carry `owner`? The options play no part: a folder's
/// format and the owner tag are enough, even for a registry the resource no longer declares.
pub fn is_ours_as(kind: Kind, path_or_name: &str, data: &[u8], owner: &OwnerTag) -> bool {
    match kind {
        Kind::Dubbo => dubbo::is_ours(path_or_name, data, owner),
        Kind::Curator => curator::is_ours(path_or_name, data, owner),
        Kind::ServerSet => serverset::is_ours(path_or_name, data, owner),
    }
}

/// A client format and its options (one entry of the resource's registries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registry {
    /// Dubbo interface-level providers.
    Dubbo(dubbo::Options),
    /// Curator x-discovery / Spring Cloud ZooKeeper instances.
    Curator(curator::Options),
    /// ServerSet members and weight vector.
    ServerSet(serverset::Options),
}

impl Registry {
    /// Name for logs, metrics and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Registry::Dubbo(_) => "dubbo",
            Registry::Curator(_) => "curator",
            Registry::ServerSet(_) => "serverset",
        }
    }

    /// Parents the format's nodes live in (the writer creates them, and lists them to diff).
    pub fn dirs(&self, service_name: &str) -> Vec<String> {
        match self {
            Registry::Dubbo(o) => dubbo::dirs(o, service_name),
            Registry::Curator(o) => curator::dirs(o, service_name),
            Registry::ServerSet(o) => serverset::dirs(o, service_name),
        }
    }

    /// Every node the resource should have, in path order.
    pub fn nodes(&self, publish: &Publish) -> Result<Vec<Node>, FormatError> {
        match self {
            Registry::Dubbo(o) => dubbo::nodes(o, publish),
            Registry::Curator(o) => curator::nodes(o, publish),
            Registry::ServerSet(o) => serverset::nodes(o, publish),
        }
    }

    /// May the writer change or delete this existing node? Only when it carries `owner`.
    pub fn is_ours(&self, path_or_name: &str, data: &[u8], owner: &OwnerTag) -> bool {
        is_ours_as(self.kind(), path_or_name, data, owner)
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Registry::Dubbo(_) => Kind::Dubbo,
            Registry::Curator(_) => Kind::Curator,
            Registry::ServerSet(_) => Kind::ServerSet,
        }
    }

    /// Every endpoint in one directory's children (`(name, data)`), ours or not; see
    /// [`discover_as`].
    pub fn discover<'a>(
        &self,
        children: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Vec<Discovered> {
        discover_as(self.kind(), children)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zk::format::fixture;

    #[test]
    fn every_format_reads_back_its_own_nodes_with_the_same_shares() {
        let publish = fixture::publish();
        for r in [
            Registry::Dubbo(dubbo::Options::new(&["org.example.DemoService"])),
            Registry::Curator(curator::Options::default()),
            Registry::ServerSet(serverset::Options::default()),
        ] {
            let nodes = r.nodes(&publish).unwrap();
            let dirs = r.dirs("web");
            assert!(
                nodes
                    .iter()
                    .all(|n| dirs.iter().any(|d| n.path.starts_with(d)))
            );
            assert!(
                nodes
                    .iter()
                    .all(|n| r.is_ours(&n.path, &n.data, &publish.owner))
            );
            let found = r.discover(nodes.iter().map(|n| (n.path.as_str(), n.data.as_slice())));
            assert_eq!(found.len(), 4, "{}", r.name());
            let total: f64 = found.iter().map(|d| d.weight).sum();
            let stable: f64 = found
                .iter()
                .filter(|d| d.host != "10.1.0.20") // the canary
                .map(|d| d.weight)
                .sum();
            assert!(
                (stable / total - 0.9).abs() < 1e-9,
                "{}: {stable}/{total}",
                r.name()
            );
            let draining: Vec<&str> = found
                .iter()
                .filter(|d| d.draining)
                .map(|d| d.host.as_str())
                .collect();
            assert_eq!(draining, vec!["10.1.0.12"], "{}", r.name());
        }
    }
}

//! What the client formats (Dubbo, Curator, ServerSet) are given to publish and what they read
//! back. Pure data and small pure helpers; no ZooKeeper I/O here or in the format modules.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::record::{Owner, PublishedRecord};

/// Metadata key (Curator payload metadata, ServerSet member metadata and vector) and URL
/// parameter (Dubbo, as `podkeeper.owner`) that marks a node as written by podkeeper for one
/// resource.
pub const OWNER_KEY: &str = "podkeeper.io/owner";

/// The resource a node belongs to: cluster id, namespace and name. Its string form
/// `<clusterId>/<namespace>/<name>` is what the nodes carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnerTag {
    /// The operator's `--cluster-id`.
    pub cluster_id: String,
    /// The resource's namespace.
    pub namespace: String,
    /// The resource's name.
    pub name: String,
}

impl OwnerTag {
    /// A tag for `cluster_id`, `namespace`, `name`.
    pub fn new(cluster_id: &str, namespace: &str, name: &str) -> OwnerTag {
        OwnerTag {
            cluster_id: cluster_id.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The tag of a native service record's owner (the UID is left out: a recreated resource
    /// takes its nodes over, as the native format does).
    pub fn of(owner: &Owner) -> OwnerTag {
        OwnerTag::new(&owner.cluster_id, &owner.namespace, &owner.name)
    }
}

impl std::fmt::Display for OwnerTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.cluster_id, self.namespace, self.name)
    }
}

/// One endpoint to publish, with the time its pod became ready (Dubbo's warm-up and Curator's
/// `registrationTimeUTC` start there).
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedEndpoint {
    /// The endpoint as the solver and the native format see it.
    pub record: Arc<PublishedRecord>,
    /// Milliseconds since the Unix epoch when the pod turned ready.
    pub ready_since_ms: i64,
}

/// Everything a format needs to lay out one resource's nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    /// The registry name (`spec.serviceName`).
    pub service_name: String,
    /// Who the nodes belong to.
    pub owner: OwnerTag,
    /// Ready and draining endpoints.
    pub endpoints: Vec<PublishedEndpoint>,
}

/// A znode to create (or keep): absolute path and bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Node {
    /// Absolute path.
    pub path: String,
    /// Data.
    pub data: Vec<u8>,
}

/// An endpoint read from a registry node, ours or not.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovered {
    /// The node's name (Dubbo: the encoded URL; Curator: the id; ServerSet: `member_…`).
    pub name: String,
    /// Host or IP.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Relative weight in the format's own unit (see docs/formats.md); 0 while draining.
    pub weight: f64,
    /// The endpoint takes no new requests (Dubbo weight 0 or `enabled=false`; Curator
    /// `enabled: false` or `instance_status` not UP; ServerSet status not ALIVE or weight 0).
    pub draining: bool,
    /// The zone, when the node carries one.
    pub zone: Option<String>,
    /// ServerSet shard, when present.
    pub shard: Option<i32>,
    /// The node's owner tag, when podkeeper wrote it.
    pub owner: Option<String>,
    /// Everything else the node carries (URL parameters, payload metadata, member metadata).
    pub metadata: BTreeMap<String, String>,
}

/// Why a format refuses to lay out nodes: the options or an endpoint would produce bytes the
/// client library would misread.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// An option is missing or malformed.
    #[error("{format} option {field}: {reason}")]
    Option {
        /// Format name.
        format: &'static str,
        /// The option (camelCase, as in the CRD).
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A value would break the format's syntax (for example `&` inside a Dubbo URL parameter).
    #[error("{format}: {what} {value:?} cannot be written: {reason}")]
    Value {
        /// Format name.
        format: &'static str,
        /// Which value (`metadata key`, `owner tag`, …).
        what: String,
        /// The value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// FNV-1a, 64 bits: a stable hash for node names derived from their content (the same input
/// gives the same name in every process and release, unlike `std`'s hasher).
pub fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // A separator, so ("ab","c") and ("a","bc") differ.
            h ^= 0xff;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Joins a parent path and a child name.
pub fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// The last segment of a path (or the name itself).
pub fn base_name(path_or_name: &str) -> &str {
    path_or_name.rsplit('/').next().unwrap_or(path_or_name)
}

/// Checks an absolute base path option.
pub fn check_base_path(
    format: &'static str,
    field: &'static str,
    path: &str,
) -> Result<(), FormatError> {
    crate::zk::layout::validate(path).map_err(|e| FormatError::Option {
        format,
        field,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_the_published_algorithm_and_separates_parts() {
        // Test vectors of FNV-1a 64.
        assert_eq!(fnv1a64(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(&[b"foobar"]), 0x8594_4171_f739_67e8);
        assert_ne!(fnv1a64(&[b"ab", b"c"]), fnv1a64(&[b"a", b"bc"]));
    }

    #[test]
    fn owner_tag_and_paths() {
        let owner = Owner {
            cluster_id: "prod-eu".into(),
            namespace: "shop".into(),
            name: "web".into(),
            uid: "u-1".into(),
        };
        assert_eq!(OwnerTag::of(&owner).to_string(), "prod-eu/shop/web");
        assert_eq!(child_path("/", "a"), "/a");
        assert_eq!(child_path("/s/web", "a"), "/s/web/a");
        assert_eq!(base_name("/s/web/a"), "a");
        assert_eq!(base_name("a"), "a");
        assert!(check_base_path("x", "basePath", "/services").is_ok());
        assert!(check_base_path("x", "basePath", "services").is_err());
    }
}

//! The ServerSet layout (Finagle's `zk2` resolver, Aurora, Synapse): one `member_…` child per
//! endpoint and one `vector_…` child holding every member's weight. Pure; no I/O.
//!
//! Facts this follows (Finagle serverset2 sources): readers list the children matching
//! `member_` and `vector_`, read each child's data once and cache it by path, so a member or
//! vector is never updated in place: any change is a new name (delete plus create in one
//! `multi()`). A member counts when `status` is `ALIVE` and `serviceEndpoint` has a string host
//! and an integer port. A vector weight is used only when it is a JSON float (`2.0`; `2` is
//! ignored); a member's weight is the product of the weights of every descriptor that selects
//! it, 1.0 when none does.
//!
//! Layout decisions: one vector per resource (split into several of at most 96 KiB past about
//! 800 members, each member in exactly one), replaced as a whole (new name, old one deleted in
//! the same transaction), so a reader sees either the old or the new weights, never a mix
//! while the plan fits one transaction.
//! Members and vectors are two separate watches in Finagle, so for one update a reader may pair
//! new members with the old vector for a moment: a new member then weighs 1.0, which is why
//! weights are normalised to a mean of 1.0 per ready member (also the weight of a neighbour
//! without a vector). Draining keeps the member (ALIVE, unchanged) and puts weight 0.0 in the
//! vector: Finagle stops sending new requests at once, in-flight ones finish.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::publish::{
    Discovered, FormatError, Node, OWNER_KEY, OwnerTag, Publish, base_name, check_base_path,
    child_path, fnv1a64,
};
use crate::model::record::EndpointStatus;

const FORMAT: &str = "serverset";
/// Prefix of member children.
pub const MEMBER_PREFIX: &str = "member_";
/// Prefix of weight vector children.
pub const VECTOR_PREFIX: &str = "vector_";
/// Member metadata key of the zone.
pub const ZONE_KEY: &str = "zone";

/// How a resource is published as a ServerSet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    /// The ServerSet lives at `<basePath>/<serviceName>`; `/serversets` unless set.
    #[serde(default = "default_base_path")]
    #[schemars(length(max = 256))]
    pub base_path: String,
    /// Write `shard` from the pod name's trailing ordinal (`web-3` is shard 3), for StatefulSets.
    /// Off: no `shard` (Finagle reads that as unsharded).
    #[serde(default)]
    pub shard_from_ordinal: bool,
}

fn default_base_path() -> String {
    "/serversets".into()
}

impl Default for Options {
    fn default() -> Options {
        Options {
            base_path: default_base_path(),
            shard_from_ordinal: false,
        }
    }
}

impl Options {
    /// Checks the base path.
    pub fn validate(&self) -> Result<(), FormatError> {
        check_base_path(FORMAT, "basePath", &self.base_path)
    }
}

/// `<basePath>/<serviceName>`.
pub fn dirs(options: &Options, service_name: &str) -> Vec<String> {
    vec![child_path(&options.base_path, service_name)]
}

#[derive(Serialize)]
struct HostPort<'a> {
    host: &'a str,
    port: u16,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MemberJson<'a> {
    service_endpoint: HostPort<'a>,
    additional_endpoints: BTreeMap<&'a str, HostPort<'a>>,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    shard: Option<i32>,
    metadata: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct DescriptorJson {
    select: String,
    weight: f64,
    priority: i32,
}

#[derive(Serialize)]
struct VectorJson<'a> {
    vector: Vec<DescriptorJson>,
    #[serde(rename = "podkeeper.io/owner")]
    owner: &'a str,
}

/// Members (one per endpoint) and, when there is any endpoint, the weight vector (in as many
/// nodes as its size needs); in path order.
pub fn nodes(options: &Options, publish: &Publish) -> Result<Vec<Node>, FormatError> {
    options.validate()?;
    let dir = &dirs(options, &publish.service_name)[0];
    crate::zk::layout::validate(dir).map_err(|_| FormatError::Value {
        format: FORMAT,
        what: "service path".into(),
        value: dir.clone(),
        reason: "not a valid znode path",
    })?;
    let owner = publish.owner.to_string();
    let weights = weights(
        &publish
            .endpoints
            .iter()
            .map(|e| (e.record.weight, e.record.status == EndpointStatus::Up))
            .collect::<Vec<_>>(),
    );
    let mut out = Vec::with_capacity(publish.endpoints.len() + 1);
    let mut descriptors = Vec::with_capacity(publish.endpoints.len());
    for (ep, weight) in publish.endpoints.iter().zip(weights) {
        let rec = &ep.record;
        let mut metadata: BTreeMap<&str, &str> = rec
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Some(z) = &rec.zone {
            metadata.insert(ZONE_KEY, z);
        }
        metadata.insert(OWNER_KEY, &owner);
        let member = MemberJson {
            service_endpoint: HostPort {
                host: &rec.host,
                port: rec.port,
            },
            additional_endpoints: rec
                .ports
                .iter()
                .map(|(name, &port)| {
                    (
                        name.as_str(),
                        HostPort {
                            host: &rec.host,
                            port,
                        },
                    )
                })
                .collect(),
            status: "ALIVE",
            shard: options
                .shard_from_ordinal
                .then(|| ordinal(&rec.pod))
                .flatten(),
            metadata,
        };
        let data = serde_json::to_vec(&member).expect("member JSON serializes");
        let name = format!("{MEMBER_PREFIX}{}_{:016x}", rec.pod, fnv1a64(&[&data]));
        descriptors.push(DescriptorJson {
            select: format!("member={name}"),
            weight,
            priority: 1,
        });
        out.push(Node {
            path: child_path(dir, &name),
            data,
        });
    }
    descriptors.sort_by(|a, b| a.select.cmp(&b.select));
    for chunk in vector_chunks(descriptors) {
        let data = serde_json::to_vec(&VectorJson {
            vector: chunk,
            owner: &owner,
        })
        .expect("vector JSON serializes");
        let name = format!("{VECTOR_PREFIX}{:016x}", fnv1a64(&[&data]));
        out.push(Node {
            path: child_path(dir, &name),
            data,
        });
    }
    out.sort();
    Ok(out)
}

/// Descriptor bytes per vector node: far below a write's share of a transaction (256 KiB),
/// which one vector of about 2,000 members outgrew.
const VECTOR_MAX_BYTES: usize = 96 * 1024;

/// The descriptors split into vectors of at most [`VECTOR_MAX_BYTES`], in order. Each member
/// is selected in exactly one of them, and Finagle multiplies the weights of every descriptor
/// that selects a member, so the split weighs each member as one vector would.
fn vector_chunks(descriptors: Vec<DescriptorJson>) -> Vec<Vec<DescriptorJson>> {
    let mut chunks: Vec<Vec<DescriptorJson>> = Vec::new();
    let mut bytes = 0;
    for d in descriptors {
        // The select string and about 40 bytes of JSON around it and the weight.
        let size = d.select.len() + 48;
        match chunks.last_mut() {
            Some(chunk) if bytes + size <= VECTOR_MAX_BYTES => chunk.push(d),
            _ => {
                bytes = 0;
                chunks.push(vec![d]);
            }
        }
        bytes += size;
    }
    chunks
}

/// The ServerSet weight of each `(solver weight, up)`: ready weights scaled so their mean is
/// 1.0 (`w × n / Σw`, f64, ratios kept to within f64 rounding); draining or zero gives 0.0.
pub fn weights(solver: &[(u32, bool)]) -> Vec<f64> {
    let ready: Vec<u32> = solver
        .iter()
        .filter(|(w, up)| *up && *w > 0)
        .map(|(w, _)| *w)
        .collect();
    let sum: f64 = ready.iter().map(|&w| f64::from(w)).sum();
    let n = ready.len() as f64;
    solver
        .iter()
        .map(|&(w, up)| {
            if up && w > 0 {
                f64::from(w) * n / sum
            } else {
                0.0
            }
        })
        .collect()
}

/// The trailing `-<digits>` of a StatefulSet pod name.
fn ordinal(pod: &str) -> Option<i32> {
    let (_, tail) = pod.rsplit_once('-')?;
    if tail.is_empty() || !tail.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    tail.parse().ok()
}

/// Reads a member node (ours or not). Other children (vectors included: see
/// [`decode_vector`]), malformed JSON and members without a usable `serviceEndpoint` give
/// `None`. The weight is 1.0 until [`weigh`] applies the vectors.
pub fn decode(name: &str, data: &[u8]) -> Option<Discovered> {
    let name = base_name(name);
    if !name.starts_with(MEMBER_PREFIX) {
        return None;
    }
    let Value::Object(m) = serde_json::from_slice::<Value>(data).ok()? else {
        return None;
    };
    let ep = m.get("serviceEndpoint")?.as_object()?;
    let host = ep.get("host")?.as_str()?.to_string();
    let port = u16::try_from(ep.get("port")?.as_i64()?).ok()?;
    let alive = m.get("status").and_then(Value::as_str) == Some("ALIVE");
    let shard = m
        .get("shard")
        .and_then(Value::as_i64)
        .and_then(|s| i32::try_from(s).ok());
    let metadata: BTreeMap<String, String> = m
        .get("metadata")
        .and_then(Value::as_object)
        .map(|md| {
            md.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Some(Discovered {
        name: name.to_string(),
        host,
        port,
        weight: if alive { 1.0 } else { 0.0 },
        draining: !alive,
        zone: metadata.get(ZONE_KEY).cloned(),
        shard,
        owner: metadata.get(OWNER_KEY).cloned(),
        metadata,
    })
}

/// What a vector descriptor selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `member=<member node name>`.
    Member(String),
    /// `inet=<host>:<port>`.
    Inet(String, u16),
    /// `shard=<n>`.
    Shard(i32),
}

/// One descriptor of a weight vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    /// Which members it weighs.
    pub selector: Selector,
    /// Their weight factor (1.0 when the JSON value is not a float, as Finagle reads it).
    pub weight: f64,
    /// Priority (1 unless an integer is given).
    pub priority: i32,
}

/// A `vector_…` node.
#[derive(Debug, Clone, PartialEq)]
pub struct Vector {
    /// Node name.
    pub name: String,
    /// The owner tag, when podkeeper wrote it.
    pub owner: Option<String>,
    /// Descriptors with a selector Finagle understands.
    pub descriptors: Vec<Descriptor>,
}

/// Reads a `vector_…` node as Finagle does: descriptors with an unknown selector are skipped,
/// unparsable JSON gives an empty vector (which weighs nothing), other names give `None`.
pub fn decode_vector(name: &str, data: &[u8]) -> Option<Vector> {
    let name = base_name(name);
    if !name.starts_with(VECTOR_PREFIX) {
        return None;
    }
    let doc = serde_json::from_slice::<Value>(data).unwrap_or(Value::Null);
    let descriptors = doc
        .get("vector")
        .and_then(Value::as_array)
        .map(|ds| ds.iter().filter_map(descriptor).collect())
        .unwrap_or_default();
    Some(Vector {
        name: name.to_string(),
        owner: doc
            .get(OWNER_KEY)
            .and_then(Value::as_str)
            .map(str::to_string),
        descriptors,
    })
}

fn descriptor(d: &Value) -> Option<Descriptor> {
    let select = d.get("select")?.as_str()?;
    let (kind, arg) = select.split_once('=')?;
    let selector = match kind {
        "member" => Selector::Member(arg.to_string()),
        "inet" => {
            let (h, p) = arg.rsplit_once(':')?;
            Selector::Inet(h.to_string(), p.parse().ok()?)
        }
        "shard" => Selector::Shard(arg.parse().ok()?),
        _ => return None,
    };
    let weight = d
        .get("weight")
        .filter(|w| w.is_f64())
        .and_then(Value::as_f64)
        .unwrap_or(1.0);
    let priority = d
        .get("priority")
        .filter(|p| p.is_i64() || p.is_u64())
        .and_then(Value::as_i64)
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or(1);
    Some(Descriptor {
        selector,
        weight,
        priority,
    })
}

/// Applies `vectors` to `members` as Finagle does: each member's weight is the product of the
/// weights of all descriptors that select it. A weight of 0 marks the member draining.
pub fn weigh(members: &mut [Discovered], vectors: &[Vector]) {
    for m in members.iter_mut() {
        let factor: f64 = vectors
            .iter()
            .flat_map(|v| &v.descriptors)
            .filter(|d| match &d.selector {
                Selector::Member(id) => *id == m.name,
                Selector::Inet(h, p) => *h == m.host && *p == m.port,
                Selector::Shard(s) => Some(*s) == m.shard,
            })
            .map(|d| d.weight)
            .product();
        m.weight *= factor;
        if m.weight == 0.0 {
            m.draining = true;
        }
    }
}

/// Did podkeeper write this member or vector for `owner`? (Member metadata or the vector's
/// top-level `podkeeper.io/owner`.)
pub fn is_ours(path_or_name: &str, data: &[u8], owner: &OwnerTag) -> bool {
    let name = base_name(path_or_name);
    let tag = owner.to_string();
    if name.starts_with(MEMBER_PREFIX) {
        decode(name, data).is_some_and(|d| d.owner.as_deref() == Some(&tag))
    } else if name.starts_with(VECTOR_PREFIX) {
        serde_json::from_slice::<Value>(data)
            .ok()
            .and_then(|v| v.get(OWNER_KEY).and_then(Value::as_str).map(|o| o == tag))
            .unwrap_or(false)
    } else {
        false
    }
}

#[cfg(test)]
mod tests;

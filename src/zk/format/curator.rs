//! Curator x-discovery's layout as Spring Cloud ZooKeeper reads it: `<basePath>/<service>/<id>`
//! holding a JSON `ServiceInstance` whose payload is Spring's `ZookeeperInstance`. Pure; no I/O.
//!
//! Facts this follows (Curator 5.9 and Spring Cloud ZooKeeper sources): Curator reads a child
//! with Jackson (`JsonInstanceSerializer`, unknown properties ignored) and then casts the payload
//! to the consumer's payload class, so `payload.@class` must name that class exactly (or the
//! payload must be null). `queryForInstances()` fails as a whole on one child it cannot read.
//! `serviceType` is one of four enum names. `uriSpec` is the bean form of `UriSpec`:
//! `{"parts":[{"value":..,"variable":..}]}`. Spring filters on the payload metadata
//! `instance_status` (UP) and Spring Cloud LoadBalancer reads an integer `weight` there.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::publish::{
    Discovered, FormatError, Node, OWNER_KEY, OwnerTag, Publish, PublishedEndpoint, base_name,
    check_base_path, child_path, fnv1a64,
};
use crate::model::record::EndpointStatus;

const FORMAT: &str = "curator";
/// Spring Cloud ZooKeeper's payload class.
pub const SPRING_PAYLOAD_CLASS: &str =
    "org.springframework.cloud.zookeeper.discovery.ZookeeperInstance";
/// Spring Cloud ZooKeeper's default URI spec.
pub const DEFAULT_URI_SPEC: &str = "{scheme}://{address}:{port}";
/// Spring's status key in the payload metadata, and its values.
pub const STATUS_KEY: &str = "instance_status";
/// Spring's status of an instance that takes requests.
pub const STATUS_UP: &str = "UP";
/// Spring's status of an instance that takes no new requests.
pub const STATUS_OUT_OF_SERVICE: &str = "OUT_OF_SERVICE";
/// Spring Cloud LoadBalancer's weight key.
pub const WEIGHT_KEY: &str = "weight";
/// Spring Cloud LoadBalancer's zone key.
pub const ZONE_KEY: &str = "zone";
/// Spring Cloud LoadBalancer expands instances into a list of sum(weight)/gcd entries; weights
/// are scaled so that list stays at most about this long.
pub const SPRING_WEIGHT_TARGET: u64 = 10_000;

/// What the instance's `payload` is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PayloadKind {
    /// `{"@class": payloadClass, "id", "name", "metadata"}`: Spring's `ZookeeperInstance` shape.
    #[default]
    ZookeeperInstance,
    /// `payload: null`, for Curator consumers without a payload class. Metadata, weight, zone
    /// and the owner marker then have nowhere to go: ownership falls back to the instance id.
    None,
}

/// Curator's `ServiceType`; only these four names parse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceType {
    /// What Spring's own registrations write.
    #[default]
    Dynamic,
    /// A fixed registration.
    Static,
    /// Never removed by Curator.
    Permanent,
    /// Sequential ephemeral.
    DynamicSequential,
}

/// How a resource is published for Curator / Spring Cloud ZooKeeper consumers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    /// Base path (Spring's `spring.cloud.zookeeper.discovery.root`), `/services` unless set.
    #[serde(default = "default_base_path")]
    #[schemars(length(max = 256))]
    pub base_path: String,
    /// Payload shape: `ZookeeperInstance` (default) or `None`.
    #[serde(default)]
    pub payload: PayloadKind,
    /// The consumers' payload class, which `payload.@class` must equal exactly.
    #[serde(default = "default_payload_class")]
    #[schemars(length(max = 256))]
    pub payload_class: String,
    /// URI spec, written in Curator's parsed form; `{scheme}://{address}:{port}` unless set.
    #[serde(default = "default_uri_spec")]
    #[schemars(length(max = 256))]
    pub uri_spec: String,
    /// `serviceType`, `DYNAMIC` (as Spring registers) unless set.
    #[serde(default)]
    pub service_type: ServiceType,
    /// Name of the endpoint port published as `sslPort` (null when unset or the pod lacks it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15))]
    pub ssl_port: Option<String>,
}

fn default_base_path() -> String {
    "/services".into()
}

fn default_payload_class() -> String {
    SPRING_PAYLOAD_CLASS.into()
}

fn default_uri_spec() -> String {
    DEFAULT_URI_SPEC.into()
}

impl Default for Options {
    fn default() -> Options {
        Options {
            base_path: default_base_path(),
            payload: PayloadKind::default(),
            payload_class: default_payload_class(),
            uri_spec: default_uri_spec(),
            service_type: ServiceType::default(),
            ssl_port: None,
        }
    }
}

impl Options {
    /// Checks what consumers would otherwise fail on.
    pub fn validate(&self) -> Result<(), FormatError> {
        check_base_path(FORMAT, "basePath", &self.base_path)?;
        if self.payload == PayloadKind::ZookeeperInstance
            && !is_java_class_name(&self.payload_class)
        {
            return Err(FormatError::Option {
                format: FORMAT,
                field: "payloadClass",
                reason: format!("{:?} is not a Java class name", self.payload_class),
            });
        }
        uri_spec_parts(&self.uri_spec).map(|_| ())
    }
}

fn is_java_class_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|seg| {
            let mut cs = seg.chars();
            cs.next()
                .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
                && cs.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        })
}

/// Curator's `UriSpec(String)` parse: `{` and `}` delimit variables (trimmed), text between them
/// is kept as is; nested or unbalanced braces are refused, as Curator refuses them.
pub fn uri_spec_parts(spec: &str) -> Result<Vec<(String, bool)>, FormatError> {
    let bad = |reason: &str| FormatError::Option {
        format: FORMAT,
        field: "uriSpec",
        reason: reason.to_string(),
    };
    let mut parts = Vec::new();
    let mut inside = false;
    let mut token = String::new();
    let mut flush = |token: &mut String, inside: bool| {
        if !token.is_empty() {
            let value = if inside {
                token.trim().to_string()
            } else {
                token.clone()
            };
            parts.push((value, inside));
            token.clear();
        }
    };
    for c in spec.chars() {
        match c {
            '{' if inside => return Err(bad("'{' inside a variable")),
            '}' if !inside => return Err(bad("'}' without '{'")),
            '{' | '}' => {
                flush(&mut token, inside);
                inside = c == '{';
            }
            _ => token.push(c),
        }
    }
    if inside {
        return Err(bad("a variable is not closed"));
    }
    flush(&mut token, inside);
    Ok(parts)
}

/// `<basePath>/<service>`.
pub fn dirs(options: &Options, service_name: &str) -> Vec<String> {
    vec![child_path(&options.base_path, service_name)]
}

/// The instance id (and node name) of an endpoint: the pod name and 8 hex digits of the owner
/// tag's hash, so two clusters publishing pods of the same name do not collide.
pub fn instance_id(owner: &OwnerTag, pod: &str) -> String {
    format!(
        "{pod}-{:08x}",
        fnv1a64(&[owner.to_string().as_bytes()]) >> 32
    )
}

/// One instance node per endpoint, in path order.
pub fn nodes(options: &Options, publish: &Publish) -> Result<Vec<Node>, FormatError> {
    options.validate()?;
    if publish.service_name.contains('/') || publish.service_name.is_empty() {
        return Err(FormatError::Value {
            format: FORMAT,
            what: "service name".into(),
            value: publish.service_name.clone(),
            reason: "must be one non-empty path segment",
        });
    }
    let dir = &dirs(options, &publish.service_name)[0];
    let scale = spring_weight_scale(publish.endpoints.iter().map(|e| e.record.weight));
    let parts = uri_spec_parts(&options.uri_spec)?;
    let mut out: Vec<Node> = publish
        .endpoints
        .iter()
        .map(|ep| {
            let id = instance_id(&publish.owner, &ep.record.pod);
            let doc = instance_json(options, publish, &parts, &id, ep, scale);
            Node {
                path: child_path(dir, &id),
                data: serde_json::to_vec(&doc).expect("JSON values serialize"),
            }
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The power of ten the solver's weights are divided by for Spring: the smallest that brings
/// their sum to at most [`SPRING_WEIGHT_TARGET`]. Powers of ten keep the default relative weight
/// 100 and the share budgets (multiples of 10,000) exact as long as possible.
pub fn spring_weight_scale(weights: impl Iterator<Item = u32>) -> u64 {
    let total: u64 = weights.map(u64::from).sum();
    let mut scale = 1u64;
    while total / scale > SPRING_WEIGHT_TARGET {
        scale *= 10;
    }
    scale
}

/// Spring's integer weight for a solver weight: `max(1, round(w / scale))`, halves rounded up.
pub fn spring_weight(weight: u32, scale: u64) -> u64 {
    ((u64::from(weight) + scale / 2) / scale).max(1)
}

/// The instance document, fields in the order Jackson writes `ServiceInstance`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InstanceJson<'a> {
    name: &'a str,
    id: &'a str,
    /// IPv6 in brackets: Spring's `ZookeeperServiceInstance.getUri()` is `URI.create` of the
    /// URI spec, which has no host for `http://fd00::1:8080`.
    address: std::borrow::Cow<'a, str>,
    port: u16,
    ssl_port: Option<u16>,
    payload: Option<PayloadJson<'a>>,
    #[serde(rename = "registrationTimeUTC")]
    registration_time_utc: i64,
    service_type: ServiceType,
    uri_spec: UriSpecJson<'a>,
    enabled: bool,
}

/// Spring's `ZookeeperInstance`, with Jackson's class-name type id first.
#[derive(Serialize)]
struct PayloadJson<'a> {
    #[serde(rename = "@class")]
    class: &'a str,
    id: &'a str,
    name: &'a str,
    metadata: BTreeMap<&'a str, String>,
}

/// `UriSpec` as a Jackson bean: its `getParts()`, each part's `getValue()` and `isVariable()`.
#[derive(Serialize)]
struct UriSpecJson<'a> {
    parts: Vec<PartJson<'a>>,
}

#[derive(Serialize)]
struct PartJson<'a> {
    value: &'a str,
    variable: bool,
}

fn instance_json<'a>(
    options: &'a Options,
    publish: &'a Publish,
    parts: &'a [(String, bool)],
    id: &'a str,
    ep: &'a PublishedEndpoint,
    scale: u64,
) -> InstanceJson<'a> {
    let rec = &ep.record;
    let draining = rec.status == EndpointStatus::Draining || rec.weight == 0;
    let payload = match options.payload {
        PayloadKind::None => None,
        PayloadKind::ZookeeperInstance => {
            let mut metadata: BTreeMap<&str, String> = rec
                .metadata
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_string()))
                .collect();
            if let Some(z) = &rec.zone {
                metadata.insert(ZONE_KEY, z.to_string());
            }
            let status = if draining {
                STATUS_OUT_OF_SERVICE
            } else {
                STATUS_UP
            };
            metadata.insert(STATUS_KEY, status.into());
            metadata.insert(WEIGHT_KEY, spring_weight(rec.weight, scale).to_string());
            metadata.insert(OWNER_KEY, publish.owner.to_string());
            Some(PayloadJson {
                class: &options.payload_class,
                id,
                name: &publish.service_name,
                metadata,
            })
        }
    };
    let ssl_port = options
        .ssl_port
        .as_ref()
        .and_then(|name| rec.ports.get(name.as_str()).copied());
    InstanceJson {
        name: &publish.service_name,
        id,
        address: super::uri_host(&rec.host),
        port: rec.port,
        ssl_port,
        payload,
        registration_time_utc: ep.ready_since_ms,
        service_type: options.service_type,
        uri_spec: UriSpecJson {
            parts: parts
                .iter()
                .map(|(value, variable)| PartJson {
                    value,
                    variable: *variable,
                })
                .collect(),
        },
        enabled: !draining,
    }
}

/// Would Curator's `JsonInstanceSerializer` with payload class `payload_class` read this child?
/// (A JSON object; `name`/`id` strings; `port`/`sslPort` ints or null; `serviceType` one of the
/// four names; `uriSpec` null or `{"parts":[...]}`; payload null or of exactly that class.)
pub fn curator_accepts(data: &[u8], payload_class: &str) -> bool {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(data) else {
        return false;
    };
    let string_or_absent = |k: &str| matches!(m.get(k), None | Some(Value::String(_)));
    let int_or_null = |k: &str| match m.get(k) {
        None | Some(Value::Null) => true,
        Some(Value::Number(n)) => n.as_i64().is_some_and(|v| i32::try_from(v).is_ok()),
        _ => false,
    };
    let service_type = match m.get("serviceType") {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => {
            ["DYNAMIC", "STATIC", "PERMANENT", "DYNAMIC_SEQUENTIAL"].contains(&s.as_str())
        }
        _ => false,
    };
    let uri_spec = match m.get("uriSpec") {
        None | Some(Value::Null) => true,
        Some(Value::Object(u)) => match u.get("parts") {
            None | Some(Value::Null) => true,
            Some(Value::Array(ps)) => ps.iter().all(|p| {
                p.as_object().is_some_and(|p| {
                    matches!(
                        p.get("value"),
                        None | Some(Value::String(_)) | Some(Value::Null)
                    ) && matches!(p.get("variable"), None | Some(Value::Bool(_)))
                })
            }),
            _ => false,
        },
        _ => false,
    };
    let payload = match m.get("payload") {
        None | Some(Value::Null) => true,
        Some(Value::Object(p)) => p.get("@class").and_then(Value::as_str) == Some(payload_class),
        _ => false,
    };
    string_or_absent("name")
        && string_or_absent("id")
        && string_or_absent("address")
        && int_or_null("port")
        && int_or_null("sslPort")
        && matches!(m.get("registrationTimeUTC"), None | Some(Value::Number(_)))
        && matches!(m.get("enabled"), None | Some(Value::Bool(_)))
        && service_type
        && uri_spec
        && payload
}

/// Reads an instance node, ours or not. Unreadable JSON, a missing address or port give `None`.
/// Weight is Spring's `weight` metadata (1 when absent or not an integer, as Spring defaults),
/// 0 while draining.
pub fn decode(name: &str, data: &[u8]) -> Option<Discovered> {
    let Value::Object(m) = serde_json::from_slice::<Value>(data).ok()? else {
        return None;
    };
    let host = super::plain_host(m.get("address")?.as_str()?).to_string();
    let port = m
        .get("port")
        .and_then(Value::as_u64)
        .or_else(|| m.get("sslPort").and_then(Value::as_u64))?;
    let port = u16::try_from(port).ok()?;
    let metadata: BTreeMap<String, String> = m
        .get("payload")
        .and_then(|p| p.get("metadata"))
        .and_then(Value::as_object)
        .map(|md| {
            md.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let enabled = m.get("enabled").and_then(Value::as_bool).unwrap_or(true);
    let up = metadata
        .get(STATUS_KEY)
        .is_none_or(|s| s.eq_ignore_ascii_case(STATUS_UP));
    let draining = !enabled || !up;
    let weight = metadata
        .get(WEIGHT_KEY)
        .and_then(|w| w.parse::<i32>().ok())
        .filter(|&w| w > 0)
        .unwrap_or(1);
    Some(Discovered {
        name: base_name(name).to_string(),
        host,
        port,
        weight: if draining { 0.0 } else { f64::from(weight) },
        draining,
        zone: metadata.get(ZONE_KEY).cloned(),
        shard: None,
        owner: metadata.get(OWNER_KEY).cloned(),
        metadata,
    })
}

/// Did podkeeper write this node for `owner`? The payload metadata names the owner; with
/// `payload: null` the id (pod name plus the owner's hash) and the node name must agree.
pub fn is_ours(path_or_name: &str, data: &[u8], owner: &OwnerTag) -> bool {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(data) else {
        return false;
    };
    let tag = owner.to_string();
    match m.get("payload") {
        Some(Value::Object(p)) => {
            p.get("metadata")
                .and_then(|md| md.get(OWNER_KEY))
                .and_then(Value::as_str)
                == Some(tag.as_str())
        }
        None | Some(Value::Null) => {
            let name = base_name(path_or_name);
            let suffix = format!("-{:08x}", fnv1a64(&[tag.as_bytes()]) >> 32);
            m.get("id").and_then(Value::as_str) == Some(name) && name.ends_with(&suffix)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;

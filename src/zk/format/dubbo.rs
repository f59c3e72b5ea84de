//! Dubbo's interface-level ZooKeeper layout: one child per endpoint and interface under
//! `/<root>/<interface>/providers`, named by the URL-encoded provider URL. Pure; no I/O.
//!
//! Facts this follows (Dubbo 3.3 sources): `ZookeeperRegistry.toUrlPath` names a provider node
//! `URL.encode(url.toFullString())`, where `URL.encode` is Java's `URLEncoder` (UTF-8, upper-case
//! hex, space as `+`) and `toFullString` writes the parameters sorted by key (a `TreeMap`),
//! values unescaped. Consumers read only child names, never data, so a change of weight or
//! drain state is a new name: the writer deletes the old child and creates the new one in the
//! same `multi()`. A consumer keeps a provider only when interface, group and version match
//! its own (`UrlUtils.isMatch`); `weight` defaults to 100 and `warmup` to 10 minutes.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::publish::{Discovered, FormatError, Node, OwnerTag, Publish, child_path};

pub mod configurator;

const FORMAT: &str = "dubbo";
/// URL parameter carrying the owner tag (Dubbo keys are dotted, so not `publish::OWNER_KEY`).
pub const OWNER_PARAM: &str = "podkeeper.owner";
/// URL parameter carrying the endpoint's zone.
pub const ZONE_PARAM: &str = "podkeeper.zone";
/// The Dubbo protocol version consumers expect in `dubbo=`.
pub const PROTOCOL_VERSION: &str = "2.0.2";
/// Bytes a provider URL may take as a znode name. Every consumer lists the whole `providers`
/// folder in one response, which a Java client refuses past about 1 MiB (`jute.maxbuffer`), so
/// one pod's long strings must not push the folder (VM providers' included) past it: at 4 KiB,
/// 250 pods still fit; typical URLs are 300-600 bytes.
pub const MAX_URL_BYTES: usize = 4096;

/// A provider URL without `weight` weighs this much (Dubbo's `DEFAULT_WEIGHT`).
pub const DEFAULT_WEIGHT: u32 = 100;

/// How a resource is published for Dubbo consumers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    /// ZooKeeper root of the registry (Dubbo's registry `group`), `dubbo` unless set.
    #[serde(default = "default_root")]
    #[schemars(length(max = 64))]
    pub root: String,
    /// Java interfaces the pods serve; one provider node per endpoint and interface.
    #[schemars(length(min = 1, max = 16), inner(length(max = 255)))]
    pub interfaces: Vec<String>,
    /// Protocol of the provider URL (`dubbo`, `tri`, ...), `dubbo` unless set.
    #[serde(default = "default_protocol")]
    #[schemars(length(max = 32))]
    pub protocol: String,
    /// Service group; consumers only see providers of their own group (or `*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub group: Option<String>,
    /// Service version; must equal the consumers' `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub version: Option<String>,
    /// `application` parameter; the service name unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub application: Option<String>,
    /// `serialization` parameter (e.g. `hessian2`), left out unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub serialization: Option<String>,
    /// `methods` parameter (comma-joined), left out when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(length(max = 64)))]
    pub methods: Vec<String>,
    /// Warm-up in seconds (`warmup` parameter, in ms); Dubbo consumers that keep `timestamp`
    /// (the pod's ready time) ramp a provider's weight up over this time. `spec.warmupSeconds`
    /// unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_seconds: Option<u32>,
    /// `release` parameter (the Dubbo release the pods run), left out unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub release: Option<String>,
    /// The policy pushed to every consumer through a configurator rule (the operator sets it
    /// from `loadBalancer.auto`; not part of the spec).
    #[serde(skip)]
    #[schemars(skip)]
    pub loadbalance: Option<crate::model::policy::Policy>,
}

fn default_root() -> String {
    "dubbo".into()
}

fn default_protocol() -> String {
    "dubbo".into()
}

impl Options {
    /// Options for `interfaces` with every default.
    pub fn new(interfaces: &[&str]) -> Options {
        Options {
            root: default_root(),
            interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
            protocol: default_protocol(),
            group: None,
            version: None,
            application: None,
            serialization: None,
            methods: Vec::new(),
            warmup_seconds: None,
            release: None,
            loadbalance: None,
        }
    }

    /// Checks what consumers would otherwise misread.
    pub fn validate(&self) -> Result<(), FormatError> {
        let opt = |field, reason: &str| FormatError::Option {
            format: FORMAT,
            field,
            reason: reason.to_string(),
        };
        if self.interfaces.is_empty() {
            return Err(opt("interfaces", "at least one interface is required"));
        }
        for i in &self.interfaces {
            if i.is_empty()
                || !i
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._$-".contains(c))
            {
                return Err(opt("interfaces", &format!("{i:?} is not a Java type name")));
            }
        }
        if self.protocol.is_empty()
            || !self
                .protocol
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(opt("protocol", "letters, digits and '-' only"));
        }
        let root = self.root_path();
        super::publish::check_base_path(FORMAT, "root", &root)?;
        let params = [
            ("group", self.group.as_deref()),
            ("version", self.version.as_deref()),
            ("application", self.application.as_deref()),
            ("serialization", self.serialization.as_deref()),
            ("release", self.release.as_deref()),
        ];
        for (field, v) in params {
            if let Some(v) = v {
                check_param(field, v).map_err(|e| opt(field, &e.to_string()))?;
            }
        }
        for m in &self.methods {
            if m.contains(',') {
                return Err(opt("methods", "a method name cannot contain ','"));
            }
            check_param("methods", m).map_err(|e| opt("methods", &e.to_string()))?;
        }
        Ok(())
    }

    /// The registry's root as an absolute path (`/dubbo` by default).
    pub fn root_path(&self) -> String {
        if self.root.starts_with('/') {
            self.root.clone()
        } else {
            format!("/{}", self.root)
        }
    }
}

/// `/<root>/<interface>/providers` for every interface, and the configurator rules' folder
/// when a policy is pushed to consumers.
pub fn dirs(options: &Options, _service_name: &str) -> Vec<String> {
    let root = options.root_path();
    let mut dirs: Vec<String> = options
        .interfaces
        .iter()
        .map(|i| format!("{}/providers", child_path(&root, &java_url_encode(i))))
        .collect();
    if options.loadbalance.is_some() {
        dirs.push(rules_dir());
    }
    dirs
}

/// Where Dubbo's config center keeps the configurator rules (`/dubbo/config/dubbo`).
fn rules_dir() -> String {
    format!(
        "{}/{}",
        configurator::DEFAULT_CONFIG_ROOT,
        configurator::RULE_GROUP
    )
}

/// One configurator rule per interface pushing `policy` to its consumers.
fn rules(options: &Options, policy: crate::model::policy::Policy, owner: &str) -> Vec<Node> {
    let (group, version) = (options.group.as_deref(), options.version.as_deref());
    options
        .interfaces
        .iter()
        .map(|i| Node {
            path: configurator::path(configurator::DEFAULT_CONFIG_ROOT, i, group, version),
            data: configurator::rule(i, group, version, policy, owner),
        })
        .collect()
}

/// One provider node per endpoint and interface, in path order.
pub fn nodes(options: &Options, publish: &Publish) -> Result<Vec<Node>, FormatError> {
    options.validate()?;
    let owner = publish.owner.to_string();
    check_param("owner tag", &owner)?;
    let weights = weights(
        &publish
            .endpoints
            .iter()
            .map(|e| e.record.weight)
            .collect::<Vec<_>>(),
    );
    let mut out = Vec::with_capacity(publish.endpoints.len() * options.interfaces.len());
    for (dir, interface) in dirs(options, &publish.service_name)
        .iter()
        .zip(&options.interfaces)
    {
        for (ep, &weight) in publish.endpoints.iter().zip(&weights) {
            let url = provider_url(options, publish, interface, &owner, ep, weight)?;
            let name = java_url_encode(&url);
            if name.len() > MAX_URL_BYTES {
                return Err(FormatError::Value {
                    format: FORMAT,
                    what: format!("provider URL ({} bytes encoded)", name.len()),
                    value: url,
                    reason: "over the 4 KiB a provider may take of its folder's listing",
                });
            }
            out.push(Node {
                path: child_path(dir, &name),
                data: Vec::new(),
            });
        }
    }
    if let Some(policy) = options.loadbalance {
        out.extend(rules(options, policy, &owner));
    }
    out.sort();
    Ok(out)
}

/// The solver's integers as Dubbo `int` weights: unchanged while their sum fits in a Java
/// `int` (consumers add them up in one), else all divided by one common factor (rounded down,
/// at least 1 for a ready endpoint) so the shares hold. 0 stays 0 (draining).
pub fn weights(solver: &[u32]) -> Vec<u32> {
    let sum: u64 = solver.iter().map(|&w| u64::from(w)).sum();
    let limit = i32::MAX as u64 - solver.len() as u64;
    if sum <= limit {
        return solver.to_vec();
    }
    let factor = sum.div_ceil(limit);
    solver
        .iter()
        .map(|&w| {
            if w == 0 {
                0
            } else {
                (u64::from(w) / factor).max(1) as u32
            }
        })
        .collect()
}

fn provider_url(
    options: &Options,
    publish: &Publish,
    interface: &str,
    owner: &str,
    ep: &super::publish::PublishedEndpoint,
    weight: u32,
) -> Result<String, FormatError> {
    let rec = &ep.record;
    let mut params: BTreeMap<&str, String> = BTreeMap::new();
    params.insert("anyhost", "false".into());
    params.insert(
        "application",
        options
            .application
            .clone()
            .unwrap_or_else(|| publish.service_name.clone()),
    );
    params.insert("dubbo", PROTOCOL_VERSION.into());
    params.insert("dynamic", "false".into());
    params.insert("interface", interface.into());
    params.insert("side", "provider".into());
    params.insert("timestamp", ep.ready_since_ms.max(0).to_string());
    params.insert("weight", weight.to_string());
    params.insert(OWNER_PARAM, owner.into());
    if let Some(z) = &rec.zone {
        check_param("zone", z)?;
        params.insert(ZONE_PARAM, z.to_string());
    }
    let optional = [
        ("group", &options.group),
        ("version", &options.version),
        ("serialization", &options.serialization),
        ("release", &options.release),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            params.insert(k, v.clone());
        }
    }
    if !options.methods.is_empty() {
        params.insert("methods", options.methods.join(","));
    }
    if let Some(s) = options.warmup_seconds {
        params.insert("warmup", (u64::from(s) * 1000).to_string());
    }
    check_param("host", &rec.host)?;
    let host = super::uri_host(&rec.host);
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Ok(format!(
        "{}://{}:{}/{}?{}",
        options.protocol,
        host,
        rec.port,
        interface,
        query.join("&")
    ))
}

/// Refuses what Dubbo's URL parser would split or trim: `&`, `=`, `?`, `#`, whitespace and
/// control characters (values are written unescaped inside the URL before it is encoded).
fn check_param(what: &str, value: &str) -> Result<(), FormatError> {
    let bad = |reason| {
        Err(FormatError::Value {
            format: FORMAT,
            what: what.to_string(),
            value: value.to_string(),
            reason,
        })
    };
    if value.is_empty() {
        return bad("empty");
    }
    if value
        .chars()
        .any(|c| "&=?#".contains(c) || c.is_whitespace() || c.is_control())
    {
        return bad("'&', '=', '?', '#', whitespace and control characters break a Dubbo URL");
    }
    Ok(())
}

/// Java's `URLEncoder.encode(s, "UTF-8")`: `A-Z a-z 0-9 . - * _` stay, space becomes `+`,
/// every other UTF-8 byte becomes `%XX` with upper-case hex.
pub fn java_url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Java's `URLDecoder.decode(s, "UTF-8")`; `None` for a malformed escape or invalid UTF-8.
pub fn java_url_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A provider URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderUrl {
    /// Protocol (`dubbo`, `tri`, ...).
    pub protocol: String,
    /// Host, without IPv6 brackets.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path (the interface, for providers).
    pub path: String,
    /// Parameters.
    pub params: BTreeMap<String, String>,
}

/// Parses a (decoded) provider URL `proto://host:port/path?k=v&...`.
pub fn parse_url(url: &str) -> Option<ProviderUrl> {
    let (protocol, rest) = url.split_once("://")?;
    let (addr_path, query) = match rest.split_once('?') {
        Some((a, q)) => (a, q),
        None => (rest, ""),
    };
    let (addr, path) = match addr_path.split_once('/') {
        Some((a, p)) => (a, p),
        None => (addr_path, ""),
    };
    let addr = addr.rsplit('@').next()?;
    let (host, port) = if let Some(v6) = addr.strip_prefix('[') {
        let (h, p) = v6.split_once("]:")?;
        (h, p)
    } else {
        addr.rsplit_once(':')?
    };
    let port: u16 = port.parse().ok()?;
    if protocol.is_empty() || host.is_empty() {
        return None;
    }
    let params = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (!k.is_empty()).then(|| (k.to_string(), v.trim().to_string()))
        })
        .collect();
    Some(ProviderUrl {
        protocol: protocol.into(),
        host: host.into(),
        port,
        path: path.into(),
        params,
    })
}

/// Reads a provider node (ours or a neighbour's) from its child name. Data is ignored, as
/// Dubbo consumers ignore it. Consumer URLs, `empty://` markers and garbage give `None`.
pub fn decode(name: &str, _data: &[u8]) -> Option<Discovered> {
    let name = super::publish::base_name(name);
    let url = parse_url(&java_url_decode(name)?)?;
    if url.protocol == "empty" || url.params.get("side").is_some_and(|s| s != "provider") {
        return None;
    }
    let weight = match url.params.get("weight") {
        Some(w) => w.parse::<i64>().ok()?.max(0) as f64,
        None => f64::from(DEFAULT_WEIGHT),
    };
    let disabled = url.params.get("enabled").is_some_and(|e| e == "false");
    Some(Discovered {
        name: name.to_string(),
        host: url.host,
        port: url.port,
        weight,
        draining: weight == 0.0 || disabled,
        zone: url.params.get(ZONE_PARAM).cloned(),
        shard: None,
        owner: url.params.get(OWNER_PARAM).cloned(),
        metadata: url.params,
    })
}

/// Did podkeeper write this node for `owner`? A provider is decided from its name alone, a
/// configurator rule from its first line.
pub fn is_ours(path_or_name: &str, data: &[u8], owner: &OwnerTag) -> bool {
    if path_or_name.ends_with(configurator::SUFFIX) {
        return configurator::is_ours(data, &owner.to_string());
    }
    decode(path_or_name, &[]).is_some_and(|d| d.owner.as_deref() == Some(&owner.to_string()))
}

#[cfg(test)]
mod tests;

//! Registry nodes → importable endpoints: decodes a folder in its format, reads each provider's
//! ready/serving/terminating, and leaves out what a Service cannot carry, with the reason. Pure.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

use crate::model::record::{EndpointRecord, EndpointStatus, Owner};
use crate::zk::format::publish::Discovered;
use crate::zk::format::{curator, dubbo, serverset};

/// The format of the folder, with what narrows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Dubbo providers, only those of this group and version (`None`: none; `*`: any).
    Dubbo {
        /// The consumer's group.
        group: Option<String>,
        /// The consumer's version.
        version: Option<String>,
    },
    /// Curator instances.
    Curator,
    /// ServerSet members.
    ServerSet,
    /// podkeeper's native endpoint records.
    Native,
}

/// A folder as read: its children (name, data) and, for the native format, the service record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folder {
    /// Children of the providers folder (native: of `<path>/endpoints`).
    pub children: Vec<(String, Vec<u8>)>,
    /// The native service record at `<path>`.
    pub service_record: Option<Vec<u8>>,
}

/// EndpointSlice conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Conditions {
    /// Takes traffic.
    pub ready: bool,
    /// Able to serve (regardless of terminating).
    pub serving: bool,
    /// Going away.
    pub terminating: bool,
}

impl Conditions {
    /// Ready and serving.
    pub const UP: Conditions = Conditions {
        ready: true,
        serving: true,
        terminating: false,
    };
    /// Neither ready nor serving, not terminating.
    pub const DOWN: Conditions = Conditions {
        ready: false,
        serving: false,
        terminating: false,
    };
    /// Draining: not serving, terminating.
    pub const DRAINING: Conditions = Conditions {
        ready: false,
        serving: false,
        terminating: true,
    };

    /// Two registrations of one address: serving when either serves, terminating when both do.
    pub fn merge(self, other: Conditions) -> Conditions {
        Conditions {
            ready: self.ready || other.ready,
            serving: self.serving || other.serving,
            terminating: self.terminating && other.terminating,
        }
    }
}

/// One provider as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// Host (or IP) as registered.
    pub host: String,
    /// The registered port.
    pub port: u16,
    /// Further ports by name (native `ports`, ServerSet `additionalEndpoints`).
    pub named_ports: BTreeMap<String, u16>,
    /// From the format's own status.
    pub conditions: Conditions,
    /// The owner tag, when podkeeper wrote it (`<clusterId>/<namespace>/<name>`).
    pub owner: Option<String>,
    /// The zone, when the node carries one.
    pub zone: Option<String>,
    /// Dubbo group and version parameters (empty: none).
    pub group: String,
    /// See `group`.
    pub version: String,
}

impl Provider {
    /// `host:port`, for the status.
    pub fn label(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }
}

/// Why a provider is not in the Service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeftOut {
    /// Written by this cluster's podkeeper (the loop guard).
    OwnCluster,
    /// Registered by host name: names are not resolved.
    NotAnIp,
    /// 127.0.0.0/8, ::1: the pod's own loopback, not the provider.
    Loopback,
    /// 169.254.0.0/16, fe80::/10: not reachable from pods.
    LinkLocal,
    /// 0.0.0.0, ::, or multicast.
    Unusable,
    /// Another Dubbo group or version than the import's.
    OtherGroupOrVersion,
    /// No extra port of this name.
    NoNamedPort(String),
}

impl std::fmt::Display for LeftOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeftOut::OwnCluster => write!(f, "published by this cluster's podkeeper"),
            LeftOut::NotAnIp => write!(f, "registered by host name, not an IP address"),
            LeftOut::Loopback => write!(f, "loopback address"),
            LeftOut::LinkLocal => write!(f, "link-local address"),
            LeftOut::Unusable => write!(f, "unspecified or multicast address"),
            LeftOut::OtherGroupOrVersion => write!(f, "another Dubbo group or version"),
            LeftOut::NoNamedPort(p) => write!(f, "no extra port named {p:?}"),
        }
    }
}

/// Every provider in `folder`, in node order. Unreadable nodes (consumers, configurators,
/// garbage, ServerSet vectors) are not providers and are not returned.
pub fn read(source: &Source, folder: &Folder) -> Vec<Provider> {
    match source {
        Source::Native => native(folder),
        _ => folder
            .children
            .iter()
            .filter_map(|(name, data)| one(source, name, data))
            .collect(),
    }
}

fn one(source: &Source, name: &str, data: &[u8]) -> Option<Provider> {
    match source {
        Source::Dubbo { .. } => dubbo::decode(name, data).map(from_dubbo),
        Source::Curator => curator::decode(name, data).map(|d| from_discovered(d, curator_up)),
        Source::ServerSet => {
            let d = serverset::decode(name, data)?;
            let raw: Value = serde_json::from_slice(data).ok()?;
            let mut p = from_discovered(d, |_| true);
            p.conditions = serverset_conditions(raw.get("status").and_then(Value::as_str));
            p.named_ports = serverset_ports(&raw);
            Some(p)
        }
        Source::Native => None,
    }
}

fn from_discovered(d: Discovered, up: impl Fn(&Discovered) -> bool) -> Provider {
    let conditions = match up(&d) {
        true => Conditions::UP,
        false => Conditions::DOWN,
    };
    Provider {
        host: d.host,
        port: d.port,
        named_ports: BTreeMap::new(),
        conditions,
        owner: d.owner,
        zone: d.zone,
        group: String::new(),
        version: String::new(),
    }
}

/// Dubbo: `weight=0` or `enabled=false` → not serving.
fn from_dubbo(d: Discovered) -> Provider {
    let group = d.metadata.get("group").cloned().unwrap_or_default();
    let version = d.metadata.get("version").cloned().unwrap_or_default();
    let mut p = from_discovered(d, |d| !d.draining);
    p.group = group;
    p.version = version;
    p
}

/// Curator: `enabled: false` or an `instance_status` other than UP → not ready.
fn curator_up(d: &Discovered) -> bool {
    !d.draining
}

/// ServerSet: ALIVE is ready; STOPPING drains (terminating); anything else is not ready.
fn serverset_conditions(status: Option<&str>) -> Conditions {
    match status {
        Some("ALIVE") => Conditions::UP,
        Some("STOPPING") => Conditions::DRAINING,
        _ => Conditions::DOWN,
    }
}

/// `additionalEndpoints` on the member's own host.
fn serverset_ports(raw: &Value) -> BTreeMap<String, u16> {
    let Some(extra) = raw.get("additionalEndpoints").and_then(Value::as_object) else {
        return BTreeMap::new();
    };
    extra
        .iter()
        .filter_map(|(name, ep)| {
            let port = u16::try_from(ep.get("port")?.as_u64()?).ok()?;
            Some((name.clone(), port))
        })
        .collect()
}

/// The owner of a native service record, whatever else the record holds (a record of a newer
/// release must still stop the loop).
#[derive(serde::Deserialize)]
struct OwnerOnly {
    owner: Owner,
}

/// Native: UP with a weight is ready; DRAINING is terminating; UP at weight 0 is not serving.
fn native(folder: &Folder) -> Vec<Provider> {
    let owner = folder
        .service_record
        .as_deref()
        .and_then(|d| serde_json::from_slice::<OwnerOnly>(d).ok())
        .map(|r| {
            format!(
                "{}/{}/{}",
                r.owner.cluster_id, r.owner.namespace, r.owner.name
            )
        });
    let mut out = Vec::new();
    for (_, data) in &folder.children {
        let Ok(rec) = serde_json::from_slice::<EndpointRecord>(data) else {
            continue;
        };
        let conditions = match (rec.status, rec.weight) {
            (EndpointStatus::Draining, _) => Conditions::DRAINING,
            (EndpointStatus::Up, 0) => Conditions::DOWN,
            (EndpointStatus::Up, _) => Conditions::UP,
        };
        out.push(Provider {
            named_ports: rec.ports.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            host: rec.host,
            port: rec.port,
            conditions,
            owner: owner.clone(),
            zone: rec.zone,
            group: String::new(),
            version: String::new(),
        });
    }
    out
}

/// A Service port and where on the provider it lands (`None`: the registered port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Name shared by the Service and the slices.
    pub name: String,
    /// An extra port name of the provider.
    pub target: Option<String>,
}

/// A provider admitted into the Service: its address and resolved ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// The address.
    pub address: IpAddr,
    /// Port per Service port, in the Service's order.
    pub ports: Vec<(String, u16)>,
    /// Ready / serving / terminating.
    pub conditions: Conditions,
    /// Zone, when registered.
    pub zone: Option<String>,
}

/// What is imported and what is not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Providers read.
    pub seen: usize,
    /// One per address and port tuple, sorted.
    pub endpoints: Vec<Endpoint>,
    /// Providers left out (`host:port`) with why, in node order.
    pub left_out: Vec<(String, LeftOut)>,
}

/// Admits providers into the Service: not this cluster's own, an IP address pods can reach,
/// the import's Dubbo group and version, every named port present. Two registrations of one
/// address and ports become one endpoint.
pub fn select(
    source: &Source,
    providers: &[Provider],
    cluster_id: &str,
    ports: &[PortSpec],
) -> Selection {
    let own = format!("{cluster_id}/");
    let mut sel = Selection {
        seen: providers.len(),
        ..Selection::default()
    };
    let mut merged: BTreeMap<(IpAddr, Vec<(String, u16)>), Endpoint> = BTreeMap::new();
    for p in providers {
        let admitted = admit(source, p, &own, ports);
        match admitted {
            Err(why) => sel.left_out.push((p.label(), why)),
            Ok(ep) => {
                let key = (ep.address, ep.ports.clone());
                merged
                    .entry(key)
                    .and_modify(|e| e.conditions = e.conditions.merge(ep.conditions))
                    .or_insert(ep);
            }
        }
    }
    sel.endpoints = merged.into_values().collect();
    sel
}

fn admit(
    source: &Source,
    p: &Provider,
    own: &str,
    ports: &[PortSpec],
) -> Result<Endpoint, LeftOut> {
    if p.owner.as_deref().is_some_and(|o| o.starts_with(own)) {
        return Err(LeftOut::OwnCluster);
    }
    if let Source::Dubbo { group, version } = source
        && !(matches(group, &p.group) && matches(version, &p.version))
    {
        return Err(LeftOut::OtherGroupOrVersion);
    }
    let address = usable_address(&p.host)?;
    let ports = ports
        .iter()
        .map(|spec| match &spec.target {
            None => Ok((spec.name.clone(), p.port)),
            Some(t) => p
                .named_ports
                .get(t)
                .map(|&port| (spec.name.clone(), port))
                .ok_or_else(|| LeftOut::NoNamedPort(t.clone())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Endpoint {
        address,
        ports,
        conditions: p.conditions,
        zone: p.zone.clone(),
    })
}

/// A Dubbo consumer's group or version against a provider's (`*` matches any).
fn matches(wanted: &Option<String>, have: &str) -> bool {
    match wanted.as_deref() {
        Some("*") => true,
        Some(w) => w == have,
        None => have.is_empty(),
    }
}

/// The IP address in `host`, when pods can use it (the API server refuses the others too).
pub fn usable_address(host: &str) -> Result<IpAddr, LeftOut> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = host.parse().map_err(|_| LeftOut::NotAnIp)?;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if ip.is_loopback() {
        return Err(LeftOut::Loopback);
    }
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(LeftOut::Unusable);
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    if link_local {
        return Err(LeftOut::LinkLocal);
    }
    Ok(ip)
}

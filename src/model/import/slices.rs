//! Endpoints → EndpointSlices: one address family and one port tuple per slice, at most
//! [`MAX_PER_SLICE`] endpoints, and a stable assignment so one provider's change touches one
//! slice. Pure; the controller turns [`Slice`] into the API object and applies [`Changes`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::provider::Endpoint;
use crate::zk::format::publish::fnv1a64;

/// Endpoints per slice (the EndpointSlice controller's default, and what kube-proxy expects).
pub const MAX_PER_SLICE: usize = 100;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `IPv4`.
    V4,
    /// `IPv6`.
    V6,
}

impl Family {
    /// The family of `ip`.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The EndpointSlice `addressType`.
    pub fn address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// What every endpoint of a slice shares.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SliceKey {
    /// Address family.
    pub family: Family,
    /// Named ports.
    pub ports: Vec<(String, u16)>,
}

impl SliceKey {
    fn of(ep: &Endpoint) -> SliceKey {
        SliceKey {
            family: Family::of(&ep.address),
            ports: ep.ports.clone(),
        }
    }

    /// A short stable name part for the key.
    fn tag(&self) -> String {
        let mut parts: Vec<Vec<u8>> = vec![self.family.address_type().as_bytes().to_vec()];
        for (n, p) in &self.ports {
            parts.push(format!("{n}={p}").into_bytes());
        }
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        format!("{:08x}", fnv1a64(&refs) >> 32)
    }
}

/// One EndpointSlice as podkeeper wants it (or found it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// Object name.
    pub name: String,
    /// Family and ports.
    pub key: SliceKey,
    /// Endpoints, sorted by address.
    pub endpoints: Vec<Endpoint>,
}

/// Assigns `desired` to slices, keeping every endpoint that stays in the slice it was in:
/// an endpoint already in a slice of its key stays there; newcomers fill the slices of their
/// key that have room (fewest-named first), then new slices named `<service>-<key>-<n>`.
/// Slices left empty are not returned.
pub fn assign(service: &str, existing: &[Slice], desired: &[Endpoint]) -> Vec<Slice> {
    let mut by_key: BTreeMap<SliceKey, BTreeMap<IpAddr, &Endpoint>> = BTreeMap::new();
    for ep in desired {
        by_key
            .entry(SliceKey::of(ep))
            .or_default()
            .insert(ep.address, ep);
    }
    let mut taken: BTreeSet<String> = existing.iter().map(|s| s.name.clone()).collect();
    let mut out = Vec::new();
    for (key, mut wanted) in by_key {
        let mut mine: Vec<Slice> = existing
            .iter()
            .filter(|s| s.key == key)
            .map(|s| keep_staying(s, &mut wanted))
            .collect();
        mine.sort_by(|a, b| a.name.cmp(&b.name));
        let newcomers: Vec<Endpoint> = wanted.into_values().cloned().collect();
        fill(service, &key, &mut mine, newcomers, &mut taken);
        out.extend(mine.into_iter().filter(|s| !s.endpoints.is_empty()));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The endpoints of `slice` still wanted, taken out of `wanted`, with their new conditions.
fn keep_staying(slice: &Slice, wanted: &mut BTreeMap<IpAddr, &Endpoint>) -> Slice {
    let endpoints = slice
        .endpoints
        .iter()
        .filter_map(|e| wanted.remove(&e.address).cloned())
        .take(MAX_PER_SLICE)
        .collect();
    Slice {
        name: slice.name.clone(),
        key: slice.key.clone(),
        endpoints,
    }
}

/// Puts `newcomers` into the slices with room, then into new slices.
fn fill(
    service: &str,
    key: &SliceKey,
    slices: &mut Vec<Slice>,
    newcomers: Vec<Endpoint>,
    taken: &mut BTreeSet<String>,
) {
    let mut rest = newcomers.into_iter().peekable();
    for s in slices.iter_mut() {
        while s.endpoints.len() < MAX_PER_SLICE {
            match rest.next() {
                Some(e) => s.endpoints.push(e),
                None => break,
            }
        }
    }
    while rest.peek().is_some() {
        let name = free_name(service, key, taken);
        let endpoints = rest.by_ref().take(MAX_PER_SLICE).collect();
        slices.push(Slice {
            name,
            key: key.clone(),
            endpoints,
        });
    }
    for s in slices.iter_mut() {
        s.endpoints.sort_by_key(|e| e.address);
    }
}

fn free_name(service: &str, key: &SliceKey, taken: &mut BTreeSet<String>) -> String {
    let tag = key.tag();
    let name = (0..)
        .map(|n| format!("{service}-{tag}-{n}"))
        .find(|n| !taken.contains(n))
        .expect("a free name");
    taken.insert(name.clone());
    name
}

/// What to write: slices to create or replace, and slice names to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// New or changed slices.
    pub write: Vec<Slice>,
    /// Slices no longer wanted.
    pub delete: Vec<String>,
}

impl Changes {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.write.is_empty() && self.delete.is_empty()
    }

    /// Slices touched.
    pub fn touched(&self) -> usize {
        self.write.len() + self.delete.len()
    }
}

/// The slices of `wanted` that differ from `existing`, and the existing ones not wanted.
pub fn diff(existing: &[Slice], wanted: &[Slice]) -> Changes {
    let old: BTreeMap<&str, &Slice> = existing.iter().map(|s| (s.name.as_str(), s)).collect();
    let new: BTreeSet<&str> = wanted.iter().map(|s| s.name.as_str()).collect();
    Changes {
        write: wanted
            .iter()
            .filter(|s| old.get(s.name.as_str()).copied() != Some(*s))
            .cloned()
            .collect(),
        delete: existing
            .iter()
            .filter(|s| !new.contains(s.name.as_str()))
            .map(|s| s.name.clone())
            .collect(),
    }
}

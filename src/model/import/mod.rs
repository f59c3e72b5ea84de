//! The reverse mirror's pure half: registry nodes → endpoints (provider.rs), endpoints →
//! EndpointSlices with minimal changes (slices.rs). No I/O, no Kubernetes types.

pub mod provider;
pub mod slices;

#[cfg(test)]
mod tests;

pub use provider::{
    Conditions, Endpoint, Folder, LeftOut, PortSpec, Provider, Selection, Source, read, select,
};
pub use slices::{Changes, Family, MAX_PER_SLICE, Slice, SliceKey, assign, diff};

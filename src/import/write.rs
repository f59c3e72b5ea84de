//! The write step of an import: its Service (created, or kept when labelled for it), the
//! EndpointSlices that differ from what the model wants, and the Services it named before.
//! Kubernetes writes only; no ZooKeeper.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};

use super::reconcile::key;
use super::{Context, Error, objects};
use crate::crd::RegistryImport;
use crate::model::import::{self, Changes, Selection, Slice};

/// What the write step did.
pub enum Written {
    /// The Service exists and is someone else's: nothing written.
    NotOurs,
    /// Slices now in place, and how many were created, replaced or deleted.
    Slices {
        /// Slices in place.
        slices: usize,
        /// Slices written or deleted now.
        touched: usize,
    },
}

/// The Service, then the slices that differ.
pub async fn write(ri: &RegistryImport, ctx: &Context, sel: &Selection) -> Result<Written, Error> {
    let (ns, name) = key(ri);
    let client = ctx.op.kube().clone();
    let services = Api::namespaced(client.clone(), &ns);
    let ensured = ensure_service(ri, &services).await?;
    if ensured == Ensured::NotOurs {
        return Ok(Written::NotOurs);
    }
    let api: Api<EndpointSlice> = Api::namespaced(client, &ns);
    let svc = &ri.spec.service.name;
    // From the API server's watch cache (`resourceVersion=0`): a consistent list waited for the
    // cache to catch up with etcd, ~80 ms per reconcile here. A stale slice is safe: its replace
    // carries the version read, and a conflict reconciles again at once.
    let params = ListParams::default()
        .labels(&objects::slice_selector(&name))
        .match_any();
    let list = api.list(&params).await?.items;
    let (existing, unwanted) = read_existing(&list, svc);
    let wanted = import::assign(svc, &existing, &sel.endpoints);
    let mut changes = import::diff(&existing, &wanted);
    changes.delete.extend(unwanted);
    let versions: HashMap<String, Option<String>> = list
        .iter()
        .map(|s| (s.name_any(), s.metadata.resource_version.clone()))
        .collect();
    apply(ri, &api, &changes, &versions).await?;
    // After the new Service and its slices: a rename never leaves pods without one.
    let edited = ri.status.as_ref().and_then(|s| s.observed_generation) != ri.metadata.generation;
    if ensured == Ensured::Written || edited {
        delete_former_services(ri, &services).await?;
    }
    Ok(Written::Slices {
        slices: wanted.len(),
        touched: changes.touched(),
    })
}

/// The slices of the Service in the model's terms, and the names of those to delete: slices
/// of a Service this import named before, or that podkeeper cannot read.
fn read_existing(list: &[EndpointSlice], svc: &str) -> (Vec<Slice>, Vec<String>) {
    let mut existing = Vec::new();
    let mut unwanted = Vec::new();
    for s in list {
        match objects::read_slice(s).filter(|_| objects::service_of(s) == Some(svc)) {
            Some(slice) => existing.push(slice),
            None => unwanted.push(s.name_any()),
        }
    }
    (existing, unwanted)
}

/// Creates, replaces and deletes, each at the version read.
async fn apply(
    ri: &RegistryImport,
    api: &Api<EndpointSlice>,
    changes: &Changes,
    versions: &HashMap<String, Option<String>>,
) -> Result<(), Error> {
    for slice in &changes.write {
        let mut obj = objects::endpoint_slice(ri, slice);
        // A create, or a replace at the version read: the list may be stale, and a write
        // based on it must fail (409) rather than drop what a newer slice holds.
        let params = PostParams {
            field_manager: Some(objects::FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let r = match versions.get(&slice.name) {
            None => api.create(&params, &obj).await.map(drop),
            Some(version) => {
                obj.metadata.resource_version = version.clone();
                api.replace(&slice.name, &params, &obj).await.map(drop)
            }
        };
        count_write("write", &r);
        r?;
    }
    for gone in &changes.delete {
        // Only the version read: a slice refilled since is kept (and read again).
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: versions.get(gone).cloned().flatten(),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        let r = match api.delete(gone, &params).await {
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            other => other.map(drop),
        };
        count_write("delete", &r);
        r?;
    }
    Ok(())
}

/// What [`ensure_service`] found.
#[derive(Debug, PartialEq, Eq)]
enum Ensured {
    /// A Service of that name exists and is someone else's.
    NotOurs,
    /// Ours, as wanted already.
    Current,
    /// Created or updated now.
    Written,
}

/// Creates or updates the Service, unless one of that name exists that is not this import's.
async fn ensure_service(ri: &RegistryImport, api: &Api<Service>) -> Result<Ensured, Error> {
    let name = &ri.spec.service.name;
    if let Some(existing) = api.get_opt(name).await? {
        if !objects::service_is_ours(&existing, ri) {
            return Ok(Ensured::NotOurs);
        }
        if objects::service_current(&existing, ri) {
            return Ok(Ensured::Current);
        }
    }
    let params = PatchParams::apply(objects::FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(&objects::service(ri)))
        .await?;
    Ok(Ensured::Written)
}

/// Deletes the Services this import created under a name its spec no longer gives: those
/// labelled for it and owned by it (a copy someone labelled by hand stays), each at the uid
/// and version read.
async fn delete_former_services(ri: &RegistryImport, api: &Api<Service>) -> Result<(), Error> {
    let (_, name) = key(ri);
    let params = ListParams::default()
        .labels(&format!("{}={name}", objects::IMPORT_LABEL))
        .match_any();
    for svc in api.list(&params).await?.items {
        if svc.name_any() == ri.spec.service.name || !objects::service_is_former(&svc, ri) {
            continue;
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: svc.metadata.resource_version.clone(),
                uid: svc.metadata.uid.clone(),
            }),
            ..DeleteParams::default()
        };
        match api.delete(&svc.name_any(), &params).await {
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            other => drop(other?),
        }
        tracing::info!(import = %name, service = %svc.name_any(), "deleted the Service this import named before");
    }
    Ok(())
}

fn count_write<T>(op: &str, r: &Result<T, kube::Error>) {
    let result = match r {
        Ok(_) => "ok".to_string(),
        Err(kube::Error::Api(e)) => format!("http_{}", e.code),
        Err(_) => "error".to_string(),
    };
    crate::metrics::get()
        .slice_writes
        .get_or_create(&crate::metrics::ZkOpLabels {
            op: op.into(),
            result,
        })
        .inc();
}

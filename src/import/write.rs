//! The write step of an import: its Service (created, or kept when labelled for it) and the
//! EndpointSlices that differ from what the model wants. Kubernetes writes only; no ZooKeeper.

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
    if !ensure_service(ri, &Api::namespaced(client.clone(), &ns)).await? {
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

/// Creates or updates the Service; false when one exists that is not this import's.
async fn ensure_service(ri: &RegistryImport, api: &Api<Service>) -> Result<bool, Error> {
    let name = &ri.spec.service.name;
    if let Some(existing) = api.get_opt(name).await? {
        if !objects::service_is_ours(&existing, ri) {
            return Ok(false);
        }
        if objects::service_current(&existing, ri) {
            return Ok(true);
        }
    }
    let params = PatchParams::apply(objects::FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(&objects::service(ri)))
        .await?;
    Ok(true)
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

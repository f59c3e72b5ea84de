//! One import's reconcile, as its steps: resolve (tenancy, folder) → read (the folder task's
//! snapshot) → desired (model) → write (Service, changed slices) → report (status, events).

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::folder::{Place, Snapshot};
use super::status::{Outcome, Report};
use super::write::{Written, write};
use super::{Context, Error};
use crate::crd::RegistryImport;
use crate::crd::registry_import::ImportSource;
use crate::model::import::{self, PortSpec, Selection, Source};
use crate::zk::format::dubbo::java_url_encode;
use crate::zk::session::Target;

/// (namespace, name).
pub fn key(ri: &RegistryImport) -> (String, String) {
    (ri.namespace().unwrap_or_default(), ri.name_any())
}

/// Reconciles one import; only the leader writes.
pub async fn reconcile(ri: Arc<RegistryImport>, ctx: Arc<Context>) -> Result<Action, Error> {
    if ri.metadata.deletion_timestamp.is_some() || ctx.op.leadership.term().is_none() {
        return Ok(Action::await_change());
    }
    let (ns, _) = key(&ri);
    let target = target(&ri);
    if let Err(why) = ctx.op.ensemble_granted(&ns, target.as_ref()) {
        // A revoked grant stops the reading too; the slices stay as they were.
        ctx.folders.forget(&key(&ri));
        let outcome = Outcome::Refused(why);
        return report(&ri, &ctx, Report::new(outcome, None, &Snapshot::default())).await;
    }
    let (source, place) = resolve(&ri, &ctx, target.as_ref());
    let session = ctx.op.sessions().get(target.as_ref());
    let shared = ctx
        .folders
        .follow(&key(&ri), &place, session, ctx.waker(&ns));
    let snapshot = shared.lock().expect("snapshot lock").clone();
    let Some(folder) = &snapshot.folder else {
        if snapshot.unavailable.is_none() {
            // The first read is under way and wakes this reconcile: no status flaps to
            // "waiting" for a few milliseconds at every start.
            return Ok(Action::await_change());
        }
        // Nothing read yet (ZooKeeper down since start): existing slices stay as they are.
        return report(
            &ri,
            &ctx,
            Report::new(Outcome::Waiting, Some(&place), &snapshot),
        )
        .await;
    };
    let selection = desired(&ri, &ctx, &source, folder);
    let waited = snapshot.changed_at.map(|t| t.elapsed());
    let started = std::time::Instant::now();
    let written = write(&ri, &ctx, &selection).await?;
    tracing::debug!(import = %ri.name_any(), ?waited, took = ?started.elapsed(), "import written");
    let outcome = match written {
        Written::NotOurs => Outcome::ServiceNotOurs,
        Written::Slices { slices, touched } => {
            observe_latency(&shared, touched > 0);
            Outcome::Synced {
                selection,
                slices,
                touched,
            }
        }
    };
    report(&ri, &ctx, Report::new(outcome, Some(&place), &snapshot)).await
}

/// The ensemble named by the spec (`None`: the operator's).
fn target(ri: &RegistryImport) -> Option<Target> {
    ri.spec.zookeeper.as_ref().map(|z| Target {
        connect: z.connect.clone(),
        chroot: z.chroot.clone(),
    })
}

/// The format and the folder to follow.
fn resolve(ri: &RegistryImport, ctx: &Context, target: Option<&Target>) -> (Source, Place) {
    let ensemble = ctx.op.sessions().get(target).target().to_string();
    let place = |watched: String, providers: String, record: Option<String>| Place {
        ensemble: ensemble.clone(),
        watched,
        providers,
        record,
    };
    let ImportSource {
        dubbo,
        curator,
        server_set,
        native,
    } = &ri.spec.source;
    if let Some(d) = dubbo {
        let root = d.root.as_deref().unwrap_or("dubbo").trim_matches('/');
        let dir = format!("/{root}/{}/providers", java_url_encode(&d.interface));
        let source = Source::Dubbo {
            group: d.group.clone(),
            version: d.version.clone(),
        };
        return (source, place(dir.clone(), dir, None));
    }
    if let Some(c) = curator {
        let base = c.base_path.as_deref().unwrap_or("/services");
        let dir = format!("{}/{}", base.trim_end_matches('/'), c.service_name);
        return (Source::Curator, place(dir.clone(), dir, None));
    }
    if let Some(s) = server_set {
        return (
            Source::ServerSet,
            place(s.path.clone(), s.path.clone(), None),
        );
    }
    let path = native.as_ref().map(|n| n.path.clone()).unwrap_or_default();
    let endpoints = format!("{path}/{}", crate::model::record::ENDPOINTS);
    (Source::Native, place(path.clone(), endpoints, Some(path)))
}

/// What the slices should hold.
fn desired(
    ri: &RegistryImport,
    ctx: &Context,
    source: &Source,
    folder: &import::Folder,
) -> Selection {
    let ports: Vec<PortSpec> = ri
        .spec
        .service
        .ports
        .iter()
        .map(|p| PortSpec {
            name: p.name.clone(),
            target: p.target_port.clone(),
        })
        .collect();
    let providers = import::read(source, folder);
    import::select(source, &providers, &ctx.op.settings().cluster_id, &ports)
}

/// ZooKeeper change → slices written: observed once per change that needed a write.
fn observe_latency(shared: &std::sync::Mutex<Snapshot>, wrote: bool) {
    let at = shared.lock().expect("snapshot lock").changed_at.take();
    if let (Some(at), true) = (at, wrote) {
        crate::metrics::get()
            .zk_to_slice
            .observe(at.elapsed().as_secs_f64());
    }
}

/// Writes the status (when it changed) and Events; ZooKeeper trouble is retried by the
/// folder task's wake-up, a refusal by a slow requeue.
async fn report(ri: &RegistryImport, ctx: &Context, r: Report) -> Result<Action, Error> {
    let (ns, name) = key(ri);
    let status = r.status(ri);
    for (type_, reason, note) in r.events(ri) {
        let t = match type_ {
            true => EventType::Normal,
            false => EventType::Warning,
        };
        ctx.op.events().publish_for(ri, t, reason, note);
    }
    crate::metrics::get()
        .providers_imported
        .get_or_create(&crate::metrics::ResourceLabels {
            namespace: ns.clone(),
            name: name.clone(),
        })
        .set(i64::from(status.imported));
    if ri.status.as_ref() != Some(&status) {
        let api: Api<RegistryImport> = Api::namespaced(ctx.op.kube().clone(), &ns);
        // A merge patch keeps what it omits: cleared fields are sent as null.
        let mut body = serde_json::to_value(&status).expect("status serializes");
        for field in ["staleSince", "leftOutProviders", "lastSyncTime", "path"] {
            body.as_object_mut()
                .expect("an object")
                .entry(field)
                .or_insert(serde_json::Value::Null);
        }
        let patch = serde_json::json!({ "status": body });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    // Synced imports come back at the resync interval too: that keeps their ensemble's
    // session in use (idle ones are closed) and repairs what watches missed.
    Ok(match r.retry_slowly() {
        true => Action::requeue(Duration::from_secs(60)),
        false => Action::requeue(ctx.op.settings().resync_interval),
    })
}

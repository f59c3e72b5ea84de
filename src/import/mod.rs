//! The reverse mirror: RegistryImport resources keep the providers of a ZooKeeper folder as a
//! selector-less Service with EndpointSlices. Owns those objects only; never writes ZooKeeper.
//! Wiring here; folder.rs follows ZooKeeper, reconcile.rs reads as its steps.

mod folder;
pub mod objects;
mod reconcile;
mod status;
mod write;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedSender, unbounded};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, reflector};
use kube::runtime::watcher::{self, watcher};

use crate::controller::Context as Operator;
use crate::crd::RegistryImport;

/// Why a reconcile of an import failed (what it reports on the status is not an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
        }
    }

    /// A write raced another (a stale read): worth trying again at once.
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(e)) if e.code == 409)
    }
}

/// What every import reconcile shares.
pub struct Context {
    op: Arc<Operator>,
    folders: folder::Folders,
    wake: Vec<(Option<String>, UnboundedSender<ObjectRef<RegistryImport>>)>,
}

impl Context {
    /// The sender waking the controller that watches `ns`.
    fn waker(&self, ns: &str) -> UnboundedSender<ObjectRef<RegistryImport>> {
        self.wake
            .iter()
            .find(|(scope, _)| scope.as_deref().is_none_or(|s| s == ns))
            .map(|(_, tx)| tx.clone())
            .expect("a controller watches every namespace it reconciles")
    }
}

/// Runs the import controllers (one per namespace scope; `None`: all namespaces) until
/// shutdown.
pub async fn run(op: Arc<Operator>, scopes: Vec<Option<String>>) {
    let client = op.kube().clone();
    if !crd_installed(&client).await {
        return;
    }
    let mut wake = Vec::new();
    let mut triggers = Vec::new();
    for scope in &scopes {
        let (tx, rx) = unbounded();
        wake.push((scope.clone(), tx));
        triggers.push(rx);
    }
    let ctx = Arc::new(Context {
        op: op.clone(),
        folders: folder::Folders::default(),
        wake,
    });
    let mut controllers = Vec::new();
    for (scope, trigger) in scopes.into_iter().zip(triggers) {
        let (imports, slices, services) = match &scope {
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
        };
        controllers.push(controller(ctx.clone(), imports, slices, services, trigger));
    }
    tracing::info!("import controller running");
    futures::future::join_all(controllers).await;
}

/// Whether the RegistryImport CRD is installed; says how to install it when it is not (the
/// ServiceRegistration controllers run on without the import).
async fn crd_installed(client: &kube::Client) -> bool {
    let api: Api<RegistryImport> = Api::all(client.clone());
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Err(kube::Error::Api(e)) if e.code == 404 => {
            tracing::error!(
                "--import is on but the RegistryImport CRD (registryimports.podkeeper.io) is not installed: \
                 kubectl apply -f crds/registryimport.yaml, or podkeeper crd registryimport | kubectl apply -f -; \
                 the import controller does not run"
            );
            false
        }
        // Namespaced RBAC cannot list cluster-wide; the watches report what is missing.
        _ => true,
    }
}

async fn controller(
    ctx: Arc<Context>,
    imports: Api<RegistryImport>,
    slices: Api<EndpointSlice>,
    services: Api<Service>,
    trigger: futures::channel::mpsc::UnboundedReceiver<ObjectRef<RegistryImport>>,
) {
    let (store, writer) = reflector::store();
    let c = ctx.clone();
    // A deleted import's folder task stops; its objects go by their owner references.
    let stream = reflector(writer, watcher(imports, watcher::Config::default()))
        .inspect(move |ev| {
            if let Ok(watcher::Event::Delete(ri)) = ev {
                let (namespace, name) = reconcile::key(ri);
                let labels = crate::metrics::ResourceLabels { namespace, name };
                crate::metrics::get().providers_imported.remove(&labels);
                c.folders.forget(&(labels.namespace, labels.name));
            }
        })
        .applied_objects();
    let managed = format!(
        "endpointslice.kubernetes.io/managed-by={}",
        objects::MANAGED_BY
    );
    // A new leader rewrites what its predecessor left; a follower writes nothing.
    let (all_tx, all_rx) = unbounded::<()>();
    let mut leading = ctx.op.leadership.subscribe();
    tokio::spawn(async move {
        while leading.changed().await.is_ok() {
            if leading.borrow_and_update().is_some() && all_tx.unbounded_send(()).is_err() {
                return;
            }
        }
    });
    Controller::for_stream(stream, store)
        .owns(slices, watcher::Config::default().labels(&managed))
        .owns(
            services,
            watcher::Config::default().labels(objects::IMPORT_LABEL),
        )
        .reconcile_on(trigger)
        .reconcile_all_on(all_rx)
        .shutdown_on_signal()
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(err) = res {
                tracing::debug!(%err, "import reconcile failed");
            }
        })
        .await;
}

fn error_policy(_ri: Arc<RegistryImport>, err: &Error, _ctx: Arc<Context>) -> Action {
    if err.is_conflict() {
        tracing::debug!(%err, "import write conflicted; reconciling again");
        return Action::requeue(Duration::from_millis(20));
    }
    tracing::warn!(%err, "import reconcile failed; retrying");
    crate::metrics::get()
        .reconciles
        .get_or_create(&crate::metrics::ResultLabels {
            result: format!("import_{}", err.kind()),
        })
        .inc();
    Action::requeue(Duration::from_secs(5))
}

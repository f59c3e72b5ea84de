//! Per-resource status writers: each resource gets one task that patches only the newest status
//! it was handed, at most every [`MIN_INTERVAL`], so churn coalesces instead of loading the API
//! server that the operator's own watches share.

use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::sync::watch;

use crate::crd::{ServiceRegistration, ServiceRegistrationStatus};

/// The least time between two status patches of one resource.
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// The last status handed to a resource's writer, and the writer itself.
#[derive(Default)]
pub struct StatusWriter {
    last: Option<ServiceRegistrationStatus>,
    tx: Option<watch::Sender<Option<ServiceRegistrationStatus>>>,
}

impl StatusWriter {
    /// The newest status known: the last one handed over, else what the resource carries.
    pub fn last<'a>(
        &'a self,
        on_resource: Option<&'a ServiceRegistrationStatus>,
    ) -> Option<&'a ServiceRegistrationStatus> {
        self.last.as_ref().or(on_resource)
    }

    /// Hands `status` to the writer task (started on first use by `api`). Returns false, and
    /// patches nothing, when it equals the last one apart from timestamps.
    pub fn send(
        &mut self,
        api: impl FnOnce() -> (Api<ServiceRegistration>, String),
        previous: Option<&ServiceRegistrationStatus>,
        status: ServiceRegistrationStatus,
    ) -> bool {
        if previous.is_some_and(|p| super::status::same(p, &status)) {
            return false;
        }
        self.last = Some(status.clone());
        let tx = self.tx.get_or_insert_with(|| {
            let (tx, rx) = watch::channel(None);
            let (api, name) = api();
            tokio::spawn(patch_latest(api, name, rx));
            tx
        });
        let _ = tx.send(Some(status));
        true
    }
}

/// Patches the newest status; a burst of changes becomes one patch. Ends when the writer is
/// dropped or the resource is gone.
async fn patch_latest(
    api: Api<ServiceRegistration>,
    name: String,
    mut rx: watch::Receiver<Option<ServiceRegistrationStatus>>,
) {
    while rx.changed().await.is_ok() {
        let Some(status) = rx.borrow_and_update().clone() else {
            continue;
        };
        let patch = serde_json::json!({ "status": status });
        let mut delay = Duration::from_millis(200);
        loop {
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tokio::time::sleep(MIN_INTERVAL).await;
                    break;
                }
                Err(kube::Error::Api(e)) if e.code == 404 => return,
                Err(err) => {
                    tracing::debug!(%err, %name, "status patch failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    if rx.has_changed().unwrap_or(false) {
                        break;
                    }
                }
            }
        }
    }
}

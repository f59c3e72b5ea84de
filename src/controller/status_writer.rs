//! Per-resource status writers: each resource gets one task that patches only the newest status
//! it was handed, at most every [`MIN_INTERVAL`], so churn coalesces instead of loading the API
//! server that the operator's own watches share.

use std::sync::Arc;
use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::sync::{Semaphore, watch};

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

    /// Hands `status` to the writer task (started on first use by `api`; it patches holding
    /// one of `permits`). Returns false, and patches nothing, when it equals the last one apart
    /// from timestamps.
    pub fn send(
        &mut self,
        api: impl FnOnce() -> (Api<ServiceRegistration>, String),
        permits: &Arc<Semaphore>,
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
            tokio::spawn(patch_latest(api, name, permits.clone(), rx));
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
    permits: Arc<Semaphore>,
    mut rx: watch::Receiver<Option<ServiceRegistrationStatus>>,
) {
    while rx.changed().await.is_ok() {
        let Some(status) = rx.borrow_and_update().clone() else {
            continue;
        };
        let patch = serde_json::json!({ "status": status });
        let mut delay = Duration::from_millis(200);
        loop {
            let Ok(permit) = permits.acquire().await else {
                return;
            };
            // Boxed, so the request's state (1.35 KB) is held only while it is in flight: a
            // resource's writer task waits idle most of its life (3.4 -> 2.0 KB per task).
            let params = PatchParams::default();
            let patched = Box::pin(api.patch_status(&name, &params, &Patch::Merge(&patch))).await;
            drop(permit);
            match patched {
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;

    fn status(ready: u32) -> ServiceRegistrationStatus {
        ServiceRegistrationStatus {
            ready,
            ..Default::default()
        }
    }

    /// With the clock paused, tokio moves time on only when every task waits: a timeout that
    /// fires means no further request was coming, not that it was slow.
    #[tokio::test(start_paused = true)]
    async fn patches_in_flight_stay_within_the_permits() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let permits = Arc::new(Semaphore::new(2));
        let mut writers: Vec<StatusWriter> = (0..5).map(|_| StatusWriter::default()).collect();
        for (i, w) in writers.iter_mut().enumerate() {
            let api = || (Api::namespaced(client.clone(), "ns"), format!("sr-{i}"));
            assert!(w.send(api, &permits, None, status(i as u32)));
        }
        let mut in_flight = Vec::new();
        for _ in 0..2 {
            in_flight.push(handle.next_request().await.expect("a status patch"));
        }
        let third = tokio::time::timeout(Duration::from_secs(60), handle.next_request()).await;
        assert!(
            third.is_err(),
            "a third patch went out while two were in flight"
        );
        // Each answer lets exactly one more go out, until all five are patched.
        let mut patched = Vec::new();
        while let Some((req, send)) = in_flight.pop() {
            patched.push(req.uri().path().to_string());
            let body = serde_json::json!({"apiVersion": "podkeeper.io/v1alpha1",
                "kind": "ServiceRegistration", "metadata": {"name": "x", "namespace": "ns"},
                "spec": {"selector": {"matchLabels": {"app": "web"}}, "port": 8080}});
            let resp = Response::builder()
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap();
            send.send_response(resp);
            if patched.len() + in_flight.len() < 5 {
                in_flight.push(handle.next_request().await.expect("the next patch"));
            }
            assert!(in_flight.len() <= 2);
        }
        patched.sort();
        let want: Vec<String> = (0..5)
            .map(|i| {
                format!(
                    "/apis/podkeeper.io/v1alpha1/namespaces/ns/serviceregistrations/sr-{i}/status"
                )
            })
            .collect();
        assert_eq!(patched, want);
    }
}

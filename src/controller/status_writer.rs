//! Per-resource status writers: a resource's newest status is patched, at most every
//! [`MIN_INTERVAL`], by a task that runs only while it has something to send, so churn
//! coalesces instead of loading the API server that the operator's own watches share, and an
//! idle resource holds no task.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::sync::Semaphore;

use crate::crd::{ServiceRegistration, ServiceRegistrationStatus};

/// The least time between two status patches of one resource.
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// The last status handed to a resource's writer, and what its task has still to send.
#[derive(Default)]
pub struct StatusWriter {
    last: Option<ServiceRegistrationStatus>,
    slot: Arc<Mutex<Slot>>,
}

/// Shared with the task. A task was 2.0 KB even while it waited; it now ends once its newest
/// status is patched and [`MIN_INTERVAL`] has passed with nothing new.
#[derive(Default)]
struct Slot {
    /// The newest status not yet patched.
    pending: Option<Box<ServiceRegistrationStatus>>,
    /// A task is running; it takes `pending` before it ends.
    running: bool,
    /// The status as the API server holds it, as far as this writer knows (the resource's
    /// before the first patch, then the last one patched): what a patch must clear.
    base: Option<Box<serde_json::Value>>,
    /// `base` was set (from the resource, or by a patch).
    based: bool,
}

impl StatusWriter {
    /// The newest status known: the last one handed over, else what the resource carries.
    pub fn last<'a>(
        &'a self,
        on_resource: Option<&'a ServiceRegistrationStatus>,
    ) -> Option<&'a ServiceRegistrationStatus> {
        self.last.as_ref().or(on_resource)
    }

    /// Hands `status` to the writer (starting its task with `api` when none runs; it patches
    /// holding one of `permits`). Returns false, and patches nothing, when it equals the last
    /// one apart from timestamps.
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
        let mut slot = self.slot.lock().expect("status slot lock");
        if !slot.based {
            slot.based = true;
            let on_resource = self.last.is_none().then_some(previous).flatten();
            slot.base = on_resource.and_then(|p| serde_json::to_value(p).ok().map(Box::new));
        }
        self.last = Some(status.clone());
        slot.pending = Some(Box::new(status));
        if !slot.running {
            slot.running = true;
            let (api, name) = api();
            tokio::spawn(patch_pending(api, name, permits.clone(), self.slot.clone()));
        }
        true
    }
}

/// The newest pending status, or `None` after marking the task ended (under the same lock a
/// sender checks, so no status is left behind).
fn next(slot: &Mutex<Slot>) -> Option<Box<ServiceRegistrationStatus>> {
    let mut slot = slot.lock().expect("status slot lock");
    let status = slot.pending.take();
    slot.running = status.is_some();
    status
}

/// Patches the newest status until none is pending; a burst of changes becomes one patch.
/// Ends early when the resource is gone.
async fn patch_pending(
    api: Api<ServiceRegistration>,
    name: String,
    permits: Arc<Semaphore>,
    slot: Arc<Mutex<Slot>>,
) {
    let mut delay = Duration::from_millis(200);
    while let Some(status) = next(&slot) {
        let Ok(permit) = permits.acquire().await else {
            slot.lock().expect("status slot lock").running = false;
            return;
        };
        let value = serde_json::to_value(&status).expect("a status serializes");
        let base = slot.lock().expect("status slot lock").base.clone();
        let patch = serde_json::json!({ "status": clearing(base.as_deref(), &value) });
        let params = PatchParams::default();
        let patched = Box::pin(api.patch_status(&name, &params, &Patch::Merge(&patch))).await;
        drop(permit);
        match patched {
            Ok(_) => {
                slot.lock().expect("status slot lock").base = Some(Box::new(value));
                delay = Duration::from_millis(200);
                tokio::time::sleep(MIN_INTERVAL).await;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let mut slot = slot.lock().expect("status slot lock");
                slot.pending = None;
                slot.running = false;
                return;
            }
            Err(err) => {
                tracing::debug!(%err, %name, "status patch failed; retrying");
                slot.lock()
                    .expect("status slot lock")
                    .pending
                    .get_or_insert(status);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Fields patched on their own, never by this writer (see `reconcile::place`).
const NOT_OURS: &[&str] = &["placementIntents"];

/// `new` as a merge patch over `base`: every field `base` has and `new` leaves out is sent as
/// null, in nested objects too, for a merge patch keeps what it does not mention (a cleared
/// `load.lastError` or `unresolvedAddresses` would otherwise stay on the resource).
fn clearing(base: Option<&serde_json::Value>, new: &serde_json::Value) -> serde_json::Value {
    fn walk(base: &serde_json::Value, new: &serde_json::Value, top: bool) -> serde_json::Value {
        let (Some(b), Some(n)) = (base.as_object(), new.as_object()) else {
            return new.clone();
        };
        let mut out = n.clone();
        for (k, bv) in b {
            match n.get(k) {
                Some(nv) => {
                    out.insert(k.clone(), walk(bv, nv, false));
                }
                None if top && NOT_OURS.contains(&k.as_str()) => {}
                None => {
                    out.insert(k.clone(), serde_json::Value::Null);
                }
            }
        }
        serde_json::Value::Object(out)
    }
    base.map_or_else(|| new.clone(), |b| walk(b, new, true))
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

    #[test]
    fn a_patch_clears_what_the_last_status_had_and_this_one_leaves_out() {
        let base = serde_json::json!({"ready": 2, "unresolved": 1,
            "load": {"weighed": 3, "lastError": "no answer"}, "groups": [1],
            "placementIntents": [{"path": "/p"}]});
        let new = serde_json::json!({"ready": 3, "load": {"weighed": 3}});
        assert_eq!(
            clearing(Some(&base), &new),
            serde_json::json!({"ready": 3, "unresolved": null, "groups": null,
                "load": {"weighed": 3, "lastError": null}})
        );
        assert_eq!(clearing(None, &new), new);
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

    fn answer_ok(send: tower_test::mock::SendResponse<Response<Body>>) {
        let body = serde_json::json!({"apiVersion": "podkeeper.io/v1alpha1",
            "kind": "ServiceRegistration", "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "port": 8080}});
        let body = Body::from(serde_json::to_vec(&body).unwrap());
        send.send_response(Response::builder().body(body).unwrap());
    }

    async fn ready_in(req: Request<Body>) -> u64 {
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let patch: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        patch["status"]["ready"].as_u64().expect("a status patch")
    }

    /// The clock is paused: tokio moves it on only when every task waits.
    #[tokio::test(start_paused = true)]
    async fn the_newest_status_is_patched_and_an_idle_writer_holds_no_task() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let permits = Arc::new(Semaphore::new(1));
        let api = || (Api::namespaced(client.clone(), "ns"), "web".to_string());
        let mut w = StatusWriter::default();
        assert!(w.send(api, &permits, None, status(1)));
        let (req, send) = handle.next_request().await.expect("the first patch");
        assert_eq!(ready_in(req).await, 1);
        // Two changes while the first is in flight: only the newer one is patched.
        assert!(w.send(api, &permits, Some(&status(1)), status(2)));
        assert!(w.send(api, &permits, Some(&status(2)), status(3)));
        assert!(
            !w.send(api, &permits, Some(&status(3)), status(3)),
            "same status"
        );
        answer_ok(send);
        let (req, send) = handle.next_request().await.expect("the newest status");
        assert_eq!(ready_in(req).await, 3);
        answer_ok(send);
        let quiet = tokio::time::timeout(MIN_INTERVAL * 4, handle.next_request()).await;
        assert!(quiet.is_err(), "nothing was left to patch");
        {
            let slot = w.slot.lock().unwrap();
            assert!(!slot.running && slot.pending.is_none(), "the task ended");
        }
        // A later change starts a task again.
        assert!(w.send(api, &permits, Some(&status(3)), status(4)));
        let (req, send) = handle.next_request().await.expect("a new task's patch");
        assert_eq!(ready_in(req).await, 4);
        answer_ok(send);
    }
}

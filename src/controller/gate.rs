//! Patches the `podkeeper.io/registered` pod condition (pods/status, condition only) that
//! `model::gate` decides on. Each patch runs in its own task: a slow or failing API server
//! never holds up ZooKeeper publishing. A failed patch is retried through a reconcile.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};

use super::Context;
use super::index::Key;
use crate::model::pod::REGISTERED_GATE;

/// How long a failed patch waits before its pod is looked at again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Writes the conditions `(pod, registered)` of the resource `key`'s pods.
pub(super) fn patch(ctx: &Arc<Context>, key: &Key, changes: Vec<(String, bool)>) {
    for (pod, registered) in changes {
        let (ctx, key) = (ctx.clone(), key.clone());
        tokio::spawn(async move { patch_one(ctx, key, pod, registered).await });
    }
}

async fn patch_one(ctx: Arc<Context>, key: Key, pod: String, registered: bool) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.0);
    let body = condition_patch(registered, &chrono::Utc::now().to_rfc3339());
    let result = api
        .patch_status(&pod, &PatchParams::default(), &Patch::Strategic(body))
        .await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(kube::Error::Api(e)) if e.code == 404 => "gone",
        // No pods/status permission (chart value rbac.readinessGate=false): retrying would
        // only load the API server; the next change of the pod tries again.
        Err(kube::Error::Api(e)) if e.code == 403 => "forbidden",
        Err(_) => "error",
    };
    crate::metrics::get()
        .gate_patches
        .get_or_create(&crate::metrics::GateLabels {
            status: status_word(registered).into(),
            result: outcome.into(),
        })
        .inc();
    if let (Err(err), "forbidden") = (&result, outcome) {
        tracing::warn!(namespace = %key.0, %pod, %err, "no permission to patch pods/status: the readiness gate stays as it is");
    }
    if let (Err(err), "error") = (result, outcome) {
        tracing::warn!(namespace = %key.0, %pod, registered, %err, "readiness gate patch failed; retrying");
        ctx.entry(&key).lock().await.gate_failed(&pod);
        tokio::time::sleep(RETRY_AFTER).await;
        ctx.index.touch(&key, &pod);
        ctx.wake(std::slice::from_ref(&key));
    }
}

fn status_word(registered: bool) -> &'static str {
    if registered { "True" } else { "False" }
}

/// A strategic merge patch of pods/status that sets our condition and nothing else
/// (conditions merge by `type`).
fn condition_patch(registered: bool, now: &str) -> serde_json::Value {
    let (reason, message) = if registered {
        ("Registered", "the pod's endpoint is in ZooKeeper")
    } else {
        (
            "NotRegistered",
            "the pod's endpoint is not (or no longer) in ZooKeeper",
        )
    };
    serde_json::json!({
        "status": {
            "conditions": [{
                "type": REGISTERED_GATE,
                "status": status_word(registered),
                "reason": reason,
                "message": message,
                "lastTransitionTime": now,
            }]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_touches_only_our_condition() {
        let p = condition_patch(true, "T");
        let conditions = p["status"]["conditions"].as_array().unwrap();
        assert_eq!(p["status"].as_object().unwrap().len(), 1);
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0]["type"], REGISTERED_GATE);
        assert_eq!(conditions[0]["status"], "True");
        assert_eq!(
            condition_patch(false, "T")["status"]["conditions"][0]["status"],
            "False"
        );
    }
}

//! The fast path from a pod change to the reconcile of the resources it concerns.
//!
//! kube-runtime's controller delivers every trigger through its scheduler, a `DelayQueue`
//! whose deadlines are rounded up to the next millisecond of tokio's timer: a trigger "now"
//! waits 1-2 ms for the timer. A pod change instead runs the reconcile at once, one at a time
//! per resource; changes that arrive meanwhile are coalesced into one more run. The
//! controller stays in charge of everything else: resources being created or deleted (their
//! finalizer), errors and their backoff, and the next wake-up (drain ends, the periodic
//! resync): when a fast run ends, the resource is handed to it as well, and that reconcile
//! finds nothing left to write. A resource whose fast run failed goes through the controller
//! alone until its retry is due, so that pod changes do not retry it faster than the error
//! policy would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use super::Context;
use super::index::Key;
use crate::crd::{FINALIZER, ServiceRegistration};

/// Fast reconciles in flight at once, as the controller's own concurrency.
const CONCURRENCY: usize = 32;

/// The resources the controllers know (per namespace scope) and the fast runs in flight.
pub(super) struct FastPath {
    stores: OnceLock<Vec<(Option<String>, Store<ServiceRegistration>)>>,
    /// Resources with a fast run in flight: `true` when another change arrived meanwhile.
    running: Mutex<HashMap<Key, bool>>,
    /// Resources whose last fast run failed, until their retry is due.
    cooling: Mutex<HashMap<Key, Instant>>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl Default for FastPath {
    fn default() -> Self {
        FastPath {
            stores: OnceLock::new(),
            running: Mutex::default(),
            cooling: Mutex::default(),
            permits: Arc::new(tokio::sync::Semaphore::new(CONCURRENCY)),
        }
    }
}

impl FastPath {
    /// The controllers' caches of the resources; until they are set, nothing runs fast.
    pub(super) fn set_stores(&self, stores: Vec<(Option<String>, Store<ServiceRegistration>)>) {
        let _ = self.stores.set(stores);
    }

    /// The resource as the controller caches it, when it is in its steady state (ours, not
    /// being deleted): only those run fast.
    fn steady(&self, (ns, name): &Key) -> Option<Arc<ServiceRegistration>> {
        let stores = self.stores.get()?;
        let (_, store) = stores
            .iter()
            .find(|(scope, _)| scope.as_deref().is_none_or(|s| s == ns))?;
        let sr = store.get(&ObjectRef::new(name).within(ns))?;
        let meta = sr.meta();
        let ours = meta.finalizers.iter().flatten().any(|f| f == FINALIZER);
        (ours && meta.deletion_timestamp.is_none()).then_some(sr)
    }

    /// What a reconcile that waited for the resource's entry should apply: the controller's
    /// current copy of `sr`, or `None` when the resource went or is being deleted meanwhile,
    /// so that a late run never writes back what the cleanup removed. Before the caches are
    /// set (the unit tests' mocked API), `sr` itself.
    pub(super) fn current(&self, sr: Arc<ServiceRegistration>) -> Option<Arc<ServiceRegistration>> {
        if self.stores.get().is_none() {
            return Some(sr);
        }
        let key = (sr.namespace().unwrap_or_default(), sr.name_any());
        let now = self.steady(&key)?;
        (now.meta().uid == sr.meta().uid).then_some(now)
    }

    /// The fast run of `key` failed: until `now + delay` its changes go to the controller.
    fn cool(&self, key: &Key, now: Instant, delay: Duration) {
        let mut cooling = self.cooling.lock().expect("fast path lock");
        cooling.retain(|_, until| *until > now);
        cooling.insert(key.clone(), now + delay);
    }

    /// Whether `key` failed and its retry is not due yet.
    fn is_cooling(&self, key: &Key, now: Instant) -> bool {
        let cooling = self.cooling.lock().expect("fast path lock");
        cooling.get(key).is_some_and(|until| *until > now)
    }

    /// Marks `key` running; `false` when it already was (the run in flight goes again).
    fn start(&self, key: &Key) -> bool {
        let mut running = self.running.lock().expect("fast path lock");
        match running.get_mut(key) {
            Some(again) => {
                *again = true;
                false
            }
            None => {
                running.insert(key.clone(), false);
                true
            }
        }
    }

    /// Forgets the run of `key` (changes that arrived meanwhile go to the controller).
    fn finish(&self, key: &Key) {
        self.running.lock().expect("fast path lock").remove(key);
    }

    /// Whether the run of `key` goes again (a change arrived meanwhile); forgets it if not.
    fn again(&self, key: &Key) -> bool {
        let mut running = self.running.lock().expect("fast path lock");
        match running.get_mut(key) {
            Some(again) if *again => {
                *again = false;
                true
            }
            _ => {
                running.remove(key);
                false
            }
        }
    }
}

/// Reconciles `keys` now: steady resources on the fast path, the others through the
/// controller.
pub(super) fn wake(ctx: &Arc<Context>, keys: Vec<Key>) {
    let mut slow = Vec::new();
    let now = Instant::now();
    for key in keys {
        if ctx.fast.steady(&key).is_none() || ctx.fast.is_cooling(&key, now) {
            slow.push(key);
        } else if ctx.fast.start(&key) {
            tokio::spawn(run(ctx.clone(), key));
        }
    }
    ctx.wake(&slow);
}

/// Reconciles `key` until no change arrived during the last run, then hands it to the
/// controller for what comes next.
async fn run(ctx: Arc<Context>, key: Key) {
    let mut failed = None;
    loop {
        // A resource that left its steady state meanwhile is the controller's alone.
        if let Some(sr) = ctx.fast.steady(&key) {
            let permit = ctx.fast.permits.clone().acquire_owned().await;
            let result = super::reconcile::reconcile(sr, ctx.clone()).await;
            drop(permit);
            failed = result.err();
        }
        if failed.is_some() || !ctx.fast.again(&key) {
            break;
        }
    }
    let Some(err) = failed else {
        // The controller schedules the next wake-up; its reconcile finds nothing to write.
        ctx.wake(std::slice::from_ref(&key));
        return;
    };
    // The error policy's delay, then the controller retries; changes meanwhile go to it.
    let delay = super::reconcile::retry_delay(&err);
    tracing::debug!(%err, namespace = %key.0, name = %key.1, ?delay, "fast reconcile failed; the controller retries");
    ctx.fast.cool(&key, Instant::now(), delay);
    ctx.fast.finish(&key);
    tokio::time::sleep(delay).await;
    ctx.wake(std::slice::from_ref(&key));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_during_a_run_coalesce_into_one_more_run() {
        let fast = FastPath::default();
        let a: Key = ("shop".into(), "web".into());
        let b: Key = ("shop".into(), "api".into());
        assert!(fast.start(&a), "nothing in flight: a run starts");
        assert!(fast.start(&b), "resources run independently");
        assert!(!fast.start(&a), "in flight: no second run");
        assert!(!fast.start(&a), "two changes meanwhile: still one more run");
        assert!(fast.again(&a), "the run goes once more");
        assert!(!fast.again(&a), "nothing arrived since: it ends");
        assert!(fast.start(&a), "ended: the next change starts a run");
        assert!(!fast.again(&b));
    }

    #[test]
    fn a_failed_resource_cools_until_its_retry_is_due() {
        let fast = FastPath::default();
        let (a, b): (Key, Key) = (("shop".into(), "web".into()), ("shop".into(), "api".into()));
        let t0 = Instant::now();
        assert!(!fast.is_cooling(&a, t0));
        fast.cool(&a, t0, Duration::from_millis(500));
        assert!(fast.is_cooling(&a, t0 + Duration::from_millis(499)));
        assert!(!fast.is_cooling(&b, t0), "only the failed resource cools");
        assert!(
            !fast.is_cooling(&a, t0 + Duration::from_millis(500)),
            "retry due"
        );
        fast.cool(&b, t0 + Duration::from_secs(1), Duration::from_secs(5));
        assert!(
            fast.cooling.lock().unwrap().get(&a).is_none(),
            "expired entries are dropped"
        );
    }

    fn sr(name: &str, finalizer: bool, deleting: bool) -> ServiceRegistration {
        let spec = serde_yaml::from_str("selector: {matchLabels: {app: web}}\nport: 80").unwrap();
        let mut sr = ServiceRegistration::new(name, spec);
        sr.metadata.namespace = Some("shop".into());
        if finalizer {
            sr.metadata.finalizers = Some(vec![FINALIZER.into()]);
        }
        if deleting {
            sr.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                ));
        }
        sr
    }

    #[test]
    fn only_resources_in_their_steady_state_run_fast() {
        let fast = FastPath::default();
        let key = |n: &str| -> Key { ("shop".into(), n.into()) };
        assert!(
            fast.steady(&key("web")).is_none(),
            "no cache yet: nothing runs fast"
        );
        let (store, mut writer) = kube::runtime::reflector::store::<ServiceRegistration>();
        for sr in [
            sr("web", true, false),
            sr("new", false, false),
            sr("gone", true, true),
        ] {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(sr));
        }
        fast.set_stores(vec![
            (Some("other".into()), kube::runtime::reflector::store().0),
            (None, store),
        ]);
        assert!(
            fast.steady(&key("web")).is_some(),
            "ours and not being deleted"
        );
        assert!(
            fast.steady(&key("new")).is_none(),
            "no finalizer yet: the controller adds it"
        );
        assert!(
            fast.steady(&key("gone")).is_none(),
            "being deleted: the controller cleans up"
        );
        assert!(fast.steady(&key("unknown")).is_none());
    }
}

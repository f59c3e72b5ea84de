//! Kubernetes Events of a resource, rate-limited per reason so churn does not load the API
//! server: a reason fires at most once per interval, and the next one says how many it folded.
//! Within [`SERIES_TTL`] of an Event, the next ones of the same reason on the same resource
//! count into its series (its note stays the first one's), as kube's `Recorder` counted them.
//! That recorder's cache kept each such Event whole for six minutes in a table that never
//! shrinks (5.9 MB after 1,000 resources published two reasons each, by heaptrack): this one
//! keeps a hash of each key, the Event's name and its count, and drops them when they expire.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource};
use tokio::sync::mpsc;

use crate::crd::ServiceRegistration;

/// The least time between two Events of one reason on one resource; the rest are counted.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);

/// How long a repeated Event counts into its first one's series (kube's `Recorder`: 6 min).
pub const SERIES_TTL: Duration = Duration::from_secs(6 * 60);

/// A 64-bit hash of (namespace, name, reason): the limiter keeps one per resource and reason,
/// and three strings each cost more than the rest of its entry. Two keys colliding would only
/// fold one resource's Event into another's count (odds about n²/2⁶⁵ for n keys).
type EventKey = u64;

fn limit_key(namespace: &str, name: &str, reason: &str) -> EventKey {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (namespace, name, reason).hash(&mut h);
    h.finish()
}

/// Who reports the Events.
#[derive(Debug, Clone)]
pub struct Reporter {
    /// `reportingController`.
    pub controller: String,
    /// `reportingInstance` (the controller's name when unset).
    pub instance: Option<String>,
}

/// One Event to publish.
struct Draft {
    type_: EventType,
    reason: String,
    note: String,
}

/// Creates Events through the events.k8s.io API and counts exact repeats into series.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    reporter: Arc<Reporter>,
    series: Arc<Mutex<Series>>,
}

impl Recorder {
    pub fn new(client: kube::Client, reporter: Reporter) -> Recorder {
        Recorder {
            client,
            reporter: Arc::new(reporter),
            series: Arc::default(),
        }
    }

    /// Creates the Event, or counts it into the series of the same Event published less than
    /// [`SERIES_TTL`] ago.
    async fn publish(&self, ev: &Draft, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let key = series_key(ev, regarding);
        let ns = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), ns);
        let now = k8s_openapi::jiff::Timestamp::now();
        let repeat = self
            .series
            .lock()
            .expect("series lock")
            .repeat(key, Instant::now());
        if let Some((name, count)) = repeat {
            let patch = serde_json::json!({
                "series": {"count": count, "lastObservedTime": MicroTime(now)}
            });
            let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
            match api.patch(&name, &params, &patch).await {
                Ok(_) => return Ok(()),
                // Gone or refused (deleted, expired early): this one starts a new Event.
                Err(err) => {
                    tracing::debug!(%err, event = %name, "counting into an Event's series failed")
                }
            }
        }
        let event = self.event(ev, regarding, now);
        let name = event.metadata.name.clone().unwrap_or_default();
        api.create(&PostParams::default(), &event).await?;
        let mut series = self.series.lock().expect("series lock");
        series.record(key, name, Instant::now());
        Ok(())
    }

    fn event(
        &self,
        ev: &Draft,
        regarding: &ObjectReference,
        now: k8s_openapi::jiff::Timestamp,
    ) -> K8sEvent {
        let r = &self.reporter;
        // A name is at most 253 characters: room for the dot and 16 hex digits.
        let base = regarding.name.as_deref().unwrap_or(&r.controller);
        let mut cut = base.len().min(236);
        while !base.is_char_boundary(cut) {
            cut -= 1;
        }
        let base = &base[..cut];
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!("{base}.{:x}", now.as_nanosecond())),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(ev.reason.clone()),
            reason: Some(ev.reason.clone()),
            note: Some(ev.note.clone()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(r.controller.clone()),
            reporting_instance: Some(r.instance.clone().unwrap_or_else(|| r.controller.clone())),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..K8sEvent::default()
        }
    }
}

/// What makes two Events one series: the resource (by uid), type and reason (kube's
/// `Recorder` keyed them so too; the note is immutable once the Event exists).
fn series_key(ev: &Draft, regarding: &ObjectReference) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&regarding.namespace, &regarding.name, &regarding.uid).hash(&mut h);
    (matches!(ev.type_, EventType::Warning), &ev.reason).hash(&mut h);
    h.finish()
}

/// The Events that may still count repeats: per key, the Event's name, its count and when it
/// was last seen.
#[derive(Default)]
struct Series {
    live: HashMap<u64, (String, i32, Instant)>,
    swept: Option<Instant>,
}

impl Series {
    /// A repeat of a live Event: its name and new count. `None`: create a new Event.
    fn repeat(&mut self, key: u64, now: Instant) -> Option<(String, i32)> {
        self.sweep(now);
        let (name, count, last) = self.live.get_mut(&key)?;
        if now.duration_since(*last) >= SERIES_TTL {
            return None;
        }
        *count += 1;
        *last = now;
        Some((name.clone(), *count))
    }

    /// A new Event was created for `key`.
    fn record(&mut self, key: u64, name: String, now: Instant) {
        self.live.insert(key, (name, 1, now));
    }

    /// Drops expired entries, at most once a minute, and returns the memory of a table that
    /// emptied after a burst.
    fn sweep(&mut self, now: Instant) {
        if sweep_due(&mut self.swept, now) {
            self.live
                .retain(|_, (_, _, last)| now.duration_since(*last) < SERIES_TTL);
            shrink(&mut self.live);
        }
    }
}

/// Publishes Events without holding up the reconcile.
pub struct Events {
    limiter: Limiter,
    /// Events waiting for a permit, oldest first. A queued Event is its draft and reference
    /// (about 0.4 KB): a task per Event held its whole future, requests included, while it
    /// waited, and a cold start of 1,000 resources queues two Events each behind the API server.
    queue: mpsc::UnboundedSender<(Draft, ObjectReference)>,
}

impl Events {
    /// Events through `recorder`, one at a time per permit of `permits`.
    pub fn new(recorder: Recorder, permits: Arc<tokio::sync::Semaphore>) -> Events {
        let (queue, queued) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(recorder, permits, queued));
        Events {
            limiter: Limiter::default(),
            queue,
        }
    }

    /// Publishes one Event, unless one of the same reason went out less than
    /// [`MIN_INTERVAL`] ago.
    pub fn publish(&self, sr: &ServiceRegistration, type_: EventType, reason: &str, note: String) {
        self.publish_for(sr, type_, reason, note)
    }

    /// [`Events::publish`] for any resource (a RegistryImport).
    pub fn publish_for<K: Resource<DynamicType = ()>>(
        &self,
        sr: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let meta = sr.meta();
        let key = limit_key(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
            reason,
        );
        let Some(folded) = self.limiter.admit(key, Instant::now()) else {
            return;
        };
        let mut note = note;
        if folded > 0 {
            note.push_str(&format!(" (and {folded} similar change(s) before)"));
        }
        let ev = Draft {
            type_,
            reason: reason.into(),
            note: truncate(note, 1000),
        };
        // Fails only once the dispatcher is gone: the runtime is shutting down.
        let _ = self.queue.send((ev, sr.object_ref(&())));
    }
}

/// Publishes the queued Events in order, each in a task of its own once it holds a permit.
async fn dispatch(
    recorder: Recorder,
    permits: Arc<tokio::sync::Semaphore>,
    mut queued: mpsc::UnboundedReceiver<(Draft, ObjectReference)>,
) {
    while let Some((ev, reference)) = queued.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let recorder = recorder.clone();
        tokio::spawn(async move {
            if let Err(err) = recorder.publish(&ev, &reference).await {
                tracing::debug!(%err, "publishing an Event failed");
            }
            drop(permit);
        });
    }
}

/// Last Event time and suppressed count per key.
#[derive(Default)]
struct Limiter(Mutex<Limits>);

#[derive(Default)]
struct Limits {
    keys: HashMap<EventKey, (Instant, u32)>,
    swept: Option<Instant>,
}

impl Limiter {
    /// `Some(n)`: publish now, `n` Events of this key were folded since the last one.
    fn admit(&self, key: EventKey, now: Instant) -> Option<u32> {
        let mut limits = self.0.lock().expect("event limits lock");
        limits.sweep(now);
        match limits.keys.get_mut(&key) {
            Some((last, suppressed)) if now.duration_since(*last) < MIN_INTERVAL => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                *last = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                limits.keys.insert(key, (now, 0));
                Some(0)
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().expect("event limits lock").keys.len()
    }
}

impl Limits {
    /// At most once a minute, forgets the keys that admit the next Event as if new (nothing
    /// folded, the interval over), and those whose folded count is older than [`SERIES_TTL`]
    /// (resources deleted meanwhile among them).
    fn sweep(&mut self, now: Instant) {
        if sweep_due(&mut self.swept, now) {
            self.keys.retain(|_, (last, folded)| {
                let age = now.duration_since(*last);
                age < MIN_INTERVAL || (*folded > 0 && age < SERIES_TTL)
            });
            shrink(&mut self.keys);
        }
    }
}

/// Whether a sweep is due (the first, or a minute after the last); if so, it is taken now.
fn sweep_due(swept: &mut Option<Instant>, now: Instant) -> bool {
    let due = swept.is_none_or(|s| now.duration_since(s) >= Duration::from_secs(60));
    if due {
        *swept = Some(now);
    }
    due
}

/// Returns the memory of a table that emptied after a burst.
fn shrink<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 4 * map.len().max(16) {
        map.shrink_to_fit();
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resource named `name` in namespace "shop".
    fn resource(name: &str) -> ServiceRegistration {
        serde_yaml::from_str(&format!(
            "apiVersion: podkeeper.io/v1alpha1\nkind: ServiceRegistration\n\
             metadata: {{name: {name}, namespace: shop, uid: u-{name}}}\n\
             spec: {{selector: {{matchLabels: {{app: web}}}}, port: 80}}\n"
        ))
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn queued_events_wait_for_a_permit_and_go_out_in_order() {
        use http::{Request, Response};
        use kube::client::Body;
        let (service, mut api) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let reporter = Reporter {
            controller: "podkeeper".into(),
            instance: None,
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(0));
        let events = Events::new(Recorder::new(client, reporter), permits.clone());
        for name in ["a", "b", "c"] {
            events.publish(
                &resource(name),
                EventType::Normal,
                "Registered",
                name.into(),
            );
        }
        // The clock is paused: the timeout fires only once every task is idle.
        let idle = tokio::time::timeout(Duration::from_secs(1), api.next_request()).await;
        assert!(idle.is_err(), "nothing is sent without a permit");
        permits.add_permits(1);
        for name in ["a", "b", "c"] {
            let (req, send) = api.next_request().await.expect("an Event");
            let body = req.into_body().collect_bytes().await.unwrap();
            let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(event["note"], name, "in the order published");
            assert_eq!(event["regarding"]["name"], name);
            let answer = Response::builder()
                .status(201)
                .body(Body::from(body.to_vec()));
            send.send_response(answer.unwrap());
        }
        let back = tokio::time::timeout(Duration::from_secs(5), permits.acquire()).await;
        assert!(
            back.is_ok(),
            "the permit comes back once the Event is published"
        );
    }

    #[test]
    fn a_reason_fires_once_per_interval_and_the_next_one_counts_what_it_folded() {
        let l = Limiter::default();
        let key = |r: &str| limit_key("ns", "web", r);
        let t0 = Instant::now();
        assert_eq!(l.admit(key("Added"), t0), Some(0));
        assert_eq!(l.admit(key("Added"), t0 + Duration::from_secs(1)), None);
        assert_eq!(l.admit(key("Added"), t0 + Duration::from_secs(2)), None);
        assert_eq!(
            l.admit(key("Removed"), t0),
            Some(0),
            "reasons are limited apart"
        );
        assert_eq!(l.admit(key("Added"), t0 + MIN_INTERVAL), Some(2));
        assert_eq!(l.admit(key("Added"), t0 + MIN_INTERVAL * 3), Some(0));
        let other = limit_key("ns", "web-2", "Added");
        assert_eq!(
            l.admit(other, t0 + MIN_INTERVAL * 3),
            Some(0),
            "resources apart"
        );
        assert_ne!(
            limit_key("n", "sweb", "Added"),
            key("Added"),
            "fields apart"
        );
    }

    #[test]
    fn keys_that_would_admit_as_new_are_forgotten() {
        let l = Limiter::default();
        let key = |r: &str| limit_key("ns", "web", r);
        let t0 = Instant::now();
        assert_eq!(l.admit(key("Added"), t0), Some(0));
        assert_eq!(l.admit(key("Removed"), t0), Some(0));
        assert_eq!(l.admit(key("Removed"), t0 + Duration::from_secs(1)), None);
        assert_eq!(l.len(), 2);
        let later = t0 + Duration::from_secs(61);
        assert_eq!(l.admit(key("Other"), later), Some(0));
        assert_eq!(
            l.len(),
            2,
            "Added went (nothing folded), Removed stays (one folded)"
        );
        assert_eq!(
            l.admit(key("Removed"), later + Duration::from_secs(1)),
            Some(1),
            "the folded count survives the sweep"
        );
        assert_eq!(l.admit(key("Added"), later), Some(0));
        assert_eq!(
            l.admit(key("Removed"), later + Duration::from_secs(2)),
            None
        );
        let much_later = later + SERIES_TTL + Duration::from_secs(61);
        assert_eq!(l.admit(key("Other"), much_later), Some(0));
        assert_eq!(
            l.len(),
            1,
            "a folded count older than the series TTL goes too"
        );
        assert_eq!(l.admit(key("Removed"), much_later), Some(0));
    }

    fn draft(note: &str) -> Draft {
        Draft {
            type_: EventType::Normal,
            reason: "Added".into(),
            note: note.into(),
        }
    }

    fn regarding(uid: &str) -> ObjectReference {
        ObjectReference {
            namespace: Some("shop".into()),
            name: Some("web".into()),
            uid: Some(uid.into()),
            ..ObjectReference::default()
        }
    }

    #[test]
    fn a_repeat_within_the_ttl_counts_into_the_first_events_series() {
        let mut s = Series::default();
        let t0 = Instant::now();
        let a = series_key(&draft("added web-1"), &regarding("u1"));
        assert_eq!(
            a,
            series_key(&draft("added web-2"), &regarding("u1")),
            "the note does not count"
        );
        let removed = Draft {
            reason: "Removed".into(),
            ..draft("added web-1")
        };
        assert_ne!(a, series_key(&removed, &regarding("u1")), "reason");
        assert_ne!(
            a,
            series_key(&draft("added web-1"), &regarding("u2")),
            "resource"
        );
        assert_eq!(s.repeat(a, t0), None, "first: create");
        s.record(a, "web.1".into(), t0);
        assert_eq!(
            s.repeat(a, t0 + Duration::from_secs(1)),
            Some(("web.1".into(), 2))
        );
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(s.repeat(a, t1), Some(("web.1".into(), 3)));
        assert_eq!(
            s.repeat(a, t1 + SERIES_TTL),
            None,
            "a TTL after the last repeat: a new Event"
        );
    }

    #[test]
    fn expired_series_are_dropped_and_an_emptied_table_shrinks() {
        let mut s = Series::default();
        let t0 = Instant::now();
        for k in 0..1000 {
            s.record(k, format!("web.{k}"), t0);
        }
        let big = s.live.capacity();
        assert_eq!(
            s.repeat(5, t0 + Duration::from_secs(1)),
            Some(("web.5".into(), 2))
        );
        let later = t0 + SERIES_TTL + Duration::from_secs(61);
        assert_eq!(s.repeat(5, later), None);
        assert!(s.live.is_empty(), "every entry expired");
        assert!(
            s.live.capacity() < big / 4,
            "{} of {big}",
            s.live.capacity()
        );
    }

    #[test]
    fn notes_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("ééé".into(), 3), "é");
        assert_eq!(truncate("abc".into(), 5), "abc");
    }
}

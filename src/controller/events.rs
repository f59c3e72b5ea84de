//! Kubernetes Events of a resource, rate-limited per reason so churn does not load the API
//! server: a reason fires at most once per interval, and the next one says how many it folded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Resource;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};

use crate::crd::ServiceRegistration;

/// The least time between two Events of one reason on one resource; the rest are counted.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);

/// (namespace, name, reason).
type EventKey = (String, String, String);

/// Publishes Events without holding up the reconcile.
pub struct Events {
    recorder: Recorder,
    limiter: Limiter,
    /// Shared with the status writers: API writes in flight at once.
    permits: Arc<tokio::sync::Semaphore>,
}

impl Events {
    /// Events through `recorder`, one at a time per permit of `permits`.
    pub fn new(recorder: Recorder, permits: Arc<tokio::sync::Semaphore>) -> Events {
        Events {
            recorder,
            limiter: Limiter::default(),
            permits,
        }
    }

    /// Publishes one Event, unless one of the same reason went out less than
    /// [`MIN_INTERVAL`] ago.
    pub fn publish(&self, sr: &ServiceRegistration, type_: EventType, reason: &str, note: String) {
        let meta = sr.meta();
        let key = (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
            reason.to_string(),
        );
        let Some(folded) = self.limiter.admit(key, Instant::now()) else {
            return;
        };
        let mut note = note;
        if folded > 0 {
            note.push_str(&format!(" (and {folded} similar change(s) before)"));
        }
        let recorder = self.recorder.clone();
        let reference = sr.object_ref(&());
        let ev = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, 1000)),
            action: reason.into(),
            secondary: None,
        };
        let permits = self.permits.clone();
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            if let Err(err) = recorder.publish(&ev, &reference).await {
                tracing::debug!(%err, "publishing an Event failed");
            }
        });
    }
}

/// Last Event time and suppressed count per key.
#[derive(Default)]
struct Limiter(Mutex<HashMap<EventKey, (Instant, u32)>>);

impl Limiter {
    /// `Some(n)`: publish now, `n` Events of this key were folded since the last one.
    fn admit(&self, key: EventKey, now: Instant) -> Option<u32> {
        let mut limits = self.0.lock().expect("event limits lock");
        match limits.get_mut(&key) {
            Some((last, suppressed)) if now.duration_since(*last) < MIN_INTERVAL => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                *last = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                limits.insert(key, (now, 0));
                Some(0)
            }
        }
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

    #[test]
    fn a_reason_fires_once_per_interval_and_the_next_one_counts_what_it_folded() {
        let l = Limiter::default();
        let key = |r: &str| ("ns".to_string(), "web".to_string(), r.to_string());
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
    }

    #[test]
    fn notes_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("ééé".into(), 3), "é");
        assert_eq!(truncate("abc".into(), 5), "abc");
    }
}

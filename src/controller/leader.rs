//! Leader election over a coordination.k8s.io Lease: one replica writes, the others keep warm
//! caches. Only decides who leads; fencing of ZooKeeper writes lives in the writer.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;

/// Who leads, as seen by this replica: `Some(term)` while it leads.
pub struct Leadership {
    state: watch::Sender<Option<u64>>,
    elected: bool,
    /// Shutting down: the elector stops, and takes the Lease no more.
    resigned: std::sync::atomic::AtomicBool,
}

impl Leadership {
    /// Without election: this replica always leads (term 1).
    pub fn always() -> Leadership {
        Leadership {
            state: watch::channel(Some(1)).0,
            elected: false,
            resigned: Default::default(),
        }
    }

    /// With election: nobody leads until the Lease is won.
    pub fn elected() -> Leadership {
        Leadership {
            state: watch::channel(None).0,
            elected: true,
            resigned: Default::default(),
        }
    }

    /// Is leadership decided by a Lease (and writes fenced)?
    pub fn is_elected(&self) -> bool {
        self.elected
    }

    /// The current term, if this replica leads.
    pub fn term(&self) -> Option<u64> {
        *self.state.borrow()
    }

    /// Follows leadership changes.
    pub fn subscribe(&self) -> watch::Receiver<Option<u64>> {
        self.state.subscribe()
    }

    /// Stops leading `term` (e.g. a write was fenced); the elector may win a new term later.
    pub fn step_down(&self, term: u64) {
        self.state.send_if_modified(|s| {
            if *s == Some(term) {
                tracing::warn!(term, "stepping down");
                *s = None;
                true
            } else {
                false
            }
        });
    }

    /// Leads no more, for good (shutdown): see [`release`].
    pub fn resign(&self) {
        self.resigned
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.term() {
            self.step_down(t);
        }
    }

    fn resigned(&self) -> bool {
        self.resigned.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn lead(&self, term: u64) {
        tracing::info!(term, "leading");
        self.state.send_replace(Some(term));
    }
}

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// This replica's identity.
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: Duration,
}

/// Runs the election until the process ends.
pub async fn run(api: Api<Lease>, cfg: LeaseConfig, leadership: std::sync::Arc<Leadership>) {
    let retry = (cfg.duration / 4).max(Duration::from_millis(200));
    let mut term = 0u64;
    // The holder and version we last saw, and when we saw them change: a lease is expired when
    // it has not changed for `duration` by our own clock (no trust in others' clocks).
    let mut observed: Option<(String, String, Instant)> = None;
    let mut last_renew = Instant::now();
    while !leadership.resigned() {
        let now = Instant::now();
        match api.get_opt(&cfg.name).await {
            Ok(None) => {
                if create(&api, &cfg).await {
                    term += 1;
                    last_renew = now;
                    leadership.lead(term);
                }
            }
            Ok(Some(lease)) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let holder = spec.holder_identity.clone().unwrap_or_default();
                let version = lease.metadata.resource_version.clone().unwrap_or_default();
                let changed = observed
                    .as_ref()
                    .is_none_or(|(h, v, _)| *h != holder || *v != version);
                if changed {
                    observed = Some((holder.clone(), version.clone(), now));
                }
                let seen_at = observed.as_ref().map_or(now, |o| o.2);
                let mine = holder == cfg.identity;
                let expired = holder.is_empty() || now.duration_since(seen_at) >= cfg.duration;
                if (mine || expired) && !leadership.resigned() {
                    if take(&api, lease, &cfg, !mine).await {
                        last_renew = now;
                        if leadership.term().is_none() {
                            term += 1;
                            leadership.lead(term);
                        }
                    }
                } else if let Some(t) = leadership.term() {
                    tracing::warn!(holder = %holder, "the Lease is held by another replica");
                    leadership.step_down(t);
                }
            }
            Err(err) => tracing::warn!(%err, "reading the Lease failed"),
        }
        // Unable to renew for most of the lease: stop writing before anyone else may start.
        if let Some(t) = leadership.term()
            && now.duration_since(last_renew) > cfg.duration.saturating_sub(retry)
        {
            leadership.step_down(t);
        }
        tokio::time::sleep(retry).await;
    }
}

/// On shutdown: resigns, and hands the Lease back when this replica holds it (no holder, a
/// 1 s duration, as client-go's `ReleaseOnCancel`), so a standby leads at once instead of
/// after the lease runs out. Safe with writes still in flight: the next leader bumps the
/// epoch first, which fences them.
pub async fn release(api: &Api<Lease>, cfg: &LeaseConfig, leadership: &Leadership) {
    let led = leadership.term().is_some();
    leadership.resign();
    let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else {
        return;
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if !led || spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(lease = %cfg.name, "released the Lease"),
        Err(err) => tracing::warn!(%err, "releasing the Lease failed; it runs out by itself"),
    }
}

fn spec(cfg: &LeaseConfig, transitions: i32, acquire: bool, old: Option<&LeaseSpec>) -> LeaseSpec {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.duration.as_secs().max(1) as i32),
        acquire_time: if acquire {
            Some(now.clone())
        } else {
            old.and_then(|o| o.acquire_time.clone())
        },
        renew_time: Some(now),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

async fn create(api: &Api<Lease>, cfg: &LeaseConfig) -> bool {
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(cfg.name.clone()),
            ..Default::default()
        },
        spec: Some(spec(cfg, 0, true, None)),
    };
    api.create(&PostParams::default(), &lease).await.is_ok()
}

/// Renews (or, when `acquire`, takes over) the lease; the resourceVersion makes it atomic.
async fn take(api: &Api<Lease>, mut lease: Lease, cfg: &LeaseConfig, acquire: bool) -> bool {
    let old = lease.spec.clone();
    let transitions =
        old.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0) + i32::from(acquire);
    lease.spec = Some(spec(cfg, transitions, acquire, old.as_ref()));
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => true,
        Err(err) => {
            tracing::debug!(%err, "updating the Lease failed");
            false
        }
    }
}

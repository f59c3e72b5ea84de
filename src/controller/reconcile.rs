//! One reconcile of one ServiceRegistration: compile the spec, compute the desired endpoints,
//! diff them against ZooKeeper, write the difference, then report status and Events.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::watch;

use super::Context;
use super::index::PodEntry;
use super::status::{self, Counts, Outcome};
use crate::crd::{FINALIZER, ServiceRegistration, ServiceRegistrationStatus};
use crate::model::desired::{Registration, Tracker};
use crate::model::plan::Op;
use crate::model::record::{EndpointRecord, Owner, ServiceRecord};
use crate::zk::ZkError;
use crate::zk::layout;
use crate::zk::session::Target;
use crate::zk::writer::{self, Loaded, ServiceState, Synced, WriteOptions};

/// A failed reconcile, retried by the error policy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// ZooKeeper failed.
    #[error(transparent)]
    ZooKeeper(#[from] ZkError),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::ZooKeeper(e) => e.kind(),
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// What the operator remembers of one resource between reconciles.
#[derive(Default)]
pub struct Entry {
    compiled: Option<(i64, Arc<Registration>)>,
    zk: Option<Cached>,
    last_status: Option<ServiceRegistrationStatus>,
    status_tx: Option<watch::Sender<Option<ServiceRegistrationStatus>>>,
    last_start: Option<Instant>,
    announced: bool,
    last: Option<Last>,
}

/// The last computed desired state, updated pod by pod while spec, nodes and the resync epoch
/// stay the same.
struct Last {
    generation: i64,
    node_epoch: u64,
    epoch: u64,
    tracker: Tracker,
}

struct Cached {
    session_generation: u64,
    epoch: u64,
    target: Option<Target>,
    path: String,
    state: ServiceState,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Entry point for the controller.
pub async fn reconcile(sr: Arc<ServiceRegistration>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    if !ctx.index.synced() {
        // Never act on a partial pod list: it would deregister pods not listed yet.
        return Ok(Action::await_change());
    }
    let Some(term) = ctx.leadership.term() else {
        // Followers keep their caches warm and write nothing.
        return Ok(Action::await_change());
    };
    let ns = sr.namespace().unwrap_or_default();
    let api: Api<ServiceRegistration> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, sr, |event| async {
        match event {
            Finalizer::Apply(sr) => apply(sr, &ctx, term).await,
            Finalizer::Cleanup(sr) => cleanup(sr, &ctx, term).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    });
    if let Err(Error::ZooKeeper(ZkError::Fenced { path })) = &result {
        // Another replica leads now: stop writing at once, without waiting for the Lease loop.
        tracing::warn!(%path, term, "write rejected by the leader fence");
        ctx.leadership.step_down(term);
    }
    let m = crate::metrics::get();
    m.reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    m.reconciles
        .get_or_create(&crate::metrics::ResultLabels {
            result: label.into(),
        })
        .inc();
    result
}

/// Retry policy: soon for races and outages, later for the rest.
pub fn error_policy(sr: Arc<ServiceRegistration>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %sr.name_any(), namespace = ?sr.namespace(), %err, "reconcile failed");
    match err {
        Error::ZooKeeper(e) if e.is_transient() => Action::requeue(Duration::from_millis(500)),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}

impl Context {
    fn entry(&self, key: &(String, String)) -> Arc<tokio::sync::Mutex<Entry>> {
        self.entries
            .lock()
            .expect("entries lock")
            .entry(key.clone())
            .or_default()
            .clone()
    }

    fn owner(&self, sr: &ServiceRegistration) -> Owner {
        Owner {
            cluster_id: self.settings.cluster_id.clone(),
            namespace: sr.namespace().unwrap_or_default(),
            name: sr.name_any(),
            uid: sr.uid().unwrap_or_default(),
        }
    }

    /// Publishes an Event without holding up the reconcile.
    fn event(&self, sr: &ServiceRegistration, type_: EventType, reason: &str, mut note: String) {
        let key = (
            sr.namespace().unwrap_or_default(),
            sr.name_any(),
            reason.to_string(),
        );
        {
            let mut limits = self.event_limits.lock().expect("event limits lock");
            let now = Instant::now();
            match limits.get_mut(&key) {
                Some((last, suppressed)) if now.duration_since(*last) < EVENT_MIN_INTERVAL => {
                    *suppressed += 1;
                    return;
                }
                Some((last, suppressed)) => {
                    if *suppressed > 0 {
                        note.push_str(&format!(" (and {suppressed} similar change(s) before)"));
                    }
                    *last = now;
                    *suppressed = 0;
                }
                None => {
                    limits.insert(key, (now, 0));
                }
            }
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
        tokio::spawn(async move {
            if let Err(err) = recorder.publish(&ev, &reference).await {
                tracing::debug!(%err, "publishing an Event failed");
            }
        });
    }

    fn register(&self, ns: &str, name: &str, reg: Option<Arc<Registration>>) {
        let mut regs = self.registrations.write().expect("registrations lock");
        match reg {
            Some(reg) => {
                let new_keys: Vec<String> = {
                    let keys = self.annotation_keys.read().expect("keys lock");
                    reg.annotation_keys()
                        .filter(|k| !keys.contains(*k))
                        .map(str::to_string)
                        .collect()
                };
                regs.entry(ns.to_string())
                    .or_default()
                    .insert(name.to_string(), reg);
                if !new_keys.is_empty() {
                    let mut keys = self.annotation_keys.write().expect("keys lock");
                    let mut set = (**keys).clone();
                    set.extend(new_keys);
                    *keys = Arc::new(set);
                    self.relist.notify_waiters();
                }
            }
            None => {
                if let Some(m) = regs.get_mut(ns) {
                    m.remove(name);
                }
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

fn target_of(sr: &ServiceRegistration) -> Option<Target> {
    sr.spec.zookeeper.as_ref().map(|z| Target {
        connect: z.connect.clone(),
        chroot: z.chroot.clone(),
    })
}

/// Sends the status to the resource's status writer, which patches only the latest one.
fn report(
    ctx: &Arc<Context>,
    sr: &ServiceRegistration,
    entry: &mut Entry,
    outcome: &Outcome,
    counts: Option<&Counts>,
    path: Option<&str>,
) {
    let prev = entry.last_status.clone().or_else(|| sr.status.clone());
    let new = status::build(
        prev.as_ref(),
        sr.meta().generation,
        outcome,
        counts,
        path,
        &now_rfc3339(),
    );
    if prev.as_ref().is_some_and(|p| status::same(p, &new)) {
        return;
    }
    entry.last_status = Some(new.clone());
    let tx = entry.status_tx.get_or_insert_with(|| {
        let (tx, rx) = watch::channel(None);
        let api: Api<ServiceRegistration> =
            Api::namespaced(ctx.client.clone(), &sr.namespace().unwrap_or_default());
        tokio::spawn(status_writer(api, sr.name_any(), rx));
        tx
    });
    let _ = tx.send(Some(new));
}

/// Patches the newest status; a burst of changes becomes one patch.
/// The least time between two status patches of one resource.
const STATUS_MIN_INTERVAL: Duration = Duration::from_millis(500);
/// The least time between two Events of one reason on one resource; the rest are counted.
const EVENT_MIN_INTERVAL: Duration = Duration::from_secs(5);

async fn status_writer(
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
                    // Under churn, statuses coalesce here instead of loading the API server
                    // (which the operator's own watches share) with one patch per change.
                    tokio::time::sleep(STATUS_MIN_INTERVAL).await;
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

async fn apply(
    sr: Arc<ServiceRegistration>,
    ctx: &Arc<Context>,
    term: u64,
) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = sr.namespace().unwrap_or_default();
    let name = sr.name_any();
    let key = (ns.clone(), name.clone());
    let entry = ctx.entry(&key);
    let mut entry = entry.lock().await;
    let last_start = entry.last_start.replace(started);

    let generation = sr.meta().generation.unwrap_or(0);
    let reg = match &entry.compiled {
        Some((g, reg)) if *g == generation => reg.clone(),
        _ => match Registration::compile(&ns, &sr.spec) {
            Ok(reg) => {
                let reg = Arc::new(reg);
                entry.compiled = Some((generation, reg.clone()));
                reg
            }
            Err(err) => {
                ctx.register(&ns, &name, None);
                let msg = err.to_string();
                ctx.event(&sr, EventType::Warning, "InvalidSpec", msg.clone());
                report(ctx, &sr, &mut entry, &Outcome::InvalidSpec(msg), None, None);
                return Ok(Action::await_change());
            }
        },
    };
    ctx.register(&ns, &name, Some(reg.clone()));

    let path = match layout::service_path(
        sr.spec.path.as_deref(),
        &ctx.settings.allowed_path_prefix,
        &ns,
        &sr.service_name(),
    ) {
        Ok(p) => p,
        Err(err) => {
            let msg = err.to_string();
            ctx.event(&sr, EventType::Warning, "PathRefused", msg.clone());
            report(ctx, &sr, &mut entry, &Outcome::PathRefused(msg), None, None);
            return Ok(Action::await_change());
        }
    };
    if sr.spec.suspend {
        report(ctx, &sr, &mut entry, &Outcome::Suspended, None, Some(&path));
        return Ok(Action::await_change());
    }

    let target = target_of(&sr);
    let session = ctx.sessions.get(target.as_ref());
    let (client, session_generation) = match session.client() {
        Ok(c) => c,
        Err(err) => {
            report(
                ctx,
                &sr,
                &mut entry,
                &Outcome::ZooKeeperUnavailable(err.to_string()),
                None,
                Some(&path),
            );
            // The session task triggers a resync when it connects; this is a safety net.
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    };
    let owner = ctx.owner(&sr);
    let epoch = ctx.resync_epoch.load(Ordering::Acquire);
    let options = WriteOptions {
        fence: ctx.fence(&session, &client, term).await?,
        dry_run: ctx.settings.dry_run,
        max_deletes_per_txn: ctx.settings.max_deletes_per_txn,
        format: Default::default(),
    };

    // The resource moved (path or ensemble changed): remove what it owned at the old place.
    let previous = match &entry.zk {
        Some(c) => Some((c.target.clone(), c.path.clone())),
        None => sr
            .status
            .as_ref()
            .and_then(|s| s.path.clone())
            .map(|p| (target.clone(), p)),
    };
    if let Some((old_target, old_path)) = previous.filter(|(t, p)| *p != path || *t != target) {
        let old_session = ctx.sessions.get(old_target.as_ref());
        if let (Ok((old_client, _)), false) = (old_session.client(), options.dry_run)
            && let Loaded::Owned(state) =
                writer::load_as(&old_client, &old_path, &owner, options.format).await?
        {
            let fence = ctx.fence(&old_session, &old_client, term).await?;
            writer::remove_all(&old_client, &old_path, &state, fence.as_ref()).await?;
            ctx.event(
                &sr,
                EventType::Normal,
                "Moved",
                format!("removed the registration at {old_path}; now at {path}"),
            );
        }
        entry.zk = None;
    }

    let mut record = ServiceRecord {
        service_name: sr.service_name(),
        policy: sr.spec.load_balancer.policy,
        owner,
        generation,
        stale: false,
    };
    let fresh = entry.zk.as_ref().is_some_and(|c| {
        c.session_generation == session_generation
            && c.epoch == epoch
            && c.path == path
            && c.target == target
    });
    let mut cache = if fresh {
        entry.zk.take().map(|c| c.state)
    } else {
        None
    };
    let now = now_ms();
    let node_epoch = ctx.node_epoch.load(Ordering::Acquire);
    let dirty = ctx.take_dirty(&key);
    let last = entry
        .last
        .take()
        .filter(|l| l.generation == generation && l.node_epoch == node_epoch && l.epoch == epoch);
    let due = last
        .as_ref()
        .and_then(|l| l.tracker.next_wakeup_ms())
        .is_some_and(|d| d <= now);
    if let (Some(l), true, Some(_)) = (&last, dirty.is_empty() && !due, &cache) {
        // Nothing this resource depends on changed (typically our own status patch came back):
        // ZooKeeper already holds what a recompute would produce.
        let requeue = l
            .tracker
            .next_wakeup_ms()
            .map_or(ctx.settings.resync_interval, |d| {
                Duration::from_millis((d - now).clamp(1, i64::MAX) as u64 + 5)
            });
        entry.zk = cache.map(|state| Cached {
            session_generation,
            epoch,
            target: target.clone(),
            path: path.clone(),
            state,
        });
        entry.last = last;
        return Ok(Action::requeue(requeue));
    }
    entry.zk = None;
    // Building records is CPU work: keep it off the worker that polls sockets. With the state
    // of the last reconcile, only the pods changed since are looked at.
    let (tracker, changed_at) = tokio::task::block_in_place(|| {
        ctx.index.with_namespace_map(&ns, |pods, nodes| {
            let mut recent: HashMap<String, Instant> = HashMap::new();
            let mut note = |e: &PodEntry| {
                if last_start.is_some_and(|t| e.changed_at > t) {
                    recent.insert(e.info.name.to_string(), e.changed_at);
                }
            };
            let tracker = match last {
                Some(l) => {
                    let mut tracker = l.tracker;
                    let changed = dirty.iter().map(|name| {
                        let e = pods.and_then(|p| p.get(name.as_str()));
                        if let Some(e) = e {
                            note(e);
                        }
                        (name.as_str(), e.map(|e| &e.info))
                    });
                    tracker.update(&reg, changed, nodes, now);
                    tracker
                }
                None => Tracker::build(
                    &reg,
                    pods.into_iter().flat_map(|p| p.values()).map(|e| {
                        note(e);
                        &e.info
                    }),
                    nodes,
                    now,
                ),
            };
            (tracker, recent)
        })
    });
    let want = tracker.desired();
    // The stale guard is the only reason to write anything but the desired endpoints.
    let mut kept_last: Option<BTreeMap<String, Arc<EndpointRecord>>> = None;
    if sr.spec.keep_last_endpoints && !want.endpoints.values().any(|e| e.pickable()) {
        if cache.is_none()
            && let Loaded::Owned(state) =
                writer::load_as(&client, &path, &record.owner, options.format).await?
        {
            cache = Some(state);
        }
        let kept: BTreeMap<String, Arc<EndpointRecord>> = cache
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter_map(|(k, c)| {
                c.record
                    .clone()
                    .filter(|r| r.pickable())
                    .map(|r| (k.clone(), r))
            })
            .collect();
        if !kept.is_empty() {
            if !cache.as_ref().is_some_and(|s| s.record.stale) {
                ctx.event(
                    &sr,
                    EventType::Warning,
                    "KeptLastEndpoints",
                    format!(
                        "no selected pod is ready; keeping the last {} endpoint(s) at {path}, marked stale (spec.keepLastEndpoints)",
                        kept.len()
                    ),
                );
            }
            kept_last = Some(kept);
            record.stale = true;
        }
    }
    let endpoints = kept_last.as_ref().unwrap_or(&want.endpoints);
    match writer::sync(&client, &path, &record, endpoints, &mut cache, &options).await {
        Ok(Synced::DryRun { plan }) => {
            let (c, u, d) = plan.counts();
            if !plan.is_empty() {
                tracing::info!(%ns, %name, %path, creates = c, updates = u, deletes = d, ops = ?plan.ops.iter().map(|o| o.name()).collect::<Vec<_>>(), "dry run: would write");
            }
            return Ok(Action::requeue(ctx.settings.resync_interval));
        }
        Ok(Synced::Applied { plan, applied }) => {
            let done = Instant::now();
            for op in &plan.ops {
                if let Some(t) = changed_at.get(op.name()) {
                    crate::metrics::get()
                        .readiness_to_zk
                        .observe(done.duration_since(*t).as_secs_f64());
                }
            }
            if applied.znodes > 0 {
                tracing::debug!(%ns, %name, znodes = applied.znodes, txns = applied.transactions, "applied");
            }
            announce(ctx, &sr, &plan.ops, &mut entry.announced, &path);
            let state = cache.expect("sync leaves the cache filled on success");
            entry.zk = Some(Cached {
                session_generation,
                epoch,
                target: target.clone(),
                path: path.clone(),
                state,
            });
        }
        Ok(Synced::Conflict(who)) => {
            let msg = format!("{who}; this resource writes nothing until that path is free");
            ctx.event(&sr, EventType::Warning, "Conflict", msg.clone());
            report(
                ctx,
                &sr,
                &mut entry,
                &Outcome::Conflict(msg),
                None,
                Some(&path),
            );
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        Err(err) => {
            report(
                ctx,
                &sr,
                &mut entry,
                &Outcome::WriteFailed(err.to_string()),
                None,
                Some(&path),
            );
            return Err(err.into());
        }
    }
    let published = entry
        .zk
        .as_ref()
        .map_or(0, |c| c.state.endpoints.len() as u32);
    crate::metrics::get()
        .endpoints_published
        .get_or_create(&crate::metrics::ResourceLabels {
            namespace: ns.clone(),
            name: name.clone(),
        })
        .set(i64::from(published));
    let counts = Counts {
        matched: want.matched,
        ready: want.ready,
        published,
        draining: want.draining,
        groups: want.groups.clone(),
        warnings: want.warnings.clone(),
    };
    report(
        ctx,
        &sr,
        &mut entry,
        &Outcome::Synced,
        Some(&counts),
        Some(&path),
    );
    let next_deadline_ms = tracker.next_wakeup_ms();
    entry.last = Some(Last {
        generation,
        node_epoch,
        epoch,
        tracker,
    });
    Ok(match next_deadline_ms {
        Some(deadline) => Action::requeue(Duration::from_millis(
            (deadline - now_ms()).clamp(1, i64::MAX) as u64 + 5,
        )),
        None => Action::requeue(ctx.settings.resync_interval),
    })
}

/// Events for what a write did: registration, removal, rebalance.
fn announce(ctx: &Context, sr: &ServiceRegistration, ops: &[Op], announced: &mut bool, path: &str) {
    let names = |pred: fn(&Op) -> bool| -> Vec<&str> {
        ops.iter().filter(|o| pred(o)).map(Op::name).collect()
    };
    let list = |v: &[&str]| {
        let mut s = v.iter().take(5).copied().collect::<Vec<_>>().join(", ");
        if v.len() > 5 {
            s.push_str(&format!(" and {} more", v.len() - 5));
        }
        s
    };
    let created = names(|o| matches!(o, Op::Create { .. }));
    let removed = names(|o| matches!(o, Op::Delete { .. }));
    let updated = names(|o| matches!(o, Op::Update { .. }));
    if !*announced {
        *announced = true;
        ctx.event(
            sr,
            EventType::Normal,
            "Registered",
            format!("service registered at {path}"),
        );
    }
    if !created.is_empty() {
        ctx.event(
            sr,
            EventType::Normal,
            "EndpointsAdded",
            format!("added {}", list(&created)),
        );
    }
    if !removed.is_empty() {
        ctx.event(
            sr,
            EventType::Normal,
            "EndpointsRemoved",
            format!("removed {}", list(&removed)),
        );
    }
    if !updated.is_empty() {
        ctx.event(
            sr,
            EventType::Normal,
            "Rebalanced",
            format!("updated weights or records of {}", list(&updated)),
        );
    }
}

async fn cleanup(
    sr: Arc<ServiceRegistration>,
    ctx: &Arc<Context>,
    term: u64,
) -> Result<Action, Error> {
    let ns = sr.namespace().unwrap_or_default();
    let name = sr.name_any();
    let key = (ns.clone(), name.clone());
    ctx.register(&ns, &name, None);
    let entry = ctx.entry(&key);
    let mut entry = entry.lock().await;
    let target = entry
        .zk
        .as_ref()
        .map_or_else(|| target_of(&sr), |c| c.target.clone());
    let path = entry
        .zk
        .as_ref()
        .map(|c| c.path.clone())
        .or_else(|| sr.status.as_ref().and_then(|s| s.path.clone()))
        .or_else(|| {
            layout::service_path(
                sr.spec.path.as_deref(),
                &ctx.settings.allowed_path_prefix,
                &ns,
                &sr.service_name(),
            )
            .ok()
        });
    if let Some(path) = path {
        let (client, _) = ctx.sessions.get(target.as_ref()).client()?;
        if let Loaded::Owned(state) = writer::load(&client, &path, &ctx.owner(&sr)).await? {
            if ctx.settings.dry_run {
                tracing::info!(%path, "dry run: would remove the registration");
                return Ok(Action::await_change());
            }
            let session = ctx.sessions.get(target.as_ref());
            let fence = ctx.fence(&session, &client, term).await?;
            writer::remove_all(&client, &path, &state, fence.as_ref()).await?;
            ctx.event(
                &sr,
                EventType::Normal,
                "Deregistered",
                format!(
                    "removed {path} and its {} endpoint(s)",
                    state.endpoints.len()
                ),
            );
        }
    }
    entry.zk = None;
    entry.status_tx = None;
    drop(entry);
    ctx.entries.lock().expect("entries lock").remove(&key);
    crate::metrics::get()
        .endpoints_published
        .remove(&crate::metrics::ResourceLabels {
            namespace: ns,
            name,
        });
    Ok(Action::await_change())
}

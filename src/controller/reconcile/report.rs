//! Step 4 of a reconcile: the status, Events and metrics for what the write did, and when to
//! look again. Writes nothing to ZooKeeper.

use super::place::format_of;
use super::*;
use crate::crd::ServiceRegistrationStatus;

/// One status entry per declared registry: where it is, how many endpoints it carries, and
/// what stops it (an encoder's refusal, nodes others hold at our names).
pub(super) fn registry_statuses(
    res: &Resolved,
    specs: &[Registry],
    desired: &DesiredNodes,
    clashes: &[String],
    published: u32,
) -> Vec<RegistryStatus> {
    if specs.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    if res.native {
        out.push(RegistryStatus {
            format: RegistryFormat::Native,
            paths: vec![res.path.clone()],
            published,
            last_error: None,
        });
    }
    let clients = res.clients.iter().flat_map(|c| c.iter());
    for ((registry, dirs), result) in clients.zip(&desired.per_registry) {
        let held: Vec<&str> = clashes
            .iter()
            .filter(|p| dirs.iter().any(|d| p.starts_with(&format!("{d}/"))))
            .map(String::as_str)
            .collect();
        let (published, last_error) = match result {
            Err(e) => (0, Some(e.to_string())),
            Ok(_) if !held.is_empty() => (
                0,
                Some(format!(
                    "{} node(s) podkeeper would write are held by another writer and left alone: {}",
                    held.len(),
                    held.iter().take(3).copied().collect::<Vec<_>>().join(", ")
                )),
            ),
            Ok(n) => (*n, None),
        };
        out.push(RegistryStatus {
            format: format_of(registry),
            paths: dirs.clone(),
            published,
            last_error,
        });
    }
    out
}

/// Step 4: status, Events and metrics for what the write did; when to look again.
pub(super) fn report_written(
    ctx: &Context,
    sr: &ServiceRegistration,
    entry: &mut Entry,
    res: &Resolved,
    conn: &Connection,
    wanted: Wanted,
    written: Result<(Synced, DesiredNodes), ZkError>,
) -> Result<Action, ZkError> {
    let path = Some(res.path.as_str());
    let (written, desired) = match written {
        Ok((synced, desired)) => (Ok(synced), desired),
        Err(e) => (Err(e), DesiredNodes::default()),
    };
    let clashes = match written {
        Err(err) => {
            report(
                ctx,
                sr,
                entry,
                &Outcome::WriteFailed(err.to_string()),
                None,
                path,
            );
            return Err(err);
        }
        Ok(Synced::Conflict(who)) => {
            let msg = format!("{who}; this resource writes nothing until that path is free");
            ctx.events
                .publish(sr, EventType::Warning, "Conflict", msg.clone());
            report(ctx, sr, entry, &Outcome::Conflict(msg), None, path);
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        Ok(Synced::DryRun { plan, .. }) => {
            log_dry_run(&res.key, &res.path, &plan);
            return Ok(Action::requeue(ctx.settings.resync_interval));
        }
        Ok(Synced::Applied {
            plan,
            applied,
            nodes,
        }) => {
            observe_latency(&plan, &wanted.changed_at);
            if !nodes.clashes.is_empty() {
                let note = format!(
                    "{} client-format node(s) are held by another writer and left alone, e.g. {}",
                    nodes.clashes.len(),
                    nodes.clashes[0]
                );
                ctx.events.publish(sr, EventType::Warning, "Conflict", note);
            }
            if applied.znodes > 0 {
                tracing::debug!(namespace = %res.key.0, name = %res.key.1, znodes = applied.znodes, txns = applied.transactions, "applied");
            }
            announce(ctx, sr, &plan.ops, &mut entry.announced, &res.path);
            nodes.clashes
        }
    };
    let published = entry
        .zk
        .as_ref()
        .map_or(0, |c| c.state.endpoints.len() as u32);
    crate::metrics::get()
        .endpoints_published
        .get_or_create(&resource_labels(&res.key))
        .set(i64::from(published));
    let mut counts = counts(wanted.tracker.desired(), published);
    counts.registries = registry_statuses(res, &sr.spec.registries, &desired, &clashes, published);
    report(ctx, sr, entry, &Outcome::Synced, Some(&counts), path);
    let action = next_wakeup(Some(&wanted.tracker));
    let mut tracker = wanted.tracker;
    if res.native && wanted.kept.is_none() {
        tracker.published();
    } else {
        tracker.unpublished_all();
    }
    entry.last = Some(Last {
        generation: res.generation,
        reg: res.reg.clone(),
        node_epoch: wanted.node_epoch,
        epoch: conn.epoch,
        tracker,
    });
    Ok(action)
}

fn counts(want: &Desired, published: u32) -> Counts {
    Counts {
        matched: want.matched,
        ready: want.ready,
        published,
        draining: want.draining,
        groups: want.groups.clone(),
        warnings: want.warnings.clone(),
        registries: Vec::new(),
        unresolved: want.unresolved,
        unresolved_addresses: want
            .unresolved_pods
            .iter()
            .map(|(pod, reason)| crate::crd::UnresolvedAddress {
                pod: pod.clone(),
                reason: reason.clone(),
            })
            .collect(),
    }
}

/// Reconcile again when a drain ends; else on the next change or the periodic full resync,
/// which reconciles every resource (a requeue per resource would hold a scheduler entry for
/// each: 0.8 KB per resource, heaptrack).
pub(super) fn next_wakeup(tracker: Option<&Tracker>) -> Action {
    match tracker.and_then(Tracker::next_wakeup_ms) {
        Some(deadline) => Action::requeue(Duration::from_millis(
            (deadline - crate::now_ms()).clamp(1, i64::MAX) as u64 + 5,
        )),
        None => Action::await_change(),
    }
}

fn observe_latency(plan: &Plan, changed_at: &HashMap<String, Instant>) {
    let done = Instant::now();
    for op in &plan.ops {
        if let Some(t) = changed_at.get(op.name()) {
            crate::metrics::get()
                .readiness_to_zk
                .observe(done.duration_since(*t).as_secs_f64());
        }
    }
}

fn log_dry_run(key: &Key, path: &str, plan: &Plan) {
    if plan.is_empty() {
        return;
    }
    let (c, u, d) = plan.counts();
    let ops: Vec<&str> = plan.ops.iter().map(|o| o.name()).collect();
    tracing::info!(namespace = %key.0, name = %key.1, %path, creates = c, updates = u, deletes = d, ?ops, "dry run: would write");
}

/// Hands the status for `outcome` to the resource's status writer; nothing is patched when it
/// equals the last one.
pub(super) fn report(
    ctx: &Context,
    sr: &ServiceRegistration,
    entry: &mut Entry,
    outcome: &Outcome,
    counts: Option<&Counts>,
    path: Option<&str>,
) {
    let prev = entry.status.last(sr.status.as_ref()).cloned();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut new = status::build(
        prev.as_ref(),
        sr.meta().generation,
        outcome,
        counts,
        path,
        &now,
    );
    new.placement = entry
        .placed
        .clone()
        .or_else(|| prev.as_ref().and_then(|p| p.placement.clone()));
    // Never sent from here: a status queued before the intents were emptied would bring them
    // back (see `place::intend`).
    new.placement_intents = Vec::new();
    let key = key_of(sr);
    new.policy = Some(ctx.load.policy(&key, sr.spec.load_balancer.policy));
    new.load = ctx.load.status(&key);
    announce_policy(ctx, sr, prev.as_ref(), &new);
    let api = || {
        let ns = sr.namespace().unwrap_or_default();
        (Api::namespaced(ctx.client.clone(), &ns), sr.name_any())
    };
    entry.status.send(api, &ctx.api_writes, prev.as_ref(), new);
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
    if !*announced {
        *announced = true;
        let note = format!("service registered at {path}");
        ctx.events
            .publish(sr, EventType::Normal, "Registered", note);
    }
    /// (Event reason, verb, which operations).
    type Kind = (&'static str, &'static str, fn(&Op) -> bool);
    let kinds: [Kind; 3] = [
        ("EndpointsAdded", "added", |o| {
            matches!(o, Op::Create { .. })
        }),
        ("EndpointsRemoved", "removed", |o| {
            matches!(o, Op::Delete { .. })
        }),
        ("Rebalanced", "updated weights or records of", |o| {
            matches!(o, Op::Update { .. })
        }),
    ];
    for (reason, verb, pred) in kinds {
        let hit = names(pred);
        if !hit.is_empty() {
            let note = format!("{verb} {}", list(&hit));
            ctx.events.publish(sr, EventType::Normal, reason, note);
        }
    }
}

/// The load weighting's status moved since the last status sent (its figures are shown
/// rounded, so noise does not patch the status every period).
pub(super) fn load_status_moved(ctx: &Context, sr: &ServiceRegistration, entry: &Entry) -> bool {
    let key = key_of(sr);
    let prev = entry.status.last(sr.status.as_ref());
    let policy = Some(ctx.load.policy(&key, sr.spec.load_balancer.policy));
    let (old, new) = (prev.and_then(|p| p.load.as_ref()), ctx.load.status(&key));
    let moved = match (old, &new) {
        (Some(a), Some(b)) => {
            a.reason != b.reason
                || a.weighed != b.weighed
                || a.unweighed != b.unweighed
                || a.last_error != b.last_error
                || a.mean_utilization_percent
                    .abs_diff(b.mean_utilization_percent)
                    >= 5
                || a.capacity_spread_percent
                    .abs_diff(b.capacity_spread_percent)
                    >= 10
        }
        (a, b) => a.is_some() != b.is_some(),
    };
    moved || prev.is_some_and(|p| p.policy != policy)
}

/// An Event when the published policy switched from load (`loadBalancer.auto`).
fn announce_policy(
    ctx: &Context,
    sr: &ServiceRegistration,
    prev: Option<&ServiceRegistrationStatus>,
    new: &ServiceRegistrationStatus,
) {
    let (Some(was), Some(is)) = (prev.and_then(|p| p.policy), new.policy) else {
        return;
    };
    if was == is || sr.spec.load_balancer.auto.is_none() {
        return;
    }
    let why = new.load.as_ref().map_or("", |l| l.reason.as_str());
    let note = format!("load-balancing policy switched from {was} to {is} ({why})");
    ctx.events
        .publish(sr, EventType::Normal, "PolicySwitched", note);
}

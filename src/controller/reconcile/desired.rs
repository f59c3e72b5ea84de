//! Step 2 of a reconcile: the endpoints the selected pods call for, updated pod by pod from
//! the last reconcile's tracker when it still holds, and the keep-last guard. No writes.

use super::*;

/// Changed pods a reconcile updates on the worker thread itself (each costs a few µs).
const FEW_CHANGES: usize = 64;

/// Step 2: the endpoints the selected pods call for, updated from the pods changed since the
/// last reconcile, and the keep-last guard. `None` when nothing changed and ZooKeeper already
/// holds the result.
pub(super) async fn desired(
    ctx: &Context,
    sr: &ServiceRegistration,
    entry: &mut Entry,
    res: &Resolved,
    conn: &Connection,
    last_start: Option<Instant>,
) -> Result<Option<Wanted>, ZkError> {
    let epoch = conn.epoch;
    let fresh = entry.zk.as_ref().is_some_and(|c| {
        c.session_generation == conn.session_generation
            && c.epoch == epoch
            && c.generation == res.generation
            && c.path == res.path
            && c.target == res.target
            && c.state.record.policy == res.record.policy
            && c.state.record.load == res.record.load
    });
    if !fresh {
        entry.zk = None;
    }
    let now = crate::now_ms();
    let node_epoch = ctx.index.node_epoch();
    let dirty = ctx.index.take_dirty(&res.key);
    let last = entry.last.take().filter(|l| {
        l.generation == res.generation
            && Arc::ptr_eq(&l.reg, &res.reg)
            && l.node_epoch == node_epoch
            && l.epoch == epoch
    });
    let due = last
        .as_ref()
        .and_then(|l| l.tracker.next_wakeup_ms())
        .is_some_and(|d| d <= now);
    if last.is_some() && dirty.is_empty() && !due && entry.zk.is_some() {
        entry.last = last;
        return Ok(None);
    }
    // Building many records is CPU work: keep it off the worker that polls sockets. A few
    // changed pods cost microseconds, less than handing the worker's other tasks over.
    let few = last.is_some() && dirty.len() <= FEW_CHANGES;
    let track = || track(ctx, res, last.map(|l| l.tracker), &dirty, last_start, now);
    let (tracker, changed_at) = if few {
        track()
    } else {
        tokio::task::block_in_place(track)
    };
    entry.last = None;
    let mut wanted = Wanted {
        tracker,
        changed_at,
        kept: None,
        node_epoch,
        large: !few,
    };
    if guard::engaged(
        sr.spec.keep_last_endpoints,
        &wanted.tracker.desired().endpoints,
    ) {
        let mut cache = entry.zk.take().map(|c| c.state);
        if cache.is_none() {
            // Read afresh below: the tracker's changed names say nothing about what it holds.
            wanted.tracker.unpublished_all();
        }
        let published = writer::pickable(
            &conn.client,
            &res.path,
            &res.record.owner,
            &mut cache,
            &conn.options,
        )
        .await?;
        let already_stale = cache.as_ref().is_some_and(|s| s.record.stale);
        entry.zk = cache.map(|state| cached(conn, res, state));
        wanted.kept = guard::keep(published);
        if let Some(kept) = &wanted.kept
            && !already_stale
        {
            let note = format!(
                "no selected pod is ready; keeping the last {} endpoint(s) at {}, marked stale (spec.keepLastEndpoints)",
                kept.len(),
                res.path
            );
            ctx.events
                .publish(sr, EventType::Warning, "KeptLastEndpoints", note);
        }
    }
    Ok(Some(wanted))
}

/// The tracker brought up to date: only the dirty pods when the last one still holds, every
/// pod it may select otherwise. Also returns when each pod changed since `last_start` was seen.
fn track(
    ctx: &Context,
    res: &Resolved,
    last: Option<Tracker>,
    dirty: &std::collections::HashSet<String>,
    last_start: Option<Instant>,
    now: i64,
) -> (Tracker, HashMap<String, Instant>) {
    let mut recent: HashMap<String, Instant> = HashMap::new();
    let mut note = |e: &PodEntry| {
        if last_start.is_some_and(|t| e.changed_at > t) {
            recent.insert(e.info.name.to_string(), e.changed_at);
        }
    };
    let factors = ctx.load.factors(&res.key);
    let tracker = match last {
        Some(mut tracker) => ctx.index.with_namespace_map(&res.key.0, |pods, nodes| {
            let reweighed = tracker.set_factors(factors);
            let names = reweighed.iter().map(SmolStr::as_str);
            let names = dirty.iter().map(String::as_str).chain(names);
            let changed = names.map(|name| {
                let e = pods.and_then(|p| p.get(name));
                if let Some(e) = e {
                    note(e);
                }
                (name, e.map(|e| &e.info))
            });
            tracker.update(&res.reg, changed, nodes, now);
            tracker
        }),
        None => ctx
            .index
            .with_selectable(&res.key.0, &res.reg, |pods, nodes| {
                let all = pods.map(|e| {
                    note(e);
                    &e.info
                });
                Tracker::build_weighed(&res.reg, all, nodes, now, factors)
            }),
    };
    (tracker, recent)
}

//! Where a registration writes: what its namespace may publish (RegistryPolicies), where it
//! wrote before (`status.placement`), moving out of an old place once the new one is written,
//! withdrawing what a refused resource published, and cleaning up on deletion.

use super::*;
use kube::api::{Patch, PatchParams};

/// Once per resync epoch and folder: the folders above the resource's path at and below the
/// home prefix are set back to podkeeper's alone, where an older version (or anyone) left them
/// open to others' creates. Runs only on a cold cache, never on the per-pod path.
pub(super) async fn audit_home(ctx: &Context, res: &Resolved, conn: &Connection) {
    let Some((parent, _)) = res.path.rsplit_once('/') else {
        return;
    };
    if conn.options.dry_run || conn.options.acls.parent_kind(parent) != NodeKind::Owned {
        return;
    }
    let target = res
        .target
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    if !ctx.home_audit_due((target, parent.to_string()), conn.epoch) {
        return;
    }
    let fence = conn.options.fence.as_ref();
    let repaired = writer::repair_home_parents(&conn.client, &res.path, &conn.options.acls, fence);
    if let Err(err) = repaired.await {
        tracing::warn!(path = %res.path, %err, "cannot check the ACLs of the folders above");
    }
}

/// Checks what the resource asks to publish against its namespace's RegistryPolicies.
pub(super) fn permitted(
    ctx: &Context,
    sr: &ServiceRegistration,
    res: &Resolved,
) -> Result<(), Rejected> {
    let Some(tenancy) = ctx.policies.tenancy(&ctx.settings) else {
        return Err(Rejected::PolicyRefused(
            "RegistryPolicies are not listed yet".into(),
        ));
    };
    tenancy
        .check(&request(ctx, sr, res))
        .map_err(|r| Rejected::PolicyRefused(r.0))
}

/// What `res` asks to publish, in the terms RegistryPolicies grant.
fn request(ctx: &Context, sr: &ServiceRegistration, res: &Resolved) -> Request {
    let mut req = Request {
        namespace: res.key.0.clone(),
        namespace_labels: ctx.policies.labels_of(&res.key.0),
        native_path: res.path.clone(),
        template_host: match sr.spec.address.mode {
            crate::crd::AddressMode::Template => sr.spec.address.host.clone(),
            _ => None,
        },
        ensemble: own_ensemble(ctx, spec_ensemble(sr)).map(|e| (e.connect, e.chroot)),
        ..Default::default()
    };
    for (registry, dirs) in res.clients.iter().flat_map(|c| c.iter()) {
        match registry {
            ClientRegistry::Dubbo(o) => req.dubbo.extend(o.interfaces.iter().map(|i| DubboAsk {
                root: o.root_path(),
                interface: i.clone(),
                group: o.group.clone().unwrap_or_default(),
                version: o.version.clone().unwrap_or_default(),
            })),
            ClientRegistry::Curator(_) => req.curator.extend(dirs.iter().cloned()),
            ClientRegistry::ServerSet(_) => req.server_set.extend(dirs.iter().cloned()),
        }
    }
    req
}

/// A refused resource keeps shaping nobody's traffic: what it had published is removed (once
/// per place; its status keeps the place, so a later grant writes it again). Removing is the
/// documented choice: a registration its namespace may not make must not stay beside the
/// owners' providers, even when a policy is tightened after the fact.
pub(super) async fn withdraw(
    ctx: &Context,
    sr: &ServiceRegistration,
    entry: &mut Entry,
    term: u64,
) {
    // What this process remembers of ZooKeeper goes with what is withdrawn: a grant that comes
    // back must write everything again, not find nothing changed.
    entry.zk = None;
    entry.last = None;
    let Some(placed) = recorded(ctx, sr, entry) else {
        return;
    };
    if entry.withdrawn.as_ref() == Some(&placed) || ctx.settings.dry_run {
        return;
    }
    for r in placement::everything(&[&placed]) {
        match retire(ctx, sr, &r, term).await {
            Ok(n) if n > 0 => {
                let note = format!(
                    "withdrew {n} node(s) at {}: refused by RegistryPolicy",
                    where_(&r)
                );
                ctx.events
                    .publish(sr, EventType::Warning, "Withdrawn", note);
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(%err, "cannot withdraw a refused registration yet; retried at its next reconcile");
                return;
            }
        }
    }
    entry.withdrawn = Some(placed);
}

/// Where the resource's nodes go under `res`, with the ensemble written as `None` when it is
/// the operator's own (however the spec names it).
pub(super) fn placement_of(ctx: &Context, res: &Resolved) -> Placement {
    let zookeeper = own_ensemble(
        ctx,
        res.target.as_ref().map(|t| PlacedEnsemble {
            connect: t.connect.clone(),
            chroot: t.chroot.clone(),
        }),
    );
    let mut folders: Vec<PlacedFolder> = res
        .clients
        .iter()
        .flat_map(|c| c.iter())
        .flat_map(|(registry, dirs)| {
            dirs.iter().map(|d| PlacedFolder {
                format: format_of(registry),
                path: d.clone(),
            })
        })
        .collect();
    folders.sort();
    folders.dedup();
    Placement {
        zookeeper,
        path: res.path.clone(),
        folders,
    }
}

/// `None` for the operator's own ensemble, however it is named: a resource that names it must
/// not look moved (a move retires everything at the old place).
fn own_ensemble(ctx: &Context, z: Option<PlacedEnsemble>) -> Option<PlacedEnsemble> {
    let default = ctx.sessions.get(None);
    let own = default.target();
    let canonical = |z: PlacedEnsemble| {
        let t = Target {
            connect: z.connect,
            chroot: z.chroot,
        }
        .canonical();
        PlacedEnsemble {
            connect: t.connect,
            chroot: t.chroot,
        }
    };
    z.map(canonical)
        .filter(|z| z.connect != own.connect || z.chroot != own.chroot)
}

/// Where the resource's nodes were last confirmed: this process's memory, else the status
/// (which survives restarts), else, for a status written before placements were recorded, its
/// path and registries on the ensemble the spec names now.
pub(super) fn recorded(
    ctx: &Context,
    sr: &ServiceRegistration,
    entry: &Entry,
) -> Option<Placement> {
    if let Some(p) = &entry.placed {
        return Some(p.clone());
    }
    let status = sr.status.as_ref()?;
    if let Some(p) = &status.placement {
        let mut p = p.clone();
        p.zookeeper = own_ensemble(ctx, p.zookeeper);
        return Some(p);
    }
    let folders = status.registries.iter().flat_map(|r| {
        let native = r.format == RegistryFormat::Native;
        r.paths
            .iter()
            .filter(move |_| !native)
            .map(|p| PlacedFolder {
                format: r.format,
                path: p.clone(),
            })
    });
    Some(Placement {
        zookeeper: own_ensemble(ctx, spec_ensemble(sr)),
        path: status.path.clone()?,
        folders: folders.collect(),
    })
}

/// Places written, or about to be, that the resource has not confirmed yet: this process's
/// memory, else the status's `placementIntents`.
fn intents(ctx: &Context, sr: &ServiceRegistration, entry: &Entry) -> Vec<Placement> {
    if let Some(i) = &entry.intents {
        return i.clone();
    }
    let recorded = sr.status.as_ref().map(|s| s.placement_intents.clone());
    let mut out = recorded.unwrap_or_default();
    for p in &mut out {
        p.zookeeper = own_ensemble(ctx, p.zookeeper.take());
    }
    out
}

/// Step 3a, before ZooKeeper is written at a place the status does not hold yet: the place is
/// added to `status.placementIntents` first, and the write waits for that patch. A crash after
/// the write, and an edit back, then still finds it (see [`move_out`]).
pub(super) async fn intend(
    ctx: &Context,
    sr: &ServiceRegistration,
    entry: &mut Entry,
    res: &Resolved,
) -> Result<(), kube::Error> {
    let now = placement_of(ctx, res);
    let mut all = intents(ctx, sr, entry);
    if recorded(ctx, sr, entry).as_ref() == Some(&now) || all.contains(&now) {
        return Ok(());
    }
    all.push(now);
    patch_place(ctx, sr, serde_json::json!({ "placementIntents": all })).await?;
    entry.intents = Some(all);
    Ok(())
}

/// Confirms `now` as the place, emptying the intents, in one patch (only when there were
/// intents: otherwise the status writer records the place as before).
async fn confirm(
    ctx: &Context,
    sr: &ServiceRegistration,
    entry: &mut Entry,
    now: &Placement,
) -> Result<(), kube::Error> {
    if !intents(ctx, sr, entry).is_empty() {
        let patch = serde_json::json!({ "placement": now, "placementIntents": null });
        patch_place(ctx, sr, patch).await?;
    }
    entry.intents = Some(Vec::new());
    Ok(())
}

/// A merge patch of the given status fields, awaited (unlike the status writer's).
async fn patch_place(
    ctx: &Context,
    sr: &ServiceRegistration,
    fields: serde_json::Value,
) -> Result<(), kube::Error> {
    let api: Api<ServiceRegistration> =
        Api::namespaced(ctx.client.clone(), &sr.namespace().unwrap_or_default());
    let _permit = ctx.api_writes.acquire().await;
    let patch = Patch::Merge(serde_json::json!({ "status": fields }));
    api.patch_status(&sr.name_any(), &PatchParams::default(), &patch)
        .await
        .map(drop)
}

/// Step 3b, once ZooKeeper holds the resource at its place now: removes what the last place
/// held that this one does not want (another ensemble, an old path, a dropped folder), and
/// remembers the new place. False when the old place could not be cleaned yet: it stays
/// recorded and is retried.
pub(super) async fn move_out(
    ctx: &Context,
    sr: &ServiceRegistration,
    entry: &mut Entry,
    res: &Resolved,
    term: u64,
) -> bool {
    let now = placement_of(ctx, res);
    let olds = recorded(ctx, sr, entry).into_iter();
    let olds: Vec<Placement> = olds.chain(intents(ctx, sr, entry)).collect();
    for r in olds.iter().filter_map(|old| placement::retired(old, &now)) {
        match retire(ctx, sr, &r, term).await {
            Ok(n) => {
                let note = format!(
                    "removed {n} node(s) the resource no longer wants ({})",
                    where_(&r)
                );
                ctx.events.publish(sr, EventType::Normal, "Moved", note);
            }
            Err(err) => {
                let note = format!(
                    "cannot remove the old registration yet ({}): {err}",
                    where_(&r)
                );
                tracing::warn!(namespace = %res.key.0, name = %res.key.1, %note);
                ctx.events
                    .publish(sr, EventType::Warning, "MoveIncomplete", note);
                return false;
            }
        }
    }
    if let Err(err) = confirm(ctx, sr, entry, &now).await {
        tracing::warn!(namespace = %res.key.0, name = %res.key.1, %err, "cannot confirm the place yet");
        return false;
    }
    entry.placed = Some(now);
    entry.withdrawn = None;
    true
}

/// A move into or out of the registration's own subtree, refused: the old record cannot be
/// removed while the new one lies below it, nor the new one claimed where the old one's
/// folder stands. The old place keeps serving; the message says what to do instead.
pub(super) fn nested_move(
    ctx: &Context,
    sr: &ServiceRegistration,
    entry: &Entry,
    res: &Resolved,
) -> Option<Rejected> {
    let old = recorded(ctx, sr, entry)?;
    if old.zookeeper != placement_of(ctx, res).zookeeper || old.path == res.path {
        return None;
    }
    let inside = |a: &str, b: &str| b.starts_with(&format!("{a}/"));
    (inside(&old.path, &res.path) || inside(&res.path, &old.path)).then(|| {
        Rejected::PathRefused(format!(
            "spec.path {} is nested with {}, where this resource is published: move it to a path beside that one, never into or out of its own subtree",
            res.path, old.path
        ))
    })
}

/// How the tamper watches name an ensemble (empty: the operator's own).
pub(super) fn ensemble_key(z: &Option<PlacedEnsemble>) -> String {
    z.as_ref().map_or_else(String::new, |z| {
        format!("{}{}", z.connect, z.chroot.as_deref().unwrap_or(""))
    })
}

/// A retirement in words, for Events.
fn where_(r: &Retired) -> String {
    let mut parts: Vec<String> = r.path.iter().cloned().collect();
    parts.extend(r.folders.iter().map(|f| f.path.clone()));
    let on = r
        .zookeeper
        .as_ref()
        .map_or(String::new(), |z| format!(" on {}", z.connect));
    format!("{}{on}", parts.join(", "))
}

/// Removes what `r` names, on its ensemble, fenced like every write: the service record and
/// its endpoints (if the record is this resource's) and this resource's nodes in the folders.
async fn retire(
    ctx: &Context,
    sr: &ServiceRegistration,
    r: &Retired,
    term: u64,
) -> Result<usize, ZkError> {
    let target = r.zookeeper.as_ref().map(|z| Target {
        connect: z.connect.clone(),
        chroot: z.chroot.clone(),
    });
    let session = ctx.sessions.get(target.as_ref());
    let (client, generation) = session.client()?;
    let term = ctx.leadership.is_elected().then_some(term);
    let fence = ctx
        .fencer
        .fence(&session, &client, generation, term)
        .await?;
    let mut options = ctx.settings.write_options(fence, None, session.acls());
    options.ledger = Some(ctx.tamper.ledger(&ensemble_key(&r.zookeeper)));
    let owner = owner(&ctx.settings, sr);
    let mut removed = 0;
    if let Some(path) = &r.path {
        let tag = format!("{}/{}", owner.namespace, owner.name);
        ctx.tamper
            .unwatch_root(&ensemble_key(&r.zookeeper), path, &tag);
        removed += writer::remove_owned(&client, path, &owner, &options)
            .await?
            .unwrap_or(0);
    }
    let folders: Vec<(Kind, String)> = r
        .folders
        .iter()
        .filter_map(|f| kind_of(f.format).map(|k| (k, f.path.clone())))
        .collect();
    if !folders.is_empty() {
        let nodes = PlacedNodes::new(folders, OwnerTag::of(&owner));
        removed += writer::remove_nodes(&client, &nodes, &options).await?;
    }
    Ok(removed)
}

pub(super) fn format_of(registry: &ClientRegistry) -> RegistryFormat {
    match registry {
        ClientRegistry::Dubbo(_) => RegistryFormat::Dubbo,
        ClientRegistry::Curator(_) => RegistryFormat::Curator,
        ClientRegistry::ServerSet(_) => RegistryFormat::ServerSet,
    }
}

fn kind_of(format: RegistryFormat) -> Option<Kind> {
    match format {
        RegistryFormat::Native => None,
        RegistryFormat::Dubbo => Some(Kind::Dubbo),
        RegistryFormat::Curator => Some(Kind::Curator),
        RegistryFormat::ServerSet => Some(Kind::ServerSet),
    }
}

pub(super) async fn cleanup(
    sr: Arc<ServiceRegistration>,
    ctx: &Arc<Context>,
    term: u64,
) -> Result<Action, Error> {
    let key = key_of(&sr);
    ctx.index.register(&key.0, &key.1, None);
    ctx.tamper.unwatch(&format!("{}/{}", key.0, key.1));
    let entry = ctx.entry(&key);
    let entry = entry.lock().await;
    // Every place the resource may have nodes: the one recorded, and the one its spec names
    // now (written, perhaps, just before a crash that kept it off the status; never when its
    // policy refuses it, for then nothing was written there).
    let current = match resolve(&sr, &ctx.settings, &mut None, sr.spec.load_balancer.policy) {
        Ok(res) if ctx.policies.synced() && permitted(ctx, &sr, &res).is_err() => None,
        Ok(res) => Some(placement_of(ctx, &res)),
        Err(_) => layout::service_path(
            sr.spec.path.as_deref(),
            &ctx.settings.allowed_path_prefixes,
            &key.0,
            &sr.service_name(),
        )
        .ok()
        .map(|path| Placement {
            zookeeper: own_ensemble(ctx, spec_ensemble(&sr)),
            path,
            folders: Vec::new(),
        }),
    };
    let recorded = recorded(ctx, &sr, &entry);
    let intended = intents(ctx, &sr, &entry);
    let places: Vec<&Placement> = recorded.iter().chain(&intended).chain(&current).collect();
    if ctx.settings.dry_run {
        tracing::info!(?places, "dry run: would remove the registration");
        return Ok(Action::await_change());
    }
    // Every place is tried, whatever failed before it; the first failure is retried.
    let mut failed = None;
    for r in placement::everything(&places) {
        let n = match retire(ctx, &sr, &r, term).await {
            Ok(n) => n,
            // A place only the spec names, on an ensemble that cannot be reached: most likely
            // never written; waiting for it would hold the deletion (and its namespace) forever.
            Err(err @ ZkError::Unavailable { .. })
                if recorded.as_ref().is_none_or(|p| p.zookeeper != r.zookeeper) =>
            {
                tracing::warn!(%err, place = %where_(&r), "not cleaning an unreachable place the resource never recorded");
                continue;
            }
            Err(err) => {
                failed.get_or_insert(err);
                continue;
            }
        };
        if n > 0 {
            let note = format!("removed {n} node(s) at {}", where_(&r));
            ctx.events
                .publish(&sr, EventType::Normal, "Deregistered", note);
        }
    }
    if let Some(err) = failed {
        return Err(err.into());
    }
    drop(entry);
    ctx.forget(&key);
    crate::metrics::get()
        .endpoints_published
        .remove(&resource_labels(&key));
    Ok(Action::await_change())
}

pub(super) fn spec_ensemble(sr: &ServiceRegistration) -> Option<PlacedEnsemble> {
    target_of(sr).map(|t| PlacedEnsemble {
        connect: t.connect,
        chroot: t.chroot,
    })
}

//! One reconcile of one ServiceRegistration, in four steps: resolve (compile the spec and place
//! it: pure; bind a NodePort address to its Service), desired (the endpoints the pods call
//! for), write (one pass through `zk::writer`), report (status, Events, metrics, and the
//! `podkeeper.io/registered` gates). Talks to ZooKeeper only through the writer.
//! Step 2 is [`desired`]; where a registration writes, and moving out of where it wrote, is
//! [`place`]; step 4 is [`report`].

mod desired;
mod place;
mod report;

use desired::desired;
use place::{audit_home, cleanup, intend, move_out, nested_move, permitted, withdraw};
use report::{load_status_moved, next_wakeup, report, report_written};

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};
use smol_str::SmolStr;

use super::Context;
use super::index::{Key, PodEntry};
use super::status::{self, Counts, Outcome};
use super::status_writer::StatusWriter;
use crate::crd::{FINALIZER, Policy, ServiceRegistration};
use crate::crd::{PlacedEnsemble, PlacedFolder, Placement};
use crate::crd::{Registry, RegistryFormat, RegistryStatus};
use crate::model::desired::Desired;
use crate::model::guard::{self, Endpoints};
use crate::model::nodes;
use crate::model::placement::{self, Retired};
use crate::model::plan::{Op, Plan};
use crate::model::record::{Owner, ServiceRecord};
use crate::model::registration::Registration;
use crate::model::tenancy::{DubboAsk, Request};
use crate::model::tracker::Tracker;
use crate::zk::ZkError;
use crate::zk::acl::NodeKind;
use crate::zk::clients::{
    ClientRegistries, ClientRegistry, DesiredNodes, PlacedNodes, RegistryError,
};
use crate::zk::format::publish::OwnerTag;
use crate::zk::format::registry::Kind;
use crate::zk::layout;
use crate::zk::session::Target;
use crate::zk::writer::{self, ServiceState, Synced, WriteOptions};

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
    status: StatusWriter,
    last_start: Option<Instant>,
    announced: bool,
    last: Option<Last>,
    /// Readiness-gate patches in flight: pod → status sent.
    gates_sent: HashMap<String, bool>,
    /// Where its nodes are, as last confirmed (also on the status: see [`recorded`]).
    placed: Option<Placement>,
    /// A place already emptied because a RegistryPolicy refuses the resource.
    withdrawn: Option<Placement>,
    /// Places intended and not confirmed, as last patched (`None`: read the status).
    intents: Option<Vec<Placement>>,
}

impl Entry {
    /// A gate patch for `pod` failed: it may be sent again.
    pub(super) fn gate_failed(&mut self, pod: &str) {
        self.gates_sent.remove(pod);
    }
}

/// The last computed desired state, updated pod by pod while spec, nodes and the resync epoch
/// stay the same.
struct Last {
    generation: i64,
    /// The registration it was built with (a NodePort rebinding makes a new one).
    reg: Arc<Registration>,
    node_epoch: u64,
    epoch: u64,
    tracker: Tracker,
}

/// What ZooKeeper held after the last write, and under which session and place.
struct Cached {
    session_generation: u64,
    epoch: u64,
    /// The spec generation it was read under (client folders may differ in another).
    generation: i64,
    target: Option<Target>,
    path: String,
    state: ServiceState,
}

/// The resource compiled and placed: everything derived from the resource alone.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    pub key: Key,
    pub generation: i64,
    pub reg: Arc<Registration>,
    pub path: String,
    pub target: Option<Target>,
    pub record: ServiceRecord,
    /// Native endpoint records are published (no `spec.registries`, or a Native one).
    pub native: bool,
    /// The client-format registries, if any.
    pub clients: Option<Arc<ClientRegistries>>,
}

/// Why a resource is not acted on; shown on its status, nothing is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Rejected {
    InvalidSpec(String),
    PathRefused(String),
    AddressRefused(String),
    /// Outside its namespace's RegistryPolicies.
    PolicyRefused(String),
}

/// Where a reconcile stands with ZooKeeper: a client of the resource's ensemble, fenced for
/// this term.
struct Connection {
    client: crate::zk::Client,
    session_generation: u64,
    /// The resync epoch this reconcile started in: a cache from an older one is re-read.
    epoch: u64,
    options: WriteOptions,
}

/// What the desired step produced.
struct Wanted {
    tracker: Tracker,
    /// When each recently changed pod's change reached the operator (for the latency metric).
    changed_at: HashMap<String, Instant>,
    /// The keep-last guard's endpoints, published instead of the desired ones (stale).
    kept: Option<Endpoints>,
    /// The node epoch the tracker was built at.
    node_epoch: u64,
    /// Built from all pods or from many changed ones: a peak of memory for the write too.
    large: bool,
}

impl Wanted {
    fn endpoints(&self) -> &Endpoints {
        self.kept
            .as_ref()
            .unwrap_or(&self.tracker.desired().endpoints)
    }
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
        tracing::warn!(%path, term, "write rejected by the leader fence; stepping down");
        crate::metrics::get().leader_step_downs.inc();
        ctx.leadership.step_down(term);
    }
    let m = crate::metrics::get();
    m.reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let result_label = result.as_ref().map_or_else(Error::kind, |_| "ok");
    m.reconciles
        .get_or_create(&crate::metrics::ResultLabels {
            result: result_label.into(),
        })
        .inc();
    result
}

/// Retry policy: soon for races and outages, later for the rest.
pub fn error_policy(sr: Arc<ServiceRegistration>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %sr.name_any(), namespace = ?sr.namespace(), %err, "reconcile failed");
    Action::requeue(retry_delay(err))
}

/// How long a failed reconcile waits before its retry.
pub(super) fn retry_delay(err: &Error) -> Duration {
    match err {
        Error::ZooKeeper(e) if e.is_transient() => Duration::from_millis(500),
        _ => Duration::from_secs(5),
    }
}

async fn apply(
    sr: Arc<ServiceRegistration>,
    ctx: &Arc<Context>,
    term: u64,
) -> Result<Action, Error> {
    if !ctx.policies.synced() {
        // Not before the RegistryPolicies are known: it would withdraw what they grant.
        // Deletions (cleanup) do not wait for them.
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let key = key_of(&sr);
    let entry = ctx.entry(&key);
    let mut entry = entry.lock().await;
    // Another run of this resource may have held the entry meanwhile (a fast run beside the
    // controller's): act on what the resource is now.
    let Some(sr) = ctx.fast.current(sr) else {
        return Ok(Action::await_change());
    };
    let last_start = entry.last_start.replace(started);

    let published = ctx.load.policy(&key, sr.spec.load_balancer.policy);
    let res = match resolve(&sr, &ctx.settings, &mut entry.compiled, published)
        .and_then(|res| bind_address(ctx, res, &mut entry.compiled))
    {
        Ok(res) => res,
        Err(rejected) => return Ok(reject(ctx, &sr, &mut entry, rejected)),
    };
    if let Err(refused) = permitted(ctx, &sr, &res) {
        withdraw(ctx, &sr, &mut entry, term).await;
        return Ok(reject(ctx, &sr, &mut entry, refused));
    }
    if let Some(refused) = nested_move(ctx, &sr, &entry, &res) {
        return Ok(reject(ctx, &sr, &mut entry, refused));
    }
    ctx.index.register(&key.0, &key.1, Some(res.reg.clone()));
    ctx.load.configure(&key, &sr, &res.reg);
    let res = Resolved {
        record: ServiceRecord {
            load: ctx.load.mark(&key),
            ..res.record
        },
        ..res
    };
    if sr.spec.suspend {
        report(
            ctx,
            &sr,
            &mut entry,
            &Outcome::Suspended,
            None,
            Some(&res.path),
        );
        return Ok(Action::await_change());
    }
    let conn = match connect(ctx, &res, term).await {
        Ok(conn) => conn,
        Err(err @ ZkError::Unavailable { .. }) => {
            let outcome = Outcome::ZooKeeperUnavailable(err.to_string());
            report(ctx, &sr, &mut entry, &outcome, None, Some(&res.path));
            // The session task triggers a resync when it connects; this is a safety net.
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
        Err(err @ ZkError::ClusterIdTaken { .. }) => {
            let outcome = Outcome::WriteFailed(err.to_string());
            report(ctx, &sr, &mut entry, &outcome, None, Some(&res.path));
            ctx.events
                .publish(&sr, EventType::Warning, "ClusterIdTaken", err.to_string());
            return Err(err.into());
        }
        Err(err) => return Err(err.into()),
    };
    forget_tampered(ctx, &mut entry, &res);
    let Some(wanted) = desired(ctx, &sr, &mut entry, &res, &conn, last_start).await? else {
        // Nothing this resource depends on changed (typically our own status patch came back);
        // ZooKeeper holds the new place, so a retirement left over is retried here.
        if load_status_moved(ctx, &sr, &entry) {
            report(
                ctx,
                &sr,
                &mut entry,
                &Outcome::Synced,
                None,
                Some(&res.path),
            );
        }
        let moved = move_out(ctx, &sr, &mut entry, &res, term).await;
        return Ok(until_moved(
            moved,
            next_wakeup(entry.last.as_ref().map(|l| &l.tracker)),
        ));
    };
    if entry.zk.is_none() {
        audit_home(ctx, &res, &conn).await;
    }
    intend(ctx, &sr, &mut entry, &res).await?;
    let written = write(&mut entry, &res, &conn, &wanted).await;
    // A move written, its old place not yet retired nor the new one confirmed.
    crate::failpoint::exit_if("exit-after-move-write", || {
        let now = place::placement_of(ctx, &res);
        entry.placed.as_ref().is_some_and(|p| *p != now)
    });
    if wanted.large {
        // Records encoded and read back in bulk: their memory is free now.
        super::release::after_peak();
    }
    let mut moved = true;
    if let Ok((Synced::Applied { .. }, nodes)) = &written {
        watch_owned(ctx, &res, &conn).await;
        // A registry that could publish nothing new holds its folders: the old place keeps
        // serving until it can (retried).
        moved = nodes.held.is_empty() && move_out(ctx, &sr, &mut entry, &res, term).await;
    }
    let gates = registered(ctx, &res, &mut entry, &wanted, &written);
    let action = report_written(ctx, &sr, &mut entry, &res, &conn, wanted, written)?;
    super::gate::patch(ctx, &res.key, gates);
    Ok(until_moved(moved, action))
}

/// A retirement that could not finish (the old ensemble unreachable) is retried soon.
fn until_moved(moved: bool, action: Action) -> Action {
    if moved {
        action
    } else {
        Action::requeue(Duration::from_secs(10))
    }
}

/// NodePort mode: binds the registration to its Service's node ports (a new registration
/// when they changed, kept for the generation). Refused while the Service is missing or
/// unfit; other modes pass through.
fn bind_address(
    ctx: &Context,
    mut res: Resolved,
    compiled: &mut Option<(i64, Arc<Registration>)>,
) -> Result<Resolved, Rejected> {
    let Some(service) = res.reg.node_port_service() else {
        return Ok(res);
    };
    let info = ctx.index.service(&res.key.0, service);
    let ports = res.reg.node_ports_of(info.as_ref()).map_err(|why| {
        // Routed anyway, so that a fix to the Service wakes the resource.
        ctx.index
            .register(&res.key.0, &res.key.1, Some(res.reg.clone()));
        Rejected::AddressRefused(why)
    })?;
    if res.reg.node_ports() != Some(&ports) {
        res.reg = Arc::new(res.reg.with_node_ports(ports));
        *compiled = Some((res.generation, res.reg.clone()));
    }
    Ok(res)
}

/// The `podkeeper.io/registered` conditions to write after `written`: True for the gated pods
/// whose endpoint now serves in every registry, False for the others. Nothing after a failed
/// or dry-run write: what ZooKeeper holds is not known then.
fn registered(
    ctx: &Context,
    res: &Resolved,
    entry: &mut Entry,
    wanted: &Wanted,
    written: &Result<(Synced, DesiredNodes), ZkError>,
) -> Vec<(String, bool)> {
    let every_registry = match written {
        Ok((Synced::Applied { nodes, .. }, desired)) => {
            nodes.clashes.is_empty() && desired.per_registry.iter().all(Result::is_ok)
        }
        _ => return Vec::new(),
    };
    if !ctx.index.has_gated_pods(&res.key.0) {
        entry.gates_sent.clear();
        return Vec::new();
    }
    let sent = &mut entry.gates_sent;
    // One pass over the pods it may select; the cheap field test comes before the selector.
    ctx.index.with_selectable(&res.key.0, &res.reg, |pods, _| {
        let gated = pods
            .filter(|e| !e.deleted && e.info.registered.is_some() && res.reg.selects(&e.info))
            .map(|e| &e.info);
        crate::model::gate::changes(gated, wanted.endpoints(), every_registry, sent)
    })
}

/// Another client changed what this resource owns: drop the cache, so this reconcile reads
/// ZooKeeper again and writes back what should be there. Changes to others' nodes beside ours
/// (VM providers in a Dubbo folder) are left alone.
fn forget_tampered(ctx: &Context, entry: &mut Entry, res: &Resolved) {
    let paths = ctx.take_tampered(&res.key);
    let Some(cached) = &entry.zk else { return };
    let root = format!("{}/", cached.path);
    let owned = paths.iter().find(|p| {
        **p == cached.path || p.starts_with(&root) || cached.state.nodes.contains_key(p.as_str())
    });
    if let Some(path) = owned {
        tracing::warn!(%path, resource = %format!("{}/{}", res.key.0, res.key.1), "repairing a znode changed by another client");
        entry.zk = None;
    }
}

/// Watches the resource's folders for changes by others (once per session).
async fn watch_owned(ctx: &Context, res: &Resolved, conn: &Connection) {
    if conn.options.dry_run {
        return;
    }
    let tag = format!("{}/{}", res.key.0, res.key.1);
    let ensemble = place::ensemble_key(&place::placement_of(ctx, res).zookeeper);
    let dirs = res
        .clients
        .iter()
        .flat_map(|c| crate::zk::writer::ClientNodes::dirs(c.as_ref()));
    for root in std::iter::once(res.path.clone()).chain(dirs) {
        let generation = conn.session_generation;
        let watched = ctx
            .tamper
            .watch(&conn.client, generation, &ensemble, &root, &tag);
        if let Err(err) = watched.await {
            tracing::warn!(%root, %err, "cannot watch for tampering; the periodic resync repairs instead");
        }
    }
}

/// Step 1, pure: compile the spec (reusing the last compile of this generation) and place it.
pub(super) fn resolve(
    sr: &ServiceRegistration,
    settings: &super::Settings,
    compiled: &mut Option<(i64, Arc<Registration>)>,
    policy: Policy,
) -> Result<Resolved, Rejected> {
    let key = key_of(sr);
    let generation = sr.meta().generation.unwrap_or(0);
    let reg = match compiled {
        Some((g, reg)) if *g == generation => reg.clone(),
        _ => {
            let reg = Registration::compile(&key.0, &sr.spec)
                .map_err(|e| Rejected::InvalidSpec(e.to_string()))?;
            let reg = Arc::new(reg);
            *compiled = Some((generation, reg.clone()));
            reg
        }
    };
    let prefixes = &settings.allowed_path_prefixes;
    let path = layout::service_path(
        sr.spec.path.as_deref(),
        prefixes,
        &key.0,
        &sr.service_name(),
    )
    .map_err(|e| Rejected::PathRefused(e.to_string()))?;
    let record = ServiceRecord {
        service_name: sr.service_name(),
        policy,
        owner: owner(settings, sr),
        generation,
        stale: false,
        warmup_seconds: sr.spec.warmup_seconds,
        load: None,
    };
    // With `loadBalancer.auto` the policy also goes to Dubbo consumers (configurator rules).
    let push = sr.spec.load_balancer.auto.is_some().then_some(policy);
    let (native, clients) = client_registries(&sr.spec.registries, &record, prefixes, push)?;
    Ok(Resolved {
        key,
        generation,
        reg,
        path,
        target: target_of(sr),
        record,
        native,
        clients,
    })
}

/// Whether native records are published, and the client-format registries checked against
/// the allowed prefixes.
fn client_registries(
    specs: &[Registry],
    record: &ServiceRecord,
    prefixes: &[String],
    push: Option<Policy>,
) -> Result<(bool, Option<Arc<ClientRegistries>>), Rejected> {
    let native = specs.is_empty() || specs.iter().any(|r| r.format == RegistryFormat::Native);
    let list: Vec<ClientRegistry> = specs
        .iter()
        .filter_map(|r| match r.format {
            RegistryFormat::Native => None,
            RegistryFormat::Dubbo => r.dubbo.clone().map(|mut o| {
                // Always written, 0 included: without it Dubbo consumers that read `timestamp`
                // would ramp over their 10-minute default where the spec asks for none.
                o.warmup_seconds = o.warmup_seconds.or(Some(record.warmup_seconds));
                o.loadbalance = push;
                ClientRegistry::Dubbo(o)
            }),
            RegistryFormat::Curator => r.curator.clone().map(ClientRegistry::Curator),
            RegistryFormat::ServerSet => r.server_set.clone().map(ClientRegistry::ServerSet),
        })
        .collect();
    if list.is_empty() {
        return Ok((native, None));
    }
    let owner = OwnerTag::of(&record.owner);
    match ClientRegistries::compile(list, &record.service_name, owner, prefixes) {
        Ok(c) => Ok((native, Some(Arc::new(c)))),
        Err(e @ RegistryError::Path(_)) => Err(Rejected::PathRefused(e.to_string())),
        Err(e @ RegistryError::Format(_)) => Err(Rejected::InvalidSpec(e.to_string())),
    }
}

/// A rejected resource: stop routing pods to it if its spec is invalid, and say why.
fn reject(
    ctx: &Context,
    sr: &ServiceRegistration,
    entry: &mut Entry,
    rejected: Rejected,
) -> Action {
    let (reason, outcome) = match rejected {
        Rejected::InvalidSpec(msg) => {
            let (ns, name) = key_of(sr);
            ctx.index.register(&ns, &name, None);
            ("InvalidSpec", Outcome::InvalidSpec(msg))
        }
        Rejected::PathRefused(msg) => ("PathRefused", Outcome::PathRefused(msg)),
        Rejected::AddressRefused(msg) => ("AddressRefused", Outcome::AddressRefused(msg)),
        Rejected::PolicyRefused(msg) => ("PolicyRefused", Outcome::PolicyRefused(msg)),
    };
    let msg = match &outcome {
        Outcome::InvalidSpec(m)
        | Outcome::PathRefused(m)
        | Outcome::AddressRefused(m)
        | Outcome::PolicyRefused(m) => m.clone(),
        _ => unreachable!("rejections carry a message"),
    };
    ctx.events.publish(sr, EventType::Warning, reason, msg);
    report(ctx, sr, entry, &outcome, None, None);
    Action::await_change()
}

/// A client of the resource's ensemble and the fence of this term.
async fn connect(ctx: &Context, res: &Resolved, term: u64) -> Result<Connection, ZkError> {
    let epoch = ctx.resync_epoch();
    let session = ctx.sessions.get(res.target.as_ref());
    let (client, session_generation) = session.client()?;
    let term = ctx.leadership.is_elected().then_some(term);
    let fence = ctx
        .fencer
        .fence(&session, &client, session_generation, term)
        .await?;
    let mut options = ctx
        .settings
        .write_options(fence, res.clients.clone(), session.acls());
    let ensemble = place::ensemble_key(&place::placement_of(ctx, res).zookeeper);
    options.ledger = Some(ctx.tamper.ledger(&ensemble));
    Ok(Connection {
        client,
        session_generation,
        epoch,
        options,
    })
}

/// Step 3: bring ZooKeeper to the wanted endpoints, in every registry of the resource,
/// planned against what it holds. Returns what was written and the client formats' nodes.
async fn write(
    entry: &mut Entry,
    res: &Resolved,
    conn: &Connection,
    wanted: &Wanted,
) -> Result<(Synced, DesiredNodes), ZkError> {
    let mut record = res.record.clone();
    record.stale = wanted.kept.is_some();
    let endpoints = wanted.endpoints();
    let no_endpoints = Endpoints::new();
    let native = if res.native { endpoints } else { &no_endpoints };
    let clients = res
        .clients
        .as_ref()
        .map(|c| c.desired(endpoints.values()))
        .unwrap_or_default();
    let mut cache = entry.zk.take().map(|c| c.state);
    // Only the endpoints the tracker changed since it last published can differ from a warm
    // cache; anything else is compared in full.
    let target = (native, incremental(res, wanted));
    let planned =
        |s: &ServiceState| nodes::diff_holding(&clients.nodes, &s.nodes, &s.foreign, &clients.held);
    let (client, options) = (&conn.client, &conn.options);
    let synced = writer::sync_endpoints(
        client, &res.path, &record, &mut cache, options, target, planned,
    )
    .await?;
    if let (Synced::Applied { .. }, Some(state)) = (&synced, cache) {
        entry.zk = Some(cached(conn, res, state));
    }
    Ok((synced, clients))
}

/// The endpoints that may differ from what the cache holds, when the tracker published the
/// rest (native records, not the keep-last guard's).
fn incremental<'w>(res: &Resolved, wanted: &'w Wanted) -> Option<&'w BTreeSet<SmolStr>> {
    if !res.native || wanted.kept.is_some() {
        return None;
    }
    wanted.tracker.unpublished()
}

fn cached(conn: &Connection, res: &Resolved, state: ServiceState) -> Cached {
    Cached {
        session_generation: conn.session_generation,
        epoch: conn.epoch,
        generation: res.generation,
        target: res.target.clone(),
        path: res.path.clone(),
        state,
    }
}

fn key_of(sr: &ServiceRegistration) -> Key {
    (sr.namespace().unwrap_or_default(), sr.name_any())
}

fn owner(settings: &super::Settings, sr: &ServiceRegistration) -> Owner {
    Owner {
        cluster_id: settings.cluster_id.clone(),
        namespace: sr.namespace().unwrap_or_default(),
        name: sr.name_any(),
        uid: sr.uid().unwrap_or_default(),
    }
}

/// The resource's own ensemble, spelled canonically ([`Target::canonical`]).
fn target_of(sr: &ServiceRegistration) -> Option<Target> {
    sr.spec.zookeeper.as_ref().map(|z| {
        Target {
            connect: z.connect.clone(),
            chroot: z.chroot.clone(),
        }
        .canonical()
    })
}

fn resource_labels(key: &Key) -> crate::metrics::ResourceLabels {
    crate::metrics::ResourceLabels {
        namespace: key.0.clone(),
        name: key.1.clone(),
    }
}

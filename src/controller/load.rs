//! The load poll: each period, the pods of every resource with `spec.load` are measured
//! (metrics.k8s.io, custom.metrics.k8s.io), weighed by `model::load`, and the pods whose factor
//! moved are handed to the resource's reconcile. Reads the API; never writes ZooKeeper.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use smol_str::SmolStr;

use super::Context;
use super::index::Key;
use crate::crd::{LoadStatus, Policy, ServiceRegistration, UnweighedPod};
use crate::model::load::measure::{
    Amounts, Metric, PodFigures, Unmeasured, load_figures, quantity, utilization,
};
use crate::model::load::{
    self, AutoPolicy, AutoRule, Damping, Factors, LoadWeights, PodLoad, Sample,
};
use crate::model::record::LoadMark;
use crate::model::registration::Registration;

/// Why a resource's pods could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// metrics.k8s.io or custom.metrics.k8s.io did not answer.
    #[error("reading {api}: {source}")]
    Metrics {
        /// Which API.
        api: &'static str,
        /// The client's error.
        source: kube::Error,
    },
}

/// How long one period's reads may take.
const MEASURE_TIMEOUT: Duration = Duration::from_secs(5);

/// Pods named on the status as weighed by their declared weight.
const MAX_UNWEIGHED: usize = 5;

/// What the poll keeps per resource.
struct Weighing {
    reg: Arc<Registration>,
    selector: String,
    metrics: Vec<Metric>,
    damping: Damping,
    rule: Option<AutoRule>,
    declared: Policy,
    weights: LoadWeights,
    auto: AutoPolicy,
    factors: Arc<Factors>,
    status: LoadStatus,
    next_ms: i64,
    /// When the service record last vouched for the weights (0: not yet).
    heartbeat_ms: i64,
}

/// The load weighting of every resource with `spec.load`.
#[derive(Default)]
pub struct LoadBook {
    inner: Mutex<HashMap<Key, Weighing>>,
}

impl LoadBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Weighing>> {
        self.inner.lock().expect("load book lock")
    }

    /// Takes a resource's spec as it is now: starts, keeps, restarts or stops its weighting.
    pub fn configure(&self, key: &Key, sr: &ServiceRegistration, reg: &Arc<Registration>) {
        let Some(spec) = &sr.spec.load else {
            self.forget(key);
            return;
        };
        let mut book = self.lock();
        let declared = sr.spec.load_balancer.policy;
        let rule = sr.spec.load_balancer.auto.as_ref().map(|a| a.rule());
        let (metrics, error) = match spec.compiled_metrics() {
            Ok(m) => (m, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let damping = spec.damping();
        let selector = crate::crd::load::selector_query(&sr.spec.selector);
        if let Some(w) = book.get_mut(key)
            && w.metrics == metrics
            && w.damping == damping
            && w.selector == selector
        {
            // Same weighting: keep what it learned; a new policy rule applies from now.
            (w.reg, w.rule) = (reg.clone(), rule);
            if w.declared != declared {
                (w.declared, w.auto) = (declared, AutoPolicy::new(declared, crate::now_ms()));
            }
            return;
        }
        let now = crate::now_ms();
        let status = LoadStatus {
            last_error: error,
            ..LoadStatus::default()
        };
        book.insert(
            key.clone(),
            Weighing {
                reg: reg.clone(),
                selector,
                metrics,
                damping,
                rule,
                declared,
                weights: LoadWeights::default(),
                auto: AutoPolicy::new(declared, now),
                factors: Arc::default(),
                status,
                next_ms: now,
                heartbeat_ms: 0,
            },
        );
    }

    /// The resource is gone or no longer weighs by load.
    pub fn forget(&self, key: &Key) {
        self.lock().remove(key);
    }

    /// The load factors in force for a resource's pods, with the figures their records carry
    /// (empty: all declared).
    pub fn factors(&self, key: &Key) -> Arc<Factors> {
        self.lock()
            .get(key)
            .map(|w| w.factors.clone())
            .unwrap_or_default()
    }

    /// The policy to publish: the automatic switch's, when the resource has one.
    pub fn policy(&self, key: &Key, declared: Policy) -> Policy {
        let book = self.lock();
        match book.get(key) {
            Some(w) if w.rule.is_some() => w.auto.policy,
            _ => declared,
        }
    }

    /// What the service record says about the weighting, once it has weighed.
    pub fn mark(&self, key: &Key) -> Option<LoadMark> {
        let book = self.lock();
        let w = book.get(key).filter(|w| w.heartbeat_ms > 0)?;
        Some(LoadMark {
            reason: w.auto.reason.as_str().to_string(),
            updated_ms: w.heartbeat_ms,
            expire_seconds: (w.damping.expire_ms / 1000) as u32,
        })
    }

    /// What the status says about the weighting.
    pub fn status(&self, key: &Key) -> Option<LoadStatus> {
        self.lock().get(key).map(|w| w.status.clone())
    }

    /// Resources whose period is over, and when they are next due.
    fn due(&self, now_ms: i64) -> Vec<(Key, Arc<Registration>, String, Vec<Metric>)> {
        let mut book = self.lock();
        book.iter_mut()
            .filter(|(_, w)| w.next_ms <= now_ms && !w.metrics.is_empty())
            .map(|(k, w)| {
                w.next_ms = now_ms + w.damping.period_ms;
                (
                    k.clone(),
                    w.reg.clone(),
                    w.selector.clone(),
                    w.metrics.clone(),
                )
            })
            .collect()
    }
}

/// Runs the poll until the process ends: once a second, the resources that are due. Only
/// resources the leader's reconciles configured are weighed: a new leader starts again from
/// the declared weights and converges within a few periods.
pub async fn run(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for (key, reg, selector, metrics) in ctx.load.due(crate::now_ms()) {
            weigh(&ctx, &key, &reg, &selector, &metrics).await;
        }
    }
}

/// One period of one resource: measure, weigh, and wake its reconcile when factors or the
/// policy moved.
async fn weigh(ctx: &Context, key: &Key, reg: &Registration, selector: &str, metrics: &[Metric]) {
    let m = crate::metrics::get();
    // Bounded: a metrics API that hangs must not stop the periods (samples must still expire).
    let read = measure(&ctx.client, &key.0, selector, metrics);
    let result = match tokio::time::timeout(MEASURE_TIMEOUT, read).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "no answer from the metrics APIs in {MEASURE_TIMEOUT:?}"
        )),
    };
    let figures = match result {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(namespace = %key.0, name = %key.1, error = %e, "load metrics unavailable");
            m.load_errors.inc();
            if let Some(w) = ctx.load.lock().get_mut(key) {
                w.status.last_error = Some(e);
            }
            // Samples age until they expire: declared weights come back by themselves.
            figures_unchanged(ctx, key, reg, metrics);
            return;
        }
    };
    m.load_samples.inc_by(figures.len() as u64);
    apply(ctx, key, reg, metrics, &figures, None);
}

/// A period without new figures: the weighting still moves (samples expire).
fn figures_unchanged(ctx: &Context, key: &Key, reg: &Registration, metrics: &[Metric]) {
    apply(ctx, key, reg, metrics, &HashMap::new(), Some(()));
}

/// Folds the figures into the resource's weighting; wakes the resource when it changed.
fn apply(
    ctx: &Context,
    key: &Key,
    reg: &Registration,
    metrics: &[Metric],
    figures: &HashMap<String, (PodFigures, i64)>,
    failed: Option<()>,
) {
    let now = crate::now_ms();
    let pods = ready_pods(ctx, key, reg);
    let mut book = ctx.load.lock();
    let Some(w) = book.get_mut(key) else { return };
    let mut unweighed: Vec<UnweighedPod> = Vec::new();
    let loads: Vec<PodLoad<'_>> = pods
        .iter()
        .map(|(name, group, declared, ready_since_ms)| {
            let sample = sample_of(w, name, metrics, figures, failed.is_some(), &mut unweighed);
            PodLoad {
                name,
                group: *group,
                declared: *declared,
                ready_since_ms: *ready_since_ms,
                sample,
            }
        })
        .collect();
    let step = w.weights.step(&w.damping, &loads, now);
    let fig = load::figures(&w.weights, &w.damping, &loads, now);
    let switched = match w.rule {
        Some(rule) => w.auto.step(&rule, w.declared, &fig, now),
        None => false,
    };
    carry(w, &loads, figures);
    record(w, &loads, &fig, unweighed, failed.is_none(), now);
    let m = crate::metrics::get();
    m.load_weight_updates.inc_by(step.changed.len() as u64);
    m.load_suppressed.inc_by(u64::from(step.suppressed));
    if switched {
        m.load_policy_switches.inc();
        tracing::info!(namespace = %key.0, name = %key.1, policy = %w.auto.policy, reason = w.auto.reason.as_str(), "load: policy switched");
    }
    // The service record vouches for the weights at least every half expiry.
    let beat = now - w.heartbeat_ms >= w.damping.expire_ms / 2;
    if beat {
        w.heartbeat_ms = now;
    }
    if step.changed.is_empty() && !switched && !beat {
        return;
    }
    drop(book);
    for pod in &step.changed {
        ctx.index.touch(key, pod);
    }
    ctx.wake(std::slice::from_ref(key));
}

/// The pod's sample this period; records why there is none.
fn sample_of(
    w: &Weighing,
    name: &str,
    metrics: &[Metric],
    figures: &HashMap<String, (PodFigures, i64)>,
    failed: bool,
    unweighed: &mut Vec<UnweighedPod>,
) -> Option<Sample> {
    if failed {
        // Keep the last sample the estimate saw, so its age decides when it expires.
        return w.weights.last_sample(name);
    }
    let measured = figures
        .get(name)
        .map(|(f, at_ms)| (utilization(metrics, f), *at_ms));
    let why = match measured {
        Some((Ok(utilization), at_ms)) => return Some(Sample { utilization, at_ms }),
        Some((Err(why), _)) => why,
        None => Unmeasured::NoData,
    };
    // A scrape that missed a pod weighed so far: its last sample ages until it expires.
    let last = w
        .weights
        .last_sample(name)
        .filter(|_| why == Unmeasured::NoData);
    if last.is_none() {
        let reason = why.as_str().into();
        unweighed.push(UnweighedPod {
            pod: name.to_string(),
            reason,
        });
    }
    last
}

/// The factors published after a period, each with the figures its records carry: those
/// measured when the factor was set (see [`load::carried`]).
fn carry(w: &mut Weighing, loads: &[PodLoad<'_>], figures: &HashMap<String, (PodFigures, i64)>) {
    let factors: Factors = loads
        .iter()
        .filter_map(|p| {
            let fresh = figures.get(p.name).and_then(|(f, _)| load_figures(f));
            let factor = w.weights.factor(p.name) as f32;
            let weighed = w.weights.capacity(p.name).is_some();
            let entry = load::carried(w.factors.get(p.name), factor, fresh, weighed)?;
            Some((SmolStr::new(p.name), entry))
        })
        .collect();
    if *w.factors != factors {
        w.factors = Arc::new(factors);
    }
}

/// The status after a period.
fn record(
    w: &mut Weighing,
    loads: &[PodLoad<'_>],
    fig: &load::Figures,
    mut unweighed: Vec<UnweighedPod>,
    read: bool,
    now: i64,
) {
    unweighed.extend(loads.iter().filter(|p| p.sample.is_some()).filter_map(|p| {
        LoadWeights::unweighed(&w.damping, p, now).map(|why| UnweighedPod {
            pod: p.name.to_string(),
            reason: format!("{why:?}"),
        })
    }));
    unweighed.sort_by(|a, b| a.pod.cmp(&b.pod));
    unweighed.truncate(MAX_UNWEIGHED);
    w.status = LoadStatus {
        reason: w.auto.reason.as_str().to_string(),
        weighed: fig.weighed as u32,
        mean_utilization_percent: (fig.mean_utilization * 100.0).round() as u32,
        capacity_spread_percent: (fig.capacity_spread * 100.0).round() as u32,
        last_update_time: if read {
            Some(rfc3339(now))
        } else {
            w.status.last_update_time.take()
        },
        last_error: if read {
            None
        } else {
            w.status.last_error.take()
        },
        unweighed,
    };
}

/// The resource's ready pods: (name, group, declared weight, ready since).
fn ready_pods(ctx: &Context, key: &Key, reg: &Registration) -> Vec<(String, usize, u32, i64)> {
    ctx.index.with_selectable(&key.0, reg, |pods, _| {
        pods.filter(|e| !e.deleted && e.info.ready && e.info.terminating_since_ms.is_none())
            .filter(|e| reg.selects(&e.info))
            .map(|e| {
                let declared = reg.declared_weight(&e.info).unwrap_or(reg.default_weight);
                (
                    e.info.name.to_string(),
                    reg.group_of(&e.info),
                    declared,
                    e.info.ready_since_ms,
                )
            })
            .collect()
    })
}

/// Reads the figures of the selected pods: requests from the pods, usage from metrics.k8s.io,
/// custom metrics from custom.metrics.k8s.io. By pod name, with the sample's end (Unix ms).
async fn measure(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    metrics: &[Metric],
) -> Result<HashMap<String, (PodFigures, i64)>, LoadError> {
    let mut out: HashMap<String, (PodFigures, i64)> = HashMap::new();
    let lp = ListParams::default().labels(selector).match_any();
    if metrics.iter().any(|m| matches!(m, Metric::Resource { .. })) {
        let pods = Api::<Pod>::namespaced(client.clone(), ns).list(&lp).await;
        let pods = pods.map_err(|source| LoadError::Metrics {
            api: "pods",
            source,
        })?;
        let usage = pod_metrics(client, ns, &lp).await?;
        for pod in pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let Some((used, at_ms)) = usage.get(&name) else {
                continue;
            };
            let figures = PodFigures {
                requests: requests(&pod),
                usage: Some(*used),
                custom: HashMap::new(),
            };
            out.insert(name, (figures, *at_ms));
        }
    }
    for m in metrics {
        if let Metric::Pods {
            name,
            selector: metric_selector,
            ..
        } = m
        {
            let values =
                custom_metric(client, ns, selector, name, metric_selector.as_deref()).await?;
            for (pod, (value, at_ms)) in values {
                let e = out
                    .entry(pod)
                    .or_insert_with(|| (PodFigures::default(), at_ms));
                e.0.custom.insert(name.clone(), value);
                e.1 = e.1.min(at_ms);
            }
        }
    }
    Ok(out)
}

/// Requests summed over the pod's containers (`None` where a container has none).
fn requests(pod: &Pod) -> Amounts {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let sum = |r: &str| -> Option<f64> {
        containers
            .iter()
            .map(|c| {
                let reqs = c.resources.as_ref()?.requests.as_ref()?;
                quantity(&reqs.get(r)?.0)
            })
            .sum::<Option<f64>>()
            .filter(|_| !containers.is_empty())
    };
    Amounts {
        cpu: sum("cpu"),
        memory: sum("memory"),
    }
}

/// Usage summed over containers, with the end of the window it was measured over.
async fn pod_metrics(
    client: &kube::Client,
    ns: &str,
    lp: &ListParams,
) -> Result<HashMap<String, (Amounts, i64)>, LoadError> {
    let ar = ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    };
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar);
    let list = api.list(lp).await.map_err(|source| LoadError::Metrics {
        api: "metrics.k8s.io",
        source,
    })?;
    Ok(list
        .into_iter()
        .filter_map(|o| {
            let name = o.metadata.name.clone()?;
            let at_ms = timestamp_ms(o.data.get("timestamp")?.as_str()?)?;
            let containers = o.data.get("containers")?.as_array()?;
            let sum = |r: &str| -> Option<f64> {
                containers
                    .iter()
                    .map(|c| quantity(c.get("usage")?.get(r)?.as_str()?))
                    .sum()
            };
            Some((
                name,
                (
                    Amounts {
                        cpu: sum("cpu"),
                        memory: sum("memory"),
                    },
                    at_ms,
                ),
            ))
        })
        .collect())
}

/// A per-pod custom metric's values by pod name, with their timestamps.
async fn custom_metric(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    metric: &str,
    metric_selector: Option<&str>,
) -> Result<HashMap<String, (f64, i64)>, LoadError> {
    let mut url = format!(
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/pods/*/{metric}?labelSelector={}",
        query_escape(selector)
    );
    if let Some(s) = metric_selector {
        url += &format!("&metricLabelSelector={}", query_escape(s));
    }
    let req = http::Request::get(url)
        .body(Vec::new())
        .expect("a valid request");
    let list: serde_json::Value =
        client
            .request(req)
            .await
            .map_err(|source| LoadError::Metrics {
                api: "custom.metrics.k8s.io",
                source,
            })?;
    let items = list
        .get("items")
        .and_then(|i| i.as_array())
        .cloned()
        .unwrap_or_default();
    Ok(items
        .iter()
        .filter_map(|i| {
            let pod = i.get("describedObject")?.get("name")?.as_str()?.to_string();
            let value = quantity(i.get("value")?.as_str()?)?;
            let at_ms = timestamp_ms(i.get("timestamp")?.as_str()?)?;
            Some((pod, (value, at_ms)))
        })
        .collect())
}

fn rfc3339(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn timestamp_ms(s: &str) -> Option<i64> {
    let t: k8s_openapi::jiff::Timestamp = s.parse().ok()?;
    Some(t.as_millisecond())
}

/// Escapes a label selector for a query string.
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_escaped_for_the_query() {
        assert_eq!(
            query_escape("app in (a,b),!x"),
            "app%20in%20%28a%2Cb%29%2C%21x"
        );
        assert_eq!(
            timestamp_ms("2026-12-07T06:17:30Z"),
            Some(1_796_624_250_000)
        );
    }

    #[test]
    fn requests_are_summed_over_containers_and_missing_when_one_lacks_them() {
        let pod: Pod = serde_yaml::from_str(
            "spec: {containers: [{name: a, resources: {requests: {cpu: 250m, memory: 64Mi}}}, {name: b, resources: {requests: {cpu: '1'}}}]}",
        )
        .unwrap();
        let r = requests(&pod);
        assert_eq!(r.cpu, Some(1.25));
        assert_eq!(r.memory, None, "container b requests no memory");
    }
}

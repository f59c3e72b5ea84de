//! `spec.load`, `spec.loadBalancer.auto` and `status.load`: how a ServiceRegistration weighs its
//! pods by load and switches its policy. Types and their defaults only; the logic is model::load.

use k8s_openapi::api::autoscaling::v2::MetricSpec;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::model::load::measure::{Metric, Resource, quantity};
use crate::model::load::{AutoRule, Damping};

/// Weighs each weight group's pods by their load: a pod's share of its group follows its
/// measured capacity (`declared ÷ utilization`); group shares never move. Absent: weights are
/// as declared.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoadSpec {
    /// What load is, in the HorizontalPodAutoscaler v2 shape: `Resource` metrics (cpu or
    /// memory, `target.type: Utilization` with `averageUtilization`, read from metrics.k8s.io
    /// as usage ÷ request summed over containers) and `Pods` metrics (`target.type:
    /// AverageValue`, read from custom.metrics.k8s.io). A pod's utilization is the highest over
    /// the metrics, each relative to its target.
    #[x_kube(validation = Rule::new("size(self) >= 1").message("load.metrics: at least one metric"))]
    #[x_kube(validation = Rule::new("self.all(m, m.type == 'Resource' || m.type == 'Pods')").message("load.metrics: only Resource and Pods metrics are supported"))]
    #[x_kube(validation = Rule::new("self.all(m, m.type != 'Resource' || (has(m.resource) && m.resource.name in ['cpu', 'memory'] && m.resource.target.type == 'Utilization' && has(m.resource.target.averageUtilization)))").message("load.metrics: a Resource metric names cpu or memory with target {type: Utilization, averageUtilization}"))]
    #[x_kube(validation = Rule::new("self.all(m, m.type != 'Pods' || (has(m.pods) && m.pods.target.type == 'AverageValue' && has(m.pods.target.averageValue)))").message("load.metrics: a Pods metric has target {type: AverageValue, averageValue}"))]
    #[schemars(length(max = 4))]
    pub metrics: Vec<MetricSpec>,
    /// Seconds between two weightings (default 15; at least the metrics' own window, 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 10 && self <= 3600").message("load.periodSeconds must be between 10 and 3600"))]
    pub period_seconds: Option<u32>,
    /// Weight of each new capacity estimate in the moving average, in percent (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("load.smoothingPercent must be between 1 and 100"))]
    pub smoothing_percent: Option<u32>,
    /// The largest change of a pod's weight in one period, in percent (default 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("load.maxStepPercent must be between 1 and 100"))]
    pub max_step_percent: Option<u32>,
    /// The lowest weight a pod gets, in percent of its group's mean (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("load.floorPercent must be between 1 and 100"))]
    pub floor_percent: Option<u32>,
    /// The highest weight a pod gets, in percent of its group's mean (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 100 && self <= 10000").message("load.ceilingPercent must be between 100 and 10000"))]
    pub ceiling_percent: Option<u32>,
    /// A weight whose target is within this many percent is not rewritten (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 50").message("load.deadBandPercent must be between 0 and 50"))]
    pub dead_band_percent: Option<u32>,
    /// Seconds without a fresh sample after which a pod is weighed as declared (default 180).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 30 && self <= 86400").message("load.expireSeconds must be between 30 and 86400"))]
    pub expire_seconds: Option<u32>,
    /// Seconds a newly ready pod is weighed as declared (default 30; warm-up still applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 3600").message("load.blackoutSeconds must be between 0 and 3600"))]
    pub blackout_seconds: Option<u32>,
}

impl LoadSpec {
    /// The metrics compiled; the schema's rules let only supported ones through, and any other
    /// is an error naming it.
    pub fn compiled_metrics(&self) -> Result<Vec<Metric>, String> {
        self.metrics.iter().map(compile_metric).collect()
    }

    /// The damping with the defaults filled in.
    pub fn damping(&self) -> Damping {
        let d = Damping::default();
        let pct = |v: Option<u32>, default: f64| v.map_or(default, |v| f64::from(v) / 100.0);
        let ms = |v: Option<u32>, default: i64| v.map_or(default, |s| i64::from(s) * 1000);
        Damping {
            period_ms: ms(self.period_seconds, d.period_ms),
            alpha: pct(self.smoothing_percent, d.alpha),
            max_step: pct(self.max_step_percent, d.max_step),
            floor: pct(self.floor_percent, d.floor),
            ceiling: pct(self.ceiling_percent, d.ceiling),
            dead_band: pct(self.dead_band_percent, d.dead_band),
            expire_ms: ms(self.expire_seconds, d.expire_ms),
            blackout_ms: ms(self.blackout_seconds, d.blackout_ms),
        }
    }
}

/// Switches the published policy from load (needs `spec.load`): LeastRequest while the mean
/// utilization is high, a weighted policy while the pods' capacities differ, the declared
/// policy otherwise; never away from ConsistentHash.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.hotEnterPercent) || !has(self.hotExitPercent) || self.hotExitPercent < self.hotEnterPercent").message("loadBalancer.auto: hotExitPercent must be below hotEnterPercent"))]
#[x_kube(validation = Rule::new("!has(self.spreadEnterPercent) || !has(self.spreadExitPercent) || self.spreadExitPercent < self.spreadEnterPercent").message("loadBalancer.auto: spreadExitPercent must be below spreadEnterPercent"))]
pub struct AutoSpec {
    /// Mean utilization, in percent of the target, at which LeastRequest is published (90).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("auto.hotEnterPercent must be between 1 and 1000"))]
    pub hot_enter_percent: Option<u32>,
    /// ...and below which it is left (70).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("auto.hotExitPercent must be between 1 and 1000"))]
    pub hot_exit_percent: Option<u32>,
    /// Highest ÷ lowest pod capacity, in percent, at which a weighted policy is published (150).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 101 && self <= 10000").message("auto.spreadEnterPercent must be between 101 and 10000"))]
    pub spread_enter_percent: Option<u32>,
    /// ...and below which it is left (125).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 100 && self <= 10000").message("auto.spreadExitPercent must be between 100 and 10000"))]
    pub spread_exit_percent: Option<u32>,
    /// The least time between two switches, seconds (120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 86400").message("auto.minDwellSeconds must be between 0 and 86400"))]
    pub min_dwell_seconds: Option<u32>,
}

impl AutoSpec {
    /// The rule with the defaults filled in.
    pub fn rule(&self) -> AutoRule {
        let r = AutoRule::default();
        let pct = |v: Option<u32>, default: f64| v.map_or(default, |v| f64::from(v) / 100.0);
        AutoRule {
            hot_enter: pct(self.hot_enter_percent, r.hot_enter),
            hot_exit: pct(self.hot_exit_percent, r.hot_exit),
            spread_enter: pct(self.spread_enter_percent, r.spread_enter),
            spread_exit: pct(self.spread_exit_percent, r.spread_exit),
            dwell_ms: self
                .min_dwell_seconds
                .map_or(r.dwell_ms, |s| i64::from(s) * 1000),
        }
    }
}

/// What the load weighting saw and did last.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadStatus {
    /// The policy published, and why (Declared, HighUtilization, UnevenCapacity,
    /// ConsistentHashKept).
    pub reason: String,
    /// Pods weighed by load.
    pub weighed: u32,
    /// Their mean utilization, in percent of the target.
    pub mean_utilization_percent: u32,
    /// Highest ÷ lowest estimated capacity per declared weight, in percent (100: all alike).
    pub capacity_spread_percent: u32,
    /// When samples were last read (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    /// Why the metrics could not be read, if they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The first few ready pods weighed as declared, and why (NoRequest, NoData, Warming).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unweighed: Vec<UnweighedPod>,
}

/// A pod weighed as declared.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnweighedPod {
    /// Pod name.
    pub pod: String,
    /// NoRequest, NoData or Warming.
    pub reason: String,
}

fn compile_metric(m: &MetricSpec) -> Result<Metric, String> {
    match (m.type_.as_str(), &m.resource, &m.pods) {
        ("Resource", Some(r), _) => {
            let resource = match r.name.as_str() {
                "cpu" => Resource::Cpu,
                "memory" => Resource::Memory,
                other => {
                    return Err(format!(
                        "load.metrics: resource {other:?} is not cpu or memory"
                    ));
                }
            };
            let target = r.target.average_utilization.filter(|u| *u > 0);
            let target =
                target.ok_or("load.metrics: a Resource metric needs target.averageUtilization")?;
            Ok(Metric::Resource {
                resource,
                target: f64::from(target) / 100.0,
            })
        }
        ("Pods", _, Some(p)) => {
            let value = p.target.average_value.as_ref().and_then(|q| quantity(&q.0));
            let target = value.filter(|v| *v > 0.0);
            let target =
                target.ok_or("load.metrics: a Pods metric needs a positive target.averageValue")?;
            let selector = p.metric.selector.as_ref().map(selector_query);
            Ok(Metric::Pods {
                name: p.metric.name.clone(),
                selector,
                target,
            })
        }
        (other, ..) => Err(format!(
            "load.metrics: type {other:?} is not supported (Resource or Pods)"
        )),
    }
}

/// A label selector as the API's `labelSelector` query (matchLabels and set-based expressions).
pub fn selector_query(s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> String {
    let labels = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"));
    let exprs = s.match_expressions.iter().flatten().map(|e| {
        let values = e.values.as_deref().unwrap_or_default().join(",");
        match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        }
    });
    labels.chain(exprs).collect::<Vec<_>>().join(",")
}

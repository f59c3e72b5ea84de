//! A pod's utilization from what the metrics APIs and the pod spec say, as the
//! HorizontalPodAutoscaler computes it: usage ÷ request summed over containers, relative to the
//! target, the highest over the metrics. Pure: quantities come in as strings and numbers.

use std::collections::HashMap;

use smol_str::SmolStr;

use crate::model::record::{LoadFigures, Milli};

/// A resource a `Resource` metric names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// CPU, in cores.
    Cpu,
    /// Memory, in bytes.
    Memory,
}

/// One metric of `spec.load.metrics`, compiled.
#[derive(Clone, Debug, PartialEq)]
pub enum Metric {
    /// Usage ÷ request against a target utilization (0.7: 70 %).
    Resource {
        /// cpu or memory.
        resource: Resource,
        /// The target, as a fraction.
        target: f64,
    },
    /// A per-pod custom metric against a target average value.
    Pods {
        /// The metric's name.
        name: String,
        /// Its label selector, as a query string, if any.
        selector: Option<String>,
        /// The target value.
        target: f64,
    },
}

/// Per resource, the sum over a pod's containers (`None`: some container has none).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Amounts {
    /// Cores.
    pub cpu: Option<f64>,
    /// Bytes.
    pub memory: Option<f64>,
}

impl Amounts {
    fn get(&self, r: Resource) -> Option<f64> {
        match r {
            Resource::Cpu => self.cpu,
            Resource::Memory => self.memory,
        }
    }
}

/// What one pod's metrics and spec say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodFigures {
    /// Requests summed over containers.
    pub requests: Amounts,
    /// Usage summed over containers, if metrics.k8s.io has the pod.
    pub usage: Option<Amounts>,
    /// Custom metric values by metric name.
    pub custom: HashMap<String, f64>,
}

/// Why a pod has no utilization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unmeasured {
    /// A Resource metric's resource is not requested by every container.
    NoRequest,
    /// A metric has no sample for the pod.
    NoData,
}

impl Unmeasured {
    /// The name shown on the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Unmeasured::NoRequest => "NoRequest",
            Unmeasured::NoData => "NoData",
        }
    }
}

/// The pod's utilization relative to the targets (1.0: at target), the highest over `metrics`.
pub fn utilization(metrics: &[Metric], pod: &PodFigures) -> Result<f64, Unmeasured> {
    let mut highest: Option<f64> = None;
    for m in metrics {
        let u = match m {
            Metric::Resource { resource, target } => {
                let request = pod.requests.get(*resource).filter(|r| *r > 0.0);
                let request = request.ok_or(Unmeasured::NoRequest)?;
                let usage = pod.usage.and_then(|u| u.get(*resource));
                usage.ok_or(Unmeasured::NoData)? / request / target
            }
            Metric::Pods { name, target, .. } => {
                pod.custom.get(name).ok_or(Unmeasured::NoData)? / target
            }
        };
        highest = Some(highest.map_or(u, |h: f64| h.max(u)));
    }
    highest.filter(|u| u.is_finite()).ok_or(Unmeasured::NoData)
}

/// The figures an endpoint record carries: each utilization as usage ÷ request summed over
/// containers (not relative to a target), and the custom metrics as read; `None` when nothing
/// was measured.
pub fn load_figures(pod: &PodFigures) -> Option<LoadFigures> {
    let fraction = |r: Resource| {
        let request = pod.requests.get(r).filter(|r| *r > 0.0)?;
        let used = pod.usage?.get(r)? / request;
        used.is_finite().then(|| Milli::from_f64(used))
    };
    let named = pod.custom.iter().filter(|(_, v)| v.is_finite());
    let figures = LoadFigures {
        cpu_utilization: fraction(Resource::Cpu),
        mem_utilization: fraction(Resource::Memory),
        named_metrics: named
            .map(|(n, v)| (SmolStr::new(n), Milli::from_f64(*v)))
            .collect(),
    };
    (!figures.is_empty()).then_some(figures)
}

/// A Kubernetes quantity ("250m", "1500027410n", "128Mi", "1.5", "1e3") as a number; `None`
/// when it is not one.
pub fn quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    value.is_finite().then_some(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_every_notation() {
        let cases = [
            ("250m", 0.25),
            ("1500027410n", 1.500_027_41),
            ("2", 2.0),
            ("1.5", 1.5),
            ("100Mi", 104_857_600.0),
            ("1Gi", 1_073_741_824.0),
            ("1e3", 1000.0),
            ("5k", 5000.0),
            ("12u", 12e-6),
        ];
        for (s, want) in cases {
            let got = quantity(s).unwrap_or(f64::NAN);
            assert!((got - want).abs() <= want * 1e-12, "{s}: {got} != {want}");
        }
        for bad in ["", "m", "1x", "abc", "1..2"] {
            assert_eq!(quantity(bad), None, "{bad}");
        }
    }

    fn pod(req_cpu: Option<f64>, use_cpu: Option<f64>) -> PodFigures {
        PodFigures {
            requests: Amounts {
                cpu: req_cpu,
                memory: Some(100.0),
            },
            usage: use_cpu.map(|c| Amounts {
                cpu: Some(c),
                memory: Some(50.0),
            }),
            custom: [("rps".to_string(), 30.0)].into(),
        }
    }

    #[test]
    fn utilization_is_the_highest_over_the_metrics_relative_to_each_target() {
        let cpu = Metric::Resource {
            resource: Resource::Cpu,
            target: 0.5,
        };
        let mem = Metric::Resource {
            resource: Resource::Memory,
            target: 1.0,
        };
        let rps = Metric::Pods {
            name: "rps".into(),
            selector: None,
            target: 20.0,
        };
        // cpu 0.25 of 0.5 requested = 50 %, against a 50 % target: 1.0; memory 0.5; rps 1.5.
        let p = pod(Some(0.5), Some(0.25));
        assert_eq!(utilization(std::slice::from_ref(&cpu), &p), Ok(1.0));
        assert_eq!(utilization(&[cpu.clone(), mem.clone()], &p), Ok(1.0));
        assert_eq!(utilization(&[mem.clone(), rps.clone()], &p), Ok(1.5));
        assert_eq!(
            utilization(std::slice::from_ref(&cpu), &pod(None, Some(0.25))),
            Err(Unmeasured::NoRequest)
        );
        assert_eq!(
            utilization(std::slice::from_ref(&cpu), &pod(Some(0.0), Some(0.25))),
            Err(Unmeasured::NoRequest)
        );
        assert_eq!(
            utilization(&[cpu], &pod(Some(0.5), None)),
            Err(Unmeasured::NoData)
        );
        let other = Metric::Pods {
            name: "qps".into(),
            selector: None,
            target: 1.0,
        };
        assert_eq!(utilization(&[other], &p), Err(Unmeasured::NoData));
        assert_eq!(utilization(&[], &p), Err(Unmeasured::NoData));
    }

    #[test]
    fn record_figures_are_fractions_of_the_request_and_metrics_as_read() {
        let f = load_figures(&pod(Some(0.5), Some(0.45))).unwrap();
        assert_eq!(f.cpu_utilization, Some(Milli(900)));
        assert_eq!(f.mem_utilization, Some(Milli(500)));
        assert_eq!(f.named_metrics["rps"], Milli(30_000));
        let no_request = load_figures(&pod(None, Some(0.45))).unwrap();
        assert_eq!(no_request.cpu_utilization, None);
        let unmeasured = PodFigures {
            requests: Amounts {
                cpu: Some(1.0),
                memory: None,
            },
            ..PodFigures::default()
        };
        assert_eq!(load_figures(&unmeasured), None);
    }
}

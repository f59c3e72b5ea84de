//! The load weighting in a seeded closed loop (`podkeeper::model::load::sim`), beside static
//! weights in the same run: 12 pods, one third at half capacity, traffic split by the published
//! weights, ±10 % metric noise, 15 s periods, two hours. Prints RESULT lines and, with
//! `--svg FILE`, draws weights and utilization over the first 40 periods.
//!
//! Usage: cargo run --release --example load_sim -- [--seed N] [--svg docs/load-sim.svg]

use podkeeper::model::load::Damping;
use podkeeper::model::load::sim::{self, Period, Scenario, SimPod};

const PODS: usize = 12;
const CONVERGED: usize = 20;
const PERIODS: usize = CONVERGED + 480;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args[i + 1].clone())
    };
    let seed = arg("--seed").map_or(1, |s| s.parse().expect("--seed N"));
    let d = Damping::default();
    let scenario = Scenario {
        pods: (0..PODS)
            .map(|i| SimPod {
                name: format!("pod-{i:02}"),
                group: 0,
                declared: 100,
                capacity: if i % 3 == 2 { 0.5 } else { 1.0 },
            })
            .collect(),
        shares: None,
        load: 0.6,
        noise: 0.1,
        seed,
    };
    let fixed = sim::run(&scenario, &d, PERIODS, false);
    let load = sim::run(&scenario, &d, PERIODS, true);
    report("static", &fixed, &d);
    report("load-aware", &load, &d);
    if let Some(path) = arg("--svg") {
        std::fs::write(&path, svg(&scenario, &load[..40], &fixed[..40])).expect("write the SVG");
        println!("wrote {path}");
    }
}

fn report(name: &str, trace: &[Period], d: &Damping) {
    let at5 = trace[4].hottest_over_mean();
    let worst_late = trace[CONVERGED..]
        .iter()
        .map(Period::hottest_over_mean)
        .fold(0.0, f64::max);
    let rewrites: usize = trace[CONVERGED..].iter().map(|p| p.rewrites).sum();
    let hours = (trace.len() - CONVERGED) as f64 * d.period_ms as f64 / 3_600_000.0;
    let coldest = trace
        .iter()
        .flat_map(|p| p.utilization.iter().copied())
        .fold(f64::MAX, f64::min);
    println!(
        "RESULT load_sim {name}: hottest/mean after 5 periods {at5:.3}, worst once converged \
         {worst_late:.3}, rewrites per pod per hour {:.2}, coldest pod utilization {coldest:.3}",
        rewrites as f64 / PODS as f64 / hours
    );
}

/// Two panels, weights above and utilization below, one line per pod (slow pods in red), the
/// static run's utilization dashed.
fn svg(s: &Scenario, load: &[Period], fixed: &[Period]) -> String {
    let (w, h, left, top, panel) = (720.0, 520.0, 60.0, 30.0, 200.0);
    let mut out = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n\
         <rect width='100%' height='100%' fill='white'/>\n\
         <text x='{left}' y='18'>Load-aware weights: 12 pods, 4 at half capacity, ±10 % noise, 15 s periods</text>\n"
    );
    let max_w = load
        .iter()
        .flat_map(|p| p.weights.iter())
        .copied()
        .max()
        .unwrap_or(1) as f64;
    let max_u = fixed
        .iter()
        .chain(load)
        .flat_map(|p| p.utilization.iter())
        .fold(0.0f64, |a, &b| a.max(b));
    let x = |k: usize| left + k as f64 * (w - left - 20.0) / (load.len() - 1) as f64;
    for (panel_top, label, max) in [
        (top, "published weight", max_w),
        (top + panel + 50.0, "utilization", max_u),
    ] {
        out += &axes(left, panel_top, w - 20.0, panel, label, max);
    }
    for (i, pod) in s.pods.iter().enumerate() {
        let color = if pod.capacity < 1.0 {
            "#c0392b"
        } else {
            "#2e86c1"
        };
        let y_w = |v: f64| top + panel - v / max_w * panel;
        let y_u = |v: f64| top + 2.0 * panel + 50.0 - v / max_u * panel;
        out += &line(
            load.iter()
                .enumerate()
                .map(|(k, p)| (x(k), y_w(f64::from(p.weights[i])))),
            color,
            "",
        );
        out += &line(
            load.iter()
                .enumerate()
                .map(|(k, p)| (x(k), y_u(p.utilization[i]))),
            color,
            "",
        );
        out += &line(
            fixed
                .iter()
                .enumerate()
                .map(|(k, p)| (x(k), y_u(p.utilization[i]))),
            color,
            "4 3",
        );
    }
    out += &format!(
        "<text x='{left}' y='{}'>periods →   blue: full-capacity pods, red: half-capacity pods, dashed: static weights</text>\n</svg>\n",
        h - 10.0
    );
    out
}

fn axes(x0: f64, y0: f64, x1: f64, height: f64, label: &str, max: f64) -> String {
    format!(
        "<line x1='{x0}' y1='{y0}' x2='{x0}' y2='{y1}' stroke='black'/>\
         <line x1='{x0}' y1='{y1}' x2='{x1}' y2='{y1}' stroke='black'/>\
         <text x='{x0}' y='{}'>{label} (max {max:.2})</text>\n",
        y0 - 4.0,
        y1 = y0 + height
    )
}

fn line(points: impl Iterator<Item = (f64, f64)>, color: &str, dash: &str) -> String {
    let pts: Vec<String> = points.map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    format!(
        "<polyline fill='none' stroke='{color}' stroke-width='1' stroke-dasharray='{dash}' points='{}'/>\n",
        pts.join(" ")
    )
}

//! Each paced flip lined up with the operator's own trace (`--timeline`): the flips' timestamps
//! as CSV, and where podkeeper's time goes per flip. The operator, run with
//! `RUST_LOG=...,podkeeper::timeline=trace`, logs when its pod watch delivered each pod event
//! and when each `multi()` went on the wire; both processes read the same wall clock.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

/// One flip, in wall-clock microseconds since the Unix epoch.
pub struct Row {
    pub pod: String,
    pub ready: bool,
    /// A bare `multi()` of this program's went out for it (the shadow bridge).
    pub shadowed: bool,
    pub sent: i64,
    pub answered: Option<i64>,
    pub pod_watch: Option<i64>,
    pub zookeeper: Option<i64>,
    /// When the EndpointSlice watch saw it (with the slice comparison on).
    pub slice: Option<i64>,
    /// On a shadowed flip: when the ZooKeeper watch saw the bare bridge's `multi()` (the floor).
    pub floor: Option<i64>,
}

/// Wall-clock microseconds of `t`, through a pairing of the two clocks taken now (call it
/// soon after `t`: the clocks may drift apart slowly).
pub fn unix_us(t: Instant) -> i64 {
    let (i0, s0) = (Instant::now(), SystemTime::now());
    let now = s0
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64;
    now - i0.saturating_duration_since(t).as_micros() as i64
}

/// Appends `rows` of phase `label` to the CSV at `path` (with a header when it is new).
pub fn append_csv(path: &Path, label: &str, rows: &[Row]) -> anyhow::Result<()> {
    let fresh = !path.exists();
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    if fresh {
        writeln!(
            out,
            "label,pod,ready,shadowed,sent_us,answered_us,pod_watch_us,zookeeper_us,slice_us,floor_us"
        )?;
    }
    let opt = |v: Option<i64>| v.map_or(String::new(), |v| v.to_string());
    for r in rows {
        writeln!(
            out,
            "{label},{},{},{},{},{},{},{},{},{}",
            r.pod,
            r.ready,
            r.shadowed,
            r.sent,
            opt(r.answered),
            opt(r.pod_watch),
            opt(r.zookeeper),
            opt(r.slice),
            opt(r.floor)
        )?;
    }
    Ok(())
}

/// The operator's timeline trace: per pod, when its pod events came and when a `multi()`
/// writing its endpoint went out (µs, in log order).
#[derive(Default)]
pub struct Trace {
    pod_events: HashMap<String, Vec<i64>>,
    multis: HashMap<String, Vec<i64>>,
}

/// Reads the `podkeeper::timeline` lines of the operator's log.
pub fn read_trace(log: &Path) -> anyhow::Result<Trace> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let mut trace = Trace::default();
    for line in text.lines() {
        let Some((head, msg)) = line.split_once("podkeeper::timeline: ") else {
            continue;
        };
        let Some(at) = head
            .split_whitespace()
            .next()
            .and_then(|ts| chrono::DateTime::parse_from_rfc3339(ts).ok())
        else {
            continue;
        };
        let at = at.timestamp_micros();
        if let Some(pod) = msg.strip_prefix("pod event pod=") {
            trace
                .pod_events
                .entry(pod.to_string())
                .or_default()
                .push(at);
        } else if let Some(paths) = msg.strip_prefix("multi sent paths=[") {
            // `["/a/endpoints/p1", "/a/endpoints/p2"]`: each path's last segment.
            for path in paths.trim_end_matches(']').split(", ") {
                let endpoint = path.trim_matches('"').rsplit('/').next().unwrap_or("");
                trace
                    .multis
                    .entry(endpoint.to_string())
                    .or_default()
                    .push(at);
            }
        }
    }
    Ok(trace)
}

/// Per flip podkeeper wrote (ms): its pod event after this program's, its own time from that
/// event to the `multi()` on the wire, and the `multi()` to this program's ZooKeeper watch.
#[derive(Default)]
pub struct Breakdown {
    pub watch_lag: Vec<f64>,
    pub own: Vec<f64>,
    pub multi: Vec<f64>,
}

/// The breakdown of the flips without a bare `multi()` of this program's.
pub fn breakdown(rows: &[Row], trace: &Trace) -> Breakdown {
    let first = |m: &HashMap<String, Vec<i64>>, pod: &str, after: i64| {
        m.get(pod)?.iter().copied().find(|&t| t >= after)
    };
    let ms = |from: i64, to: i64| (to - from) as f64 / 1e3;
    let mut b = Breakdown::default();
    for r in rows.iter().filter(|r| !r.shadowed) {
        let (Some(watched), Some(zk)) = (r.pod_watch, r.zookeeper) else {
            continue;
        };
        let Some(event) = first(&trace.pod_events, &r.pod, r.sent) else {
            continue;
        };
        let Some(sent) = first(&trace.multis, &r.pod, event) else {
            continue;
        };
        b.watch_lag.push(ms(watched, event));
        b.own.push(ms(event, sent));
        b.multi.push(ms(sent, zk));
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flip_is_split_at_the_operators_event_and_multi() {
        let log = "\
2026-12-06T21:16:50.000100Z TRACE podkeeper::timeline: pod event pod=lat-1
2026-12-06T21:16:50.000300Z TRACE span{a=b}: podkeeper::timeline: multi sent paths=[\"/pk/r-0/endpoints/lat-0\", \"/pk/r-0/endpoints/lat-1\"]
2026-12-06T21:16:50.000400Z  INFO podkeeper::controller: unrelated
";
        let dir = std::env::temp_dir().join(format!("pk-timeline-{}", std::process::id()));
        std::fs::write(&dir, log).unwrap();
        let trace = read_trace(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        let at = |us: i64| 1_796_591_810_000_000 + us; // 2026-12-06T21:16:50Z
        let row = |shadowed| Row {
            pod: "lat-1".into(),
            ready: false,
            shadowed,
            sent: at(0),
            answered: Some(at(50)),
            pod_watch: Some(at(60)),
            zookeeper: Some(at(1_300)),
            slice: None,
            floor: None,
        };
        let b = breakdown(&[row(false), row(true)], &trace);
        assert_eq!(b.watch_lag, vec![0.04]);
        assert_eq!(b.own, vec![0.2]);
        assert_eq!(b.multi, vec![1.0]);
    }
}

//! The fixed pod set behind the golden files of every format (src/zk/format/golden/) and the
//! real-client test (tests/formats.rs): stable at share 90, canary at 10, one pod draining.

use std::sync::Arc;

use crate::model::record::{EndpointStatus, PublishedRecord};

use super::publish::{OwnerTag, Publish, PublishedEndpoint};

/// 2026-01-01T00:00:00Z in ms: the first pod's ready time; the others follow a second apart.
pub const READY_MS: i64 = 1_767_225_600_000;

/// One endpoint of the fixture.
pub fn endpoint(
    pod: &str,
    host: &str,
    weight: u32,
    group: &str,
    zone: &str,
    status: EndpointStatus,
) -> PublishedRecord {
    PublishedRecord {
        host: host.into(),
        port: 20880,
        ports: [
            ("dubbo".into(), 20880),
            ("http".into(), 8080),
            ("https".into(), 8443),
        ]
        .into(),
        weight,
        declared_weight: None,
        load: None,
        group: group.into(),
        zone: Some(zone.into()),
        node: Some(format!("node-{zone}").into()),
        pod: pod.into(),
        namespace: "shop".into(),
        metadata: [
            ("track".into(), group.into()),
            ("version".into(), "1.4.2".into()),
        ]
        .into(),
        status,
        ready_since_ms: 0,
    }
}

/// `web` in namespace `shop` of cluster `test`: stable-0 (300,000), stable-1 (600,000, weight
/// annotation 200), canary-0 (100,000) and stable-2 draining (0).
pub fn publish() -> Publish {
    let eps = [
        endpoint(
            "web-stable-0",
            "10.1.0.10",
            300_000,
            "stable",
            "zone-a",
            EndpointStatus::Up,
        ),
        endpoint(
            "web-stable-1",
            "10.1.0.11",
            600_000,
            "stable",
            "zone-b",
            EndpointStatus::Up,
        ),
        endpoint(
            "web-canary-0",
            "10.1.0.20",
            100_000,
            "canary",
            "zone-a",
            EndpointStatus::Up,
        ),
        endpoint(
            "web-stable-2",
            "10.1.0.12",
            0,
            "stable",
            "zone-c",
            EndpointStatus::Draining,
        ),
    ];
    Publish {
        service_name: "web".into(),
        owner: OwnerTag::new("test", "shop", "web"),
        endpoints: eps
            .into_iter()
            .enumerate()
            .map(|(i, mut record)| {
                record.ready_since_ms = READY_MS + 1000 * i as i64;
                PublishedEndpoint {
                    ready_since_ms: record.ready_since_ms,
                    record: Arc::new(record),
                }
            })
            .collect(),
    }
}

/// Renders nodes as a golden file: the path, the data as text, then a blank line.
pub fn render(nodes: &[super::publish::Node]) -> String {
    let mut out = String::new();
    for n in nodes {
        out.push_str(&n.path);
        out.push('\n');
        out.push_str(&String::from_utf8_lossy(&n.data));
        out.push_str("\n\n");
    }
    out
}

/// Compares `actual` with the golden file `name` under src/zk/format/golden/; with
/// `PODKEEPER_BLESS=1` rewrites the file instead.
#[cfg(test)]
pub fn assert_golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/zk/format/golden")
        .join(name);
    if std::env::var("PODKEEPER_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e} (PODKEEPER_BLESS=1 writes it)", path.display()));
    assert!(
        want == actual,
        "{} differs from what the format writes now; if the change is intended, rerun with \
         PODKEEPER_BLESS=1 and review the diff.\n--- actual:\n{actual}",
        path.display()
    );
}

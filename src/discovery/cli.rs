//! `podkeeper resolve` and `podkeeper tree`: what a client would see, printed for people.
//! Reads ZooKeeper through the discovery library only; formatting is pure and unit-tested.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;

use super::endpoint::host_port;
use super::registry::{self, Node};
use super::{Discovery, PickContext, Snapshot, Staleness};
use crate::model::policy::Policy;
use crate::model::record::EndpointStatus;

/// Arguments of `podkeeper resolve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ResolveArgs {
    /// ZooKeeper connect string.
    #[arg(long, env = "PODKEEPER_ZK_CONNECT", default_value = "127.0.0.1:2181")]
    pub zk_connect: String,
    /// Service path, e.g. /podkeeper/shop/web.
    pub path: String,
    /// Pick with this policy instead of the service record's.
    #[arg(long)]
    pub policy: Option<Policy>,
    /// How many sample picks to make and count.
    #[arg(long, default_value_t = 1000)]
    pub picks: usize,
    /// Keep running and print the endpoints again at each change, until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Affinity key for the sample picks (ConsistentHash sends them all to one endpoint).
    #[arg(long)]
    pub key: Option<String>,
    /// ZooKeeper session timeout in seconds.
    #[arg(long, default_value_t = 10)]
    pub session_timeout_secs: u64,
}

/// Arguments of `podkeeper tree`.
#[derive(clap::Args, Debug, Clone)]
pub struct TreeArgs {
    /// ZooKeeper connect string.
    #[arg(long, env = "PODKEEPER_ZK_CONNECT", default_value = "127.0.0.1:2181")]
    pub zk_connect: String,
    /// Where to start.
    #[arg(default_value = "/podkeeper")]
    pub path: String,
    /// ZooKeeper session timeout in seconds.
    #[arg(long, default_value_t = 10)]
    pub session_timeout_secs: u64,
}

/// Runs `podkeeper resolve`.
pub async fn resolve(args: ResolveArgs) -> anyhow::Result<()> {
    let discovery = Discovery::builder(&args.zk_connect, &args.path)
        .pinned_policy(args.policy)
        .session_timeout(Duration::from_secs(args.session_timeout_secs))
        .start()
        .await
        .with_context(|| format!("resolving {}", args.path))?;
    let mut updates = discovery.subscribe();
    let snapshot = updates.borrow_and_update().clone();
    print!("{}", render_resolve(&args, &snapshot));
    if !args.watch {
        return Ok(());
    }
    loop {
        tokio::select! {
            changed = updates.changed() => {
                changed.context("the discovery task stopped")?;
                let snapshot = updates.borrow_and_update().clone();
                println!("--- revision {} ---", snapshot.revision());
                print!("{}", render_resolve(&args, &snapshot));
            },
            signal = tokio::signal::ctrl_c() => return signal.context("waiting for Ctrl-C"),
        }
    }
}

/// Runs `podkeeper tree`.
pub async fn tree(args: TreeArgs) -> anyhow::Result<()> {
    let client = registry::connect(
        &args.zk_connect,
        Duration::from_secs(args.session_timeout_secs),
    )
    .await?;
    let root = registry::browse(&client, &args.path)
        .await
        .with_context(|| format!("reading {}", args.path))?;
    let mut out = String::new();
    render_tree(&root, &args.path, &mut out);
    print!("{out}");
    Ok(())
}

/// The service record, the endpoint table and a sample of picks.
fn render_resolve(args: &ResolveArgs, snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let source = if args.policy.is_some() {
        "pinned by --policy"
    } else {
        "from the service record"
    };
    let _ = writeln!(out, "service  {}", args.path);
    match snapshot.service() {
        Some(service) => {
            let owner = &service.owner;
            let _ = writeln!(out, "name     {}", service.service_name);
            let _ = writeln!(out, "policy   {} ({source})", snapshot.policy());
            let _ = writeln!(
                out,
                "owner    {}/{}/{} (uid {}, generation {})",
                owner.cluster_id, owner.namespace, owner.name, owner.uid, service.generation
            );
        }
        None => {
            let _ = writeln!(out, "name     - (no service record at this path)");
            let _ = writeln!(out, "policy   {}", snapshot.policy());
        }
    }
    let state = match snapshot.staleness() {
        Staleness::Fresh => "fresh",
        Staleness::Unreachable => "STALE: ZooKeeper unreachable, showing the last snapshot",
        Staleness::KeptByOperator => {
            "STALE: the operator kept the last known endpoints (keepLastEndpoints)"
        }
        Staleness::Emptied => {
            "STALE: every endpoint vanished at once, showing the last snapshot (fail-static)"
        }
    };
    let _ = writeln!(out, "state    {state}");
    out.push('\n');

    let rows: Vec<Vec<String>> = snapshot
        .endpoints()
        .iter()
        .map(|e| {
            let r = e.record();
            vec![
                e.name().to_string(),
                e.address(),
                r.weight.to_string(),
                r.group.clone(),
                r.zone.clone().unwrap_or_else(|| "-".into()),
                status(r.status).to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("no endpoints\n");
        return out;
    }
    out.push_str(&table(
        &["POD", "ADDRESS", "WEIGHT", "GROUP", "ZONE", "STATUS"],
        &rows,
    ));

    if args.picks == 0 {
        return out;
    }
    let ctx = PickContext {
        key: args.key.as_deref().map(str::as_bytes),
    };
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..args.picks {
        match snapshot.pick(&ctx) {
            Some(picked) => *counts.entry(picked.name().to_string()).or_default() += 1,
            None => break,
        }
    }
    out.push('\n');
    if counts.is_empty() {
        out.push_str("no pickable endpoint (all DRAINING or weight 0)\n");
        return out;
    }
    let _ = writeln!(out, "{} picks with {}:", args.picks, snapshot.policy());
    let rows: Vec<Vec<String>> = counts
        .iter()
        .map(|(name, &n)| {
            vec![
                name.to_string(),
                n.to_string(),
                format!("{:.1}%", 100.0 * n as f64 / args.picks as f64),
            ]
        })
        .collect();
    out.push_str(&table(&["POD", "PICKS", "SHARE"], &rows));
    out
}

fn status(status: EndpointStatus) -> &'static str {
    match status {
        EndpointStatus::Up => "UP",
        EndpointStatus::Draining => "DRAINING",
    }
}

/// Left-aligned columns, two spaces apart.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, w) in cells.zip(&widths) {
            let _ = write!(text, "{cell:<w$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Draws `node` and everything below it with box-drawing branches.
fn render_tree(node: &Node, label: &str, out: &mut String) {
    let _ = writeln!(out, "{}", describe(node, label));
    draw_children(node, "", out);
}

fn describe(node: &Node, label: &str) -> String {
    match node {
        Node::Folder { .. } => format!("{label}/"),
        Node::Service { registry, .. } => match &registry.service {
            Some(s) => format!(
                "{label}  [service {} · {} · owner {}/{}/{} · generation {}{}]",
                s.service_name,
                s.policy,
                s.owner.cluster_id,
                s.owner.namespace,
                s.owner.name,
                s.generation,
                if s.stale {
                    " · STALE: last endpoints kept"
                } else {
                    ""
                }
            ),
            None => format!("{label}  [service record vanished while reading]"),
        },
    }
}

fn draw_children(node: &Node, prefix: &str, out: &mut String) {
    match node {
        Node::Folder { children, .. } => {
            for (i, child) in children.iter().enumerate() {
                let last = i + 1 == children.len();
                let name = match child {
                    Node::Folder { name, .. } | Node::Service { name, .. } => name,
                };
                let _ = writeln!(
                    out,
                    "{prefix}{}{}",
                    if last { "└── " } else { "├── " },
                    describe(child, name)
                );
                draw_children(
                    child,
                    &format!("{prefix}{}", if last { "    " } else { "│   " }),
                    out,
                );
            }
        }
        Node::Service { registry, .. } => {
            if registry.endpoints.is_empty() {
                let _ = writeln!(out, "{prefix}└── (no endpoints)");
                return;
            }
            let rows: Vec<[String; 4]> = registry
                .endpoints
                .iter()
                .map(|(name, r)| {
                    [
                        name.clone(),
                        host_port(&r.host, r.port),
                        format!("weight {}", r.weight),
                        status(r.status).to_string(),
                    ]
                })
                .collect();
            let width = |k: usize| rows.iter().map(|r| r[k].chars().count()).max().unwrap_or(0);
            let (w0, w1, w2) = (width(0), width(1), width(2));
            for (i, [name, address, weight, status]) in rows.iter().enumerate() {
                let branch = if i + 1 == rows.len() {
                    "└── "
                } else {
                    "├── "
                };
                let _ = writeln!(
                    out,
                    "{prefix}{branch}{name:<w0$}  {address:<w1$}  {weight:<w2$}  {status}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Registry;
    use crate::model::record::EndpointRecord;

    fn endpoint(i: u8, weight: u32, status: EndpointStatus) -> EndpointRecord {
        EndpointRecord {
            host: format!("10.0.0.{i}"),
            port: 8080,
            ports: Default::default(),
            weight,
            group: "default".into(),
            zone: i.is_multiple_of(2).then(|| "z1".to_string()),
            node: None,
            pod: format!("web-{i}"),
            namespace: "shop".into(),
            metadata: Default::default(),
            status,
        }
    }

    fn registry() -> Registry {
        Registry {
            service: Some(
                serde_json::from_value(serde_json::json!({
                    "serviceName": "web",
                    "policy": "WeightedRoundRobin",
                    "owner": {"clusterId": "c1", "namespace": "shop", "name": "web", "uid": "u-1"},
                    "generation": 4,
                }))
                .unwrap(),
            ),
            endpoints: [
                ("web-1".to_string(), endpoint(1, 3, EndpointStatus::Up)),
                ("web-2".to_string(), endpoint(2, 1, EndpointStatus::Up)),
                (
                    "web-3".to_string(),
                    endpoint(3, 0, EndpointStatus::Draining),
                ),
            ]
            .into(),
        }
    }

    fn args(picks: usize) -> ResolveArgs {
        ResolveArgs {
            zk_connect: String::new(),
            path: "/podkeeper/shop/web".into(),
            policy: None,
            picks,
            watch: false,
            key: None,
            session_timeout_secs: 10,
        }
    }

    #[test]
    fn resolve_prints_record_table_and_exact_wrr_counts() {
        let snapshot = Snapshot::build(&registry(), None, None);
        let text = render_resolve(&args(8), &snapshot);
        assert!(
            text.contains("policy   WeightedRoundRobin (from the service record)"),
            "{text}"
        );
        assert!(
            text.contains("owner    c1/shop/web (uid u-1, generation 4)"),
            "{text}"
        );
        assert!(
            text.contains("POD    ADDRESS        WEIGHT  GROUP    ZONE  STATUS\n"),
            "{text}"
        );
        assert!(
            text.contains("web-3  10.0.0.3:8080  0       default  -     DRAINING\n"),
            "{text}"
        );
        // Smooth WRR over {3, 1}: 8 picks are two whole cycles.
        assert!(text.contains("web-1  6      75.0%\n"), "{text}");
        assert!(text.contains("web-2  2      25.0%\n"), "{text}");
    }

    #[test]
    fn tree_draws_folders_services_and_endpoints() {
        let root = Node::Folder {
            name: "podkeeper".into(),
            children: vec![Node::Folder {
                name: "shop".into(),
                children: vec![
                    Node::Service {
                        name: "web".into(),
                        registry: registry(),
                    },
                    Node::Service {
                        name: "api".into(),
                        registry: Registry {
                            endpoints: Default::default(),
                            ..registry()
                        },
                    },
                ],
            }],
        };
        let mut out = String::new();
        render_tree(&root, "/podkeeper", &mut out);
        let want = "\
/podkeeper/
└── shop/
    ├── web  [service web · WeightedRoundRobin · owner c1/shop/web · generation 4]
    │   ├── web-1  10.0.0.1:8080  weight 3  UP
    │   ├── web-2  10.0.0.2:8080  weight 1  UP
    │   └── web-3  10.0.0.3:8080  weight 0  DRAINING
    └── api  [service web · WeightedRoundRobin · owner c1/shop/web · generation 4]
        └── (no endpoints)
";
        assert_eq!(out, want);
    }
}

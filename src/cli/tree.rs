//! `podkeeper tree`: what is registered under a path, drawn with box-drawing branches.

use std::fmt::Write as _;

use anyhow::Context as _;
use podkeeper::discovery::{Node, host_port};

use super::ZkArgs;
use super::table::status;

/// Arguments of `podkeeper tree`.
#[derive(clap::Args, Debug, Clone)]
pub struct TreeArgs {
    #[command(flatten)]
    pub zk: ZkArgs,
    /// Where to start.
    #[arg(default_value = "/podkeeper")]
    pub path: String,
}

/// Runs `podkeeper tree`.
pub async fn tree(args: TreeArgs) -> anyhow::Result<()> {
    let root = podkeeper::discovery::browse(&args.zk.ensemble()?, &args.path)
        .await
        .with_context(|| format!("reading {}", args.path))?;
    let mut out = String::new();
    render_tree(&root, &args.path, &mut out);
    print!("{out}");
    Ok(())
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
    use crate::cli::fixtures::registry;
    use podkeeper::discovery::Registry;

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

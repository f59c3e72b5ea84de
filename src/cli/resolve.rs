//! `podkeeper resolve`: a service's record, its endpoint table and a sample of picks.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context as _;
use podkeeper::discovery::{ClientFormat, Discovery, PickContext, Snapshot, Staleness};
use podkeeper::model::policy::Policy;

use super::ZkArgs;
use super::table::{status, table};

/// Arguments of `podkeeper resolve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ResolveArgs {
    #[command(flatten)]
    pub zk: ZkArgs,
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
    /// Read another client's folder instead of a podkeeper service path: dubbo
    /// (/dubbo/<interface>/providers), curator (/services/<name>) or serverset.
    #[arg(long, value_parser = parse_format)]
    pub format: Option<ClientFormat>,
}

fn parse_format(s: &str) -> Result<ClientFormat, String> {
    match s.to_ascii_lowercase().as_str() {
        "dubbo" => Ok(ClientFormat::Dubbo),
        "curator" | "spring" => Ok(ClientFormat::Curator),
        "serverset" => Ok(ClientFormat::ServerSet),
        _ => Err(format!(
            "unknown format {s:?}: use dubbo, curator or serverset"
        )),
    }
}

/// Runs `podkeeper resolve`.
pub async fn resolve(args: ResolveArgs) -> anyhow::Result<()> {
    let ensemble = args.zk.ensemble()?;
    let discovery = Discovery::builder(ensemble.connect.clone(), &args.path)
        .ensemble(ensemble)
        .pinned_policy(args.policy)
        .format(args.format)
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
            let what = match args.format {
                Some(f) => format!("a {f:?} folder: no service record there"),
                None => "no service record at this path".into(),
            };
            let _ = writeln!(out, "name     - ({what})");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fixtures::registry;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    fn args(picks: usize) -> ResolveArgs {
        let cli = Cli::parse_from(["podkeeper", "resolve", "/podkeeper/shop/web"]);
        let Command::Resolve(args) = cli.command else {
            unreachable!()
        };
        ResolveArgs { picks, ..args }
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
}

//! The command line: `run` (the operator), `crd`, `resolve` and `tree`, with one set of
//! ZooKeeper flags shared by all. Parsing, checking and printing only; the work is the library's.

mod error;
#[cfg(test)]
mod fixtures;
mod resolve;
mod run;
mod table;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use podkeeper::discovery::{Ensemble, Node, host_port};
use podkeeper::zk::security::{Credentials, Mechanism, SecurityFiles};

pub use error::one_line;
pub use resolve::{ResolveArgs, resolve};
pub use run::RunArgs;
use table::status;

/// `podkeeper` and its subcommands.
#[derive(Parser, Debug)]
#[command(
    name = "podkeeper",
    version,
    about = "Mirrors ready Kubernetes pods into ZooKeeper for discovery and load balancing"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the operator.
    Run(Box<RunArgs>),
    /// Print the CRDs as YAML (both, or the one named).
    Crd {
        /// `serviceregistration`, `registrypolicy` or `registryimport`; all when absent.
        #[arg(value_parser = ["serviceregistration", "registrypolicy", "registryimport"])]
        which: Option<String>,
    },
    /// Show a service's endpoints and sample picks with its load-balancing policy.
    Resolve(ResolveArgs),
    /// Show what is registered under a path.
    Tree(TreeArgs),
}

/// How to reach ZooKeeper; the same flags and environment variables for every subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct ZkArgs {
    /// ZooKeeper connect string (comma-separated host:port).
    #[arg(long, env = "PODKEEPER_ZK_CONNECT", default_value = "127.0.0.1:2181")]
    pub zk_connect: String,
    /// Chroot below which every path is written and read (e.g. /prod).
    #[arg(long, env = "PODKEEPER_ZK_CHROOT")]
    pub zk_chroot: Option<String>,
    /// ZooKeeper session timeout (e.g. 10s, 500ms; a bare number is seconds).
    #[arg(
        long,
        env = "PODKEEPER_ZK_SESSION_TIMEOUT",
        default_value = "10s",
        value_parser = parse_duration,
        alias = "session-timeout-secs"
    )]
    pub zk_session_timeout: Duration,
    /// File with `user:password`: the login to ZooKeeper (re-read when it changes).
    #[arg(long, env = "PODKEEPER_ZK_AUTH_FILE")]
    pub zk_auth_file: Option<PathBuf>,
    /// How the login authenticates: digest, or sasl-digest-md5 (SASL DIGEST-MD5).
    #[arg(long, env = "PODKEEPER_ZK_AUTH_MECHANISM", default_value = "digest")]
    pub zk_auth_mechanism: Mechanism,
    /// Directory with ca.crt, and tls.crt + tls.key for mutual TLS: connect to ZooKeeper with
    /// TLS (files re-read when they change).
    #[arg(long, env = "PODKEEPER_ZK_TLS_DIR")]
    pub zk_tls_dir: Option<PathBuf>,
    /// Accept a ZooKeeper certificate that does not name the host connected to.
    #[arg(long, env = "PODKEEPER_ZK_TLS_SKIP_HOSTNAME_VERIFICATION")]
    pub zk_tls_skip_hostname_verification: bool,
}

impl ZkArgs {
    /// Checks the flags and the credential files (read once here to fail early and clearly).
    pub fn ensemble(&self) -> anyhow::Result<Ensemble> {
        if let Some(chroot) = &self.zk_chroot {
            podkeeper::zk::layout::validate(chroot).context("--zk-chroot")?;
        }
        anyhow::ensure!(
            self.zk_tls_dir.is_some() || !self.zk_tls_skip_hostname_verification,
            "--zk-tls-skip-hostname-verification needs --zk-tls-dir"
        );
        let security = SecurityFiles {
            tls_dir: self.zk_tls_dir.clone(),
            skip_hostname_verification: self.zk_tls_skip_hostname_verification,
            auth_file: self.zk_auth_file.clone(),
            mechanism: self.zk_auth_mechanism,
        };
        if !security.is_empty() {
            Credentials::load(security.clone()).context("ZooKeeper credentials")?;
        }
        Ok(Ensemble {
            connect: self.zk_connect.clone(),
            chroot: self.zk_chroot.clone(),
            session_timeout: self.zk_session_timeout,
            security,
        })
    }
}

/// Arguments of `podkeeper tree`.
#[derive(clap::Args, Debug, Clone)]
pub struct TreeArgs {
    #[command(flatten)]
    pub zk: ZkArgs,
    /// Where to start.
    #[arg(default_value = "/podkeeper")]
    pub path: String,
}

/// Parses `250ms`, `10s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 10s, 5m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m or h")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
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
    use super::fixtures::registry;
    use super::*;
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

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn every_subcommand_takes_the_same_zookeeper_flags() {
        let zk = [
            "--zk-connect",
            "zk-a:2181",
            "--zk-chroot",
            "/team",
            "--zk-session-timeout",
            "1500ms",
        ];
        for sub in [
            vec!["run"],
            vec!["resolve", "/podkeeper/shop/web"],
            vec!["tree"],
        ] {
            let argv = ["podkeeper"].into_iter().chain(sub.clone()).chain(zk);
            let args = match Cli::try_parse_from(argv).unwrap().command {
                Command::Run(a) => a.zk,
                Command::Resolve(a) => a.zk,
                Command::Tree(a) => a.zk,
                Command::Crd { .. } => unreachable!(),
            };
            assert_eq!(args.zk_connect, "zk-a:2181", "{sub:?}");
            assert_eq!(args.zk_chroot.as_deref(), Some("/team"), "{sub:?}");
            assert_eq!(
                args.zk_session_timeout,
                Duration::from_millis(1500),
                "{sub:?}"
            );
        }
        // The old spelling of resolve's and tree's timeout still works, in seconds.
        let cli =
            Cli::try_parse_from(["podkeeper", "tree", "--session-timeout-secs", "3"]).unwrap();
        let Command::Tree(tree) = cli.command else {
            unreachable!()
        };
        assert_eq!(tree.zk.zk_session_timeout, Duration::from_secs(3));
    }

    #[test]
    fn unusable_credential_files_and_a_bad_chroot_are_named() {
        let zk = |extra: &[&str]| {
            let argv = ["podkeeper", "tree"].iter().chain(extra).copied();
            let Command::Tree(tree) = Cli::try_parse_from(argv).unwrap().command else {
                unreachable!()
            };
            tree.zk.ensemble()
        };
        let err = zk(&["--zk-tls-dir", "/nonexistent-tls"]).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent-tls/ca.crt"),
            "{err:#}"
        );
        let err = zk(&["--zk-tls-skip-hostname-verification"]).unwrap_err();
        assert!(format!("{err:#}").contains("needs --zk-tls-dir"), "{err:#}");
        let argv = ["podkeeper", "tree", "--zk-auth-mechanism", "gssapi"];
        let err = Cli::try_parse_from(argv).expect_err("gssapi is refused");
        assert!(err.to_string().contains("not supported"), "{err}");
        let err = zk(&["--zk-chroot", "team"]).unwrap_err();
        assert!(format!("{err:#}").starts_with("--zk-chroot"), "{err:#}");
        assert!(zk(&["--zk-chroot", "/team"]).is_ok());
    }
}

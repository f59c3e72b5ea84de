//! The command line's shape: the subcommands and the ZooKeeper flags they all share.
//! Parsing, checking and printing only; the work is the library's. Each subcommand has its file.

mod error;
#[cfg(test)]
mod fixtures;
mod resolve;
mod run;
mod table;
mod tree;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use podkeeper::discovery::Ensemble;
use podkeeper::zk::security::{Credentials, Mechanism, SecurityFiles};

pub use error::one_line;
pub use resolve::{ResolveArgs, resolve};
pub use run::RunArgs;
pub use tree::{TreeArgs, tree};

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

#[cfg(test)]
mod tests {
    use super::*;

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

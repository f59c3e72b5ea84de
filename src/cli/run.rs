//! `podkeeper run`: the operator's flags, turned into the library's `RunConfig`.

use std::net::SocketAddr;
use std::time::Duration;

use podkeeper::config::{LogFormat, RunConfig};
use podkeeper::zk::acl::{AclPolicy, Identity};

use super::{ZkArgs, parse_duration};

/// `podkeeper run` flags; each has an environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub zk: ZkArgs,
    /// Address of /healthz, /readyz and /metrics.
    /// The default `[::]` takes IPv4 too (dual stack); where IPv6 is off, `0.0.0.0` is used.
    #[arg(long, env = "PODKEEPER_HEALTH_ADDR", default_value = "[::]:8080")]
    pub health_addr: SocketAddr,
    /// Namespaces to watch, comma-separated; empty means all.
    #[arg(long, env = "PODKEEPER_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Resources may only write under these znode prefixes (comma-separated); the first is
    /// home: default service paths and the leader epoch live under it.
    #[arg(
        long,
        env = "PODKEEPER_ALLOWED_PATH_PREFIX",
        value_delimiter = ',',
        default_value = "/podkeeper,/dubbo,/services,/serversets"
    )]
    pub allowed_path_prefix: Vec<String>,
    /// Interval of the full resync that repairs tampering (e.g. 5m).
    #[arg(long, env = "PODKEEPER_RESYNC_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub resync_interval: Duration,
    /// Identifies this Kubernetes cluster in owner records and names its leader epoch: give
    /// every cluster that shares an ensemble its own (letters, digits, `.`, `_`, `-`).
    #[arg(long, env = "PODKEEPER_CLUSTER_ID", default_value = "default", value_parser = parse_cluster_id)]
    pub cluster_id: String,
    /// The cluster's DNS domain: `address.mode: Template` hosts inside it need no
    /// RegistryPolicy grant.
    #[arg(
        long,
        env = "PODKEEPER_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,
    /// Elect one leader among replicas through a Lease; only the leader writes, fenced by an
    /// epoch znode.
    #[arg(long, env = "PODKEEPER_LEADER_ELECT", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: bool,
    /// Namespace of the Lease (default: POD_NAMESPACE, else `default`).
    #[arg(long, env = "PODKEEPER_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, env = "PODKEEPER_LEASE_NAME", default_value = "podkeeper")]
    pub lease_name: String,
    /// How long a leader's Lease lasts without renewal; failover takes at most about this long.
    #[arg(long, env = "PODKEEPER_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// This replica's identity in the Lease (default: POD_NAME, else hostname-pid).
    #[arg(long, env = "PODKEEPER_IDENTITY")]
    pub identity: Option<String>,
    /// Run the reverse mirror too: RegistryImport resources keep ZooKeeper providers as
    /// Services with EndpointSlices (needs the RegistryImport CRD and write access to services
    /// and endpointslices: the chart's `import.enabled`).
    #[arg(long, env = "PODKEEPER_IMPORT", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub import: bool,
    /// Log the plan of every write and write nothing.
    #[arg(long, env = "PODKEEPER_DRY_RUN", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub dry_run: bool,
    /// At most this many endpoint deletions per ZooKeeper transaction (0: no cap).
    #[arg(long, env = "PODKEEPER_MAX_DELETES_PER_TXN", default_value_t = 0)]
    pub max_deletes_per_txn: usize,
    /// Who may read the znodes podkeeper creates (comma-separated `scheme:id`; an x509 subject
    /// keeps its commas: `x509:CN=app,O=acme`); podkeeper's own identity (login or client
    /// certificate) may do everything, nobody else may write.
    #[arg(long, env = "PODKEEPER_ZK_ACL_READERS", default_value = "world:anyone")]
    pub zk_acl_readers: Identities,
    /// Identities that may also create and delete children in the client-format folders
    /// podkeeper creates (VM providers registering beside the pods), comma-separated as for
    /// readers.
    #[arg(long, env = "PODKEEPER_ZK_ACL_NEIGHBOURS", default_value = "")]
    pub zk_acl_neighbours: Identities,
    /// Create every znode writable by anyone (podkeeper before ACLs).
    #[arg(long, env = "PODKEEPER_ZK_ACL_OPEN")]
    pub zk_acl_open: bool,
    /// Log format: text or json.
    #[arg(long, env = "PODKEEPER_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormatArg,
}

/// `--log-format` values.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl RunArgs {
    /// The operator's settings, with the ZooKeeper flags checked and the credentials read.
    pub fn config(self) -> anyhow::Result<RunConfig> {
        let ensemble = self.zk.ensemble()?;
        Ok(RunConfig {
            zk_connect: ensemble.connect,
            zk_chroot: ensemble.chroot,
            zk_session_timeout: ensemble.session_timeout,
            zk_security: ensemble.security,
            zk_acl: AclPolicy {
                open: self.zk_acl_open,
                readers: self.zk_acl_readers.0,
                neighbours: self.zk_acl_neighbours.0,
                home: self
                    .allowed_path_prefix
                    .first()
                    .map(|p| p.trim_end_matches('/').to_string())
                    .filter(|p| !p.is_empty()),
            },
            health_addr: self.health_addr,
            namespaces: self.namespaces,
            allowed_path_prefix: self.allowed_path_prefix,
            resync_interval: self.resync_interval,
            cluster_id: self.cluster_id,
            cluster_domain: self.cluster_domain,
            leader_elect: self.leader_elect,
            lease_namespace: self.lease_namespace,
            lease_name: self.lease_name,
            lease_duration: self.lease_duration,
            identity: self.identity,
            dry_run: self.dry_run,
            import: self.import,
            max_deletes_per_txn: self.max_deletes_per_txn,
            log_format: match self.log_format {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            },
        })
    }
}

/// A comma-separated list of ZooKeeper ACL ids. A comma starts a new id only when a scheme
/// follows it, so x509 subjects keep theirs (`x509:CN=a,O=b,sasl:reader` is two ids).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identities(pub Vec<Identity>);

impl std::str::FromStr for Identities {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        const SCHEMES: [&str; 6] = ["world:", "digest:", "sasl:", "x509:", "ip:", "auth:"];
        let mut ids: Vec<String> = Vec::new();
        for piece in s.split(',') {
            let starts_id = SCHEMES.iter().any(|sc| piece.trim_start().starts_with(sc));
            match ids.last_mut() {
                Some(last) if !starts_id => {
                    last.push(',');
                    last.push_str(piece);
                }
                _ if piece.trim().is_empty() => {}
                _ => ids.push(piece.trim().to_string()),
            }
        }
        ids.iter()
            .map(|i| i.parse())
            .collect::<Result<_, _>>()
            .map(Identities)
    }
}

/// A cluster id: it becomes part of owner tags (`<id>/<namespace>/<name>`) and of a znode name.
pub fn parse_cluster_id(s: &str) -> Result<String, String> {
    let ok = (1..=63).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !s.starts_with('.');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid cluster id {s:?}: 1-63 letters, digits, '.', '_' or '-', not starting with '.'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    #[test]
    fn acl_id_lists_split_at_schemes_so_x509_subjects_keep_their_commas() {
        let ids: Identities = "x509:CN=app,O=acme,OU=x, sasl:reader,world:anyone"
            .parse()
            .unwrap();
        let shown: Vec<String> = ids.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["x509:CN=app,O=acme,OU=x", "sasl:reader", "world:anyone"]
        );
        assert_eq!("".parse::<Identities>(), Ok(Identities::default()));
        let err = "CN=app,sasl:x".parse::<Identities>().unwrap_err();
        assert!(err.contains("scheme:id"), "{err}");
    }

    #[test]
    fn every_format_s_default_folders_lie_under_the_default_prefixes() {
        use podkeeper::zk::format::registry::Registry;
        use podkeeper::zk::format::{curator, dubbo, serverset};
        let Command::Run(run) = Cli::try_parse_from(["podkeeper", "run"]).unwrap().command else {
            panic!("run")
        };
        let prefixes = &run.allowed_path_prefix;
        let service = podkeeper::zk::layout::service_path(None, prefixes, "shop", "web").unwrap();
        assert_eq!(service, "/podkeeper/shop/web");
        for registry in [
            Registry::Dubbo(dubbo::Options::new(&["org.example.Api"])),
            Registry::Curator(curator::Options::default()),
            Registry::ServerSet(serverset::Options::default()),
        ] {
            for dir in registry.dirs("web") {
                let ok = podkeeper::zk::layout::allowed(&dir, prefixes);
                assert!(ok.is_ok(), "{}: {dir}: {ok:?}", registry.name());
            }
        }
    }

    #[test]
    fn cluster_ids_that_would_break_owner_tags_or_znode_names_are_refused() {
        for ok in ["default", "prod-eu.1", "a_b"] {
            assert_eq!(parse_cluster_id(ok).as_deref(), Ok(ok));
        }
        for bad in ["", "a/b", ".hidden", "a b", "é", &"x".repeat(64)] {
            let err = parse_cluster_id(bad).unwrap_err();
            assert!(err.contains("invalid cluster id"), "{bad:?}: {err}");
        }
    }
}

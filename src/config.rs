//! Operator settings from flags and environment variables.
//! Parsing and checking only; nothing here connects anywhere.

use std::net::SocketAddr;
use std::time::Duration;

/// `podkeeper run` flags; each has an environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// ZooKeeper connect string (comma-separated host:port).
    #[arg(long, env = "PODKEEPER_ZK_CONNECT", default_value = "127.0.0.1:2181")]
    pub zk_connect: String,
    /// Chroot applied to every path the operator writes (e.g. /prod).
    #[arg(long, env = "PODKEEPER_ZK_CHROOT")]
    pub zk_chroot: Option<String>,
    /// ZooKeeper session timeout (e.g. 10s, 500ms).
    #[arg(long, env = "PODKEEPER_ZK_SESSION_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub zk_session_timeout: Duration,
    /// File with `user:password` for ZooKeeper digest authentication.
    #[arg(long, env = "PODKEEPER_ZK_AUTH_FILE")]
    pub zk_auth_file: Option<std::path::PathBuf>,
    /// Directory with ca.crt, tls.crt and tls.key for TLS to ZooKeeper. Not supported by this
    /// build yet: the operator refuses to start rather than fall back to plaintext.
    #[arg(long, env = "PODKEEPER_ZK_TLS_DIR")]
    pub zk_tls_dir: Option<std::path::PathBuf>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "PODKEEPER_HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    pub health_addr: SocketAddr,
    /// Namespaces to watch, comma-separated; empty means all.
    #[arg(long, env = "PODKEEPER_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Resources may only write under these znode prefixes (comma-separated). The first is
    /// home: default service paths and the leader epoch live under it.
    #[arg(
        long,
        env = "PODKEEPER_ALLOWED_PATH_PREFIX",
        value_delimiter = ',',
        default_value = "/podkeeper,/dubbo,/services"
    )]
    pub allowed_path_prefix: Vec<String>,
    /// Interval of the full resync that repairs tampering (e.g. 5m).
    #[arg(long, env = "PODKEEPER_RESYNC_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub resync_interval: Duration,
    /// Identifies this Kubernetes cluster in owner records.
    #[arg(long, env = "PODKEEPER_CLUSTER_ID", default_value = "default")]
    pub cluster_id: String,
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
    /// Log the plan of every write and write nothing.
    #[arg(long, env = "PODKEEPER_DRY_RUN", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub dry_run: bool,
    /// At most this many endpoint deletions per ZooKeeper transaction (0: no cap).
    #[arg(long, env = "PODKEEPER_MAX_DELETES_PER_TXN", default_value_t = 0)]
    pub max_deletes_per_txn: usize,
    /// Log format: text or json.
    #[arg(long, env = "PODKEEPER_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// How logs are printed.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
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
}

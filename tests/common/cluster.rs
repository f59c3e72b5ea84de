//! The local control plane's side of the harness (feature e2e): the running cluster
//! (KUBECONFIG from `scripts/cluster`), test namespaces, and operator processes.

#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

use super::zk::{ZkServer, free_port};

/// The kubeconfig of the running cluster.
pub fn kubeconfig() -> PathBuf {
    PathBuf::from(std::env::var("PODKEEPER_E2E_KUBECONFIG").expect(
        "PODKEEPER_E2E_KUBECONFIG is not set: run the e2e suite through scripts/test (it starts the local control plane)",
    ))
}

/// A kube client for the cluster.
pub async fn client() -> Client {
    // rustls has two providers linked (ring for kube, aws-lc-rs via zookeeper-client): pick one.
    podkeeper::zk::security::install_crypto_provider();
    let kc = Kubeconfig::read_from(kubeconfig()).expect("read kubeconfig");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(cfg).expect("client")
}

/// Runs kubectl against the cluster and returns (success, stdout+stderr).
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let bin = std::env::var("PODKEEPER_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let mut child = Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).to_string();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

/// The shared ZooKeeper and operator.
pub struct Shared {
    /// ZooKeeper.
    pub zk: &'static ZkServer,
    /// Operator log file.
    pub log: PathBuf,
    /// Health address.
    pub health: String,
    _op: Operator,
    /// The operator's TLS directory and login file, when ZooKeeper is the secure one.
    _secrets: Option<tempfile::TempDir>,
}

/// `PODKEEPER_E2E_ZK_SECURE=1`: the shared operator reaches ZooKeeper over TLS with a client
/// certificate and a SASL login, and creates owner-only ACLs (VM providers beside it in client
/// folders are allowed as neighbours, as in a migration).
pub fn secure_mode() -> bool {
    std::env::var("PODKEEPER_E2E_ZK_SECURE").is_ok_and(|v| v == "1")
}

/// The TLS directory (`tls/`) and login file (`auth`) for `zk`'s podkeeper identity, as the chart
/// mounts them from Secrets, and the operator's env for them.
pub fn secure_env(zk: &ZkServer) -> (tempfile::TempDir, Vec<(&'static str, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    let pki = zk.pki();
    std::fs::copy(&pki.ca, tls.join("ca.crt")).unwrap();
    std::fs::copy(&pki.podkeeper.cert, tls.join("tls.crt")).unwrap();
    std::fs::copy(&pki.podkeeper.key, tls.join("tls.key")).unwrap();
    let pk = zk.sasl_user("podkeeper");
    let auth = dir.path().join("auth");
    std::fs::write(&auth, format!("{}:{}", pk.user, pk.password)).unwrap();
    let env = vec![
        ("PODKEEPER_ZK_TLS_DIR", tls.display().to_string()),
        ("PODKEEPER_ZK_AUTH_FILE", auth.display().to_string()),
        ("PODKEEPER_ZK_AUTH_MECHANISM", "sasl-digest-md5".to_string()),
        ("PODKEEPER_ZK_ACL_NEIGHBOURS", "world:anyone".to_string()),
    ];
    (dir, env)
}

/// Namespaces the e2e and fault suites create (`TestNs::new`) are granted everything by this
/// RegistryPolicy, as a single-team installation would grant its own: the tenancy tests use
/// namespaces outside the pattern.
pub const OPEN_POLICY: &str = r#"apiVersion: podkeeper.io/v1alpha1
kind: RegistryPolicy
metadata: {name: e2e-open}
spec:
  namespaces: ["e2e-*"]
  nativePaths: ["/**"]
  dubbo: [{interface: "*", root: "/**"}]
  curatorServices: ["/**"]
  serverSetPaths: ["/**"]
  templateHosts: ["*"]
  ensembles: ["**", "**/**"]
"#;

/// Applies the committed CRDs (server-side, taking over conflicting fields) and the policy
/// that opens the suites' namespaces.
pub fn install_crd() {
    let (ok, out) = kubectl(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            concat!(env!("CARGO_MANIFEST_DIR"), "/crds/"),
        ],
        None,
    );
    assert!(ok, "installing the CRDs failed: {out}");
    wait_crd_established("registrypolicies.podkeeper.io");
    let (ok, out) = kubectl(&["apply", "-f", "-"], Some(OPEN_POLICY));
    assert!(ok, "applying the e2e RegistryPolicy failed: {out}");
}

/// Waits up to 30 s for the CRD's Established condition. `kubectl wait` fails at once, instead
/// of waiting, while a CRD just created has no conditions yet: it is asked again until then.
fn wait_crd_established(name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let crd = format!("crd/{name}");
    loop {
        let args = [
            "wait",
            "--for=condition=Established",
            crd.as_str(),
            "--timeout=10s",
        ];
        let (ok, out) = kubectl(&args, None);
        if ok {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "CRD not established within 30 s: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Starts (once) ZooKeeper and the operator, and waits for /readyz.
pub fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let zk = if secure_mode() {
            ZkServer::shared_secure()
        } else {
            ZkServer::shared()
        };
        install_crd();
        wait_crd_established("serviceregistrations.podkeeper.io");
        let (secrets, connect, mut env) = match secure_mode() {
            true => {
                let (dir, env) = secure_env(zk);
                (Some(dir), zk.secure_connect_string(), env)
            }
            false => (None, zk.connect_string(), Vec::new()),
        };
        env.push(("PODKEEPER_CLUSTER_ID", "e2e".into()));
        env.push(("PODKEEPER_RESYNC_INTERVAL", "30s".into()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let op = Operator::start("shared", &connect, &env);
        let (log, health) = (op.log.clone(), op.health.clone());
        let s = Shared {
            zk,
            log,
            health,
            _op: op,
            _secrets: secrets,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http_get(&s.health, "/readyz").is_some_and(|(code, _)| code == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "operator not ready within 60s; log:\n{}",
                s.log_tail(80)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    })
}

impl Shared {
    /// The last `n` lines of the operator's log.
    pub fn log_tail(&self, n: usize) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// An operator process.
pub struct Operator {
    child: Child,
    /// Holds the log and pid files; removed with the operator (or by its watchdog when the
    /// test process ends first, as it does for the shared operator).
    dir: tempfile::TempDir,
    pid_file: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    /// Its health address.
    pub health: String,
}

impl Operator {
    /// Starts `podkeeper run` against the e2e cluster; `extra` env vars override the defaults.
    pub fn start(name: &str, zk: &str, extra: &[(&str, &str)]) -> Operator {
        let dir = tempfile::Builder::new()
            .prefix("podkeeper-operator-")
            .tempdir()
            .unwrap();
        let log = dir.path().join(format!("{name}.log"));
        let pid_file = dir.path().join(format!("{name}.pid"));
        let health = format!("127.0.0.1:{}", free_port());
        // PODKEEPER_E2E_OPERATOR_BIN runs the suite against another build (an A/B, or a test
        // shown failing on an older commit).
        let bin = std::env::var("PODKEEPER_E2E_OPERATOR_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_podkeeper").to_string());
        let script = format!(
            "'{bin}' run & op=$!; echo $op > '{pid}'; trap 'kill -9 $op 2>/dev/null; exit 0' TERM INT; \
             while kill -0 {parent} 2>/dev/null && kill -0 $op 2>/dev/null; do sleep 0.5; done; kill -9 $op 2>/dev/null; \
             kill -0 {parent} 2>/dev/null || rm -rf '{dir}'",
            pid = pid_file.display(),
            dir = dir.path().display(),
            parent = std::process::id()
        );
        let f = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(script)
            .env("KUBECONFIG", kubeconfig())
            .env("PODKEEPER_ZK_CONNECT", zk)
            .env("PODKEEPER_HEALTH_ADDR", &health)
            .env("PODKEEPER_CLUSTER_ID", "fault")
            .env("PODKEEPER_RESYNC_INTERVAL", "5m")
            .env("PODKEEPER_ZK_SESSION_TIMEOUT", "4s")
            .env("PODKEEPER_IDENTITY", name)
            .env("RUST_LOG", "info,podkeeper=debug,kube=warn")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start the operator");
        let op = Operator {
            child,
            dir,
            pid_file,
            log,
            health,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while op.pid().is_none() {
            assert!(Instant::now() < deadline, "operator did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        op
    }

    /// The operator's pid, once it runs.
    pub fn pid(&self) -> Option<String> {
        std::fs::read_to_string(&self.pid_file)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// Sends a signal (STOP, CONT, KILL...).
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().unwrap();
        assert!(
            Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(&pid)
                .status()
                .unwrap()
                .success()
        );
    }

    /// The operator process is alive (it may have exited on its own, e.g. at a failpoint).
    pub fn running(&self) -> bool {
        self.pid()
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
    }

    /// /readyz answers 200.
    pub fn ready(&self) -> bool {
        http_get(&self.health, "/readyz").is_some_and(|(c, _)| c == 200)
    }

    /// The end of its log.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- operator log {}\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
        if self.running() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(self.pid().unwrap())
                .status();
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP GET on loopback: (status code, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// A namespace for one test; deleted afterwards, dumped when the test fails.
pub struct TestNs {
    /// The namespace name.
    pub name: String,
}

impl TestNs {
    /// Creates a fresh namespace named after the test (`e2e-…`: opened by [`OPEN_POLICY`]).
    pub async fn new(test: &str) -> TestNs {
        TestNs::with_prefix("e2e", test).await
    }

    /// A namespace no RegistryPolicy names (`tenant-…`): it has only the defaults.
    pub async fn tenant(test: &str) -> TestNs {
        TestNs::with_prefix("tenant", test).await
    }

    async fn with_prefix(prefix: &str, test: &str) -> TestNs {
        let name = format!(
            "{prefix}-{}-{}",
            test.replace('_', "-").chars().take(40).collect::<String>(),
            std::process::id() % 10_000
        );
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client().await);
        let _ = api.delete(&name, &DeleteParams::default()).await;
        wait_until(Duration::from_secs(60), "old namespace gone", || async {
            api.get_opt(&name).await.unwrap().is_none()
        })
        .await;
        api.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
        TestNs { name }
    }

    /// The ZooKeeper path a resource named `svc` gets by default.
    pub fn path(&self, svc: &str) -> String {
        format!("/podkeeper/{}/{svc}", self.name)
    }

    /// `kubectl apply -n <ns> -f -`.
    pub fn apply(&self, yaml: &str) -> String {
        let (ok, out) = kubectl(&["apply", "-n", &self.name, "-f", "-"], Some(yaml));
        assert!(ok, "kubectl apply failed: {out}");
        out
    }

    /// `kubectl apply` that must fail; returns the message.
    pub fn apply_rejected(&self, yaml: &str) -> String {
        let (ok, out) = kubectl(&["apply", "-n", &self.name, "-f", "-"], Some(yaml));
        assert!(
            !ok,
            "expected the API server to reject:\n{yaml}\ngot: {out}"
        );
        out
    }

    /// `kubectl -n <ns> ...`.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        let (ok, out) = kubectl(&a, None);
        assert!(ok, "kubectl {args:?} failed: {out}");
        out
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("==== dump of namespace {} ====", self.name);
            for what in [
                "deploy,rs,pods -o wide",
                "svcreg -o yaml",
                "events --sort-by=.lastTimestamp",
            ] {
                let mut args = vec!["-n", self.name.as_str(), "get"];
                args.extend(what.split(' '));
                eprintln!("---- kubectl get {what}\n{}", kubectl(&args, None).1);
            }
            if let Some(s) = SHARED_STARTED.get() {
                eprintln!("---- operator log (tail)\n{}", s.log_tail(120));
            }
        }
        let _ = kubectl(&["delete", "namespace", &self.name, "--wait=false"], None);
    }
}

static SHARED_STARTED: OnceLock<&'static Shared> = OnceLock::new();

/// Starts the shared environment and remembers it for failure dumps.
pub fn env() -> &'static Shared {
    let s = shared();
    let _ = SHARED_STARTED.set(s);
    s
}

/// Polls `cond` every 50 ms until it holds; panics with `what` at the deadline.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A ZooKeeper client on the shared server.
pub async fn zk_client() -> zookeeper_client::Client {
    zookeeper_client::Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .connect(&env().zk.connect_string())
        .await
        .expect("connect to ZooKeeper")
}

/// A ZooKeeper client on the server at `connect` (a scenario's own).
pub async fn connect_zk(connect: &str) -> zookeeper_client::Client {
    zookeeper_client::Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .connect(connect)
        .await
        .expect("connect to ZooKeeper")
}

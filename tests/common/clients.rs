//! The real registry clients of tests/clients/ (Curator + Spring's payload, Dubbo 3.3's and 2.7's
//! registry, Finagle's zk2 resolver): built with Maven once per input hash, run as JSON-line programs.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One of the client programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// Curator 5.9 ServiceDiscovery / ServiceCache with Spring's `ZookeeperInstance`.
    Curator,
    /// Dubbo 3.3's ZooKeeper registry: consumer and provider.
    Dubbo,
    /// Dubbo 2.7's ZooKeeper registry: consumer.
    Dubbo27,
    /// Finagle's ServerSet resolver.
    ServerSet,
}

impl Client {
    fn module(self) -> &'static str {
        match self {
            Client::Curator => "curator",
            Client::Dubbo => "dubbo",
            Client::Dubbo27 => "dubbo27",
            Client::ServerSet => "serverset",
        }
    }

    fn main_class(self) -> &'static str {
        match self {
            Client::Curator => "io.podkeeper.clients.CuratorClient",
            Client::Dubbo => "io.podkeeper.clients.DubboClient",
            Client::Dubbo27 => "io.podkeeper.clients.Dubbo27Client",
            Client::ServerSet => "io.podkeeper.clients.ServerSetClient",
        }
    }
}

fn sources() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if name != "target" {
                files(&path, out);
            }
        } else {
            out.push(path);
        }
    }
}

/// FNV-1a over every input file's relative path and bytes, in path order.
fn input_hash() -> String {
    let root = sources();
    let mut all = Vec::new();
    files(&root, &mut all);
    all.sort();
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for f in &all {
        parts.push(
            f.strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .as_bytes()
                .to_vec(),
        );
        parts.push(std::fs::read(f).unwrap());
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    format!("{:016x}", podkeeper::zk::format::publish::fnv1a64(&refs))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            if path.file_name().unwrap() != "target" {
                copy_dir(&path, &dest);
            }
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}

/// The built clients: `<target>/tmp/clients-<hash>`, built by Maven (from Maven Central, or
/// ~/.m2 when warm) the first time a hash is seen. Another test binary building the same hash at
/// the same time builds its own copy and the first rename wins.
pub fn built() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let hash = input_hash();
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join(format!("clients-{hash}"));
        if dir.join(".built").exists() {
            return dir;
        }
        let work = base.join(format!("clients-{hash}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        copy_dir(&sources(), &work);
        let started = Instant::now();
        let out = Command::new("mvn")
            .args(["-B", "-q", "package", "-DskipTests"])
            .current_dir(&work)
            .output()
            .expect("run mvn (is Maven installed? apt-get install maven)");
        assert!(
            out.status.success(),
            "mvn package in {} failed:\n{}\n{}",
            work.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(
            work.join(".built"),
            format!("{:.1}s\n", started.elapsed().as_secs_f64()),
        )
        .unwrap();
        eprintln!(
            "clients: built {} in {:.1}s",
            dir.display(),
            started.elapsed().as_secs_f64()
        );
        if std::fs::rename(&work, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&work);
        }
        dir
    })
}

fn command(client: Client, args: &[&str]) -> Command {
    let module = built().join(client.module()).join("target");
    let deps = std::fs::read_to_string(module.join("classpath.txt")).unwrap();
    let jar = module.join(format!("{}-0.jar", client.module()));
    let mut cmd = Command::new("java");
    if client == Client::Dubbo27 {
        // Dubbo 2.7 compiles its adaptive extensions with javassist, which defines classes
        // through ClassLoader.defineClass: Java 17 applications of 2.7 open java.lang for it.
        cmd.arg("--add-opens=java.base/java.lang=ALL-UNNAMED");
    }
    cmd.args([
        "-Xms32m",
        "-Xmx256m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-cp",
        &format!("{}:{}", jar.display(), deps.trim()),
        client.main_class(),
    ])
    .args(args);
    cmd
}

/// Runs a client to completion (stdin closed at once) and returns its JSON lines.
pub fn run(client: Client, args: &[&str], stdin: &[u8]) -> Vec<Value> {
    let mut child = command(client, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run java");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = wait_output(child, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{client:?} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{client:?} printed {l:?}: {e}"))
        })
        .collect()
}

fn wait_output(child: Child, limit: Duration) -> std::process::Output {
    let id = child.id();
    let done = Arc::new((Mutex::new(false), Condvar::new()));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let (lock, cv) = &*done;
            let finished = cv
                .wait_timeout_while(lock.lock().unwrap(), limit, |d| !*d)
                .unwrap();
            if !*finished.0 {
                let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
            }
        })
    };
    let out = child.wait_with_output().unwrap();
    *done.0.lock().unwrap() = true;
    done.1.notify_all();
    watchdog.join().unwrap();
    out
}

/// A client that keeps running (a subscriber, a cache, a registered provider) until closed.
pub struct Running {
    client: Client,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<(Mutex<Vec<Value>>, Condvar)>,
    stderr: Arc<Mutex<String>>,
}

/// Starts a long-running client; its JSON lines are collected as they come.
pub fn spawn(client: Client, args: &[&str]) -> Running {
    let mut child = command(client, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run java");
    let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
    let stdout = child.stdout.take().unwrap();
    {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({"unparsed": line}));
                lines.0.lock().unwrap().push(v);
                lines.1.notify_all();
            }
        });
    }
    let stderr = Arc::new(Mutex::new(String::new()));
    let err = child.stderr.take().unwrap();
    {
        let stderr = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut s = stderr.lock().unwrap();
                if s.len() < 64 * 1024 {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
    }
    Running {
        client,
        stdin: child.stdin.take(),
        child,
        lines,
        stderr,
    }
}

impl Running {
    /// Every line so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.0.lock().unwrap().clone()
    }

    /// Waits until a line at index `from` or later satisfies `pred`; returns its index and it.
    /// Panics with everything printed so far when `limit` passes first.
    pub fn wait_for(
        &self,
        from: usize,
        limit: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> (usize, Value) {
        let deadline = Instant::now() + limit;
        let (lock, cv) = &*self.lines;
        let mut lines = lock.lock().unwrap();
        loop {
            if let Some((i, v)) = lines.iter().enumerate().skip(from).find(|(_, v)| pred(v)) {
                return (i, v.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "{:?}: no line with {what} within {limit:?}; lines:\n{}\nstderr:\n{}",
                    self.client,
                    lines
                        .iter()
                        .map(|l| l.to_string())
                        .collect::<Vec<_>>()
                        .join("\n"),
                    self.stderr.lock().unwrap()
                );
            }
            lines = cv.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    /// Closes stdin (the program unsubscribes or unregisters and exits) and waits for it.
    pub fn close(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Providers registered as VMs register them, by the libraries themselves: a Dubbo 3.3 provider
/// of `iface` (group g1, version 1.0.0) at 127.0.0.9:20880 and a Spring/Curator instance of
/// `service` (under /services) at 192.168.7.9:8080. Returns once both are registered; each
/// unregisters when closed (or is gone with its session when dropped).
pub fn register_vms(zk: &str, iface: &str, service: &str) -> [Running; 2] {
    let url = format!(
        "dubbo://127.0.0.9:20880/{iface}?application=vm-app&group=g1&version=1.0.0\
         &interface={iface}&side=provider&weight=100"
    );
    let dubbo = spawn(Client::Dubbo, &["provide", zk, "dubbo", &url]);
    let args = ["register", zk, "/services", service, "192.168.7.9", "8080"];
    let curator = spawn(Client::Curator, &args);
    for vm in [&dubbo, &curator] {
        vm.wait_for(0, Duration::from_secs(120), "the VM registration", |l| {
            l.get("registered").is_some()
        });
    }
    [dubbo, curator]
}

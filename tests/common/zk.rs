//! A real ZooKeeper server (Debian's package) for integration tests: free loopback port,
//! temporary data dir, stopped and removed on drop, or when the test process exits (watchdog).
//! `ZkServer::start_secure` adds what production servers run: TLS, SASL, x509, a superuser.

#![allow(dead_code)]

use super::pki;

#[allow(unused_imports)]
pub use pki::{CertKey, Pki};

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One standalone ZooKeeper process.
pub struct ZkServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    secure: Option<Secure>,
}

/// A user name and password (SASL DIGEST-MD5 or the `digest` scheme).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub user: String,
    pub password: String,
}

impl Credential {
    pub fn new(user: &str, password: &str) -> Credential {
        Credential {
            user: user.to_string(),
            password: password.to_string(),
        }
    }

    /// `user:password`, the auth data of the `digest` scheme (`addauth digest ...`).
    pub fn digest_auth(&self) -> Vec<u8> {
        format!("{}:{}", self.user, self.password).into_bytes()
    }

    /// `user:base64(sha1(user:password))`, the id of a `digest` ACL for this user.
    pub fn digest_id(&self) -> String {
        pki::digest_id(&self.user, &self.password)
    }
}

/// What the secure port asks of a client's certificate (`ssl.clientAuth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client without a trusted certificate is refused (production default).
    Need,
    /// A certificate is checked if sent; a client without one gets no x509 identity.
    Want,
    /// No certificate is asked for.
    None,
}

impl ClientAuth {
    fn config_value(self) -> &'static str {
        match self {
            ClientAuth::Need => "need",
            ClientAuth::Want => "want",
            ClientAuth::None => "none",
        }
    }
}

/// How `ZkServer::start_secure` configures the server.
#[derive(Clone, Debug)]
pub struct SecureOptions {
    /// `ssl.clientAuth` of the TLS port.
    pub client_auth: ClientAuth,
    /// The SASL DIGEST-MD5 users of the JAAS `Server` section.
    pub sasl_users: Vec<Credential>,
    /// The `digest` superuser (`zookeeper.DigestAuthenticationProvider.superDigest`).
    pub super_user: Credential,
    /// `ssl.enabledProtocols` (e.g. `["TLSv1.3", "TLSv1.2"]`, the first is also `ssl.protocol`;
    /// with TLSv1.3, `ssl.ciphersuites` gets its suites); empty keeps ZooKeeper 3.8.0's default,
    /// which is TLSv1.2 only.
    pub tls_protocols: Vec<String>,
}

impl Default for SecureOptions {
    fn default() -> SecureOptions {
        SecureOptions {
            client_auth: ClientAuth::Need,
            sasl_users: vec![
                Credential::new("podkeeper", "podkeeper-secret"),
                Credential::new("reader", "reader-secret"),
            ],
            super_user: Credential::new("super", "super-secret"),
            tls_protocols: Vec::new(),
        }
    }
}

struct Secure {
    port: u16,
    options: SecureOptions,
    pki: Pki,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The java classpath of Debian's ZooKeeper (`scripts/zk classpath`), for servers and Java clients.
pub fn classpath() -> &'static str {
    static CP: OnceLock<String> = OnceLock::new();
    CP.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/zk"))
            .arg("classpath")
            .output()
            .expect("run scripts/zk classpath");
        assert!(
            out.status.success(),
            "scripts/zk classpath failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends a four-letter command and returns the answer.
pub fn four_letter(port: u16, cmd: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(cmd.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The ids of the sessions connected to ZooKeeper at `port` with this negotiated timeout
/// (`cons`: one line per connection, `...,sid=0x...,...,to=<ms>,...`).
pub fn sessions_with_timeout(port: u16, timeout_ms: u64) -> Option<Vec<String>> {
    let to = format!(",to={timeout_ms},");
    let cons = four_letter(port, "cons")?;
    Some(
        cons.lines()
            .filter(|l| l.contains(&to))
            .filter_map(|l| {
                let sid = l.split("sid=").nth(1)?;
                Some(sid.split(',').next()?.to_string())
            })
            .collect(),
    )
}

impl ZkServer {
    /// Starts a private server and waits until it serves.
    pub fn start() -> ZkServer {
        let dir = tempfile::Builder::new()
            .prefix("podkeeper-zk-")
            .tempdir()
            .unwrap();
        let mut server = ZkServer {
            port: free_port(),
            dir,
            child: None,
            secure: None,
        };
        server.spawn();
        server
    }

    /// Starts a private server as production runs one, and waits until both ports serve:
    /// - a TLS port (`secure_port()`, Netty, PEM key and trust stores from `pki()`,
    ///   `ssl.clientAuth` from the options) where the x509 provider names clients by certificate;
    /// - a plaintext port (`port()`, for four-letter words and unauthenticated-client tests);
    /// - SASL DIGEST-MD5 (JAAS `Server` section with `options.sasl_users`), `digest` always on,
    ///   and a `digest` superuser.
    ///
    /// The certificates are made fresh in the server's directory (see `pki::Pki`).
    pub fn start_secure(options: SecureOptions) -> ZkServer {
        let dir = tempfile::Builder::new()
            .prefix("podkeeper-zk-secure-")
            .tempdir()
            .unwrap();
        let pki = Pki::generate(&dir.path().join("pki"));
        let mut server = ZkServer {
            port: free_port(),
            dir,
            child: None,
            secure: Some(Secure {
                port: free_port(),
                options,
                pki,
            }),
        };
        // A port free when picked may be taken by a parallel test before java binds it.
        for _ in 0..3 {
            match server.try_spawn() {
                Ok(()) => return server,
                Err(log) if log.contains("Address already in use") => {
                    server.port = free_port();
                    server.secure.as_mut().unwrap().port = free_port();
                }
                Err(log) => panic!("secure ZooKeeper did not start; log:\n{log}"),
            }
        }
        panic!("secure ZooKeeper found no free ports in 3 tries")
    }

    /// One secure server (default options) shared by the tests of a test binary.
    pub fn shared_secure() -> &'static ZkServer {
        static SHARED: OnceLock<ZkServer> = OnceLock::new();
        SHARED.get_or_init(|| ZkServer::start_secure(SecureOptions::default()))
    }

    /// The plaintext client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn secure(&self) -> &Secure {
        self.secure
            .as_ref()
            .expect("not a secure server: use ZkServer::start_secure")
    }

    /// The TLS client port (`secureClientPort`).
    pub fn secure_port(&self) -> u16 {
        self.secure().port
    }

    /// `127.0.0.1:<secure port>`.
    pub fn secure_connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.secure_port())
    }

    /// The certificates and keys this server and its clients use.
    pub fn pki(&self) -> &Pki {
        &self.secure().pki
    }

    /// The options it was started with.
    pub fn secure_options(&self) -> &SecureOptions {
        &self.secure().options
    }

    /// The SASL user `name` (panics if the server has no such user).
    pub fn sasl_user(&self, name: &str) -> &Credential {
        self.secure_options()
            .sasl_users
            .iter()
            .find(|c| c.user == name)
            .unwrap_or_else(|| panic!("no SASL user {name}"))
    }

    /// Changes a SASL user's password; the server uses it from its next (re)start, as a real
    /// server reads its JAAS file only at start.
    pub fn set_sasl_password(&mut self, user: &str, password: &str) {
        let secure = self.secure.as_mut().expect("not a secure server");
        let c = secure
            .options
            .sasl_users
            .iter_mut()
            .find(|c| c.user == user)
            .unwrap_or_else(|| panic!("no SASL user {user}"));
        c.password = password.to_string();
    }

    /// The `digest` superuser.
    pub fn super_user(&self) -> &Credential {
        &self.secure_options().super_user
    }

    /// The server's log so far (stdout and stderr of java).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("zk.log")).unwrap_or_default()
    }

    /// One server shared by the tests of a test binary; tests keep apart by using distinct paths.
    pub fn shared() -> &'static ZkServer {
        static SHARED: OnceLock<ZkServer> = OnceLock::new();
        SHARED.get_or_init(ZkServer::start)
    }

    /// `127.0.0.1:<port>`.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The zoo.cfg lines and java options of the secure setup.
    fn secure_config(&self) -> (String, String) {
        let Some(secure) = &self.secure else {
            return (String::new(), String::new());
        };
        let pki = &secure.pki;
        let mut cfg = format!(
            "secureClientPort={}\nsecureClientPortAddress=127.0.0.1\n\
             serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n\
             ssl.keyStore.location={}\nssl.keyStore.type=PEM\n\
             ssl.trustStore.location={}\nssl.trustStore.type=PEM\n\
             ssl.clientAuth={}\n\
             authProvider.1=org.apache.zookeeper.server.auth.SASLAuthenticationProvider\n\
             authProvider.2=org.apache.zookeeper.server.auth.X509AuthenticationProvider\n",
            secure.port,
            pki.server.keystore.display(),
            pki.ca.display(),
            secure.options.client_auth.config_value(),
        );
        if !secure.options.tls_protocols.is_empty() {
            cfg += &format!(
                "ssl.protocol={}\nssl.enabledProtocols={}\n",
                secure.options.tls_protocols[0],
                secure.options.tls_protocols.join(",")
            );
            // ZooKeeper 3.8.0's default cipher list has only TLS 1.2 suites, so TLS 1.3 is never
            // negotiated unless its suites are listed too.
            if secure.options.tls_protocols.iter().any(|p| p == "TLSv1.3") {
                cfg += "ssl.ciphersuites=TLS_AES_128_GCM_SHA256,TLS_AES_256_GCM_SHA384,\
                        TLS_CHACHA20_POLY1305_SHA256,TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,\
                        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\n";
            }
        }
        let users: String = secure
            .options
            .sasl_users
            .iter()
            .map(|c| format!("\n  user_{}=\"{}\"", c.user, c.password))
            .collect();
        let jaas = self.dir.path().join("jaas.conf");
        std::fs::write(
            &jaas,
            format!("Server {{\n  org.apache.zookeeper.server.auth.DigestLoginModule required{users};\n}};\n"),
        )
        .unwrap();
        let super_user = &secure.options.super_user;
        let java = format!(
            "-Djava.security.auth.login.config='{}' -Dzookeeper.DigestAuthenticationProvider.superDigest='{}'",
            jaas.display(),
            super_user.digest_id()
        );
        (cfg, java)
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("ZooKeeper on port {} did not start; log:\n{log}", self.port);
        }
    }

    /// Starts java and waits until it serves; Err(log) if it exits or does not serve in 60s.
    fn try_spawn(&mut self) -> Result<(), String> {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let cfg = self.dir.path().join("zoo.cfg");
        let (secure_cfg, secure_java) = self.secure_config();
        std::fs::write(
            &cfg,
            format!(
                "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
                 maxClientCnxns=0\nminSessionTimeout=1000\nmaxSessionTimeout=60000\nadmin.enableServer=false\n\
                 4lw.commands.whitelist=*\nforceSync=no\n{secure_cfg}",
                data.display(),
                self.port
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join("zk.log")).unwrap();
        // The watchdog ends java when this test process goes away, even on a panic or SIGKILL,
        // and then removes the data directory, which a server kept in a static never drops.
        let dir = self.dir.path();
        let script = format!(
            "java -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dzookeeper.admin.enableServer=false {secure_java} \
             -cp '{cp}' org.apache.zookeeper.server.ZooKeeperServerMain '{cfg}' & jpid=$!; \
             trap 'kill -9 $jpid 2>/dev/null; exit 0' TERM INT; \
             while kill -0 {parent} 2>/dev/null && kill -0 $jpid 2>/dev/null; do sleep 0.5; done; kill -9 $jpid 2>/dev/null; \
             kill -0 {parent} 2>/dev/null || rm -rf '{dir}' 2>/dev/null",
            cp = classpath(),
            cfg = cfg.display(),
            dir = dir.display(),
            parent = std::process::id()
        );
        let child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start ZooKeeper (is the zookeeper package installed?)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.serving() {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                self.child = None;
                return Err(format!("(exited at startup)\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("(did not serve within 60s)\n{}", self.log()))
    }

    /// `srvr` reports a Mode on the plain port once the database is loaded; the TLS port is bound
    /// after the plain one, so a secure server also has to accept a connection there.
    fn serving(&self) -> bool {
        four_letter(self.port, "srvr").is_some_and(|s| s.contains("Mode:"))
            && self.secure.as_ref().is_none_or(|s| {
                std::net::TcpStream::connect_timeout(
                    &([127, 0, 0, 1], s.port).into(),
                    Duration::from_millis(500),
                )
                .is_ok()
            })
    }

    /// Stops the server (data kept) and waits until the port no longer answers.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while four_letter(self.port, "ruok").is_some() {
            assert!(
                Instant::now() < deadline,
                "ZooKeeper on {} did not stop",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (STOP, CONT...) to the server's java process: a STOPped server keeps its
    /// connections open and answers nothing, as a hung ensemble does.
    pub fn signal_java(&self, signal: &str) {
        let parent = self.child.as_ref().expect("running").id().to_string();
        let java = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
            .find(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // "pid (comm) state ppid ..."
                let after = stat.rsplit_once(") ").map_or("", |(_, r)| r);
                stat.contains("(java)") && after.split(' ').nth(1) == Some(parent.as_str())
            })
            .expect("the server's java process");
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&java)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {java}");
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A three-server ZooKeeper ensemble (QuorumPeerMain) on loopback.
pub struct Ensemble {
    dir: tempfile::TempDir,
    client_ports: Vec<u16>,
    children: Vec<Option<Child>>,
}

impl Ensemble {
    /// Starts three servers and waits until one leads and two follow. Ports picked free can be
    /// taken by another process before a server binds them: then it starts again on new ones.
    pub fn start() -> Ensemble {
        let mut collided = String::new();
        for _ in 0..3 {
            match Self::try_start() {
                Ok(e) => return e,
                Err(why) if why.contains("Address already in use") => collided = why,
                Err(why) => panic!("{why}"),
            }
        }
        panic!("the ensemble's ports were taken three times:\n{collided}");
    }

    fn try_start() -> Result<Ensemble, String> {
        let dir = tempfile::Builder::new()
            .prefix("podkeeper-ensemble-")
            .tempdir()
            .unwrap();
        let mut ports = BTreeSet::new();
        while ports.len() < 9 {
            ports.insert(free_port());
        }
        let ports: Vec<u16> = ports.into_iter().collect();
        let client_ports = ports[..3].to_vec();
        let quorum: Vec<(u16, u16)> = (0..3)
            .map(|i| (ports[3 + 2 * i], ports[4 + 2 * i]))
            .collect();
        let servers: String = quorum
            .iter()
            .enumerate()
            .map(|(i, (q, e))| format!("server.{}=127.0.0.1:{q}:{e}\n", i + 1))
            .collect();
        for (i, port) in client_ports.iter().enumerate() {
            let data = dir.path().join(format!("s{}", i + 1));
            std::fs::create_dir_all(&data).unwrap();
            std::fs::write(data.join("myid"), format!("{}\n", i + 1)).unwrap();
            std::fs::write(
                dir.path().join(format!("zoo{}.cfg", i + 1)),
                format!(
                    "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
                     maxClientCnxns=0\nminSessionTimeout=1000\nmaxSessionTimeout=60000\nadmin.enableServer=false\n\
                     4lw.commands.whitelist=*\nforceSync=no\n{servers}",
                    data.display(),
                    port
                ),
            )
            .unwrap();
        }
        let mut e = Ensemble {
            dir,
            client_ports,
            children: vec![None, None, None],
        };
        for i in 0..3 {
            e.start_server(i);
        }
        e.quorum_within(Duration::from_secs(90))?;
        Ok(e)
    }

    /// `127.0.0.1:a,127.0.0.1:b,127.0.0.1:c`.
    pub fn connect_string(&self) -> String {
        self.client_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn start_server(&mut self, i: usize) {
        let cfg = self.dir.path().join(format!("zoo{}.cfg", i + 1));
        let log = std::fs::File::create(self.dir.path().join(format!("zk{}.log", i + 1))).unwrap();
        let dir = self.dir.path();
        let script = format!(
            "java -Xms32m -Xmx192m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dzookeeper.admin.enableServer=false \
             -cp '{cp}' org.apache.zookeeper.server.quorum.QuorumPeerMain '{cfg}' & jpid=$!; \
             trap 'kill -9 $jpid 2>/dev/null; exit 0' TERM INT; \
             while kill -0 {parent} 2>/dev/null && kill -0 $jpid 2>/dev/null; do sleep 0.5; done; kill -9 $jpid 2>/dev/null; \
             kill -0 {parent} 2>/dev/null || rm -rf '{dir}' 2>/dev/null",
            cp = classpath(),
            cfg = cfg.display(),
            dir = dir.display(),
            parent = std::process::id()
        );
        let child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start a ZooKeeper server");
        self.children[i] = Some(child);
    }

    /// Mode (leader/follower) of each running server.
    pub fn modes(&self) -> Vec<Option<String>> {
        self.client_ports
            .iter()
            .map(|p| {
                four_letter(*p, "srvr").and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Mode: ").map(str::to_string))
                })
            })
            .collect()
    }

    /// Waits until a leader and at least one follower serve.
    pub fn wait_quorum(&self) {
        if let Err(why) = self.quorum_within(Duration::from_secs(90)) {
            panic!("{why}");
        }
    }

    /// Waits up to `limit` for a leader and at least one follower; else why not, with the end
    /// of each server's log.
    fn quorum_within(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let modes = self.modes();
            let leaders = modes
                .iter()
                .filter(|m| m.as_deref() == Some("leader"))
                .count();
            let followers = modes
                .iter()
                .filter(|m| m.as_deref() == Some("follower"))
                .count();
            if leaders == 1 && followers >= 1 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "ensemble has no quorum after {limit:?}: {modes:?}\n{}",
                    self.log_tails()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of each server's log.
    fn log_tails(&self) -> String {
        (1..=3)
            .map(|i| {
                let log = std::fs::read_to_string(self.dir.path().join(format!("zk{i}.log")))
                    .unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                format!("--- server {i}:\n{tail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Kills the current leader; returns its index.
    pub fn kill_leader(&mut self) -> usize {
        let i = self
            .modes()
            .iter()
            .position(|m| m.as_deref() == Some("leader"))
            .expect("a leader");
        self.stop_server(i);
        i
    }

    /// Stops server `i`.
    pub fn stop_server(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while four_letter(self.client_ports[i], "ruok").is_some() {
            assert!(Instant::now() < deadline, "server {i} did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts server `i` again.
    pub fn restart_server(&mut self, i: usize) {
        self.start_server(i);
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        for i in 0..3 {
            self.stop_server(i);
        }
    }
}

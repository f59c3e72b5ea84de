//! A real ZooKeeper server (Debian's package) for integration tests: free loopback port,
//! temporary data dir, stopped on drop, or when the test process exits (watchdog).

#![allow(dead_code)]

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
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn classpath() -> &'static str {
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
        };
        server.spawn();
        server
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

    fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let cfg = self.dir.path().join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
                 maxClientCnxns=0\nminSessionTimeout=1000\nmaxSessionTimeout=60000\nadmin.enableServer=false\n\
                 4lw.commands.whitelist=*\nforceSync=no\n",
                data.display(),
                self.port
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join("zk.log")).unwrap();
        // The watchdog ends java when this test process goes away, even on a panic or SIGKILL.
        let script = format!(
            "java -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dzookeeper.admin.enableServer=false \
             -cp '{cp}' org.apache.zookeeper.server.ZooKeeperServerMain '{cfg}' & jpid=$!; \
             trap 'kill -9 $jpid 2>/dev/null; exit 0' TERM INT; \
             while kill -0 {parent} 2>/dev/null && kill -0 $jpid 2>/dev/null; do sleep 0.5; done; kill -9 $jpid 2>/dev/null",
            cp = classpath(),
            cfg = cfg.display(),
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
            if four_letter(self.port, "srvr").is_some_and(|s| s.contains("Mode:")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.path().join("zk.log")).unwrap_or_default();
        panic!(
            "ZooKeeper on port {} did not serve within 60s; log:\n{log}",
            self.port
        );
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

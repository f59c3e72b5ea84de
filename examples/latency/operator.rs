//! The operator process under test, when this program starts it (`--operator-bin`): start with
//! extra environment (allocator knobs, a fresh ZooKeeper chroot), stop, and read its RSS and
//! CPU time from /proc. Its pid goes to `--operator-pidfile` so scripts/bench can stop it even
//! when this program is killed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// One way to run the operator: a binary plus environment (e.g. `MALLOC_ARENA_MAX=2`).
#[derive(Clone, Debug)]
pub struct Variant {
    pub name: String,
    pub bin: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Variant {
    /// `name=path[ KEY=VALUE...]`.
    pub fn parse(s: &str) -> anyhow::Result<Variant> {
        let (name, rest) = s
            .split_once('=')
            .with_context(|| format!("variant {s:?}: want name=path[ KEY=VALUE...]"))?;
        let mut words = rest.split_whitespace();
        let bin = PathBuf::from(words.next().context("variant without a binary")?);
        let env = words
            .map(|w| {
                w.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .with_context(|| format!("variant {name}: {w:?} is not KEY=VALUE"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Variant {
            name: name.to_string(),
            bin,
            env,
        })
    }
}

/// The running operator (at most one at a time).
pub struct Operator {
    pub log: PathBuf,
    pub pidfile: Option<PathBuf>,
    child: Option<Child>,
}

impl Operator {
    pub fn new(log: PathBuf, pidfile: Option<PathBuf>) -> Operator {
        Operator {
            log,
            pidfile,
            child: None,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts `variant` with `extra` environment on top of this program's (scripts/bench sets
    /// the ZooKeeper address, health port, resync interval and cluster id).
    pub fn start(
        &mut self,
        variant: &Variant,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Instant> {
        if self.child.is_some() {
            bail!("an operator is already running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = Command::new(&variant.bin);
        cmd.arg("run")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &variant.env {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", variant.bin.display()))?;
        if let Some(p) = &self.pidfile {
            std::fs::write(p, child.id().to_string())?;
        }
        self.child = Some(child);
        Ok(started)
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(p) = &self.pidfile {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }

    /// Fails when the operator exited on its own.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            bail!(
                "the operator exited ({status}); log: {}",
                self.log.display()
            );
        }
        Ok(())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: Option<u32>) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// RssAnon of `pid` in KiB: the resident heap and stacks, without the pages of the binary and
/// its libraries (RssFile), which a process touches more of as it runs more of its code.
pub fn anon_kib(pid: Option<u32>) -> Option<u64> {
    status_kib(pid, "RssAnon:")
}

fn status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// User + system CPU seconds of `pid` (fields 14 and 15 of /proc/PID/stat, in clock ticks of
/// 1/100 s, the value of CLK_TCK on Linux x86-64).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // The command name (field 2) may hold spaces; fields after it start past the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

//! What the multi-node Redis fixtures share: free loopback ports, spawning
//! `redis-server` in a temporary directory, waiting for it, and making sure
//! no server outlives the test process (a watchdog kills them when the
//! process exits, for fixtures kept in a static, which is never dropped).
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How long a server may take to answer after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh temporary directory for one fixture, removed once this test
/// process has exited (or earlier by the fixture's drop).
pub fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ciba-{what}-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    after_exit(&format!("rm -rf '{}'", dir.display()));
    dir
}

/// A free loopback port whose cluster bus port (+10000) is free too.
pub fn free_port() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port pair")
}

/// One `redis-server` (or sentinel) child; killed when dropped.
pub struct Process {
    pub port: u16,
    child: Option<Child>,
}

impl Process {
    /// Runs `redis-server` with `args` in `dir`, output to `dir/<port>.log`.
    pub fn spawn(dir: &Path, port: u16, args: &[String]) -> anyhow::Result<Process> {
        let log = std::fs::File::create(dir.join(format!("{port}.log")))?;
        let child = Command::new("redis-server")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn redis-server (is it on PATH?)")?;
        after_exit(&format!("kill -9 {} 2>/dev/null", child.id()));
        Ok(Process {
            port,
            child: Some(child),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the node is gone, as a crashed machine is.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The usual arguments of a data node on `port` keeping nothing on disk.
pub fn node_args(port: u16) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A synchronous connection to a plain node.
pub fn connection(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    client.get_connection_with_timeout(Duration::from_secs(2))
}

/// Runs `check` until it is true, or fails after `timeout`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the node on `port` answers PING.
pub fn wait_ready(port: u16) -> anyhow::Result<()> {
    wait_until(
        &format!("redis on port {port} answers PING"),
        READY_TIMEOUT,
        || {
            connection(port)
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        },
    )
}

/// Runs the shell command `then` once this test process has exited (a
/// fixture kept in a static is never dropped).
fn after_exit(then: &str) {
    let me = std::process::id();
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {me} 2>/dev/null; do sleep 1; done; {then}"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

//! A Redis server owned by one test: its own free port and its own data
//! directory, so the test can stop it (an outage) and start it again with
//! its data, without disturbing the shared Redis other tests use.
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the server may take to answer PING after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `SHUTDOWN SAVE` may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process; killed, and its directory removed, when dropped.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port with a fresh temporary directory
    /// and waits until it answers PING.
    pub async fn start() -> anyhow::Result<RedisServer> {
        which("redis-server").context(
            "redis-server is not on PATH: install Redis (e.g. `apt-get install redis-server`)",
        )?;
        let dir = std::env::temp_dir().join(format!("ciba-redis-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("create the Redis directory {}", dir.display()))?;
        let mut server = RedisServer {
            port: 0,
            dir,
            child: None,
        };
        let mut last_error = None;
        // The free port may be taken between probing and binding: try a few.
        for _ in 0..5 {
            server.port = free_port()?;
            match server.launch().await {
                Ok(()) => return Ok(server),
                Err(e) => {
                    if let Some(child) = server.child.take() {
                        kill(child);
                    }
                    last_error = Some(e);
                }
            }
        }
        // Dropping the server removes the directory.
        Err(last_error.expect("at least one attempt"))
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGSTOP: the server stops answering but keeps every connection and
    /// queues what it is sent, as a stalled Redis does.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: the server runs what it queued, then answers again.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .map(|c| c.id())
            .expect("redis-server is running");
        let status = std::process::Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Whether the child process is running (it may still be loading its data).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `SHUTDOWN SAVE`: writes the data to `dump.rdb`, then waits for the
    /// process to exit (killing it if it takes too long). Does nothing when
    /// it is already stopped.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Err(e) = self.shutdown_save().await {
            eprintln!("redis-server on port {}: SHUTDOWN SAVE: {e:#}", self.port);
        }
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => {
                    eprintln!(
                        "redis-server on port {} did not exit after SHUTDOWN SAVE; killing it",
                        self.port
                    );
                    kill(child);
                    return;
                }
            }
        }
    }

    /// Starts the server again on the same port and directory (its data is
    /// loaded from `dump.rdb`) and waits until it answers PING. Stops it
    /// first if it is running.
    ///
    /// # Panics
    /// If it does not come back (e.g. somebody else took the port).
    pub async fn restart(&mut self) {
        self.stop().await;
        let port = self.port;
        self.launch()
            .await
            .unwrap_or_else(|e| panic!("restart redis-server on port {port}: {e:#}"));
    }

    /// Spawns the child on `self.port` and waits for PING.
    async fn launch(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--dbfilename")
            .arg("dump.rdb")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--daemonize")
            .arg("no")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn redis-server")?;
        let addr = self.addr();
        let child = self.child.insert(child);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "redis-server on port {} exited with {status} before answering PING",
                    self.port
                );
            }
            if ping(addr).await {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "redis-server on port {} did not answer PING within {READY_TIMEOUT:?}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown_save(&self) -> anyhow::Result<()> {
        let mut stream = TcpStream::connect(self.addr()).await?;
        stream.write_all(b"SHUTDOWN SAVE\r\n").await?;
        // On success the server closes the connection without a reply.
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(STOP_TIMEOUT, stream.read_to_end(&mut reply)).await;
        anyhow::ensure!(
            !reply.starts_with(b"-"),
            "{}",
            String::from_utf8_lossy(&reply).trim_end()
        );
        Ok(())
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            kill(child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether the server answers `+PONG` (not `-LOADING` or anything else).
async fn ping(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await.ok()?;
        Some(&reply == b"+PONG\r\n")
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The first `name` in `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
        redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn keeps_its_data_across_stop_and_restart() {
        let mut server = RedisServer::start().await.expect("start redis-server");
        let url = server.url();
        assert_eq!(url, format!("redis://127.0.0.1:{}", server.port()));
        let mut con = connection(&url).await;
        redis::cmd("SET")
            .arg("survivor")
            .arg("still here")
            .query_async::<()>(&mut con)
            .await
            .unwrap();
        drop(con);

        server.stop().await;
        assert!(!server.is_running());
        assert!(
            redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .is_err(),
            "the server is down"
        );

        server.restart().await;
        assert!(server.is_running());
        let mut con = connection(&url).await;
        let value: Option<String> = redis::cmd("GET")
            .arg("survivor")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(value.as_deref(), Some("still here"));

        let dir = server.dir.clone();
        assert!(dir.join("dump.rdb").exists());
        drop(server);
        assert!(!dir.exists(), "the temporary directory is removed");
    }
}

//! A real Sentinel group on loopback ports: one primary, one replica and
//! three sentinels (`redis-server <conf> --sentinel`) watching them under
//! the master name [`MASTER`]. Short timeouts, so a test sees a failover
//! within seconds.
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::redis_process::{
    connection, free_port, node_args, temp_dir, wait_ready, wait_until, Process,
};

pub const MASTER: &str = "ciba";

pub struct RedisSentinel {
    primary: Process,
    replica: Process,
    sentinels: Vec<Process>,
    dir: PathBuf,
}

impl RedisSentinel {
    /// One group for every test of this binary that only reads and writes.
    pub fn shared() -> &'static RedisSentinel {
        static GROUP: OnceLock<RedisSentinel> = OnceLock::new();
        GROUP.get_or_init(|| RedisSentinel::start().expect("start the shared Sentinel group"))
    }

    /// A group of its own, for a test that fails its primary over.
    pub fn start() -> anyhow::Result<RedisSentinel> {
        let dir = temp_dir("sentinel");
        let primary_port = free_port()?;
        let primary = Process::spawn(&dir, primary_port, &node_args(primary_port))?;
        let replica_port = free_port()?;
        let mut args = node_args(replica_port);
        args.extend(["--replicaof", "127.0.0.1", &primary_port.to_string()].map(String::from));
        let replica = Process::spawn(&dir, replica_port, &args)?;
        wait_ready(primary_port)?;
        wait_ready(replica_port)?;
        wait_until("the replica is in sync", Duration::from_secs(20), || {
            connection(replica_port)
                .and_then(|mut c| {
                    redis::cmd("INFO")
                        .arg("replication")
                        .query::<String>(&mut c)
                })
                .is_ok_and(|info| info.contains("master_link_status:up"))
        })?;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let port = free_port()?;
            let conf = dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndaemonize no\n\
                     sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 5000\n\
                     sentinel parallel-syncs {MASTER} 1\n"
                ),
            )?;
            sentinels.push(Process::spawn(
                &dir,
                port,
                &[conf.display().to_string(), "--sentinel".into()],
            )?);
        }
        for s in &sentinels {
            wait_ready(s.port)?;
        }
        let group = RedisSentinel {
            primary,
            replica,
            sentinels,
            dir,
        };
        // Every sentinel must know the replica and the other sentinels
        // before a failover can be agreed.
        wait_until(
            "the sentinels know the group",
            Duration::from_secs(30),
            || {
                group.sentinels.iter().all(|s| {
                    connection(s.port)
                        .and_then(|mut c| {
                            redis::cmd("SENTINEL")
                                .arg("MASTER")
                                .arg(MASTER)
                                .query::<Vec<String>>(&mut c)
                        })
                        .is_ok_and(|fields| {
                            let get = |name: &str| {
                                fields
                                    .chunks(2)
                                    .find(|kv| kv[0] == name)
                                    .map(|kv| kv[1].clone())
                                    .unwrap_or_default()
                            };
                            get("num-slaves") == "1" && get("num-other-sentinels") == "2"
                        })
                })
            },
        )?;
        Ok(group)
    }

    /// `redis+sentinel://` naming the three sentinels and [`MASTER`].
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", hosts.join(","))
    }

    pub fn primary_port(&self) -> u16 {
        self.primary.port
    }

    pub fn replica_port(&self) -> u16 {
        self.replica.port
    }

    /// SIGKILLs the primary: the sentinels promote the replica.
    pub fn kill_primary(&mut self) {
        self.primary.kill();
    }

    /// Until a sentinel names the former replica as the primary.
    pub fn wait_failover(&self, timeout: Duration) -> anyhow::Result<()> {
        let replica = self.replica.port.to_string();
        wait_until("the sentinels promote the replica", timeout, || {
            connection(self.sentinels[0].port)
                .and_then(|mut c| {
                    redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(MASTER)
                        .query::<Vec<String>>(&mut c)
                })
                .is_ok_and(|addr| addr.get(1) == Some(&replica))
        })
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        self.sentinels.clear();
        self.primary.kill();
        self.replica.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

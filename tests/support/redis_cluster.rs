//! A real Redis Cluster on loopback ports: 6 nodes, 3 primaries with a
//! replica each (`redis-server --cluster-enabled yes`, then `redis-cli
//! --cluster create ... --cluster-replicas 1`). [`RedisCluster::shared`]
//! starts one per test binary; a test that kills a node starts its own.
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;

use crate::redis_process::{
    connection, free_port, node_args, temp_dir, wait_ready, wait_until, Process,
};

/// Short, so a test sees a failover within seconds.
const NODE_TIMEOUT_MS: u64 = 1000;
const NODES: usize = 6;

pub struct RedisCluster {
    nodes: Vec<Process>,
    dir: PathBuf,
}

impl RedisCluster {
    /// One cluster for every test of this binary that only reads and writes.
    pub fn shared() -> &'static RedisCluster {
        static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
        CLUSTER.get_or_init(|| RedisCluster::start().expect("start the shared Redis Cluster"))
    }

    /// A cluster of its own, for a test that breaks it.
    pub fn start() -> anyhow::Result<RedisCluster> {
        let dir = temp_dir("cluster");
        let mut nodes = Vec::new();
        for _ in 0..NODES {
            let port = free_port()?;
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir)?;
            let mut args = node_args(port);
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    &NODE_TIMEOUT_MS.to_string(),
                    // Keep serving the slots that still have a primary.
                    "--cluster-require-full-coverage",
                    "no",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            nodes.push(Process::spawn(&node_dir, port, &args)?);
        }
        for node in &nodes {
            wait_ready(node.port)?;
        }
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .context("run redis-cli --cluster create")?;
        anyhow::ensure!(
            output.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = RedisCluster { nodes, dir };
        cluster.wait_healthy(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The ports of the nodes still running.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .map(|n| n.port)
            .collect()
    }

    /// Until every live node says the cluster is ok and every primary has
    /// a replica in sync.
    pub fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        wait_until("the Redis Cluster is ok", timeout, || {
            self.ports().iter().all(|port| {
                let Ok(mut c) = connection(*port) else {
                    return false;
                };
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut c)
                    .unwrap_or_default();
                let replication: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut c)
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            })
        })
    }

    /// The port of the primary serving `key`'s slot.
    pub fn primary_for(&self, key: &str) -> anyhow::Result<u16> {
        let port = self.ports()[0];
        let mut c = connection(port)?;
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut c)?;
        let slots: redis::Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut c)?;
        let redis::Value::Array(ranges) = slots else {
            anyhow::bail!("CLUSTER SLOTS: {slots:?}")
        };
        for range in ranges {
            let redis::Value::Array(parts) = range else {
                continue;
            };
            let (Some(redis::Value::Int(from)), Some(redis::Value::Int(to))) =
                (parts.first(), parts.get(1))
            else {
                continue;
            };
            if (*from..=*to).contains(&slot) {
                if let Some(redis::Value::Array(primary)) = parts.get(2) {
                    if let Some(redis::Value::Int(port)) = primary.get(1) {
                        return Ok(*port as u16);
                    }
                }
            }
        }
        anyhow::bail!("no primary serves slot {slot}")
    }

    /// SIGKILLs the node on `port` (a crashed primary: its replica takes over).
    pub fn kill(&mut self, port: u16) {
        for node in &mut self.nodes {
            if node.port == port {
                node.kill();
            }
        }
    }

    /// Sends `args` to every live primary (e.g. `SCRIPT FLUSH`).
    pub fn on_every_primary(&self, args: &[&str]) -> anyhow::Result<()> {
        for port in self.ports() {
            let mut c = connection(port)?;
            let role: redis::Value = redis::cmd("ROLE").query(&mut c)?;
            let is_primary = matches!(&role, redis::Value::Array(parts)
                if matches!(parts.first(), Some(redis::Value::BulkString(b)) if b == b"master"));
            if is_primary {
                let mut cmd = redis::cmd(args[0]);
                for arg in &args[1..] {
                    cmd.arg(*arg);
                }
                cmd.query::<redis::Value>(&mut c)?;
            }
        }
        Ok(())
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

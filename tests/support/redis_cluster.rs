//! A real Redis Cluster on loopback ports: 6 nodes, 3 primaries with a
//! replica each (`redis-server --cluster-enabled yes`, then `redis-cli
//! --cluster create ... --cluster-replicas 1`). [`RedisCluster::shared`]
//! starts one per test binary; a test that kills a node starts its own.
//! [`RedisCluster::shared_tls`] is a smaller one, 3 primaries without
//! replicas, that speaks only TLS (`tls-cluster yes`, a client certificate
//! from the test CA required), where the proxy's ACL user [`DATA_USER`] has
//! only the rights docs/scaling.md lists.
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;

use crate::redis_process::{
    free_port, node_config, temp_dir, userinfo, wait_until, Access, Process, ADMIN_PASSWORD,
    ADMIN_USER,
};

/// Short, so a test sees a failover within seconds.
const NODE_TIMEOUT_MS: u64 = 1000;
const NODES: usize = 6;

pub use crate::redis_process::{DATA_PASSWORD, DATA_USER};

pub struct RedisCluster {
    nodes: Vec<Process>,
    dir: PathBuf,
    /// How the fixture reaches its nodes (TLS and the ACL user, or neither).
    access: Access,
}

impl RedisCluster {
    /// One cluster for every test of this binary that only reads and writes.
    pub fn shared() -> &'static RedisCluster {
        static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
        CLUSTER.get_or_init(|| RedisCluster::start().expect("start the shared Redis Cluster"))
    }

    /// A TLS-only cluster of 3 primaries with the ACL user [`DATA_USER`].
    pub fn shared_tls() -> &'static RedisCluster {
        static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
        CLUSTER.get_or_init(|| {
            RedisCluster::start_with(3, true).expect("start the shared TLS Redis Cluster")
        })
    }

    /// A cluster of its own, for a test that breaks it.
    pub fn start() -> anyhow::Result<RedisCluster> {
        RedisCluster::start_with(NODES, false)
    }

    /// `nodes` nodes: with 6, 3 primaries with a replica each; with 3, 3
    /// primaries. `secured`: TLS-only, with the ACL user [`DATA_USER`].
    fn start_with(nodes_count: usize, secured: bool) -> anyhow::Result<RedisCluster> {
        let dir = temp_dir("cluster");
        let access = Access {
            tls: secured,
            user: secured.then(|| (ADMIN_USER.to_owned(), ADMIN_PASSWORD.to_owned())),
        };
        let mut nodes = Vec::new();
        for _ in 0..nodes_count {
            let port = free_port()?;
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir)?;
            let mut conf = node_config(port, secured, secured);
            conf.push_str(&format!(
                "cluster-enabled yes\ncluster-config-file nodes.conf\n\
                 cluster-node-timeout {NODE_TIMEOUT_MS}\n\
                 # Keep serving the slots that still have a primary.\n\
                 cluster-require-full-coverage no\n"
            ));
            if secured {
                // The cluster bus over TLS too.
                conf.push_str("tls-cluster yes\n");
            }
            let path = node_dir.join("redis.conf");
            std::fs::write(&path, conf)?;
            nodes.push(Process::spawn(
                &node_dir,
                port,
                &[path.display().to_string()],
            )?);
        }
        for node in &nodes {
            access.wait_ready(node.port)?;
        }
        let replicas = if nodes_count >= 6 { "1" } else { "0" };
        let output = Command::new("redis-cli")
            .args(access.cli_args())
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", replicas, "--cluster-yes"])
            .output()
            .context("run redis-cli --cluster create")?;
        anyhow::ensure!(
            output.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = RedisCluster { nodes, dir, access };
        cluster.wait_healthy(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// `redis+cluster://` (`rediss+` for TLS) with every node as a seed,
    /// and the ACL user's name and password if it has one.
    pub fn url(&self) -> String {
        self.url_as(
            self.access
                .user
                .is_some()
                .then_some((DATA_USER, DATA_PASSWORD)),
        )
    }

    /// [`Self::url`] with this user and password, or none.
    pub fn url_as(&self, user: Option<(&str, &str)>) -> String {
        let scheme = if self.access.tls {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        let userinfo = userinfo(user);
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("{scheme}://{userinfo}{}", seeds.join(","))
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
                let Ok(mut c) = self.access.connection(*port) else {
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
        let mut c = self.access.connection(port)?;
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
            let mut c = self.access.connection(port)?;
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

//! A real Sentinel group on loopback ports: one primary, one replica and
//! three sentinels (`redis-server <conf> --sentinel`) watching them under
//! the master name [`MASTER`]. Short timeouts, so a test sees a failover
//! within seconds. A group may require ACL users and passwords (one for the
//! data nodes, one for the sentinels) and speak only TLS ([`Security`]).
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::redis_process::{
    free_port, node_config, temp_dir, tls_config, userinfo, wait_until, Access, Process,
    ADMIN_PASSWORD, ADMIN_USER,
};

pub const MASTER: &str = "ciba";

/// The data nodes' ACL user in a secured group (the URL's user).
pub use crate::redis_process::{DATA_PASSWORD, DATA_USER};
/// The sentinels' own ACL user (`[store] sentinel_username`).
pub const SENTINEL_USER: &str = "watcher";
pub const SENTINEL_PASSWORD: &str = "sentinel-Pw-c28e40";

/// What a group asks of its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain TCP, no password.
    Open,
    /// Data nodes with the ACL user [`DATA_USER`], which may do only what
    /// docs/scaling.md lists (`user default off`; the replica and the
    /// sentinels log in as an admin user), sentinels with their own user
    /// [`SENTINEL_USER`] (`sentinel sentinel-user/-pass` for each other).
    Acl,
    /// [`Security::Acl`], and every node and sentinel speaks only TLS and
    /// requires a client certificate from the test CA.
    TlsAcl,
}

impl Security {
    /// How the fixture reaches the data nodes.
    fn data_access(self) -> Access {
        self.access(ADMIN_USER, ADMIN_PASSWORD)
    }

    /// How the fixture reaches the sentinels.
    fn sentinel_access(self) -> Access {
        self.access(SENTINEL_USER, SENTINEL_PASSWORD)
    }

    fn access(self, user: &str, password: &str) -> Access {
        Access {
            tls: self == Security::TlsAcl,
            user: (self != Security::Open).then(|| (user.to_owned(), password.to_owned())),
        }
    }
}

pub struct RedisSentinel {
    primary: Process,
    replica: Process,
    sentinels: Vec<Process>,
    dir: PathBuf,
    security: Security,
}

impl RedisSentinel {
    /// One group for every test of this binary that only reads and writes.
    pub fn shared() -> &'static RedisSentinel {
        static GROUP: OnceLock<RedisSentinel> = OnceLock::new();
        GROUP.get_or_init(|| RedisSentinel::start().expect("start the shared Sentinel group"))
    }

    /// A shared group whose data nodes and sentinels require a password.
    pub fn shared_acl() -> &'static RedisSentinel {
        static GROUP: OnceLock<RedisSentinel> = OnceLock::new();
        GROUP.get_or_init(|| {
            RedisSentinel::start_with(Security::Acl).expect("start the shared ACL Sentinel group")
        })
    }

    /// A shared group that requires passwords and speaks only TLS.
    pub fn shared_tls() -> &'static RedisSentinel {
        static GROUP: OnceLock<RedisSentinel> = OnceLock::new();
        GROUP.get_or_init(|| {
            RedisSentinel::start_with(Security::TlsAcl)
                .expect("start the shared TLS Sentinel group")
        })
    }

    /// A group of its own, for a test that fails its primary over.
    pub fn start() -> anyhow::Result<RedisSentinel> {
        RedisSentinel::start_with(Security::Open)
    }

    pub fn start_with(security: Security) -> anyhow::Result<RedisSentinel> {
        let dir = temp_dir("sentinel");
        let tls = security == Security::TlsAcl;
        let acl = security != Security::Open;
        let (data, watcher) = (security.data_access(), security.sentinel_access());
        let node = |port: u16, primary: Option<u16>| -> anyhow::Result<Process> {
            let mut conf = node_config(port, tls, acl);
            if let Some(primary) = primary {
                conf.push_str(&format!("replicaof 127.0.0.1 {primary}\n"));
                if acl {
                    conf.push_str(&format!(
                        "masteruser {ADMIN_USER}\nmasterauth {ADMIN_PASSWORD}\n"
                    ));
                }
            }
            let path = dir.join(format!("node-{port}.conf"));
            std::fs::write(&path, conf)?;
            Process::spawn(&dir, port, &[path.display().to_string()])
        };
        let primary_port = free_port()?;
        let primary = node(primary_port, None)?;
        let replica_port = free_port()?;
        let replica = node(replica_port, Some(primary_port))?;
        data.wait_ready(primary_port)?;
        data.wait_ready(replica_port)?;
        data.wait_in_sync(replica_port)?;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let port = free_port()?;
            let mut conf = if tls {
                tls_config(port)
            } else {
                format!("port {port}\n")
            };
            conf.push_str(&format!(
                "bind 127.0.0.1\ndaemonize no\n\
                 sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 5000\n\
                 sentinel parallel-syncs {MASTER} 1\n"
            ));
            if acl {
                // Their own user, which they also use with each other; the
                // data nodes' user towards the primary and the replica.
                conf.push_str(&format!(
                    "user default off\n\
                     user {SENTINEL_USER} on >{SENTINEL_PASSWORD} ~* &* +@all\n\
                     sentinel sentinel-user {SENTINEL_USER}\n\
                     sentinel sentinel-pass {SENTINEL_PASSWORD}\n\
                     sentinel auth-user {MASTER} {ADMIN_USER}\n\
                     sentinel auth-pass {MASTER} {ADMIN_PASSWORD}\n"
                ));
            }
            let path = dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(&path, conf)?;
            sentinels.push(Process::spawn(
                &dir,
                port,
                &[path.display().to_string(), "--sentinel".into()],
            )?);
        }
        for s in &sentinels {
            watcher.wait_ready(s.port)?;
        }
        let group = RedisSentinel {
            primary,
            replica,
            sentinels,
            dir,
            security,
        };
        // Every sentinel must know the replica and the other sentinels
        // before a failover can be agreed.
        wait_until(
            "the sentinels know the group",
            Duration::from_secs(30),
            || {
                group.sentinels.iter().all(|s| {
                    watcher
                        .connection(s.port)
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

    pub fn security(&self) -> Security {
        self.security
    }

    /// `redis+sentinel://` (`rediss+` for TLS) naming the three sentinels
    /// and [`MASTER`], with the data nodes' user and password if it has them.
    pub fn url(&self) -> String {
        let user = (self.security != Security::Open).then_some((DATA_USER, DATA_PASSWORD));
        self.url_as(user)
    }

    /// [`Self::url`] with this data-node user and password, or none.
    pub fn url_as(&self, user: Option<(&str, &str)>) -> String {
        let scheme = if self.security == Security::TlsAcl {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        };
        let userinfo = userinfo(user);
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("{scheme}://{userinfo}{}/{MASTER}", hosts.join(","))
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
            self.security
                .sentinel_access()
                .connection(self.sentinels[0].port)
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

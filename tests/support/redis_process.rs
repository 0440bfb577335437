//! What the multi-node Redis fixtures share: free loopback ports, spawning
//! `redis-server` in a temporary directory, a data node's configuration
//! (TLS-only and ACL-only if asked), reaching a node the way its fixture
//! secured it ([`Access`]), waiting for it, and making sure
//! no server outlives the test process (a watchdog kills them when the
//! process exits, for fixtures kept in a static, which is never dropped).
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::pki::TestPki;

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

/// A synchronous connection to a plain node.
pub fn connection(port: u16) -> redis::RedisResult<redis::Connection> {
    Access::default().connection(port)
}

/// How a fixture reaches its own nodes: over TLS or not (TLS with the test
/// PKI's CA and client certificate), and as which ACL user.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub tls: bool,
    /// (user, password)
    pub user: Option<(String, String)>,
}

impl Access {
    /// A synchronous connection to the node on `port`.
    pub fn connection(&self, port: u16) -> redis::RedisResult<redis::Connection> {
        let host = "127.0.0.1".to_owned();
        let info = redis::ConnectionInfo {
            addr: if self.tls {
                redis::ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                redis::ConnectionAddr::Tcp(host, port)
            },
            redis: redis::RedisConnectionInfo {
                username: self.user.as_ref().map(|(u, _)| u.clone()),
                password: self.user.as_ref().map(|(_, p)| p.clone()),
                ..Default::default()
            },
        };
        let client = if self.tls {
            let pki = TestPki::shared();
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: Some(redis::ClientTlsConfig {
                        client_cert: pki.client.cert_pem.clone().into_bytes(),
                        client_key: pki.client.key_pem.clone().into_bytes(),
                    }),
                    root_cert: Some(pki.ca_pem.clone().into_bytes()),
                },
            )?
        } else {
            redis::Client::open(info)?
        };
        client.get_connection_with_timeout(Duration::from_secs(2))
    }

    /// The same for `redis-cli`.
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.tls {
            let pki = TestPki::shared();
            args.extend(["--tls".to_owned(), "--cacert".to_owned()]);
            args.push(pki.ca_path.display().to_string());
            args.push("--cert".to_owned());
            args.push(pki.client.cert_path.display().to_string());
            args.push("--key".to_owned());
            args.push(pki.client.key_path.display().to_string());
        }
        if let Some((user, password)) = &self.user {
            args.extend(
                ["--user", user, "--pass", password, "--no-auth-warning"].map(String::from),
            );
        }
        args
    }

    /// Waits until the node on `port` answers PING.
    /// Waits until the replica on `port` is in sync with its primary.
    pub fn wait_in_sync(&self, port: u16) -> anyhow::Result<()> {
        wait_until("the replica is in sync", Duration::from_secs(20), || {
            self.connection(port)
                .and_then(|mut c| {
                    redis::cmd("INFO")
                        .arg("replication")
                        .query::<String>(&mut c)
                })
                .is_ok_and(|info| info.contains("master_link_status:up"))
        })
    }

    pub fn wait_ready(&self, port: u16) -> anyhow::Result<()> {
        wait_until(
            &format!("redis on port {port} answers PING"),
            READY_TIMEOUT,
            || {
                self.connection(port)
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_ok()
            },
        )
    }
}

/// The ACL user of the data nodes of a secured fixture (the URL's user).
/// Its password has the characters a URL must percent-encode, as managed
/// services' generated passwords do.
pub const DATA_USER: &str = "ciba";
pub const DATA_PASSWORD: &str = "data-Pw/3f@7a:91%";

/// What [`DATA_USER`] may do: the keys and channel of the test prefixes
/// (`contract-…`, `test-…`), and the commands docs/scaling.md ("Managed
/// services") lists, so the suite checks that list.
pub const DATA_USER_RULES: &str = "resetchannels ~contract-* ~test-* ~{contract-* ~{test-* \
    &contract-*:decided &test-*:decided -@all \
    +hset +hget +hmget +hgetall +hdel +del +exists +get +set +pexpire +pexpireat \
    +expire +incr +zadd +zrem +zrange +zrangebyscore +zrevrange +zrevrangebyscore \
    +zremrangebyscore +zcard +sadd +srem +smembers +evalsha +eval +script \
    +publish +subscribe +ping +time +role +cluster|slots +wait +multi +exec +hmset +incrby +zcount";

/// Every right on secured data nodes: what the replica (`masteruser`),
/// the sentinels (`sentinel auth-user`) and the fixtures use.
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-Pw-51e9b4";

/// `user:password@` for a URL, each percent-encoded.
pub fn userinfo(user: Option<(&str, &str)>) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    user.map_or(String::new(), |(u, p)| {
        format!(
            "{}:{}@",
            utf8_percent_encode(u, NON_ALPHANUMERIC),
            utf8_percent_encode(p, NON_ALPHANUMERIC)
        )
    })
}

/// A data node's configuration file: on `port` (TLS-only with `tls`),
/// keeping nothing on disk, and with `acl` only the users [`DATA_USER`]
/// (the proxy's, with [`DATA_USER_RULES`]) and [`ADMIN_USER`]
/// (`user default off`).
pub fn node_config(port: u16, tls: bool, acl: bool) -> String {
    let mut conf = if tls {
        tls_config(port)
    } else {
        format!("port {port}\n")
    };
    conf.push_str("bind 127.0.0.1\ndaemonize no\nsave \"\"\nappendonly no\n");
    // A replica's first sync starts at once, not after the default 5 s
    // wait for other replicas to share it.
    conf.push_str("repl-diskless-sync-delay 0\n");
    if acl {
        conf.push_str(&format!(
            "user default off\n\
             user {ADMIN_USER} on >{ADMIN_PASSWORD} ~* &* +@all\n\
             user {DATA_USER} on >{DATA_PASSWORD} {DATA_USER_RULES}\n"
        ));
    }
    conf
}

/// The configuration lines of a server (or sentinel) that speaks only TLS
/// on `port`, with the test PKI's server certificate (also its client
/// certificate towards other nodes), requiring a client certificate from
/// the test CA, and speaking TLS to its primary (`tls-replication`).
pub fn tls_config(port: u16) -> String {
    let pki = TestPki::shared();
    format!(
        "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\n\
         tls-ca-cert-file {}\ntls-auth-clients yes\ntls-replication yes\n",
        pki.server.cert_path.display(),
        pki.server.key_path.display(),
        pki.ca_path.display()
    )
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

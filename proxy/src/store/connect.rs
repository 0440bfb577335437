//! `store.url` and the `[store]` TLS and Sentinel keys, read once into typed
//! settings, and [`connect`], which builds every store part from them: the
//! requests store (with the job queue, the replay guard and the quotas), the
//! accounts store and the decision channel.
//!
//! The URL may hold a password: no error here ever repeats it.
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use secrecy::{ExposeSecret, SecretString};

use super::connection::{self, Connections};
use super::{Accounts, Decisions, MemoryAccounts, MemoryStore, RedisStore, Store, StoreError};
use crate::clock::Clock;
use crate::configuration::{ConfigError, StoreSettings};

const REDIS_PORT: u16 = 6379;
const SENTINEL_PORT: u16 = 26379;

/// One host of the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub host: String,
    pub port: u16,
}

/// Which Redis deployment the URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// `memory://`: one instance, nothing shared.
    Memory,
    /// `redis://host:port[/db]`
    Single { node: Node, db: i64 },
    /// `redis+cluster://h:p,h:p[,...]`: seed nodes; any one that answers will do.
    Cluster { seeds: Vec<Node> },
    /// `redis+sentinel://h:p,h:p/<master>[/db]`
    Sentinel {
        sentinels: Vec<Node>,
        master: String,
        db: i64,
    },
}

/// PEM bytes for `rediss` forms, read from `[store]`'s files at startup.
#[derive(Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    /// Certificate chain and private key, for servers that require one.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    pub(crate) fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }
}

/// Credentials as given; never printed.
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<SecretString>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username.as_ref().map(|_| "…"))
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}

/// Everything needed to reach the store.
#[derive(Clone)]
pub struct StoreTarget {
    pub topology: Topology,
    /// `Some` for every `rediss` form.
    pub tls: Option<TlsFiles>,
    /// The data nodes' user and password (from the URL).
    pub auth: Credentials,
    /// The sentinels' own (from `[store] sentinel_username/_password`).
    pub sentinel_auth: Credentials,
    pub key_prefix: String,
    pub timeout: Duration,
    /// `WAIT` after the writes that open and finish a login.
    pub wait: WaitPolicy,
}

/// `[store] wait_replicas` / `wait_timeout_ms`: how many replicas must
/// acknowledge a login's writes, and how long to wait for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WaitPolicy {
    /// 0: no WAIT.
    pub replicas: u32,
    pub timeout_ms: u64,
}

impl StoreTarget {
    /// Reads `[store]`; an error names the key at fault, never the URL's text.
    pub fn from_settings(settings: &StoreSettings) -> Result<Self, ConfigError> {
        let parsed = parse_url(settings.url.expose_secret())
            .map_err(|message| ConfigError::new("store.url", message))?;
        let tls = if parsed.tls {
            let read = |key: &str, path: &Option<std::path::PathBuf>| {
                path.as_deref().map(|p| read_pem(key, p)).transpose()
            };
            let client = match (
                read("store.client_cert_file", &settings.client_cert_file)?,
                read("store.client_key_file", &settings.client_key_file)?,
            ) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(ConfigError::new(
                        "store.client_key_file",
                        "is required with store.client_cert_file",
                    ))
                }
                (None, Some(_)) => {
                    return Err(ConfigError::new(
                        "store.client_cert_file",
                        "is required with store.client_key_file",
                    ))
                }
            };
            Some(TlsFiles {
                ca: read("store.ca_file", &settings.ca_file)?,
                client,
            })
        } else {
            for (key, set) in [
                ("store.ca_file", settings.ca_file.is_some()),
                (
                    "store.client_cert_file",
                    settings.client_cert_file.is_some(),
                ),
                ("store.client_key_file", settings.client_key_file.is_some()),
            ] {
                if set {
                    return Err(ConfigError::new(
                        key,
                        "applies only to a rediss:// store.url (TLS)",
                    ));
                }
            }
            None
        };
        let sentinel_auth = Credentials {
            username: settings.sentinel_username.clone(),
            password: settings.sentinel_password.clone(),
        };
        if !matches!(parsed.topology, Topology::Sentinel { .. })
            && (sentinel_auth.username.is_some() || sentinel_auth.password.is_some())
        {
            return Err(ConfigError::new(
                "store.sentinel_username",
                "and store.sentinel_password apply only to a redis+sentinel:// store.url",
            ));
        }
        if settings.wait_replicas > 0 && settings.wait_timeout_ms == 0 {
            // WAIT with timeout 0 blocks until enough replicas answer: forever.
            return Err(ConfigError::new(
                "store.wait_timeout_ms",
                "must be at least 1 when store.wait_replicas is set",
            ));
        }
        Ok(Self {
            topology: parsed.topology,
            tls,
            auth: parsed.auth,
            sentinel_auth,
            key_prefix: settings.key_prefix.clone(),
            timeout: Duration::from_millis(settings.timeout_ms),
            wait: WaitPolicy {
                replicas: settings.wait_replicas,
                timeout_ms: settings.wait_timeout_ms,
            },
        })
    }
}

fn read_pem(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let pem = std::fs::read(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN ") {
        return Err(ConfigError::new(key, "is not a PEM file"));
    }
    Ok(pem)
}

/// What the URL alone says.
#[derive(Debug)]
pub(crate) struct ParsedUrl {
    pub topology: Topology,
    pub tls: bool,
    pub auth: Credentials,
}

/// Parses `store.url`. The message of an error never quotes the URL.
pub(crate) fn parse_url(url: &str) -> Result<ParsedUrl, String> {
    if url == "memory://" {
        return Ok(ParsedUrl {
            topology: Topology::Memory,
            tls: false,
            auth: Credentials::default(),
        });
    }
    #[derive(PartialEq)]
    enum Kind {
        Single,
        Cluster,
        Sentinel,
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("is not a URL: expected memory://, redis://host:port, rediss://, redis+cluster://, redis+sentinel:// (or their rediss forms)")?;
    let (tls, kind) = match scheme {
        "redis" => (false, Kind::Single),
        "rediss" => (true, Kind::Single),
        "redis+cluster" => (false, Kind::Cluster),
        "rediss+cluster" => (true, Kind::Cluster),
        "redis+sentinel" => (false, Kind::Sentinel),
        "rediss+sentinel" => (true, Kind::Sentinel),
        _ => {
            return Err("has an unknown scheme: use memory, redis, rediss, redis+cluster, rediss+cluster, redis+sentinel or rediss+sentinel".into())
        }
    };
    if rest.contains(['?', '#']) {
        return Err("takes no query or fragment".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let auth = match userinfo {
        None => Credentials::default(),
        Some(info) => {
            let (user, password) = match info.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (info, None),
            };
            let decode = |s: &str| {
                percent_decode_str(s)
                    .decode_utf8()
                    .map(|s| s.into_owned())
                    .map_err(|_| "has a user or password that is not UTF-8 once decoded".to_owned())
            };
            Credentials {
                username: Some(decode(user)?).filter(|u| !u.is_empty()),
                password: password
                    .map(decode)
                    .transpose()?
                    .filter(|p| !p.is_empty())
                    .map(SecretString::from),
            }
        }
    };
    let default_port = if kind == Kind::Sentinel {
        SENTINEL_PORT
    } else {
        REDIS_PORT
    };
    let nodes = hosts
        .split(',')
        .map(|h| parse_node(h, default_port))
        .collect::<Result<Vec<_>, _>>()?;
    let segments: Vec<&str> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let db = |s: Option<&&str>| -> Result<i64, String> {
        match s {
            None => Ok(0),
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|db| *db >= 0)
                .ok_or_else(|| "has a database that is not a number: use /0, /1, …".to_owned()),
        }
    };
    let topology = match kind {
        Kind::Single => {
            let [node] = <[Node; 1]>::try_from(nodes).map_err(|_| {
                "names more than one host: use redis+cluster:// or redis+sentinel:// for several"
                    .to_owned()
            })?;
            if segments.len() > 1 {
                return Err("has a path beyond /db".into());
            }
            Topology::Single {
                node,
                db: db(segments.first())?,
            }
        }
        Kind::Cluster => {
            if !segments.is_empty() {
                return Err(
                    "takes no /db: a Redis Cluster has only database 0 (remove the path)".into(),
                );
            }
            Topology::Cluster { seeds: nodes }
        }
        Kind::Sentinel => {
            let Some(master) = segments.first() else {
                return Err(
                    "needs the master's name: redis+sentinel://host:port,host:port/<master>[/db]"
                        .into(),
                );
            };
            if segments.len() > 2 {
                return Err("has a path beyond /<master>/db".into());
            }
            Topology::Sentinel {
                sentinels: nodes,
                master: percent_decode_str(master)
                    .decode_utf8()
                    .map_err(|_| "has a master name that is not UTF-8".to_owned())?
                    .into_owned(),
                db: db(segments.get(1))?,
            }
        }
    };
    Ok(ParsedUrl {
        topology,
        tls,
        auth,
    })
}

fn parse_node(text: &str, default_port: u16) -> Result<Node, String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        // [IPv6]:port
        let (host, after) = rest
            .split_once(']')
            .ok_or("has an IPv6 host without its closing ]")?;
        (host, after.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err("has an empty host".into());
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or("has a port that is not a number from 1 to 65535")?,
    };
    Ok(Node {
        host: host.to_owned(),
        port,
    })
}

/// Every part of the store, built from one [`StoreTarget`].
pub struct Backends {
    /// Requests, the job queue, the replay guard and the quotas.
    pub store: Arc<dyn Store>,
    pub accounts: Arc<dyn Accounts>,
    pub decisions: Arc<Decisions>,
}

/// Builds every store part. With Redis, it returns once the deployment
/// answers (for a cluster: once any seed node does).
pub async fn connect(target: &StoreTarget, clock: Arc<dyn Clock>) -> Result<Backends, StoreError> {
    if target.topology == Topology::Memory {
        return Ok(Backends {
            store: Arc::new(MemoryStore::new(clock.clone())),
            accounts: Arc::new(MemoryAccounts::new(clock)),
            decisions: Decisions::local(),
        });
    }
    let Connections { conn, subscriber } = connection::open(target).await?;
    let redis = RedisStore::new(conn, subscriber, &target.key_prefix).waiting(target.wait);
    Ok(Backends {
        decisions: redis.decisions(),
        accounts: Arc::new(redis.accounts()),
        store: Arc::new(redis),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: u16) -> Node {
        Node {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn memory_and_single_redis() {
        assert_eq!(parse_url("memory://").unwrap().topology, Topology::Memory);
        let p = parse_url("redis://127.0.0.1:6380/3").unwrap();
        assert_eq!(
            p.topology,
            Topology::Single {
                node: node("127.0.0.1", 6380),
                db: 3
            }
        );
        assert!(!p.tls);
        let p = parse_url("rediss://redis.example").unwrap();
        assert!(p.tls);
        assert_eq!(
            p.topology,
            Topology::Single {
                node: node("redis.example", 6379),
                db: 0
            }
        );
    }

    #[test]
    fn credentials_are_decoded_and_kept_out_of_debug_output() {
        let p = parse_url("redis://app:p%40ss%2Fword@[::1]:7000").unwrap();
        assert_eq!(p.auth.username.as_deref(), Some("app"));
        assert_eq!(
            p.auth.password.as_ref().unwrap().expose_secret(),
            "p@ss/word"
        );
        assert_eq!(
            p.topology,
            Topology::Single {
                node: node("::1", 7000),
                db: 0
            }
        );
        assert!(!format!("{:?}", p.auth).contains("p@ss"));
        let p = parse_url("redis://:secret@h:1").unwrap();
        assert_eq!(p.auth.username, None);
        assert!(p.auth.password.is_some());
    }

    #[test]
    fn cluster_seeds_and_no_database() {
        let p = parse_url("rediss+cluster://a:7000,b:7001,c").unwrap();
        assert!(p.tls);
        assert_eq!(
            p.topology,
            Topology::Cluster {
                seeds: vec![node("a", 7000), node("b", 7001), node("c", 6379)]
            }
        );
        assert_eq!(
            parse_url("redis+cluster://a:7000/").unwrap().topology,
            Topology::Cluster {
                seeds: vec![node("a", 7000)]
            }
        );
        let e = parse_url("redis+cluster://u:hunter2@a:7000,b:7001/0").unwrap_err();
        assert!(e.contains("no /db"), "{e}");
        assert!(!e.contains("hunter2"));
    }

    #[test]
    fn sentinel_names_its_master() {
        let p = parse_url("redis+sentinel://s1,s2:26380/mymaster/2").unwrap();
        assert_eq!(
            p.topology,
            Topology::Sentinel {
                sentinels: vec![node("s1", 26379), node("s2", 26380)],
                master: "mymaster".into(),
                db: 2
            }
        );
        assert!(parse_url("rediss+sentinel://s1:26379/m").unwrap().tls);
        assert!(parse_url("redis+sentinel://s1:26379").is_err());
        assert!(parse_url("redis+sentinel://s1:26379/m/x").is_err());
    }

    #[test]
    fn bad_urls_are_refused_without_repeating_them() {
        for url in [
            "http://pw@h",
            "redis://a:1,b:2",
            "redis://pw@h:99999",
            "redis://pw@:1",
            "redis://pw@h:1/x",
            "redis://pw@h:1/0/1",
            "redis://pw@h:1?db=1",
            "no-scheme-pw",
        ] {
            let e = parse_url(url).unwrap_err();
            assert!(!e.contains("pw"), "{url}: {e}");
        }
    }

    fn settings(url: &str) -> StoreSettings {
        StoreSettings {
            url: SecretString::from(url.to_owned()),
            ..StoreSettings::default()
        }
    }

    #[test]
    fn tls_files_need_a_rediss_url_and_come_in_pairs() {
        let mut s = settings("redis://h:1");
        s.ca_file = Some("/nonexistent/ca.pem".into());
        assert_eq!(
            StoreTarget::from_settings(&s).err().unwrap().key,
            "store.ca_file"
        );
        let mut s = settings("rediss://h:1");
        s.ca_file = Some("/nonexistent/ca.pem".into());
        assert_eq!(
            StoreTarget::from_settings(&s).err().unwrap().key,
            "store.ca_file"
        );
        let dir = std::env::temp_dir().join(format!("ciba-connect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = dir.join("cert.pem");
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let mut s = settings("rediss://h:1");
        s.client_cert_file = Some(pem.clone());
        assert_eq!(
            StoreTarget::from_settings(&s).err().unwrap().key,
            "store.client_key_file"
        );
        s.client_key_file = Some(pem.clone());
        s.ca_file = Some(pem);
        let target = StoreTarget::from_settings(&s).unwrap();
        let tls = target.tls.unwrap();
        assert!(tls.ca.is_some() && tls.client.is_some());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn waiting_for_replicas_needs_a_timeout() {
        let mut s = settings("redis://h:1");
        s.wait_replicas = 1;
        s.wait_timeout_ms = 0;
        assert_eq!(
            StoreTarget::from_settings(&s).err().unwrap().key,
            "store.wait_timeout_ms"
        );
        s.wait_timeout_ms = 50;
        assert_eq!(
            StoreTarget::from_settings(&s).unwrap().wait,
            WaitPolicy {
                replicas: 1,
                timeout_ms: 50
            }
        );
    }

    #[test]
    fn sentinel_credentials_only_with_sentinel() {
        let mut s = settings("redis://h:1");
        s.sentinel_password = Some(SecretString::from("x"));
        assert!(StoreTarget::from_settings(&s).is_err());
        let mut s = settings("redis+sentinel://h:1/m");
        s.sentinel_password = Some(SecretString::from("x"));
        let t = StoreTarget::from_settings(&s).unwrap();
        assert!(t.sentinel_auth.password.is_some());
    }
}

//! One connection type for every Redis deployment the proxy speaks to: a
//! single server, a Redis Cluster (MOVED/ASK handled by the redis crate's
//! cluster client) or a Sentinel-watched primary, which this module follows
//! when it changes (a failover) without a restart. The stores and the
//! decision channel use [`RedisConn`] and never ask which one it is.
use std::sync::Arc;

use parking_lot::Mutex;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, FromRedisValue, Pipeline,
    RedisConnectionInfo, RedisError, RedisFuture, RedisResult, TlsMode, Value,
};
use secrecy::ExposeSecret;

use super::connect::{Credentials, Node, StoreTarget, Topology};
use super::per_thread::{Lookup, PerThread};
use super::StoreError;

/// A connection to whichever deployment `store.url` names; cheap to clone.
/// Each thread that runs a single-threaded runtime has a connection of its
/// own (see [`PerThread`]); other threads share one.
pub struct RedisConn {
    shared: Link,
    per_thread: Arc<PerThread>,
    /// The link the command in flight goes down (its future borrows it).
    current: Option<Link>,
}

impl Clone for RedisConn {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            per_thread: self.per_thread.clone(),
            current: None,
        }
    }
}

/// One connection to the deployment.
#[derive(Clone)]
pub(super) enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConn),
}

/// Where the decision subscriber connects.
#[derive(Clone)]
pub enum Subscriber {
    /// Any of these nodes: in a cluster, PUBLISH reaches every node's
    /// subscribers, so one node will do; the next is tried if it is gone.
    Nodes(Vec<Client>),
    /// The primary the sentinels name at the time.
    Sentinel(SentinelConn),
}

/// The connections [`open`] made.
pub struct Connections {
    pub conn: RedisConn,
    pub subscriber: Subscriber,
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn addr(node: &Node, tls: bool) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls {
            host: node.host.clone(),
            port: node.port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(node.host.clone(), node.port)
    }
}

fn info(node: &Node, tls: bool, db: i64, auth: &Credentials) -> ConnectionInfo {
    ConnectionInfo {
        addr: addr(node, tls),
        redis: RedisConnectionInfo {
            db,
            username: auth.username.clone(),
            password: auth.password.as_ref().map(|p| p.expose_secret().to_owned()),
            ..RedisConnectionInfo::default()
        },
    }
}

fn client(target: &StoreTarget, node: &Node, db: i64) -> Result<Client, StoreError> {
    client_as(target, node, db, &target.auth).map_err(unavailable)
}

/// A client for `node` with `auth` (the data nodes' or the sentinels').
fn client_as(
    target: &StoreTarget,
    node: &Node,
    db: i64,
    auth: &Credentials,
) -> Result<Client, RedisError> {
    let info = info(node, target.tls.is_some(), db, auth);
    match &target.tls {
        Some(tls) => Client::build_with_tls(info, tls.certificates()),
        None => Client::open(info),
    }
}

fn manager_config(target: &StoreTarget) -> ConnectionManagerConfig {
    // Reconnect quickly and keep trying: with the crate's defaults the
    // backoff between attempts grows to minutes, so a Redis restart would
    // keep the proxy unavailable long after Redis is back.
    ConnectionManagerConfig::new()
        .set_connection_timeout(target.timeout)
        .set_response_timeout(target.timeout)
        .set_factor(2)
        .set_max_delay(1000)
        .set_number_of_retries(3)
}

/// Connects to the deployment `target` names (not `memory://`).
pub async fn open(target: &StoreTarget) -> Result<Connections, StoreError> {
    match &target.topology {
        Topology::Memory => Err(StoreError::Unavailable(
            "memory:// has no Redis connection".into(),
        )),
        Topology::Single { node, db } => {
            let client = client(target, node, *db)?;
            let config = manager_config(target);
            let conn = ConnectionManager::new_with_config(client.clone(), config.clone())
                .await
                .map_err(unavailable)?;
            let opener = client.clone();
            let shared = Link::Single(conn);
            let per_thread = PerThread::new(
                Box::new(move || {
                    let (client, config) = (opener.clone(), config.clone());
                    Box::pin(async move {
                        Ok(Link::Single(
                            ConnectionManager::new_with_config(client, config).await?,
                        ))
                    })
                }),
                &shared,
            );
            Ok(Connections {
                conn: RedisConn::new(shared, per_thread),
                subscriber: Subscriber::Nodes(vec![client]),
            })
        }
        Topology::Cluster { seeds } => {
            let tls = target.tls.is_some();
            let mut builder = ClusterClientBuilder::new(
                seeds
                    .iter()
                    .map(|n| info(n, tls, 0, &target.auth))
                    .collect::<Vec<_>>(),
            )
            .connection_timeout(target.timeout)
            .response_timeout(target.timeout);
            if let Some(files) = &target.tls {
                builder = builder.tls(TlsMode::Secure).certs(files.certificates());
            }
            let cluster = builder.build().map_err(unavailable)?;
            let conn = cluster.get_async_connection().await.map_err(unavailable)?;
            let shared = Link::Cluster(conn);
            let per_thread = PerThread::new(
                Box::new(move || {
                    let cluster = cluster.clone();
                    Box::pin(
                        async move { Ok(Link::Cluster(cluster.get_async_connection().await?)) },
                    )
                }),
                &shared,
            );
            let nodes = seeds
                .iter()
                .map(|n| client(target, n, 0))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Connections {
                conn: RedisConn::new(shared, per_thread),
                subscriber: Subscriber::Nodes(nodes),
            })
        }
        Topology::Sentinel {
            sentinels,
            master,
            db,
        } => {
            let sentinel = sentinel_client(target, sentinels, master, *db).map_err(unavailable)?;
            let conn = match SentinelConn::connect(sentinel, manager_config(target)).await {
                Ok(conn) => conn,
                Err(e) if refused_credentials(&e) => {
                    return Err(who_refused(target, sentinels, e).await)
                }
                Err(e) => return Err(unavailable(e)),
            };
            // Each thread's own connection follows the sentinels too.
            let (target, sentinels, master, db) =
                (target.clone(), sentinels.clone(), master.clone(), *db);
            let shared = Link::Sentinel(conn.clone());
            let per_thread = PerThread::new(
                Box::new(move || {
                    let sentinel = sentinel_client(&target, &sentinels, &master, db);
                    let config = manager_config(&target);
                    Box::pin(async move {
                        Ok(Link::Sentinel(
                            SentinelConn::connect(sentinel?, config).await?,
                        ))
                    })
                }),
                &shared,
            );
            Ok(Connections {
                conn: RedisConn::new(shared, per_thread),
                subscriber: Subscriber::Sentinel(conn),
            })
        }
    }
}

/// A client that asks the `sentinels` for `master` (TLS and credentials
/// from `target`).
fn sentinel_client(
    target: &StoreTarget,
    sentinels: &[Node],
    master: &str,
    db: i64,
) -> RedisResult<SentinelClient> {
    let tls = target.tls.is_some();
    let mut builder = SentinelClientBuilder::new(
        sentinels.iter().map(|n| addr(n, tls)),
        master.to_owned(),
        SentinelServerType::Master,
    )?
    .set_client_to_redis_db(db);
    if let Some(user) = &target.auth.username {
        builder = builder.set_client_to_redis_username(user.clone());
    }
    if let Some(password) = &target.auth.password {
        builder = builder.set_client_to_redis_password(password.expose_secret().to_owned());
    }
    if let Some(user) = &target.sentinel_auth.username {
        builder = builder.set_client_to_sentinel_username(user.clone());
    }
    if let Some(password) = &target.sentinel_auth.password {
        builder = builder.set_client_to_sentinel_password(password.expose_secret().to_owned());
    }
    if let Some(files) = &target.tls {
        builder = builder
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(TlsMode::Secure)
            .set_client_to_redis_certificates(files.certificates())
            .set_client_to_sentinel_certificates(files.certificates());
    }
    builder.build()
}

impl RedisConn {
    /// `WAIT replicas timeout_ms` on the connection that wrote `key` (on a
    /// cluster: to the primary of its slot); how many replicas acknowledged.
    pub async fn wait_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout_ms: u64,
    ) -> RedisResult<i64> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(timeout_ms);
        // The link this thread's writes went down: WAIT counts its own.
        match &mut self.link().await {
            Link::Cluster(c) => {
                let route = Route::new(key_slot(key.as_bytes()), SlotAddr::Master);
                let value = c
                    .route_command(
                        &cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                i64::from_owned_redis_value(value)
            }
            link => cmd.query_async(link).await,
        }
    }
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the
/// text inside the first non-empty `{...}`) or of the whole key, mod 16384.
fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|b| *b == b'}')
            .filter(|close| *close > 0)
            .map(|close| &rest[..close])
    });
    let mut crc: u16 = 0;
    for byte in tagged.unwrap_or(key) {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

impl RedisConn {
    fn new(shared: Link, per_thread: Arc<PerThread>) -> Self {
        Self {
            shared,
            per_thread,
            current: None,
        }
    }

    /// The link this thread's commands go down, opened if need be.
    async fn link(&self) -> Link {
        match self.per_thread.lookup() {
            Lookup::Ready(link) => link,
            Lookup::Open(cell) => self
                .per_thread
                .open(cell)
                .await
                .unwrap_or_else(|| self.shared.clone()),
            Lookup::Shared => self.shared.clone(),
        }
    }

    /// `send` on this thread's link; no await added when it is open.
    fn on_link<'a, T: 'a>(
        &'a mut self,
        send: impl FnOnce(&'a mut Link) -> RedisFuture<'a, T> + Send + 'a,
    ) -> RedisFuture<'a, T> {
        match self.per_thread.lookup() {
            Lookup::Shared => send(&mut self.shared),
            Lookup::Ready(link) => send(self.current.insert(link)),
            Lookup::Open(_) => Box::pin(async move {
                let link = self.link().await;
                send(self.current.insert(link)).await
            }),
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.on_link(move |link| link.req_packed_command(cmd))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.on_link(move |link| link.req_packed_commands(cmd, offset, count))
    }

    fn get_db(&self) -> i64 {
        self.shared.get_db()
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Self::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Sentinel(c) => c.get_db(),
        }
    }
}

impl Subscriber {
    /// A pub/sub connection; `attempt` picks the next node after a failure.
    pub async fn pubsub(&self, attempt: usize) -> RedisResult<redis::aio::PubSub> {
        match self {
            Self::Nodes(nodes) => nodes[attempt % nodes.len()].get_async_pubsub().await,
            Self::Sentinel(conn) => {
                let client = conn.0.sentinel.lock().await.async_get_client().await?;
                client.get_async_pubsub().await
            }
        }
    }
}

/// The primary a group of sentinels names, followed across failovers: a
/// connection error or a READONLY answer (the old primary, now a replica)
/// makes it ask the sentinels again. A command that got READONLY ran
/// nowhere, so it is sent once more to the new primary; any other failed
/// command fails (the client retries after a 503).
#[derive(Clone)]
pub struct SentinelConn(Arc<SentinelInner>);

struct SentinelInner {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    /// The current primary's connection and how many times it was replaced.
    current: Mutex<(u64, ConnectionManager)>,
    /// Where the current primary is, as the sentinels named it.
    address: Mutex<String>,
    config: ConnectionManagerConfig,
}

/// How often the sentinels are asked whether the primary moved, so that
/// reads follow a failover too (a demoted primary still answers reads).
const SENTINEL_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether an error may mean the primary moved.
fn primary_moved(e: &RedisError) -> bool {
    e.kind() == ErrorKind::ReadOnly
        || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.to_string().contains("READONLY")
}

fn read_only(e: &RedisError) -> bool {
    e.kind() == ErrorKind::ReadOnly || e.to_string().contains("READONLY")
}

/// Wrong credentials (`WRONGPASS`), or none where some are needed (`NOAUTH`).
fn refused_credentials(e: &RedisError) -> bool {
    e.kind() == ErrorKind::AuthenticationFailed || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
}

/// A Sentinel connection fails alike whether the sentinels or the data
/// nodes refused their credentials: asks the sentinels alone, so the error
/// names the setting to fix.
async fn who_refused(target: &StoreTarget, sentinels: &[Node], error: RedisError) -> StoreError {
    for node in sentinels {
        let Ok(client) = client_as(target, node, 0, &target.sentinel_auth) else {
            continue;
        };
        // Without credentials the connection opens and the first command
        // is refused (NOAUTH), so it takes a PING to know.
        let answered = tokio::time::timeout(target.timeout, async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await;
        let side = match answered {
            Ok(Ok(_)) => "the sentinels accepted store.sentinel_username and store.sentinel_password; the data nodes refused the user and password in store.url",
            Ok(Err(e)) if refused_credentials(&e) => {
                "the sentinels refused store.sentinel_username and store.sentinel_password"
            }
            _ => continue,
        };
        return StoreError::Unavailable(format!("{error}: {side}"));
    }
    unavailable(error)
}

impl SentinelConn {
    async fn connect(
        mut sentinel: SentinelClient,
        config: ConnectionManagerConfig,
    ) -> Result<Self, RedisError> {
        let (address, manager) = Self::primary(&mut sentinel, &config).await?;
        let conn = Self(Arc::new(SentinelInner {
            sentinel: tokio::sync::Mutex::new(sentinel),
            current: Mutex::new((0, manager)),
            address: Mutex::new(address),
            config,
        }));
        tokio::spawn(watch(Arc::downgrade(&conn.0)));
        Ok(conn)
    }

    async fn primary(
        sentinel: &mut SentinelClient,
        config: &ConnectionManagerConfig,
    ) -> RedisResult<(String, ConnectionManager)> {
        let client = sentinel.async_get_client().await?;
        let address = client.get_connection_info().addr.to_string();
        let manager = ConnectionManager::new_with_config(client, config.clone()).await?;
        Ok((address, manager))
    }

    fn current(&self) -> (u64, ConnectionManager) {
        self.0.current.lock().clone()
    }

    /// Asks the sentinels for the primary, unless another caller already
    /// replaced connection `seen` or is asking right now (a failing command
    /// then fails at once rather than queue behind it).
    async fn refresh(&self, seen: u64) {
        let Ok(mut sentinel) = self.0.sentinel.try_lock() else {
            return;
        };
        if self.0.current.lock().0 != seen {
            return;
        }
        match Self::primary(&mut sentinel, &self.0.config).await {
            Ok((address, manager)) => {
                tracing::info!("connected to the primary the sentinels name");
                *self.0.address.lock() = address;
                *self.0.current.lock() = (seen + 1, manager);
            }
            Err(e) => tracing::warn!(error = %e, "cannot reach the primary the sentinels name"),
        }
    }
}

/// Asks the sentinels every [`SENTINEL_CHECK`] where the primary is, and
/// reconnects when it moved; ends with the connection.
async fn watch(inner: std::sync::Weak<SentinelInner>) {
    loop {
        tokio::time::sleep(SENTINEL_CHECK).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let named = inner.sentinel.lock().await.async_get_client().await;
        let moved = match named {
            Ok(client) => client.get_connection_info().addr.to_string() != *inner.address.lock(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot ask the sentinels for the primary");
                false
            }
        };
        if moved {
            let seen = inner.current.lock().0;
            SentinelConn(inner).refresh(seen).await;
        }
    }
}

/// One command (or pipeline) on the current primary, with the rules of
/// [`SentinelConn`] for errors.
macro_rules! on_primary {
    ($self:expr, $conn:ident => $send:expr) => {{
        let (seen, mut $conn) = $self.current();
        match $send.await {
            Err(e) if primary_moved(&e) => {
                $self.refresh(seen).await;
                if read_only(&e) {
                    let (_, mut $conn) = $self.current();
                    $send.await
                } else {
                    Err(e)
                }
            }
            result => result,
        }
    }};
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move { on_primary!(self, c => c.req_packed_command(cmd)) })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move { on_primary!(self, c => c.req_packed_commands(cmd, offset, count)) })
    }

    fn get_db(&self) -> i64 {
        self.current().1.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::key_slot;

    #[test]
    fn slots_are_redis_cluster_slots() {
        // CLUSTER KEYSLOT answers, from the Redis Cluster specification.
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }
}

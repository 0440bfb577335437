//! The shared store: one Redis deployment (a server, a Sentinel-watched
//! primary or a Redis Cluster), any number of proxy instances.
//!
//! Cluster-safe by construction: every script and transaction declares all
//! the keys it touches in `KEYS`, and they share one hash tag (one slot):
//! a request's keys `{prefix}:{<id>}:req|dat|tok`, a job-queue shard's
//! `{prefix:jobs:<n>}:queue|jobs`. Keys touched beside a request (the
//! pending and recent sets) are written in separate steps, in an order
//! that never leaves a key pointing at nothing. Every request key has a
//! TTL. A pending poll is one round trip of plain commands; taking the
//! tokens and the finish step are Lua scripts, each one atomic round trip;
//! the redis crate's `Script` answers NOSCRIPT (after a failover or SCRIPT
//! FLUSH) by sending the script again.
use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use redis::{AsyncCommands, Script};
use sha2::{Digest, Sha256};

use super::connection::{RedisConn, Subscriber};
use super::{
    Binding, Confirmation, Denial, Health, JobQueue, Outcome, PollOutcome, QueueStats, QueuedJob,
    Quotas, ReplayGuard, RequestRecord, Requests, Status, StoreError, UserLink, CONFIRM_WINDOW_MS,
    EXPIRED_RETENTION_MS, NOTIFICATION_SENT, SLOW_DOWN_STEP_SECS,
};
use crate::domain::AuthReqId;

/// What a poll reads: client_id, status, expires_at, interval, last_poll,
/// reason.
const POLL_FIELDS: [&str; 6] = [
    "client_id",
    "status",
    "expires_at",
    "interval",
    "last_poll",
    "reason",
];
type PollFields = (
    Option<String>,
    Option<String>,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<String>,
);

/// The TTL a poll of an unknown id gives the hash its `last_poll` write
/// created (a real request's hash has its TTL already: `NX` leaves it).
const STRAY_POLL_TTL_MS: u64 = 60_000;

/// Taking an approved request's tokens for one poll's attempt, atomically
/// (the pending path is plain commands, [`RedisStore::run_poll`]). The
/// request was seen approved or issued; a status never goes back.
const TAKE_TOKENS: &str = r"
-- KEYS[1] request hash, KEYS[2] sealed tokens; ARGV: client_id, now_ms, attempt
local r = redis.call('HMGET', KEYS[1], 'client_id', 'status', 'expires_at')
if not r[1] or r[1] ~= ARGV[1] then return {'unknown'} end
if tonumber(ARGV[2]) >= tonumber(r[3]) then
  redis.call('DEL', KEYS[2])
  return {'expired'}
end
-- The tokens stay until this attempt confirms it answered with them; an
-- attempt whose answer never left (a timeout, a crash) leaves them to the
-- client's retry, which takes them over.
local tokens = redis.call('GET', KEYS[2])
if not tokens then
  if r[2] == 'approved' then return {'expired'} end
  return {'redeemed'}
end
local t = redis.call('TIME')
local taken_at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'status', 'issued', 'attempt', ARGV[3], 'taken_at', taken_at)
return {'tokens', tokens}
";

const CONFIRM: &str = r"
-- KEYS[1] request hash, KEYS[2] sealed tokens; ARGV: attempt, window_ms
local r = redis.call('HMGET', KEYS[1], 'attempt', 'taken_at')
if r[1] ~= ARGV[1] then
  if redis.call('EXISTS', KEYS[2]) == 0 then return 2 end
  return 0
end
-- Redis's own clock: a confirmation that ran late, after its handler gave up
-- and answered 503, must not delete what the retry needs.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(r[2]) + tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[2])
return 1
";

const BIND_CALLBACK: &str = r"
-- KEYS[1] request hash; ARGV: the callback response's fingerprint
if redis.call('EXISTS', KEYS[1]) == 0 then return 'gone' end
local bound = redis.call('HGET', KEYS[1], 'callback')
if not bound then
  redis.call('HSET', KEYS[1], 'callback', ARGV[1])
  return 'bound'
end
if bound == ARGV[1] then return 'bound' end
return 'other'
";

const TAKE_EXPIRED: &str = r"
-- KEYS[1] the pending index; ARGV: now_ms, max. Atomic, so each expired
-- request goes to one sweeper however many instances sweep.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
return ids
";

const FINISH: &str = r"
-- KEYS[1] request hash, KEYS[2] sealed tokens; ARGV: outcome, payload, now_ms, denial kind
local r = redis.call('HMGET', KEYS[1], 'status', 'expires_at')
if not r[1] or r[1] ~= 'pending' then return 0 end
local left = tonumber(r[2]) - tonumber(ARGV[3])
if left <= 0 then return 0 end
if ARGV[1] == 'approved' then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', left)
  redis.call('HSET', KEYS[1], 'status', 'approved')
else
  redis.call('HSET', KEYS[1], 'status', 'denied', 'reason', ARGV[2], 'denial', ARGV[4])
end
return 1
";

const NOTIFICATION: &str = r"
-- KEYS[1] request hash; ARGV: the new state ('' to only read it), the state
-- never replaced. A request that is gone is not brought back.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'notified') ~= ARGV[2] then
  redis.call('HSET', KEYS[1], 'notified', ARGV[1])
end
return redis.call('HGET', KEYS[1], 'notified')
";

/// How many hash tags (slots) the job queue is spread over, so a cluster
/// shares its load; a job id always maps to the same shard.
pub const JOB_SHARDS: usize = 8;

const NOW: &str = r"
local t = redis.call('TIME')
local rnow = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

// One queue shard: KEYS[1] a sorted set of job ids by due time, KEYS[2] a
// hash of job id -> '<deadline by Redis's clock, ms> <sealed payload>'.
const ENQUEUE: &str = r"
-- ARGV: id, payload, visible_at_ms, ttl_ms
redis.call('HSET', KEYS[2], ARGV[1], (rnow + tonumber(ARGV[4])) .. ' ' .. ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
";

const RESCHEDULE: &str = r"
-- ARGV: id, payload, visible_at_ms. An expired job is not brought back and
-- keeps its deadline.
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if not cur then return 0 end
local space = string.find(cur, ' ', 1, true)
local deadline = string.sub(cur, 1, space - 1)
if tonumber(deadline) <= rnow then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], deadline .. ' ' .. ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
";

const LEASE: &str = r"
-- ARGV: now_ms, lease_ms, max
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local cur = redis.call('HGET', KEYS[2], id)
  local space = cur and string.find(cur, ' ', 1, true)
  if space and tonumber(string.sub(cur, 1, space - 1)) > rnow then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
    table.insert(out, id)
    table.insert(out, string.sub(cur, space + 1))
  else
    -- The job expired with its request: forget it.
    redis.call('HDEL', KEYS[2], id)
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
";

const TAKE_SLOT: &str = r"
-- KEYS[1] a sorted set of members scored by when their slot frees
-- ARGV: member, until_ms, now_ms, max
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
";

#[derive(Clone)]
pub struct RedisStore {
    /// For the decision subscriber's own connection.
    subscriber: Subscriber,
    conn: RedisConn,
    prefix: String,
    take_tokens: Script,
    confirm: Script,
    bind_callback: Script,
    finish: Script,
    take_expired: Script,
    notification: Script,
    enqueue: Script,
    reschedule: Script,
    lease: Script,
    take_slot: Script,
    /// Where the next lease starts, so every shard gets its turn.
    next_shard: Arc<AtomicUsize>,
    /// `WAIT` after the writes that open and finish a login.
    wait: super::connect::WaitPolicy,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// Connects to `url` (any Redis form of `store.url`, without TLS files);
    /// every command gives up after `timeout`. [`super::connect`] is what
    /// the proxy uses; this is for tools and tests.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let settings = crate::configuration::StoreSettings {
            url: secrecy::SecretString::from(url.to_owned()),
            key_prefix: prefix.to_owned(),
            timeout_ms: timeout.as_millis() as u64,
            ..Default::default()
        };
        let target = super::connect::StoreTarget::from_settings(&settings)
            .map_err(|e| StoreError::Unavailable(format!("store.url {}", e.message)))?;
        let super::connection::Connections { conn, subscriber } =
            super::connection::open(&target).await?;
        Ok(Self::new(conn, subscriber, prefix))
    }

    /// The store over connections made by [`super::connection::open`].
    pub(crate) fn new(conn: RedisConn, subscriber: Subscriber, prefix: &str) -> Self {
        let script = |body: &str| Script::new(body);
        let timed = |body: &str| Script::new(&format!("{NOW}{body}"));
        Self {
            subscriber,
            conn,
            prefix: prefix.to_owned(),
            take_tokens: script(TAKE_TOKENS),
            confirm: script(CONFIRM),
            bind_callback: script(BIND_CALLBACK),
            finish: script(FINISH),
            take_expired: script(TAKE_EXPIRED),
            notification: script(NOTIFICATION),
            enqueue: timed(ENQUEUE),
            reschedule: timed(RESCHEDULE),
            lease: timed(LEASE),
            take_slot: script(TAKE_SLOT),
            next_shard: Arc::new(AtomicUsize::new(rand::random::<u8>() as usize)),
            wait: super::connect::WaitPolicy::default(),
        }
    }

    /// Waits for `policy.replicas` replicas after a login's writes.
    pub(crate) fn waiting(mut self, policy: super::connect::WaitPolicy) -> Self {
        self.wait = policy;
        self
    }

    /// `[store] wait_replicas`: waits until that many replicas hold what
    /// was written to `key`'s node. Falling short fails nothing (the write
    /// is done); it is logged, as the write may be lost in a failover.
    async fn replicate(&self, key: &str) {
        let policy = self.wait;
        if policy.replicas == 0 {
            return;
        }
        let mut conn = self.conn.clone();
        match conn
            .wait_replicas(key, policy.replicas, policy.timeout_ms)
            .await
        {
            Ok(acked) if acked >= i64::from(policy.replicas) => {}
            Ok(acked) => tracing::warn!(
                acked,
                wanted = policy.replicas,
                "fewer replicas than store.wait_replicas acknowledged a login's write in time"
            ),
            Err(e) => tracing::warn!(error = %e, "WAIT for replicas failed"),
        }
    }

    /// The decision channel on this Redis, for long polls on any instance.
    pub fn decisions(&self) -> std::sync::Arc<super::Decisions> {
        super::Decisions::redis(self.subscriber.clone(), self.conn.clone(), &self.prefix)
    }

    /// The users' accounts (devices, enrolments, history) on this Redis,
    /// under the same prefix and over the same connection.
    pub fn accounts(&self) -> super::RedisAccounts {
        super::RedisAccounts::new(self.conn.clone(), &self.prefix)
    }

    /// Moves a quota counter by `delta` in one transaction; a new window
    /// gets its TTL (NX: a running window keeps its own).
    async fn step(&self, key: &str, delta: i64, window_secs: u64) -> Result<i64, StoreError> {
        let key = format!("{}:{}", self.prefix, key);
        let mut conn = self.conn.clone();
        let (count,): (i64,) = redis::pipe()
            .atomic()
            .incr(&key, delta)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(window_secs.max(1))
            .arg("NX")
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(count)
    }

    fn request_key(&self, id: &AuthReqId) -> String {
        format!("{}:{{{}}}:req", self.prefix, id)
    }

    /// The request's write-once fields (see [`DATA_FIELDS`]), apart from
    /// the hash so the hash stays a compact listpack.
    fn data_key(&self, id: &AuthReqId) -> String {
        format!("{}:{{{}}}:dat", self.prefix, id)
    }

    fn tokens_key(&self, id: &AuthReqId) -> String {
        format!("{}:{{{}}}:tok", self.prefix, id)
    }

    /// The shard a job id always lands in.
    fn shard_of(job_id: &str) -> usize {
        Sha256::digest(job_id.as_bytes())[0] as usize % JOB_SHARDS
    }

    /// A queue shard's keys: its due times and its jobs, under one hash
    /// tag, so each script touches a single Redis Cluster slot.
    fn shard_keys(&self, shard: usize) -> (String, String) {
        (
            format!("{{{}:jobs:{shard}}}:queue", self.prefix),
            format!("{{{}:jobs:{shard}}}:jobs", self.prefix),
        )
    }

    fn job_keys(&self, job_id: &str) -> (String, String) {
        self.shard_keys(Self::shard_of(job_id))
    }

    /// Pending requests scored by expiry, for the cluster-wide pending
    /// count. Kept beside the request (not in its script: another slot);
    /// an entry that outlives its request's decision drops out at expiry.
    /// One key, so one slot: on a cluster it is one node's load, one write
    /// per request opened and decided.
    fn pending_key(&self) -> String {
        format!("{}:pending-requests", self.prefix)
    }

    /// Every request's id scored by its creation, for the admin API's list;
    /// trimmed past the longest a request can be kept.
    fn recent_key(&self) -> String {
        format!("{}:recent-requests", self.prefix)
    }

    /// A callback `state`'s pointer to its request, as versions that made
    /// random states wrote it; only read now.
    fn legacy_state_key(&self, state: &str) -> String {
        format!("{}:state:{}", self.prefix, state)
    }
}

impl RedisStore {
    /// One poll; `pace` records the poll and enforces the interval (a long
    /// poll's second look forgets the last poll instead).
    ///
    /// Most polls find the request pending, so that path is one round trip
    /// of plain commands, not a script (a script cost Redis 4.7 µs a call
    /// against 0.1 µs for a read): read the fields, record this poll, and
    /// give the hash a TTL if the write just created it (an unknown id).
    /// The answer is worked out here from the fields as they were before
    /// this poll. Only what must be atomic runs the script: taking the
    /// tokens (approved or issued). A `slow_down` writes the longer
    /// interval after (a second round trip, for a client polling too fast).
    async fn run_poll(
        &self,
        id: &AuthReqId,
        client_id: &str,
        attempt: &str,
        now_ms: u64,
        pace: bool,
    ) -> Result<PollOutcome, StoreError> {
        let key = self.request_key(id);
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(&key).arg(&POLL_FIELDS);
        if pace {
            pipe.cmd("HSET")
                .arg(&key)
                .arg("last_poll")
                .arg(now_ms)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(STRAY_POLL_TTL_MS)
                .arg("NX")
                .ignore();
        } else {
            pipe.cmd("HDEL").arg(&key).arg("last_poll").ignore();
        }
        let (fields,): (PollFields,) = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let (owner, status, expires_at, interval, last_poll, reason) = fields;
        if owner.as_deref() != Some(client_id) {
            return Ok(PollOutcome::Unknown);
        }
        let expires_at =
            expires_at.ok_or_else(|| StoreError::Corrupt("request without expires_at".into()))?;
        match status.as_deref() {
            // The script checks the expiry itself, and drops expired
            // tokens so that an instance whose clock lags cannot hand
            // them out.
            Some("approved" | "issued") => self.take_tokens(id, client_id, attempt, now_ms).await,
            _ if now_ms >= expires_at => Ok(PollOutcome::Expired),
            Some("pending") => {
                let interval = interval
                    .ok_or_else(|| StoreError::Corrupt("request without interval".into()))?;
                match last_poll {
                    Some(last) if pace && now_ms < last + interval * 1000 => {
                        let interval_secs = interval + SLOW_DOWN_STEP_SECS;
                        conn.hset::<_, _, _, ()>(&key, "interval", interval_secs)
                            .await
                            .map_err(unavailable)?;
                        Ok(PollOutcome::SlowDown { interval_secs })
                    }
                    _ => Ok(PollOutcome::Pending),
                }
            }
            Some("denied") => Ok(PollOutcome::Denied(reason.unwrap_or_default())),
            _ => Ok(PollOutcome::Redeemed),
        }
    }

    /// [`TAKE_TOKENS`]: an approved request's tokens, for this attempt.
    async fn take_tokens(
        &self,
        id: &AuthReqId,
        client_id: &str,
        attempt: &str,
        now_ms: u64,
    ) -> Result<PollOutcome, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Vec<String> = self
            .take_tokens
            .key(self.request_key(id))
            .key(self.tokens_key(id))
            .arg(client_id)
            .arg(now_ms)
            .arg(attempt)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let payload = reply.get(1).cloned();
        Ok(match (reply.first().map(String::as_str), payload) {
            (Some("unknown"), _) => PollOutcome::Unknown,
            (Some("expired"), _) => PollOutcome::Expired,
            (Some("redeemed"), _) => PollOutcome::Redeemed,
            (Some("tokens"), Some(tokens)) => PollOutcome::Tokens(tokens),
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "unexpected poll reply {reply:?}"
                )))
            }
        })
    }
}

fn field<'a>(map: &'a HashMap<String, String>, name: &str) -> Result<&'a str, StoreError> {
    map.get(name)
        .map(String::as_str)
        .ok_or_else(|| StoreError::Corrupt(format!("request without {name}")))
}

fn number(map: &HashMap<String, String>, name: &str) -> Result<u64, StoreError> {
    field(map, name)?
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("{name} is not a number")))
}

/// A request's long, write-once fields, in this order: in the `:dat`
/// string, and (under these names) in the hash of a request written before
/// it. One hash value over 64 bytes (`hash-max-listpack-value`) turns the
/// whole hash into a hashtable, several times its size; apart, the hash
/// keeps only the small fields the scripts read and write, as a listpack.
const DATA_FIELDS: [&str; 6] = [
    "login_hint",
    "scope",
    "upstream",
    "ping_token",
    "binding_message",
    "link",
];

/// The `:dat` string's layout version, its first byte.
const DATA_VERSION: u8 = 1;
/// Each field's first byte: absent, text, or text that is unpadded
/// base64url (the sealed values) kept as the bytes it encodes, a quarter
/// smaller.
const ABSENT: u8 = 0;
const TEXT: u8 = 1;
const BASE64URL: u8 = 2;

/// [`DATA_FIELDS`] as one string: the version, then per field its kind,
/// a LEB128 length and its bytes.
fn pack_data(fields: &[Option<&str>; DATA_FIELDS.len()]) -> Vec<u8> {
    let mut out = vec![DATA_VERSION];
    for value in fields {
        let Some(text) = value else {
            out.push(ABSENT);
            continue;
        };
        // Only what encodes back to the very same text is kept decoded.
        let (kind, bytes) = match URL_SAFE_NO_PAD.decode(text) {
            Ok(raw) if URL_SAFE_NO_PAD.encode(&raw) == *text => (BASE64URL, raw),
            _ => (TEXT, text.as_bytes().to_vec()),
        };
        out.push(kind);
        let mut len = bytes.len();
        while len >= 0x80 {
            out.push((len & 0x7f) as u8 | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(&bytes);
    }
    out
}

/// The fields [`pack_data`] packed; anything else is `Corrupt`.
fn unpack_data(bytes: &[u8]) -> Result<[Option<String>; DATA_FIELDS.len()], StoreError> {
    let corrupt = || StoreError::Corrupt("malformed request data".into());
    let mut rest = match bytes.split_first() {
        Some((&DATA_VERSION, rest)) => rest,
        _ => return Err(corrupt()),
    };
    let mut take = |n: usize| -> Result<&[u8], StoreError> {
        if n > rest.len() {
            return Err(corrupt());
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let mut fields: [Option<String>; DATA_FIELDS.len()] = Default::default();
    for field in &mut fields {
        let kind = take(1)?[0];
        if kind == ABSENT {
            continue;
        }
        let mut len = 0usize;
        for shift in (0..).step_by(7) {
            // Four bytes say up to 256 MiB, more than Redis takes.
            if shift > 21 {
                return Err(corrupt());
            }
            let byte = take(1)?[0];
            len |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let value = take(len)?;
        *field = Some(match kind {
            TEXT => String::from_utf8(value.to_vec()).map_err(|_| corrupt())?,
            BASE64URL => URL_SAFE_NO_PAD.encode(value),
            _ => return Err(corrupt()),
        });
    }
    Ok(fields)
}

#[async_trait]
impl Requests for RedisStore {
    async fn create(&self, record: &RequestRecord, now_ms: u64) -> Result<(), StoreError> {
        let key = self.request_key(&record.id);
        let live_ms = record.expires_at_ms.saturating_sub(now_ms).max(1);
        let kept_ms = live_ms + EXPIRED_RETENTION_MS;
        let fields = [
            ("client_id", record.client_id.clone()),
            ("status", Status::Pending.name().to_owned()),
            ("created_at", record.created_at_ms.to_string()),
            ("expires_at", record.expires_at_ms.to_string()),
            ("interval", record.interval_secs.to_string()),
        ];
        let data = pack_data(&[
            Some(record.login_hint.as_str()),
            Some(record.scope.as_str()),
            Some(record.sealed_upstream.as_str()),
            record.sealed_ping_token.as_deref(),
            record.binding_message.as_deref(),
            match &record.user_link {
                UserLink::None => None,
                // Present but empty: made again when needed.
                UserLink::FromContext => Some(""),
                UserLink::Sealed(sealed) => Some(sealed.as_str()),
            },
        ]);
        let mut conn = self.conn.clone();
        // The data after the hash, in one transaction: it expires no
        // sooner, so a hash that is there always has its data.
        redis::pipe()
            .atomic()
            .hset_multiple(&key, &fields)
            .ignore()
            .pexpire(&key, kept_ms as i64)
            .ignore()
            .set_options(
                self.data_key(&record.id),
                data,
                redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(kept_ms)),
            )
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)?;
        self.replicate(&key).await;
        // Beside the request, not in its transaction: other keys, other
        // slots, so one pipeline per key.
        let oldest_kept = now_ms.saturating_sub(
            crate::configuration::MAX_REQUEST_LIFETIME_SECS * 1000 + EXPIRED_RETENTION_MS,
        );
        // Each set lives as long as its latest member matters (NX for a
        // new key, then GT: never shorten it).
        let kept_until = record.expires_at_ms + EXPIRED_RETENTION_MS;
        let mut pending = redis::pipe();
        pending
            .zadd(self.pending_key(), record.id.as_str(), record.expires_at_ms)
            .ignore();
        let mut recent = redis::pipe();
        recent
            .zadd(self.recent_key(), record.id.as_str(), record.created_at_ms)
            .ignore()
            .zrembyscore(self.recent_key(), "-inf", format!("({oldest_kept}"))
            .ignore();
        for (pipe, key, until) in [
            (&mut pending, self.pending_key(), record.expires_at_ms),
            (&mut recent, self.recent_key(), kept_until),
        ] {
            for option in ["NX", "GT"] {
                pipe.cmd("PEXPIREAT")
                    .arg(&key)
                    .arg(until)
                    .arg(option)
                    .ignore();
            }
        }
        let mut other = conn.clone();
        let (a, b) = futures::join!(
            pending.query_async::<()>(&mut conn),
            recent.query_async::<()>(&mut other)
        );
        a.and(b).map_err(unavailable)
    }

    async fn legacy_state_owner(&self, state: &str) -> Result<Option<AuthReqId>, StoreError> {
        let mut conn = self.conn.clone();
        let id: Option<String> = conn
            .get(self.legacy_state_key(state))
            .await
            .map_err(unavailable)?;
        Ok(id.and_then(|id| AuthReqId::parse(&id).ok()))
    }

    async fn bind_callback(
        &self,
        id: &AuthReqId,
        fingerprint: &str,
    ) -> Result<Binding, StoreError> {
        let mut conn = self.conn.clone();
        let bound: String = self
            .bind_callback
            .key(self.request_key(id))
            .arg(fingerprint)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(match bound.as_str() {
            "bound" => Binding::Bound,
            "other" => Binding::Other,
            _ => Binding::Gone,
        })
    }

    async fn get(&self, id: &AuthReqId) -> Result<Option<(RequestRecord, Status)>, StoreError> {
        let mut conn = self.conn.clone();
        // One round trip; in one transaction, so both are read at one
        // instant and the data cannot have expired after the hash was read.
        let (map, data): (HashMap<String, String>, Option<Vec<u8>>) = redis::pipe()
            .atomic()
            .hgetall(self.request_key(id))
            .get(self.data_key(id))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        // Only `last_poll`: a poll of an id that was never stored (or is
        // long gone) wrote it, and it expires on its own.
        if !map.contains_key("client_id") {
            return Ok(None);
        }
        let status = match field(&map, "status")? {
            "pending" => Status::Pending,
            "approved" => Status::Approved,
            "issued" => Status::Issued,
            "denied" => Status::Denied {
                reason: map.get("reason").cloned().unwrap_or_default(),
                kind: Denial::parse(map.get("denial").map_or("", String::as_str)),
            },
            other => return Err(StoreError::Corrupt(format!("unknown status {other}"))),
        };
        let [login_hint, scope, upstream, ping_token, binding_message, link] = match data {
            Some(bytes) => unpack_data(&bytes)?,
            // Written by an instance from before the data key (a rolling
            // upgrade): every field in the hash.
            None => DATA_FIELDS.map(|name| map.get(name).cloned()),
        };
        let required = |value: Option<String>, name: &str| {
            value.ok_or_else(|| StoreError::Corrupt(format!("request without {name}")))
        };
        let optional = |value: Option<String>| value.filter(|v| !v.is_empty());
        let record = RequestRecord {
            id: id.clone(),
            client_id: field(&map, "client_id")?.to_owned(),
            login_hint: required(login_hint, "login_hint")?,
            scope: required(scope, "scope")?,
            sealed_upstream: required(upstream, "upstream")?,
            created_at_ms: number(&map, "created_at")?,
            expires_at_ms: number(&map, "expires_at")?,
            interval_secs: number(&map, "interval")?,
            sealed_ping_token: optional(ping_token),
            binding_message: optional(binding_message),
            user_link: match link {
                None => UserLink::None,
                Some(link) if link.is_empty() => UserLink::FromContext,
                Some(sealed) => UserLink::Sealed(sealed),
            },
        };
        Ok(Some((record, status)))
    }

    async fn finish(
        &self,
        id: &AuthReqId,
        outcome: &Outcome,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let (kind, payload, denial) = match outcome {
            Outcome::Approved { sealed_tokens } => ("approved", sealed_tokens, ""),
            Outcome::Denied { reason, kind } => ("denied", reason, kind.as_str()),
        };
        let mut conn = self.conn.clone();
        let changed: i64 = self
            .finish
            .key(self.request_key(id))
            .key(self.tokens_key(id))
            .arg(kind)
            .arg(payload)
            .arg(now_ms)
            .arg(denial)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if changed == 1 {
            self.replicate(&self.request_key(id)).await;
            // Best effort: a leftover entry drops out of the count at expiry.
            if let Err(e) = conn.zrem::<_, _, ()>(self.pending_key(), id.as_str()).await {
                tracing::debug!(error = %e, "could not drop a request from the pending count");
            }
        }
        Ok(changed == 1)
    }

    async fn poll(
        &self,
        id: &AuthReqId,
        client_id: &str,
        attempt: &str,
        now_ms: u64,
    ) -> Result<PollOutcome, StoreError> {
        self.run_poll(id, client_id, attempt, now_ms, true).await
    }

    async fn recheck(
        &self,
        id: &AuthReqId,
        client_id: &str,
        attempt: &str,
        now_ms: u64,
    ) -> Result<PollOutcome, StoreError> {
        self.run_poll(id, client_id, attempt, now_ms, false).await
    }

    async fn confirm_tokens(
        &self,
        id: &AuthReqId,
        attempt: &str,
    ) -> Result<Confirmation, StoreError> {
        let mut conn = self.conn.clone();
        let confirmed: i64 = self
            .confirm
            .key(self.request_key(id))
            .key(self.tokens_key(id))
            .arg(attempt)
            .arg(CONFIRM_WINDOW_MS)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(match confirmed {
            1 => Confirmation::Confirmed,
            2 => Confirmation::IssuedElsewhere,
            _ => Confirmation::Unconfirmed,
        })
    }

    async fn recent(&self, _now_ms: u64, max: usize) -> Result<Vec<AuthReqId>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrevrange(self.recent_key(), 0, max as isize - 1)
            .await
            .map_err(unavailable)?;
        Ok(super::parse_ids(&ids))
    }

    async fn pending(&self, now_ms: u64) -> Result<u64, StoreError> {
        // Counts only: the expired ones are left to `take_expired`.
        let mut conn = self.conn.clone();
        conn.zcount(self.pending_key(), format!("({now_ms}"), "+inf")
            .await
            .map_err(unavailable)
    }

    async fn take_expired(&self, now_ms: u64, max: usize) -> Result<Vec<AuthReqId>, StoreError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = self
            .take_expired
            .key(self.pending_key())
            .arg(now_ms)
            .arg(max)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(super::parse_ids(&ids))
    }

    async fn notification(
        &self,
        id: &AuthReqId,
        update: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        self.notification
            .key(self.request_key(id))
            .arg(update.unwrap_or(""))
            .arg(NOTIFICATION_SENT)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl ReplayGuard for RedisStore {
    async fn use_once(&self, key: &str, ttl_secs: u64) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = conn
            .set_options(
                format!("{}:once:{}", self.prefix, key),
                "1",
                redis::SetOptions::default()
                    .conditional_set(redis::ExistenceCheck::NX)
                    .with_expiration(redis::SetExpiry::EX(ttl_secs.max(1))),
            )
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    async fn forget_once(&self, key: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.del::<_, i64>(format!("{}:once:{}", self.prefix, key))
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

#[async_trait]
impl JobQueue for RedisStore {
    async fn enqueue(
        &self,
        job: &QueuedJob,
        visible_at_ms: u64,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let (queue, jobs) = self.job_keys(&job.id);
        let mut conn = self.conn.clone();
        let _: i64 = self
            .enqueue
            .key(queue)
            .key(jobs)
            .arg(&job.id)
            .arg(&job.payload)
            .arg(visible_at_ms)
            .arg(ttl_ms.max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn lease(
        &self,
        now_ms: u64,
        lease_ms: u64,
        max: usize,
    ) -> Result<Vec<QueuedJob>, StoreError> {
        let mut conn = self.conn.clone();
        let mut leased = Vec::new();
        // Every shard in turn, starting where the last lease left off, until
        // `max` jobs are taken; a shard that fails leaves the others usable.
        let first = self.next_shard.fetch_add(1, Ordering::Relaxed);
        let mut failure = None;
        for i in 0..JOB_SHARDS {
            let want = max.saturating_sub(leased.len());
            if want == 0 {
                break;
            }
            let (queue, jobs) = self.shard_keys((first + i) % JOB_SHARDS);
            let flat: Vec<String> = match self
                .lease
                .key(queue)
                .key(jobs)
                .arg(now_ms)
                .arg(lease_ms)
                .arg(want)
                .invoke_async(&mut conn)
                .await
            {
                Ok(flat) => flat,
                Err(e) => {
                    failure = Some(e);
                    continue;
                }
            };
            leased.extend(flat.chunks_exact(2).map(|pair| QueuedJob {
                id: pair[0].clone(),
                payload: pair[1].clone(),
            }));
        }
        match failure {
            Some(e) if leased.is_empty() => Err(unavailable(e)),
            _ => Ok(leased),
        }
    }

    async fn reschedule(&self, job: &QueuedJob, visible_at_ms: u64) -> Result<(), StoreError> {
        let (queue, jobs) = self.job_keys(&job.id);
        let mut conn = self.conn.clone();
        let _: i64 = self
            .reschedule
            .key(queue)
            .key(jobs)
            .arg(&job.id)
            .arg(&job.payload)
            .arg(visible_at_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn expedite(&self, job_id: &str, now_ms: u64) -> Result<bool, StoreError> {
        let (queue, _) = self.job_keys(job_id);
        let mut conn = self.conn.clone();
        // XX: only a job still in the queue is moved; CH: count it.
        redis::cmd("ZADD")
            .arg(queue)
            .arg("XX")
            .arg("CH")
            .arg(now_ms)
            .arg(job_id)
            .query_async::<i64>(&mut conn)
            .await
            .map(|moved| moved > 0)
            .map_err(unavailable)
    }

    async fn complete(&self, job_id: &str) -> Result<(), StoreError> {
        let (queue, jobs) = self.job_keys(job_id);
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .zrem(queue, job_id)
            .ignore()
            .hdel(jobs, job_id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn queue_stats(&self, _now_ms: u64) -> Result<QueueStats, StoreError> {
        let mut conn = self.conn.clone();
        let mut stats = QueueStats::default();
        // One pipeline per shard: each is its own slot.
        for shard in 0..JOB_SHARDS {
            let (queue, _) = self.shard_keys(shard);
            let (queued, first): (u64, Vec<(String, u64)>) = redis::pipe()
                .zcard(&queue)
                .zrange_withscores(&queue, 0, 0)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            stats.queued_jobs += queued;
            if let Some((_, due)) = first.first() {
                stats.oldest_due_ms = Some(stats.oldest_due_ms.map_or(*due, |d| d.min(*due)));
            }
        }
        Ok(stats)
    }
}

#[async_trait]
impl Quotas for RedisStore {
    async fn count(&self, key: &str, window_secs: u64) -> Result<u64, StoreError> {
        self.step(key, 1, window_secs)
            .await
            .map(|count| u64::try_from(count).unwrap_or(0))
    }

    async fn uncount(&self, key: &str, window_secs: u64) -> Result<(), StoreError> {
        // A window already gone comes back below zero, but with its TTL.
        self.step(key, -1, window_secs).await.map(|_| ())
    }

    async fn take_slot(
        &self,
        key: &str,
        member: &str,
        until_ms: u64,
        now_ms: u64,
        max: u64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let taken: i64 = self
            .take_slot
            .key(format!("{}:{}", self.prefix, key))
            .arg(member)
            .arg(until_ms)
            .arg(now_ms)
            .arg(max)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(taken == 1)
    }

    async fn free_slot(&self, key: &str, member: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn
            .zrem(format!("{}:{}", self.prefix, key), member)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl Health for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(fields: [Option<&str>; 6]) -> [Option<String>; 6] {
        unpack_data(&pack_data(&fields)).unwrap()
    }

    #[test]
    fn sealed_values_are_kept_as_their_bytes_and_come_back_as_written() {
        let sealed = URL_SAFE_NO_PAD.encode([7u8; 400]);
        let fields = [
            Some("alice@example.com"),
            Some("openid profile"),
            Some(sealed.as_str()),
            None,
            Some(""),
            Some(sealed.as_str()),
        ];
        let packed = pack_data(&fields);
        assert!(packed.len() < 2 * 400 + 60, "{} bytes", packed.len());
        assert_eq!(round_trip(fields), fields.map(|f| f.map(str::to_owned)));
    }

    #[test]
    fn text_that_only_looks_like_base64url_is_kept_as_text() {
        // Decodes, but with padding or non-zero trailing bits it would not
        // encode back to itself.
        let fields = [Some("QQ=="), Some("QR"), Some("sealed"), None, None, None];
        assert_eq!(round_trip(fields), fields.map(|f| f.map(str::to_owned)));
    }

    #[test]
    fn malformed_data_is_corrupt_not_a_panic() {
        for bytes in [
            &[][..],
            &[9],
            &[DATA_VERSION],
            &[DATA_VERSION, TEXT, 5, b'a'],
            &[DATA_VERSION, 7, 0, 0, 0, 0, 0, 0],
            &[DATA_VERSION, TEXT, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[DATA_VERSION, TEXT, 1, 0xff, 0, 0, 0, 0, 0],
        ] {
            assert!(
                matches!(unpack_data(bytes), Err(StoreError::Corrupt(_))),
                "{bytes:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_fields_come_back_as_written(
            fields in proptest::array::uniform6(proptest::option::of(
                prop_oneof![".{0,300}", "[A-Za-z0-9_-]{0,600}"]
            ))
        ) {
            let refs: [Option<&str>; 6] = std::array::from_fn(|i| fields[i].as_deref());
            prop_assert_eq!(round_trip(refs), fields);
        }

        #[test]
        fn any_bytes_unpack_or_are_corrupt(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = unpack_data(&bytes);
        }
    }
}

//! The shared [`Accounts`] on Redis, for any number of instances.
//!
//! Keys (under the configured prefix), each in one Redis Cluster slot:
//! - `{prefix}:{d:<did digest>}:enrol` (hash): an enrolment (the user, the
//!   user's hash, the challenge digest), expiring with it;
//! - `{prefix}:{d:<did digest>}:device` (hash): a registered device, until removed;
//! - `{prefix}:{u:<user hash>}:devices` (set): the user's dids;
//! - `{prefix}:{u:<user hash>}:email` (string): the user's e-mail address;
//! - `{prefix}:{u:<user hash>}:requests` (sorted set by expiry): the user's
//!   requests, trimmed on read, the key expiring with its latest request;
//! - `{prefix}:{u:<user hash>}:history` (sorted set by time): trimmed on
//!   write, the key expiring when its newest entry is no longer kept.
//!
//! Cluster-safe: every script or transaction touches one key, or the did's
//! two keys under one tag. Enrolling is one script over the did's two keys, so a challenge is used
//! up exactly when a device is registered with it. Dids are hashed into key
//! names: a did is the device's to send, and must not shape a key.
use std::collections::HashMap;

use async_trait::async_trait;
use redis::{AsyncCommands, Script};
use sha2::{Digest, Sha256};

use super::accounts::{Accounts, Device, Enrolment, HistoryEntry, PushTarget};
use super::connection::RedisConn;
use super::StoreError;
use crate::crypto::random_token;
use crate::domain::AuthReqId;
use crate::limits::user_hash;

const ENROL: &str = r"
-- KEYS[1] enrolment hash, KEYS[2] device hash
-- ARGV: user hash, challenge digest, now_ms, then the device's fields and values
local e = redis.call('HMGET', KEYS[1], 'user', 'digest', 'expires_at')
if not e[1] or e[1] ~= ARGV[1] or e[2] ~= ARGV[2] then return 0 end
if tonumber(ARGV[3]) >= tonumber(e[3]) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
return 1
";

const SET_IF_EXISTS: &str = r"
-- KEYS[1] a device hash; ARGV: field, value. A removed device stays removed.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

#[derive(Clone)]
pub struct RedisAccounts {
    conn: RedisConn,
    prefix: String,
    enrol: Script,
    set_if_exists: Script,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("malformed {what}"))
}

fn did_digest(did: &str) -> String {
    hex::encode(&Sha256::digest(did.as_bytes())[..16])
}

impl RedisAccounts {
    /// Shares the connection of the request store (see `RedisStore::accounts`).
    pub(crate) fn new(conn: RedisConn, prefix: &str) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            enrol: Script::new(ENROL),
            set_if_exists: Script::new(SET_IF_EXISTS),
        }
    }

    fn enrolment_key(&self, did: &str) -> String {
        format!("{}:{{d:{}}}:enrol", self.prefix, did_digest(did))
    }

    fn device_key(&self, did: &str) -> String {
        format!("{}:{{d:{}}}:device", self.prefix, did_digest(did))
    }

    fn user_key(&self, user: &str, what: &str) -> String {
        format!("{}:{{u:{}}}:{what}", self.prefix, user_hash(user))
    }
}

fn device_fields(device: &Device) -> Result<Vec<(&'static str, String)>, StoreError> {
    let push = match &device.push {
        Some(push) => serde_json::to_string(push).map_err(|_| corrupt("push target"))?,
        None => String::new(),
    };
    Ok(vec![
        ("did", device.did.clone()),
        ("user", device.user.clone()),
        ("name", device.name.clone()),
        ("model", device.model.clone()),
        ("jwk", device.jwk.clone()),
        ("push", push),
        ("registered_at", device.registered_at_ms.to_string()),
        ("last_used_at", device.last_used_at_ms.to_string()),
    ])
}

fn device_from(map: &HashMap<String, String>) -> Result<Device, StoreError> {
    let text = |name: &str| map.get(name).cloned().ok_or_else(|| corrupt("device"));
    let number = |name: &str| -> Result<u64, StoreError> {
        text(name)?.parse().map_err(|_| corrupt("device time"))
    };
    let push = match map.get("push").map(String::as_str) {
        None | Some("") => None,
        Some(json) => {
            Some(serde_json::from_str::<PushTarget>(json).map_err(|_| corrupt("push target"))?)
        }
    };
    Ok(Device {
        did: text("did")?,
        user: text("user")?,
        name: text("name")?,
        model: text("model")?,
        jwk: text("jwk")?,
        push,
        registered_at_ms: number("registered_at")?,
        last_used_at_ms: number("last_used_at")?,
    })
}

#[async_trait]
impl Accounts for RedisAccounts {
    async fn offer_enrolment(&self, enrolment: &Enrolment) -> Result<(), StoreError> {
        let key = self.enrolment_key(&enrolment.did);
        let fields = [
            ("did", enrolment.did.clone()),
            ("who", enrolment.user.clone()),
            ("user", user_hash(&enrolment.user)),
            ("digest", enrolment.challenge_digest.clone()),
            ("expires_at", enrolment.expires_at_ms.to_string()),
        ];
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .del(&key)
            .ignore()
            .hset_multiple(&key, &fields)
            .ignore()
            .cmd("PEXPIREAT")
            .arg(&key)
            .arg(enrolment.expires_at_ms)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn enrolment(&self, did: &str) -> Result<Option<Enrolment>, StoreError> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, String> = conn
            .hgetall(self.enrolment_key(did))
            .await
            .map_err(unavailable)?;
        if map.is_empty() {
            return Ok(None);
        }
        let text = |name: &str| map.get(name).cloned().ok_or_else(|| corrupt("enrolment"));
        let enrolment = Enrolment {
            did: text("did")?,
            user: text("who")?,
            challenge_digest: text("digest")?,
            expires_at_ms: text("expires_at")?
                .parse()
                .map_err(|_| corrupt("enrolment expiry"))?,
        };
        // A digest collision is not this did's enrolment.
        Ok((enrolment.did == did).then_some(enrolment))
    }

    async fn enrol(
        &self,
        device: &Device,
        challenge_digest: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let mut call = self.enrol.prepare_invoke();
        call.key(self.enrolment_key(&device.did))
            .key(self.device_key(&device.did))
            .arg(user_hash(&device.user))
            .arg(challenge_digest)
            .arg(now_ms);
        for (field, value) in device_fields(device)? {
            call.arg(field).arg(value);
        }
        let enrolled: i64 = call.invoke_async(&mut conn).await.map_err(unavailable)?;
        if enrolled != 1 {
            return Ok(false);
        }
        // The user's list, in the user's slot; the device itself is registered.
        let _: i64 = conn
            .sadd(self.user_key(&device.user, "devices"), &device.did)
            .await
            .map_err(unavailable)?;
        Ok(true)
    }

    async fn device(&self, did: &str) -> Result<Option<Device>, StoreError> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, String> = conn
            .hgetall(self.device_key(did))
            .await
            .map_err(unavailable)?;
        if map.is_empty() {
            return Ok(None);
        }
        let device = device_from(&map)?;
        // A digest collision is not this device.
        Ok((device.did == did).then_some(device))
    }

    async fn devices(&self, user: &str) -> Result<Vec<Device>, StoreError> {
        let mut conn = self.conn.clone();
        let list = self.user_key(user, "devices");
        let dids: Vec<String> = conn.smembers(&list).await.map_err(unavailable)?;
        if dids.is_empty() {
            return Ok(Vec::new());
        }
        // Each device in its own slot: one read each, side by side (a
        // pipeline over several slots is refused on a cluster).
        let maps: Vec<HashMap<String, String>> =
            futures::future::try_join_all(dids.iter().map(|did| {
                let mut conn = conn.clone();
                let key = self.device_key(did);
                async move { conn.hgetall(key).await }
            }))
            .await
            .map_err(unavailable)?;
        let mut devices = Vec::with_capacity(dids.len());
        let user = user_hash(user);
        for (did, map) in dids.iter().zip(maps) {
            if map.is_empty() {
                // Removed while listed: forget it.
                let _: i64 = conn.srem(&list, did).await.map_err(unavailable)?;
                continue;
            }
            let device = device_from(&map)?;
            if user_hash(&device.user) == user {
                devices.push(device);
            }
        }
        devices.sort_by(|a, b| (a.registered_at_ms, &a.did).cmp(&(b.registered_at_ms, &b.did)));
        Ok(devices)
    }

    async fn touch_device(&self, did: &str, now_ms: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .set_if_exists
            .key(self.device_key(did))
            .arg("last_used_at")
            .arg(now_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn remove_device(&self, did: &str) -> Result<bool, StoreError> {
        let Some(device) = self.device(did).await? else {
            return Ok(false);
        };
        let mut conn = self.conn.clone();
        let removed: i64 = conn.del(self.device_key(did)).await.map_err(unavailable)?;
        let _: i64 = conn
            .srem(self.user_key(&device.user, "devices"), did)
            .await
            .map_err(unavailable)?;
        Ok(removed == 1)
    }

    async fn drop_push(&self, did: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .set_if_exists
            .key(self.device_key(did))
            .arg("push")
            .arg("")
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn set_email(&self, user: &str, email: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.set(self.user_key(user, "email"), email)
            .await
            .map_err(unavailable)
    }

    async fn email(&self, user: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.get(self.user_key(user, "email"))
            .await
            .map_err(unavailable)
    }

    async fn note_request(
        &self,
        user: &str,
        id: &AuthReqId,
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        let key = self.user_key(user, "requests");
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zadd(&key, id.as_str(), expires_at_ms)
            .ignore();
        // The key lives as long as its latest request (NX for a new key, then GT).
        for option in ["NX", "GT"] {
            pipe.cmd("PEXPIREAT")
                .arg(&key)
                .arg(expires_at_ms)
                .arg(option)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }

    async fn requests(&self, user: &str, now_ms: u64) -> Result<Vec<AuthReqId>, StoreError> {
        let key = self.user_key(user, "requests");
        let mut conn = self.conn.clone();
        let (ids,): (Vec<String>,) = redis::pipe()
            .atomic()
            .zrembyscore(&key, "-inf", now_ms)
            .ignore()
            .zrevrange(&key, 0, -1)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(super::parse_ids(&ids))
    }

    async fn record_history(
        &self,
        user: &str,
        entry: &HistoryEntry,
        keep_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let key = self.user_key(user, "history");
        // A random tag keeps two equal entries apart in the set.
        let json = serde_json::to_string(entry).map_err(|_| corrupt("history entry"))?;
        let member = format!("{} {json}", random_token(8));
        let oldest = now_ms.saturating_sub(keep_ms);
        let until = entry.at_ms.max(now_ms) + keep_ms;
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zadd(&key, member, entry.at_ms)
            .ignore()
            .zrembyscore(&key, "-inf", format!("({oldest}"))
            .ignore();
        for option in ["NX", "GT"] {
            pipe.cmd("PEXPIREAT")
                .arg(&key)
                .arg(until)
                .arg(option)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }

    async fn history(&self, user: &str, since_ms: u64) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut conn = self.conn.clone();
        let members: Vec<String> = conn
            .zrevrangebyscore(self.user_key(user, "history"), "+inf", since_ms)
            .await
            .map_err(unavailable)?;
        members
            .iter()
            .map(|member| {
                let json = member.split_once(' ').map_or("", |(_, json)| json);
                serde_json::from_str(json).map_err(|_| corrupt("history entry"))
            })
            .collect()
    }
}

//! The shared store: Redis or Valkey, so that several relays behind one MX share rate-limit
//! counters, greylisting and quotas. Every operation is one script, atomic on the server: the
//! write, its expiry and its tenant's usage together. Usage lives beside the data, per tenant:
//! a hash of totals, a hash of what each key counts as, and a sorted set of expiry times, so
//! keys the server expires give their room back on the tenant's next write.
//!
//! The connection is made on first use and made again after the server goes away. While it is
//! away operations fail with [`KvError::Unavailable`] within about a second (after a failed
//! attempt to connect, at once for the next second): they never hang and never crash.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::kv::{COUNTER_BYTES, KvError, KvStore, Quota, Usage, entry_bytes, now_millis, tenant_of};
pub use super::redis_source::RedisOptions;
use super::redis_source::{Connection, Source};

/// How long to wait for a connection or an answer.
pub(super) const TIMEOUT: Duration = Duration::from_secs(1);
/// After a failed attempt to connect, operations fail at once for this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// KEYS: the key, the tenant's usage hash, its sizes hash, its expiry set.
/// ARGV: operation (set, incr, incr-touch, del, usage), now (Unix ms), max keys, max bytes, bytes the
/// entry counts as, time to live in ms (0: none), the value (set) or delta (incr).
/// Returns {0} or {0, counter} on success, {1} when the quota would be passed, {keys, bytes}
/// for usage.
const SCRIPT: &str = r"
local key, usage, sizes, expiries = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, now = ARGV[1], tonumber(ARGV[2])

local function forget(k)
    local size = redis.call('HGET', sizes, k)
    if size then
        redis.call('HDEL', sizes, k)
        redis.call('HINCRBY', usage, 'keys', -1)
        redis.call('HINCRBY', usage, 'bytes', -tonumber(size))
    end
    redis.call('ZREM', expiries, k)
end

-- Keys the server has expired give their room back.
for _, k in ipairs(redis.call('ZRANGEBYSCORE', expiries, '-inf', now, 'LIMIT', 0, 100)) do
    local ttl = redis.call('PTTL', k)
    if ttl == -2 then
        forget(k)
    elseif ttl > 0 then
        redis.call('ZADD', expiries, now + ttl, k)
    else
        redis.call('ZREM', expiries, k)
    end
end

local function totals()
    local u = redis.call('HMGET', usage, 'keys', 'bytes')
    return tonumber(u[1]) or 0, tonumber(u[2]) or 0
end

if op == 'usage' then
    local keys, bytes = totals()
    return {keys, bytes}
end

local tracked = redis.call('HGET', sizes, key)
local exists = redis.call('EXISTS', key) == 1
if tracked and not exists then
    forget(key)
    tracked = false
end

if op == 'del' then
    redis.call('DEL', key)
    forget(key)
    return {0}
end

local size, ttl = tonumber(ARGV[5]), tonumber(ARGV[6])

local function admits()
    local keys, bytes = totals()
    local grow = size - (tonumber(tracked) or 0)
    if not tracked and keys + 1 > tonumber(ARGV[3]) then return false end
    if grow > 0 and bytes + grow > tonumber(ARGV[4]) then return false end
    return true
end

local function account(expiry_ms)
    if not tracked then redis.call('HINCRBY', usage, 'keys', 1) end
    redis.call('HINCRBY', usage, 'bytes', size - (tonumber(tracked) or 0))
    redis.call('HSET', sizes, key, size)
    if expiry_ms > 0 then
        redis.call('ZADD', expiries, now + expiry_ms, key)
    else
        redis.call('ZREM', expiries, key)
    end
end

if op == 'set' then
    if not admits() then return {1} end
    if ttl > 0 then
        redis.call('SET', key, ARGV[7], 'PX', ttl)
    else
        redis.call('SET', key, ARGV[7])
    end
    account(ttl)
    return {0}
end

-- incr: an existing counter keeps its expiry (incr-touch: gets the ttl); a new one needs
-- room and gets the ttl.
if exists then
    local value = redis.call('INCRBY', key, ARGV[7])
    if op == 'incr-touch' and ttl > 0 then
        redis.call('PEXPIRE', key, ttl)
        account(ttl)
    elseif not tracked then
        account(redis.call('PTTL', key))
    end
    return {0, value}
end
if not admits() then return {1} end
local value = redis.call('INCRBY', key, ARGV[7])
if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
account(ttl)
return {0, value}";

/// A store on a Redis or Valkey server.
pub struct RedisKv {
    source: Source,
    /// Key prefix: the namespace of this relay's keys on a shared server.
    prefix: String,
    connection: tokio::sync::Mutex<Option<Connection>>,
    /// When the last attempt to connect failed.
    failed_at: Mutex<Option<Instant>>,
    script: redis::Script,
}

fn unavailable(e: impl std::fmt::Display) -> KvError {
    KvError::Unavailable(e.to_string())
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The server's answer to `request`, or unavailable when it does not come in time.
async fn answer<R>(request: impl Future<Output = R>) -> Result<R, KvError> {
    tokio::time::timeout(TIMEOUT * 2, request)
        .await
        .map_err(|_| KvError::Unavailable("the key-value server did not answer in time".into()))
}

/// A script failure: a counter that is not one is the caller's mistake, anything else the
/// server's.
fn script_error(e: redis::RedisError) -> KvError {
    let text = e.to_string();
    if text.contains("not an integer") || text.contains("overflow") {
        KvError::Invalid("value is not an integer counter".into())
    } else {
        KvError::Unavailable(text)
    }
}

impl RedisKv {
    /// A store on the server at `url` (`redis://host:port/db`, `rediss://` for TLS), or on
    /// the master `options`' sentinels name. Nothing is connected yet; the URL is checked.
    pub fn new(url: &str, prefix: &str, options: RedisOptions) -> Result<Self, String> {
        let source = Source::new(url, &options)?;
        Ok(Self {
            source,
            prefix: prefix.to_string(),
            connection: tokio::sync::Mutex::new(None),
            failed_at: Mutex::new(None),
            script: redis::Script::new(SCRIPT),
        })
    }

    fn recently_failed(&self) -> bool {
        let failed_at = self.failed_at.lock().unwrap_or_else(|p| p.into_inner());
        failed_at.is_some_and(|at| at.elapsed() < RETRY_AFTER)
    }

    async fn connection(&self) -> Result<Connection, KvError> {
        let down = || KvError::Unavailable("no connection to the key-value server".into());
        if self.recently_failed() {
            return Err(down());
        }
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        // Whoever waited for the lock while an attempt failed does not make another one.
        if self.recently_failed() {
            return Err(down());
        }
        let attempt = tokio::time::timeout(TIMEOUT, self.source.connect()).await;
        match attempt {
            Ok(Ok(connection)) => {
                *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
                *slot = Some(connection.clone());
                Ok(connection)
            }
            failure => {
                *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                Err(match failure {
                    Ok(Err(e)) => unavailable(e),
                    _ => down(),
                })
            }
        }
    }

    /// After a request failed for want of the server: with sentinels, the connection is
    /// dropped, so that the next request asks them where the master is now (after a
    /// failover the old one is gone, or a replica that refuses writes).
    async fn failed<T>(&self, result: Result<T, KvError>) -> Result<T, KvError> {
        if matches!(result, Err(KvError::Unavailable(_))) && !matches!(self.source, Source::Direct(_)) {
            *self.connection.lock().await = None;
        }
        result
    }

    /// Run `command` (whose keys the caller prefixed with [`RedisKv::prefix`]), as the store's
    /// own operations run: bounded in time, unavailable when the server is away.
    pub async fn command<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, KvError> {
        let mut connection = self.connection().await?;
        let result = answer(command.query_async(&mut connection)).await.and_then(|r| r.map_err(unavailable));
        self.failed(result).await
    }

    /// Run `pipeline` (keys prefixed by the caller; on a cluster, all in one slot).
    pub async fn pipeline(&self, pipeline: redis::Pipeline) -> Result<(), KvError> {
        let mut connection = self.connection().await?;
        let result =
            answer(pipeline.query_async::<()>(&mut connection)).await.and_then(|r| r.map_err(unavailable));
        self.failed(result).await
    }

    /// Run `pipeline` and return its answers (those not ignored).
    pub async fn query_pipeline<T: redis::FromRedisValue>(
        &self,
        pipeline: redis::Pipeline,
    ) -> Result<T, KvError> {
        let mut connection = self.connection().await?;
        let result =
            answer(pipeline.query_async::<T>(&mut connection)).await.and_then(|r| r.map_err(unavailable));
        self.failed(result).await
    }

    /// The prefix of this relay's keys on the server.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// What goes before a namespaced key on the server: the prefix, and on a cluster the
    /// key's tenant as a hash tag (its data, usage and expiries share a slot).
    fn key_prefix(&self, key: &str) -> String {
        match self.source {
            Source::Cluster(_) => format!("{}{{{}}}", self.prefix, tenant_of(key)),
            _ => self.prefix.clone(),
        }
    }

    /// The script's KEYS for `key` (namespaced, without the prefix): the key itself, and its
    /// tenant's usage hash, sizes hash and expiry set.
    fn script_keys(&self, key: &str) -> [String; 4] {
        let (p, tenant) = (self.key_prefix(key), tenant_of(key));
        [
            format!("{p}{key}"),
            format!("{p}q:usage:{tenant}"),
            format!("{p}q:sizes:{tenant}"),
            format!("{p}q:expiries:{tenant}"),
        ]
    }

    /// Run the script for `op` on `key` (namespaced, without the prefix).
    async fn invoke(
        &self,
        op: &str,
        key: &str,
        quota: Quota,
        size: u64,
        ttl: u64,
        arg: &[u8],
    ) -> Result<Vec<i64>, KvError> {
        let mut invocation = self.script.prepare_invoke();
        for script_key in self.script_keys(key) {
            invocation.key(script_key);
        }
        invocation
            .arg(op)
            .arg(now_millis())
            .arg(quota.max_keys)
            .arg(quota.max_bytes)
            .arg(size)
            .arg(ttl)
            .arg(arg);
        let mut connection = self.connection().await?;
        let result = answer(invocation.invoke_async::<Vec<i64>>(&mut connection))
            .await
            .and_then(|r| r.map_err(script_error));
        self.failed(result).await
    }
}

#[async_trait::async_trait]
impl KvStore for RedisKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let key = format!("{}{key}", self.key_prefix(key));
        let mut connection = self.connection().await?;
        let result = answer(redis::cmd("GET").arg(&key).query_async(&mut connection))
            .await
            .and_then(|r| r.map_err(unavailable));
        self.failed(result).await
    }

    async fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        quota: Quota,
    ) -> Result<(), KvError> {
        let size = entry_bytes(key, value.len());
        match self.invoke("set", key, quota, size, ttl.map_or(0, millis), &value).await?.first() {
            Some(0) => Ok(()),
            _ => Err(KvError::QuotaExceeded),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.invoke("del", key, Quota::UNLIMITED, 0, 0, b"").await.map(|_| ())
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>, quota: Quota) -> Result<i64, KvError> {
        let size = key.len() as u64 + COUNTER_BYTES;
        let delta = delta.to_string();
        match self.invoke("incr", key, quota, size, ttl.map_or(0, millis), delta.as_bytes()).await?[..] {
            [0, value] => Ok(value),
            _ => Err(KvError::QuotaExceeded),
        }
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut command = redis::cmd("MGET");
        for key in keys {
            command.arg(format!("{}{key}", self.key_prefix(key)));
        }
        let mut connection = self.connection().await?;
        let result = answer(command.query_async(&mut connection)).await.and_then(|r| r.map_err(unavailable));
        self.failed(result).await
    }

    /// One pipeline: the script is loaded first (the server runs a pipeline in order), then
    /// one invocation per counter, each atomic on its own.
    async fn incr_many(
        &self,
        deltas: &[(String, i64)],
        ttl: Option<Duration>,
        quota: Quota,
    ) -> Result<Vec<Option<i64>>, KvError> {
        if deltas.is_empty() {
            return Ok(Vec::new());
        }
        let (op, ttl) = match ttl {
            Some(ttl) => ("incr-touch", millis(ttl)),
            None => ("incr", 0),
        };
        if matches!(self.source, Source::Cluster(_)) {
            // A pipeline goes to one node; the script is loaded on each node as it is used.
            let mut values = Vec::with_capacity(deltas.len());
            for (key, delta) in deltas {
                let size = key.len() as u64 + COUNTER_BYTES;
                let answer = self.invoke(op, key, quota, size, ttl, delta.to_string().as_bytes()).await?;
                values.push(match answer[..] {
                    [0, value] => Some(value),
                    _ => None,
                });
            }
            return Ok(values);
        }
        let now = now_millis();
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(SCRIPT).ignore();
        for (key, delta) in deltas {
            pipe.cmd("EVALSHA")
                .arg(self.script.get_hash())
                .arg(4)
                .arg(&self.script_keys(key)[..])
                .arg(op)
                .arg(now)
                .arg(quota.max_keys)
                .arg(quota.max_bytes)
                .arg(key.len() as u64 + COUNTER_BYTES)
                .arg(ttl)
                .arg(delta);
        }
        let mut connection = self.connection().await?;
        let result = answer(pipe.query_async(&mut connection)).await.and_then(|r| r.map_err(script_error));
        let answers: Vec<Vec<i64>> = self.failed(result).await?;
        Ok(answers
            .into_iter()
            .map(|a| match a[..] {
                [0, value] => Some(value),
                _ => None,
            })
            .collect())
    }

    async fn usage(&self, tenant: &str) -> Result<Usage, KvError> {
        let key = super::kv::namespaced(tenant, "", "");
        match self.invoke("usage", &key, Quota::UNLIMITED, 0, 0, b"").await?[..] {
            [keys, bytes] => Ok(Usage { keys: keys.max(0) as u64, bytes: bytes.max(0) as u64 }),
            _ => Err(KvError::Unavailable("unexpected answer from the key-value server".into())),
        }
    }
}

//! The shared store: Redis or Valkey, so that several relays behind one MX share rate-limit
//! counters and greylisting. Every operation is one atomic command (a counter's increment
//! and its expiry together in one script). The connection is made on first use and made again
//! after the server goes away; while it is away, operations fail at once with
//! [`KvError::Unavailable`] (after the connection timeout), never hang, never crash.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::kv::{KvError, KvStore};

/// How long to wait for a connection or an answer.
const TIMEOUT: Duration = Duration::from_secs(1);

/// INCRBY, and PEXPIRE when the counter has no expiry yet (it was just created).
const INCR: &str = r"
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 and redis.call('PTTL', KEYS[1]) == -1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value";

/// A store on a Redis or Valkey server.
pub struct RedisKv {
    client: redis::Client,
    /// Key prefix: the namespace of this relay's keys on a shared server.
    prefix: String,
    connection: tokio::sync::Mutex<Option<ConnectionManager>>,
    incr: redis::Script,
}

fn unavailable(e: impl std::fmt::Display) -> KvError {
    KvError::Unavailable(e.to_string())
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisKv {
    /// A store on the server at `url` (`redis://host:port/db`; this build has no TLS client for Redis). Nothing
    /// is connected yet; the URL is checked.
    pub fn new(url: &str, prefix: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("{url}: {e}"))?;
        Ok(Self {
            client,
            prefix: prefix.to_string(),
            connection: tokio::sync::Mutex::new(None),
            incr: redis::Script::new(INCR),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, KvError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let connection =
            tokio::time::timeout(TIMEOUT * 3, self.client.get_connection_manager_with_config(config))
                .await
                .map_err(|_| KvError::Unavailable("no connection to the key-value server".into()))?
                .map_err(unavailable)?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Run `f` on the connection, bounded in time.
    async fn run<R>(
        &self,
        f: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<R>,
    ) -> Result<R, KvError> {
        let mut connection = self.connection().await?;
        tokio::time::timeout(TIMEOUT * 2, f(&mut connection))
            .await
            .map_err(|_| KvError::Unavailable("the key-value server did not answer in time".into()))?
            .map_err(unavailable)
    }
}

#[async_trait::async_trait]
impl KvStore for RedisKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let key = self.key(key);
        self.run(async |c| redis::cmd("GET").arg(&key).query_async(c).await).await
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), KvError> {
        let key = self.key(key);
        self.run(async |c| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key).arg(value);
            if let Some(ttl) = ttl {
                cmd.arg("PX").arg(millis(ttl));
            }
            cmd.query_async(c).await
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        let key = self.key(key);
        self.run(async |c| redis::cmd("DEL").arg(&key).query_async::<i64>(c).await.map(|_| ())).await
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, KvError> {
        let key = self.key(key);
        let ttl = ttl.map_or(0, millis);
        self.run(async |c| self.incr.key(&key).arg(delta).arg(ttl).invoke_async(c).await).await
    }
}

//! The host's key-value store, for state that outlives a session: counters, greylisting
//! triplets, caches. Keys are private: the host prefixes them with the tenant and the policy
//! name, so no policy can read or overwrite another's keys whatever names it uses.

use crate::__bindings::sluice::policy::host::{self, KvError as RawError};

/// Why a key-value operation failed.
#[derive(Debug, Clone, PartialEq)]
pub enum KvError {
    /// The tenant's quota of keys or bytes would be exceeded.
    QuotaExceeded,
    /// Key or value too large.
    TooLarge,
    /// The operation does not apply (`incr` of a value that is not a counter). An unreachable
    /// store never shows up here: the host ends the call and the tenant's failure mode applies.
    Unavailable(String),
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvError::QuotaExceeded => f.write_str("key-value quota exceeded"),
            KvError::TooLarge => f.write_str("key or value too large"),
            KvError::Unavailable(why) => write!(f, "key-value operation failed: {why}"),
        }
    }
}

impl std::error::Error for KvError {}

fn convert(e: RawError) -> KvError {
    match e {
        RawError::QuotaExceeded => KvError::QuotaExceeded,
        RawError::TooLarge => KvError::TooLarge,
        RawError::Unavailable(why) => KvError::Unavailable(why),
    }
}

/// Read a key.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    host::kv_get(key).map_err(convert)
}

/// Write a key, expiring after `ttl_seconds` when given.
pub fn set(key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), KvError> {
    host::kv_set(key, value, ttl_seconds).map_err(convert)
}

/// Delete a key.
pub fn delete(key: &str) -> Result<(), KvError> {
    host::kv_delete(key).map_err(convert)
}

/// Atomically add `delta` to a counter and return the new value; `ttl_seconds` applies when
/// the counter is created, so a fixed window is `incr(key, 1, Some(window))`.
pub fn incr(key: &str, delta: i64, ttl_seconds: Option<u32>) -> Result<i64, KvError> {
    host::kv_incr(key, delta, ttl_seconds).map_err(convert)
}

/// Most keys one batched call ([`get_many`], [`incr_many`]) may name.
pub const MAX_BATCH_KEYS: usize = 4096;

/// Read up to [`MAX_BATCH_KEYS`] keys at once (one round trip to a shared store); the answers
/// come in the order of `keys`.
pub fn get_many(keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
    host::kv_get_many(keys).map_err(convert)
}

/// Add to up to [`MAX_BATCH_KEYS`] counters at once, each atomically (missing counts as 0),
/// and return their new values in order. A `ttl_seconds` given here is set on every counter of
/// the call, new or not (unlike [`incr`], which sets it on creation only): counters that keep
/// changing stay, the others expire. A counter the tenant's quota has no room to create is
/// not created: its answer is `None`.
pub fn incr_many(deltas: &[(String, i64)], ttl_seconds: Option<u32>) -> Result<Vec<Option<i64>>, KvError> {
    host::kv_incr_many(deltas, ttl_seconds).map_err(convert)
}

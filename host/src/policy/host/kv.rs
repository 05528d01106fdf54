//! `kv-get`, `kv-set`, `kv-delete`, `kv-incr`: the policy's key-value store. Keys are
//! namespaced here by tenant and policy before any backend sees them, sizes are checked, the
//! tenant's quota goes with every write, and the time spent waiting on the store is not
//! counted against the call's CPU deadline.

use std::time::Duration;

use crate::policy::bindings::host::KvError as GuestKvError;
use crate::policy::instance::{HostState, StateUnavailable};
use crate::state::kv::{self, KvError};

/// A store answer as the guest sees it. An unreachable store ends the call (a trap the host
/// classifies as [`crate::policy::Fault::State`]): the tenant's failure mode decides, not a
/// policy that might read "no counter" as "no limit".
fn answer<T>(answer: Result<T, KvError>) -> wasmtime::Result<Result<T, GuestKvError>> {
    match answer {
        Ok(v) => Ok(Ok(v)),
        Err(KvError::QuotaExceeded) => Ok(Err(GuestKvError::QuotaExceeded)),
        Err(KvError::TooLarge) => Ok(Err(GuestKvError::TooLarge)),
        Err(KvError::Invalid(why)) => Ok(Err(GuestKvError::Unavailable(why))),
        Err(KvError::Unavailable(why)) => Err(wasmtime::Error::new(StateUnavailable(why))),
    }
}

/// The key as the backend stores it.
fn key(state: &HostState, key: &str) -> Result<String, GuestKvError> {
    if key.len() > kv::MAX_KEY_BYTES {
        return Err(GuestKvError::TooLarge);
    }
    Ok(kv::namespaced(&state.io.tenant, &state.io.policy, key))
}

fn ttl(seconds: Option<u32>) -> Option<Duration> {
    seconds.filter(|s| *s > 0).map(|s| Duration::from_secs(u64::from(s)))
}

pub(super) async fn get(
    state: &mut HostState,
    name: &str,
) -> wasmtime::Result<Result<Option<Vec<u8>>, GuestKvError>> {
    let key = match key(state, name) {
        Ok(key) => key,
        Err(e) => return Ok(Err(e)),
    };
    let io = state.io.clone();
    answer(state.budget.wait_on(io.tick, io.services.kv.get(&key)).await)
}

pub(super) async fn set(
    state: &mut HostState,
    name: &str,
    value: Vec<u8>,
    ttl_seconds: Option<u32>,
) -> wasmtime::Result<Result<(), GuestKvError>> {
    let key = match key(state, name) {
        Ok(key) => key,
        Err(e) => return Ok(Err(e)),
    };
    if value.len() > kv::MAX_VALUE_BYTES {
        return Ok(Err(GuestKvError::TooLarge));
    }
    let io = state.io.clone();
    let write = io.services.kv.set(&key, value, ttl(ttl_seconds), io.limits.kv_quota);
    answer(state.budget.wait_on(io.tick, write).await)
}

pub(super) async fn delete(state: &mut HostState, name: &str) -> wasmtime::Result<Result<(), GuestKvError>> {
    let key = match key(state, name) {
        Ok(key) => key,
        Err(e) => return Ok(Err(e)),
    };
    let io = state.io.clone();
    answer(state.budget.wait_on(io.tick, io.services.kv.delete(&key)).await)
}

pub(super) async fn incr(
    state: &mut HostState,
    name: &str,
    delta: i64,
    ttl_seconds: Option<u32>,
) -> wasmtime::Result<Result<i64, GuestKvError>> {
    let key = match key(state, name) {
        Ok(key) => key,
        Err(e) => return Ok(Err(e)),
    };
    let io = state.io.clone();
    let write = io.services.kv.incr(&key, delta, ttl(ttl_seconds), io.limits.kv_quota);
    answer(state.budget.wait_on(io.tick, write).await)
}

/// The keys of a batched call as the backend stores them; too many, or one too long, is
/// `too-large`.
fn keys<'a>(
    state: &HostState,
    names: impl ExactSizeIterator<Item = &'a str>,
) -> Result<Vec<String>, GuestKvError> {
    if names.len() > kv::MAX_BATCH_KEYS {
        return Err(GuestKvError::TooLarge);
    }
    names.map(|name| key(state, name)).collect()
}

pub(super) async fn get_many(
    state: &mut HostState,
    names: &[String],
) -> wasmtime::Result<Result<Vec<Option<Vec<u8>>>, GuestKvError>> {
    let keys = match keys(state, names.iter().map(String::as_str)) {
        Ok(keys) => keys,
        Err(e) => return Ok(Err(e)),
    };
    let io = state.io.clone();
    answer(state.budget.wait_on(io.tick, io.services.kv.get_many(&keys)).await)
}

pub(super) async fn incr_many(
    state: &mut HostState,
    deltas: Vec<(String, i64)>,
    ttl_seconds: Option<u32>,
) -> wasmtime::Result<Result<Vec<Option<i64>>, GuestKvError>> {
    let keys = match keys(state, deltas.iter().map(|(name, _)| name.as_str())) {
        Ok(keys) => keys,
        Err(e) => return Ok(Err(e)),
    };
    let deltas: Vec<(String, i64)> = keys.into_iter().zip(deltas.into_iter().map(|(_, d)| d)).collect();
    let io = state.io.clone();
    let write = io.services.kv.incr_many(&deltas, ttl(ttl_seconds), io.limits.kv_quota);
    answer(state.budget.wait_on(io.tick, write).await)
}

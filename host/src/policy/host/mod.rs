//! The capabilities the host gives policies (the WIT `host` interface) and the `message`
//! resource, one module per capability. Each one is bounded: log bytes and DNS lookups per
//! call, key and value sizes, raw reads.

mod clock;
mod config;
mod dns;
mod kv;
mod log;
mod message;
mod v0_1;

pub use clock::Clock;
pub use log::LOG_BYTES_PER_CALL;

use super::bindings::host;
use super::instance::HostState;

impl host::Host for HostState {
    async fn log(
        &mut self,
        level: host::LogLevel,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        log::write(self, level, &message, &fields);
        Ok(())
    }

    async fn config_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(config::get(self, &key))
    }

    async fn config_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(config::all(self))
    }

    async fn now_millis(&mut self) -> wasmtime::Result<i64> {
        Ok(self.io.services.clock.now_millis())
    }

    async fn kv_get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, host::KvError>> {
        kv::get(self, &key).await
    }

    async fn kv_set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), host::KvError>> {
        kv::set(self, &key, value, ttl_seconds).await
    }

    async fn kv_delete(&mut self, key: String) -> wasmtime::Result<Result<(), host::KvError>> {
        kv::delete(self, &key).await
    }

    async fn kv_incr(
        &mut self,
        key: String,
        delta: i64,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<i64, host::KvError>> {
        kv::incr(self, &key, delta, ttl_seconds).await
    }

    async fn kv_get_many(
        &mut self,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<Vec<u8>>>, host::KvError>> {
        kv::get_many(self, &keys).await
    }

    async fn kv_incr_many(
        &mut self,
        deltas: Vec<(String, i64)>,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<Vec<Option<i64>>, host::KvError>> {
        kv::incr_many(self, deltas, ttl_seconds).await
    }

    async fn dns_lookup(
        &mut self,
        name: String,
        kind: host::DnsType,
    ) -> wasmtime::Result<Result<Vec<String>, host::DnsError>> {
        Ok(dns::lookup(self, &name, kind).await)
    }
}

//! State that outlives a session: the key-value store behind the policies' `kv-*` imports.

#[doc(hidden)]
pub mod conformance;
pub mod kv;
pub mod redb_kv;
pub mod redis_kv;
mod redis_source;

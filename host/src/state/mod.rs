//! State that outlives a session: the key-value store behind the policies' `kv-*` imports.

pub mod kv;
pub mod redb_kv;
pub mod redis_kv;

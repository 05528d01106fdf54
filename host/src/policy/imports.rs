//! The capabilities the host gives policies (the WIT `host` interface) and the `message`
//! resource. Each one is bounded: log bytes and DNS lookups per call, key and value sizes,
//! raw reads. Keys are namespaced here, before any backend sees them.

use std::time::Duration;

use wasmtime::component::Resource;

use super::bindings::{host, types as wit};
use super::instance::{HostState, StateUnavailable};
use super::message::{MAX_RAW_READ, Mailbox, MessageHandle, truncate_utf8};
use crate::dns::{DnsError, RecordType};
use crate::state::kv::{self, KvError};

/// Log bytes one hook call may write; beyond it lines are dropped (and that is logged once).
pub const LOG_BYTES_PER_CALL: usize = 16 * 1024;

fn mailboxes(list: &[Mailbox]) -> Vec<wit::Mailbox> {
    list.iter().map(|m| wit::Mailbox { name: m.name.clone(), address: m.address.clone() }).collect()
}

impl wit::Host for HostState {}

impl wit::HostMessage for HostState {
    async fn header(
        &mut self,
        this: Resource<MessageHandle>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&this)?.0.header(&name).map(str::to_string))
    }

    async fn header_all(
        &mut self,
        this: Resource<MessageHandle>,
        name: String,
    ) -> wasmtime::Result<Vec<String>> {
        Ok(self.table.get(&this)?.0.header_all(&name))
    }

    async fn headers(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<wit::Header>> {
        let message = &self.table.get(&this)?.0;
        Ok(message.headers().iter().map(|(n, v)| wit::Header { name: n.clone(), value: v.clone() }).collect())
    }

    async fn subject(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&this)?.0.subject().map(str::to_string))
    }

    async fn from(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<wit::Mailbox>> {
        Ok(mailboxes(self.table.get(&this)?.0.from()))
    }

    async fn to(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<wit::Mailbox>> {
        Ok(mailboxes(self.table.get(&this)?.0.to()))
    }

    async fn cc(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<wit::Mailbox>> {
        Ok(mailboxes(self.table.get(&this)?.0.cc()))
    }

    async fn reply_to(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<wit::Mailbox>> {
        Ok(mailboxes(self.table.get(&this)?.0.reply_to()))
    }

    async fn date(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Option<i64>> {
        Ok(self.table.get(&this)?.0.date())
    }

    async fn message_id(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&this)?.0.message_id().map(str::to_string))
    }

    async fn text_body(
        &mut self,
        this: Resource<MessageHandle>,
        max_bytes: u32,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&this)?.0.text_body().map(|t| truncate_utf8(t, max_bytes)))
    }

    async fn html_body(
        &mut self,
        this: Resource<MessageHandle>,
        max_bytes: u32,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&this)?.0.html_body().map(|t| truncate_utf8(t, max_bytes)))
    }

    async fn attachments(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<wit::Attachment>> {
        let message = &self.table.get(&this)?.0;
        Ok(message
            .attachments()
            .iter()
            .map(|a| wit::Attachment {
                name: a.name.clone(),
                content_type: a.content_type.clone(),
                size: a.size,
            })
            .collect())
    }

    async fn raw_size(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&this)?.0.raw().len() as u64)
    }

    async fn raw(
        &mut self,
        this: Resource<MessageHandle>,
        offset: u64,
        length: u32,
    ) -> wasmtime::Result<Vec<u8>> {
        let raw = self.table.get(&this)?.0.raw();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(raw.len());
        let end = start.saturating_add(length.min(MAX_RAW_READ) as usize).min(raw.len());
        Ok(raw[start..end].to_vec())
    }

    async fn drop(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<()> {
        // The host owns every message handle and deletes it after the call; a guest drop of
        // an owned handle (which it never receives) is harmless.
        if this.owned() {
            self.table.delete(this)?;
        }
        Ok(())
    }
}

/// A store answer as the guest sees it. An unreachable store ends the call (a trap the host
/// classifies as [`super::instance::Fault::State`]): the tenant's failure mode decides, not a
/// policy that might read "no counter" as "no limit".
fn kv_answer<T>(answer: Result<T, KvError>) -> wasmtime::Result<Result<T, host::KvError>> {
    match answer {
        Ok(v) => Ok(Ok(v)),
        Err(KvError::QuotaExceeded) => Ok(Err(host::KvError::QuotaExceeded)),
        Err(KvError::TooLarge) => Ok(Err(host::KvError::TooLarge)),
        Err(KvError::Invalid(why)) => Ok(Err(host::KvError::Unavailable(why))),
        Err(KvError::Unavailable(why)) => Err(wasmtime::Error::new(StateUnavailable(why))),
    }
}

impl HostState {
    fn kv_key(&self, key: &str) -> Result<String, host::KvError> {
        if key.len() > kv::MAX_KEY_BYTES {
            return Err(host::KvError::TooLarge);
        }
        Ok(kv::namespaced(&self.io.tenant, &self.io.policy, key))
    }
}

fn ttl(seconds: Option<u32>) -> Option<Duration> {
    seconds.filter(|s| *s > 0).map(|s| Duration::from_secs(u64::from(s)))
}

impl host::Host for HostState {
    async fn log(
        &mut self,
        level: host::LogLevel,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let size = message.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if self.budget.log_bytes + size > LOG_BYTES_PER_CALL {
            self.budget.log_truncated = true;
            return Ok(());
        }
        self.budget.log_bytes += size;
        let message = truncate_utf8(&message, 2048);
        let fields = fields.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(" ");
        let (policy, tenant) = (&self.io.policy, &self.io.tenant);
        match level {
            host::LogLevel::Trace => {
                tracing::trace!(policy = %policy, tenant = %tenant, fields = %fields, "{message}")
            }
            host::LogLevel::Debug => {
                tracing::debug!(policy = %policy, tenant = %tenant, fields = %fields, "{message}")
            }
            host::LogLevel::Info => {
                tracing::info!(policy = %policy, tenant = %tenant, fields = %fields, "{message}")
            }
            host::LogLevel::Warn => {
                tracing::warn!(policy = %policy, tenant = %tenant, fields = %fields, "{message}")
            }
            host::LogLevel::Error => {
                tracing::error!(policy = %policy, tenant = %tenant, fields = %fields, "{message}")
            }
        }
        Ok(())
    }

    async fn config_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.io.config.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| v.clone()))
    }

    async fn config_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.io.config.clone())
    }

    async fn now_millis(&mut self) -> wasmtime::Result<i64> {
        Ok(self.io.services.clock.now_millis())
    }

    async fn kv_get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, host::KvError>> {
        let key = match self.kv_key(&key) {
            Ok(key) => key,
            Err(e) => return Ok(Err(e)),
        };
        let answer = self.budget.wait_on(self.io.tick, self.io.services.kv.get(&key)).await;
        kv_answer(answer)
    }

    async fn kv_set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), host::KvError>> {
        let key = match self.kv_key(&key) {
            Ok(key) => key,
            Err(e) => return Ok(Err(e)),
        };
        if value.len() > kv::MAX_VALUE_BYTES {
            return Ok(Err(host::KvError::TooLarge));
        }
        let answer = self
            .budget
            .wait_on(
                self.io.tick,
                self.io.services.kv.set(&key, value, ttl(ttl_seconds), self.io.limits.kv_quota),
            )
            .await;
        kv_answer(answer)
    }

    async fn kv_delete(&mut self, key: String) -> wasmtime::Result<Result<(), host::KvError>> {
        let key = match self.kv_key(&key) {
            Ok(key) => key,
            Err(e) => return Ok(Err(e)),
        };
        let answer = self.budget.wait_on(self.io.tick, self.io.services.kv.delete(&key)).await;
        kv_answer(answer)
    }

    async fn kv_incr(
        &mut self,
        key: String,
        delta: i64,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<i64, host::KvError>> {
        let key = match self.kv_key(&key) {
            Ok(key) => key,
            Err(e) => return Ok(Err(e)),
        };
        let answer = self
            .budget
            .wait_on(
                self.io.tick,
                self.io.services.kv.incr(&key, delta, ttl(ttl_seconds), self.io.limits.kv_quota),
            )
            .await;
        kv_answer(answer)
    }

    async fn dns_lookup(
        &mut self,
        name: String,
        kind: host::DnsType,
    ) -> wasmtime::Result<Result<Vec<String>, host::DnsError>> {
        if self.budget.dns_lookups >= self.io.limits.dns_lookups_per_call {
            return Ok(Err(host::DnsError::BudgetExceeded));
        }
        self.budget.dns_lookups += 1;
        if name.is_empty() || name.len() > 253 {
            return Ok(Err(host::DnsError::Failed("invalid name".into())));
        }
        let kind = match kind {
            host::DnsType::A => RecordType::A,
            host::DnsType::Aaaa => RecordType::Aaaa,
            host::DnsType::Txt => RecordType::Txt,
            host::DnsType::Mx => RecordType::Mx,
            host::DnsType::Ptr => RecordType::Ptr,
        };
        let lookup = self.io.services.resolver.lookup(&name, kind);
        let answer =
            self.budget.wait_on(self.io.tick, tokio::time::timeout(self.io.limits.dns_timeout, lookup)).await;
        let answer = match answer {
            Err(_) | Ok(Err(DnsError::Timeout)) => Err(host::DnsError::Timeout),
            Ok(Err(DnsError::NxDomain)) => Err(host::DnsError::Nxdomain),
            Ok(Err(DnsError::Failed(why))) => Err(host::DnsError::Failed(why)),
            Ok(Ok(records)) => Ok(records),
        };
        Ok(answer)
    }
}

//! The imports of components built against interface version 0.1.0, served by the 0.2.0
//! code: the same functions, the types converted. (0.1.0 lacks only the sender checks.)

use wasmtime::component::Resource;

use super::super::bindings::v0_1::{host as old_host, types as old};
use super::super::bindings::{host, types as wit};
use crate::policy::instance::HostState;
use crate::policy::message::MessageHandle;

impl old::Host for HostState {}

fn mailboxes(list: Vec<wit::Mailbox>) -> Vec<old::Mailbox> {
    list.into_iter().map(|m| old::Mailbox { name: m.name, address: m.address }).collect()
}

impl old::HostMessage for HostState {
    async fn header(
        &mut self,
        this: Resource<MessageHandle>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        wit::HostMessage::header(self, this, name).await
    }

    async fn header_all(
        &mut self,
        this: Resource<MessageHandle>,
        name: String,
    ) -> wasmtime::Result<Vec<String>> {
        wit::HostMessage::header_all(self, this, name).await
    }

    async fn headers(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<old::Header>> {
        let list = wit::HostMessage::headers(self, this).await?;
        Ok(list.into_iter().map(|h| old::Header { name: h.name, value: h.value }).collect())
    }

    async fn subject(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Option<String>> {
        wit::HostMessage::subject(self, this).await
    }

    async fn from(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<old::Mailbox>> {
        Ok(mailboxes(wit::HostMessage::from(self, this).await?))
    }

    async fn to(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<old::Mailbox>> {
        Ok(mailboxes(wit::HostMessage::to(self, this).await?))
    }

    async fn cc(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<old::Mailbox>> {
        Ok(mailboxes(wit::HostMessage::cc(self, this).await?))
    }

    async fn reply_to(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<old::Mailbox>> {
        Ok(mailboxes(wit::HostMessage::reply_to(self, this).await?))
    }

    async fn date(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Option<i64>> {
        wit::HostMessage::date(self, this).await
    }

    async fn message_id(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Option<String>> {
        wit::HostMessage::message_id(self, this).await
    }

    async fn text_body(
        &mut self,
        this: Resource<MessageHandle>,
        max: u32,
    ) -> wasmtime::Result<Option<String>> {
        wit::HostMessage::text_body(self, this, max).await
    }

    async fn html_body(
        &mut self,
        this: Resource<MessageHandle>,
        max: u32,
    ) -> wasmtime::Result<Option<String>> {
        wit::HostMessage::html_body(self, this, max).await
    }

    async fn attachments(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<old::Attachment>> {
        let list = wit::HostMessage::attachments(self, this).await?;
        Ok(list
            .into_iter()
            .map(|a| old::Attachment { name: a.name, content_type: a.content_type, size: a.size })
            .collect())
    }

    async fn raw_size(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<u64> {
        wit::HostMessage::raw_size(self, this).await
    }

    async fn raw(
        &mut self,
        this: Resource<MessageHandle>,
        offset: u64,
        length: u32,
    ) -> wasmtime::Result<Vec<u8>> {
        wit::HostMessage::raw(self, this, offset, length).await
    }

    async fn drop(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<()> {
        wit::HostMessage::drop(self, this).await
    }
}

fn kv_error(e: host::KvError) -> old_host::KvError {
    match e {
        host::KvError::QuotaExceeded => old_host::KvError::QuotaExceeded,
        host::KvError::TooLarge => old_host::KvError::TooLarge,
        host::KvError::Unavailable(why) => old_host::KvError::Unavailable(why),
    }
}

impl old_host::Host for HostState {
    async fn log(
        &mut self,
        level: old_host::LogLevel,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let level = match level {
            old_host::LogLevel::Trace => host::LogLevel::Trace,
            old_host::LogLevel::Debug => host::LogLevel::Debug,
            old_host::LogLevel::Info => host::LogLevel::Info,
            old_host::LogLevel::Warn => host::LogLevel::Warn,
            old_host::LogLevel::Error => host::LogLevel::Error,
        };
        host::Host::log(self, level, message, fields).await
    }

    async fn config_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        host::Host::config_get(self, key).await
    }

    async fn config_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        host::Host::config_all(self).await
    }

    async fn now_millis(&mut self) -> wasmtime::Result<i64> {
        host::Host::now_millis(self).await
    }

    async fn kv_get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, old_host::KvError>> {
        Ok(host::Host::kv_get(self, key).await?.map_err(kv_error))
    }

    async fn kv_set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), old_host::KvError>> {
        Ok(host::Host::kv_set(self, key, value, ttl_seconds).await?.map_err(kv_error))
    }

    async fn kv_delete(&mut self, key: String) -> wasmtime::Result<Result<(), old_host::KvError>> {
        Ok(host::Host::kv_delete(self, key).await?.map_err(kv_error))
    }

    async fn kv_incr(
        &mut self,
        key: String,
        delta: i64,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<i64, old_host::KvError>> {
        Ok(host::Host::kv_incr(self, key, delta, ttl_seconds).await?.map_err(kv_error))
    }

    async fn dns_lookup(
        &mut self,
        name: String,
        kind: old_host::DnsType,
    ) -> wasmtime::Result<Result<Vec<String>, old_host::DnsError>> {
        let kind = match kind {
            old_host::DnsType::A => host::DnsType::A,
            old_host::DnsType::Aaaa => host::DnsType::Aaaa,
            old_host::DnsType::Txt => host::DnsType::Txt,
            old_host::DnsType::Mx => host::DnsType::Mx,
            old_host::DnsType::Ptr => host::DnsType::Ptr,
        };
        Ok(host::Host::dns_lookup(self, name, kind).await?.map_err(|e| match e {
            host::DnsError::Nxdomain => old_host::DnsError::Nxdomain,
            host::DnsError::Timeout => old_host::DnsError::Timeout,
            host::DnsError::BudgetExceeded => old_host::DnsError::BudgetExceeded,
            host::DnsError::Failed(why) => old_host::DnsError::Failed(why),
        }))
    }
}

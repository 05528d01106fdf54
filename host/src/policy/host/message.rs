//! The `message` resource: what a policy reads of the message at the data stage. The host
//! parses each message once ([`crate::policy::ParsedMessage`]); every read is bounded.

use wasmtime::component::Resource;

use crate::policy::bindings::types as wit;
use crate::policy::instance::HostState;
use crate::policy::message::{MAX_RAW_READ, Mailbox, MessageHandle, truncate_utf8};
use crate::sender::{DmarcPolicy, SenderChecks, SpfCheck, Verdict};

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

    async fn sender_checks(
        &mut self,
        this: Resource<MessageHandle>,
    ) -> wasmtime::Result<Option<wit::SenderChecks>> {
        Ok(self.table.get(&this)?.0.sender().map(sender_checks))
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

fn result(verdict: Verdict) -> wit::CheckResult {
    match verdict {
        Verdict::None => wit::CheckResult::None,
        Verdict::Pass => wit::CheckResult::Pass,
        Verdict::Fail => wit::CheckResult::Fail,
        Verdict::Softfail => wit::CheckResult::Softfail,
        Verdict::Neutral => wit::CheckResult::Neutral,
        Verdict::Temperror => wit::CheckResult::Temperror,
        Verdict::Permerror => wit::CheckResult::Permerror,
    }
}

fn spf(check: &SpfCheck) -> wit::SpfCheck {
    wit::SpfCheck { result: result(check.result), domain: check.domain.clone() }
}

/// The checks as the WIT `sender-checks` record.
fn sender_checks(checks: &SenderChecks) -> wit::SenderChecks {
    let dmarc = &checks.dmarc;
    wit::SenderChecks {
        spf: spf(&checks.spf),
        helo: spf(&checks.helo),
        dkim: checks
            .dkim
            .iter()
            .map(|d| wit::DkimCheck {
                result: result(d.result),
                domain: d.domain.clone(),
                selector: d.selector.clone(),
                algorithm: d.algorithm.clone(),
                reason: d.reason.clone(),
            })
            .collect(),
        dmarc: wit::DmarcCheck {
            result: result(dmarc.result),
            domain: dmarc.domain.clone(),
            policy: dmarc.policy.map(|p| match p {
                DmarcPolicy::None => wit::DmarcPolicy::None,
                DmarcPolicy::Quarantine => wit::DmarcPolicy::Quarantine,
                DmarcPolicy::Reject => wit::DmarcPolicy::Reject,
            }),
            pct: dmarc.pct,
            spf_aligned: dmarc.spf_aligned,
            dkim_aligned: dmarc.dkim_aligned,
            spf_strict: dmarc.spf_strict,
            dkim_strict: dmarc.dkim_strict,
        },
        arc: wit::ArcCheck { result: result(checks.arc.result), sealers: checks.arc.sealers.clone() },
    }
}

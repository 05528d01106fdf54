//! The message at the data stage: a view over the copy the host parsed once and shares with
//! every policy of the chain. Each method is one call into the host.

use crate::__bindings::sluice::policy::types as raw;

/// One header field.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Field name as written.
    pub name: String,
    /// Unfolded, decoded value.
    pub value: String,
}

/// A mailbox from From/To/Cc/Reply-To.
#[derive(Debug, Clone, PartialEq)]
pub struct Mailbox {
    /// Display name.
    pub name: Option<String>,
    /// Address.
    pub address: Option<String>,
}

impl Mailbox {
    /// Domain of the address, lower-cased.
    pub fn domain(&self) -> Option<String> {
        self.address.as_deref().and_then(crate::envelope::domain_of)
    }
}

/// An attachment.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    /// File name, if given.
    pub name: Option<String>,
    /// Content type.
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: u64,
}

/// The parsed message, valid for the duration of [`crate::Policy::on_data`].
pub struct Message<'a> {
    inner: &'a raw::Message,
}

fn mailboxes(list: Vec<raw::Mailbox>) -> Vec<Mailbox> {
    list.into_iter().map(|m| Mailbox { name: m.name, address: m.address }).collect()
}

impl<'a> Message<'a> {
    pub(crate) fn new(inner: &'a raw::Message) -> Self {
        Self { inner }
    }

    /// First value of the named header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.inner.header(name)
    }

    /// Every value of the named header, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.inner.header_all(name)
    }

    /// All header fields, in order.
    pub fn headers(&self) -> Vec<Header> {
        self.inner.headers().into_iter().map(|h| Header { name: h.name, value: h.value }).collect()
    }

    /// Decoded subject.
    pub fn subject(&self) -> Option<String> {
        self.inner.subject()
    }

    /// From mailboxes.
    pub fn from(&self) -> Vec<Mailbox> {
        mailboxes(self.inner.from())
    }

    /// To mailboxes.
    pub fn to(&self) -> Vec<Mailbox> {
        mailboxes(self.inner.to())
    }

    /// Cc mailboxes.
    pub fn cc(&self) -> Vec<Mailbox> {
        mailboxes(self.inner.cc())
    }

    /// Reply-To mailboxes.
    pub fn reply_to(&self) -> Vec<Mailbox> {
        mailboxes(self.inner.reply_to())
    }

    /// Date as Unix seconds, if present and valid.
    pub fn date(&self) -> Option<i64> {
        self.inner.date()
    }

    /// Message-ID without brackets.
    pub fn message_id(&self) -> Option<String> {
        self.inner.message_id()
    }

    /// Plain-text body, at most `max_bytes` bytes.
    pub fn text_body(&self, max_bytes: u32) -> Option<String> {
        self.inner.text_body(max_bytes)
    }

    /// HTML body, at most `max_bytes` bytes.
    pub fn html_body(&self, max_bytes: u32) -> Option<String> {
        self.inner.html_body(max_bytes)
    }

    /// Attachments.
    pub fn attachments(&self) -> Vec<Attachment> {
        self.inner
            .attachments()
            .into_iter()
            .map(|a| Attachment { name: a.name, content_type: a.content_type, size: a.size })
            .collect()
    }

    /// Raw size in bytes.
    pub fn raw_size(&self) -> u64 {
        self.inner.raw_size()
    }

    /// Up to `length` raw bytes from `offset` (the host caps one read at 1 MiB).
    pub fn raw(&self, offset: u64, length: u32) -> Vec<u8> {
        self.inner.raw(offset, length)
    }

    /// What the relay found of the sender (SPF, DKIM, DMARC, ARC); `None` for mail the
    /// tenant sends out, which is signed rather than checked. A policy that calls this makes
    /// the relay check its tenant's inbound mail (interface 0.2.0).
    pub fn sender_checks(&self) -> Option<crate::SenderChecks> {
        self.inner.sender_checks().map(Into::into)
    }
}

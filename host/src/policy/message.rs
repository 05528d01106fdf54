//! The message handed to policies at the data stage. The relay parses the received bytes once
//! (mail-parser, as leniently as it allows) into a [`ParsedMessage`] that every policy of the
//! chain reads through the `message` resource; nothing is parsed again per policy.

use std::borrow::Cow;
use std::sync::Arc;

use mail_parser::{Address, HeaderValue, MessageParser, MessagePart, MimeHeaders};

/// Largest slice of the raw message one `raw` call may return.
pub const MAX_RAW_READ: u32 = 1024 * 1024;

/// One mailbox of an address header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// Display name.
    pub name: Option<String>,
    /// Address.
    pub address: Option<String>,
}

/// One attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// File name, if given.
    pub name: Option<String>,
    /// Content type, `type/subtype`.
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: u64,
}

/// A received message, parsed once. Cheap to share: clone the [`Arc`].
#[derive(Debug)]
pub struct ParsedMessage {
    raw: Arc<[u8]>,
    headers: Vec<(String, String)>,
    subject: Option<String>,
    from: Vec<Mailbox>,
    to: Vec<Mailbox>,
    cc: Vec<Mailbox>,
    reply_to: Vec<Mailbox>,
    date: Option<i64>,
    message_id: Option<String>,
    text_body: Option<String>,
    html_body: Option<String>,
    attachments: Vec<Attachment>,
    sender: Option<Arc<crate::sender::SenderChecks>>,
}

/// The handle type behind the WIT `message` resource: a reference to the shared parse.
pub struct MessageHandle(pub Arc<ParsedMessage>);

fn mailboxes(address: Option<&Address<'_>>) -> Vec<Mailbox> {
    let Some(address) = address else { return Vec::new() };
    address
        .iter()
        .map(|a| Mailbox { name: a.name().map(str::to_string), address: a.address().map(str::to_string) })
        .collect()
}

/// Unfold a raw header value: CRLF/LF followed by white space becomes one space; trimmed.
/// The text of a part mail-parser could not decode (it keeps such parts raw): base64 is
/// decoded up to the first line that is not base64 (a list footer appended to the encoded
/// body, a missing closing boundary), then the declared charset is applied.
fn recover_text(part: &MessagePart<'_>) -> String {
    let base64 = part.content_transfer_encoding().is_some_and(|e| e.trim().eq_ignore_ascii_case("base64"));
    let bytes = part.contents();
    let decoded;
    let bytes = if base64 {
        let encoded: Vec<u8> = bytes
            .split(|&b| b == b'\n')
            .map(<[u8]>::trim_ascii)
            .skip_while(|line| line.is_empty())
            .take_while(|line| {
                !line.is_empty()
                    && line.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            })
            .flatten()
            .copied()
            .collect();
        let usable = encoded.len() / 4 * 4;
        match mail_parser::decoders::base64::base64_decode(&encoded[..usable]) {
            Some(bytes) => {
                decoded = bytes;
                &decoded[..]
            }
            None => bytes,
        }
    } else {
        bytes
    };
    let charset = part.content_type().and_then(|ct| ct.attribute("charset"));
    match charset.and_then(|c| mail_parser::decoders::charsets::map::charset_decoder(c.as_bytes())) {
        Some(decode) => decode(bytes),
        None => decode_legacy(bytes),
    }
}

/// Bytes of a text part mail-parser did not decode: UTF-8 if they are, else one character
/// per byte (ISO 8859-1), so nothing is lost to replacement characters.
fn decode_legacy(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

fn unfold(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut pending_space = false;
    for c in raw.chars() {
        if c == '\r' || c == '\n' {
            pending_space = true;
            continue;
        }
        if pending_space {
            if !out.ends_with(' ') && !c.is_whitespace() {
                out.push(' ');
            }
            pending_space = false;
        }
        out.push(c);
    }
    out.trim().to_string()
}

impl ParsedMessage {
    /// The same message carrying what the checks of its sender found.
    pub fn with_sender(mut self, sender: Option<Arc<crate::sender::SenderChecks>>) -> Self {
        self.sender = sender;
        self
    }

    /// What the checks of its sender found (none for mail sent out, or when no one asked).
    pub fn sender(&self) -> Option<&crate::sender::SenderChecks> {
        self.sender.as_deref()
    }

    /// Parse `raw` leniently. Never fails and never panics: bytes that are not a message at
    /// all give a message with no headers and the whole input as its raw form. mail-parser
    /// can panic on some malformed MIME structures; such a message is parsed again for its
    /// headers only, and failing that, handed over unparsed.
    pub fn parse(raw: impl Into<Arc<[u8]>>) -> Self {
        let raw: Arc<[u8]> = raw.into();
        let why = match crate::panics::contain(|| Self::parse_with(raw.clone(), false)) {
            Ok(parsed) => return parsed,
            Err(why) => why,
        };
        tracing::warn!(
            bytes = raw.len(),
            "the MIME parser failed on this message ({why}); policies get its headers only"
        );
        crate::panics::contain(|| Self::parse_with(raw.clone(), true)).unwrap_or_else(|_| Self::unparsed(raw))
    }

    /// Parse only the header of `raw` (for its addresses), leniently, like [`Self::parse`].
    pub fn parse_headers(raw: impl Into<Arc<[u8]>>) -> Self {
        let raw: Arc<[u8]> = raw.into();
        crate::panics::contain(|| Self::parse_with(raw.clone(), true)).unwrap_or_else(|_| Self::unparsed(raw))
    }

    fn unparsed(raw: Arc<[u8]>) -> Self {
        Self {
            raw,
            headers: Vec::new(),
            subject: None,
            from: Vec::new(),
            to: Vec::new(),
            cc: Vec::new(),
            reply_to: Vec::new(),
            date: None,
            message_id: None,
            text_body: None,
            html_body: None,
            attachments: Vec::new(),
            sender: None,
        }
    }

    fn parse_with(raw: Arc<[u8]>, headers_only: bool) -> Self {
        let parser = MessageParser::default();
        let parsed = if headers_only { parser.parse_headers(&raw[..]) } else { parser.parse(&raw[..]) };
        let Some(msg) = parsed else { return Self::unparsed(raw) };

        let headers = msg
            .headers()
            .iter()
            .map(|h| {
                let value = match &h.value {
                    HeaderValue::Text(text) => unfold(text),
                    HeaderValue::TextList(list) => unfold(&list.join(", ")),
                    _ => {
                        let start = h.offset_start as usize;
                        let end = h.offset_end as usize;
                        let bytes = raw.get(start..end).unwrap_or_default();
                        unfold(&String::from_utf8_lossy(bytes))
                    }
                };
                (h.name.as_str().to_string(), value)
            })
            .collect();

        let join_bodies = |parts: Vec<Cow<'_, str>>| -> Option<String> {
            if parts.is_empty() { None } else { Some(parts.join("\n")) }
        };
        // A text/html-only message answers body_text with a rendering of the HTML (and a
        // text-only one body_html with a rendering of the text); keep only genuine parts, and
        // do not render what is not kept.
        let has_plain = msg.text_bodies().any(|p| !p.is_text_html());
        let mut text_body = if has_plain {
            join_bodies((0..msg.text_body_count()).filter_map(|i| msg.body_text(i)).collect())
        } else {
            None
        };
        let has_html = msg.html_bodies().any(|p| p.is_text_html());
        let mut html_body = if has_html {
            join_bodies((0..msg.html_body_count()).filter_map(|i| msg.body_html(i)).collect())
        } else {
            None
        };
        // A message whose only text mail-parser filed as an attachment (an unterminated
        // multipart, say): an unnamed, non-attachment text part is still what the reader sees.
        if text_body.is_none() && html_body.is_none() {
            let mut plain = Vec::new();
            let mut html = Vec::new();
            for part in msg.attachments() {
                let Some(ct) = part.content_type() else { continue };
                let declared_attachment =
                    part.content_disposition().is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"));
                if !ct.ctype().eq_ignore_ascii_case("text")
                    || part.attachment_name().is_some()
                    || declared_attachment
                {
                    continue;
                }
                let text = recover_text(part);
                match ct.subtype() {
                    Some(sub) if sub.eq_ignore_ascii_case("html") => html.push(Cow::Owned(text)),
                    _ => plain.push(Cow::Owned(text)),
                }
            }
            text_body = join_bodies(plain);
            html_body = join_bodies(html);
        }

        let attachments = msg
            .attachments()
            .map(|part| Attachment {
                name: part.attachment_name().map(str::to_string),
                content_type: part
                    .content_type()
                    .map(|ct| match ct.subtype() {
                        Some(sub) => format!("{}/{}", ct.ctype(), sub),
                        None => ct.ctype().to_string(),
                    })
                    .unwrap_or_else(|| "application/octet-stream".to_string())
                    .to_ascii_lowercase(),
                size: part.len() as u64,
            })
            .collect();

        let subject = msg.subject().map(str::to_string);
        let from = mailboxes(msg.from());
        let to = mailboxes(msg.to());
        let cc = mailboxes(msg.cc());
        let reply_to = mailboxes(msg.reply_to());
        let date = msg.date().map(|d| d.to_timestamp());
        let message_id = msg.message_id().map(str::to_string);
        drop(msg);
        Self {
            raw,
            headers,
            subject,
            from,
            to,
            cc,
            reply_to,
            date,
            message_id,
            text_body,
            html_body,
            attachments,
            sender: None,
        }
    }

    /// First value of `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).collect()
    }

    /// All header fields in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// Decoded subject.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// From mailboxes.
    pub fn from(&self) -> &[Mailbox] {
        &self.from
    }

    /// To mailboxes.
    pub fn to(&self) -> &[Mailbox] {
        &self.to
    }

    /// Cc mailboxes.
    pub fn cc(&self) -> &[Mailbox] {
        &self.cc
    }

    /// Reply-To mailboxes.
    pub fn reply_to(&self) -> &[Mailbox] {
        &self.reply_to
    }

    /// Date as Unix seconds.
    pub fn date(&self) -> Option<i64> {
        self.date
    }

    /// Message-ID without brackets.
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    /// Joined text/plain parts.
    pub fn text_body(&self) -> Option<&str> {
        self.text_body.as_deref()
    }

    /// Joined text/html parts.
    pub fn html_body(&self) -> Option<&str> {
        self.html_body.as_deref()
    }

    /// Attachments.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// The raw bytes as received.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

/// Cut `text` to at most `max_bytes` bytes on a character boundary.
pub fn truncate_utf8(text: &str, max_bytes: u32) -> String {
    let max = max_bytes as usize;
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_fields() {
        let raw = b"From: \"Alice\" <alice@example.org>\r\nTo: bob@example.com, carol@example.com\r\n\
Reply-To: \"Replies\" <replies@example.org>\r\nSubject: =?utf-8?q?h=C3=A9llo?=\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <a@b>\r\n\
X-Folded: one\r\n two\r\n\r\nbody text\r\n";
        let m = ParsedMessage::parse(&raw[..]);
        assert_eq!(m.subject(), Some("héllo"));
        assert_eq!(m.from()[0].name.as_deref(), Some("Alice"));
        assert_eq!(m.reply_to()[0].address.as_deref(), Some("replies@example.org"));
        assert_eq!(m.to().len(), 2);
        assert_eq!(m.date(), Some(1_767_225_600));
        assert_eq!(m.message_id(), Some("a@b"));
        assert_eq!(m.header("x-folded"), Some("one two"));
        assert_eq!(m.text_body().map(str::trim), Some("body text"));
        assert!(m.html_body().is_none());
    }

    #[test]
    fn text_mail_parser_could_not_decode_is_still_the_body() {
        // A multipart whose closing boundary never comes, base64 text inside.
        let raw = b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\n\
Content-Type: text/plain; charset=\"iso-8859-1\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
SGVscCB3YW50ZWQuIFdvcmsg\r\nZnJvbSBob21lLg==\r\n";
        let m = ParsedMessage::parse(&raw[..]);
        assert_eq!(m.text_body().map(str::trim), Some("Help wanted. Work from home."));
        // A single base64 HTML part with a mailing-list footer appended after the encoding,
        // in a legacy charset.
        let raw = b"From: a@example.org\r\nContent-Type: text/html; charset=big5\r\n\
Content-Transfer-Encoding: base64\r\n\r\nPGI+pKSk5TwvYj4=\r\n\r\nlist@example.org\r\nhttp://lists.example.org/\r\n";
        let m = ParsedMessage::parse(&raw[..]);
        assert_eq!(m.html_body(), Some("<b>中文</b>"));
    }

    /// Found by the `message` fuzz target: a multipart message on which mail-parser loses
    /// track of its parts (a debug assertion of mail-parser fires in builds with debug
    /// assertions on). The message still comes through, with its headers.
    #[test]
    fn a_message_that_panics_the_mime_parser_keeps_its_headers() {
        let raw = include_bytes!("../../fuzz/regressions/message/multipart-part-lost.eml");
        let message = ParsedMessage::parse(raw.to_vec());
        assert_eq!(message.raw(), &raw[..]);
        assert!(message.header("Return-path").is_some_and(|v| v.contains("server11.arteryserver11.net")));
    }

    #[test]
    fn garbage_is_not_a_panic() {
        for raw in [&b""[..], b"\0\0\0", b"\r\n\r\n", b"Subject", b"a: b\r\n\r\n--x--\r\n"] {
            let m = ParsedMessage::parse(raw);
            assert_eq!(m.raw(), raw);
        }
    }

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }
}

//! The host's reading of a policy's answer. Guests may be written in any language, so nothing
//! they return is trusted: reply codes are forced into the class their verdict demands, texts
//! are cut to one printable line, and symbol scores must be finite.

use std::borrow::Cow;

use super::bindings::types as wit;
pub use crate::smtp::Reply;

/// Longest reply text, header value or reason the host takes from a policy.
pub const MAX_TEXT: usize = 400;
/// Most symbols or changes one decision may carry; the rest are dropped.
pub const MAX_ITEMS: usize = 64;

/// What one policy said about one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No opinion.
    Continue,
    /// Accept the stage, skipping the rest of the chain for it.
    Accept,
    /// 5xx.
    Reject(Reply),
    /// 4xx.
    Tempfail(Reply),
    /// Accept and drop.
    Discard,
    /// Accept into quarantine.
    Quarantine(String),
}

impl Verdict {
    /// Short name: `continue`, `accept`, `reject`, `tempfail`, `discard`, `quarantine`.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Continue => "continue",
            Verdict::Accept => "accept",
            Verdict::Reject(_) => "reject",
            Verdict::Tempfail(_) => "tempfail",
            Verdict::Discard => "discard",
            Verdict::Quarantine(_) => "quarantine",
        }
    }
}

/// A spam symbol.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Symbol {
    /// Name.
    pub name: String,
    /// Score.
    pub score: f64,
    /// Detail.
    pub detail: Option<String>,
}

/// A change to the message or its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Add a header.
    AddHeader(String, String),
    /// Remove all headers of a name.
    RemoveHeader(String),
    /// Add a recipient.
    AddRecipient(String),
    /// Remove a recipient.
    RemoveRecipient(String),
    /// Route through a named next hop.
    Route(String),
}

/// A policy's decision, sanitised.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Verdict.
    pub verdict: Verdict,
    /// Close the connection after replying.
    pub disconnect: bool,
    /// Symbols.
    pub symbols: Vec<Symbol>,
    /// Changes.
    pub changes: Vec<Change>,
}

/// One printable line of at most [`MAX_TEXT`] bytes.
pub fn clean_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_TEXT));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_TEXT {
            break;
        }
        out.push(c);
    }
    out.trim().to_string()
}

/// A header name the host will write: RFC 5322 field-name characters only.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 76 && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

fn enhanced_ok(status: &str, class: u16) -> bool {
    let parts: Vec<&str> = status.split('.').collect();
    parts.len() == 3
        && parts[0] == class.to_string()
        && parts[1..].iter().all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

fn reply_from_wit(reply: wit::Reply, class: u16, default: (u16, &str)) -> Reply {
    let code = if reply.code / 100 == class && reply.code < 600 { reply.code } else { default.0 };
    let enhanced = match reply.enhanced {
        Some(e) if enhanced_ok(&e, class) => Cow::Owned(e),
        _ => Cow::Owned(default.1.to_string()),
    };
    let text = clean_text(&reply.text);
    let text = if text.is_empty() { Cow::Borrowed("Policy decision") } else { Cow::Owned(text) };
    Reply { code, enhanced: Some(enhanced), text }
}

impl Decision {
    pub(crate) fn from_wit(d: wit::Decision) -> Self {
        let verdict = match d.verdict {
            wit::Verdict::Continue => Verdict::Continue,
            wit::Verdict::Accept => Verdict::Accept,
            wit::Verdict::Reject(r) => Verdict::Reject(reply_from_wit(r, 5, (550, "5.7.1"))),
            wit::Verdict::Tempfail(r) => Verdict::Tempfail(reply_from_wit(r, 4, (451, "4.7.1"))),
            wit::Verdict::Discard => Verdict::Discard,
            wit::Verdict::Quarantine(reason) => Verdict::Quarantine(clean_text(&reason)),
        };
        let symbols = d
            .symbols
            .into_iter()
            .filter(|s| s.score.is_finite())
            .take(MAX_ITEMS)
            .map(|s| Symbol {
                name: clean_text(&s.name).replace(' ', "_"),
                score: s.score.clamp(-1000.0, 1000.0),
                detail: s.detail.as_deref().map(clean_text),
            })
            .filter(|s| !s.name.is_empty())
            .collect();
        let changes = d
            .changes
            .into_iter()
            .take(MAX_ITEMS)
            .filter_map(|c| match c {
                wit::Change::AddHeader(h) if is_header_name(&h.name) => {
                    Some(Change::AddHeader(h.name, clean_text(&h.value)))
                }
                wit::Change::AddHeader(_) => None,
                wit::Change::RemoveHeader(n) if is_header_name(&n) => Some(Change::RemoveHeader(n)),
                wit::Change::RemoveHeader(_) => None,
                wit::Change::AddRecipient(a) => Some(Change::AddRecipient(clean_text(&a))),
                wit::Change::RemoveRecipient(a) => Some(Change::RemoveRecipient(clean_text(&a))),
                wit::Change::Route(hop) => Some(Change::Route(clean_text(&hop))),
            })
            .collect();
        Self { verdict, disconnect: d.disconnect, symbols, changes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wit_reply(code: u16, enhanced: Option<&str>, text: &str) -> wit::Reply {
        wit::Reply { code, enhanced: enhanced.map(str::to_string), text: text.to_string() }
    }

    #[test]
    fn reply_class_is_forced() {
        let r = reply_from_wit(wit_reply(250, Some("2.0.0"), "ok\r\nX: y"), 5, (550, "5.7.1"));
        assert_eq!(r.code, 550);
        assert_eq!(r.enhanced.as_deref(), Some("5.7.1"));
        assert_eq!(r.text, "ok  X: y");
        let r = reply_from_wit(wit_reply(454, Some("4.7.0"), ""), 4, (451, "4.7.1"));
        assert_eq!((r.code, r.enhanced.as_deref()), (454, Some("4.7.0")));
        assert_eq!(reply_from_wit(wit_reply(699, None, "x"), 5, (550, "5.7.1")).code, 550);
    }

    #[test]
    fn header_names_are_checked() {
        assert!(is_header_name("X-Spam-Score"));
        assert!(!is_header_name("Bad Name"));
        assert!(!is_header_name("X:Y"));
        assert!(!is_header_name(""));
    }
}

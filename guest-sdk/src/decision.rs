//! What a hook answers: a verdict, spam symbols and (at data) changes to the message.

use crate::__bindings::sluice::policy::types as raw;

/// What a policy wants done with the current stage. See [`crate::Policy`] for the effect of each.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// No opinion: the next policy in the chain decides.
    Continue,
    /// Accept this stage now, skipping the rest of the chain for this stage.
    Accept,
    /// Refuse permanently (5xx).
    Reject(Reply),
    /// Refuse temporarily (4xx).
    Tempfail(Reply),
    /// Accept the message and drop it.
    Discard,
    /// Accept the message and hold it in quarantine, with a reason.
    Quarantine(String),
}

/// An SMTP reply with a validated code. Build it with [`Reply::permanent`] or
/// [`Reply::transient`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    code: u16,
    enhanced: Option<String>,
    text: String,
}

/// A reply code or enhanced status code that does not fit the verdict it was meant for.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidReply(pub String);

impl std::fmt::Display for InvalidReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidReply {}

impl Reply {
    /// A permanent-failure reply: `code` must be 500–599 and `enhanced`, if given, `5.x.y`.
    pub fn permanent(code: u16, enhanced: Option<&str>, text: &str) -> Result<Self, InvalidReply> {
        Self::checked(code, '5', enhanced, text)
    }

    /// A transient-failure reply: `code` must be 400–499 and `enhanced`, if given, `4.x.y`.
    pub fn transient(code: u16, enhanced: Option<&str>, text: &str) -> Result<Self, InvalidReply> {
        Self::checked(code, '4', enhanced, text)
    }

    fn checked(code: u16, class: char, enhanced: Option<&str>, text: &str) -> Result<Self, InvalidReply> {
        let first = char::from_digit(u32::from(code / 100), 10);
        if !(100..=599).contains(&code) || first != Some(class) {
            return Err(InvalidReply(format!("reply code {code} must be {class}xx")));
        }
        if let Some(status) = enhanced.filter(|s| !is_enhanced_status(s, class)) {
            return Err(InvalidReply(format!("enhanced status {status:?} must look like {class}.x.y")));
        }
        Ok(Self { code, enhanced: enhanced.map(str::to_string), text: one_line(text) })
    }

    /// The three-digit code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The enhanced status code, if any.
    pub fn enhanced(&self) -> Option<&str> {
        self.enhanced.as_deref()
    }

    /// The reply text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

fn is_enhanced_status(status: &str, class: char) -> bool {
    let parts: Vec<&str> = status.split('.').collect();
    parts.len() == 3
        && parts[0].len() == 1
        && parts[0].starts_with(class)
        && parts[1..].iter().all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Split `"5.7.1 text"` into an enhanced status and the text, when the text starts with one.
fn split_status(text: &str, class: char) -> (Option<&str>, &str) {
    match text.split_once(' ') {
        Some((first, rest)) if is_enhanced_status(first, class) => (Some(first), rest),
        _ => (None, text),
    }
}

/// A named piece of spam evidence with a score on SpamAssassin's scale (5 = spam).
#[derive(Debug, Clone, PartialEq)]
pub struct Symbol {
    /// Upper snake case name, e.g. `MISSING_DATE`.
    pub name: String,
    /// Positive is spammy, negative hammy.
    pub score: f64,
    /// What was seen, for the logs.
    pub detail: Option<String>,
}

/// A change to the message or its delivery; honoured only at the data stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Add a header field at the top of the message.
    AddHeader {
        /// Field name.
        name: String,
        /// Field value.
        value: String,
    },
    /// Remove every header field of this name.
    RemoveHeader(String),
    /// Add an envelope recipient.
    AddRecipient(String),
    /// Remove an envelope recipient.
    RemoveRecipient(String),
    /// Deliver through the named next hop of the relay configuration.
    Route(String),
}

/// The answer of a hook. Start from a constructor and chain the builder methods:
///
/// ```
/// # use sluice_policy::Decision;
/// let decision = Decision::no_opinion()
///     .symbol("SUBJ_ALL_CAPS", 2.0, Some("subject is shouting"))
///     .add_header("X-Checked", "yes");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The verdict.
    pub verdict: Verdict,
    /// Close the connection after the reply.
    pub disconnect: bool,
    /// Spam evidence.
    pub symbols: Vec<Symbol>,
    /// Changes, applied at the data stage when the message is accepted.
    pub changes: Vec<Change>,
}

impl Default for Decision {
    fn default() -> Self {
        Self::no_opinion()
    }
}

impl Decision {
    fn with_verdict(verdict: Verdict) -> Self {
        Self { verdict, disconnect: false, symbols: Vec::new(), changes: Vec::new() }
    }

    /// No opinion (`continue`): the next policy decides.
    pub fn no_opinion() -> Self {
        Self::with_verdict(Verdict::Continue)
    }

    /// Accept this stage, skipping the rest of the chain for it.
    pub fn accept() -> Self {
        Self::with_verdict(Verdict::Accept)
    }

    /// Reject with `550`. The text may start with an enhanced status (`"5.7.1 go away"`);
    /// without one, `5.7.1` is used.
    pub fn reject(text: &str) -> Self {
        let (status, text) = split_status(text, '5');
        Self::with_verdict(Verdict::Reject(Reply {
            code: 550,
            enhanced: Some(status.unwrap_or("5.7.1").to_string()),
            text: one_line(text),
        }))
    }

    /// Tempfail with `451`. The text may start with an enhanced status (`"4.7.1 try later"`);
    /// without one, `4.7.1` is used.
    pub fn tempfail(text: &str) -> Self {
        let (status, text) = split_status(text, '4');
        Self::with_verdict(Verdict::Tempfail(Reply {
            code: 451,
            enhanced: Some(status.unwrap_or("4.7.1").to_string()),
            text: one_line(text),
        }))
    }

    /// Reject with a reply of your choosing; see [`Reply::permanent`].
    pub fn reject_with(code: u16, enhanced: Option<&str>, text: &str) -> Result<Self, InvalidReply> {
        Ok(Self::with_verdict(Verdict::Reject(Reply::permanent(code, enhanced, text)?)))
    }

    /// Tempfail with a reply of your choosing; see [`Reply::transient`].
    pub fn tempfail_with(code: u16, enhanced: Option<&str>, text: &str) -> Result<Self, InvalidReply> {
        Ok(Self::with_verdict(Verdict::Tempfail(Reply::transient(code, enhanced, text)?)))
    }

    /// Accept and silently drop the message.
    pub fn discard() -> Self {
        Self::with_verdict(Verdict::Discard)
    }

    /// Accept and hold the message in quarantine.
    pub fn quarantine(reason: &str) -> Self {
        Self::with_verdict(Verdict::Quarantine(one_line(reason)))
    }

    /// Close the connection after replying.
    pub fn disconnect(mut self) -> Self {
        self.disconnect = true;
        self
    }

    /// Add a spam symbol.
    pub fn symbol(mut self, name: &str, score: f64, detail: Option<&str>) -> Self {
        self.symbols.push(Symbol { name: name.to_string(), score, detail: detail.map(str::to_string) });
        self
    }

    /// Add a header field (data stage).
    pub fn add_header(mut self, name: &str, value: &str) -> Self {
        self.changes.push(Change::AddHeader { name: name.to_string(), value: value.to_string() });
        self
    }

    /// Remove every header field called `name` (data stage).
    pub fn remove_header(mut self, name: &str) -> Self {
        self.changes.push(Change::RemoveHeader(name.to_string()));
        self
    }

    /// Add an envelope recipient (data stage).
    pub fn add_recipient(mut self, address: &str) -> Self {
        self.changes.push(Change::AddRecipient(address.to_string()));
        self
    }

    /// Remove an envelope recipient (data stage).
    pub fn remove_recipient(mut self, address: &str) -> Self {
        self.changes.push(Change::RemoveRecipient(address.to_string()));
        self
    }

    /// Deliver through the named next hop (data stage).
    pub fn route(mut self, next_hop: &str) -> Self {
        self.changes.push(Change::Route(next_hop.to_string()));
        self
    }

    /// Sum of the scores of this decision's symbols.
    pub fn score(&self) -> f64 {
        self.symbols.iter().map(|s| s.score).sum()
    }

    pub(crate) fn into_raw(self) -> raw::Decision {
        let reply = |r: Reply| raw::Reply { code: r.code, enhanced: r.enhanced, text: r.text };
        raw::Decision {
            verdict: match self.verdict {
                Verdict::Continue => raw::Verdict::Continue,
                Verdict::Accept => raw::Verdict::Accept,
                Verdict::Reject(r) => raw::Verdict::Reject(reply(r)),
                Verdict::Tempfail(r) => raw::Verdict::Tempfail(reply(r)),
                Verdict::Discard => raw::Verdict::Discard,
                Verdict::Quarantine(reason) => raw::Verdict::Quarantine(reason),
            },
            disconnect: self.disconnect,
            symbols: self
                .symbols
                .into_iter()
                .map(|s| raw::Symbol { name: s.name, score: s.score, detail: s.detail })
                .collect(),
            changes: self
                .changes
                .into_iter()
                .map(|c| match c {
                    Change::AddHeader { name, value } => raw::Change::AddHeader(raw::Header { name, value }),
                    Change::RemoveHeader(name) => raw::Change::RemoveHeader(name),
                    Change::AddRecipient(a) => raw::Change::AddRecipient(a),
                    Change::RemoveRecipient(a) => raw::Change::RemoveRecipient(a),
                    Change::Route(hop) => raw::Change::Route(hop),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_are_checked() {
        assert!(Reply::permanent(550, Some("5.7.1"), "no").is_ok());
        assert!(Reply::permanent(450, None, "no").is_err());
        assert!(Reply::permanent(550, Some("4.7.1"), "no").is_err());
        assert!(Reply::transient(421, Some("4.3.0"), "later").is_ok());
        assert!(Reply::transient(250, None, "ok").is_err());
        assert!(Reply::transient(4510, None, "x").is_err());
        assert!(Decision::reject_with(554, Some("5.7.1"), "x").is_ok());
        assert!(Decision::tempfail_with(554, None, "x").is_err());
    }

    #[test]
    fn reject_text_may_carry_status() {
        let d = Decision::reject("5.7.0 nope\r\nInjected: header");
        match d.verdict {
            Verdict::Reject(r) => {
                assert_eq!(r.enhanced(), Some("5.7.0"));
                assert_eq!(r.text(), "nope  Injected: header");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

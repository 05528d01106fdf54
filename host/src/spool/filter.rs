//! Which spooled messages an operator means: by tenant, sender, pending recipient, age and
//! store. `sluice queue` and the admin API's `/api/queue…` endpoints read the same filter.

use super::{QueuedMessage, Store};

/// The messages that match every criterion given (none given: all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this tenant's messages.
    pub tenant: Option<String>,
    /// Only messages whose sender contains this (case-insensitive; `<>`: the null sender).
    pub sender: Option<String>,
    /// Only messages with a pending recipient that contains this (case-insensitive).
    pub recipient: Option<String>,
    /// Only messages accepted at least this many seconds ago.
    pub older_than: Option<u64>,
    /// Only the queue, or only the quarantine.
    pub store: Option<Store>,
}

impl Filter {
    /// Whether no criterion is given.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `m`, found in `store`, matches at `now` (seconds since the epoch).
    pub fn admits(&self, store: Store, m: &QueuedMessage, now: u64) -> bool {
        let contains = |hay: &str, needle: &str| hay.to_lowercase().contains(&needle.to_lowercase());
        self.store.is_none_or(|s| s == store)
            && self.tenant.as_deref().is_none_or(|t| m.tenant == t)
            && self
                .sender
                .as_deref()
                .is_none_or(|s| if s == "<>" { m.mail_from.is_empty() } else { contains(&m.mail_from, s) })
            && self.recipient.as_deref().is_none_or(|r| m.pending().any(|p| contains(&p.address, r)))
            && self.older_than.is_none_or(|age| now.saturating_sub(m.received_at) >= age)
    }

    /// From a URL query's parameters (`tenant`, `sender`, `recipient`, `older_than`, `store`),
    /// already decoded; the first unknown value is an error.
    pub fn from_params<'a>(params: impl Iterator<Item = (&'a str, String)>) -> Result<Self, String> {
        let mut filter = Self::default();
        for (name, value) in params {
            match name {
                "tenant" => filter.tenant = Some(value),
                "sender" => filter.sender = Some(value),
                "recipient" => filter.recipient = Some(value),
                "older_than" => filter.older_than = Some(parse_age(&value)?),
                "store" => filter.store = Some(parse_store(&value)?),
                _ => {}
            }
        }
        Ok(filter)
    }

    /// As URL query parameters (`&`-joined, percent-encoded), the inverse of
    /// [`Filter::from_params`].
    pub fn to_query(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |name: &str, value: &str| parts.push(format!("{name}={}", encode(value)));
        if let Some(t) = &self.tenant {
            add("tenant", t);
        }
        if let Some(s) = &self.sender {
            add("sender", s);
        }
        if let Some(r) = &self.recipient {
            add("recipient", r);
        }
        if let Some(age) = self.older_than {
            add("older_than", &age.to_string());
        }
        if let Some(store) = self.store {
            add("store", store_name(store));
        }
        parts.join("&")
    }
}

/// `queue` or `quarantine`.
pub fn store_name(store: Store) -> &'static str {
    match store {
        Store::Queue => "queue",
        Store::Quarantine => "quarantine",
    }
}

/// `queue` or `quarantine` as a [`Store`].
pub fn parse_store(text: &str) -> Result<Store, String> {
    match text {
        "queue" => Ok(Store::Queue),
        "quarantine" => Ok(Store::Quarantine),
        _ => Err(format!("{text}: the store is queue or quarantine")),
    }
}

/// `90s`, `15m`, `2h`, `3d` (or plain seconds) in seconds.
pub fn parse_age(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let wrong = || format!("{text}: an age such as 90s, 15m, 2h or 3d");
    let n: u64 = number.parse().map_err(|_| wrong())?;
    let unit = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(wrong()),
    };
    Ok(n.saturating_mul(unit))
}

/// `text` percent-encoded for a URL query value.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `text` with `%XX` escapes and `+` decoded.
pub fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_goes_through_a_query_and_back() {
        let filter = Filter {
            tenant: Some("example".into()),
            sender: Some("<>".into()),
            recipient: Some("a b&c".into()),
            older_than: Some(7200),
            store: Some(Store::Quarantine),
        };
        let query = filter.to_query();
        let params = query.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k, decode(v)));
        assert_eq!(Filter::from_params(params), Ok(filter));
        assert_eq!(parse_age("2h"), Ok(7200));
        assert!(parse_age("2w").is_err());
        assert!(parse_store("held").is_err());
        assert_eq!(decode("a%20b+c"), "a b c");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }
}

//! SPF macros (RFC 7208 §7): `%{s}`, `%{l}`, `%{o}`, `%{d}`, `%{i}`, `%{p}`, `%{v}`, `%{h}`
//! with their transformers (`%{d2}`, `%{ir}`, `%{l-}`), `%%`, `%_`, `%-`.

use std::net::IpAddr;

/// One part of a macro string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Macro { letter: u8, escape: bool, keep: Option<usize>, reverse: bool, delimiters: Vec<u8> },
}

/// A macro string, checked when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MacroString(Vec<Part>);

/// What the macros stand for.
pub(super) struct Values<'a> {
    /// `s`: the sender, `local@domain`.
    pub sender: &'a str,
    /// `d`: the domain being checked.
    pub domain: &'a str,
    /// `i`: the client.
    pub ip: IpAddr,
    /// `h`: the HELO name.
    pub helo: &'a str,
    /// `p`: the client's validated name, or `unknown`.
    pub validated: &'a str,
}

/// The last label of a domain name is a `toplabel` (§4.6.1): letters, digits and hyphens, not
/// all digits, no hyphen at either end.
pub(super) fn toplabel(label: &str) -> bool {
    !label.is_empty()
        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
        && !label.bytes().all(|b| b.is_ascii_digit())
}

impl MacroString {
    /// Read `text`; `None` when it is not a valid macro string (`exp`: the letters only an
    /// explanation may use are allowed too).
    pub fn parse(text: &str, exp: bool) -> Option<Self> {
        let bytes = text.as_bytes();
        let (mut parts, mut literal, mut i) = (Vec::new(), String::new(), 0);
        while i < bytes.len() {
            let b = bytes[i];
            if b != b'%' {
                if !(0x21..=0x7e).contains(&b) {
                    return None;
                }
                literal.push(b as char);
                i += 1;
                continue;
            }
            match bytes.get(i + 1)? {
                b'%' => literal.push('%'),
                b'_' => literal.push(' '),
                b'-' => literal.push_str("%20"),
                b'{' => {
                    let close = i + 2 + text[i + 2..].find('}')?;
                    let body = &bytes[i + 2..close];
                    let (&letter, mut rest) = body.split_first()?;
                    let lower = letter.to_ascii_lowercase();
                    let allowed: &[u8] = if exp { b"slodiphvcrt" } else { b"slodiphv" };
                    if !allowed.contains(&lower) {
                        return None;
                    }
                    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                    let keep = match digits {
                        0 => None,
                        _ => Some(
                            std::str::from_utf8(&rest[..digits])
                                .ok()?
                                .parse::<usize>()
                                .ok()
                                .filter(|n| *n > 0)?,
                        ),
                    };
                    rest = &rest[digits..];
                    let reverse = rest.first().is_some_and(|b| b.eq_ignore_ascii_case(&b'r'));
                    if reverse {
                        rest = &rest[1..];
                    }
                    if !rest.iter().all(|b| b".-+,/_=".contains(b)) {
                        return None;
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Macro {
                        letter: lower,
                        escape: letter.is_ascii_uppercase(),
                        keep,
                        reverse,
                        delimiters: rest.to_vec(),
                    });
                    i = close + 1;
                    continue;
                }
                _ => return None,
            }
            i += 2;
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Some(Self(parts))
    }

    /// Whether it uses the client's validated name (`%{p}`), which costs lookups.
    pub fn uses_validated_name(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Part::Macro { letter: b'p', .. }))
    }

    /// A `domain-spec`: a macro string ending in a macro or in `.` and a top label.
    pub fn domain_spec(text: &str) -> Option<Self> {
        let parsed = Self::parse(text, false)?;
        if let Some(Part::Literal(tail)) = parsed.0.last() {
            let tail = tail.strip_suffix('.').unwrap_or(tail);
            let (_, last) = tail.rsplit_once('.')?;
            if !toplabel(last) {
                return None;
            }
        }
        if parsed.0.is_empty() {
            return None;
        }
        Some(parsed)
    }

    /// The string with its macros expanded; a domain name longer than 253 bytes loses labels
    /// on the left until it fits (§7.3).
    pub fn expand(&self, values: &Values<'_>) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Macro { letter, escape, keep, reverse, delimiters } => {
                    let value = value(*letter, values);
                    let delimiters: &[u8] = if delimiters.is_empty() { b"." } else { delimiters };
                    let mut labels: Vec<&str> =
                        value.split(|c: char| c.is_ascii() && delimiters.contains(&(c as u8))).collect();
                    if *reverse {
                        labels.reverse();
                    }
                    if let Some(n) = keep {
                        let skip = labels.len().saturating_sub(*n);
                        labels.drain(..skip);
                    }
                    let joined = labels.join(".");
                    out.push_str(&if *escape { url_escape(&joined) } else { joined });
                }
            }
        }
        while out.len() > 253 {
            match out.split_once('.') {
                Some((_, rest)) => out = rest.to_string(),
                None => break,
            }
        }
        out
    }
}

fn value(letter: u8, values: &Values<'_>) -> String {
    let (local, domain) = values.sender.rsplit_once('@').unwrap_or(("postmaster", values.sender));
    match letter {
        b's' => values.sender.to_string(),
        b'l' => local.to_string(),
        b'o' => domain.to_string(),
        b'd' => values.domain.to_string(),
        b'i' => match values.ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => v6
                .octets()
                .iter()
                .flat_map(|b| [b >> 4, b & 0xf])
                .map(|n| format!("{n:x}"))
                .collect::<Vec<_>>()
                .join("."),
        },
        b'p' => values.validated.to_string(),
        b'v' => if values.ip.is_ipv4() { "in-addr" } else { "ip6" }.to_string(),
        b'h' => values.helo.to_string(),
        b'c' => values.ip.to_string(),
        b'r' => "unknown".to_string(),
        b't' => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string(),
        _ => String::new(),
    }
}

fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7208_examples() {
        let values = Values {
            sender: "strong-bad@email.example.com",
            domain: "email.example.com",
            ip: "192.0.2.3".parse().expect("ip"),
            helo: "mx.example.org",
            validated: "unknown",
        };
        let expand = |text: &str| MacroString::parse(text, false).expect(text).expand(&values);
        assert_eq!(expand("%{s}"), "strong-bad@email.example.com");
        assert_eq!(expand("%{o}"), "email.example.com");
        assert_eq!(expand("%{d4}"), "email.example.com");
        assert_eq!(expand("%{d2}"), "example.com");
        assert_eq!(expand("%{dr}"), "com.example.email");
        assert_eq!(expand("%{d2r}"), "example.email");
        assert_eq!(expand("%{l}"), "strong-bad");
        assert_eq!(expand("%{l-}"), "strong.bad");
        assert_eq!(expand("%{lr-}"), "bad.strong");
        assert_eq!(expand("%{l1r-}"), "strong");
        assert_eq!(expand("%{ir}.%{v}._spf.%{d2}"), "3.2.0.192.in-addr._spf.example.com");
        assert_eq!(expand("%{lr-}.lp._spf.%{d2}"), "bad.strong.lp._spf.example.com");
        let v6 = Values { ip: "2001:db8::cb01".parse().expect("ip"), ..values };
        assert_eq!(
            MacroString::parse("%{ir}.%{v}._spf.%{d2}", false).expect("m").expand(&v6),
            "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
        );
        for bad in ["%{x}", "%{d0}", "%", "%{d", "%{c}", "a b"] {
            assert!(MacroString::parse(bad, false).is_none(), "{bad}");
        }
        assert!(MacroString::domain_spec("foo.1").is_none() && MacroString::domain_spec("museum").is_none());
        assert!(
            MacroString::domain_spec("%{d}").is_some() && MacroString::domain_spec("a.example.").is_some()
        );
    }
}

//! An SPF record (RFC 7208 §4.6, §5, §6, §7) read into directives and modifiers. A record
//! with any syntax error anywhere is refused whole: `check_host` then answers `permerror`
//! without interpreting any of it.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::macros::MacroString;

/// A directive's qualifier: the result when its mechanism matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Qualifier {
    Pass,
    Fail,
    SoftFail,
    Neutral,
}

/// The mechanisms of RFC 7208 §5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mechanism {
    All,
    Include(MacroString),
    A { domain: Option<MacroString>, v4: u8, v6: u8 },
    Mx { domain: Option<MacroString>, v4: u8, v6: u8 },
    Ptr(Option<MacroString>),
    Ip4(Ipv4Addr, u8),
    Ip6(Ipv6Addr, u8),
    Exists(MacroString),
}

/// A parsed record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Record {
    pub directives: Vec<(Qualifier, Mechanism)>,
    pub redirect: Option<MacroString>,
}

/// Whether `text` is an SPF record at all: `v=spf1` alone or followed by a space.
pub(super) fn is_spf(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 6 && bytes[..6].eq_ignore_ascii_case(b"v=spf1") && (bytes.len() == 6 || bytes[6] == b' ')
}

/// A CIDR length without leading zeros, at most `max`.
fn cidr(text: &str, max: u8) -> Option<u8> {
    if text.is_empty()
        || (text.len() > 1 && text.starts_with('0'))
        || !text.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    text.parse::<u8>().ok().filter(|n| *n <= max)
}

/// `[":" domain-spec] [dual-cidr-length]` of `a` and `mx`.
fn domain_and_cidrs(rest: &str) -> Option<(Option<MacroString>, u8, u8)> {
    // The lengths are at the end (a domain-spec may hold `/` and `:` itself, §7.1):
    // `//M`, then `/N` before it.
    let bytes = rest.as_bytes();
    let digits_before = |end: usize| bytes[..end].iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let mut cidr_start = bytes.len();
    let d = digits_before(cidr_start);
    if d > 0 && cidr_start >= d + 2 && &bytes[cidr_start - d - 2..cidr_start - d] == b"//" {
        cidr_start -= d + 2;
    }
    let d = digits_before(cidr_start);
    if d > 0
        && cidr_start > d
        && bytes[cidr_start - d - 1] == b'/'
        && (cidr_start == d + 1 || bytes[cidr_start - d - 2] != b'/')
    {
        cidr_start -= d + 1;
    }
    let (spec, cidrs) = (&rest[..cidr_start], &rest[cidr_start..]);
    let domain = match spec {
        "" => None,
        _ => Some(MacroString::domain_spec(spec.strip_prefix(':')?)?),
    };
    let (v4, v6) = match cidrs {
        "" => (32, 128),
        _ => {
            let cidrs = &cidrs[1..];
            match cidrs.split_once("//") {
                Some((v4, v6)) => (if v4.is_empty() { 32 } else { cidr(v4, 32)? }, cidr(v6, 128)?),
                None if cidrs.starts_with('/') => (32, cidr(&cidrs[1..], 128)?),
                None => (cidr(cidrs, 32)?, 128),
            }
        }
    };
    Some((domain, v4, v6))
}

/// A strict dotted quad.
fn ip4(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 4
        || parts.iter().any(|p| p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    text.parse().ok()
}

fn mechanism(name: &str, rest: &str) -> Option<Mechanism> {
    let argument = || rest.strip_prefix(':').filter(|a| !a.is_empty());
    Some(match name.to_ascii_lowercase().as_str() {
        "all" if rest.is_empty() => Mechanism::All,
        "include" => Mechanism::Include(MacroString::domain_spec(argument()?)?),
        "exists" => Mechanism::Exists(MacroString::domain_spec(argument()?)?),
        "a" => {
            let (domain, v4, v6) = domain_and_cidrs(rest)?;
            Mechanism::A { domain, v4, v6 }
        }
        "mx" => {
            let (domain, v4, v6) = domain_and_cidrs(rest)?;
            Mechanism::Mx { domain, v4, v6 }
        }
        "ptr" => match rest {
            "" => Mechanism::Ptr(None),
            _ => Mechanism::Ptr(Some(MacroString::domain_spec(argument()?)?)),
        },
        "ip4" => {
            let value = argument()?;
            let (address, length) = match value.split_once('/') {
                Some((a, l)) => (a, cidr(l, 32)?),
                None => (value, 32),
            };
            Mechanism::Ip4(ip4(address)?, length)
        }
        "ip6" => {
            let value = argument()?;
            let (address, length) = match value.split_once('/') {
                Some((a, l)) => (a, cidr(l, 128)?),
                None => (value, 128),
            };
            Mechanism::Ip6(address.parse().ok()?, length)
        }
        _ => return None,
    })
}

/// A modifier's name: ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ).
fn modifier_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Read a record (`text` starts with `v=spf1`); `None` for any syntax error.
pub(super) fn parse(text: &str) -> Option<Record> {
    let mut record = Record::default();
    let mut exp = false;
    for term in text[6..].split(' ').filter(|t| !t.is_empty()) {
        // A modifier: its name is followed by `=` before any `:` or `/`.
        let name_end = term.find([':', '/', '=']).unwrap_or(term.len());
        if term[name_end..].starts_with('=') {
            let (name, value) = (&term[..name_end], &term[name_end + 1..]);
            if !modifier_name(name) {
                return None;
            }
            match name.to_ascii_lowercase().as_str() {
                "redirect" => {
                    if record.redirect.is_some() {
                        return None;
                    }
                    record.redirect = Some(MacroString::domain_spec(value)?);
                }
                "exp" => {
                    if exp {
                        return None;
                    }
                    exp = true;
                    MacroString::domain_spec(value)?;
                }
                // Unknown modifiers are ignored, but must be well formed.
                _ => {
                    MacroString::parse(value, false)?;
                }
            }
            continue;
        }
        let (qualifier, body) = match term.as_bytes()[0] {
            b'+' => (Qualifier::Pass, &term[1..]),
            b'-' => (Qualifier::Fail, &term[1..]),
            b'~' => (Qualifier::SoftFail, &term[1..]),
            b'?' => (Qualifier::Neutral, &term[1..]),
            _ => (Qualifier::Pass, term),
        };
        let name_end = body.find([':', '/']).unwrap_or(body.len());
        record.directives.push((qualifier, mechanism(&body[..name_end], &body[name_end..])?));
    }
    Some(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_their_errors() {
        let r = parse("v=spf1 ip4:192.0.2.0/24 -a:mail.%{d}/28//64 ~all").expect("valid");
        assert_eq!(r.directives.len(), 3);
        assert!(matches!(r.directives[1], (Qualifier::Fail, Mechanism::A { v4: 28, v6: 64, .. })));
        for bad in [
            "v=spf1 ip4:1.2.3.4/33",
            "v=spf1 ip4:1.2.3.4/032",
            "v=spf1 a:foo.1",
            "v=spf1 redirect=a.test redirect=b.test",
            "v=spf1 moo",
            "v=spf1 all:x",
            "v=spf1 =x",
            "v=spf1 include:",
            "v=spf1 ip4:1.2.3",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
        assert!(parse("v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all").is_some());
        assert!(is_spf("v=spf1") && is_spf("V=SPF1 -all") && !is_spf("v=spf10") && !is_spf("v=spf1mx"));
        assert!(crate::sender::spf_record_is_valid("v=spf1 a:%{ir}.%{v}._spf.%{d2} redirect=_spf.%{d}"));
        assert!(
            !crate::sender::spf_record_is_valid("v=spf1 a:%{x}")
                && !crate::sender::spf_record_is_valid("spf1")
        );
    }

    /// Whatever a domain publishes, reading it ends in a record or a refusal, never a panic.
    #[test]
    fn any_text_is_read_without_panicking() {
        let pieces = [
            "v=spf1",
            " ",
            "a",
            "mx",
            "ptr",
            "ip4:",
            "ip6:",
            "include:",
            "exists:",
            "all",
            "redirect=",
            "exp=",
            "/",
            "//",
            ":",
            "%{",
            "}",
            "%",
            "d",
            "i",
            "r",
            "0",
            "24",
            "129",
            "1.2.3.4",
            "::1",
            "-",
            "~",
            "?",
            "+",
            ".",
            "=",
            "é",
            "\u{0}",
            "example.com",
            "%{ir}",
            "%{l1r-}",
            "999999999999",
        ];
        let mut seed: u64 = 0x5eed;
        for _ in 0..200_000 {
            let mut text = String::from("v=spf1 ");
            for _ in 0..(seed % 12) {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                text.push_str(pieces[(seed >> 33) as usize % pieces.len()]);
            }
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            if let Some(record) = parse(&text) {
                assert!(record.directives.len() <= text.len());
            }
        }
    }
}

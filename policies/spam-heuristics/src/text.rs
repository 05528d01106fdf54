//! Text helpers for the rules: visible text of HTML, links with their anchor text, and the
//! RFC 5322 dates found in `Date:` and `Received:` headers.

use memchr::memmem;

pub use sluice_policy::net::base_domain;

/// A link found in HTML or text.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// The href (or the URL as written in text), lower-cased.
    pub url: String,
    /// Anchor text, for HTML links.
    pub text: String,
}

fn decode_entity(entity: &str) -> Option<char> {
    match entity {
        "nbsp" => Some(' '),
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => {
            let number = entity.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

/// Visible text of an HTML document: tags, comments, scripts and styles removed, entities
/// decoded, white space folded.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let lower = html.to_ascii_lowercase();
    let bytes = html.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'<' {
            let rest = &lower[i..];
            let skip_to = if rest.starts_with("<!--") {
                rest.find("-->").map(|p| p + 3)
            } else if rest.starts_with("<script") {
                rest.find("</script").and_then(|p| rest[p..].find('>').map(|q| p + q + 1))
            } else if rest.starts_with("<style") {
                rest.find("</style").and_then(|p| rest[p..].find('>').map(|q| p + q + 1))
            } else {
                rest.find('>').map(|p| p + 1)
            };
            match skip_to {
                Some(n) => {
                    i += n;
                    out.push(' ');
                }
                None => break,
            }
            continue;
        }
        if bytes[i] == b'&'
            && let Some(end) = lower[i..].find(';').filter(|e| *e <= 10)
            && let Some(c) = decode_entity(&html[i + 1..i + end])
        {
            out.push(c);
            i += end + 1;
            continue;
        }
        let c = html[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The value of attribute `name` in the tag text `tag` (lower-cased input).
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(pos) = tag[from..].find(name) {
        let start = from + pos;
        from = start + name.len();
        let before_ok = start == 0 || tag.as_bytes()[start - 1].is_ascii_whitespace();
        let rest = tag[from..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let value = rest[1..].trim_start();
        return Some(match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or(""),
            _ => value.split(|c: char| c.is_whitespace() || c == '>').next().unwrap_or(""),
        });
    }
    None
}

/// `<a href>` links of an HTML document with their visible anchor text.
pub fn html_links(html: &str) -> Vec<Link> {
    let lower = html.to_ascii_lowercase();
    let mut links = Vec::new();
    let mut from = 0;
    while let Some(pos) = lower[from..].find("<a") {
        let start = from + pos;
        from = start + 2;
        if !lower[from..].starts_with(|c: char| c.is_whitespace()) {
            continue;
        }
        let Some(tag_end) = lower[start..].find('>').map(|e| start + e) else { break };
        let tag = &lower[start..tag_end];
        let Some(href) = attribute(tag, "href") else { continue };
        let close = lower[tag_end..].find("</a").map_or(lower.len(), |e| tag_end + e);
        let text = html_to_text(&html[tag_end + 1..close.max(tag_end + 1)]);
        links.push(Link { url: href.trim().to_string(), text });
        from = tag_end;
    }
    links
}

/// URLs written out in plain text (`http://` or `https://`, any case), lower-cased, in the
/// order they appear: one pass for `://` over the text, not a lower-cased copy of it and a
/// pass per scheme.
pub fn text_urls(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut urls = Vec::new();
    let mut from = 0;
    while let Some(pos) = memmem::find(&bytes[from..], b"://") {
        let colon = from + pos;
        let scheme =
            |name: &[u8]| colon >= name.len() && bytes[colon - name.len()..colon].eq_ignore_ascii_case(name);
        let start = if scheme(b"https") {
            colon - 5
        } else if scheme(b"http") {
            colon - 4
        } else {
            from = colon + 3;
            continue;
        };
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | ']'))
            .map_or(text.len(), |e| start + e);
        urls.push(text[start..end].to_ascii_lowercase());
        from = end;
    }
    urls
}

/// The host of an http(s) URL, lower-cased, without user info or port. `None` for other
/// schemes.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let host = host.split(':').next().unwrap_or(host).trim_end_matches('.');
    if host.is_empty() { None } else { Some(host.to_ascii_lowercase()) }
}

fn month(name: &str) -> Option<i64> {
    let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let lower = name.to_ascii_lowercase();
    months.iter().position(|m| lower.starts_with(m)).map(|p| p as i64 + 1)
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parse an RFC 5322 date (`Thu, 22 Aug 2002 20:55:12 +0100`, also with zone names and
/// two-digit years) into Unix seconds.
pub fn parse_date(text: &str) -> Option<i64> {
    let cleaned: String = text.chars().map(|c| if c == ',' { ' ' } else { c }).collect();
    let (mut day, mut mon, mut year, mut time, mut zone) = (None, None, None, None, 0i64);
    for token in cleaned.split_whitespace() {
        if time.is_none() && token.contains(':') {
            let parts: Vec<i64> = token.split(':').filter_map(|p| p.parse().ok()).collect();
            if parts.len() >= 2 {
                time = Some(parts[0] * 3600 + parts[1] * 60 + parts.get(2).copied().unwrap_or(0));
            }
        } else if let Some(m) = month(token).filter(|_| mon.is_none() && token.len() >= 3) {
            mon = Some(m);
        } else if (token.starts_with('+') || token.starts_with('-')) && token.len() == 5 && time.is_some() {
            let value: i64 = token[1..].parse().ok()?;
            let offset = (value / 100) * 3600 + (value % 100) * 60;
            zone = if token.starts_with('-') { -offset } else { offset };
        } else if let Ok(n) = token.parse::<i64>() {
            if day.is_none() && (1..=31).contains(&n) && mon.is_none() {
                day = Some(n);
            } else if year.is_none() {
                year = Some(match n {
                    0..=49 => 2000 + n,
                    50..=999 => 1900 + n,
                    _ => n,
                });
            }
        } else if time.is_some() {
            let named = match token.trim_matches(|c| c == '(' || c == ')').to_ascii_uppercase().as_str() {
                "EDT" => -4,
                "EST" | "CDT" => -5,
                "CST" | "MDT" => -6,
                "MST" | "PDT" => -7,
                "PST" => -8,
                _ => 0,
            };
            if named != 0 && zone == 0 {
                zone = named * 3600;
            }
        }
    }
    let (day, mon, year, time) = (day?, mon?, year?, time?);
    if !(1900..=2200).contains(&year) {
        return None;
    }
    Some(days_from_civil(year, mon, day) * 86_400 + time - zone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("Thu, 1 Jan 2026 00:00:00 +0000"), Some(1_767_225_600));
        assert_eq!(parse_date("Thu, 1 Jan 2026 01:00:00 +0100"), Some(1_767_225_600));
        assert_eq!(parse_date("1 Jan 26 00:00 GMT"), Some(1_767_225_600));
        assert_eq!(parse_date("Wed, 31 Dec 2025 20:00:00 -0400 (EDT)"), Some(1_767_225_600));
        assert_eq!(parse_date("garbage"), None);
    }

    #[test]
    fn html() {
        let html = "<html><style>p{}</style><p>Hello&nbsp;<b>World</b></p><!-- x --><script>bad()</script>&#65;</html>";
        assert_eq!(html_to_text(html), "Hello World A");
        let links = html_links("<A HREF=\"http://Evil.example/x\">www.bank.com</a> <a name=x>n</a>");
        assert_eq!(links, vec![Link { url: "http://evil.example/x".into(), text: "www.bank.com".into() }]);
    }

    #[test]
    fn urls() {
        assert_eq!(
            text_urls("go to http://a.example/x, or https://b.example."),
            vec!["http://a.example/x,", "https://b.example."]
        );
        assert_eq!(
            text_urls("HTTPS://C.Example/Y and ftp://d.example, xhttp://e.example) ://f"),
            vec!["https://c.example/y", "http://e.example"]
        );
        assert_eq!(url_host("http://user@www.Bank.com:80/x"), Some("www.bank.com".into()));
        assert_eq!(url_host("mailto:x@y"), None);
    }
}

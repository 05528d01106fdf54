//! The tokenizer: what of a message the model counts. Each token is a string with a prefix
//! naming where it came from (`subject:`, `from:`, `url:`, `mime:`, ...; body words have
//! none), counted once per message. Headers come first, so a message cut at
//! [`Input::max_tokens`] keeps what identifies its sender.
//!
//! After SpamBayes' tokenizer, with the same rules of thumb: body words of 3 to 12 characters,
//! longer ones reduced to their first character and length; URLs to their host and its parent
//! domains; every header field's name, and the words of the fields that say who sent the
//! message and how. Headers a filter adds (`X-Spam-*`, `Authentication-Results`, our own) are
//! left out: they would teach the model the filter's own opinion.

use std::collections::HashSet;
use std::fmt::Write as _;

/// What the tokenizer reads of a message.
#[derive(Debug, Default, Clone)]
pub struct Input {
    /// Header fields, in order.
    pub headers: Vec<(String, String)>,
    /// Plain-text body.
    pub text: Option<String>,
    /// HTML body.
    pub html: Option<String>,
    /// Attachments: file name, content type.
    pub attachments: Vec<(Option<String>, String)>,
    /// Size of the raw message.
    pub raw_size: u64,
}

/// Headers whose words are tokens (lower case), with the prefix they get.
const WORD_FIELDS: &[(&str, &str)] = &[
    ("subject", "subject"),
    ("x-mailer", "mailer"),
    ("user-agent", "mailer"),
    ("content-type", "ctype"),
    ("precedence", "precedence"),
    ("x-priority", "priority"),
    ("organization", "org"),
    ("importance", "importance"),
    ("list-id", "list"),
    ("x-mailing-list", "list"),
];

/// Headers whose addresses are tokens.
const ADDRESS_FIELDS: &[(&str, &str)] = &[
    ("from", "from"),
    ("reply-to", "reply-to"),
    ("return-path", "return-path"),
    ("sender", "sender"),
    ("to", "to"),
    ("cc", "cc"),
];

/// Headers a filter adds: never tokens.
fn added_by_a_filter(name: &str) -> bool {
    name.starts_with("x-spam")
        || name.starts_with("x-sluice")
        || name.starts_with("x-bogosity")
        || name.starts_with("x-dspam")
        || name == "authentication-results"
        || name == "received-spf"
        || name == "arc-authentication-results"
        || name == "x-virus-scanned"
}

/// Collects distinct tokens up to a bound.
struct Tokens {
    /// Hashes of the tokens taken (a collision drops a token: harmless, and cheaper than
    /// keeping a second copy of every string).
    seen: HashSet<u64>,
    order: Vec<String>,
    max: usize,
    bigrams: bool,
}

impl Tokens {
    fn add(&mut self, token: String) {
        if self.admits(&token) {
            self.order.push(token);
        }
    }

    /// [`Tokens::add`] of a borrowed token, copied only when it is new.
    fn add_str(&mut self, token: &str) {
        if self.admits(token) {
            self.order.push(token.to_string());
        }
    }

    /// Whether `token` is to be taken: there is room, and it is not empty nor seen before
    /// (it counts as seen from now on).
    fn admits(&mut self, token: &str) -> bool {
        self.order.len() < self.max
            && !token.is_empty()
            && self.seen.insert(crate::model::hash(token.as_bytes()))
    }

    fn full(&self) -> bool {
        self.order.len() >= self.max
    }
}

/// The distinct tokens of `input`, at most `max_tokens`, headers first.
pub fn tokenize(input: &Input, max_tokens: usize) -> Vec<String> {
    tokenize_with(input, max_tokens, false)
}

/// [`tokenize`], with pairs of adjacent body words as tokens too when `bigrams`.
pub fn tokenize_with(input: &Input, max_tokens: usize, bigrams: bool) -> Vec<String> {
    let mut tokens = Tokens { seen: HashSet::new(), order: Vec::new(), max: max_tokens, bigrams };
    headers(input, &mut tokens);
    mime(input, &mut tokens);
    if let Some(text) = &input.text {
        body(text, &mut tokens);
    }
    if let Some(html) = input.html.as_ref().filter(|_| !tokens.full()) {
        let (text, tags) = strip_html(html);
        for tag in tags {
            tokens.add(format!("html:{tag}"));
        }
        urls(html, &mut tokens);
        if input.text.is_none() {
            body(&text, &mut tokens);
        }
    }
    tokens.order
}

fn headers(input: &Input, tokens: &mut Tokens) {
    let mut received = 0;
    for (name, value) in &input.headers {
        let name = name.to_ascii_lowercase();
        if added_by_a_filter(&name) {
            continue;
        }
        tokens.add(format!("header:{name}"));
        if let Some((_, prefix)) = WORD_FIELDS.iter().find(|(field, _)| *field == name) {
            for word in words(value) {
                tokens.add(format!("{prefix}:{word}"));
            }
        }
        if let Some((_, prefix)) = ADDRESS_FIELDS.iter().find(|(field, _)| *field == name) {
            address_tokens(prefix, value, tokens);
        }
        match name.as_str() {
            "message-id" => {
                let id = value.trim().trim_start_matches('<').trim_end_matches('>');
                match id.rsplit_once('@') {
                    Some((left, domain)) => {
                        tokens.add(format!("msgid:{}", domain.to_ascii_lowercase()));
                        tokens.add(format!("msgid-shape:{}", shape(left)));
                    }
                    None => tokens.add("msgid:none".into()),
                }
            }
            "received" if received < 3 => {
                received += 1;
                for host in received_names(value) {
                    tokens.add(format!("received:{host}"));
                }
            }
            "subject" => {
                let letters = value.chars().filter(|c| c.is_alphabetic()).count();
                let capitals = value.chars().filter(|c| c.is_uppercase()).count();
                if letters >= 8 {
                    tokens.add(format!("subject:caps:{}", capitals * 10 / letters));
                }
                if value.contains('!') {
                    tokens.add("subject:bang".into());
                }
                if value.contains('$') {
                    tokens.add("subject:dollar".into());
                }
                if !value.is_ascii() {
                    tokens.add("subject:8bit".into());
                }
            }
            _ => {}
        }
    }
    for (field, _) in ADDRESS_FIELDS.iter().take(1) {
        if !input.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(field)) {
            tokens.add(format!("{field}:missing"));
        }
    }
    for field in ["date", "message-id", "to"] {
        if !input.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(field)) {
            tokens.add(format!("missing:{field}"));
        }
    }
}

/// Letters `a`, digits `9`, others as they are, runs collapsed: the form of an identifier.
fn shape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().take(40) {
        let class = if c.is_ascii_alphabetic() {
            'a'
        } else if c.is_ascii_digit() {
            '9'
        } else {
            c
        };
        if !out.ends_with(class) {
            out.push(class);
        }
    }
    out
}

/// Host names and address prefixes named in a Received field's `from` and `by` parts.
fn received_names(value: &str) -> Vec<String> {
    let mut names = Vec::new();
    for word in value.split(|c: char| c.is_whitespace() || "()[];".contains(c)) {
        let word = word.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_ascii_lowercase();
        if word.is_empty() {
            continue;
        }
        if let Some(prefix) = ipv4_prefix(&word) {
            names.push(format!("ip:{prefix}"));
        } else if word.contains('.') && word.chars().any(|c| c.is_ascii_alphabetic()) && word.len() <= 80 {
            names.extend(domain_tails(&word));
        }
        if names.len() > 16 {
            break;
        }
    }
    names
}

/// The /16 of a dotted IPv4 address.
fn ipv4_prefix(word: &str) -> Option<String> {
    let parts: Vec<&str> = word.split('.').collect();
    if parts.len() == 4
        && parts.iter().all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some(format!("{}.{}", parts[0], parts[1]));
    }
    None
}

/// `mail.example.com` → `mail.example.com`, `example.com` (the last two labels at least).
fn domain_tails(domain: &str) -> Vec<String> {
    let labels: Vec<&str> = domain.split('.').filter(|l| !l.is_empty()).collect();
    let mut tails = Vec::new();
    for start in 0..labels.len().saturating_sub(1) {
        tails.push(labels[start..].join("."));
        if tails.len() >= 3 {
            break;
        }
    }
    tails
}

fn address_tokens(prefix: &str, value: &str, tokens: &mut Tokens) {
    let mut addresses = 0;
    for part in value.split(',') {
        let (name, address) = match (part.find('<'), part.rfind('>')) {
            (Some(open), Some(close)) if open < close => (&part[..open], &part[open + 1..close]),
            _ => ("", part),
        };
        let address = address.trim().to_ascii_lowercase();
        if let Some((local, domain)) = address.rsplit_once('@') {
            addresses += 1;
            if addresses > 5 {
                continue;
            }
            tokens.add(format!("{prefix}:domain:{domain}"));
            if matches!(prefix, "from" | "reply-to" | "return-path" | "sender") {
                tokens.add(format!("{prefix}:addr:{address}"));
                tokens.add(format!("{prefix}:local-shape:{}", shape(local)));
            }
        }
        if matches!(prefix, "from" | "reply-to") {
            let name = name.trim().trim_matches('"');
            if name.is_empty() {
                tokens.add(format!("{prefix}:no-name"));
            }
            for word in words(name) {
                tokens.add(format!("{prefix}:name:{word}"));
            }
        }
    }
    if matches!(prefix, "to" | "cc") {
        tokens.add(format!("{prefix}:count:{}", addresses.min(10)));
    }
}

/// Lower-cased words of 2 to 20 characters of a header value.
fn words(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(|c: char| c.is_whitespace() || ",;\"()<>[]".contains(c))
        .map(|w| w.trim_matches(|c: char| ".:!?'*".contains(c)).to_lowercase())
        .filter(|w| (2..=20).contains(&w.chars().count()))
        .take(40)
}

fn mime(input: &Input, tokens: &mut Tokens) {
    match (&input.text, &input.html) {
        (Some(_), Some(_)) => tokens.add("mime:text+html".into()),
        (None, Some(_)) => tokens.add("mime:html-only".into()),
        (Some(_), None) => tokens.add("mime:text-only".into()),
        (None, None) => tokens.add("mime:no-text".into()),
    }
    tokens.add(format!("mime:attachments:{}", input.attachments.len().min(5)));
    for (name, content_type) in input.attachments.iter().take(20) {
        tokens.add(format!("mime:type:{}", content_type.to_ascii_lowercase()));
        let ext = name.as_deref().and_then(|n| n.rsplit_once('.')).map(|(_, e)| e.to_ascii_lowercase());
        if let Some(ext) = ext.filter(|e| e.len() <= 8) {
            tokens.add(format!("mime:ext:{ext}"));
        }
    }
    // Size in powers of two of kilobytes.
    let kib = (input.raw_size / 1024).max(1);
    tokens.add(format!("size:{}", 64 - kib.leading_zeros()));
}

fn body(text: &str, tokens: &mut Tokens) {
    urls(text, tokens);
    let mut previous: Option<String> = None;
    // Each word's token is made here and copied only when it is new: most words of a long
    // text are repeats.
    let mut token = String::new();
    for raw in body_words(text) {
        if tokens.full() {
            return;
        }
        if raw.starts_with("www.") || (raw.as_bytes().contains(&b':') && raw.contains("://")) {
            continue;
        }
        let word = raw.trim_matches(|c: char| !c.is_alphanumeric() && c != '$' && c != '%');
        if let Some((_, domain)) = word.split_once('@').filter(|(l, d)| !l.is_empty() && d.contains('.')) {
            tokens.add(format!("email:{}", domain.to_ascii_lowercase()));
            continue;
        }
        let ascii = word.is_ascii();
        let length = if ascii { word.len() } else { word.chars().count() };
        if length < 3 {
            continue;
        }
        token.clear();
        if length > 12 {
            let first = word.chars().next().unwrap_or('?');
            let _ = write!(token, "skip:{first} {}", length / 10 * 10);
            tokens.add_str(&token);
            continue;
        }
        if ascii {
            token.extend(word.bytes().map(|b| char::from(b.to_ascii_lowercase())));
        } else {
            token.push_str(&word.to_lowercase());
            if token.chars().filter(|c| !c.is_ascii()).count() * 2 > length {
                tokens.add("8bit-word".into());
            }
        }
        if tokens.bigrams {
            if let Some(previous) = previous.take() {
                tokens.add(format!("{previous} {token}"));
            }
            previous = Some(token.clone());
        }
        tokens.add_str(&token);
    }
}

/// The words of `text` between white space (`str::split_whitespace`); an ASCII text is split
/// a byte at a time, without decoding characters.
fn body_words(text: &str) -> Words<'_> {
    if text.is_ascii() { Words::Ascii { text, at: 0 } } else { Words::Unicode(text.split_whitespace()) }
}

enum Words<'a> {
    Ascii { text: &'a str, at: usize },
    Unicode(std::str::SplitWhitespace<'a>),
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        match self {
            Words::Unicode(words) => words.next(),
            Words::Ascii { text, at } => {
                // The ASCII characters `char::is_whitespace` takes: tab to carriage return, space.
                let space = |b: u8| matches!(b, b'\t'..=b'\r' | b' ');
                let bytes = text.as_bytes();
                while *at < bytes.len() && space(bytes[*at]) {
                    *at += 1;
                }
                if *at == bytes.len() {
                    return None;
                }
                let start = *at;
                while *at < bytes.len() && !space(bytes[*at]) {
                    *at += 1;
                }
                text.get(start..*at)
            }
        }
    }
}

/// Hosts (and their parent domains) of the URLs in `text`.
fn urls(text: &str, tokens: &mut Tokens) {
    let lower = text.to_ascii_lowercase();
    let mut rest = lower.as_str();
    let mut found = 0;
    while let Some(at) = rest.find("http") {
        rest = &rest[at..];
        let scheme_len = if rest.starts_with("https://") {
            8
        } else if rest.starts_with("http://") {
            7
        } else {
            rest = &rest[4..];
            continue;
        };
        tokens.add(format!("proto:{}", &rest[..scheme_len - 3]));
        let after = &rest[scheme_len..];
        let end = after.find(|c: char| c.is_whitespace() || "/?#\"'<>)]".contains(c)).unwrap_or(after.len());
        let host = after[..end].rsplit('@').next().unwrap_or("").split(':').next().unwrap_or("");
        if ipv4_prefix(host).is_some() {
            tokens.add("url:ip".into());
        } else {
            for tail in domain_tails(host) {
                tokens.add(format!("url:{tail}"));
            }
        }
        let path_end = after.find(|c: char| c.is_whitespace() || "\"'<>".contains(c)).unwrap_or(after.len());
        for piece in after[end..path_end]
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|p| (3..=12).contains(&p.len()))
            .take(5)
        {
            tokens.add(format!("url-path:{piece}"));
        }
        rest = &after[end..];
        found += 1;
        if found > 50 || tokens.full() {
            return;
        }
    }
}

/// The text of an HTML body, and the names of the tags (and some attributes) it uses.
pub fn strip_html(html: &str) -> (String, Vec<String>) {
    let mut text = String::with_capacity(html.len() / 2);
    let mut tags = Vec::new();
    let mut seen = HashSet::new();
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        text.push(' ');
        let after = &rest[open + 1..];
        let close = after.find('>').unwrap_or(after.len());
        let inside = after[..close].to_ascii_lowercase();
        let name: String =
            inside.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if !name.is_empty() && seen.insert(name.clone()) && tags.len() < 40 {
            tags.push(name.clone());
        }
        if tags.len() < 60 {
            for attribute in [
                " color=",
                " bgcolor=",
                " size=",
                " style=",
                " width=",
                " height=",
                " src=",
                " href=",
                " alt=",
            ] {
                if inside.contains(attribute) {
                    let token = format!("{name}.{}", &attribute[1..attribute.len() - 1]);
                    if seen.insert(token.clone()) && tags.len() < 60 {
                        tags.push(token);
                    }
                }
            }
        }
        rest = after.get(close + 1..).unwrap_or("");
        if (name == "style" || name == "script") && !inside.starts_with('/') {
            let end = rest.find(&format!("</{name}")).unwrap_or(rest.len());
            rest = &rest[end..];
        }
    }
    text.push_str(rest);
    let text = text
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"");
    (text, tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(headers: &[(&str, &str)], text: &str) -> Input {
        Input {
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            text: Some(text.to_string()),
            html: None,
            attachments: Vec::new(),
            raw_size: 2000,
        }
    }

    #[test]
    fn headers_words_urls() {
        let tokens = tokenize(
            &input(
                &[
                    ("Subject", "Cheap Pills NOW!"),
                    ("From", "\"Best Deals\" <deals@spam.example.com>"),
                    ("X-Spam-Status", "Yes"),
                ],
                "Buy now at http://www.pills.example.org/buy?x=1 and save. antidisestablishmentarianism",
            ),
            1000,
        );
        for expected in [
            "subject:cheap",
            "subject:bang",
            "from:domain:spam.example.com",
            "from:name:deals",
            "url:www.pills.example.org",
            "url:example.org",
            "proto:http",
            "buy",
            "save",
            "skip:a 20",
            "header:subject",
        ] {
            assert!(tokens.iter().any(|t| t == expected), "{expected} missing from {tokens:?}");
        }
        assert!(!tokens.iter().any(|t| t.contains("x-spam")), "{tokens:?}");
    }

    #[test]
    fn distinct_and_bounded() {
        let text: String = (0..100_000).map(|i| format!("word{i} ")).collect();
        let tokens = tokenize(&input(&[], &text), 1000);
        assert_eq!(tokens.len(), 1000);
        let unique: HashSet<_> = tokens.iter().collect();
        assert_eq!(unique.len(), tokens.len());
    }

    #[test]
    fn html_text_and_tags() {
        let (text, tags) =
            strip_html("<html><style>p{}</style><p><font color=red>Hello</font> &amp; bye</p></html>");
        assert!(text.contains("Hello") && text.contains("& bye") && !text.contains("p{}"), "{text}");
        assert!(tags.contains(&"font".to_string()) && tags.contains(&"font.color".to_string()), "{tags:?}");
    }

    #[test]
    fn nothing_panics_on_odd_input() {
        for text in
            ["", "<", "http://", "https://[", "@", "a@b.", "\u{0}\u{fffd}", "<<<>>>", "http://1.2.3.4:80/x"]
        {
            let mut i = input(&[("From", text), ("Received", text), ("Message-ID", text)], text);
            i.html = Some(text.to_string());
            let _ = tokenize(&i, 100);
        }
    }
}

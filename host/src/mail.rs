//! Internet Message Format (RFC 5322) helpers the relay needs when it writes mail: dates,
//! removing header fields, and the header fields the relay owns.

/// `Sat, 28 Nov 2026 00:10:00 +0000`.
pub fn rfc5322_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let month_name = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        [(month - 1) as usize];
    format!("{weekday}, {day} {month_name} {year} {h:02}:{m:02}:{s:02} +0000")
}

/// Append `message` to `out` without the header fields named in `names` (with their
/// continuation lines): the message is copied once, into `out`.
pub fn append_without_headers(out: &mut Vec<u8>, message: &[u8], names: &[String]) {
    if names.is_empty() {
        out.extend_from_slice(message);
        return;
    }
    let header_end = memchr::memmem::find(message, b"\r\n\r\n").map(|i| i + 2).unwrap_or(message.len());
    out.reserve(message.len());
    let mut skipping = false;
    for line in message[..header_end].split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            skipping = names.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name.trim_ascii()));
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(&message[header_end..]);
}

/// What a received message's header says about the fields the relay owns.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OwnedHeaders {
    /// `Received` fields (hops the message has made).
    pub received: usize,
    /// Byte ranges of the fields to remove (continuation lines included): `X-Spam-*`, and
    /// `Authentication-Results` carrying this relay's authserv-id.
    pub forged: Vec<std::ops::Range<usize>>,
}

impl OwnedHeaders {
    /// Scan `message`'s header section (up to the first empty line) for the fields the relay
    /// owns: a client may not speak for the relay's spam filter (`X-Spam-*`) or its
    /// authentication checks (`Authentication-Results: <authserv_id>; …`, RFC 8601 §5).
    pub fn scan(message: &[u8], authserv_id: &str) -> Self {
        let mut found = OwnedHeaders::default();
        let mut pos = 0;
        // The field being read: its start and whether it is to go.
        let mut field: Option<(usize, bool)> = None;
        while pos < message.len() {
            let end = memchr::memchr(b'\n', &message[pos..]).map_or(message.len(), |i| pos + i + 1);
            let line = &message[pos..end];
            let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
            if !continuation {
                if let Some((start, true)) = field.take() {
                    found.forged.push(start..pos);
                }
                if line == b"\r\n" || line == b"\n" {
                    break;
                }
                let Some(colon) = memchr::memchr(b':', line) else {
                    // Not a field: the header has ended (the body began without an empty line).
                    break;
                };
                let name = line[..colon].trim_ascii();
                let value = &line[colon + 1..];
                let forged = if name.eq_ignore_ascii_case(b"Received") {
                    found.received += 1;
                    false
                } else if name.len() > 7 && name[..7].eq_ignore_ascii_case(b"X-Spam-") {
                    true
                } else if name.eq_ignore_ascii_case(b"Authentication-Results") {
                    authserv_id_of(value, &message[end..]).eq_ignore_ascii_case(authserv_id.as_bytes())
                } else {
                    false
                };
                field = Some((pos, forged));
            }
            pos = end;
        }
        if let Some((start, true)) = field {
            found.forged.push(start..pos);
        }
        found
    }

    /// `message` without the forged fields (the same vector when there are none).
    pub fn strip(&self, message: Vec<u8>) -> Vec<u8> {
        if self.forged.is_empty() {
            return message;
        }
        let mut out = Vec::with_capacity(message.len());
        let mut from = 0;
        for range in &self.forged {
            out.extend_from_slice(&message[from..range.start]);
            from = range.end;
        }
        out.extend_from_slice(&message[from..]);
        out
    }
}

/// The authserv-id an `Authentication-Results` value begins with (RFC 8601 §2.2: the first
/// token, before an optional version and the `;`), comments and folding skipped. `rest` is
/// what follows the field's first line, for an id folded onto the next line.
fn authserv_id_of<'a>(value: &'a [u8], rest: &'a [u8]) -> &'a [u8] {
    let id = |text: &'a [u8]| -> &'a [u8] {
        let mut text = text.trim_ascii_start();
        // A leading comment: `(…)`.
        while text.first() == Some(&b'(') {
            let close = memchr::memchr(b')', text).map_or(text.len(), |i| i + 1);
            text = text[close..].trim_ascii_start();
        }
        let end = text.iter().position(|b| b.is_ascii_whitespace() || *b == b';' || *b == b'(');
        &text[..end.unwrap_or(text.len())]
    };
    let first = id(value);
    if !first.is_empty() {
        return first;
    }
    // Folded: `Authentication-Results:\r\n\trelay.example; …`.
    match rest.first() {
        Some(b' ' | b'\t') => id(rest.split(|b| *b == b'\n').next().unwrap_or_default()),
        _ => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(1_767_225_600), "Thu, 1 Jan 2026 00:00:00 +0000");
        assert_eq!(rfc5322_date(1_795_824_000 + 3661), "Sat, 28 Nov 2026 01:01:01 +0000");
    }

    #[test]
    fn owned_headers_are_found_and_stripped() {
        let m = b"Received: from a\r\n\tby b\r\nX-Spam-Flag: NO\r\nx-spam-score: -10\r\n\t(folded)\r\n\
Authentication-Results: relay.test; spf=pass\r\nAuthentication-Results: other.test; dkim=pass\r\n\
Authentication-Results: (comment) RELAY.test 1; dmarc=pass\r\n\
Authentication-Results:\r\n relay.test;\r\n none\r\nReceived: from c\r\nX-Spamish: kept\r\nSubject: hi\r\n\r\nX-Spam-Flag: in the body\r\n";
        let owned = OwnedHeaders::scan(m, "relay.test");
        assert_eq!(owned.received, 2);
        assert_eq!(owned.forged.len(), 5);
        let stripped = owned.strip(m.to_vec());
        assert_eq!(
            String::from_utf8(stripped).unwrap(),
            "Received: from a\r\n\tby b\r\nAuthentication-Results: other.test; dkim=pass\r\n\
Received: from c\r\nX-Spamish: kept\r\nSubject: hi\r\n\r\nX-Spam-Flag: in the body\r\n"
        );
        // Nothing to strip: the same bytes; a header without a body; a body without a header.
        let clean = b"Subject: x\r\n\r\nbody".to_vec();
        assert_eq!(OwnedHeaders::scan(&clean, "r").strip(clean.clone()), clean);
        assert_eq!(OwnedHeaders::scan(b"X-Spam-Flag: YES", "r").strip(b"X-Spam-Flag: YES".to_vec()), b"");
        assert_eq!(OwnedHeaders::scan(b"no header here\r\n", "r"), OwnedHeaders::default());
        assert_eq!(OwnedHeaders::scan(b"", "r"), OwnedHeaders::default());
    }

    #[test]
    fn header_removal() {
        let m = b"X-Spam: yes\r\n\tmore\r\nSubject: hi\r\nx-spam: again\r\n\r\nX-Spam: body\r\n";
        let mut out = Vec::new();
        append_without_headers(&mut out, m, &["X-Spam".into()]);
        assert_eq!(out, b"Subject: hi\r\n\r\nX-Spam: body\r\n");
    }
}

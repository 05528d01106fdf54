//! Internet Message Format (RFC 5322) helpers the relay needs when it writes mail: dates, and
//! removing header fields.

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

/// Drop the named header fields (with their continuation lines) from a message.
pub fn remove_headers(message: &[u8], names: &[String]) -> Vec<u8> {
    if names.is_empty() {
        return message.to_vec();
    }
    let header_end = memchr::memmem::find(message, b"\r\n\r\n").map(|i| i + 2).unwrap_or(message.len());
    let mut out = Vec::with_capacity(message.len());
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
    out
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
    fn header_removal() {
        let m = b"X-Spam: yes\r\n\tmore\r\nSubject: hi\r\nx-spam: again\r\n\r\nX-Spam: body\r\n";
        assert_eq!(remove_headers(m, &["X-Spam".into()]), b"Subject: hi\r\n\r\nX-Spam: body\r\n");
    }
}

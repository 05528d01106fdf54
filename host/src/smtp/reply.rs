//! SMTP replies with RFC 3463 enhanced status codes, and their wire form.

use crate::policy::decision::Reply;

/// Wire form of a reply: one line per text line, `code-` on all but the last.
pub fn render(reply: &Reply) -> Vec<u8> {
    render_lines(reply.code, reply.enhanced.as_deref(), &[reply.text.as_str()])
}

/// Wire form of a multi-line reply.
pub fn render_lines(code: u16, enhanced: Option<&str>, lines: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    let count = lines.len().max(1);
    for i in 0..count {
        let text = lines.get(i).copied().unwrap_or("");
        let sep = if i + 1 == count { ' ' } else { '-' };
        let line = match enhanced {
            Some(e) => format!("{code}{sep}{e} {text}\r\n"),
            None => format!("{code}{sep}{text}\r\n"),
        };
        out.extend_from_slice(line.as_bytes());
    }
    out
}

/// Shorthand for a reply.
pub fn reply(code: u16, enhanced: &str, text: &str) -> Reply {
    Reply::new(code, enhanced, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_line() {
        assert_eq!(render(&reply(250, "2.0.0", "Ok")), b"250 2.0.0 Ok\r\n");
        assert_eq!(render_lines(250, None, &["a", "b"]), b"250-a\r\n250 b\r\n");
    }
}

//! Command lines: CRLF framing of what the client sends outside a message, without I/O.
//!
//! Only CRLF ends a line; a line with a bare CR or LF is refused. A line over the limit is
//! refused once its end arrives, and what it held is dropped as it comes (nothing beyond the
//! limit is kept). A client that sends far more than the limit without any line end is not a
//! client that merely overshot: [`Line::Runaway`] lets the session close.

/// Bytes of one over-long line read (and dropped) while waiting for its end before the
/// session is closed: a client that sent a slightly long line gets its error and goes on, a
/// stream of megabytes without a line end does not hold the session.
pub const RUNAWAY_LINE_BYTES: usize = 64 * 1024;

/// A complete line, or what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A line, without its CRLF.
    Complete(Vec<u8>),
    /// Over the limit (its end has arrived).
    TooLong,
    /// Far over the limit and still no line end.
    Runaway,
    /// A bare CR or LF in the line, or an LF without the CR before it.
    BareLineEnding,
}

/// Collects one line at a time from the bytes the client sends.
#[derive(Debug, Default)]
pub struct LineReader {
    line: Vec<u8>,
    too_long: bool,
    /// Bytes of the current line seen so far, kept or not.
    seen: usize,
}

impl LineReader {
    /// Take bytes from `input` until a line is complete (at most `max` bytes with its CRLF).
    /// Returns how many bytes were used and the line if one ended; the rest of `input` is
    /// for whatever comes next (pipelined commands, a message).
    pub fn feed(&mut self, input: &[u8], max: usize) -> (usize, Option<Line>) {
        let (chunk, done) = match memchr::memchr(b'\n', input) {
            Some(i) => (&input[..=i], true),
            None => (input, false),
        };
        if !self.too_long {
            self.line.extend_from_slice(chunk);
            if self.line.len() > max {
                self.too_long = true;
                self.line = Vec::new();
            }
        }
        self.seen = self.seen.saturating_add(chunk.len());
        if !done {
            if self.too_long && self.seen > RUNAWAY_LINE_BYTES.max(max) {
                self.reset();
                return (chunk.len(), Some(Line::Runaway));
            }
            return (chunk.len(), None);
        }
        let too_long = self.too_long;
        let line = std::mem::take(&mut self.line);
        self.reset();
        if too_long {
            return (chunk.len(), Some(Line::TooLong));
        }
        let Some(body) = line.strip_suffix(b"\r\n") else { return (chunk.len(), Some(Line::BareLineEnding)) };
        if memchr::memchr2(b'\r', b'\n', body).is_some() {
            return (chunk.len(), Some(Line::BareLineEnding));
        }
        let mut line = line;
        line.truncate(line.len() - 2);
        (chunk.len(), Some(Line::Complete(line)))
    }

    /// Forget a partial line (the session starts over after STARTTLS).
    pub fn reset(&mut self) {
        self.line = Vec::new();
        self.too_long = false;
        self.seen = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize, piece: usize) -> Vec<Line> {
        let mut reader = LineReader::default();
        let mut out = Vec::new();
        for chunk in input.chunks(piece.max(1)) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let (used, line) = reader.feed(rest, max);
                rest = &rest[used..];
                out.extend(line);
            }
        }
        out
    }

    #[test]
    fn framing_does_not_depend_on_how_the_bytes_arrive() {
        let input = b"EHLO a\r\nNOOP\r\nbare\nx\ry\r\nabcdefghijklmnop\r\nQUIT\r\n";
        let expected = vec![
            Line::Complete(b"EHLO a".to_vec()),
            Line::Complete(b"NOOP".to_vec()),
            Line::BareLineEnding,
            Line::BareLineEnding,
            Line::TooLong,
            Line::Complete(b"QUIT".to_vec()),
        ];
        for piece in [1, 2, 3, 7, 64] {
            assert_eq!(lines(input, 12, piece), expected, "pieces of {piece}");
        }
    }

    #[test]
    fn a_line_without_end_is_a_runaway() {
        let input = vec![b'a'; RUNAWAY_LINE_BYTES + 10];
        assert_eq!(lines(&input, 512, 4096), vec![Line::Runaway]);
        // Over the limit but ended in time: the line is refused and the session goes on.
        let mut input = vec![b'a'; 16 * 1024];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(lines(&input, 512, 4096), vec![Line::TooLong, Line::Complete(b"NOOP".to_vec())]);
    }
}

//! The DATA section: strict CRLF framing, dot-unstuffing, and the size limit enforced while
//! the bytes arrive.
//!
//! Only `CRLF . CRLF` ends the data. A bare LF, or a CR not followed by LF, anywhere in the
//! data is refused outright: receivers that end the data on `LF . LF` or `CR . CR` can be made
//! to see a second, smuggled message where this relay sees one (CVE-2023-51764 and its
//! relatives), so such input is never passed on in any form.

/// What the decoder found in a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataEvent {
    /// Need more input.
    More,
    /// The end marker was found; the number of input bytes of this chunk that belonged to
    /// the data (the rest is the next command, pipelined).
    End(usize),
    /// A bare CR or LF: the session must be closed.
    BareLineEnding,
}

/// Incremental decoder of one DATA section.
#[derive(Debug)]
pub struct DataDecoder {
    body: Vec<u8>,
    limit: usize,
    size: usize,
    too_big: bool,
    /// At the start of a line.
    line_start: bool,
    /// The previous byte was a CR.
    after_cr: bool,
    /// The current line began with a dot (so far only the dot was seen).
    dot_line: bool,
}

impl DataDecoder {
    /// A decoder that keeps at most `limit` bytes of message.
    pub fn new(limit: usize) -> Self {
        Self {
            body: Vec::new(),
            limit,
            size: 0,
            too_big: false,
            line_start: true,
            after_cr: false,
            dot_line: false,
        }
    }

    /// Feed bytes; stops at the end marker.
    pub fn feed(&mut self, input: &[u8]) -> DataEvent {
        for (i, &b) in input.iter().enumerate() {
            if self.after_cr {
                self.after_cr = false;
                if b != b'\n' {
                    return DataEvent::BareLineEnding;
                }
                if self.dot_line {
                    // "CRLF . CRLF": the end; the dot line itself is not data.
                    return DataEvent::End(i + 1);
                }
                self.push(b"\r\n");
                self.line_start = true;
                continue;
            }
            match b {
                b'\r' => self.after_cr = true,
                b'\n' => return DataEvent::BareLineEnding,
                b'.' if self.line_start => {
                    // Either the end marker or a stuffed dot: decided by the next byte.
                    self.line_start = false;
                    self.dot_line = true;
                }
                _ => {
                    self.line_start = false;
                    // A dot at line start followed by more text was stuffed: drop it.
                    self.dot_line = false;
                    self.push(&[b]);
                }
            }
        }
        DataEvent::More
    }

    fn push(&mut self, bytes: &[u8]) {
        self.size += bytes.len();
        if self.size > self.limit {
            self.too_big = true;
            return;
        }
        self.body.extend_from_slice(bytes);
    }

    /// The message went over the limit (its bytes beyond it were discarded).
    pub fn too_big(&self) -> bool {
        self.too_big
    }

    /// The message.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8], limit: usize) -> (DataEvent, Vec<u8>, bool) {
        let mut d = DataDecoder::new(limit);
        let event = d.feed(input);
        let big = d.too_big();
        (event, d.into_body(), big)
    }

    #[test]
    fn ends_only_on_crlf_dot_crlf() {
        let (e, body, _) = decode(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n", 1000);
        assert_eq!(e, DataEvent::End(24));
        assert_eq!(body, b"Subject: x\r\n\r\nhello\r\n");
    }

    #[test]
    fn unstuffs_dots() {
        let (_, body, _) = decode(b"..leading dot\r\n...\r\n.\r\n", 1000);
        assert_eq!(body, b".leading dot\r\n..\r\n");
    }

    #[test]
    fn refuses_bare_line_endings() {
        for input in [&b"a\n.\n"[..], b"a\r\n.\n", b"a\r.\r", b"a\r\n.\r", b"a\rb\r\n.\r\n", b"x\n"] {
            let mut d = DataDecoder::new(1000);
            let mut event = d.feed(input);
            if event == DataEvent::More {
                event = d.feed(b"\r\n.\r\n");
            }
            assert_eq!(event, DataEvent::BareLineEnding, "{input:?}");
        }
    }

    #[test]
    fn split_across_chunks() {
        let mut d = DataDecoder::new(1000);
        let msg = b"line one\r\n.stuffed\r\n.\r\n";
        for (i, b) in msg.iter().enumerate() {
            let e = d.feed(std::slice::from_ref(b));
            if i + 1 < msg.len() {
                assert_eq!(e, DataEvent::More);
            } else {
                assert_eq!(e, DataEvent::End(1));
            }
        }
        assert_eq!(d.into_body(), b"line one\r\nstuffed\r\n");
    }

    #[test]
    fn size_limit_while_streaming() {
        let (e, body, big) = decode(b"0123456789\r\n0123456789\r\n.\r\n", 15);
        assert!(matches!(e, DataEvent::End(_)));
        assert!(big);
        assert!(body.len() <= 15);
    }
}

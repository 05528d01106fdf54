//! The DATA section: strict CRLF framing, dot-unstuffing, and the size limit enforced while
//! the bytes arrive; and dot-stuffing, for the way out.
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
        let mut i = 0;
        while i < input.len() {
            // Inside a line: everything up to the next CR or LF is data, copied in one go.
            if !self.after_cr && !self.line_start {
                let run = memchr::memchr2(b'\r', b'\n', &input[i..]).unwrap_or(input.len() - i);
                if run > 0 {
                    // After a dot at line start, more text: the dot was stuffed (and dropped).
                    self.dot_line = false;
                    self.push(&input[i..i + run]);
                    i += run;
                    continue;
                }
            }
            let b = input[i];
            i += 1;
            if self.after_cr {
                self.after_cr = false;
                if b != b'\n' {
                    return DataEvent::BareLineEnding;
                }
                if self.dot_line {
                    // "CRLF . CRLF": the end; the dot line itself is not data.
                    return DataEvent::End(i);
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
        self.size = self.size.saturating_add(bytes.len());
        if self.size > self.limit {
            // Nothing of a message over the limit is kept, so what the decoder holds never
            // depends on where the input was cut.
            if !self.too_big {
                self.too_big = true;
                self.body = Vec::new();
            }
            return;
        }
        self.body.extend_from_slice(bytes);
    }

    /// The message went over the limit (and none of it was kept).
    pub fn too_big(&self) -> bool {
        self.too_big
    }

    /// The message (empty when it went over the limit).
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

/// The message as DATA sends it: dot-stuffed (RFC 5321 §4.5.2), CRLF-terminated, then the
/// final dot.
pub fn dot_stuffed(message: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(message.len() + 64);
    // A dot that starts a line gets another in front of it; the bytes between are copied whole.
    if message.first() == Some(&b'.') {
        payload.push(b'.');
    }
    let mut from = 0;
    for at in memchr::memmem::find_iter(message, b"\n.") {
        payload.extend_from_slice(&message[from..=at]);
        payload.push(b'.');
        from = at + 1;
    }
    payload.extend_from_slice(&message[from..]);
    if !payload.is_empty() && !payload.ends_with(b"\r\n") {
        payload.extend_from_slice(b"\r\n");
    }
    payload.extend_from_slice(b".\r\n");
    payload
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

    /// The byte-at-a-time decoder the fast path must agree with.
    fn reference(input: &[u8], limit: usize) -> (DataEvent, Vec<u8>, bool) {
        let (mut body, mut line_start, mut after_cr, mut dot_line, mut size) =
            (Vec::new(), true, false, false, 0);
        let mut push = |bytes: &[u8], body: &mut Vec<u8>| {
            size += bytes.len();
            if size <= limit {
                body.extend_from_slice(bytes);
            } else {
                body.clear();
            }
        };
        for (i, &b) in input.iter().enumerate() {
            if after_cr {
                after_cr = false;
                if b != b'\n' {
                    return (DataEvent::BareLineEnding, body, size > limit);
                }
                if dot_line {
                    return (DataEvent::End(i + 1), body, size > limit);
                }
                push(b"\r\n", &mut body);
                line_start = true;
                continue;
            }
            match b {
                b'\r' => after_cr = true,
                b'\n' => return (DataEvent::BareLineEnding, body, size > limit),
                b'.' if line_start => {
                    line_start = false;
                    dot_line = true;
                }
                _ => {
                    line_start = false;
                    dot_line = false;
                    push(&[b], &mut body);
                }
            }
        }
        (DataEvent::More, body, size > limit)
    }

    /// Random inputs of dots, line endings and text, fed whole and in pieces: the same
    /// events and bytes as the reference, under a limit some of them go over.
    #[test]
    fn agrees_with_the_byte_at_a_time_decoder() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| match next() % 10 {
                    0..=1 => b'.',
                    2..=3 => b'\r',
                    4..=5 => b'\n',
                    _ => b'a',
                })
                .collect();
            let limit = if next() % 4 == 0 { (next() % 20) as usize } else { 1000 };
            let expected = reference(&input, limit);
            assert_eq!(decode(&input, limit), expected, "{input:?}");
            // The same input in two pieces.
            let cut = if len == 0 { 0 } else { (next() as usize) % len };
            let mut d = DataDecoder::new(limit);
            let event = match d.feed(&input[..cut]) {
                DataEvent::More => match d.feed(&input[cut..]) {
                    DataEvent::End(n) => DataEvent::End(cut + n),
                    other => other,
                },
                other => other,
            };
            let big = d.too_big();
            assert_eq!((event, d.into_body(), big), expected, "{input:?} cut at {cut}");
        }
    }

    #[test]
    fn dot_stuffing_and_the_final_dot() {
        assert_eq!(dot_stuffed(b"a\r\n.b\r\n..\r\n"), b"a\r\n..b\r\n...\r\n.\r\n");
        assert_eq!(dot_stuffed(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(dot_stuffed(b""), b".\r\n");
        assert_eq!(dot_stuffed(b".a\r\n.\r\n\r\n."), b"..a\r\n..\r\n\r\n..\r\n.\r\n");
        // What the decoder takes off, stuffing puts back.
        let message = b"..x\r\n.\r\nbody\r\n";
        let mut decoder = DataDecoder::new(1000);
        assert!(matches!(decoder.feed(&dot_stuffed(message)), DataEvent::End(_)));
        assert_eq!(decoder.into_body(), message);
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
        assert!(body.is_empty());
    }
}

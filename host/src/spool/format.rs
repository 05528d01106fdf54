//! The spool file format: a header line with the lengths and the CRC-32 of what follows, the
//! envelope (JSON), a newline, and the message as it will be delivered.

use std::io;

use super::QueuedMessage;

/// The extension of spool files.
pub const EXTENSION: &str = "mail";

/// First line of a spool file: `sluice-spool 1 ENVELOPE_LEN MESSAGE_LEN CRC32\n`, then the
/// envelope (JSON), a newline, and the message. The CRC-32 covers envelope and message.
const MAGIC: &str = "sluice-spool 1";

pub(super) struct Header {
    /// Where the envelope starts (after the header line).
    pub start: usize,
    envelope_len: usize,
    message_len: usize,
    crc: u32,
}

impl Header {
    pub(super) fn parse(bytes: &[u8]) -> io::Result<Self> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("spool file: {what}"));
        let end = bytes.iter().take(128).position(|b| *b == b'\n').ok_or_else(|| bad("no header line"))?;
        let line = std::str::from_utf8(&bytes[..end]).map_err(|_| bad("header is not text"))?;
        let fields = line.strip_prefix(MAGIC).ok_or_else(|| bad("unknown format"))?;
        let mut parts = fields.split_ascii_whitespace();
        let mut number = |what: &str| -> io::Result<u64> {
            parts
                .next()
                .and_then(|p| u64::from_str_radix(p, if what == "crc" { 16 } else { 10 }).ok())
                .ok_or_else(|| bad(what))
        };
        let envelope_len = usize::try_from(number("envelope length")?).map_err(|_| bad("envelope length"))?;
        let message_len = usize::try_from(number("message length")?).map_err(|_| bad("message length"))?;
        let crc = u32::try_from(number("crc")?).map_err(|_| bad("crc"))?;
        Ok(Self { start: end + 1, envelope_len, message_len, crc })
    }

    pub(super) fn envelope_end(&self) -> usize {
        self.start.saturating_add(self.envelope_len)
    }

    pub(super) fn total(&self) -> usize {
        self.envelope_end().saturating_add(1).saturating_add(self.message_len)
    }

    /// Whether `envelope` and `message` are what the header's CRC-32 was made of.
    pub(super) fn matches(&self, envelope: &[u8], message: &[u8]) -> bool {
        crc_of(envelope, message) == self.crc
    }
}

/// The CRC-32 of a spool file: over the envelope, then the message.
fn crc_of(envelope: &[u8], message: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(envelope);
    crc.update(message);
    crc.finalize()
}

/// A whole spool file: [`head`], then the message.
pub(super) fn encode(envelope: &QueuedMessage, message: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = head(envelope, message)?;
    out.reserve(message.len());
    out.extend_from_slice(message);
    Ok(out)
}

/// What comes before the message in its spool file: the header line, the envelope and a
/// newline (written with the message in one vectored write, so the message is not copied).
pub(super) fn head(envelope: &QueuedMessage, message: &[u8]) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(envelope).map_err(io::Error::other)?;
    let header = format!("{MAGIC} {} {} {:08x}\n", json.len(), message.len(), crc_of(&json, message));
    let mut out = Vec::with_capacity(header.len() + json.len() + 1);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&json);
    out.push(b'\n');
    Ok(out)
}

/// Write `parts` one after the other (vectored writes, as many as it takes).
pub(super) fn write_parts(file: &mut impl io::Write, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> =
        parts.iter().filter(|p| !p.is_empty()).map(|p| io::IoSlice::new(p)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Header, envelope bytes and message bytes (the CRC is not checked: [`Header::matches`]).
/// `InvalidData` if the file is not as long as its header says.
pub(super) fn decode(bytes: &[u8]) -> io::Result<(Header, &[u8], &[u8])> {
    let header = Header::parse(bytes)?;
    if bytes.len() != header.total() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("spool file is {} bytes, its header says {}", bytes.len(), header.total()),
        ));
    }
    let envelope = &bytes[header.start..header.envelope_end()];
    let message = &bytes[header.envelope_end() + 1..];
    Ok((header, envelope, message))
}
